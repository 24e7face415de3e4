"""Requests inside a dialog (BYE, re-INVITE, ACK, INFO, ...).

Only a dialog this proxy set up is served, only its two parties may send in it, a
request may only name the other party's Contact, and it goes where that party really
is, whatever Route the sender preloaded. The checks run before the dialog module sees
the request: a refused BYE ends nothing and stops no billing.
"""

from __future__ import annotations

from kemi import replies, routing
from kemi.sip.calls import now_ms
from kemi.sip.media import Media
from kemi.sip.shell import Sip, Var

DELETED = "5"  # $dlg(state) of a dialog that has ended


class InDialog:
    def __init__(self, sip: Sip, media: Media):
        self.sip = sip
        self.media = media

    def route(self) -> None:
        sip = self.sip
        if not sip.find_dialog() or sip.dialog("state") == DELETED:
            if sip.is_ack():
                sip.relay_ack_of_transaction()  # the ACK of a negative reply: tm's, hop by hop
                return
            self.refuse(replies.NO_SUCH_DIALOG, "no dialog of ours")
            return
        if routing.topos_marker_forged(sip.topos_markers()):
            self.refuse(replies.TOPOS_HEADER_FORGED, f"it carries its own {routing.TOPOS_DIALOG_HEADER}")
            return
        routes = sip.routes_beyond_us()
        if routes is None:  # every dialog of ours carries our Record-Route
            self.refuse(replies.NOT_HERE, "not routed through this proxy")
            return
        parties = routing.DialogParties(
            caller_tag=sip.dialog("from_tag") or "", caller=sip.get(Var.CALLER), callee=sip.get(Var.CALLEE),
            caller_target=sip.dialog("from_contact"), callee_target=sip.dialog("to_contact"),
            caller_routes=sip.dialog("from_rs"), callee_routes=sip.dialog("to_rs"))
        refused, next_hop = routing.in_dialog_verdict(parties, sip.pv("$ft") or "", sip.source_address(),
                                                      sip.pv("$ru") or "", routes)
        if refused is not None:
            self.refuse(refused, f"parties {parties.caller} / {parties.callee}")
            return
        deadline = sip.get(Var.DEADLINE_MS)
        if deadline:
            # whatever restarts the dialog's timer (the ACK does, even with timeout_noreset)
            # restarts it with the time left, never more
            sip.set(Var.DLG_TIMEOUT, max(1, -(-(int(deadline) - now_ms()) // 1000)))
        sip.manage_dialog()  # now the dialog sees it: BYE ends it, re-INVITE refreshes it
        if not sip.loose_route():
            self.refuse(replies.NOT_HERE, "not routed through this proxy")
            return
        towards_callee = (sip.pv("$ft") or "") == parties.caller_tag
        if sip.get(Var.CALLEE_CARRIER if towards_callee else Var.CALLER_CARRIER) == "1":
            # a carrier bills and shows identities from mid-call requests too (routing.TRUNK_HEADERS)
            sip.keep_only_headers(routing.IN_DIALOG_TRUNK_HEADERS)
        # next_hop is where that party's requests came from: through its NAT, whatever its Contact says
        sip.set_destination(next_hop)
        self.media.in_dialog()
        sip.relay()

    def refuse(self, answer, why: str) -> None:
        sip = self.sip
        ip, port = sip.source
        sip.log("notice", f"in-dialog {sip.method} from {ip}:{port} to {sip.pv('$ru')} refused "
                          f"({answer.code} {answer.reason}): {why}")
        if not sip.is_ack():  # an ACK is never answered
            sip.reply(answer)
