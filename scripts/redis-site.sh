#!/usr/bin/env bash
# Redis for a site, on this machine: a primary, a replica, three Sentinels, and the one address every
# client uses (127.0.0.1:$REDIS_PORT), an HAProxy that sends connections only to the server the
# Sentinels' majority names as primary and that says ROLE master (scripts/redis-primary-check.sh).
# Runs in the foreground until SIGTERM/SIGINT, then stops everything it started. Used by
# scripts/run.sh (REDIS_SITE=1) and by the tests (tests/harness.py RedisSite), so both run the same
# topology; production has one node per host, deployed by the Ansible role redis (ansible/README.md).
#   DIR/node-PORT.conf, DIR/node-PORT.pid     each Redis node (redis-server DIR/node-PORT.conf restarts it)
#   DIR/sentinel-PORT.conf, DIR/sentinel-PORT.pid, DIR/haproxy.cfg, DIR/haproxy.pid, DIR/*.log
# "redis-site: ready" is printed once a client on 127.0.0.1:$REDIS_PORT reaches the primary.
# A node that dies is not restarted here: that is the failure the Sentinels are for.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

dir=${REDIS_SITE_DIR:-$RUN_DIR/redis-site-$REDIS_PORT}
read -r -a nodes <<< "$REDIS_SITE_NODE_PORTS"
read -r -a sentinels <<< "$REDIS_SITE_SENTINEL_PORTS"
[ ${#nodes[@]} = 2 ] || { echo "redis-site: REDIS_SITE_NODE_PORTS='$REDIS_SITE_NODE_PORTS': expected two ports (primary replica)" >&2; exit 2; }
[ ${#sentinels[@]} = 3 ] || { echo "redis-site: REDIS_SITE_SENTINEL_PORTS='$REDIS_SITE_SENTINEL_PORTS': expected three ports" >&2; exit 2; }
for name in REDIS_SENTINEL_DOWN_AFTER_MS REDIS_SENTINEL_FAILOVER_TIMEOUT_MS REDIS_SITE_CHECK_MS; do
  [[ ${!name} =~ ^[1-9][0-9]{1,6}$ ]] || { echo "redis-site: $name=${!name}: expected milliseconds, 10..9999999" >&2; exit 2; }
done
mkdir -p "$dir"
# The product's ACL users (redis-schema/acl/, kemi.store.acl: the proxy's, the admin's, `default` for
# topos and db_redis), plus this site's replication and Sentinel users (as the Ansible role
# redis_sentinel has them): every node has the same file, whichever is primary.
: "${REDIS_PROXY_PASSWORD:?redis-site: REDIS_PROXY_PASSWORD is required (the proxy's Redis user)}"
: "${REDIS_ADMIN_PASSWORD:?redis-site: REDIS_ADMIN_PASSWORD is required (the admin's Redis user)}"
repl_password=${REDIS_SITE_REPLICATION_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
sentinel_password=${REDIS_SITE_SENTINEL_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
(cd "$ROOT" && "${KEMI_VENV:-$ROOT/.venv}/bin/python" -m kemi.store.acl "$dir/users.acl")
cat >> "$dir/users.acl" <<ACL
user cowork-replication on >$repl_password resetchannels -@all +psync +replconf +ping +sync +role
user cowork-sentinel on >$sentinel_password allchannels -@all +multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill
ACL
admin_cli=(redis-cli --no-auth-warning --user cowork-admin --pass "$REDIS_ADMIN_PASSWORD")
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  # the nodes' pid files also name a node a test restarted (redis-server DIR/node-PORT.conf)
  for file in "$dir"/*.pid; do [ -e "$file" ] && kill "$(cat "$file")" 2>/dev/null; rm -f "$file"; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
ping() { [ "$(timeout 2 redis-cli -p "$1" PING 2>/dev/null)" = PONG ]; }
up() {  # up WHAT TEST...: wait up to 10 s for TEST to succeed
  local what=$1; shift
  for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done
  echo "redis-site: $what did not come up (logs in $dir)" >&2; exit 1
}

primary=${nodes[0]}
for port in "${nodes[@]}"; do
  # AOF: money lives here (redis-schema/SCHEMA.md). Written as a file so that Sentinel's CONFIG
  # REWRITE (replicaof after a failover) sticks, and a restart is `redis-server` on the same file.
  {
    echo "bind 127.0.0.1"; echo "port $port"; echo "dir $dir/node-$port"
    echo "appendonly yes"; echo 'save ""'; echo "loglevel warning"; echo "logfile $dir/node-$port.log"
    # one replica: nothing to gain from waiting 5 s (the default) for others before a full sync
    echo "repl-diskless-sync-delay 0"
    echo "pidfile $dir/node-$port.pid"
    echo "aclfile $dir/users.acl"; echo "masteruser cowork-replication"; echo "masterauth $repl_password"
    [ "$port" = "$primary" ] || echo "replicaof 127.0.0.1 $primary"
  } > "$dir/node-$port.conf"
  mkdir -p "$dir/node-$port"
  redis-server "$dir/node-$port.conf" &
  pids+=($!)
  up "redis node $port" ping "$port"
done
for port in "${sentinels[@]}"; do
  cat > "$dir/sentinel-$port.conf" <<EOF
bind 127.0.0.1
port $port
dir $dir
logfile $dir/sentinel-$port.log
pidfile $dir/sentinel-$port.pid
sentinel monitor $REDIS_SITE_MASTER 127.0.0.1 $primary 2
sentinel down-after-milliseconds $REDIS_SITE_MASTER $REDIS_SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $REDIS_SITE_MASTER $REDIS_SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $REDIS_SITE_MASTER 1
sentinel auth-user $REDIS_SITE_MASTER cowork-sentinel
sentinel auth-pass $REDIS_SITE_MASTER $sentinel_password
sentinel deny-scripts-reconfig yes
EOF
  redis-sentinel "$dir/sentinel-$port.conf" &
  pids+=($!)
  up "sentinel $port" ping "$port"
done

{
  cat <<EOF
global
  lua-load $ROOT/scripts/redis-primary.lua
  setenv REDIS_SITE_SENTINELS "$(printf '127.0.0.1:%s ' "${sentinels[@]}")"
  setenv REDIS_SITE_MASTER "$REDIS_SITE_MASTER"
  setenv REDIS_SITE_POLL_MS "$REDIS_SITE_CHECK_MS"
  pidfile $dir/haproxy.pid
  log stderr format short local0 notice
defaults
  mode tcp
  log global
  timeout connect 1s
  # Clients keep their connection to Redis open between commands (Kamailio's ndb_redis, kemi's Wire)
  timeout client 1h
  timeout server 1h
  timeout check 1s
frontend redis
  bind 127.0.0.1:$REDIS_PORT
  default_backend primary
backend primary
  # which server is the primary: the Sentinels' majority (scripts/redis-primary.lua) AND the server's
  # own ROLE, whose reply must start with *3 \$6 master
  balance first
  option tcp-check
  tcp-check connect
  tcp-check send "AUTH cowork-sentinel $sentinel_password\\r\\n"
  tcp-check expect string +OK
  tcp-check send "ROLE\\r\\n"
  tcp-check expect binary 2a330d0a24360d0a6d6173746572
  tcp-check send "QUIT\\r\\n"
  # fall 1 rise 1: the Sentinels already waited (down-after-milliseconds) before they decided;
  # shutdown-sessions: connections to a demoted primary are cut, so clients reconnect to the new one
  default-server check inter $REDIS_SITE_CHECK_MS fall 1 rise 1 on-marked-down shutdown-sessions
EOF
  for port in "${nodes[@]}"; do echo "  server node-$port 127.0.0.1:$port"; done
} > "$dir/haproxy.cfg"
haproxy -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
pids+=($!)
routed() { [ "$(timeout 2 "${admin_cli[@]}" -p "$REDIS_PORT" ROLE 2>/dev/null | head -n 1)" = master ]; }
up "haproxy on 127.0.0.1:$REDIS_PORT" routed
# ready means failover-safe: a primary killed before its replica's first sync loses everything
synced() { timeout 2 "${admin_cli[@]}" -p "${nodes[1]}" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; }
up "the replica's sync with 127.0.0.1:$primary" synced
echo "redis-site: ready: clients on 127.0.0.1:$REDIS_PORT, primary 127.0.0.1:$primary, replica" \
     "127.0.0.1:${nodes[1]}, sentinels ${sentinels[*]} (master name $REDIS_SITE_MASTER), files in $dir"
wait
