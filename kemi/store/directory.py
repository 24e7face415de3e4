"""Companies and extensions in Redis: the lookups the proxy makes per request, and the
one-transaction apply the ops CLI makes per provisioning file."""

from __future__ import annotations

from dataclasses import dataclass, replace


from kemi.model import RECEPTIONIST, Company, Did, Extension, MediaServer, Site, Trunk
from kemi.provisioning import Provisioning
from kemi.store import keys
from kemi.store.apply import apply_file, sorted_trunks
from kemi.store.cache import RoutingCache, Snapshot
from kemi.store.connection import Connection, pack, unpack


@dataclass(frozen=True)
class CallContext:
    """What routing an outgoing call needs, fetched in two round trips."""

    company: Company | None
    caller: Extension | None
    callee: Extension | None          # the dialled extension, when 2XXX was dialled
    trunks: tuple[Trunk, ...] = ()    # by priority
    overrides: dict[str, str] | None = None  # E.164 prefix -> billing class
    media: tuple[MediaServer, ...] = ()       # for the balance announcement of a prepaid call


@dataclass(frozen=True)
class Source:
    """A trusted SIP peer, recognised by its source address and port."""

    kind: str    # "trunk" or "media"
    name: str


@dataclass(frozen=True)
class Inbound:
    """Where a call to one of our numbers goes."""

    did: Did | None
    company: Company | None = None
    extension: Extension | None = None
    receptionist: MediaServer | None = None


