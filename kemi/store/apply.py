"""Writing a provisioning file: the read, check and write phases of `kemi.admin load`.

Run inside one MULTI/EXEC under WATCH (Directory.apply): everything is read and checked
first, then every write is queued, so a refusal or a failure leaves Redis as it was.
Money keys are never written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from kemi.model import MediaServer, Site, Trunk
from kemi.provisioning import Provisioning, site_conflicts
from kemi.settings import SCHEMA_VERSION
from kemi.store import keys
from kemi.store.connection import pack, unpack


def sorted_trunks(raw: dict) -> tuple[Trunk, ...]:
    """Trunks as stored (hash name -> msgpack map), in the order outbound calls try them."""
    trunks = [Trunk.from_dict(unpack(v)) for v in raw.values()]
    return tuple(sorted(trunks, key=lambda t: (t.priority, t.name)))


@dataclass
class Stored:
    """What Redis holds before the file is applied."""

    existing: set[str]                  # company ids
    current: dict[str, dict | None]     # company id -> its stored map
    numbers: dict[str, set[str]]        # company id -> its extension numbers
    dids: dict[str, set[str]]           # company id -> its DIDs
    sources: set[str]                   # the source:* keys written last time


def apply_file(pipe: redis.client.Pipeline, prov: Provisioning, prune: bool) -> list[str]:
    """Make Redis hold exactly the file's companies (with prune, nothing else); a summary of the changes."""
    stored = read_stored(pipe)
    kept = stored.existing - {c.id for c in prov.companies} if not prune else set()
    check_owners(pipe, prov, stored, kept)
    trunks = prov.trunks if prov.trunks is not None else sorted_trunks(pipe.hgetall(keys.TRUNKS))
    media = prov.media_servers if prov.media_servers is not None else \
        [MediaServer.from_dict(unpack(v)) for v in pipe.hgetall(keys.MEDIA_SERVERS).values()]
    sites = prov.sites if prov.sites is not None else stored_sites(pipe.hgetall(keys.SITES))
    members = ({c.id for c in prov.companies} | (stored.existing if not prune else set()))
    problems = site_conflicts(sites, tuple(trunks) + tuple(media), members)
    if problems:
        raise ValueError("; ".join(problems))
    pipe.multi()
    pipe.set(keys.SCHEMA_VERSION, pack(SCHEMA_VERSION))
    pipe.incr(keys.DIRECTORY_VERSION)  # every proxy process re-reads its copy (kemi.store.cache)
    summary = write_peers(pipe, prov)
    summary += write_sites(pipe, prov.sites)
    write_sources(pipe, stored.sources, trunks, media)
    summary += [write_company(pipe, company, stored) for company in prov.companies]
    if prune:
        summary += prune_companies(pipe, stored, stored.existing - {c.id for c in prov.companies})
    return summary


def read_stored(pipe) -> Stored:
    existing = {m.decode() for m in pipe.smembers(keys.COMPANIES)}
    return Stored(existing=existing,
                  current={co: unpack(pipe.get(keys.company(co))) for co in existing},
                  numbers={co: {n.decode() for n in pipe.smembers(keys.extensions(co))} for co in existing},
                  dids={co: {n.decode() for n in pipe.smembers(keys.dids(co))} for co in existing},
                  sources={k.decode() for k in pipe.smembers(keys.SOURCES)})


def check_owners(pipe, prov: Provisioning, stored: Stored, kept: set[str]) -> None:
    """A domain and a DID belong to one company only, across the file and what stays in Redis."""
    owners = {data["domain"]: co for co, data in stored.current.items() if data}
    for company in prov.companies:
        owner = owners.get(company.domain)
        if owner is not None and owner != company.id and owner in kept:
            raise ValueError(f"company {company.id}: domain {company.domain!r} already belongs to company {owner!r}")
        for did in company.dids:
            holder = unpack(pipe.get(keys.did(did.number)))
            if holder and holder["co"] != company.id and holder["co"] in kept:
                raise ValueError(f"company {company.id}: DID {did.number} already belongs to company {holder['co']!r}")


