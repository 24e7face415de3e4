"""The only module that speaks KSR: SIP in, decisions from the pure modules, SIP out.

Every route method catches what it raises, so a caller always gets an answer
(503 when the data store is down, 500 for a bug) and the log says why.
"""

from __future__ import annotations

import os
import traceback

import KSR  # provided by Kamailio's app_python3

from kemi import replies
from kemi.replies import Reply
from kemi.settings import Settings
from kemi.store import Connection, Directory, SchemaMismatch, StoreUnavailable

MAX_FORWARDS = 70


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
        if not KSR.is_ACK() and KSR.tmx.t_precheck_trans() > 0:
            KSR.tm.t_check_trans()  # a retransmission: tm resends the last reply
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
        if KSR.rr.loose_route() > 0:
            KSR.tm.t_relay() > 0 or KSR.sl.sl_reply_error()
            return
        if KSR.is_ACK() and KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
            return
        if not KSR.is_ACK():
            reply(replies.NOT_HERE)

    # -- phones -----------------------------------------------------------------------------------
    def authenticate(self, realm_pv: str, *also: str):
        """Digest-authenticate the phone; returns (company, its extension, [others]) or None when answered."""
        # KEMI passes strings through as they are (no $var expansion), so the
        # realm is the value itself: the company's SIP domain from From/To.
        domain = (KSR.pv.get(realm_pv) or "").lower()
        if not domain or KSR.auth.has_credentials(domain) < 0:
            KSR.auth.auth_challenge(domain or "invalid", 1)
            return None
        user = KSR.pv.get("$au") or ""
        company, exts = self.directory.party(domain, user, *also)
        me = exts[0] if exts else None
        if company is None or me is None or not me.ha1:
            log("notice", f"auth refused: no phone extension {user!r} at {domain!r} (from {KSR.pv.get('$si')})")
            reply(replies.FORBIDDEN)
            return None
        rc = KSR.auth.pv_auth_check(domain, me.ha1, 1, 1)
        if rc < 0:
            action, answer = replies.auth_failure(rc)
            if action == "reply":
                log("notice", f"auth refused for {user}@{domain} from {KSR.pv.get('$si')} (code {rc})")
                reply(answer)
            else:
                KSR.auth.auth_challenge(domain, 1 | (16 if action == "challenge-stale" else 0))
            return None
        return company, me, exts[1:]

    def register(self) -> None:
        party = self.authenticate("$td")
        if party is None:
            return
        if KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()

    def invite(self) -> None:
        dialled = KSR.pv.get("$rU") or ""
        party = self.authenticate("$fd", dialled)
        if party is None:
            return
        company, caller, (callee,) = party
        KSR.auth.consume_credentials()
        self.call_extension(company, callee)

    def call_extension(self, company, callee) -> None:
        if callee is None:
            reply(replies.EXTENSION_NOT_FOUND)
            return
        # The callee is looked up in the caller's company only: the AOR carries the company's domain.
        KSR.pv.sets("$ru", f"sip:{callee.number}@{company.domain}")
        rc = KSR.registrar.lookup("location")
        if rc < 0:
            reply(replies.NOT_REGISTERED if rc in (-1, -2) else replies.INTERNAL_ERROR)
            return
        KSR.rr.record_route()
        KSR.tm.t_set_fr(callee.ring_timeout * 1000, 5000)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()


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
        log("crit", f"refusing to start: {exc}")
        return None
    except StoreUnavailable as exc:
        # Start anyway: OPTIONS and emergency calls need no data, and service
        # resumes by itself when Redis comes back.
        log("err", f"starting without data: {exc}; answering 503 to what needs it until it is back")
    return router