class Directory:
    """The lookups of the hot path make one round trip each, which also reads the schema and
    directory versions; trunks, overrides, media servers, trusted sources and domain owners come
    from this process's checked copy (kemi.store.cache.RoutingCache)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.cache = RoutingCache(conn)

    def _round_trip(self, *commands: tuple) -> tuple[Snapshot, list]:
        """One round trip: the versions, then the commands; (checked copy, the commands' replies)."""
        schema, version, *found = self.conn.run([*RoutingCache.HEAD, *commands])
        return self.cache.checked(schema, version), found

    # -- per-request lookups (the hot path: one round trip each, none from a fresh copy) ------
    def domain_known(self, sip_domain: str) -> bool:
        """Whether a SIP domain belongs to one of our companies (no round trip when this process
        knows it from a fresh copy; else one)."""
        return self._owner(sip_domain) is not None

    def _owner(self, sip_domain: str) -> str | None:
        if self.cache.fresh() and sip_domain in self.cache.domains:
            return self.cache.domains[sip_domain]
        _, (raw,) = self._round_trip(("GET", keys.domain(sip_domain)))
        co = unpack(raw)
        if co is not None:
            self.cache.remember_domain(sip_domain, co)
        return co

    def company(self, co: str) -> Company | None:
        _, (raw,) = self._round_trip(("GET", keys.company(co)))
        data = unpack(raw)
        return None if data is None else Company.from_dict(data)

    def first_look(self, ip: str, port: int, sip_domain: str) -> tuple[Source | None, str | None]:
        """Who sends an INVITE: a trusted peer by its address, and the company of its From domain
        (handed on to call_context). From a fresh copy when it knows either; else one round trip."""
        cache = self.cache
        if cache.fresh():
            source, co = cache.snapshot.sources.get((ip, int(port))), cache.domains.get(sip_domain)
            if source is not None or co is not None:
                return (Source(**source) if source else None), co
        snapshot, (raw,) = self._round_trip(("GET", keys.domain(sip_domain)))
        co = unpack(raw)
        if co is not None:
            cache.remember_domain(sip_domain, co)
        source = snapshot.sources.get((ip, int(port)))
        return (Source(**source) if source else None), co

    def call_context(self, sip_domain: str, user: str, callee: str | None, co: str | None = None) -> CallContext:
        """A caller's company, extension, callee and routes, in one round trip when the company of
        the domain is known (co, or this process's copy), two otherwise."""
        co = co or self.cache.domains.get(sip_domain)
        if co is None and (co := self._owner(sip_domain)) is None:
            return CallContext(None, None, None)
        names = [keys.company(co), keys.extension(co, user)] + ([keys.extension(co, callee)] if callee else [])
        snapshot, (found,) = self._round_trip(("MGET", *names))
        company, caller, *rest = [unpack(r) for r in found]
        if company is None or company.get("domain") != sip_domain:
            # the copy named a company that no longer owns the domain: ask Redis who does
            self.cache.forget_domain(sip_domain)
            owner = self._owner_now(sip_domain)
            return self.call_context(sip_domain, user, callee, owner) if owner not in (None, co) \
                else CallContext(None, None, None)
        return CallContext(
            company=Company.from_dict(company),
            caller=Extension.from_dict(caller) if caller else None,
            callee=Extension.from_dict(rest[0]) if rest and rest[0] else None,
            trunks=snapshot.trunks, overrides=dict(snapshot.overrides), media=snapshot.media)

    def _owner_now(self, sip_domain: str) -> str | None:
        _, (raw,) = self._round_trip(("GET", keys.domain(sip_domain)))
        co = unpack(raw)
        if co is not None:
            self.cache.remember_domain(sip_domain, co)
        return co

    def inbound(self, e164: str) -> Inbound:
        """A DID's company, target extension and receptionist, in two round trips."""
        _, (raw,) = self._round_trip(("GET", keys.did(e164)))
        if raw is None:
            return Inbound(None)
        did = Did.from_dict(unpack(raw))
        return self.company_view(did.co, did.target if did.target != RECEPTIONIST else None, did)

    def company_view(self, co: str, extension: str | None, did: Did | None = None) -> Inbound:
        names = [keys.company(co)] + ([keys.extension(co, extension)] if extension else [])
        snapshot, ((company, *ext),) = self._round_trip(("MGET", *names))
        if company is None:
            return Inbound(did)
        company = Company.from_dict(unpack(company))
        servers = {m.name: m for m in snapshot.media}
        return Inbound(did, company,
                       Extension.from_dict(unpack(ext[0])) if ext and ext[0] else None,
                       servers.get(company.receptionist) if company.receptionist else None)

    def routes(self) -> tuple[tuple[Trunk, ...], dict[str, str]]:
        """Trunks and numbering overrides, for a call that did not come from a phone."""
        snapshot = self.cache.current()
        return snapshot.trunks, dict(snapshot.overrides)

    def peer_addresses(self) -> frozenset[tuple[str, int]]:
        """(ip, port) of every trunk and media server, the trusted sources (this process's copy,
        checked as every copy is: the same addresses as the `sources` index `load` writes)."""
        return frozenset(self.cache.current().sources)

    def sites(self) -> tuple[Site, ...]:
        """The declared sites (this process's copy, checked as every copy is)."""
        return self.cache.current().sites

    def trunks(self) -> tuple[Trunk, ...]:
        client = self.conn.ready()
        return sorted_trunks(self.conn.call(client.hgetall, keys.TRUNKS))

    # -- prefix overrides of the numbering plan (ops) -------------------------------------------
    def overrides(self) -> dict[str, str]:
        client = self.conn.client()
        return {k.decode(): unpack(v) for k, v in self.conn.call(client.hgetall, keys.NUMBERING_OVERRIDES).items()}

    def set_override(self, prefix: str, billing: str) -> None:
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hset(keys.NUMBERING_OVERRIDES, prefix, pack(billing))
        pipe.incr(keys.DIRECTORY_VERSION)  # the proxies' copies are out of date (kemi.store.cache)
        self.conn.call(pipe.execute)

    def remove_override(self, prefix: str) -> bool:
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hdel(keys.NUMBERING_OVERRIDES, prefix)
        pipe.incr(keys.DIRECTORY_VERSION)
        removed, _ = self.conn.call(pipe.execute)
        return bool(removed)

    # -- ops ------------------------------------------------------------------------------
    def is_provisioned(self, co: str) -> bool:
        client = self.conn.client()
        return bool(self.conn.call(client.exists, keys.company(co)))

    def companies(self) -> list[Company]:
        client = self.conn.client()
        call = self.conn.call
        ids = sorted(m.decode() for m in call(client.smembers, keys.COMPANIES))
        out = []
        for co in ids:
            data = unpack(call(client.get, keys.company(co)))
            if data is None:
                continue
            numbers = sorted(n.decode() for n in call(client.smembers, keys.extensions(co)))
            exts = [Extension.from_dict(unpack(r))
                    for r in call(client.mget, [keys.extension(co, n) for n in numbers]) if r]
            dids = sorted(n.decode() for n in call(client.smembers, keys.dids(co)))
            routes = [Did.from_dict(unpack(r)) for r in call(client.mget, [keys.did(n) for n in dids]) if r]
            out.append(replace(Company.from_dict(data), extensions=tuple(exts), dids=tuple(routes)))
        return out

    def apply(self, prov: Provisioning, prune: bool = False) -> list[str]:
        """Make Redis hold exactly the file's companies (and, with prune, nothing else).

        One MULTI/EXEC under WATCH: a concurrent change restarts it, a failure
        leaves the previous data untouched. Money keys are never written here.
        Returns a human summary of the changes.
        """
        client = self.conn.client()
        return self.conn.call(client.transaction, lambda pipe: apply_file(pipe, prov, prune),
                              keys.COMPANIES, value_from_callable=True)
