#!/usr/bin/env bash
# The provisioning file's trunks and media servers that stand-ins can play: those on loopback
# addresses (a production file's real carriers never get one). One line each:
#   carrier|receptionist|announcement NAME HOST PORT TRANSPORT
# Used by scripts/run.sh (which starts them) and scripts/call-in.sh (which calls from a trunk).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$KEMI_VENV/bin/python" - "${1:-$PROVISION_FILE}" <<'EOF'
import sys
from pathlib import Path
from kemi.provisioning import ProvisioningError, parse
try:
    p = parse(Path(sys.argv[1]).read_text(encoding="utf-8"), sys.argv[1])
except (OSError, ProvisioningError) as exc:
    sys.exit(f"standin-peers: {exc}")
for kind, peers in (("trunk", p.trunks), ("media", p.media_servers)):
    for peer in peers or ():
        if peer.host.startswith("127."):
            print("carrier" if kind == "trunk" else peer.role, peer.name, peer.host, peer.port, peer.transport)
EOF
