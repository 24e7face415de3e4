"""Incoming calls through the real proxy: DIDs, the Virtual Receptionist, virtual extensions.

SIPp plays the carrier calling in from 127.0.0.6:5060 (trunk carrier-in), the receptionist
media server on 127.0.0.3:5060, the outbound carrier on 127.0.0.2:5060, and the phones.
"""

from __future__ import annotations

import time

import pytest

from tests.harness import Sipp
from tests.sip.conftest import CARRIER_IN, PRIMARY, RECEPTION, header, ruri, trunk


def call_in(phones, dial: str, source=CARRIER_IN, company: str = "", caller: str = "+33698000001",
            hold_ms: int = 200):
    ip, port = source
    sipp = Sipp("inbound.xml", ["-s", caller, "-set", "from_domain", "carrier.example", "-set", "dial", dial,
                                "-set", "company", company, "-d", str(hold_ms)],
                phones.workdir, ip=ip, port=port)
    phones.running.append(sipp)
    return sipp.start(phones.target, timeout=30)


def receptionist(phones, scenario="answer.xml", *args) -> Sipp:
    ip, port = RECEPTION
    sipp = Sipp(scenario, list(args) or ["-set", "ring", "100"], phones.workdir, ip=ip, port=port)
    phones.running.append(sipp)
    return sipp.start(timeout=30)


@pytest.mark.parametrize("dialled", ["+33142685302", "0142685302"])
def test_did_rings_its_extension(phones, dialled):
    bruno = phones.registered(phones.phone("2002"))
    answering = phones.answer(bruno)
    call = call_in(phones, dialled).wait()
    assert call.final == (200, "OK"), call.log + call.stdout
    assert "BYE 200" in call.log
    assert "ANSWERED" in answering.wait().log


def test_did_of_unregistered_extension_is_480(phones):
    assert call_in(phones, "+33142685301").wait().final == (480, "Extension Not Registered")


def test_unknown_did_is_404(phones):
    assert call_in(phones, "+33142685399").wait().final == (404, "Number Not Assigned")


def test_untrusted_source_is_challenged_as_a_phone_and_rings_nobody(phones):
    # any domain is challenged (SECURITY.md, class 16): a carrier is a carrier by its address only
    bruno = phones.registered(phones.phone("2002"))
    ringing = phones.ring(bruno, timeout=4)
    from tests.sip.rawsip import Uac
    with Uac(phones.proxy, "127.0.0.9", 5060) as stranger:  # inbound.xml knows no 407
        call = stranger.invite("+33698000001", "carrier.example", None, "+33142685302")
    assert call.final == (407, "Proxy Authentication Required")
    assert ringing.wait().received("INVITE") == []


def test_did_to_receptionist_carries_company_and_did(phones):
    media = receptionist(phones)
    call = call_in(phones, "+33142685300").wait()
    assert call.final == (200, "OK"), call.log
    invite = media.wait().received("INVITE")[0]
    assert ruri(invite).startswith("sip:+33142685300@127.0.0.3:5060")
    assert header(invite, "X-Company") == "acme" and header(invite, "X-DID") == "+33142685300"


def test_unanswered_extension_falls_back_to_receptionist_after_ring_timeout(phones):
    denis = phones.registered(phones.phone("2004"))  # ring_timeout: 5
    ringing = phones.ring(denis)
    media = receptionist(phones)
    started = time.monotonic()
    call = call_in(phones, "+33142685304").wait()
    assert call.final == (200, "OK"), call.log
    assert time.monotonic() - started >= 5
    assert "CANCELLED" in ringing.wait().log
    assert header(media.wait().received("INVITE")[0], "X-DID") == "+33142685304"


def test_receptionist_302_to_an_extension_of_the_company_is_followed(phones):
    bruno = phones.registered(phones.phone("2002"))
    answering = phones.answer(bruno)
    media = receptionist(phones, "redirect.xml", "-set", "target", "sip:2002@acme.test")
    call = call_in(phones, "+33142685300").wait()
    assert call.final == (200, "OK"), call.log
    assert "INVITE acme +33142685300" in media.wait().log
    assert "ANSWERED" in answering.wait().log


@pytest.mark.parametrize("target", [
    "sip:+33612345678@127.0.0.2:5060",   # an external number through a trunk
    "sip:0612345678@acme.test",          # an external number in the company's domain
    "sip:2002@globex.test",              # another company's extension
    "sip:2002@198.51.100.7",             # a SIP URI elsewhere
])
def test_receptionist_302_anywhere_else_is_refused_and_never_dialled(phones, target):
    globex = phones.registered(phones.phone("2002", domain="globex.test"))
    listener = phones.answer(globex)
    carrier = trunk(phones, PRIMARY)
    receptionist(phones, "redirect.xml", "-set", "target", target)
    call = call_in(phones, "+33142685300").wait()
    assert call.final == (403, "Redirect Outside Company Refused")
    for peer in (carrier, listener):
        peer.stop()
        assert not peer.wait().received("INVITE")


def test_trusted_media_server_sends_caller_to_an_extension(phones):
    bruno = phones.registered(phones.phone("2002"))
    answering = phones.answer(bruno)
    call = call_in(phones, "2002", source=RECEPTION, company="acme").wait()
    assert call.final == (200, "OK"), call.log
    assert "ANSWERED" in answering.wait().log


def test_media_server_must_name_an_existing_company_extension(phones):
    assert call_in(phones, "2002", source=RECEPTION, company="nosuch").wait().final == (404, "Extension Not Found")


def test_company_header_from_a_trunk_is_ignored(phones):
    # a carrier cannot pick a company: it can only call our numbers
    assert call_in(phones, "2002", company="acme").wait().final == (404, "Number Not Assigned")


def test_virtual_extension_from_inside_forwards_with_diversion(phones):
    alice = phones.phone("2001")
    carrier = trunk(phones, PRIMARY)
    call = phones.call(alice, "2090").wait()
    assert call.final == (200, "OK"), call.log
    invite = carrier.wait().received("INVITE")[0]
    assert ruri(invite).startswith("sip:+33698765432@127.0.0.2:5060")
    assert "+33142685390" in header(invite, "Diversion")
    assert "+33142685301" in header(invite, "P-Asserted-Identity")  # the caller, not the extension


def test_virtual_extension_from_a_did_keeps_the_caller_id(phones):
    carrier = trunk(phones, PRIMARY)
    call = call_in(phones, "+33142685390", caller="+33698000001").wait()
    assert call.final == (200, "OK"), call.log
    invite = carrier.wait().received("INVITE")[0]
    assert ruri(invite).startswith("sip:+33698765432@")
    assert "+33698000001" in header(invite, "P-Asserted-Identity")
    assert "+33142685390" in header(invite, "Diversion")


def test_virtual_extension_to_a_prepaid_destination_obeys_the_prepaid_account(phones):
    alice = phones.phone("2001")
    assert phones.call(alice, "2091").wait().final == (403, "Prepaid Account Not Activated")
