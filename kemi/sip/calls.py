"""Every call's life as the proxy sees it: its record, a refusal, its dialog, media servers.

A call that the proxy connects is tracked by a dialog carrying its record; the
dialog events write the record (and, for a prepaid call, settle it) when it ends.
A call the proxy refuses is answered and recorded at once.
"""

from __future__ import annotations

import time
from typing import Callable

from kemi import metrics, records, replies, routing
from kemi.replies import Reply
from kemi.settings import Settings
from kemi.sip.media import Media, media_limits
from kemi.sip.shell import Metric, Profile, Route, Sip, Table, Timers, Var
from kemi.store.prepaid import PrepaidLedger

Ledgers = Callable[[], PrepaidLedger]


def now_ms() -> int:
    return int(time.time() * 1000)


def refused(sip: Sip, answer: Reply, detail: str = "", level: str = "info") -> None:
    """Count a call the proxy refused (answered already) and write its decision line."""
    reason = metrics.refusal_reason(answer)
    sip.count(Metric.REFUSALS, reason)
    text = f"{answer.code} {answer.reason}" + (f"; {detail}" if detail else "")
    sip.log(level, metrics.decision_line(sip.call_id, "refused", reason, text))


def _parties(rec: dict | None) -> str:
    if rec is None:
        return "caller not identified"
    caller = f"{rec.get('company')}/{rec.get('extension') or rec.get('from') or '-'}"
    return f"{caller} to {rec.get('to') or '-'} ({rec.get('direction')}, {rec.get('billing')})"


