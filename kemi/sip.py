"""The only module that speaks KSR: SIP in, decisions from the pure modules, SIP out.

Every route method catches what it raises, so a caller always gets an answer
(503 when the data store is down, 500 for a bug) and the log says why.
"""

from __future__ import annotations

import os
import time
import traceback

import KSR  # provided by Kamailio's app_python3

from kemi import numbering, records, replies, routing
from kemi.model import EXTENSION_RE, RECEPTIONIST, Trunk
from kemi.replies import Reply
from kemi.settings import Settings
from kemi.store import Connection, Directory, SchemaMismatch, StoreUnavailable
from kemi.store.directory import CallContext
from kemi.store.prepaid import PrepaidError, PrepaidLedger

MAX_FORWARDS = 70
LOOK_UP = object()  # Router.authenticate: the company of the domain is not known yet


def now_ms() -> int:
    return int(time.time() * 1000)


def log(level: str, text: str) -> None:
    getattr(KSR, level)(text.replace("\n", " | ") + "\n")


def reply(answer: Reply, *headers: str) -> None:
    for header in headers:
        KSR.hdr.append_to_reply(header + "\r\n")
    # send_reply answers statefully once a transaction exists, statelessly before.
    KSR.sl.send_reply(answer.code, answer.reason)


class Router:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn = Connection(settings)
        self.directory = Directory(self.conn)
        self.static_emergency_trunks = routing.parse_static_trunks(settings.emergency_trunks)

    # -- Kamailio callbacks ---------------------------------------------------------------
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg) -> int:
        try:
            self.request()
        except SchemaMismatch as exc:
            log("err", f"refusing {KSR.pv.get('$rm')} from {KSR.pv.get('$si')}: {exc}")
            self._answer_if_possible(replies.SCHEMA_UNKNOWN, "Retry-After: 30")
        except StoreUnavailable as exc:
            log("err", f"refusing {KSR.pv.get('$rm')} from {KSR.pv.get('$si')}: {exc}")
            self._answer_if_possible(replies.STORE_DOWN, "Retry-After: 5")
        except Exception as exc:  # a bug: answer, and leave the traceback for the developer
            log("err", f"route failed on {KSR.pv.get('$rm')} call-id {KSR.pv.get('$ci')}: "
                       f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self._answer_if_possible(replies.INTERNAL_ERROR)
        return 1

    def ksr_reply_route(self, msg) -> int:
        return 1

    def ksr_onsend_route(self, msg) -> int:
        return 1

    def _answer_if_possible(self, answer: Reply, *headers: str) -> None:
        if KSR.is_ACK():
            return  # an ACK is never answered
        try:
            reply(answer, *headers)
        except Exception as exc:
            log("err", f"could not send {answer.code}: {exc}")

    # -- request routing ---------------------------------------------------------------------
    def request(self) -> None:
        if KSR.sanity.sanity_check_defaults() < 0:
            # the module already answered 400 with the failed check as reason
            log("notice", f"malformed {KSR.pv.get('$rm')} from {KSR.pv.get('$si')}:{KSR.pv.get('$sp')} refused")
            return
        if KSR.maxfwd.process_maxfwd(MAX_FORWARDS) < 0:
            reply(replies.TOO_MANY_HOPS)
            return
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        if not KSR.is_ACK():
            # A retransmission, of a request still being routed or already relayed: tm
            # absorbs it and resends the last reply (t_check_trans() == 0 means "done").
            if KSR.tmx.t_precheck_trans() > 0:
                KSR.tm.t_check_trans()
                return
            if KSR.tm.t_check_trans() == 0:
                return
        if KSR.siputils.has_totag() > 0:
            self.in_dialog()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return  # hop-by-hop ACK of a negative reply, absorbed by tm
        # An initial request never carries our Route: dropping any preloaded
        # Route keeps the proxy from relaying to places the caller chooses.
        KSR.hdr.remove("Route")
        if KSR.is_OPTIONS() and not KSR.pv.get("$rU"):
            reply(replies.OK)  # keepalive to the proxy itself
            return
        if KSR.is_REGISTER():
            self.register()
            return
        if KSR.is_INVITE():
            self.invite()
            return
        reply(replies.METHOD_NOT_ALLOWED, f"Allow: {replies.ALLOWED_METHODS}")

    def in_dialog(self) -> None:
        KSR.dialog.dlg_manage()  # BYE and re-INVITE reach the dialog (call records, max duration)
        if KSR.rr.loose_route() > 0:
            if KSR.tm.t_relay() < 0:
                KSR.sl.sl_reply_error()
            return
        if KSR.is_ACK() and KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
            return
        if not KSR.is_ACK():
            reply(replies.NOT_HERE)

    # -- phones -----------------------------------------------------------------------------------
    def authenticate(self, realm_pv: str, callee: str | None = None, co=LOOK_UP) -> CallContext | None:
        """Digest-authenticate the phone; its call context, or None when already answered.

        co: the company id of the domain (None: no such company) when the caller already looked it up."""
        # KEMI passes strings through as they are (no $var expansion), so the
        # realm is the value itself: the company's SIP domain from From/To.
        domain = (KSR.pv.get(realm_pv) or "").lower()
        if not domain or KSR.auth.has_credentials(domain) < 0:
            # Only our companies' phones are challenged: a carrier or a scanner
            # sending from an unknown address is refused outright.
            if not (self.directory.domain_known(domain) if co is LOOK_UP else co is not None):
                log("notice", f"{KSR.pv.get('$rm')} from untrusted {KSR.pv.get('$si')}:{KSR.pv.get('$sp')} "
                              f"for domain {domain!r} refused")
                reply(replies.FORBIDDEN)
                return None
            KSR.auth.auth_challenge(domain, 1)
            return None
        user = KSR.pv.get("$au") or ""
        ctx = self.directory.call_context(domain, user, callee, None if co is LOOK_UP else co)
        if ctx.company is None or ctx.caller is None or not ctx.caller.ha1:
            log("notice", f"auth refused: no phone extension {user!r} at {domain!r} (from {KSR.pv.get('$si')})")
            reply(replies.FORBIDDEN)
            return None
        rc = KSR.auth.pv_auth_check(domain, ctx.caller.ha1, 1, 1)
        if rc < 0:
            action, answer = replies.auth_failure(rc)
            if action == "reply":
                log("notice", f"auth refused for {user}@{domain} from {KSR.pv.get('$si')} (code {rc})")
                reply(answer)
            else:
                KSR.auth.auth_challenge(domain, 1 | (16 if action == "challenge-stale" else 0))
            return None
        self.remember_for_emergencies(user, domain, ctx)
        return ctx

    def register(self) -> None:
        if self.authenticate("$td") is None:
            return
        if KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()

    def invite(self) -> None:
        dialled = KSR.pv.get("$rU") or ""
        # Before any data lookup: an emergency call must not depend on Redis.
        if numbering.is_emergency(dialled):
            self.strip_private_headers()
            self.emergency_call(numbering.normalise(dialled) or dialled)
            return
        source, co = self.directory.first_look(KSR.pv.get("$si"), KSR.pv.get("$sp"), (KSR.pv.get("$fd") or "").lower())
        if source is not None and source.kind == "media":
            self.from_media_server(dialled)
            return
        self.strip_private_headers()
        if source is not None:
            self.from_trunk(dialled)
            return
        ctx = self.authenticate("$fd", dialled if EXTENSION_RE.fullmatch(dialled) else None, co=co)
        if ctx is None:
            return
        KSR.auth.consume_credentials()
        decision = numbering.classify(dialled, numbering.Policy(ctx.company.allow_special), ctx.overrides)
        number = routing.caller_number(ctx.company, ctx.caller)
        if decision.category == "internal":
            if ctx.callee is not None and ctx.callee.type == "virtual":
                self.forward(ctx.company, ctx.callee, ctx.callee.did or ctx.company.main_number, number,
                             ctx.trunks, ctx.overrides, "internal")
                return
            rec = self.record(ctx.company.id, ctx.caller.number, number or ctx.caller.number, dialled, decision,
                              "internal")
            self.call_extension(ctx.company, ctx.callee, rec)
            return
        rec = self.record(ctx.company.id, ctx.caller.number, number, decision.e164 or decision.dialled, decision,
                          "outbound")
        refused = routing.refusal(decision)
        if refused is not None:
            log("info", f"call from {ctx.caller.number}@{ctx.company.domain} to {dialled!r} refused: "
                        f"{decision.category}/{decision.billing}: {refused.code} {refused.reason}")
            self.refuse(refused, rec)
            return
        headers = [h for h in [routing.pai_header(number, ctx.caller.name, KSR.pv.get("$Ri"))] if h]
        self.outbound(ctx.company, decision, routing.trunks_for(ctx.trunks, False), headers, rec, ctx.media)

    @staticmethod
    def strip_private_headers() -> None:
        for name in routing.PRIVATE_HEADERS:
            KSR.hdr.remove(name)  # only the proxy asserts identities, locations and company headers

    def record(self, co: str, ext: str | None, caller: str | None, to: str | None, decision, direction: str) -> dict:
        return records.start(company=co, extension=ext, caller=caller, to=to, category=decision.category,
                             billing=decision.billing, direction=direction, call_id=KSR.pv.get("$ci"),
                             setup_ms=now_ms())

    def refuse(self, answer: Reply, rec: dict | None) -> None:
        """Answer a call the proxy will not connect, and record it: refused calls are calls too."""
        reply(answer)
        if rec is None:
            return
        try:
            self.conn.call(self.ledger().record, rec["company"], records.refused(rec, answer.code, now_ms()))
        except Exception as exc:
            log("err", f"record of refused call-id {rec['call_id']} not written: {type(exc).__name__}: {exc}")

    def track(self, rec: dict) -> None:
        """Follow the call with a dialog (its record, its maximum duration) and stay in its path."""
        if KSR.pv.get("$avp(tracked)"):
            return
        KSR.pv.sets("$avp(tracked)", "1")
        if rec.get("max_secs"):
            # the dialog's lifetime, counted from the answer (timeout_avp in kamailio.cfg);
            # when it runs out the dialog module sends BYE both ways (send_bye)
            KSR.pv.seti("$avp(dlg_timeout)", int(rec["max_secs"]))
        KSR.dialog.dlg_manage()
        KSR.pv.sets("$dlg_var(rec)", records.encode(rec))
        KSR.rr.record_route()

    def outbound(self, company, decision, trunks: list[Trunk], headers: list[str], rec: dict,
                 media: tuple = ()) -> None:
        """An external call: straight to the trunks, or through the Prepaid Account first."""
        target = decision.e164 or decision.dialled
        if decision.billing != "prepaid":
            self.track(rec)
            self.route_to_trunks(target, trunks, headers)
            return
        ledger = self.ledger()
        rate = self.conn.call(ledger.rate_for, routing.rating_number(decision))
        try:
            if rate is None:
                # "not activated" is the answer that tells the caller what to do, so it comes first
                active = self.conn.call(ledger.status, company.id).active
                raise PrepaidError("NO_RATE" if active else "NOT_ACTIVE", f"no rate for {target}")
            cap = self.settings.prepaid_max_call_s
            ttl = (self.settings.prepaid_setup_s + cap + self.settings.prepaid_ttl_margin_s) * 1000
            held = self.conn.call(ledger.reserve, company.id, rec["call_id"], rate, cap_secs=cap, ttl_ms=ttl,
                                  ext=rec["extension"], to=target)
        except PrepaidError as exc:
            answer = routing.prepaid_refusal(exc.code)
            log("info", f"prepaid call of {company.id}/{rec['extension']} to {target} refused: {exc}")
            self.refuse(answer, rec)
            return
        rec.update(prepaid=True, max_secs=held.max_secs)
        self.track(rec)
        announcer = next((m for m in media if m.role == "announcement"), None)
        announce = announcer and (announcer, routing.media_headers(company.id, None)
                                  + routing.balance_headers(held.available_before, held.currency))
        self.route_to_trunks(target, trunks, headers, announce)

    def ksr_failure_announcement(self, msg) -> int:
        return self._in_failure_route(self._announcement_done)

    def _announcement_done(self) -> None:
        if KSR.pv.get("$T_rpl($hdr(X-Announcement))") != "done":
            log("warn", f"announcement server answered {KSR.tm.t_get_status_code()} for call-id "
                        f"{KSR.pv.get('$ci')}: connecting without the balance announcement")
        KSR.pv.unset("$avp(media_hdrs)")
        trunks = routing.decode_peers(KSR.pv.get("$avp(trunks_left)"))
        self.relay_to_trunk(KSR.pv.get("$avp(dial_user)"), trunks[0], trunks[1:])

    def ledger(self) -> PrepaidLedger:
        self.conn.ready()  # the schema check, as before every use of the store
        return PrepaidLedger(self.conn)

    # -- dialogs: call records and settlement ---------------------------------------------------------
    def ksr_dialog_event(self, msg, evname: str) -> int:
        try:
            rec = records.decode(KSR.pv.get("$dlg_var(rec)"))
            if rec is None:
                return 1
            if evname == "dialog:start":
                KSR.pv.sets("$dlg_var(answer_ms)", str(now_ms()))
                if rec.get("prepaid"):
                    ttl = (rec["max_secs"] + self.settings.prepaid_ttl_margin_s) * 1000
                    self.conn.call(self.ledger().renew, rec["company"], rec["call_id"], ttl)
            elif evname in ("dialog:end", "dialog:failed"):
                answer_ms = int(KSR.pv.get("$dlg_var(answer_ms)") or 0)
                final, secs = records.finish(rec, answer_ms=answer_ms, end_ms=now_ms(),
                                             failed=evname == "dialog:failed")
                ledger = self.ledger()
                if rec.get("prepaid"):
                    done = self.conn.call(ledger.settle, rec["company"], rec["call_id"], secs, final)
                    log("info", f"prepaid call {rec['call_id']} of {rec['company']}: {secs}s, charged {done.cost}, "
                                f"balance {done.balance}")
                else:
                    self.conn.call(ledger.record, rec["company"], final)
        except Exception as exc:
            # Money is safe: an unsettled reservation expires by itself and is recorded then.
            log("crit", f"{evname} of call-id {KSR.pv.get('$ci')}: record/settlement not written: "
                        f"{type(exc).__name__}: {exc}")
        return 1

    def call_extension(self, company, callee, rec: dict) -> None:
        if callee is None:
            self.refuse(replies.EXTENSION_NOT_FOUND, rec)
            return
        # The callee is looked up in the caller's company only: the AOR carries the company's domain.
        KSR.pv.sets("$ru", f"sip:{callee.number}@{company.domain}")
        rc = KSR.registrar.lookup("location")
        if rc < 0:
            self.refuse(replies.NOT_REGISTERED if rc in (-1, -2) else replies.INTERNAL_ERROR, rec)
            return
        self.track(rec)
        KSR.tm.t_set_fr(callee.ring_timeout * 1000, 5000)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    # -- incoming calls ---------------------------------------------------------------------------
    def from_trunk(self, dialled: str) -> None:
        e164 = numbering.classify(dialled).e164  # +E.164 and national forms resolve alike
        inbound = self.directory.inbound(e164) if e164 else None
        if inbound is None or inbound.did is None or inbound.company is None:
            log("info", f"call from trunk {KSR.pv.get('$si')} to {dialled!r}: not one of our numbers")
            reply(replies.UNKNOWN_NUMBER)
            return
        did, company = inbound.did, inbound.company
        caller = routing.external_caller(KSR.pv.get("$fU"))
        if did.target == RECEPTIONIST:
            self.track(records.start(company=company.id, extension=None, caller=caller, to=did.number,
                                     category="incoming", billing="included", direction="inbound",
                                     call_id=KSR.pv.get("$ci"), setup_ms=now_ms()))
            self.to_receptionist(company.id, did.number, inbound.receptionist)
            return
        ext = inbound.extension
        if ext is None:
            log("err", f"DID {did.number} points at missing extension {did.target} of {company.id}: reload the provisioning")
            reply(replies.EXTENSION_NOT_FOUND)
            return
        if ext.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.forward(company, ext, did.number, caller, trunks, overrides, "inbound")
            return
        fallback = inbound.receptionist if did.fallback == RECEPTIONIST else None
        self.ring(company, ext, did.number, fallback, records.start(
            company=company.id, extension=ext.number, caller=caller, to=did.number, category="incoming",
            billing="included", direction="inbound", call_id=KSR.pv.get("$ci"), setup_ms=now_ms()))

    def from_media_server(self, dialled: str) -> None:
        """A trusted media server (the receptionist) sends the caller to an extension of a named company."""
        co = KSR.hdr.get("X-Company") or ""
        inbound = self.directory.company_view(co, dialled) if EXTENSION_RE.fullmatch(dialled) and co else None
        if inbound is None or inbound.company is None or inbound.extension is None:
            log("notice", f"media server {KSR.pv.get('$si')} asked for {dialled!r} of company {co!r}: no such extension")
            reply(replies.EXTENSION_NOT_FOUND)
            return
        self.strip_private_headers()  # read above; the phones and carriers behind get only the proxy's own
        ext = inbound.extension
        caller = routing.external_caller(KSR.pv.get("$fU"))
        if ext.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.forward(inbound.company, ext, KSR.hdr.get("X-DID") or ext.did or inbound.company.main_number,
                         caller, trunks, overrides, "inbound")
            return
        self.ring(inbound.company, ext, None, None, records.start(
            company=co, extension=ext.number, caller=caller, to=ext.number, category="incoming",
            billing="included", direction="inbound", call_id=KSR.pv.get("$ci"), setup_ms=now_ms()))

    def ring(self, company, ext, did: str | None, fallback, rec: dict | None) -> None:
        """Ring every phone of an extension; on no answer go to the fallback receptionist, if any.

        rec is None when the call is already tracked (a receptionist's redirect)."""
        KSR.pv.sets("$ru", f"sip:{ext.number}@{company.domain}")
        if KSR.registrar.lookup("location") < 0:
            if fallback is not None:
                if rec is not None:
                    self.track(rec)
                self.to_receptionist(company.id, did, fallback)
            else:
                self.refuse(replies.NOT_REGISTERED, rec)
            return
        if rec is not None:
            self.track(rec)
        if fallback is not None:
            KSR.pv.sets("$avp(fallback)", routing.encode_peers([fallback]))
            KSR.pv.sets("$avp(co)", company.id)
            KSR.pv.sets("$avp(did)", did or "")
            KSR.tm.t_on_failure("ksr_failure_extension")
        KSR.tm.t_set_fr(ext.ring_timeout * 1000, 5000)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def ksr_failure_extension(self, msg) -> int:
        return self._in_failure_route(self._extension_failed)

    def _extension_failed(self) -> None:
        if KSR.tm.t_get_status_code() in routing.FALLBACK_CODES:
            (server,) = routing.decode_peers(KSR.pv.get("$avp(fallback)"))
            self.to_receptionist(KSR.pv.get("$avp(co)"), KSR.pv.get("$avp(did)") or None, server)

    def to_receptionist(self, co: str, did: str | None, server) -> None:
        if server is None:
            log("err", f"company {co} routes {did} to its receptionist, but no such media server is provisioned")
            reply(replies.NO_RECEPTIONIST)
            return
        KSR.pv.sets("$avp(co)", co)
        KSR.pv.sets("$avp(did)", did or "")
        self.to_media(server, did or "receptionist", routing.media_headers(co, did), "ksr_failure_receptionist")

    def to_media(self, server, user: str, headers: list[str], failure_route: str) -> None:
        """Relay to a media server; its headers go on its branch only (ksr_branch_media)."""
        KSR.pv.sets("$avp(media_hdrs)", "\n".join(headers))
        KSR.tm.t_on_branch("ksr_branch_media")
        KSR.pv.sets("$ru", f"sip:{user}@{server.host}:{server.port};transport={server.transport}")
        KSR.tm.t_on_failure(failure_route)
        KSR.tm.t_set_fr(120000, self.settings.trunk_timeout_ms)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def ksr_branch_media(self, msg) -> int:
        try:
            headers = KSR.pv.get("$avp(media_hdrs)")
            if headers:
                self.add_headers(headers.split("\n"))
        except Exception as exc:
            log("err", f"branch route: {type(exc).__name__}: {exc}")
        return 1

    @staticmethod
    def add_headers(headers: list[str]) -> None:
        for header in headers:
            KSR.hdr.append(header + "\r\n")

    def ksr_failure_receptionist(self, msg) -> int:
        return self._in_failure_route(self._receptionist_redirected)

    def _receptionist_redirected(self) -> None:
        code = KSR.tm.t_get_status_code()
        if not 300 <= code < 400:
            return  # the receptionist's failure goes back to the caller as it is
        co = KSR.pv.get("$avp(co)")
        contact = KSR.pv.get("$T_rpl($hdr(Contact))")
        company = self.directory.company(co)
        number = routing.redirect_target(contact, company.domain if company else "", self.proxy_hosts())
        inbound = self.directory.company_view(co, number) if number else None
        if inbound is None or inbound.extension is None:
            log("warn", f"receptionist of {co} redirected call-id {KSR.pv.get('$ci')} to {contact!r}: refused, "
                        f"only extensions of the same company are followed")
            KSR.tm.t_reply(replies.REDIRECT_REFUSED.code, replies.REDIRECT_REFUSED.reason)
            return
        KSR.pv.unset("$avp(media_hdrs)")
        if inbound.extension.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.forward(inbound.company, inbound.extension, KSR.pv.get("$avp(did)") or inbound.company.main_number,
                         routing.external_caller(KSR.pv.get("$fU")), trunks, overrides, "inbound")
            return
        self.ring(inbound.company, inbound.extension, None, None, None)

    def proxy_hosts(self) -> set[str]:
        ip, port = KSR.pv.get("$Ri"), KSR.pv.get("$Rp")
        return {ip, f"{ip}:{port}"}

    def forward(self, company, ext, diversion: str | None, caller: str | None, trunks, overrides,
                direction: str) -> None:
        """A virtual extension: a call to its forwarding number, by the same country rules as a user's call."""
        decision = numbering.classify(ext.forward or "", numbering.Policy(company.allow_special), overrides)
        rec = self.record(company.id, ext.number, caller, decision.e164, decision, direction)
        refused = routing.refusal(decision)
        if refused is None and self.directory.inbound(decision.e164).did is not None:
            refused = replies.FORWARD_LOOP
        if refused is not None:
            log("info", f"forward of {company.id}/{ext.number} to {ext.forward} refused: {refused.code} {refused.reason}")
            self.refuse(refused, rec)
            return
        host = KSR.pv.get("$Ri")
        headers = [routing.diversion_header(diversion, host)] if diversion else []
        pai = routing.pai_header(caller, None, host)
        self.outbound(company, decision, routing.trunks_for(trunks, False), headers + ([pai] if pai else []), rec)

    def _in_failure_route(self, step) -> int:
        try:
            if KSR.tm.t_is_canceled() < 0:
                step()
        except StoreUnavailable as exc:
            log("err", f"failure route of call-id {KSR.pv.get('$ci')}: {exc}")
            KSR.tm.t_reply(replies.STORE_DOWN.code, replies.STORE_DOWN.reason)
        except Exception as exc:
            log("err", f"failure route: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1

    # -- emergency calls -------------------------------------------------------------------------
    def emergency_call(self, code: str) -> None:
        """Route whatever happens to Redis, billing or the caller's credentials."""
        domain = (KSR.pv.get("$fd") or "").lower()
        user = KSR.pv.get("$fU") or ""
        if domain and KSR.auth.has_credentials(domain) < 0:
            KSR.auth.auth_challenge(domain, 1)  # needs no data; phones answer it at once
            return
        callback = location = company_id = None
        trunks: list[Trunk] = []
        try:
            ctx = self.directory.call_context(domain, KSR.pv.get("$au") or user, None)
            trunks = routing.trunks_for(ctx.trunks, True)
            if ctx.caller and ctx.caller.ha1 and KSR.auth.pv_auth_check(domain, ctx.caller.ha1, 1, 1) > 0:
                callback = routing.caller_number(ctx.company, ctx.caller)
                location = ctx.company.location
                company_id = ctx.company.id
                self.remember_for_emergencies(user, domain, ctx)
            else:
                log("warn", f"emergency call {code} from {user}@{domain} ({KSR.pv.get('$si')}) "
                            f"not authenticated: routed anyway, without a verified callback number")
        except StoreUnavailable as exc:
            log("err", f"emergency call {code} from {user}@{domain}: routed from cache, {exc}")
            callback, location = self.cached_identity(user, domain)
        trunks = trunks or self.cached_emergency_trunks() or list(self.static_emergency_trunks)
        if not trunks:
            log("crit", f"EMERGENCY CALL {code} from {user}@{domain} HAS NO ROUTE: provision a trunk with "
                        f"emergency: true or set EMERGENCY_TRUNKS")
            reply(replies.NO_TRUNK)
            return
        KSR.auth.consume_credentials()
        headers = routing.emergency_headers(callback, location)
        pai = routing.pai_header(callback, None, KSR.pv.get("$Ri"))
        if company_id:
            self.track(records.start(company=company_id, extension=user, caller=callback, to=code, category="emergency",
                                     billing="included", direction="outbound", call_id=KSR.pv.get("$ci"),
                                     setup_ms=now_ms()))
        else:
            KSR.rr.record_route()  # an unverified caller has no company to record the call for
        self.route_to_trunks(code, trunks, headers + ([pai] if pai else []))

    def remember_for_emergencies(self, user: str, domain: str, ctx: CallContext) -> None:
        """Keep in shared memory what an emergency call needs when Redis is down."""
        callback = routing.caller_number(ctx.company, ctx.caller) or ""
        KSR.htable.sht_sets("emerg", f"{user}@{domain}", f"{callback}\t{ctx.company.location}")
        emergency = routing.trunks_for(ctx.trunks, True)
        if emergency:
            KSR.htable.sht_sets("routes", "emergency", routing.encode_peers(emergency))

    def cached_identity(self, user: str, domain: str) -> tuple[str | None, str | None]:
        value = KSR.htable.sht_get("emerg", f"{user}@{domain}")
        if not value:
            return None, None
        callback, _, location = str(value).partition("\t")
        return callback or None, location or None

    def cached_emergency_trunks(self) -> list[Trunk]:
        return routing.decode_peers(KSR.htable.sht_get("routes", "emergency"))

    # -- trunks -----------------------------------------------------------------------------------
    def route_to_trunks(self, user: str, trunks: list[Trunk], headers: list[str], announce=None) -> None:
        """Send the call to the trunks in order; announce: (media server, its headers) heard first."""
        if not trunks:
            log("err", f"no trunk for a call to {user}: provision one (trunks: in the provisioning file)")
            reply(replies.NO_TRUNK)
            return
        self.add_headers(headers)  # the phone's own claims were stripped when the request came in
        KSR.pv.sets("$avp(dial_user)", user)
        if announce is None:
            self.relay_to_trunk(user, trunks[0], trunks[1:])
            return
        # The announcement's failure route (ksr_failure_announcement) dials the trunks afterwards.
        KSR.pv.sets("$avp(trunks_left)", routing.encode_peers(trunks))
        server, media_headers = announce
        self.to_media(server, "announce", media_headers, "ksr_failure_announcement")

    def relay_to_trunk(self, user: str, trunk: Trunk, rest: list[Trunk]) -> None:
        KSR.pv.sets("$avp(trunks_left)", routing.encode_peers(rest))
        KSR.pv.sets("$ru", f"sip:{user}@{trunk.host}:{trunk.port};transport={trunk.transport}")
        KSR.tm.t_on_failure("ksr_failure_trunk")
        KSR.tm.t_set_fr(120000, self.settings.trunk_timeout_ms)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def ksr_failure_trunk(self, msg) -> int:
        return self._in_failure_route(self._trunk_failed)

    def _trunk_failed(self) -> None:
        code = KSR.tm.t_get_status_code()
        rest = routing.decode_peers(KSR.pv.get("$avp(trunks_left)"))
        # a 408 after ringing is the callee not answering, not the trunk failing
        if not routing.trunk_failed(code, replied=KSR.tm.t_branch_replied() > 0):
            return
        if rest:
            log("warn", f"trunk answered {code} for call-id {KSR.pv.get('$ci')}: trying {rest[0].uri}")
            self.relay_to_trunk(KSR.pv.get("$avp(dial_user)"), rest[0], rest[1:])
        elif code == 503:
            # RFC 3261 16.7: a proxy does not pass a 503 on (it would say the proxy itself is down)
            KSR.tm.t_reply(replies.TRUNKS_UNAVAILABLE.code, replies.TRUNKS_UNAVAILABLE.reason)


def mod_init() -> Router | None:
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:
        log("crit", f"bad setting: {exc}")
        return None
    router = Router(settings)
    try:
        router.conn.ready()
        log("info", f"Redis at {settings.redis_url} ready")
    except SchemaMismatch as exc:
        if exc.version is not None:
            log("crit", f"refusing to start: {exc}")
            return None
        # An empty store: emergency calls still need the proxy; the rest gets 503 until `load`.
        log("err", f"starting without data: {exc}")
    except StoreUnavailable as exc:
        # Start anyway: OPTIONS and emergency calls need no data, and service
        # resumes by itself when Redis comes back.
        log("err", f"starting without data: {exc}; answering 503 to what needs it until it is back")
    return router
