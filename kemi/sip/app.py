"""The object app_python3 calls: Kamailio's callbacks, each handed to the role it belongs to.

Rooms (kemi/sip/): shell (the only module that speaks KSR), gate (what every request passes
first), phones, outbound, trunks, prepaid_calls, inbound, emergency, calls, in_dialog. Every
callback catches what its role raises, so a caller always gets an answer (400 for bytes that
are not text, 503 when the data store is down, 500 for a bug) and the log says why; only the
gate drops requests unanswered (scanners, floods, banned addresses).
"""

from __future__ import annotations

import os
import traceback

from kemi import metrics, numbering, replies, routing
from kemi.settings import Settings
from kemi.sip.calls import Calls
from kemi.sip.emergency import Emergency, EmergencyCache
from kemi.sip.gate import Gate, TrustedPeers
from kemi.sip.in_dialog import InDialog
from kemi.sip.inbound import Inbound
from kemi.sip.media import Media, media_limits
from kemi.sip.outbound import Outbound
from kemi.sip.phones import Phones
from kemi.sip.prepaid_calls import PrepaidCalls
from kemi.sip import shell
from kemi.sip.shell import Metric, NotText, Sip
from kemi.sip.site import Site
from kemi.sip.trunks import Trunks
from kemi.store import Connection, Directory, SchemaMismatch, StoreUnavailable
from kemi.store.prepaid import PrepaidLedger

UNREPLICATED_WARNING = ("a prepaid money change was not confirmed by a Redis replica within %d ms "
                        "(REDIS_WAIT_TIMEOUT_MS); a failover now could lose it: check the replica (INFO replication)")