class Calls:
    def __init__(self, sip: Sip, settings: Settings, ledger: Ledgers, media: Media | None = None,
                 peer_addresses: Callable[[], frozenset | None] = lambda: None):
        self.sip = sip
        self.settings = settings
        self.ledger = ledger
        self.media = media or Media(sip, media_limits(settings))
        self.peer_addresses = peer_addresses  # gate.TrustedPeers.addresses: (ip, port) of trunks, media servers

    def record(self, co: str, ext: str | None, caller: str | None, to: str | None, category: str,
               billing: str, direction: str) -> dict:
        """The record of a call being set up now."""
        return records.start(company=co, extension=ext, caller=caller, to=to, category=category,
                             billing=billing, direction=direction, call_id=self.sip.call_id, setup_ms=now_ms())

    def refuse(self, answer: Reply, rec: dict | None, *headers: str, detail: str = "", level: str = "info") -> None:
        """Answer a call the proxy will not connect, and record it: refused calls are calls too."""
        self.sip.reply(answer, *headers)
        refused(self.sip, answer, detail, level)
        if rec is None:
            return
        try:
            final = records.refused(rec, answer.code, now_ms())
            if rec.get("reservation"):
                # refused after its money was held: settled at nothing, which writes the record
                self.ledger().settle(rec["company"], rec["reservation"], 0, final)
            else:
                self.ledger().record(rec["company"], final)
        except Exception as exc:
            self.sip.log("err", f"record of refused call-id {rec['call_id']} not written: {type(exc).__name__}: {exc}")

    def track(self, rec: dict | None, emergency: bool = False) -> bool:
        """Anchor the call's media at rtpengine, follow the call with a dialog (its parties, its
        record, its maximum duration) and stay in its path. rec None: a call without a company to
        record it for (an unverified emergency call). False when the call was refused (answered
        and recorded) because rtpengine is down; an emergency call never is (kemi.sip.media)."""
        if self.sip.get(Var.TRACKED):
            return True
        if not self.media.anchor(emergency, rec):
            refusal = self.media.refusal or replies.MEDIA_RELAY_DOWN
            self.refuse(refusal, rec, *(["Retry-After: 10"] if refusal.code == 503 else []))
            return False
        self.sip.set(Var.TRACKED, "1")
        category = metrics.category(rec)
        self.sip.count(Metric.CALLS_ROUTED, category)
        self.sip.log("info", metrics.decision_line(self.sip.call_id, "routed", category, _parties(rec)))
        if rec and rec.get("max_secs"):
            # the dialog's lifetime, counted from the answer (timeout_avp in kamailio.cfg);
            # when it runs out the dialog module sends BYE both ways (send_bye)
            self.sip.set(Var.DLG_TIMEOUT, int(rec["max_secs"]))
        self.sip.set(Var.TIMEOUT_ROUTE, "timeout")  # the proxy ends timed-out calls itself (kamailio.cfg)
        self.sip.manage_dialog()
        self.media.count_streams()  # its relay ports count against the node, the company and the phone
        if category == metrics.PREPAID:
            self.sip.join_profile(Profile.PREPAID)  # its reservation is in flight until the dialog is gone
        self.sip.cache_set(Table.CALL_IDS, self.sip.call_id, "1")
        # who may speak for the caller later: on TCP/TLS a phone's own connection, a carrier's address
        self.sip.set(Var.CALLER, self.sip.party_address(by_address=self.by_address(Var.CALLER_CARRIER)))
        if rec is not None:
            self.sip.set(Var.RECORD, records.encode(rec))
        if emergency:
            self.sip.set(Var.DLG_EMERGENCY, "1")  # its ACK and BYE pass the gate's bans (kemi.sip.gate)
        self.sip.record_route()
        return True

    def track_for_sibling(self) -> bool:
        """A call a sibling proxy of the site sends to a phone registered through this one
        (kemi.sip.site): the sibling routes, records and bills it. This proxy anchors the phone's media
        at its own relay (the phone's NAT lets only this proxy's addresses in), follows the dialog so
        that the phone's in-dialog requests are served (the sibling, known by its address, is the
        caller), and stays in its path. False when refused (answered)."""
        if not self.media.anchor(False, None):
            refusal = self.media.refusal or replies.MEDIA_RELAY_DOWN
            self.refuse(refusal, None, *(["Retry-After: 10"] if refusal.code == 503 else []))
            return False
        self.sip.set(Var.TRACKED, "1")
        self.sip.manage_dialog()
        self.media.count_streams()
        self.sip.set(Var.CALLER, self.sip.party_address(by_address=True))
        self.sip.record_route()
        return True

    def call_id_reused(self) -> bool:
        """A new call with the Call-ID of a call this node relayed that is still up or ended less than
        CALL_ID_GRACE_S ago: refused, never merged with it (one dialog, one media session in rtpengine,
        one record per Call-ID at a time; money is keyed by a minted reservation id anyway). Answered,
        and logged."""
        if not self.sip.cache_get(Table.CALL_IDS, self.sip.call_id):
            return False
        ip, port = self.sip.source
        self.refuse(replies.CALL_ID_REUSED, None, detail=f"new INVITE from {ip}:{port} reuses it", level="notice")
        return True

    def to_media_server(self, server, user: str, headers: list[str], failure_route: str) -> None:
        """Relay to a media server; its headers go on its branch only (see media_branch)."""
        self.sip.set(Var.MEDIA_HEADERS, "\n".join(headers))
        self.sip.relay(f"sip:{user}@{server.host}:{server.port};transport={server.transport}", failure_route,
                       Timers(120000, self.settings.trunk_timeout_ms), branch_route=Route.BRANCH_MEDIA,
                       to_phones=False)

    def to_receptionist(self, co: str, did: str | None, server) -> None:
        """The company's Virtual Receptionist answers; its 3xx comes back to Route.FAILURE_RECEPTIONIST."""
        if server is None:
            self.refuse(replies.NO_RECEPTIONIST, None, level="err",
                        detail=f"company {co} routes {did} to its receptionist, but no such media server is provisioned")
            return
        self.sip.set(Var.COMPANY, co)
        self.sip.set(Var.DID, did or "")
        self.to_media_server(server, did or "receptionist", routing.media_headers(co, did), Route.FAILURE_RECEPTIONIST)

    def remember_receptionist(self, co: str, did: str | None, server) -> None:
        """Where an extension's unanswered call goes next (Route.FAILURE_EXTENSION)."""
        self.sip.set(Var.FALLBACK, routing.encode_peers([server]))
        self.sip.set(Var.COMPANY, co)
        self.sip.set(Var.DID, did or "")

    def media_branch(self) -> None:
        headers = self.sip.get(Var.MEDIA_HEADERS)
        if headers:
            self.sip.append_headers(headers.split("\n"))

    def leave_media(self) -> None:
        """The call moves on from a media server: later branches get none of its headers."""
        self.sip.unset(Var.MEDIA_HEADERS)

    # -- dialog events ---------------------------------------------------------------------
    def dialog_event(self, event: str, prepaid) -> None:
        """Events of a tracked call; prepaid: PrepaidCalls.

        dialog:start is the answer. The call ends once, by whichever comes first: a party's BYE
        accepted by the other party (bye_answered), dialog:end (a BYE of the proxy's own: end_call),
        dialog:failed (never answered), or dialog:timeout (its maximum duration, run before any
        BYE), after which the proxy hangs up both parties itself."""
        if event == "dialog:start":
            self.answered(prepaid)
        elif event in ("dialog:end", "dialog:failed", "dialog:timeout"):
            first = not self.sip.get(Var.FINISHED)
            if first:
                self.end(event, prepaid)
            # a call already finished times out only when its BYE was accepted (expire_dialog)
            if event == "dialog:timeout" and first:
                self.sip.end_call()

    def end(self, event: str, prepaid) -> None:
        self.sip.set(Var.FINISHED, event)
        # remembered from now on for CALL_ID_GRACE_S only (it was set at relay to last as long as the
        # longest dialog can): the table holds the calls that are up and those of the last minutes
        rec = records.decode(self.sip.get(Var.RECORD))
        call_id = (rec or {}).get("call_id") or self.sip.call_id
        if call_id:
            self.sip.cache_set_text_for(Table.CALL_IDS, call_id, "1", self.settings.call_id_grace_s)
        self.media.release()
        self.finished(event, prepaid, rec)

    # -- a party's BYE (kemi.sip.in_dialog: the dialog module never sees it) -----------------------
    def bye_answered(self, prepaid) -> None:
        """A reply to a party's BYE: at the other party's 2xx the call is over, recorded and settled
        now; the dialog is left to expire (it ends nothing more). A negative answer: bye_failed."""
        if not 200 <= self.sip.reply_code() < 300 or self.sip.get(Var.FINISHED):
            return
        self.end("dialog:end", prepaid)
        self.media.free_shares()  # the dialog lingers a second more; the relay's ports are free now
        self.sip.expire_dialog()

    def bye_failed(self, why: str) -> None:
        """The other party refused a party's BYE, never answered it, or it could not be sent: that
        party's leg may still be up (a carrier's, billed to us). The proxy ends both legs itself,
        as at a prepaid call's maximum, and the call is recorded and settled then (dialog:end)."""
        if self.sip.get(Var.FINISHED):
            return  # ended meanwhile: cut at its maximum, or the other party's own BYE accepted
        self.sip.log("warn", f"call-id {self.sip.call_id}: {self.sip.method} of a party {why}; "
                             f"the proxy ends the call itself")
        if self.sip.hold_dialog():
            self.sip.end_call()

    def by_address(self, carrier: str) -> bool:
        """Whether a party on TCP/TLS is known by its address rather than its connection: a carrier
        or a media server, trusted by their address (the proxy connects to them, and RFC 3261 lets
        them send their in-dialog requests on a connection of their own). Phones are their
        connection. Nothing is read on UDP."""
        if self.sip.transport not in routing.CONNECTED:
            return True
        if self.sip.get(carrier) == "1":
            return True
        ip = self.sip.source[0]
        return any(peer_ip == ip for peer_ip, _ in self.peer_addresses() or ())

    def answered(self, prepaid) -> None:
        # the event runs on the answer: its source is where the callee really is
        callee = self.sip.party_address(by_address=self.by_address(Var.CALLEE_CARRIER))
        self.sip.set(Var.CALLEE, callee)
        rec = records.decode(self.sip.get(Var.RECORD))
        self.sip.log("info", f"call-id {self.sip.call_id} connected: {records.summary(rec)} answered from {callee}")
        if rec is None:
            return
        answered_ms = now_ms()
        self.sip.set(Var.ANSWER_MS, str(answered_ms))
        if rec.get("prepaid"):
            self.sip.set(Var.DEADLINE_MS, str(answered_ms + rec["max_secs"] * 1000))
            if not prepaid.answered(rec):
                self.sip.end_call()

    def finished(self, event: str, prepaid, rec: dict | None) -> None:
        if rec is None:
            return
        answer_ms = int(self.sip.get(Var.ANSWER_MS) or 0)
        final, secs = records.finish(rec, answer_ms=answer_ms, end_ms=now_ms(), failed=event == "dialog:failed",
                                     trunks_failed=bool(self.sip.get(Var.TRUNKS_FAILED)))
        if rec.get("prepaid"):
            prepaid.ended(rec, secs, final)
        elif rec.get("company"):
            self.ledger().record(rec["company"], final)
        else:
            self.ledger().record_unattributed(final)  # an emergency call nobody could identify
