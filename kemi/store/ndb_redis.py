"""REDIS_URL in the words of Kamailio's ndb_redis, the connection topology hiding keeps its records
through (kamailio.cfg: topos_redis). scripts/kamailio.sh asks it at every start:

    python -m kemi.store.ndb_redis [--required] URL   ->  the `server` modparam on stdout

A URL ndb_redis cannot use is a warning on stderr, or with --required (TOPOS_REDIS_URL, which a
deployment sets) an error and exit 2: Kamailio does not start rather than hide nothing.

The URL is read by the parser the routes' own connection uses (redis-py's parse_url, kemi.store.
connection), so both reach the same Redis. ndb_redis 5.6 logs in with a password only (AUTH
<password>: Redis's default user), speaks no TLS and splits its parameters on ';'. A URL it cannot
use still gives a server line (Kamailio starts, calls go on) with a warning: topos then fails to
store, and sends every message unhidden with an error line each.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from redis.connection import SSLConnection, parse_url

SERVER_NAME = "topos"  # kamailio.cfg: modparam("topos_redis", "serverid", ...)


@dataclass(frozen=True)
class NdbServer:
    server: str              # the value of modparam("ndb_redis", "server", ...)
    problem: str | None      # why topology hiding will not be able to use it


def ndb_server(url: str) -> NdbServer:
    where = parse_url(url)
    password = where.get("password") or ""
    user = where.get("username") or ""
    problem = None
    if where.get("connection_class") is SSLConnection:
        problem = "TLS (rediss://): ndb_redis 5.6 speaks plain TCP only"
    elif user not in ("", "default"):
        problem = f"ACL user {user!r}: ndb_redis 5.6 logs in as the default user only"
    elif ";" in password:
        problem = "a ';' in the password: ndb_redis splits its parameters on ';'"
        password = ""
    if "path" in where:
        place = f"unix={where['path']}"
    else:
        place = f"addr={where.get('host') or 'localhost'};port={where.get('port') or 6379}"
    server = f"name={SERVER_NAME};{place};db={where.get('db') or 0}" + (f";pass={password}" if password else "")
    return NdbServer(server, problem)


def main(argv: list[str]) -> int:
    required = argv[1:2] == ["--required"]
    args = argv[2:] if required else argv[1:]
    name = "TOPOS_REDIS_URL" if required else "REDIS_URL"
    if len(args) != 1:
        print("usage: python -m kemi.store.ndb_redis [--required] REDIS_URL", file=sys.stderr)
        return 2
    try:
        found = ndb_server(args[0])
    except ValueError as exc:
        print(f"kemi.store.ndb_redis: {name} is not a Redis URL: {exc}", file=sys.stderr)
        return 2
    if found.problem and required:
        print(f"ERROR: topology hiding cannot use {name} ({found.problem}): carriers and phones would see "
              f"each other's addresses; Kamailio not started (kamailio.cfg, topos)", file=sys.stderr)
        return 2
    if found.problem:
        print(f"WARNING: topology hiding cannot use {name} ({found.problem}): carriers and phones will "
              f"see each other's addresses (kamailio.cfg, topos)", file=sys.stderr)
    print(found.server)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
