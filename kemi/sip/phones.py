"""Our members' phones: digest authentication, registration, and ringing an extension."""

from __future__ import annotations

from kemi import replies
from kemi.model import Company, Extension, MediaServer
from kemi.sip.calls import Calls
from kemi.sip.emergency import EmergencyCache
from kemi.sip.shell import Route, Sip, Timers, Var
from kemi.store import Directory
from kemi.store.directory import CallContext

LOOK_UP = object()  # authenticate(): the company of the domain is not known yet
RING_SILENT_MS = 5000  # a phone that does not even send 100/180 within this is unreachable


class Phones:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, cache: EmergencyCache):
        self.sip = sip
        self.directory = directory
        self.calls = calls
        self.cache = cache

    def authenticate(self, realm_pv: str, callee: str | None = None, co=LOOK_UP) -> CallContext | None:
        """Digest-authenticate the phone; its call context, or None when already answered.

        co: the company id of the domain (None: no such company) when the caller already looked it up."""
        sip = self.sip
        # KEMI passes strings through as they are (no $var expansion), so the
        # realm is the value itself: the company's SIP domain from From/To.
        domain = (sip.pv(realm_pv) or "").lower()
        if not domain or not sip.has_credentials(domain):
            # Only our companies' phones are challenged: a carrier or a scanner
            # sending from an unknown address is refused outright.
            if not (self.directory.domain_known(domain) if co is LOOK_UP else co is not None):
                ip, port = sip.source
                sip.log("notice", f"{sip.method} from untrusted {ip}:{port} for domain {domain!r} refused")
                sip.reply(replies.FORBIDDEN)
                return None
            sip.challenge(domain)
            return None
        user = sip.pv("$au") or ""
        ctx = self.directory.call_context(domain, user, callee, None if co is LOOK_UP else co)
        if ctx.company is None or ctx.caller is None or not ctx.caller.ha1:
            sip.log("notice", f"auth refused: no phone extension {user!r} at {domain!r} (from {sip.source[0]})")
            sip.reply(replies.FORBIDDEN)
            return None
        rc = sip.check_digest(domain, ctx.caller.ha1)
        if rc < 0:
            action, answer = replies.auth_failure(rc)
            if action == "reply":
                sip.log("notice", f"auth refused for {user}@{domain} from {sip.source[0]} (code {rc})")
                sip.reply(answer)
            else:
                sip.challenge(domain, stale=action == "challenge-stale")
            return None
        self.cache.remember(user, domain, ctx)
        return ctx

    def register(self) -> None:
        if self.authenticate("$td") is None:
            return
        if not self.sip.save_contact():
            self.sip.reply_error()

    def ring(self, company: Company, ext: Extension | None, rec: dict | None, did: str | None = None,
             fallback: MediaServer | None = None) -> None:
        """Ring every phone of an extension of the company; on no answer go to the fallback receptionist.

        rec is None when the call is already tracked (a receptionist's redirect)."""
        if ext is None:
            self.calls.refuse(replies.EXTENSION_NOT_FOUND, rec)
            return
        # The AOR carries the company's domain: another company's 2XXX is another AOR.
        rc = self.sip.lookup(f"sip:{ext.number}@{company.domain}")
        if rc < 0:
            if fallback is not None:
                if rec is not None:
                    self.calls.track(rec)
                self.calls.to_receptionist(company.id, did, fallback)
            else:
                self.calls.refuse(replies.NOT_REGISTERED if rc in (-1, -2) else replies.INTERNAL_ERROR, rec)
            return
        if rec is not None:
            self.calls.track(rec)
        failure_route = None
        if fallback is not None:
            self.calls.remember_receptionist(company.id, did, fallback)
            failure_route = Route.FAILURE_EXTENSION
        self.sip.relay(failure_route=failure_route, timers=Timers(ext.ring_timeout * 1000, RING_SILENT_MS))
