"""Emergency calls: routed whatever happens to Redis, billing or the caller's credentials.

The caller's identity (callback number, civic location) and the emergency trunks
are kept in this node's shared memory at every authenticated request, so that a
call still carries them when Redis is down.
"""

from __future__ import annotations

from kemi import replies, routing
from kemi.model import Trunk
from kemi.sip.calls import Calls
from kemi.sip.shell import Sip, Table
from kemi.sip.trunks import Trunks
from kemi.store import Directory, StoreUnavailable
from kemi.store.directory import CallContext


class EmergencyCache:
    def __init__(self, sip: Sip):
        self.sip = sip

    def remember(self, user: str, domain: str, ctx: CallContext) -> None:
        """Keep what an emergency call needs when Redis is down."""
        callback = routing.caller_number(ctx.company, ctx.caller) or ""
        self.sip.cache_set(Table.EMERGENCY_IDS, f"{user}@{domain}", f"{callback}\t{ctx.company.location}")
        emergency = routing.trunks_for(ctx.trunks, True)
        if emergency:
            self.sip.cache_set(Table.ROUTES, Table.EMERGENCY_TRUNKS_KEY, routing.encode_peers(emergency))

    def identity(self, user: str, domain: str) -> tuple[str | None, str | None]:
        value = self.sip.cache_get(Table.EMERGENCY_IDS, f"{user}@{domain}")
        if not value:
            return None, None
        callback, _, location = value.partition("\t")
        return callback or None, location or None

    def trunks(self) -> list[Trunk]:
        return routing.decode_peers(self.sip.cache_get(Table.ROUTES, Table.EMERGENCY_TRUNKS_KEY))


class Emergency:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, trunks: Trunks, cache: EmergencyCache,
                 static_trunks: tuple[Trunk, ...]):
        self.sip = sip
        self.directory = directory
        self.calls = calls
        self.trunks = trunks
        self.cache = cache
        self.static_trunks = static_trunks

    def call(self, code: str) -> None:
        sip = self.sip
        domain = (sip.pv("$fd") or "").lower()
        user = sip.pv("$fU") or ""
        if domain and not sip.has_credentials(domain):
            sip.challenge(domain)  # needs no data; phones answer it at once
            return
        callback = location = company_id = None
        trunks: list[Trunk] = []
        try:
            ctx = self.directory.call_context(domain, sip.pv("$au") or user, None)
            trunks = routing.trunks_for(ctx.trunks, True)
            if ctx.caller and ctx.caller.ha1 and sip.check_digest(domain, ctx.caller.ha1) > 0:
                callback = routing.caller_number(ctx.company, ctx.caller)
                location = ctx.company.location
                company_id = ctx.company.id
                self.cache.remember(user, domain, ctx)
            else:
                sip.log("warn", f"emergency call {code} from {user}@{domain} ({sip.source[0]}) "
                                f"not authenticated: routed anyway, without a verified callback number")
        except StoreUnavailable as exc:
            sip.log("err", f"emergency call {code} from {user}@{domain}: routed from cache, {exc}")
            callback, location = self.cache.identity(user, domain)
        trunks = trunks or self.cache.trunks() or list(self.static_trunks)
        if not trunks:
            sip.log("crit", f"EMERGENCY CALL {code} from {user}@{domain} HAS NO ROUTE: provision a trunk with "
                            f"emergency: true or set EMERGENCY_TRUNKS")
            sip.reply(replies.NO_TRUNK)
            return
        sip.consume_credentials()
        headers = routing.emergency_headers(callback, location)
        pai = routing.pai_header(callback, None, sip.local_ip)
        if company_id:
            self.calls.track(self.calls.record(company_id, user, callback, code, "emergency", "included", "outbound"))
        else:
            self.calls.track(None)  # an unverified caller has no company to record the call for
        if self.trunks.dial(code, trunks, headers + ([pai] if pai else [])):
            self.trunks.relay_next()
