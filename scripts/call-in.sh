#!/usr/bin/env bash
# A call from outside to one of the demo's numbers, as its carrier would send it: from the address
# of the first loopback trunk of the provisioning file (over TCP, as the trunk's UDP port belongs to
# its stand-in; the proxy trusts a trunk by address and port). The callee hears SIPp's sample
# recording; the carrier hangs up after SECONDS. Needs scripts/run.sh running.
#   scripts/call-in.sh NUMBER [SECONDS [CALLER]]     e.g. scripts/call-in.sh +33142685300
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: scripts/call-in.sh NUMBER [SECONDS [CALLER]]   (NUMBER: a DID, e.g. +33142685300)" >&2
  exit 2
fi
number=$1; secs=${2:-20}; caller=${3:-+33612345678}
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -le 3600 ] || { echo "call-in: SECONDS must be 0..3600, not '$secs'" >&2; exit 2; }

trunk=$("$ROOT/scripts/standin-peers.sh" | awk '$1 == "carrier" {print $3, $4, $2; exit}')
[ -n "$trunk" ] || { echo "call-in: $PROVISION_FILE has no trunk on a loopback address to call from" >&2; exit 2; }
read -r host port name <<< "$trunk"

mkdir -p "$RUN_DIR"
log="$RUN_DIR/call-in-$$.log"
echo "call-in: $caller -> $number from trunk $name ($host:$port, tcp), through $SIP_ADDR:$SIP_PORT"
status=0
# The ring time of the longest fallback chain plus the hold: SIPp gives up after that.
# -ci 100::1: no control socket (scripts/run.sh, tests/harness.py NO_CONTROL_SOCKET)
sipp "$SIP_ADDR:$SIP_PORT" -sf "$ROOT/sipp-scenarios/standin-caller.xml" -t t1 -i "$host" -p "$port" \
  -mi "$host" -mp 29000 -ci 100::1 -m 1 -nostdin -set dial "$number" -set caller "$caller" \
  -d "$((secs * 1000))" -timeout "$((secs + 360))s" -timeout_error \
  -trace_logs -log_file "$log" > /dev/null 2>&1 || status=$?
final=$(sed -n 's/.*FINAL \(.*\)/\1/p' "$log" 2>/dev/null | tail -n 1)
bye=$(sed -n 's/.*BYE \(.*\)/\1/p' "$log" 2>/dev/null | tail -n 1)
rm -f "$log"
if [ -z "$final" ]; then
  echo "call-in: no answer from the proxy (is scripts/run.sh running? SIPp status $status)" >&2
  exit 1
fi
case $final in
  200*) echo "call-in: answered; the carrier hung up after ${secs}s (BYE: ${bye:-no answer})" ;;
  *) echo "call-in: $final"; exit 1 ;;
esac