def write_peers(pipe, prov: Provisioning) -> list[str]:
    """Trunks and media servers, each section replaced whole when the file has it."""
    summary = []
    for section, key, label in ((prov.trunks, keys.TRUNKS, "trunks"),
                                (prov.media_servers, keys.MEDIA_SERVERS, "media servers")):
        if section is None:
            continue
        pipe.delete(key)
        for peer in section:
            pipe.hset(key, peer.name, pack(peer.to_dict()))
        summary.append(f"{label}: {', '.join(p.name for p in section) or 'none'}")
    return summary


def stored_sites(raw: dict) -> tuple[Site, ...]:
    """Sites as stored (hash name -> msgpack map), by name."""
    return tuple(sorted((Site.from_dict(unpack(v)) for v in raw.values()), key=lambda s: s.name))


def write_sites(pipe, sites) -> list[str]:
    """The declared sites, replaced whole when the file has a `sites:` section."""
    if sites is None:
        return []
    pipe.delete(keys.SITES)
    for site in sites:
        pipe.hset(keys.SITES, site.name, pack(site.to_dict()))
    return [f"sites: {', '.join(f'{s.name} ({len(s.cidrs)} networks)' for s in sites) or 'none'}"]


def write_sources(pipe, old: set[str], trunks, media) -> None:
    """The trusted-source index: source:<ip>:<port> for every trunk and media server."""
    for key in old:
        pipe.delete(key)
    pipe.delete(keys.SOURCES)
    for kind, peers in (("trunk", trunks), ("media", media)):
        for peer in peers:
            key = keys.source(peer.host, peer.port)
            pipe.set(key, pack({"kind": kind, "name": peer.name}))
            pipe.sadd(keys.SOURCES, key)


def write_company(pipe, company, stored: Stored) -> str:
    before = stored.current.get(company.id)
    if before and before["domain"] != company.domain:
        pipe.delete(keys.domain(before["domain"]))
    pipe.set(keys.company(company.id), pack(company.to_dict()))
    pipe.set(keys.domain(company.domain), pack(company.id))
    pipe.sadd(keys.COMPANIES, company.id)
    numbers = {e.number for e in company.extensions}
    gone = stored.numbers.get(company.id, set()) - numbers
    for number in gone:
        pipe.delete(keys.extension(company.id, number))
    pipe.delete(keys.extensions(company.id))
    for ext in company.extensions:
        pipe.set(keys.extension(company.id, ext.number), pack(ext.to_dict()))
    if numbers:
        pipe.sadd(keys.extensions(company.id), *sorted(numbers))
    dids = {d.number for d in company.dids}
    for number in stored.dids.get(company.id, set()) - dids:
        pipe.delete(keys.did(number))
    pipe.delete(keys.dids(company.id))
    for did in company.dids:
        pipe.set(keys.did(did.number), pack(did.to_dict()))
    if dids:
        pipe.sadd(keys.dids(company.id), *sorted(dids))
    verb = "updated" if before else "created"
    return (f"company {company.id} ({company.domain}): {verb}, {len(numbers)} extensions, {len(dids)} DIDs"
            + (f", removed {', '.join(sorted(gone))}" if gone else ""))


def prune_companies(pipe, stored: Stored, gone: set[str]) -> list[str]:
    summary = []
    for co in sorted(gone):
        data = stored.current.get(co)
        if data:
            pipe.delete(keys.domain(data["domain"]))
        for number in stored.numbers.get(co, ()):
            pipe.delete(keys.extension(co, number))
        for number in stored.dids.get(co, ()):
            pipe.delete(keys.did(number))
        pipe.delete(keys.company(co), keys.extensions(co), keys.dids(co))
        pipe.srem(keys.COMPANIES, co)
        summary.append(f"company {co}: removed (not in the file; its prepaid data is kept)")
    return summary
