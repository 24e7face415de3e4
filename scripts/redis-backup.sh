#!/usr/bin/env bash
# Back up Redis from a replica, with no downtime and no fork on the primary:
#   scripts/redis-backup.sh REPLICA_HOST:PORT FILE
# redis-cli --rdb asks the replica for a full sync and writes the RDB it sends; the file is checked
# (redis-check-rdb) before it replaces FILE. With an ACL: REDISCLI_AUTH=password and
# REDIS_BACKUP_USER=user (a user allowed SYNC/PSYNC, e.g. the replication user). Restore with
# scripts/redis-restore.sh (README "Backups and restore").
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 REPLICA_HOST:PORT FILE" >&2; exit 2; }
host=${1%:*} port=${1##*:} file=$2
role=$(redis-cli --no-auth-warning -h "$host" -p "$port" ${REDIS_BACKUP_USER:+--user "$REDIS_BACKUP_USER"} ROLE | head -n 1) || true
[ "$role" = slave ] || { echo "redis-backup: $1 is not a replica (ROLE: ${role:-no answer}): back up from the replica, never the primary" >&2; exit 1; }
redis-cli --no-auth-warning -h "$host" -p "$port" ${REDIS_BACKUP_USER:+--user "$REDIS_BACKUP_USER"} --rdb "$file.part" >/dev/null
redis-check-rdb "$file.part" > "$file.check" 2>&1 || { cat "$file.check" >&2; rm -f "$file.part"; exit 1; }
rm -f "$file.check"
mv "$file.part" "$file"
echo "redis-backup: $file ($(stat -c %s "$file") bytes) from the replica $1, checked"
