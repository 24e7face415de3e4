#!/usr/bin/env bash
# Run the whole test suite: installs what is missing, then pytest. The SIP
# tests start their own redis-server and Kamailio on free loopback ports.
#
# The whole suite (no test path given) runs in two pytest processes at once: tests/deploy (the Ansible
# playbook run for real, minutes spent mostly in apt, pip and ansible itself, inside a network
# namespace of its own) beside everything else, so that CI stays well within its time. Both must pass.
# With a test path (or --basetemp), one pytest runs what is asked.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
whole=1
for arg in "$@"; do
  case $arg in
    --basetemp*|--ignore*|-k|-m) whole=0 ;;
    -*) ;;
    *) whole=0 ;;
  esac
done
if [ "$whole" = 0 ] || [ "$(id -u)" != 0 ]; then
  exec "$KEMI_VENV/bin/python" -m pytest "$@"
fi
deploy_log=$(mktemp "${TMPDIR:-/tmp}/cowork-deploy-tests.XXXXXX")
"$KEMI_VENV/bin/python" -m pytest "$@" tests/deploy >"$deploy_log" 2>&1 &
deploy=$!
trap 'kill "$deploy" 2>/dev/null || true' INT TERM
rest=0
"$KEMI_VENV/bin/python" -m pytest "$@" --ignore=tests/deploy || rest=$?
deployed=0
wait "$deploy" || deployed=$?
echo "---- tests/deploy (run beside the rest) ----"
cat "$deploy_log"
rm -f "$deploy_log"
if [ "$rest" != 0 ] || [ "$deployed" != 0 ]; then
  echo "test.sh: FAILED (rest: exit $rest, tests/deploy: exit $deployed)" >&2
  exit 1
fi
