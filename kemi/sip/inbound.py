"""Calls that come in: from a trunk to one of our numbers (DIDs), from the Virtual Receptionist
(a trusted media server) to an extension, and the receptionist's redirects (3xx).

A DID rings its extension, or the receptionist answers; a virtual extension forwards. A
receptionist may only send the caller to an extension of the same company.
"""

from __future__ import annotations

from kemi import numbering, replies, routing
from kemi.model import EXTENSION_RE, RECEPTIONIST
from kemi.sip.calls import Calls, refused
from kemi.sip.outbound import Outbound
from kemi.sip.phones import Phones
from kemi.sip.shell import Sip, Var
from kemi.store import Directory


class Inbound:
    def __init__(self, sip: Sip, directory: Directory, calls: Calls, phones: Phones, outbound: Outbound):
        self.sip = sip
        self.directory = directory
        self.calls = calls
        self.phones = phones
        self.outbound = outbound

    def incoming(self, company_id: str, extension: str | None, caller: str | None, to: str | None) -> dict:
        return self.calls.record(company_id, extension, caller, to, "incoming", "included", "inbound")

    def from_trunk(self, dialled: str) -> None:
        sip = self.sip
        e164 = numbering.classify(dialled).e164  # +E.164 and national forms resolve alike
        inbound = self.directory.inbound(e164) if e164 else None
        if inbound is None or inbound.did is None or inbound.company is None:
            self.calls.refuse(replies.UNKNOWN_NUMBER, None,
                              detail=f"call from trunk {sip.source[0]} to {dialled!r}: not one of our numbers")
            return
        did, company = inbound.did, inbound.company
        # Set before the dialog exists: the dialog module takes it over when the call creates it.
        sip.set(Var.CALLER_CARRIER, "1")  # requests back to the carrier inside the call get the allow-list
        caller = routing.external_caller(sip.pv("$fU"))
        if did.target == RECEPTIONIST:
            if not self.calls.track(self.incoming(company.id, None, caller, did.number)):
                return
            self.calls.to_receptionist(company.id, did.number, inbound.receptionist)
            return
        ext = inbound.extension
        if ext is None:
            self.calls.refuse(replies.EXTENSION_NOT_FOUND, None, level="err",
                              detail=f"DID {did.number} points at missing extension {did.target} of {company.id}: "
                                     f"reload the provisioning")
            return
        if ext.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.outbound.forward(company, ext, did.number, caller, trunks, overrides, "inbound")
            return
        fallback = inbound.receptionist if did.fallback == RECEPTIONIST else None
        self.phones.ring(company, ext, self.incoming(company.id, ext.number, caller, did.number), did.number, fallback)

    def from_media_server(self, dialled: str) -> None:
        """A trusted media server (the receptionist) sends the caller to an extension of a named company."""
        sip = self.sip
        co = sip.header("X-Company") or ""
        inbound = self.directory.company_view(co, dialled) if EXTENSION_RE.fullmatch(dialled) and co else None
        if inbound is None or inbound.company is None or inbound.extension is None:
            self.calls.refuse(replies.EXTENSION_NOT_FOUND, None, level="notice",
                              detail=f"media server {sip.source[0]} asked for {dialled!r} of company {co!r}: "
                                     f"no such extension")
            return
        did = sip.header("X-DID")
        sip.remove_headers(routing.PRIVATE_HEADERS)  # read above; phones and carriers get only the proxy's own
        ext = inbound.extension
        caller = routing.external_caller(sip.pv("$fU"))
        if ext.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.outbound.forward(inbound.company, ext, did or ext.did or inbound.company.main_number,
                                  caller, trunks, overrides, "inbound")
            return
        self.phones.ring(inbound.company, ext, self.incoming(co, ext.number, caller, ext.number))

    # -- failure routes -----------------------------------------------------------------------
    def extension_failed(self) -> None:
        """An extension with a fallback did not answer (or is busy, or unreachable)."""
        if self.sip.status_code() in routing.FALLBACK_CODES:
            (server,) = routing.decode_peers(self.sip.get(Var.FALLBACK))
            self.calls.to_receptionist(self.sip.get(Var.COMPANY), self.sip.get(Var.DID) or None, server)

    def receptionist_redirected(self) -> None:
        sip = self.sip
        code = sip.status_code()
        if not 300 <= code < 400:
            return  # the receptionist's failure goes back to the caller as it is
        co = sip.get(Var.COMPANY)
        contact = sip.reply_header("Contact")
        company = self.directory.company(co)
        number = routing.redirect_target(contact, company.domain if company else "", sip.local_hosts())
        inbound = self.directory.company_view(co, number) if number else None
        if inbound is None or inbound.extension is None:
            sip.reply_in_failure(replies.REDIRECT_REFUSED)
            refused(sip, replies.REDIRECT_REFUSED, f"receptionist of {co} redirected it to {contact!r}: only "
                                                   f"extensions of the same company are followed", "warn")
            return
        self.calls.leave_media()
        if inbound.extension.type == "virtual":
            trunks, overrides = self.directory.routes()
            self.outbound.forward(inbound.company, inbound.extension, sip.get(Var.DID) or inbound.company.main_number,
                                  routing.external_caller(sip.pv("$fU")), trunks, overrides, "inbound")
            return
        self.phones.ring(inbound.company, inbound.extension, None)
