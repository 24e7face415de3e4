"""Calls our members place: the numbering plan decides, then an extension rings, the call is
refused, or it leaves through the trunks (paid from the Prepaid Account when the plan says so).

A virtual extension's forwarding is an outbound call too, under the same country rules.
"""

from __future__ import annotations

from kemi import numbering, replies, routing
from kemi.model import EXTENSION_RE, Company, Extension, MediaServer, Trunk
from kemi.numbering import Decision
from kemi.sip.calls import Calls
from kemi.sip.phones import Phones
from kemi.sip.prepaid_calls import PrepaidCalls
from kemi.sip.shell import Sip
from kemi.sip.trunks import Trunks
from kemi.store import Directory
from kemi.store.directory import CallContext


class Outbound:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, trunks: Trunks, phones: Phones,
                 prepaid: PrepaidCalls):
        self.sip = sip
        self.directory = directory
        self.calls = calls
        self.trunks = trunks
        self.phones = phones
        self.prepaid = prepaid

    def from_phone(self, dialled: str, co: str | None) -> None:
        """An INVITE from one of our phones (not an emergency number): authenticate, then decide."""
        ctx = self.phones.authenticate("$fd", dialled if EXTENSION_RE.fullmatch(dialled) else None, co=co)
        if ctx is None:
            return
        self.sip.consume_credentials()
        decision = numbering.classify(dialled, numbering.Policy(ctx.company.allow_special), ctx.overrides)
        number = routing.caller_number(ctx.company, ctx.caller)
        if decision.category == "internal":
            self.internal(ctx, dialled, decision, number)
            return
        rec = self.calls.record(ctx.company.id, ctx.caller.number, number, decision.e164 or decision.dialled,
                                decision.category, decision.billing, "outbound")
        refused = routing.refusal(decision)
        if refused is not None:
            self.calls.refuse(refused, rec, detail=f"{ctx.company.id}/{ctx.caller.number} dialled {dialled!r}: "
                                            f"{decision.category}/{decision.billing}")
            return
        headers = [h for h in [routing.pai_header(number, ctx.caller.name, self.sip.local_ip)] if h]
        self.external(ctx.company, decision, routing.trunks_for(ctx.trunks, False), headers, rec, ctx.media)

    def internal(self, ctx: CallContext, dialled: str, decision: Decision, number: str | None) -> None:
        callee = ctx.callee
        if callee is not None and callee.type == "virtual":
            self.forward(ctx.company, callee, callee.did or ctx.company.main_number, number, ctx.trunks,
                         ctx.overrides, "internal")
            return
        rec = self.calls.record(ctx.company.id, ctx.caller.number, number or ctx.caller.number, dialled,
                                decision.category, decision.billing, "internal")
        # The same allow-list as towards a carrier: a phone's identity, charging and diversion claims
        # (RPID, P-Charge-Info, Diversion, ...) mean nothing to another phone, and would reach a
        # carrier as the proxy's word wherever that phone's registration really leads.
        self.sip.keep_only_headers(routing.TRUNK_HEADERS)
        self.phones.ring(ctx.company, callee, rec)

    def external(self, company: Company, decision: Decision, trunks: list[Trunk], headers: list[str], rec: dict,
                 media: tuple[MediaServer, ...] = ()) -> None:
        """An external call: straight to the trunks, or through the Prepaid Account first."""
        target = decision.e164 or decision.dialled
        if decision.billing != "prepaid":
            if self.calls.track(rec):
                self.trunks.dial(target, trunks, headers)
            return
        held = self.prepaid.reserve(company, decision, rec)
        if held is None:
            return
        if not self.calls.track(rec):
            return  # refused: Calls.refuse settled the reservation at nothing
        if self.trunks.dial(target, trunks, headers, relay_now=False) and \
                not self.prepaid.announce(company, held, media):
            self.trunks.relay_next()

    def forward(self, company: Company, ext: Extension, diversion: str | None, caller: str | None,
                trunks: tuple[Trunk, ...], overrides, direction: str) -> None:
        """A virtual extension: a call to its forwarding number, by the same country rules as a user's call."""
        decision = numbering.classify(ext.forward or "", numbering.Policy(company.allow_special), overrides)
        rec = self.calls.record(company.id, ext.number, caller, decision.e164, decision.category, decision.billing,
                                direction)
        refused = routing.refusal(decision)
        if refused is None and self.directory.inbound(decision.e164).did is not None:
            refused = replies.FORWARD_LOOP
        if refused is not None:
            self.calls.refuse(refused, rec, detail=f"forward of {company.id}/{ext.number} to {ext.forward}")
            return
        host = self.sip.local_ip
        headers = [routing.diversion_header(diversion, host)] if diversion else []
        pai = routing.pai_header(caller, None, host)
        self.external(company, decision, routing.trunks_for(trunks, False), headers + ([pai] if pai else []), rec)
