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

# The dialogs, with the call records and prepaid reservations they carry, live in a Redis database of
# this proxy's own so that a restart keeps its calls (kamailio.cfg, dialog db_mode; kemi/store/dialog_db.py):
# DIALOG_REDIS_URL when a deployment gives it (then a URL db_redis cannot use stops the start), else
# the server of TOPOS_REDIS_URL (Redis's default user, as db_redis 5.6 logs in; else REDIS_URL) with the
# database DIALOG_REDIS_DB (15 by default), in memory only when db_redis cannot reach that one (a warning says so).
if [ -n "${DIALOG_REDIS_URL:-}" ]; then
  dialog_db=$(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.dialog_db --required "$DIALOG_REDIS_URL") ||
    exit 2
else
  dialog_db=$(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.dialog_db \
    "${TOPOS_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379/0}}" \
    "${DIALOG_REDIS_DB:-15}") || exit 2
fi
read -r DIALOG_DB_MODE DIALOG_DB_URL <<<"$dialog_db"
export DIALOG_DB_MODE DIALOG_DB_URL

# Where kamailio.cfg lists the metrics socket: before the SIP one when on loopback, after it
# otherwise, so that SIP over TCP always leaves from the SIP socket (see kamailio.cfg, listen).
defines=()
case ${METRICS_ADDR:-} in
  127.*) defines=(-A METRICS_ON_LOOPBACK) ;;
esac
# A site (several proxies sharing their registrations, kamailio.cfg "Site"): LOCATION_STORE=redis keeps
# usrloc's location table in Redis through db_redis, at the address topos uses (TOPOS_REDIS_URL, else
# REDIS_URL: db_redis logs in as Redis's default user too), in its database LOCATION_REDIS_DB (kemi.store.
# db_redis says why one of its own). A URL db_redis cannot use stops the start.
# SERVER_ID tells this proxy's contacts from its siblings' (each pings only its own: nathelper);
# LOCATION_TIMER_S: how often it removes expired contacts from Redis (a scan of them all, kamailio.cfg).
case ${LOCATION_STORE:-memory} in
  memory) ;;
  redis)
    LOCATION_DB_URL=$(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.db_redis \
                      "${TOPOS_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379/0}}" "${LOCATION_REDIS_DB:-1}") || exit 2
    export LOCATION_DB_URL SERVER_ID=${SERVER_ID:-1} LOCATION_TIMER_S=${LOCATION_TIMER_S:-60}
    defines+=(-A LOCATION_IN_REDIS) ;;
  *) echo "kamailio.sh: LOCATION_STORE=${LOCATION_STORE} is neither memory nor redis" >&2; exit 2 ;;
esac
# LOG_FORMAT=json: one JSON object per line (Kamailio's json log engine, "M": no trailing newline inside
# "message", which the engine escapes). Not "c": 5.6 writes its "callid" field unescaped, and a Call-ID may
# hold '"' (RFC 3261): a phone's Call-ID would forge fields of the line. The Call-ID and the time are in
# "logprefix" instead, escaped (kamailio.cfg, log_prefix). README.md, Metrics and logs.
case ${LOG_FORMAT:-plain} in
  json) defines+=(--log-engine=json:M) ;;
  plain) ;;
  *) echo "kamailio.sh: LOG_FORMAT=$LOG_FORMAT: expected plain or json" >&2; exit 2 ;;
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
