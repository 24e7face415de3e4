#!/usr/bin/env bash
# A call from outside to one of the demo's numbers, as its carrier would send it: from the address
# of the first loopback trunk of the provisioning file (over TCP, as the trunk's UDP port belongs to
# its stand-in; the proxy trusts a trunk by address and port). The callee hears SIPp's sample
# recording; the carrier hangs up after SECONDS. Needs scripts/run.sh running.
# --dtmf DIGITS: once the call has early media (the Virtual Receptionist's greeting), the caller
# listens for DTMF_AFTER_S seconds (default 3) and dials DIGITS in RFC 4733 events (scripts/dtmf-pcap.py).
#   scripts/call-in.sh [--dtmf DIGITS] NUMBER [SECONDS [CALLER]]
#   e.g. scripts/call-in.sh +33142685302, scripts/call-in.sh --dtmf 2001 +33142685300
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
digits=""
[[ ${DTMF_AFTER_S:-3} =~ ^[0-9]{1,2}$ ]] || { echo "call-in: DTMF_AFTER_S must be 0..99 seconds" >&2; exit 2; }
if [ "${1:-}" = --dtmf ]; then
  digits=${2:-}; shift 2 || true
  [[ $digits =~ ^[0-9*#]{1,20}$ ]] || { echo "call-in: --dtmf needs 1..20 digits (0-9, *, #), not '$digits'" >&2; exit 2; }
fi
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: scripts/call-in.sh [--dtmf DIGITS] NUMBER [SECONDS [CALLER]]   (NUMBER: a DID, e.g. +33142685300)" >&2
  exit 2
fi
number=$1; secs=${2:-20}; caller=${3:-+33612345678}
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -le 3600 ] || { echo "call-in: SECONDS must be 0..3600, not '$secs'" >&2; exit 2; }

trunk=$("$ROOT/scripts/standin-peers.sh" | awk '$1 == "carrier" {print $3, $4, $2; exit}')
[ -n "$trunk" ] || { echo "call-in: $PROVISION_FILE has no trunk on a loopback address to call from" >&2; exit 2; }
read -r host port name <<< "$trunk"

mkdir -p "$RUN_DIR"
log="$RUN_DIR/call-in-$$.log"
scenario="$ROOT/sipp-scenarios/standin-caller.xml"
if [ -n "$digits" ]; then
  # the same caller, which waits for the early media, then dials; telephone-event in its offer
  pcap="$RUN_DIR/call-in-$$.pcap"; scenario="$RUN_DIR/call-in-$$.xml"
  "$KEMI_VENV/bin/python" "$ROOT/scripts/dtmf-pcap.py" "$digits" "$pcap"
  sed -e "s|<recv response=\"183\" optional=\"true\"/>|<recv response=\"183\"/><pause milliseconds=\"$(( ${DTMF_AFTER_S:-3} * 1000 ))\"/><nop><action><exec play_pcap_audio=\"$pcap\"/></action></nop>|" \
      -e "s|m=audio \[media_port\] RTP/AVP 8\$|m=audio [media_port] RTP/AVP 8 101\n      a=rtpmap:101 telephone-event/8000|" \
      "$ROOT/sipp-scenarios/standin-caller.xml" > "$scenario"
  echo "call-in: dialling $digits after ${DTMF_AFTER_S:-3}s of early media"
fi
echo "call-in: $caller -> $number from trunk $name ($host:$port, tcp), through $SIP_ADDR:$SIP_PORT"
status=0
# The ring time of the longest fallback chain plus the hold: SIPp gives up after that.
# -ci 100::1: no control socket (scripts/run.sh, tests/harness.py NO_CONTROL_SOCKET)
sipp "$SIP_ADDR:$SIP_PORT" -sf "$scenario" -t t1 -i "$host" -p "$port" \
  -mi "$host" -mp 29000 -ci 100::1 -m 1 -nostdin -set dial "$number" -set caller "$caller" \
  -d "$((secs * 1000))" -timeout "$((secs + 360))s" -timeout_error \
  -trace_logs -log_file "$log" > /dev/null 2>&1 || status=$?
final=$(sed -n 's/.*FINAL \(.*\)/\1/p' "$log" 2>/dev/null | tail -n 1)
bye=$(sed -n 's/.*BYE \(.*\)/\1/p' "$log" 2>/dev/null | tail -n 1)
rm -f "$log" ${pcap:+"$pcap" "$scenario"}
if [ -z "$final" ]; then
  echo "call-in: no answer from the proxy (is scripts/run.sh running? SIPp status $status)" >&2
  exit 1
fi
case $final in
  200*) echo "call-in: answered; the carrier hung up after ${secs}s (BYE: ${bye:-no answer})" ;;
  *) echo "call-in: $final"; exit 1 ;;
esac
