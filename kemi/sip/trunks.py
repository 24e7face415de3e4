"""Carrier trunks: send a call to them in priority order, and fail over to the next one.

Outbound, prepaid and emergency calls all leave through here. The trunks still to
try travel with the transaction (Var.TRUNKS_LEFT), so failover works in whichever
process the failure route runs.
"""

from __future__ import annotations

from kemi import replies, routing
from kemi.model import Trunk
from kemi.settings import Settings
from kemi.sip.shell import Route, Sip, Timers, Var


class Trunks:
    def __init__(self, sip: Sip, settings: Settings):
        self.sip = sip
        self.settings = settings

    def dial(self, user: str, trunks: list[Trunk], headers: list[str], relay_now: bool = True) -> bool:
        """Add the proxy's headers and dial user on the first trunk (relay_now False: keep the
        trunks for relay_next, after an announcement); False when there is none (the caller
        has been answered)."""
        if not trunks:
            self.sip.log("err", f"no trunk for a call to {user}: provision one (trunks: in the provisioning file)")
            self.sip.reply(replies.NO_TRUNK)
            return False
        # Only headers SIP needs go to a carrier (routing.TRUNK_HEADERS): whatever identity, charging,
        # diversion or priority a phone or an upstream carrier put in is gone before ours are added.
        self.sip.keep_only_headers(routing.TRUNK_HEADERS_PATTERN)
        self.sip.append_headers(headers)
        self.sip.set(Var.CALLEE_CARRIER, "1")  # the dialog's later requests to the callee are filtered too
        self.sip.set(Var.DIAL_USER, user)
        if relay_now:
            self.relay(user, trunks)
        else:
            self.sip.set(Var.TRUNKS_LEFT, routing.encode_peers(trunks))
        return True

    def relay_next(self) -> None:
        """Relay to the first trunk left (failure routes), arming failover to the rest."""
        self.relay(self.sip.get(Var.DIAL_USER), routing.decode_peers(self.sip.get(Var.TRUNKS_LEFT)))

    def relay(self, user: str, trunks: list) -> None:
        trunk, rest = trunks[0], trunks[1:]
        self.sip.set(Var.TRUNKS_LEFT, routing.encode_peers(rest))
        self.sip.relay(f"sip:{user}@{trunk.host}:{trunk.port};transport={trunk.transport}", Route.FAILURE_TRUNK,
                       Timers(120000, self.settings.trunk_timeout_ms))

    def failed(self) -> None:
        """Failure route of a trunk branch: the next trunk, or the caller gets the answer."""
        code = self.sip.status_code()
        rest = routing.decode_peers(self.sip.get(Var.TRUNKS_LEFT))
        # a 408 after ringing is the callee not answering, not the trunk failing
        if not routing.trunk_failed(code, replied=self.sip.branch_replied()):
            return
        if rest:
            self.sip.log("warn", f"trunk answered {code} for call-id {self.sip.call_id}: trying {rest[0].uri}")
            self.relay_next()
        elif code == 503:
            # RFC 3261 16.7: a proxy does not pass a 503 on (it would say the proxy itself is down)
            self.sip.reply_in_failure(replies.TRUNKS_UNAVAILABLE)