class Router:
    def __init__(self, sip: Sip, settings: Settings, conn: Connection | None = None,
                 directory: Directory | None = None):
        self.sip = sip
        self.settings = settings
        self.conn = conn or Connection(settings)
        self.conn.on_error = self.redis_failed
        self.conn.on_latency = lambda seconds: sip.observe(Metric.REDIS_LATENCY, seconds)
        self.directory = directory or Directory(self.conn)
        cache = EmergencyCache(sip)
        self.ledger = PrepaidLedger(self.conn)
        self.peers = TrustedPeers(self.directory, publish=sip.publish_peers)
        # a sibling proxy of the site (SITE_PROXIES) relays media like a trunk: its SDP names its relay
        siblings = settings.siblings
        self.media = Media(sip, media_limits(settings),
                           lambda source: source[0] in siblings or self.peers.is_peer_host(source))
        self.calls = Calls(sip, settings, self.ready_ledger, self.media, self.peers.addresses)
        self.trunks = Trunks(sip, settings)
        self.prepaid = PrepaidCalls(sip, settings, self.ready_ledger, self.calls, self.trunks)
        self.gate = Gate(sip, settings, self.peers)
        self.site = Site(sip, settings, self.calls, self.peers)
        self.phones = Phones(sip, self.directory, self.calls, cache, self.gate, self.site)
        self.outbound = Outbound(sip, self.directory, self.calls, self.trunks, self.phones, self.prepaid)
        self.inbound = Inbound(sip, self.directory, self.calls, self.phones, self.outbound)
        self.emergency = Emergency(sip, self.directory, self.calls, self.trunks, cache,
                                   routing.parse_static_trunks(settings.emergency_trunks), self.gate, settings)
        self.in_dialog = InDialog(sip, self.media, self.calls.bye_failed)

    def redis_failed(self, kind: str) -> None:
        self.sip.count(Metric.REDIS_ERRORS, kind)
        if kind == metrics.UNREPLICATED:  # the call goes on (kemi.store.prepaid.Unreplicated says why)
            self.sip.log("warn", f"call-id {self.sip.call_id}: {UNREPLICATED_WARNING % self.settings.redis_wait_timeout_ms}")

    def ready_ledger(self) -> PrepaidLedger:
        self.conn.ready()  # the schema check, as before every use of the store
        return self.ledger

    # -- Kamailio callbacks (app_python3 looks them up as methods) -------------------------------
    def child_init(self, rank: int) -> int:
        try:
            self.sip.metrics_ready()
        except Exception as exc:  # metrics must never keep a process from serving calls
            self.sip.log("err", f"metrics not initialised in process rank {rank}: {type(exc).__name__}: {exc}")
        return 0

    def ksr_xhttp_event(self, msg, evname: str) -> int:
        try:
            with self.sip.scope():
                # HTTP on a SIP socket (404 below) passes the gate's flood limit like SIP; the metrics
                # socket is private (METRICS_ADDR) and its scrapes are never limited.
                if self.sip.on_metrics_socket() or self.gate.admit_http():
                    self.sip.serve_metrics()
        except Exception as exc:
            self.sip.log("err", f"metrics page: {type(exc).__name__}: {exc}")
        return 1

    def ksr_request_route(self, msg) -> int:
        with self.sip.scope():
            return self._request_route()

    def _request_route(self) -> int:
        sip = self.sip
        try:
            self.request()
        except NotText as exc:
            self.refuse_unreadable(exc)
        except SchemaMismatch as exc:
            sip.log("err", f"refusing {sip.method} from {sip.source[0]}: {exc}")
            sip.answer_if_possible(replies.SCHEMA_UNKNOWN, "Retry-After: 30")
            self.count_refused_call(replies.SCHEMA_UNKNOWN)
        except StoreUnavailable as exc:
            sip.log("err", f"refusing {sip.method} from {sip.source[0]}: {exc}")
            sip.answer_if_possible(replies.STORE_DOWN, "Retry-After: 5")
            self.count_refused_call(replies.STORE_DOWN)
        except Exception as exc:  # a bug: answer, and leave the traceback for the developer
            sip.log("err", f"route failed on {sip.method} call-id {sip.call_id}: "
                           f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            sip.answer_if_possible(replies.INTERNAL_ERROR)
            self.count_refused_call(replies.INTERNAL_ERROR)
        return 1

    def count_refused_call(self, answer: replies.Reply) -> None:
        """A new call the error boundary answered (the log line above says why): a refusal too."""
        try:
            if self.sip.is_method("INVITE") and not self.sip.in_dialog():
                self.sip.count(Metric.REFUSALS, metrics.refusal_reason(answer))
        except Exception as exc:
            self.sip.log("err", f"refusal not counted: {type(exc).__name__}: {exc}")

    def refuse_unreadable(self, exc: NotText) -> None:
        """Bytes that are not text where a route reads: one log line, and a 400 that names the place."""
        sip = self.sip
        ip, port = sip.source
        answer = replies.unreadable(exc.name, exc.nul)
        sip.log("notice", f"{sip.method or 'request'} from {ip}:{port}: {exc.name} is not text ({exc.reason} "
                          f"at byte {exc.start}): {answer.code} {answer.reason}")
        sip.answer_if_possible(answer)

    def ksr_failure_trunk(self, msg) -> int:
        return self._in_failure_route(self.trunks.failed)

    def ksr_failure_announcement(self, msg) -> int:
        return self._in_failure_route(self.prepaid.announcement_done)

    def ksr_failure_extension(self, msg) -> int:
        return self._in_failure_route(self.inbound.extension_failed)

    def ksr_failure_receptionist(self, msg) -> int:
        return self._in_failure_route(self.inbound.receptionist_redirected)

    def ksr_reply_media(self, msg) -> int:
        try:
            self.media.reply()
        except Exception as exc:  # the reply goes on as it is: a call without anchored media, logged
            self.sip.log("err", f"reply route: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1

    def ksr_reply_bye(self, msg) -> int:
        try:
            with self.sip.scope():
                self.calls.bye_answered(self.prepaid)
        except Exception as exc:
            # Money is safe: an unsettled reservation expires by itself and is recorded then.
            self.sip.log("crit", f"BYE answer of call-id {self.sip.call_id}: record/settlement not written: "
                                 f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1

    def ksr_failure_bye(self, msg) -> int:
        def failed() -> None:
            # t_branch_replied() is false here even after a reply: tm's own 408 is the silence
            code = self.sip.status_code()
            self.calls.bye_failed("got no answer (408)" if code == 408 else f"was answered {code} by the other party")
        return self._in_failure_route(failed)

    def ksr_branch_media(self, msg) -> int:
        try:
            with self.sip.scope():
                self.calls.media_branch()
        except Exception as exc:
            self.sip.log("err", f"branch route: {type(exc).__name__}: {exc}")
        return 1

    def ksr_branch_phone(self, msg) -> int:
        try:
            self.sip.connections_only()  # this branch only: tm restores the request's flags after it
        except Exception as exc:
            self.sip.log("err", f"branch route: {type(exc).__name__}: {exc}")
        return 1

    def ksr_dialog_event(self, msg, evname: str) -> int:
        try:
            with self.sip.scope():
                self.calls.dialog_event(evname, self.prepaid)
        except Exception as exc:
            # Money is safe: an unsettled reservation expires by itself and is recorded then.
            self.sip.log("crit", f"{evname} of call-id {self.sip.call_id}: record/settlement not written: "
                                 f"{type(exc).__name__}: {exc}")
        return 1

    def _in_failure_route(self, step) -> int:
        with self.sip.scope():
            return self._failure_step(step)

    def _failure_step(self, step) -> int:
        try:
            if not self.sip.canceled():
                step()
        except StoreUnavailable as exc:
            self.sip.log("err", f"failure route of call-id {self.sip.call_id}: {exc}")
            self.sip.reply_in_failure(replies.STORE_DOWN)
        except Exception as exc:
            self.sip.log("err", f"failure route: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1

    # -- every request -----------------------------------------------------------------------
    def request(self) -> None:
        sip = self.sip
        if not self.gate.admit():
            return  # a scanner, a flood or a banned address: no answer at all
        sip.reply_to_source_port()  # a phone behind a NAT hears its answers only there
        if not sip.sane():
            ip, port = sip.source
            sip.log("notice", f"malformed {sip.method} from {ip}:{port} refused")
            return
        if not sip.hops_left():
            sip.reply(replies.TOO_MANY_HOPS)
            return
        if sip.is_cancel():
            sip.relay_cancel()
            return
        if not sip.is_ack() and sip.absorbed_retransmission():
            return
        if sip.in_dialog():
            self.in_dialog.route()
            return
        if sip.is_ack():
            sip.relay_ack_of_transaction()
            return  # or a hop-by-hop ACK of a negative reply, absorbed by tm
        if sip.on_metrics_socket():
            # No call or registration starts on the private metrics socket: its dialogs would be
            # routed through it (Record-Route, Via). Dropped, as a scanner is. (Checked here, not for
            # every request: a request inside a dialog of ours is what it would be on the SIP socket.)
            ip, port = sip.source
            sip.log("notice", f"SIP {sip.method} from {ip}:{port} on the metrics socket dropped")
            return
        if self.site.is_sibling(sip.source[0]):
            self.site.from_sibling()  # a call for a phone of ours, routed by its Path: nothing else
            return
        # An initial request never carries our Route: dropping any preloaded
        # Route keeps the proxy from relaying to places the caller chooses.
        sip.remove_headers(["Route"])
        self.gate.require_text()
        method = sip.method
        if method == "OPTIONS" and not sip.pv("$rU"):
            sip.reply(replies.OK)  # keepalive to the proxy itself
        elif method == "REGISTER":
            self.phones.register()
        elif method == "INVITE":
            self.invite()
        else:
            sip.reply(replies.METHOD_NOT_ALLOWED, f"Allow: {replies.ALLOWED_METHODS}")

    def invite(self) -> None:
        sip = self.sip
        dialled = sip.pv("$rU") or ""
        # Before any data lookup: an emergency call must not depend on Redis.
        if numbering.is_emergency(dialled):
            sip.remove_headers(routing.PRIVATE_HEADERS)
            self.emergency.call(numbering.normalise(dialled) or dialled)
            return
        # A draining proxy (scripts/drain.sh) refuses new calls so that phones and carriers place them
        # through the site's other proxy. Emergency calls were routed above, whatever the drain: a phone
        # may have no other proxy configured, or fail over slowly, and a caller in danger must not wait
        # on that; the drain waits for their end like any call's.
        if sip.draining():
            self.calls.refuse(replies.DRAINING, None, f"Retry-After: {replies.DRAINING_RETRY_AFTER_S}",
                              detail="this proxy is draining (scripts/drain.sh): new calls go to another")
            return
        if self.calls.call_id_reused():
            return
        ip, port = sip.source
        source, co = self.directory.first_look(ip, port, (sip.pv("$fd") or "").lower())
        if source is not None and source.kind == "media":
            self.inbound.from_media_server(dialled)
            return
        sip.remove_headers(routing.PRIVATE_HEADERS)  # only the proxy asserts identities, locations, companies
        if source is not None:
            self.inbound.from_trunk(dialled)
            return
        self.outbound.from_phone(dialled, co)


def mod_init(sip: Sip | None = None, env=None) -> Router | None:
    """Called once by app_python3 before Kamailio forks; the Router's methods are the routes."""
    sip = sip or shell.kamailio()
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except ValueError as exc:
        sip.log("crit", f"bad setting: {exc}")
        return None
    router = Router(sip, settings)
    try:
        router.conn.ready()
        sip.log("info", f"Redis at {settings.redis_where} ready")
    except SchemaMismatch as exc:
        if exc.version is not None:
            sip.log("crit", f"refusing to start: {exc}")
            return None
        # An empty store: emergency calls still need the proxy; the rest gets 503 until `load`.
        sip.log("err", f"starting without data: {exc}")
    except StoreUnavailable as exc:
        # Start anyway: OPTIONS and emergency calls need no data, and service
        # resumes by itself when Redis comes back.
        sip.log("err", f"starting without data: {exc}; answering 503 to what needs it until it is back")
    return router
