"""Emergency calls: routed whatever happens to Redis, billing, a ban or a block.

The caller's identity (callback number, civic location, company, with the HA1 that proves it)
and the emergency trunks are kept in this node's shared memory at every authenticated request,
so that a call still carries them when Redis is down. Who may call, and with which identity:
kemi.routing.emergency_admission (a current registration from the source address is the gate's
regsrc table, which names the phone registered there, kemi.sip.gate). How many: per phone and,
for callers nobody authenticated, per node (kemi.routing.emergency_limits, htable emcalls), so
that neither a phone nor a flood of forged sources reaches the emergency trunk unboundedly.
Every call routed gets a call record; none of this needs Redis to route the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from kemi import metrics, replies, routing
from kemi.model import Peer, Trunk
from kemi.routing import EmergencyIdentity
from kemi.settings import Settings
from kemi.sip.calls import Calls, refused
from kemi.sip.gate import Gate
from kemi.sip.shell import Metric, Sip, Table
from kemi.sip.trunks import Trunks
from kemi.store import Directory, StoreUnavailable
from kemi.store.directory import CallContext

# the call record's `identity`: how the caller was identified
VERIFIED, REGISTERED_SOURCE, NOBODY = "verified", "registered-source", "none"


class EmergencyCache:
    def __init__(self, sip: Sip):
        self.sip = sip

    def remember(self, user: str, domain: str, ctx: CallContext) -> None:
        """Keep what an emergency call needs when Redis is down (after a passed digest check)."""
        if ctx.caller is not None and ctx.caller.ha1 and ctx.company is not None:
            identity = EmergencyIdentity(ctx.caller.ha1, routing.caller_number(ctx.company, ctx.caller),
                                         ctx.company.location or None, ctx.company.id)
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


@dataclass
class Admitted:
    """An emergency call about to be routed: who it says the caller is, and how that was found."""

    identity: EmergencyIdentity | None  # callback number and location to send, None: none
    company_id: str | None              # whom the call record is for (None: the unattributed stream)
    phone: str                          # user@domain the identity is of ("" when none)
    how: str                            # VERIFIED, REGISTERED_SOURCE or NOBODY
    trunks: list[Peer]                  # from Redis ([]: the cached, then the static ones)


class Emergency:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, trunks: Trunks, cache: EmergencyCache,
                 static_trunks: tuple[Trunk, ...], gate: Gate, settings: Settings):
        self.sip = sip
        self.gate = gate  # registrations from the source address, failed-check counters and blocks
        self.settings = settings
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
            admitted = Admitted(None, None, "", NOBODY, [])
        if admitted is not None:
            self.route(code, who, admitted)

    def admit(self, code: str, domain: str, user: str, who: str) -> Admitted | None:
        """The call to route, or None when refused (and answered)."""
        sip = self.sip
        auth_user = sip.lenient("$au") or user
        # A block (password guessing from this address) means no check at all, as for any other
        # request (kemi.sip.phones): a right and a wrong password then get the same call.
        blocked = bool(domain and auth_user) and self.gate.auth_blocked(auth_user, domain)
        found = Lookup(checkable=False) if blocked else self.look_up(code, domain, auth_user, who)
        # One digest check, against Redis's HA1 or else the cached one: a cached identity is only
        # ever used for the caller who proves it is theirs.
        verified = found.identity is not None and self.checked(domain, auth_user, found.identity.ha1)
        if found.identity is None and found.ctx is not None and domain and auth_user:
            self.gate.auth_failed(auth_user, domain)  # no such user or domain: counted alike, names nobody
        if verified and found.ctx is not None:
            self.cache.remember(auth_user, domain, found.ctx)
        registered = self.gate.registered_phone()
        admission = routing.emergency_admission(verified, registered is not None, found.checkable, blocked)
        if admission == routing.REFUSED:
            sip.reply(replies.EMERGENCY_NEEDS_REGISTRATION)
            refused(sip, replies.EMERGENCY_NEEDS_REGISTRATION, f"emergency call {code} from {who}: credentials wrong "
                                                               f"or missing and no registration from that address",
                    "warn")
            return None
        phone = f"{auth_user}@{domain}"
        if self.over_limit(admission, phone, code, who):
            return None
        if admission == routing.IDENTIFIED:
            company = found.company_id or found.identity.company
            return Admitted(found.identity, company, phone, VERIFIED, self.redis_trunks(found, who))
        identity = self.registered_identity(registered) if registered else None
        if blocked:
            why = f"the credentials of {phone} are blocked at this address after failed checks: not checked"
        elif registered is not None:
            why = "from a registered address"
        else:
            why = "credentials could not be checked"
        claim = f"as {registered}, the phone registered at that address" if identity else \
            "without a callback number or location"
        sip.log("warn", f"emergency call {code} from {who} not authenticated: routed anyway ({why}), {claim}")
        if identity is None:
            return Admitted(None, None, "", NOBODY, self.redis_trunks(found, who))
        return Admitted(identity, identity.company, registered, REGISTERED_SOURCE, self.redis_trunks(found, who))

    def checked(self, domain: str, auth_user: str, ha1: str) -> bool:
        """The digest check; a failure counts towards the block like any other (kemi.sip.gate).
        An expired or reused nonce is no failure: it proves nothing either way."""
        rc = self.sip.check_digest(domain, ha1)
        if rc < 0 and replies.auth_failure(rc)[0] == "reply":
            self.gate.auth_failed(auth_user, domain)
        return rc > 0

    def registered_identity(self, phone: str) -> EmergencyIdentity | None:
        """The identity this node cached for the phone registered at the source address (at the
        REGISTER that put it there): no Redis, no digest check, since the call comes from where that
        phone is. Never its HA1's business: the call proves nothing with it."""
        user, _, domain = phone.rpartition("@")
        return self._cached_identity(user, domain)

    def over_limit(self, admission: str, phone: str, code: str, who: str) -> bool:
        """Count the call in its limits (routing.emergency_limits); over one, answer it and say so
        in the log once per window (a flood would otherwise write a line per request)."""
        sip, cfg = self.sip, self.settings
        ip, port = sip.source
        for limit in routing.emergency_limits(admission, phone, f"{ip}:{port}", cfg.emergency_calls_max,
                                              cfg.emergency_unidentified_max):
            count = sip.count_in_window(Table.EMERGENCY_CALLS, limit.key, cfg.emergency_window_s)
            if count <= limit.limit:
                continue
            # counted and logged before the answer: should either fail, the call goes (call())
            # instead of being answered and routed both
            sip.count(Metric.REFUSALS, metrics.refusal_reason(limit.answer))
            if count == limit.limit + 1:
                sip.log("warn", metrics.decision_line(
                    sip.call_id, "refused", metrics.refusal_reason(limit.answer),
                    f"{limit.answer.code} {limit.answer.reason}; emergency call {code} from {who}: more than "
                    f"{limit.limit} emergency calls of {limit.what} within {cfg.emergency_window_s} s: refused "
                    f"until the window ends (further refusals counted, not logged)"))
            sip.reply(limit.answer, f"Retry-After: {cfg.emergency_window_s}")
            return True
        return False

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

    def route(self, code: str, who: str, admitted: Admitted) -> None:
        sip = self.sip
        trunks = admitted.trunks or self.fallback_trunks()
        if not trunks:
            sip.log("crit", f"EMERGENCY CALL {code} from {who} HAS NO ROUTE: provision a trunk with "
                            f"emergency: true or set EMERGENCY_TRUNKS")
            sip.reply(replies.NO_TRUNK)
            sip.count(Metric.CALLS_FAILED, metrics.EMERGENCY)
            return
        sip.remove_credentials()  # whatever they were, they are nobody else's business
        identity = admitted.identity
        callback = identity.callback if identity else None
        headers = routing.emergency_headers(callback, identity.location if identity else None)
        pai = routing.pai_header(callback, None, sip.local_ip)
        # Every call gets its record, written at its end (a Redis that is down then costs the record,
        # logged, never the call); one that names no company goes to the unattributed stream.
        rec = self.calls.record(admitted.company_id or "", admitted.phone.rpartition("@")[0] or None, callback,
                                code, "emergency", "included", "outbound")
        rec.update(identity=admitted.how, source=sip.source_address())
        self.calls.track(rec, emergency=True)
        self.trunks.dial(code, trunks, headers + ([pai] if pai else []), emergency=True)
