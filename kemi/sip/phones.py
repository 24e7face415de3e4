"""Our members' phones: digest authentication, registration, and ringing an extension."""

from __future__ import annotations

import time

from kemi import edge, replies
from kemi.model import Company, Extension, MediaServer
from kemi.replies import Reply
from kemi.sip.calls import Calls
from kemi.sip.emergency import EmergencyCache
from kemi.sip.gate import Gate
from kemi.sip.shell import Route, Sip, Timers
from kemi.sip.site import Site
from kemi.store import Directory
from kemi.store.directory import CallContext

LOOK_UP = object()  # authenticate(): the company of the domain is not known yet
RING_SILENT_MS = 5000  # a phone that does not even send 100/180 within this is unreachable


class Phones:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, cache: EmergencyCache, gate: Gate,
                 site: Site | None = None):
        self.sip = sip
        self.site = site
        self.directory = directory
        self.calls = calls
        self.cache = cache
        self.gate = gate

    def authenticate(self, realm_pv: str, callee: str | None = None, co=LOOK_UP,
                     stateful: bool = False) -> CallContext | None:
        """Digest-authenticate the phone; its call context, or None when already answered.

        co: the company id of the domain (None: no such company) when the caller already looked it up.
        stateful: a request with credentials is handled in a transaction from then on, so that its
        retransmission gets the same answer again from tm (None: it was one, tm answered it)."""
        sip = self.sip
        # KEMI passes strings through as they are (no $var expansion), so the
        # realm is the value itself: the company's SIP domain from From/To.
        domain = (sip.pv(realm_pv) or "").lower()
        if not domain or not sip.has_credentials(domain):
            if not domain:
                ip, port = sip.source
                sip.log("notice", f"{sip.method} from {ip}:{port} without a domain refused")
                sip.reply(replies.FORBIDDEN)
                return None
            # Every domain is challenged, ours or not, with no lookup: were an unknown one refused at
            # once, anyone could list our companies' domains. Its credentials are then refused below
            # as a wrong password is (403), and counted as a failure (SECURITY.md, class 16).
            sip.challenge(domain)
            return None
        if stateful and sip.new_transaction() == 0:
            return None
        user = sip.pv("$au") or ""
        if self.gate.auth_blocked(user, domain):
            # no digest check at all: a guesser learns nothing, not even from the right password
            sip.reply(replies.TOO_MANY_FAILURES)
            return None
        ctx = self.directory.call_context(domain, user, callee, None if co is LOOK_UP else co)
        if ctx.company is None or ctx.caller is None or not ctx.caller.ha1:
            sip.log("notice", f"auth refused: no phone extension {user!r} at {domain!r} (from {sip.source[0]})")
            self.gate.auth_failed(user, domain)
            sip.reply(replies.FORBIDDEN)
            return None
        rc = sip.check_digest(domain, ctx.caller.ha1)
        if rc < 0:
            action, answer = replies.auth_failure(rc)
            if action == "reply":
                sip.log("notice", f"auth refused for {user}@{domain} from {sip.source[0]} (code {rc})")
                self.gate.auth_failed(user, domain)
                sip.reply(answer)
            else:
                sip.challenge(domain, stale=action == "challenge-stale")
            return None
        digest_uri, ruri = sip.digest_uri(), sip.pv("$ru")
        if not edge.digest_uri_matches(digest_uri, ruri) and \
                not (edge.names_a_host_only(digest_uri) and sip.is_myself(digest_uri or "")):
            # valid credentials computed for another request: a captured answer replayed
            sip.log("notice", f"auth refused for {user}@{domain} from {sip.source[0]}: digest uri "
                              f"{digest_uri!r} is not the Request-URI {ruri!r}")
            sip.reply(replies.DIGEST_URI_MISMATCH)
            return None
        if not self.gate.phone_within_limit(user, domain):
            # one answer, so the phone's user hears why; its next requests are dropped at the gate
            sip.reply(replies.PHONE_FLOODING, f"Retry-After: {self.gate.settings.ban_s}")
            return None
        self.cache.remember(user, domain, ctx)
        return ctx

    def register(self) -> None:
        sip = self.sip
        # With credentials, statefully: processed twice, a retransmitted REGISTER's credentials (nc
        # counted once) would be answered with a stale challenge. Without, a retransmission is
        # simply challenged again: no transaction to keep.
        ctx = self.authenticate("$td", stateful=True)
        if ctx is None:
            return
        ip, port = sip.source
        where = f"{ctx.caller.number}@{ctx.company.domain} from {sip.transport}:{ip}:{port}"
        query = sip.contact_headers() == 0
        refused = None if query else self.source_refusal()
        if refused is not None:
            sip.log("notice", f"REGISTER of {where} refused ({refused.code} {refused.reason}): "
                              f"Contact {sip.contacts()!r}")
            sip.reply(refused)
            return
        nated = False
        if query:
            pass  # nothing will be saved: nothing to arrange
        elif sip.transport == "tls":
            # reached through its TLS connection, behind a NAT or not (kemi.edge.saved_contact_refusal);
            # keeping that connection open is the phone's part (README, SIP over TLS)
            sip.reach_through_source()
        elif sip.behind_nat():
            # calls go to the source address (the contact's "received"), and the proxy keeps the
            # NAT's binding open with OPTIONS pings (kamailio.cfg, nathelper)
            nated = True
            sip.save_behind_nat()
        if not query and self.site is not None and self.site.shared:
            # the site's other proxies reach this phone through this one (kemi.sip.site)
            sip.save_with_own_path()
        # The registrar parses the Contacts (and answers an unreadable one, or `*` without
        # Expires: 0, itself); what it saved is then read back and judged, so that what is
        # judged is what lookup() sends to, never a second reading of the header.
        if not sip.save_contact():
            sip.answer_register()  # the registrar's error (e.g. 503 Too many registered contacts)
            sip.log("notice", f"REGISTER of {where} not saved by the registrar: Contact {sip.contacts()!r}")
            return
        if query:
            sip.answer_register()  # a query of the bindings
            return
        aor = sip.pv("$tu") or ""
        saved = sip.saved_contacts(aor)
        refused = edge.saved_contact_refusal(saved, edge.source_address(ip, port, sip.transport), nated)
        if refused is not None:
            sip.forget_saved(aor, saved)
            sip.log("notice", f"REGISTER of {where} refused ({refused.code} {refused.reason}): "
                              f"Contact {sip.contacts()!r} saved as {[c.socket for c in saved]}, removed again")
            sip.reply(refused)
            return
        # The address counts as registered before the phone hears so: it may dial 112 the moment
        # it has its 200, and that call is admitted by this very entry (kemi.routing.emergency_admission),
        # which names the phone as its emergency identity is cached (EmergencyCache, by auth user).
        seconds = edge.registration_seconds(saved, int(time.time()))
        self.gate.registered(seconds, f"{sip.pv('$au')}@{ctx.company.domain}")
        sip.answer_register()
        done = f"registered for {seconds} s" if seconds else "unregistered"
        sip.log("info", f"{ctx.caller.number}@{ctx.company.domain} {done} from {sip.transport}:{ip}:{port} "
                        f"(call-id {sip.call_id})")

    def source_refusal(self) -> Reply | None:
        """Why a REGISTER from this source may not save anything: it is this proxy, or the host of
        a trusted peer (any port: kamailio.cfg's onsend_route never sends a phone's call there)."""
        sip = self.sip
        ip, port = sip.source
        if sip.is_myself(f"sip:{ip}:{port};transport={sip.transport}"):
            return replies.CONTACT_IS_PROXY
        peers = self.gate.peers.addresses()
        if peers is not None and edge.source_address(ip, port, sip.transport).host in {h for h, _ in peers}:
            return replies.CONTACT_IS_TRUSTED_PEER
        return None

    def ring(self, company: Company, ext: Extension | None, rec: dict | None, did: str | None = None,
             fallback: MediaServer | None = None) -> None:
        """Ring every phone of an extension of the company; on no answer go to the fallback receptionist.

        rec is None when the call is already tracked (a receptionist's redirect)."""
        if ext is None:
            self.calls.refuse(replies.EXTENSION_NOT_FOUND, rec)
            return
        # The AOR carries the company's domain: another company's 2XXX is another AOR.
        aor = f"sip:{ext.number}@{company.domain}"
        rc = self.sip.lookup(aor)
        places = self.only_safe_targets(aor) if rc >= 0 else []
        if rc >= 0 and not places:
            rc = -1  # nothing left to ring: as if no phone were registered
        if rc < 0:
            if fallback is not None:
                if rec is not None and not self.calls.track(rec):
                    return
                self.calls.to_receptionist(company.id, did, fallback)
            else:
                self.calls.refuse(replies.NOT_REGISTERED if rc in (-1, -2) else replies.INTERNAL_ERROR, rec)
            return
        if rec is not None and not self.calls.track(rec):
            return
        failure_route = None
        if fallback is not None:
            self.calls.remember_receptionist(company.id, did, fallback)
            failure_route = Route.FAILURE_EXTENSION
        self.relay_to_phones(company, did, fallback, failure_route, Timers(ext.ring_timeout * 1000, RING_SILENT_MS),
                             places)

    def relay_to_phones(self, company: Company, did: str | None, fallback: MediaServer | None,
                        failure_route: str | None, timers: Timers, places: list[edge.Address]) -> None:
        """Send the call to the phones the lookup found. A phone on TLS is reached only through the
        connection it registered on (its "received"): the port it came from is no listening port, so
        once that connection is gone nobody is there, and the call is answered at once (or goes to
        the receptionist). Only the phones' branches are held to open connections (Route.BRANCH_PHONE):
        the receptionist's branch, relayed later in the same transaction, may connect. A branch
        whose real destination is a trusted peer is never sent (kamailio.cfg onsend_route): when no
        branch is left the caller is answered at once too, or the receptionist takes the call."""
        sip = self.sip
        tls = self.all_on_tls(places)
        branch_route = Route.BRANCH_PHONE if tls else None
        if fallback is None:
            sip.relay(failure_route=failure_route, timers=timers, branch_route=branch_route, to_phones=True,
                      unsent=replies.PHONE_NOT_CONNECTED if tls else replies.EXTENSION_UNREACHABLE)
            return
        # the receptionist takes the call, as when no phone is registered
        sip.keep_transaction_when_unsent()
        if not sip.relay(failure_route=failure_route, timers=timers, branch_route=branch_route,
                         answer_unsent=False, to_phones=True):
            sip.log("info", f"no phone of {company.id}'s DID {did} could be sent the call: to the receptionist")
            self.calls.to_receptionist(company.id, did, fallback)

    @staticmethod
    def all_on_tls(places: list[edge.Address]) -> bool:
        """Whether every phone about to be rung registered over TLS (its destination is its TLS
        connection). TCP phones keep being connected to when their connection is gone: the ones
        that write their source port in the Contact may listen on it (SIPp does)."""
        return all(where.transport == "tls" for where in places)

    def only_safe_targets(self, aor: str) -> list[edge.Address]:
        """Drop every registered contact on a trusted peer's host (edge.unsafe_target) or naming this
        proxy, logging each; where the rest go, as Kamailio parses it ([] when none is left). At
        most one Redis round trip (TrustedPeers)."""
        sip = self.sip
        sockets = sip.target_sockets()
        peers = self.gate.peers.addresses()
        keep = []
        for i, socket in enumerate(sockets):
            where = edge.parse_socket(socket)
            why = edge.unsafe_target(socket, peers) or ("this proxy" if sip.is_myself(edge.uri_of(where)) else None)
            if why is not None:
                sip.log("warn", f"contact {sip.target_uri(i)} of {aor} ({socket or '?'}) names {why}: not rung")
            keep.append(why is None)
        if not all(keep) and not sip.keep_targets(keep):
            return []
        return [edge.parse_socket(socket) for socket, kept in zip(sockets, keep) if kept]
