#!/bin/bash
# Start Kamailio (arguments as for kamailio itself; the settings of scripts/env.sh in the
# environment, TLS_CERT and TLS_KEY naming readable files) so that its embedded Python is Debian's
# /usr/bin/python3 with the project's venv, whatever the caller's environment says. Used by
# scripts/run.sh and by the tests (tests/harness.py, Proxy): the one way the product starts Kamailio.
#
# Why: app_python3 links Debian's libpython3.11, and an embedded libpython finds its standard
# library through the first `python3` on PATH (Python's getpath). With a pyenv or conda Python 3.11
# first on PATH it takes that installation's lib/python3.11 and lib-dynload: `import ssl` fails
# (that _ssl was built against another libpython) and `import redis` dies with
# "AttributeError: 'NoneType' object has no attribute 'VerifyMode'". A PYTHONHOME or PYTHONPATH
# exported by the caller points it at a foreign standard library too. So Kamailio gets a PATH of
# the system directories only and no PYTHON* variable; the venv (KEMI_VENV) is added to sys.path
# by kemi/kamailio_entry.py, and must have been made by Debian's interpreter.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
KEMI_VENV=${KEMI_VENV:-$ROOT/.venv}

# A venv of another interpreter has packages compiled for another libpython (msgpack, ...).
home=$(sed -n 's/^home *= *//p' "$KEMI_VENV/pyvenv.cfg" 2>/dev/null || true)
if [ "$home" != /usr/bin ]; then
  echo "kamailio.sh: KEMI_VENV=$KEMI_VENV is not a venv of Debian's /usr/bin/python3" \
       "(pyvenv.cfg home: ${home:-none}); Kamailio embeds that interpreter and could not load" \
       "its packages. Build it with: /usr/bin/python3 -m venv $KEMI_VENV (scripts/setup.sh does)" >&2
  exit 2
fi
export KEMI_VENV

# The TLS listener without its certificate and key still starts, and then fails every handshake
# without a word in the log: refuse instead. Kamailio would read a relative path from
# kamailio.cfg's directory; the caller meant its own.
for var in TLS_CERT TLS_KEY; do
  if [ -z "${!var:-}" ] || [ ! -r "${!var}" ]; then
    echo "kamailio.sh: $var=${!var:-} is not a readable file: the TLS listener needs its certificate" \
         "and key (TLS_CERT, TLS_KEY; scripts/run.sh makes a self-signed demo pair when neither is given," \
         "with scripts/demo-cert.sh)" >&2
    exit 2
  fi
  export "$var=$(realpath "${!var}")"
done

while IFS= read -r var; do
  case $var in PYTHON*) unset "$var" ;; esac
done < <(compgen -e)
# The venv decides which packages the proxy imports, not a user's ~/.local.
export PYTHONNOUSERSITE=1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Topology hiding (kamailio.cfg, topos) keeps what it strips from each call in the proxy's Redis,
# through ndb_redis: TOPOS_REDIS is TOPOS_REDIS_URL in ndb_redis's words (kemi/store/ndb_redis.py).
# A deployment gives it (Ansible: Redis's default user, held to topos's keys) and then a URL ndb_redis
# cannot use stops the start: the proxy never runs silently unhidden. Without it, REDIS_URL (or the
# routes' default, kemi/settings.py), with a warning when ndb_redis cannot use that one.
if [ -n "${TOPOS_REDIS_URL:-}" ]; then
  TOPOS_REDIS=$(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.ndb_redis --required "$TOPOS_REDIS_URL") ||
    exit 2
else
  TOPOS_REDIS=$(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.ndb_redis "${REDIS_URL:-redis://127.0.0.1:6379/0}") ||
    exit 2
fi
export TOPOS_REDIS

# Where kamailio.cfg lists the metrics socket: before the SIP one when on loopback, after it
# otherwise, so that SIP over TCP always leaves from the SIP socket (see kamailio.cfg, listen).
defines=()
case ${METRICS_ADDR:-} in
  127.*) defines=(-A METRICS_ON_LOOPBACK) ;;
esac
# A TLS domains file makes the certificate reloadable (kamcmd tls.reload; kamailio.cfg, tls).
if [ -n "${TLS_CONFIG:-}" ]; then
  if [ ! -r "$TLS_CONFIG" ]; then
    echo "kamailio.sh: TLS_CONFIG=$TLS_CONFIG is not a readable file" >&2
    exit 2
  fi
  defines+=(-A TLS_RELOADABLE)
fi
# Kamailio's default allocator (qm) is its debugging one: its free-list search was the largest single
# C cost of a call (dialogs, transactions and variables live in shared memory; bench/PERF.md). TLSF
# allocates in constant time, for shared (-x) and private (-X) memory alike.
exec /usr/sbin/kamailio -x tlsf -X tlsf "${defines[@]}" "$@"
