#!/usr/bin/env bash
# Run the whole test suite: installs what is missing, then pytest. The SIP
# tests start their own redis-server and Kamailio on free loopback ports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$KEMI_VENV/bin/python" -m pytest "$@"
