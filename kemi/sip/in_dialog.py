"""Requests inside a dialog (BYE, re-INVITE, ACK, INFO, ...): they follow the Record-Route
the proxy put in at set-up."""

from __future__ import annotations

from kemi import replies
from kemi.sip.shell import Sip


class InDialog:
    def __init__(self, sip: Sip):
        self.sip = sip

    def route(self) -> None:
        sip = self.sip
        sip.manage_dialog()  # BYE and re-INVITE reach the dialog (call records, max duration)
        if sip.loose_route():
            sip.relay()
            return
        if sip.is_ack() and sip.relay_ack_of_transaction():
            return
        if not sip.is_ack():
            sip.reply(replies.NOT_HERE)
