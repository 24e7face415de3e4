"""Where this proxy keeps its dialogs (kamailio.cfg: the dialog module on db_redis), in db_redis's
words. scripts/kamailio.sh asks it at every start:

    python -m kemi.store.dialog_db [--required] URL   ->  "MODE DB_URL" on stdout

MODE is the dialog module's db_mode (kamailio.cfg explains the choice) and DB_URL its db_url.
A proxy's calls survive its restart only if its dialogs, with their variables (the call record, the
prepaid reservation, the parties) and profiles, are in Redis: the module reloads them at start.

Each proxy has a Redis database of its own for them (DIALOG_REDIS_URL, or REDIS_URL's server with
the database DIALOG_REDIS_DB): the module loads every row of its table at start and keys rows by its
own hash ids, so two proxies sharing one table would load, time out and end each other's calls.

db_redis 5.6 connects over TCP only (no unix socket, no TLS) and logs in with a password alone
(AUTH <password>: Redis's default user, as ndb_redis). A URL it cannot use: with --required
(DIALOG_REDIS_URL, which a deployment sets) an error and exit 2, the proxy does not start; without,
a warning and MODE 0: dialogs in memory only, a restart ends the calls in progress (the tests that
run a proxy in a network namespace reach Redis through a unix socket).

A Redis that does not answer at start is a warning and MODE 0 too, whatever the URL: with db_mode 1 the
dialog module cannot start without its database, and a proxy must start without Redis (emergency calls
need no data). That start reloads no call and keeps the new ones in memory until the next restart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import quote

from redis.connection import SSLConnection, parse_url

# kamailio.cfg: the dialog module's db_mode when the dialogs have a Redis to live in
DB_MODE = 1
# REDIS_URL's server, this database, when DIALOG_REDIS_URL is not given: the last of Redis's 16
DEFAULT_DB = 15


@dataclass(frozen=True)
class DialogDb:
    mode: int                # the dialog module's db_mode: DB_MODE, or 0 (in memory only)
    url: str                 # its db_url ("" with mode 0)
    problem: str | None      # why db_redis cannot use the URL


def dialog_db(url: str, db: int | None = None) -> DialogDb:
    """db: the database to use instead of the URL's own (REDIS_URL is the routes' database)."""
    where = parse_url(url)
    user, password = where.get("username") or "", where.get("password") or ""
    problem = None
    if where.get("connection_class") is SSLConnection:
        problem = "TLS (rediss://): db_redis 5.6 speaks plain TCP only"
    elif "path" in where:
        problem = "a unix socket: db_redis 5.6 connects over TCP only"
    elif user not in ("", "default"):
        problem = f"ACL user {user!r}: db_redis 5.6 logs in as the default user only"
    if problem:
        return DialogDb(0, "", problem)
    database = (where.get("db") or 0) if db is None else db
    auth = f"default:{quote(password, safe='')}@" if password else ""
    return DialogDb(DB_MODE, f"redis://{auth}{where.get('host') or 'localhost'}:{where.get('port') or 6379}/{database}",
                    None)


def unreachable(url: str, timeout_s: float = 1.0) -> str | None:
    """Why Redis at url does not answer (None: it does), as db_redis would connect (AUTH, SELECT)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str]) -> int:
    required = argv[1:2] == ["--required"]
    args = argv[2:] if required else argv[1:]
    name = "DIALOG_REDIS_URL" if required else "REDIS_URL"
    if len(args) not in (1, 2):
        print("usage: python -m kemi.store.dialog_db [--required] URL [DB]", file=sys.stderr)
        return 2
    try:
        found = dialog_db(args[0], int(args[1]) if len(args) == 2 else None)
    except ValueError as exc:
        print(f"kemi.store.dialog_db: {name} is not a Redis URL: {exc}", file=sys.stderr)
        return 2
    if found.problem and required:
        print(f"ERROR: the dialogs cannot be kept in {name} ({found.problem}): a restart would cut every call "
              f"in progress; Kamailio not started (kamailio.cfg, dialog db_mode)", file=sys.stderr)
        return 2
    if found.problem:
        print(f"WARNING: the dialogs cannot be kept in {name} ({found.problem}): they stay in memory, and a "
              f"restart cuts every call in progress (kamailio.cfg, dialog db_mode)", file=sys.stderr)
    elif (why := unreachable(found.url)) is not None:
        print(f"WARNING: Redis for the dialogs ({name}) does not answer ({why}): starting with the dialogs in "
              f"memory; the calls of before this start are not reloaded and a restart cuts the new ones: restart "
              f"the proxy once Redis is back (kamailio.cfg, dialog db_mode)", file=sys.stderr)
        found = DialogDb(0, "", why)
    print(found.mode, found.url or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
