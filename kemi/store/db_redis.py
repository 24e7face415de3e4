"""The site's shared registrations: REDIS_URL in the words of Kamailio's db_redis, which keeps usrloc's
`location` table in Redis (kamailio.cfg, "Site"). scripts/kamailio.sh asks it at every start when
LOCATION_STORE=redis:

    python -m kemi.store.db_redis URL DB  ->  usrloc's db_url on stdout (URL's server, database DB),
                                              after making sure the table versions usrloc checks at
                                              start are in Redis

The location lives in a database of its own (LOCATION_REDIS_DB): db_redis removes expired contacts with
KEYS location:entry::*, which walks the whole database it runs in, and the proxy's main database holds
topology hiding's records of every call of the last hours (and the money): there it would block Redis for
as long as it takes to walk them all, at every tick of every proxy.

db_redis 5.6 connects over TCP only (redisConnectWithTimeout: no unix socket, no TLS) and logs in
with `AUTH <password>` (Redis's default user, as ndb_redis): a URL it cannot use is an error and
exit 2, and Kamailio does not start. A proxy of a site that silently kept its registrations to
itself would answer 480 for every phone registered through another one.

What db_redis reads and writes, for the ACL of the default user: kamailio.cfg, "Site" (keys location:*
and version:entry::*, and the commands listed there).
"""

from __future__ import annotations

import sys
from pathlib import Path

from redis.connection import SSLConnection, parse_url

SCHEMA_DIR = Path("/usr/share/kamailio/db_redis/kamailio")  # Debian's kamailio-redis-modules
TABLES = ("location",)  # whose version usrloc checks at start (db_check_table_version)


def db_url(url: str, db: int | None = None) -> str:
    """usrloc's db_url for the Redis REDIS_URL names (database db, else the URL's); ValueError saying
    why db_redis cannot use it."""
    where = parse_url(url)
    if where.get("connection_class") is SSLConnection:
        raise ValueError("TLS (rediss://): db_redis 5.6 speaks plain TCP only")
    if "path" in where:
        raise ValueError("a unix socket: db_redis 5.6 connects over TCP only (give a redis://host:port URL)")
    user = where.get("username") or ""
    if user not in ("", "default"):
        raise ValueError(f"ACL user {user!r}: db_redis 5.6 logs in as the default user only (AUTH <password>)")
    password = where.get("password") or ""
    if any(c in password for c in "@/:"):
        raise ValueError("an '@', '/' or ':' in the password: Kamailio's db URL parser splits on them")
    auth = f"default:{password}@" if password else ""
    database = where.get("db") or 0 if db is None else db
    return f"redis://{auth}{where.get('host') or 'localhost'}:{where.get('port') or 6379}/{database}"


def table_version(table: str, schema_dir: Path = SCHEMA_DIR) -> int:
    """The version Kamailio's schema file gives the table (its second line)."""
    return int((schema_dir / table).read_text().splitlines()[1].strip())


def prepare(url: str, db: int | None = None, schema_dir: Path = SCHEMA_DIR) -> None:
    """Write the version rows usrloc checks at start, unless they are there (db_redis's layout:
    the hash version:entry::<table>, field table_version). Idempotent; a sibling starting at the same
    time writes the same value."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, **({} if db is None else {"db": db}))
    try:
        for table in TABLES:
            client.hsetnx(f"version:entry::{table}", "table_version", table_version(table, schema_dir))
    finally:
        client.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: python -m kemi.store.db_redis REDIS_URL DB", file=sys.stderr)
        return 2
    db = int(argv[2])
    try:
        found = db_url(argv[1], db)
    except ValueError as exc:
        print(f"ERROR: the site's shared registrations (LOCATION_STORE=redis) cannot use that Redis URL: {exc}; "
              f"Kamailio not started (kamailio.cfg, Site)", file=sys.stderr)
        return 2
    try:
        prepare(argv[1], db)
    except Exception as exc:  # Redis down at start: usrloc's own check then stops Kamailio with its reason
        print(f"WARNING: could not write the location table's version to Redis ({type(exc).__name__}: {exc})",
              file=sys.stderr)
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
