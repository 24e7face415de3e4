"""Carrier trunks: send a call to them in priority order, and fail over to the next one.

Outbound, prepaid and emergency calls all leave through here. The trunks still to
try travel with the transaction (Var.TRUNKS_LEFT), so failover works in whichever
process the failure route runs.
"""

from __future__ import annotations

import time

from kemi import metrics, replies, routing
from kemi.model import Trunk
from kemi.settings import Settings
from kemi.sip.calls import refused
from kemi.sip.shell import Metric, Route, Sip, Timers, Var


def now_ms() -> int:
    return int(time.time() * 1000)


class Trunks:
    def __init__(self, sip: Sip, settings: Settings):
        self.sip = sip
        self.settings = settings

    def dial(self, user: str, trunks: list[Trunk], headers: list[str], relay_now: bool = True,
             emergency: bool = False) -> bool:
        """Add the proxy's headers and dial user on the first trunk (relay_now False: keep the
        trunks for relay_next, after an announcement); False when there is none (the caller
        has been answered)."""
        if not trunks:
            self.sip.reply(replies.NO_TRUNK)
            refused(self.sip, replies.NO_TRUNK, f"no trunk for a call to {user}: provision one (trunks: in the "
                                                f"provisioning file)", "err")
            return False
        # Only headers SIP needs go to a carrier (routing.TRUNK_HEADERS): whatever identity, charging,
        # diversion or priority a phone or an upstream carrier put in is gone before ours are added.
        self.sip.keep_only_headers(routing.TRUNK_HEADERS)
        self.sip.append_headers(headers)
        self.sip.set(Var.CALLEE_CARRIER, "1")  # the dialog's later requests to the callee are filtered too
        self.sip.set(Var.DIAL_USER, user)
        if emergency:
            self.sip.set(Var.EMERGENCY, "1")
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
        sent = now_ms()
        self.sip.set(Var.TRUNK_NOW, f"{sent} {trunk.label}")
        self.sip.set(Var.PDD_FROM, str(sent))  # the post-dial delay, observed at its first 180/183/200
        self.sip.relay(f"sip:{user}@{trunk.host}:{trunk.port};transport={trunk.transport}", Route.FAILURE_TRUNK,
                       Timers(120000, self.settings.trunk_timeout_ms), to_phones=False)

    def failed(self) -> None:
        """Failure route of a trunk branch: the next trunk, or the caller gets the answer."""
        sip = self.sip
        code, replied = sip.status_code(), sip.branch_replied()
        if sip.canceled():
            return  # the caller hung up: nothing failed
        sent, _, trunk = (sip.get(Var.TRUNK_NOW) or "").partition(" ")
        waited = now_ms() - int(sent) if sent.isdigit() else 0
        outcome = routing.trunk_outcome(trunk or "?", code, replied, waited)
        tried = "; ".join(filter(None, [sip.get(Var.TRUNKS_TRIED), outcome]))
        sip.set(Var.TRUNKS_TRIED, tried)
        rest = routing.decode_peers(sip.get(Var.TRUNKS_LEFT))
        # a 408 after ringing is the callee not answering, not the trunk failing
        trunk_failed = routing.trunk_failed(code, replied=replied)
        if trunk_failed:
            sip.count(Metric.TRUNK_FAILOVERS, metrics.trunk_label(trunk))
        if trunk_failed and rest:
            sip.log("warn", f"call-id {sip.call_id} to {sip.get(Var.DIAL_USER)}: {outcome}: trying {rest[0].label}")
            self.relay_next()
            return
        if trunk_failed:
            sip.set(Var.TRUNKS_FAILED, "1")
        self.log_last_failure(trunk_failed, tried)
        if trunk_failed and code == 503:
            # RFC 3261 16.7: a proxy does not pass a 503 on (it would say the proxy itself is down)
            sip.reply_in_failure(replies.TRUNKS_UNAVAILABLE)

    def log_last_failure(self, trunk_failed: bool, tried: str) -> None:
        """The call's last line, and its count: an emergency call that ends here reached nobody,
        whatever the reason; another call failed when its last trunk did (not when the callee said no)."""
        sip = self.sip
        user = sip.get(Var.DIAL_USER)
        if sip.get(Var.EMERGENCY):
            sip.count(Metric.CALLS_FAILED, metrics.EMERGENCY)
            # whatever the reason, an emergency call that ends here did not reach anyone
            sip.log("crit", f"EMERGENCY CALL {user} call-id {sip.call_id} from {sip.source[0]}:{sip.source[1]} "
                            f"FAILED on every route: {tried}")
        elif trunk_failed:
            sip.count(Metric.CALLS_FAILED, metrics.EXTERNAL)
            sip.log("err", f"call-id {sip.call_id} to {user}: every trunk failed: {tried}")
        else:
            sip.log("info", f"call-id {sip.call_id} to {user}: not connected: {tried}")
