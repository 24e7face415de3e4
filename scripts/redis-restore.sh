#!/usr/bin/env bash
# Restore a backup (scripts/redis-backup.sh) into a fresh redis-server:
#   scripts/redis-restore.sh FILE DIR PORT
# DIR must not exist or be empty. The RDB is checked, loaded by a redis-server on 127.0.0.1:PORT
# (daemonized, pid in DIR/redis.pid), and only then is AOF turned on: a server started with
# appendonly yes and no AOF file ignores dump.rdb and starts empty. Prints the server's key count.
# This is the restore the tests run (tests/sip/test_failover.py); production: README "Backups and restore".
# With an ACL (as every deployment has): REDIS_ACL_FILE=the users file the server starts with (an RDB
# holds no users), and REDISCLI_AUTH=password REDIS_RESTORE_USER=user for this script's own checks
# (a user allowed INFO, CONFIG SET, DBSIZE: the admin user).
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 FILE DIR PORT" >&2; exit 2; }
file=$1 dir=$2 port=$3
[ -r "$file" ] || { echo "redis-restore: $file: no such readable file" >&2; exit 2; }
mkdir -p "$dir"
[ -z "$(ls -A "$dir")" ] || { echo "redis-restore: $dir is not empty: restore into a fresh directory" >&2; exit 2; }
redis-check-rdb "$file" > "$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; exit 1; }
cp "$file" "$dir/dump.rdb"
cli() { redis-cli --no-auth-warning ${REDIS_RESTORE_USER:+--user "$REDIS_RESTORE_USER"} -p "$port" "$@"; }
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --dbfilename dump.rdb --appendonly no --save "" \
  ${REDIS_ACL_FILE:+--aclfile "$REDIS_ACL_FILE"} \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 200); do
  [ "$(cli INFO persistence 2>/dev/null | tr -d '\r' | sed -n 's/^loading://p')" = 0 ] && break
  sleep 0.05
done
cli CONFIG SET appendonly yes > /dev/null
for _ in $(seq 600); do
  info=$(cli INFO persistence | tr -d '\r')
  grep -q '^aof_enabled:1' <<< "$info" && grep -q '^aof_rewrite_in_progress:0' <<< "$info" &&
    grep -q '^aof_rewrite_scheduled:0' <<< "$info" && break
  sleep 0.05
done
grep -q '^aof_enabled:1' <<< "$info" || { echo "redis-restore: AOF did not turn on (see $dir/redis.log)" >&2; exit 1; }
echo "redis-restore: 127.0.0.1:$port serves $file ($(cli DBSIZE) keys in db 0), AOF on, pid $(cat "$dir/redis.pid")"
