#!/usr/bin/env bash
# Run the product: a local redis-server with the demo office loaded (REDIS_SITE=1: a site's Redis
# instead, scripts/redis-site.sh: primary, replica, three Sentinels, and HAProxy on 127.0.0.1:$REDIS_PORT
# following the primary), stand-ins for the provisioned trunks and media servers that have loopback
# addresses (STANDINS=0: none), and the proxy on
# $SIP_ADDR:$SIP_PORT (UDP and TCP) and $TLS_ADDR:$TLS_PORT (TLS), all in the foreground. Ctrl-C (or
# SIGTERM) stops everything.
# "run: proxy on ..." is printed only once the proxy answers an OPTIONS; when the proxy, Redis or
# a stand-in does not come up, or one of them dies later, the script says which, shows the end of
# its log, stops the rest and exits non-zero.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$ROOT/scripts/setup.sh"

mkdir -p "$RUN_DIR/redis-$REDIS_PORT"
kam_log="$RUN_DIR/kamailio-$SIP_PORT.log"
redis_log="$RUN_DIR/redis-$REDIS_PORT.log"

redis_pid=""; kam_pid=""; rtp_pid=""; standin_pids=(); declare -A what=() logs=()
nft_table=""  # the nftables table this run installed (scripts/sip-conn-limit.sh), removed at the end
stopped=""
stop() {
  [ -n "$stopped" ] && return; stopped=1
  # the proxy first, so that its last writes reach Redis
  for pid in $kam_pid $rtp_pid ${standin_pids[@]+"${standin_pids[@]}"} $redis_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -z "$nft_table" ] || NFT_TABLE=$nft_table "$ROOT/scripts/sip-conn-limit.sh" remove
}
trap 'stop; echo "run: stopped"; exit 0' INT TERM
trap stop EXIT

fail() {  # fail MESSAGE [LOG]: the reason, the end of the log that explains it, exit 1
  echo "run: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "run: the end of $2:" >&2
    tail -n 25 "$2" | sed 's/^/  | /' >&2
  fi
  exit 1
}

# Whether something listens on IP PORT [udp|tcp] (read from /proc: no iproute2 needed).
listening() {
  local a b c d hex; IFS=. read -r a b c d <<< "$1"
  hex=$(printf '%02X%02X%02X%02X:%04X' "$d" "$c" "$b" "$a" "$2")
  if [ "${3:-udp}" = tcp ]; then
    awk -v h="$hex" '$2 == h && $4 == "0A" {f=1} END {exit !f}' /proc/net/tcp
  else
    awk -v h="$hex" '$2 == h {f=1} END {exit !f}' /proc/net/udp
  fi
}

