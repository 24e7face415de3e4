#!/bin/bash
# Drain this proxy before a restart: new calls go to the site's other proxy, the calls in progress end.
#
#   scripts/drain.sh start              new calls get 503 Retry-After (emergency calls, calls in
#                                       progress, REGISTERs go on)
#   scripts/drain.sh wait [--timeout S] until no call is left (exit 0), or S seconds (default 600):
#                                       exit 1, saying how many are left
#   scripts/drain.sh stop               serve new calls again (a restart does too)
#   scripts/drain.sh status             "draining N" or "serving N": the state and the calls in progress
#
# It speaks to Kamailio over its control socket (KAMAILIO_CTL, scripts/env.sh; Ansible's proxy.env):
# pv.shvSet/pv.shvGet on $shv(draining) (kamailio.cfg), and the dialog module's count of calls set up
# or in progress (dlg.stats_active "all"). The calls are not handed over: their dialogs are in Redis
# (kamailio.cfg, dialog db_mode), so one still up when the wait gives up survives the restart anyway.
# Exit 2: usage, or Kamailio not answering on its control socket.
set -euo pipefail
shopt -s inherit_errexit  # a failed RPC inside $(...) stops the script too
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [ -z "${KAMAILIO_CTL:-}" ]; then
  source "$ROOT/scripts/env.sh"
fi

usage() {
  echo "usage: $0 start | wait [--timeout SECONDS] | stop | status" >&2
  exit 2
}

rpc() {
  local out
  if ! out=$(kamcmd -s "$KAMAILIO_CTL" "$@" 2>&1) || [[ $out == error:* ]]; then
    echo "drain.sh: Kamailio does not answer '$*' on $KAMAILIO_CTL: $out" >&2
    exit 2
  fi
  printf '%s\n' "$out"
}

# Each is used as `x=$(...)` only: a failed RPC then stops the script with its exit 2 (set -e).
calls() {
  local out
  out=$(rpc dlg.stats_active)
  # dialogs starting, ringing, answering or answered; not the ones already ended (kept a moment)
  sed -n 's/^[[:space:]]*all:[[:space:]]*\([0-9]\+\).*/\1/p' <<<"$out"
}

state() {
  local out
  out=$(rpc pv.shvGet draining)
  if [[ $out =~ value:[[:space:]]*1($|[^0-9]) ]]; then echo draining; else echo serving; fi
}

case ${1:-} in
  start)
    [ $# -eq 1 ] || usage
    rpc pv.shvSet draining int 1 >/dev/null
    left=$(calls)
    echo "draining: new calls get 503 Retry-After; $left call(s) in progress"
    ;;
  stop)
    [ $# -eq 1 ] || usage
    rpc pv.shvSet draining int 0 >/dev/null
    left=$(calls)
    echo "serving: new calls accepted; $left call(s) in progress"
    ;;
  status)
    [ $# -eq 1 ] || usage
    now=$(state)
    left=$(calls)
    echo "$now $left"
    ;;
  wait)
    timeout=600
    shift
    while [ $# -gt 0 ]; do
      case $1 in
        --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
        --timeout=*) timeout=${1#--timeout=}; shift ;;
        *) usage ;;
      esac
    done
    [[ $timeout =~ ^[0-9]+$ ]] || usage
    now=$(state)
    if [ "$now" != draining ]; then
      # waiting on a proxy that still takes new calls may never end
      echo "drain.sh: not draining (run 'drain.sh start' first)" >&2
      exit 2
    fi
    deadline=$((SECONDS + timeout))
    while :; do
      left=$(calls)
      if [ "$left" -eq 0 ]; then
        echo "drained: no call in progress"
        exit 0
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "drain.sh: $left call(s) still in progress after ${timeout}s" >&2
        exit 1
      fi
      sleep 1
    done
    ;;
  *)
    usage
    ;;
esac
