#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: Debian packages, then the project venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# espeak-ng and sox speak for the media server (media/tts.py).
# rtpengine, TLS, ndb_redis (native benchmark baseline), promtool, the Redis exporter and Ansible are
# what the edge, monitoring, load and deployment tests start for real.
DEBS=(kamailio kamailio-python3-modules kamailio-extra-modules kamailio-utils-modules
      kamailio-tls-modules kamailio-redis-modules rtpengine-daemon
      redis-server sip-tester baresip python3-venv python3-dev gcc
      prometheus prometheus-redis-exporter ansible ansible-lint yamllint nftables iproute2 openssl
      logrotate procps espeak-ng sox
      haproxy redis-sentinel
      prometheus-alertmanager prometheus-node-exporter)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv must be made by Debian's interpreter: it is the one Kamailio embeds.
stamp="$KEMI_VENV/.requirements.sha"
want=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$KEMI_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: building $KEMI_VENV"
  /usr/bin/python3 -m venv "$KEMI_VENV"
  "$KEMI_VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$want" > "$stamp"
fi
# The current ansible-lint (ansible/requirements-lint.txt), in a venv of its own: tests/deploy lints with it.
lint_venv="$ROOT/.lint-venv"
want=$(sha256sum "$ROOT/ansible/requirements-lint.txt" | cut -d' ' -f1)
if [ ! -x "$lint_venv/bin/ansible-lint" ] || [ "$(cat "$lint_venv/.requirements.sha" 2>/dev/null)" != "$want" ]; then
  echo "setup: building $lint_venv"
  /usr/bin/python3 -m venv "$lint_venv"
  # without a network (a test run inside `unshare -n`) this fails: the lint test then says so and skips
  if "$lint_venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/ansible/requirements-lint.txt"; then
    echo "$want" > "$lint_venv/.requirements.sha"
  else
    echo "setup: WARNING: could not install ansible/requirements-lint.txt into $lint_venv" >&2
  fi
fi
mkdir -p "$RUN_DIR"
