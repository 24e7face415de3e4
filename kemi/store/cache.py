"""What every call reads but rarely changes, kept per process: trunks, numbering overrides, media
servers, the trusted source addresses they imply, declared sites, and which company owns a SIP domain.

Validity: `directory:version` (keys.DIRECTORY_VERSION), an integer that `kemi.admin` bumps in the
same transaction as every change of those keys (load, override set/remove). The hot lookups read it
in the round trip they make anyway (with `schema:version`); a copy is used without asking Redis only
while its last check is younger than SCHEMA_RECHECK_S (5 s by default), so no routing data is served
stale for longer than that (redis-schema/SCHEMA.md, "Per-process copies"). Nothing here is shared
between processes or nodes: each proxy process checks the version in Redis itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kemi.model import MediaServer, Site, Trunk
from kemi.store import keys
from kemi.store.apply import sorted_trunks, stored_sites
from kemi.store.connection import Connection, unpack

MAX_DOMAINS = 200_000  # a bound on the domain -> company copy; past it the copy starts again


@dataclass
class Snapshot:
    version: bytes | None  # directory:version as read (a plain integer string)
    trunks: tuple[Trunk, ...] = ()
    overrides: dict[str, str] = field(default_factory=dict)
    media: tuple[MediaServer, ...] = ()
    sources: dict[tuple[str, int], dict] = field(default_factory=dict)  # (ip, port) -> {kind, name}
    sites: tuple[Site, ...] = ()  # declared sites, by name


def pairs(reply) -> dict:
    """An HGETALL reply as a dict (redis-py already makes one; RESP2 is a flat list)."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))


def sources_of(trunks, media) -> dict[tuple[str, int], dict]:
    """The trusted-source index `load` writes (kemi.store.apply.write_sources): a media server
    wins over a trunk at the same address and port."""
    found = {}
    for kind, peers in (("trunk", trunks), ("media", media)):
        for peer in peers:
            found[(peer.host, int(peer.port))] = {"kind": kind, "name": peer.name}
    return found


class RoutingCache:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.snapshot: Snapshot | None = None
        self.domains: dict[str, str] = {}
        self._checked_at = float("-inf")

    def fresh(self) -> bool:
        """Whether the copy may be used without asking Redis (checked within SCHEMA_RECHECK_S)."""
        return self.snapshot is not None and \
            self.conn.now() - self._checked_at < self.conn.settings.schema_recheck_s

    HEAD = (("GET", keys.SCHEMA_VERSION), ("GET", keys.DIRECTORY_VERSION))  # validate the copy: first two replies

    def checked(self, schema_raw, version_raw) -> Snapshot:
        """After a round trip that read both versions: the schema is ours (or SchemaMismatch), and
        the copy matches the directory version (reloaded in one more round trip if not)."""
        self.conn.schema_read(schema_raw)
        if self.snapshot is None or self.snapshot.version != version_raw:
            self.reload(version_raw)
        self._checked_at = self.conn.now()
        return self.snapshot

    def reload(self, version) -> None:
        trunks, overrides, media, sites = (pairs(r) for r in self.conn.run(
            [("HGETALL", keys.TRUNKS), ("HGETALL", keys.NUMBERING_OVERRIDES), ("HGETALL", keys.MEDIA_SERVERS),
             ("HGETALL", keys.SITES)]))
        servers = tuple(sorted((MediaServer.from_dict(unpack(v)) for v in media.values()), key=lambda m: m.name))
        trunk_list = sorted_trunks(trunks)
        self.snapshot = Snapshot(version, trunk_list, {k.decode(): unpack(v) for k, v in overrides.items()},
                                 servers, sources_of(trunk_list, servers), stored_sites(sites))
        self.domains = {}

    def current(self) -> Snapshot:
        """The copy, checked against Redis first when it is not fresh (one round trip, two if changed)."""
        if self.fresh():
            return self.snapshot
        return self.checked(*self.conn.run(list(self.HEAD)))

    def remember_domain(self, sip_domain: str, co: str) -> None:
        if len(self.domains) >= MAX_DOMAINS:
            self.domains = {}
        self.domains[sip_domain] = co

    def forget_domain(self, sip_domain: str) -> None:
        self.domains.pop(sip_domain, None)
