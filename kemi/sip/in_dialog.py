"""Requests inside a dialog (BYE, re-INVITE, ACK, INFO, ...).

Only a dialog this proxy set up is served, only its two parties may send in it (on TCP/TLS
through their own connection), a request may only name the other party's Contact and carry
the route set the dialog recorded, and it goes where that party really is, whatever Route the
sender preloaded. The checks run before the dialog module sees the request: a refused request
changes no dialog and no money.

A party's BYE never reaches the dialog module at all: the call ends (its record written, a
prepaid call settled) when the other party accepts the BYE (2xx, Router.ksr_reply_bye). If it
refuses it, never answers, or the BYE cannot be sent, the proxy ends both legs itself, as at a
prepaid call's maximum (Calls.bye_failed), and the call is settled then.
"""

from __future__ import annotations

from kemi import replies, routing
from kemi.sip.calls import now_ms
from kemi.sip.media import Media
from kemi.sip.shell import Route, Sip, Var


class InDialog:
    def __init__(self, sip: Sip, media: Media, bye_unsent=None):
        self.sip = sip
        self.media = media
        self.bye_unsent = bye_unsent  # Calls.bye_failed: the proxy ends the call itself

    def route(self) -> None:
        sip = self.sip
        # FINISHED: the call ended (a BYE accepted, the proxy's own, a timeout); its dialog may
        # linger a second (Calls.bye_answered) or be on its way out (the module's DELETED state)
        if not sip.find_dialog() or sip.get(Var.FINISHED):
            if sip.is_ack():
                sip.relay_ack_of_transaction()  # the ACK of a negative reply: tm's, hop by hop
                return
            self.refuse(replies.NO_SUCH_DIALOG, "no dialog of ours")
            return
        if routing.topos_marker_forged(sip.topos_markers()):
            self.refuse(replies.TOPOS_HEADER_FORGED, f"it carries its own {routing.TOPOS_DIALOG_HEADER}")
            return
        split = sip.routes_beyond_us()
        if split is None:  # every dialog of ours carries our Record-Route
            self.refuse(replies.NOT_HERE, "not routed through this proxy")
            return
        own, routes = split
        # only the fields of the request's direction are read: each $dlg read is a locked lookup
        downstream = (sip.pv("$ft") or "") == (sip.dialog("from_tag") or "")
        sender = sip.get(Var.CALLER if downstream else Var.CALLEE)
        parties = routing.DialogParties(
            sender=sender, receiver=sip.get(Var.CALLEE if downstream else Var.CALLER),
            target=sip.dialog("to_contact" if downstream else "from_contact"),
            routes=sip.dialog("to_rs" if downstream else "from_rs"))
        connection = sip.connection() if sender and "#" in sender else None  # TCP/TLS phones only
        refused, next_hop = routing.in_dialog_verdict(parties, sip.source_address(), sip.pv("$ru") or "", routes,
                                                      connection, own)
        if refused is not None:
            self.refuse(refused, f"from {'caller' if downstream else 'callee'} {sender or '-'} "
                                 f"to {parties.receiver or '-'}")
            return
        if sip.is_method("BYE"):
            self.bye(next_hop, downstream)
            return
        deadline = sip.get(Var.DEADLINE_MS)
        if deadline:
            # whatever restarts the dialog's timer (the ACK does, even with timeout_noreset)
            # restarts it with the time left, never more
            sip.set(Var.DLG_TIMEOUT, max(1, -(-(int(deadline) - now_ms()) // 1000)))
        sip.manage_dialog()  # now the dialog sees it: a re-INVITE or an ACK refreshes it, ends nothing
        if not sip.loose_route():
            self.refuse(replies.NOT_HERE, "not routed through this proxy")
            return
        if self.forward(next_hop, downstream):
            sip.relay()

    def bye(self, next_hop: str, downstream: bool) -> None:
        """A party hangs up. The dialog module does not see the BYE (hold_dialog): the call goes on,
        and so does its billing, until the other party accepts it (Route.REPLY_BYE); a refusal or
        silence (Route.FAILURE_BYE), or a BYE that cannot be sent, has the proxy end the call."""
        sip = self.sip
        if not sip.hold_dialog():
            self.refuse(replies.NO_SUCH_DIALOG, "the dialog ended meanwhile")
            return
        if not sip.loose_route():
            self.refuse(replies.NOT_HERE, "not routed through this proxy")
            return
        if not self.forward(next_hop, downstream):
            return
        sip.on_reply(Route.REPLY_BYE)
        if not sip.relay(failure_route=Route.FAILURE_BYE) and self.bye_unsent is not None:
            self.bye_unsent("could not be sent")

    def forward(self, next_hop: str, downstream: bool) -> bool:
        sip = self.sip
        if sip.get(Var.CALLEE_CARRIER if downstream else Var.CALLER_CARRIER) == "1":
            # a carrier bills and shows identities from mid-call requests too (routing.TRUNK_HEADERS)
            sip.keep_only_headers(routing.IN_DIALOG_TRUNK_HEADERS)
        # next_hop is where that party's requests came from: through its NAT, whatever its Contact says
        sip.set_destination(next_hop)
        # False: a re-INVITE whose SDP rtpengine must not see, answered; the call goes on as it was
        return self.media.in_dialog()

    def refuse(self, answer, why: str) -> None:
        sip = self.sip
        ip, port = sip.source
        sip.log("notice", f"in-dialog {sip.method} from {ip}:{port} to {sip.pv('$ru')} refused "
                          f"({answer.code} {answer.reason}): {why}")
        if not sip.is_ack():  # an ACK is never answered
            sip.reply(answer)