# The Redis started below has the product's ACL users (redis-schema/acl/, kemi.store.acl): the proxy's
# Python logs in as cowork-proxy, topology hiding as `default`, the CLI (kemi.admin: provisioning, the
# prepaid functions) as cowork-admin. Their passwords are this run's own unless given.
REDIS_PROXY_PASSWORD=${REDIS_PROXY_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
REDIS_ADMIN_PASSWORD=${REDIS_ADMIN_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export REDIS_PROXY_PASSWORD REDIS_ADMIN_PASSWORD
# The proxy and the CLI use the Redis started below, unless told otherwise (REDIS_URL: both).
ADMIN_REDIS_URL=${REDIS_URL:-redis://cowork-admin:$REDIS_ADMIN_PASSWORD@127.0.0.1:$REDIS_PORT/0}
if [ -z "${REDIS_URL:-}" ]; then
  export TOPOS_REDIS_URL=${TOPOS_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
fi
export REDIS_URL=${REDIS_URL:-redis://cowork-proxy:$REDIS_PROXY_PASSWORD@127.0.0.1:$REDIS_PORT/0}

# Something else on a port would be taken for ours (the demo loaded into another Redis, OPTIONS
# answered by another proxy): refuse at once instead.
in_use() { fail "$1 is in use: $2"; }
# REDIS_START=0: the second proxy of a site (README, A site of two proxies) uses the Redis the first one
# started, with its provisioning: nothing to start or load here.
if [ "$REDIS_START" = 0 ]; then
  listening 127.0.0.1 "$REDIS_PORT" tcp ||
    fail "REDIS_START=0, but nothing listens on 127.0.0.1:$REDIS_PORT: start the site's first proxy first"
elif listening 127.0.0.1 "$REDIS_PORT" tcp; then
  in_use "127.0.0.1:$REDIS_PORT (Redis)" "another Redis? REDIS_PORT=... picks another port"
fi
if listening "$SIP_ADDR" "$SIP_PORT" udp || listening "$SIP_ADDR" "$SIP_PORT" tcp; then
  in_use "$SIP_ADDR:$SIP_PORT (SIP)" "another proxy? SIP_PORT=... picks another port"
fi
listening 127.0.0.1 "$RTPENGINE_NG_PORT" udp &&
  in_use "127.0.0.1:$RTPENGINE_NG_PORT (rtpengine control)" "another rtpengine? RTPENGINE_NG_PORT=... picks another port"
listening "$TLS_ADDR" "$TLS_PORT" tcp &&
  in_use "$TLS_ADDR:$TLS_PORT (SIP over TLS)" "another proxy? TLS_PORT=... picks another port"
listening "$METRICS_ADDR" "$METRICS_PORT" tcp &&
  in_use "$METRICS_ADDR:$METRICS_PORT (metrics)" "another proxy? METRICS_PORT=... picks another port"

# The per-source connection limit's settings, checked before anything starts (installed further down)
if [ "$TCP_PER_SOURCE_MAX" != 0 ]; then "$ROOT/scripts/sip-conn-limit.sh" ruleset > /dev/null || exit 2; fi

# TLS: the operator's certificate and key, or (neither given) a self-signed demo pair.
if [ -z "$TLS_CERT" ] && [ -z "$TLS_KEY" ]; then
  read -r TLS_CERT TLS_KEY < <("$ROOT/scripts/demo-cert.sh" "$RUN_DIR/tls" "$TLS_ADDR") ||
    fail "no demo certificate could be made in $RUN_DIR/tls (openssl)"
  echo "run: TLS with the self-signed demo certificate $TLS_CERT (key $TLS_KEY); phones must be told to trust it"
else
  for file in TLS_CERT TLS_KEY; do
    [ -n "${!file}" ] || fail "$file is empty: give both TLS_CERT and TLS_KEY, or neither for the demo certificate"
    [ -r "${!file}" ] || fail "$file=${!file}: no such readable file"
  done
fi
export TLS_CERT TLS_KEY

# AOF: money lives here (see redis-schema/SCHEMA.md)
# Output goes to the terminal and to a log (tail shown on failure). The tee is opened here, not as
# `cmd > >(tee ...)`: that tee would become the child of the command, and Kamailio waits for all
# its children before it exits, the tee included, which waits for Kamailio: it never stops.
if [ "$REDIS_START" != 0 ]; then
exec {redis_out}> >(tee "$redis_log")
(cd "$ROOT" && "$KEMI_VENV/bin/python" -m kemi.store.acl "$RUN_DIR/redis-$REDIS_PORT/users.acl") ||
  fail "cannot write the Redis ACL file $RUN_DIR/redis-$REDIS_PORT/users.acl"
if [ "$REDIS_SITE" = 1 ]; then
  # a site's Redis (scripts/redis-site.sh): primary, replica, three Sentinels, HAProxy on
  # 127.0.0.1:$REDIS_PORT; money changes wait for the replica unless told otherwise
  export REDIS_WAIT_REPLICAS=${REDIS_WAIT_REPLICAS:-1}
  for port in $REDIS_SITE_NODE_PORTS $REDIS_SITE_SENTINEL_PORTS; do
    listening 127.0.0.1 "$port" tcp && in_use "127.0.0.1:$port (Redis site)" "REDIS_SITE_NODE_PORTS/REDIS_SITE_SENTINEL_PORTS pick others"
  done
  "$ROOT/scripts/redis-site.sh" >&"$redis_out" 2>&1 &
  redis_pid=$!
  for _ in $(seq 300); do
    kill -0 "$redis_pid" 2>/dev/null || break
    grep -q "^redis-site: ready" "$redis_log" && break
    sleep 0.1
  done
  grep -q "^redis-site: ready" "$redis_log" || fail "the Redis site did not come up on 127.0.0.1:$REDIS_PORT" "$redis_log"
else
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR/redis-$REDIS_PORT" \
  --aclfile "$RUN_DIR/redis-$REDIS_PORT/users.acl" \
  --appendonly yes --save "" --daemonize no --loglevel warning >&"$redis_out" 2>&1 &
redis_pid=$!
ours() {  # the Redis that answers is the one started here
  [ "$(REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD timeout 2 redis-cli --user cowork-admin -p "$REDIS_PORT" info server 2>/dev/null |
       sed -n 's/^process_id:\([0-9]*\).*/\1/p')" = "$redis_pid" ]
}
for _ in $(seq 100); do
  kill -0 "$redis_pid" 2>/dev/null || break
  ours && break
  sleep 0.1
done
ours || fail "redis-server did not come up on 127.0.0.1:$REDIS_PORT" "$redis_log"
fi
fi

cd "$ROOT"
if [ "$REDIS_START" != 0 ]; then
  "$KEMI_VENV/bin/python" -m kemi.admin --redis-url "$ADMIN_REDIS_URL" load "$PROVISION_FILE"
fi
# the ops CLI of this run (provisioning, prepaid top-ups and audit): source it, then python -m kemi.admin
(umask 077; echo "export REDIS_URL=$ADMIN_REDIS_URL" > "$RUN_DIR/admin.env")
echo "run: the ops CLI's Redis user (cowork-admin): . $RUN_DIR/admin.env"

# The media server (media/, MEDIA_SERVERS=media) in the receptionist or announcement role NAME on
# HOST:PORT, its log in $RUN_DIR/media-NAME.log; up once it says "started".
start_media() {  # start_media ROLE NAME HOST PORT TRANSPORT N
  local log="$RUN_DIR/media-$2.log" pid
  : > "$log"
  MEDIA_ROLE=$1 MEDIA_SIP_ADDR=$3 MEDIA_SIP_PORT=$4 MEDIA_TRANSPORT=$5 MEDIA_PROXIES=$SIP_ADDR \
    MEDIA_PROVISION_FILE=$PROVISION_FILE MEDIA_CACHE_DIR=${MEDIA_CACHE_DIR:-$RUN_DIR/media-cache} \
    MEDIA_HTTP_ADDR=$3 MEDIA_HTTP_PORT=$MEDIA_HTTP_PORT \
    MEDIA_RTP_PORT_MIN=$((40000 + 1000 * $6)) MEDIA_RTP_PORT_MAX=$((40999 + 1000 * $6)) \
    "$KEMI_VENV/bin/python" -m media >> "$log" 2>&1 &
  pid=$!
  standin_pids+=("$pid"); what[$pid]="media server $2 ($1) on $5:$3:$4"; logs[$pid]=$log
  for _ in $(seq 200); do
    grep -q "started sip=" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -q "started sip=" "$log" || fail "the ${what[$pid]} did not come up" "$log"
  echo "run: ${what[$pid]}, metrics on http://$3:$MEDIA_HTTP_PORT/metrics, log $log"
}

# Stand-ins (sipp-scenarios/standin-*.xml) for the peers on loopback addresses, and the media
# server for the receptionist and announcement roles (MEDIA_SERVERS=sipp: SIPp stand-ins for those too).
if [ "$STANDINS" != 0 ]; then
  peers=$("$ROOT/scripts/standin-peers.sh" "$PROVISION_FILE")
  n=0
  while read -r role name host port transport; do
    [ -n "$role" ] || continue
    case $role in
      carrier) scenario=standin-carrier.xml; extra=() ;;
      receptionist) scenario=standin-reception.xml; extra=(-set ext "$STANDIN_EXTENSION") ;;
      announcement) scenario=standin-announce.xml; extra=() ;;
      *) continue ;;
    esac
    listening "$host" "$port" "$transport" &&
      in_use "$transport:$host:$port (stand-in $name)" "another run.sh? STANDINS=0 starts no stand-ins"
    if [ "$role" != carrier ] && [ "$MEDIA_SERVERS" = media ]; then
      start_media "$role" "$name" "$host" "$port" "$transport" "$n"
      n=$((n + 1))
      continue
    fi
    log="$RUN_DIR/standin-$name.log"
    rm -f "$log" "$RUN_DIR/standin-$name.errors"
    # SIPp binds -mp and -mp+2 (audio, video): four ports per stand-in, as two may share an address.
    # -ci 100::1: no control socket, where one "Q" datagram from anyone would stop it (SIPp 3.6 binds
    # it as IPv4 whatever the address: every bind fails; tests/harness.py NO_CONTROL_SOCKET)
    sipp -sf "$ROOT/sipp-scenarios/$scenario" -i "$host" -p "$port" -mi "$host" -mp $((20000 + 4 * n)) -ci 100::1 \
      -t "$([ "$transport" = tcp ] && echo t1 || echo u1)" -nostdin \
      -trace_logs -log_file "$log" -trace_err -error_file "$RUN_DIR/standin-$name.errors" \
      ${extra[@]+"${extra[@]}"} > /dev/null 2>> "$RUN_DIR/standin-$name.errors" &
    pid=$!
    standin_pids+=("$pid"); what[$pid]="stand-in $name ($role) on $transport:$host:$port"
    logs[$pid]="$RUN_DIR/standin-$name.errors"
    for _ in $(seq 100); do
      listening "$host" "$port" "$transport" && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    listening "$host" "$port" "$transport" ||
      fail "the ${what[$pid]} did not come up" "${logs[$pid]}"
    echo "run: ${what[$pid]}, log $log"
    n=$((n + 1))
  done <<< "$peers"
fi

# At most TCP_PER_SOURCE_MAX TCP/TLS connections per source address (scripts/sip-conn-limit.sh):
# nftables needs root; without it (or with TCP_PER_SOURCE_MAX=0) the proxy runs unlimited, and says so.
# The table is this run's own (named after SIP_PORT), removed when run.sh stops.
if [ "$TCP_PER_SOURCE_MAX" = 0 ]; then
  echo "run: no per-source TCP/TLS connection limit (TCP_PER_SOURCE_MAX=0)"
elif [ "$(id -u)" != 0 ] || ! command -v nft > /dev/null; then
  echo "run: no per-source TCP/TLS connection limit: installing it (nftables) needs root and nft"
else
  # the declared sites' addresses (a building's NAT: many TLS phones behind one address) get
  # TCP_PER_SITE_MAX, unless TCP_SITE_NETS names them itself
  if [ -z "$TCP_SITE_NETS" ]; then
    TCP_SITE_NETS=$("$KEMI_VENV/bin/python" -m kemi.admin --redis-url "$ADMIN_REDIS_URL" sites --ipv4-nets) ||
      TCP_SITE_NETS=""
    export TCP_SITE_NETS
  fi
  if NFT_TABLE="cowork_run_$SIP_PORT" "$ROOT/scripts/sip-conn-limit.sh" install > /dev/null; then
    nft_table="cowork_run_$SIP_PORT"
    echo "run: at most $TCP_PER_SOURCE_MAX TCP/TLS connections per source address" \
         "(${TCP_SITE_NETS:+$TCP_PER_SITE_MAX from $TCP_SITE_NETS; }nftables table inet $nft_table)"
  else
    echo "run: no per-source TCP/TLS connection limit: nft could not load it (see above)"
  fi
fi

# rtpengine: the media relay of every call (kemi/sip/media.py). Userspace forwarding only
# (--table=-1: no kernel module); no config file, every setting is here and in scripts/env.sh.
# --offer-timeout: an offer never answered frees its ports after 10 min (the default is an hour),
# longer than any call may ring (an extension's ring_timeout, at most 300 s, then the receptionist's
# 120 s); the proxy deletes the offer of every call that fails, this is the last resort.
# (tests/harness.py MediaRelay starts it the same way.)
rtp_log="$RUN_DIR/rtpengine.log"
: > "$rtp_log"
rtpengine --config-file=none --foreground --table=-1 --interface="$RTP_ADDR" \
  --listen-ng="127.0.0.1:$RTPENGINE_NG_PORT" --port-min="$RTP_PORT_MIN" --port-max="$RTP_PORT_MAX" \
  --timeout=60 --silent-timeout=3600 --final-timeout=14400 --offer-timeout=600 --log-stderr --log-level=6 >> "$rtp_log" 2>&1 &
rtp_pid=$!
what[$rtp_pid]="media relay (rtpengine)"; logs[$rtp_pid]=$rtp_log
for _ in $(seq 100); do
  grep -q "Startup complete" "$rtp_log" && break
  kill -0 "$rtp_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q "Startup complete" "$rtp_log" || fail "rtpengine did not come up on $RTP_ADDR" "$rtp_log"
echo "run: media relay (rtpengine) on $RTP_ADDR, RTP ports $RTP_PORT_MIN-$RTP_PORT_MAX, log $rtp_log"

: > "$kam_log"
exec {kam_out}> >(tee -a "$kam_log")
# scripts/kamailio.sh: Debian's Python and the venv, whatever PATH says
"$ROOT/scripts/kamailio.sh" -f "$ROOT/kamailio.cfg" -DD -E -m "$KAMAILIO_SHM_MB" -M "$KAMAILIO_PKG_MB" \
  -P "$RUN_DIR/kamailio-$SIP_PORT.pid" >&"$kam_out" 2>&1 &
kam_pid=$!
what[$kam_pid]="proxy"; logs[$kam_pid]=$kam_log

# Up means answering SIP: one OPTIONS to the proxy, 200 expected within a second. (Not SIPp: it
# takes 5060 and the ports above it for itself when free, and would race the proxy for its port.)
answers_options() {
  "$KEMI_VENV/bin/python" - "$SIP_ADDR" "$SIP_PORT" <<'EOF'
import socket, sys, uuid
ip, port = sys.argv[1], int(sys.argv[2])
tag = uuid.uuid4().hex
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.bind((ip, 0))
    s.settimeout(1)
    me = s.getsockname()[1]
    s.sendto((f"OPTIONS sip:{ip}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{me};branch=z9hG4bK{tag[:16]};rport\r\n"
              f"From: <sip:run@{ip}>;tag={tag[:8]}\r\nTo: <sip:{ip}:{port}>\r\nCall-ID: {tag}\r\n"
              f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (ip, port))
    try:
        sys.exit(0 if s.recv(65535).startswith(b"SIP/2.0 200") else 1)
    except OSError:
        sys.exit(1)
EOF
}
deadline=$((SECONDS + START_TIMEOUT_S))
until answers_options 2>/dev/null; do
  if ! kill -0 "$kam_pid" 2>/dev/null; then
    status=0; wait "$kam_pid" || status=$?; kam_pid=""
    fail "the proxy exited while starting (status $status)" "$kam_log"
  fi
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "the proxy did not answer OPTIONS on $SIP_ADDR:$SIP_PORT within ${START_TIMEOUT_S}s (START_TIMEOUT_S)" \
         "$kam_log"
  sleep 0.2
done
echo "run: proxy on $SIP_ADDR:$SIP_PORT (udp+tcp) and $TLS_ADDR:$TLS_PORT (tls)," \
     "metrics on http://$METRICS_ADDR:$METRICS_PORT/metrics, Redis on 127.0.0.1:$REDIS_PORT, log $kam_log; Ctrl-C stops all"

status=0
wait -n -p ended "$kam_pid" "$rtp_pid" ${redis_pid:+"$redis_pid"} ${standin_pids[@]+"${standin_pids[@]}"} || status=$?
# Ctrl-C reaches the whole process group: a stand-in may exit before this shell runs its trap (a
# clean stop, exit 0). Give the trap that moment before calling the exit a failure.
sleep 0.5
[ -n "$redis_pid" ] && [ "${ended:-}" = "$redis_pid" ] && fail "redis-server exited (status $status)" "$redis_log"
fail "the ${what[$ended]:-proxy} exited (status $status)" "${logs[$ended]:-$kam_log}"
