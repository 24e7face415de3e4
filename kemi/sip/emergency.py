"""Emergency calls: routed whatever happens to Redis, billing or a ban.

The caller's identity (callback number, civic location, with the HA1 that proves it) and
the emergency trunks are kept in this node's shared memory at every authenticated
request, so that a call still carries them when Redis is down. Who may call, and with
which identity: kemi.routing.emergency_admission (a current registration from the source
address is the gate's regsrc table, kemi.sip.gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kemi import metrics, replies, routing
from kemi.model import Peer, Trunk
from kemi.routing import EmergencyIdentity
from kemi.sip.calls import Calls, refused
from kemi.sip.shell import Metric, Sip, Table
from kemi.sip.trunks import Trunks
from kemi.store import Directory, StoreUnavailable
from kemi.store.directory import CallContext


class EmergencyCache:
    def __init__(self, sip: Sip):
        self.sip = sip

    def remember(self, user: str, domain: str, ctx: CallContext) -> None:
        """Keep what an emergency call needs when Redis is down (after a passed digest check)."""
        if ctx.caller is not None and ctx.caller.ha1 and ctx.company is not None:
            identity = EmergencyIdentity(ctx.caller.ha1, routing.caller_number(ctx.company, ctx.caller),
                                         ctx.company.location or None)
            self.sip.cache_set(Table.EMERGENCY_IDS, f"{user}@{domain}", routing.encode_emergency_identity(identity))
        self.remember_trunks(routing.trunks_for(ctx.trunks, True))

    def remember_trunks(self, emergency: list[Trunk]) -> None:
        if emergency:
            self.sip.cache_set(Table.ROUTES, Table.EMERGENCY_TRUNKS_KEY, routing.encode_peers(emergency))

    def identity(self, user: str, domain: str) -> EmergencyIdentity | None:
        return routing.decode_emergency_identity(self.sip.cache_get(Table.EMERGENCY_IDS, f"{user}@{domain}"))

    def trunks(self) -> list[Peer]:
        return routing.decode_peers(self.sip.cache_get(Table.ROUTES, Table.EMERGENCY_TRUNKS_KEY))


@dataclass
class Lookup:
    """What the store (or, failing it, this node's cache) says about an emergency caller."""

    identity: EmergencyIdentity | None = None  # with the HA1 to check it against
    company_id: str | None = None              # known only from Redis: the call record needs it
    checkable: bool = True                     # False: no answer anywhere, the credentials cannot be checked
    ctx: CallContext | None = None             # Redis's answer, when it gave one
    store_down: bool = False


class Emergency:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, trunks: Trunks, cache: EmergencyCache,
                 static_trunks: tuple[Trunk, ...], registered_source: Callable[[], bool]):
        self.sip = sip
        self.registered_source = registered_source  # the request's ip:port holds a current registration
        self.directory = directory
        self.calls = calls
        self.trunks = trunks
        self.cache = cache
        self.static_trunks = static_trunks

    def call(self, code: str) -> None:
        sip = self.sip
        # Read leniently: a From that is not UTF-8 is a caller without a name, not a 400.
        domain = (sip.lenient("$fd") or "").lower()
        user = sip.lenient("$fU") or ""
        if domain and not sip.has_credentials(domain):
            sip.challenge(domain)  # needs no data; phones answer it at once
            return
        who = f"{user}@{domain} ({sip.source[0]}:{sip.source[1]})"
        try:
            admitted = self.admit(code, domain, user, who)
        except Exception as exc:  # a bug must not cost an emergency call: route it bare
            sip.log("crit", f"emergency call {code} from {who}: {type(exc).__name__}: {exc}: "
                            f"routed without identity")
            admitted = None, None, []
        if admitted is not None:
            self.route(code, user, who, *admitted)

    def admit(self, code: str, domain: str, user: str,
              who: str) -> tuple[EmergencyIdentity | None, str | None, list[Peer]] | None:
        """(identity or None, company id or None, trunks from Redis); None when refused (and answered)."""
        sip = self.sip
        auth_user = sip.lenient("$au") or user
        found = self.look_up(code, domain, auth_user, who)
        # One digest check, against Redis's HA1 or else the cached one: a cached identity is only
        # ever used for the caller who proves it is theirs.
        verified = found.identity is not None and sip.check_digest(domain, found.identity.ha1) > 0
        if verified and found.ctx is not None:
            self.cache.remember(auth_user, domain, found.ctx)
        admission = routing.emergency_admission(verified, self.registered_source(), found.checkable)
        if admission == routing.REFUSED:
            sip.reply(replies.EMERGENCY_NEEDS_REGISTRATION)
            refused(sip, replies.EMERGENCY_NEEDS_REGISTRATION, f"emergency call {code} from {who}: credentials wrong "
                                                               f"or missing and no registration from that address",
                    "warn")
            return None
        if admission == routing.ANONYMOUS:
            why = "from a registered address" if found.checkable else "credentials could not be checked"
            sip.log("warn", f"emergency call {code} from {who} not authenticated: routed anyway ({why}), "
                            f"without a callback number or location")
            return None, None, self.redis_trunks(found, who)
        return found.identity, found.company_id, self.redis_trunks(found, who)

    def look_up(self, code: str, domain: str, auth_user: str, who: str) -> Lookup:
        """The caller's identity from Redis; on any failure (down, wrong types, undecodable data)
        the one this node cached, if any."""
        if not domain or not auth_user:
            return Lookup()  # nothing to look up: nobody can prove who they are
        try:
            ctx = self.directory.call_context(domain, auth_user, None)
        except Exception as exc:
            self.sip.log("err", f"emergency call {code} from {who}: routed from cache, "
                                f"{type(exc).__name__}: {exc}")
            cached = self._cached_identity(auth_user, domain)
            return Lookup(cached, None, cached is not None, None, isinstance(exc, StoreUnavailable))
        if ctx.company is None or ctx.caller is None or not ctx.caller.ha1:
            return Lookup(ctx=ctx)
        identity = EmergencyIdentity(ctx.caller.ha1, routing.caller_number(ctx.company, ctx.caller),
                                     ctx.company.location or None)
        return Lookup(identity, ctx.company.id, True, ctx)

    def _cached_identity(self, user: str, domain: str) -> EmergencyIdentity | None:
        try:
            return self.cache.identity(user, domain)
        except Exception as exc:
            self.sip.log("err", f"emergency identity cache of {user}@{domain} unreadable: {exc}")
            return None

    def redis_trunks(self, found: Lookup, who: str) -> list[Peer]:
        """The emergency trunks from Redis: the global list, whoever the caller is."""
        if found.ctx is not None and found.ctx.company is not None:
            trunks = routing.trunks_for(found.ctx.trunks, True)
        elif found.store_down:
            return []  # do not wait for a Redis that just failed to answer
        else:
            try:
                trunks = routing.trunks_for(self.directory.trunks(), True)
            except Exception as exc:
                self.sip.log("err", f"emergency call from {who}: trunk list unavailable, {type(exc).__name__}: {exc}")
                return []
        try:
            self.cache.remember_trunks(trunks)
        except Exception as exc:
            self.sip.log("err", f"emergency trunks not cached: {exc}")
        return list(trunks)

    def fallback_trunks(self) -> list[Peer]:
        try:
            cached = self.cache.trunks()
        except Exception as exc:
            self.sip.log("err", f"emergency trunk cache unreadable: {exc}")
            cached = []
        return cached or list(self.static_trunks)

    def route(self, code: str, user: str, who: str, identity: EmergencyIdentity | None, company_id: str | None,
              routes: list[Peer]) -> None:
        sip = self.sip
        trunks = routes or self.fallback_trunks()
        if not trunks:
            sip.log("crit", f"EMERGENCY CALL {code} from {who} HAS NO ROUTE: provision a trunk with "
                            f"emergency: true or set EMERGENCY_TRUNKS")
            sip.reply(replies.NO_TRUNK)
            sip.count(Metric.CALLS_FAILED, metrics.EMERGENCY)
            return
        sip.remove_credentials()  # whatever they were, they are nobody else's business
        callback = identity.callback if identity else None
        headers = routing.emergency_headers(callback, identity.location if identity else None)
        pai = routing.pai_header(callback, None, sip.local_ip)
        if company_id:
            self.calls.track(self.calls.record(company_id, user, callback, code, "emergency", "included", "outbound"),
                             emergency=True)
        else:
            self.calls.track(None, emergency=True)  # no company to record the call for (unverified, or identified from cache)
        self.trunks.dial(code, trunks, headers + ([pai] if pai else []), emergency=True)
