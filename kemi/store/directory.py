"""Companies and extensions in Redis: the lookups the proxy makes per request, and the
one-transaction apply the ops CLI makes per provisioning file."""

from __future__ import annotations

from dataclasses import dataclass, replace


from kemi.model import RECEPTIONIST, Company, Did, Extension, MediaServer, Trunk
from kemi.provisioning import Provisioning
from kemi.store import keys
from kemi.store.apply import apply_file, sorted_trunks
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
    def __init__(self, conn: Connection):
        self.conn = conn

    # -- per-request lookups (the hot path: two round trips at most) ------------------
    def domain_known(self, sip_domain: str) -> bool:
        """Whether a SIP domain belongs to one of our companies (one round trip)."""
        client = self.conn.ready()
        if self.conn.call(client.exists, keys.domain(sip_domain)):
            return True
        self.conn.ready(force_check=True)
        return False

    def company(self, co: str) -> Company | None:
        client = self.conn.ready()
        data = unpack(self.conn.call(client.get, keys.company(co)))
        return None if data is None else Company.from_dict(data)

    def first_look(self, ip: str, port: int, sip_domain: str) -> tuple[Source | None, str | None]:
        """Who sends an INVITE: a trusted peer by its address, and the company of its From domain,
        in one round trip (the company id is handed on to call_context)."""
        client = self.conn.ready()
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.source(ip, port))
        pipe.get(keys.domain(sip_domain))
        source, co = (unpack(v) for v in self.conn.call(pipe.execute))
        if source is None and co is None:
            self.conn.ready(force_check=True)
        return (Source(**source) if source else None), co

    def call_context(self, sip_domain: str, user: str, callee: str | None, co: str | None = None) -> CallContext:
        """A caller's company, extension, callee and routes; co skips the domain lookup when known."""
        client = self.conn.ready()
        if co is None:
            co = unpack(self.conn.call(client.get, keys.domain(sip_domain)))
        if co is None:
            self.conn.ready(force_check=True)
            return CallContext(None, None, None)
        pipe = client.pipeline(transaction=False)
        pipe.mget([keys.company(co), keys.extension(co, user)] + ([keys.extension(co, callee)] if callee else []))
        pipe.hgetall(keys.TRUNKS)
        pipe.hgetall(keys.NUMBERING_OVERRIDES)
        pipe.hgetall(keys.MEDIA_SERVERS)
        found, trunks, overrides, media = self.conn.call(pipe.execute)
        company, caller, *rest = [unpack(r) for r in found]
        return CallContext(
            company=Company.from_dict(company) if company else None,
            caller=Extension.from_dict(caller) if caller else None,
            callee=Extension.from_dict(rest[0]) if rest and rest[0] else None,
            trunks=sorted_trunks(trunks),
            overrides={k.decode(): unpack(v) for k, v in overrides.items()},
            media=tuple(sorted((MediaServer.from_dict(unpack(v)) for v in media.values()), key=lambda m: m.name)),
        )

    def inbound(self, e164: str) -> Inbound:
        """A DID's company, target extension and receptionist, in two round trips."""
        client = self.conn.ready()
        raw = unpack(self.conn.call(client.get, keys.did(e164)))
        if raw is None:
            self.conn.ready(force_check=True)
            return Inbound(None)
        did = Did.from_dict(raw)
        return self.company_view(did.co, did.target if did.target != RECEPTIONIST else None, did)

    def company_view(self, co: str, extension: str | None, did: Did | None = None) -> Inbound:
        client = self.conn.ready()
        pipe = client.pipeline(transaction=False)
        pipe.mget([keys.company(co)] + ([keys.extension(co, extension)] if extension else []))
        pipe.hgetall(keys.MEDIA_SERVERS)
        (company, *ext), media = self.conn.call(pipe.execute)
        if company is None:
            return Inbound(did)
        company = Company.from_dict(unpack(company))
        servers = {k.decode(): MediaServer.from_dict(unpack(v)) for k, v in media.items()}
        return Inbound(did, company,
                       Extension.from_dict(unpack(ext[0])) if ext and ext[0] else None,
                       servers.get(company.receptionist) if company.receptionist else None)

    def routes(self) -> tuple[tuple[Trunk, ...], dict[str, str]]:
        """Trunks and numbering overrides, for a call that did not come from a phone."""
        client = self.conn.ready()
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.TRUNKS)
        pipe.hgetall(keys.NUMBERING_OVERRIDES)
        trunks, overrides = self.conn.call(pipe.execute)
        return sorted_trunks(trunks), {k.decode(): unpack(v) for k, v in overrides.items()}

    def peer_addresses(self) -> frozenset[tuple[str, int]]:
        """(ip, port) of every trunk and media server, the trusted sources, in one round trip
        (the `sources` index `load` writes; no peer record is decoded)."""
        client = self.conn.ready()
        found = set()
        for member in self.conn.call(client.smembers, keys.SOURCES):
            text = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
            host, _, port = text.removeprefix(keys.SOURCE_PREFIX).rpartition(":")
            if host and port.isdigit():
                found.add((host, int(port)))
        return frozenset(found)

    def trunks(self) -> tuple[Trunk, ...]:
        client = self.conn.ready()
        return sorted_trunks(self.conn.call(client.hgetall, keys.TRUNKS))

    # -- prefix overrides of the numbering plan (ops) -------------------------------------------
    def overrides(self) -> dict[str, str]:
        client = self.conn.client()
        return {k.decode(): unpack(v) for k, v in self.conn.call(client.hgetall, keys.NUMBERING_OVERRIDES).items()}

    def set_override(self, prefix: str, billing: str) -> None:
        client = self.conn.client()
        self.conn.call(client.hset, keys.NUMBERING_OVERRIDES, prefix, pack(billing))

    def remove_override(self, prefix: str) -> bool:
        client = self.conn.client()
        return bool(self.conn.call(client.hdel, keys.NUMBERING_OVERRIDES, prefix))

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
