#!/usr/bin/env bash
# Run the product: a local redis-server with the demo office loaded, and the
# proxy on $SIP_ADDR:$SIP_PORT (UDP and TCP), both in the foreground.
# Ctrl-C (or SIGTERM) stops both.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$ROOT/scripts/setup.sh"

redis_pid=""; kam_pid=""
stop() {
  trap - INT TERM EXIT
  [ -n "$kam_pid" ] && kill "$kam_pid" 2>/dev/null && wait "$kam_pid" 2>/dev/null
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  echo "run: stopped"
}
trap stop INT TERM EXIT

# The proxy and the CLI use the Redis started below, unless told otherwise.
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}

mkdir -p "$RUN_DIR/redis-$REDIS_PORT"
# AOF: money lives here (see redis-schema/SCHEMA.md)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR/redis-$REDIS_PORT" \
  --appendonly yes --save "" --daemonize no --loglevel warning &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

cd "$ROOT"
"$KEMI_VENV/bin/python" -m kemi.admin load "$PROVISION_FILE"

kamailio -f "$ROOT/kamailio.cfg" -DD -E -m "$KAMAILIO_SHM_MB" -M "$KAMAILIO_PKG_MB" \
  -P "$RUN_DIR/kamailio-$SIP_PORT.pid" &
kam_pid=$!
echo "run: proxy on $SIP_ADDR:$SIP_PORT (udp+tcp), Redis on 127.0.0.1:$REDIS_PORT; Ctrl-C stops both"
wait -n "$kam_pid" "$redis_pid"
