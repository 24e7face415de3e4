"""inbound: trunk DIDs, the receptionist, media-server INVITEs and the 3xx rule (fake KSR)."""

import pytest

from kemi import records
from kemi.sip.shell import Route, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def from_trunk(dialled: str, sport: int = 5060) -> FakeKSR:
    return FakeKSR("INVITE", f"sip:{dialled}@127.0.0.1", src="127.0.0.2", sport=sport,
                   from_uri="sip:+33612345678@carrier.example")


def test_a_did_rings_its_extension_and_is_recorded_as_incoming(world: World):
    ksr = from_trunk("+33142685302")
    ksr.registered["sip:2002@acme.test"] = 1
    world.request(ksr)
    assert ksr.lookups == ["sip:2002@acme.test"] and ksr.relay is not None
    rec = records.decode(ksr.vars[Var.RECORD])
    assert (rec["direction"], rec["from"], rec["to"]) == ("inbound", "+33612345678", "+33142685302")
    assert ksr.challenges == [] and ksr.digest_checks == []  # trunks are trusted by address


def test_a_number_that_is_not_ours_gets_404(world: World):
    ksr = world.request(from_trunk("+33199999999"))
    assert ksr.reply == (404, "Number Not Assigned") and ksr.relays == []


def test_a_did_of_the_receptionist_goes_to_the_media_server_with_the_company(world: World):
    ksr = world.request(from_trunk("0142685300"))  # national form resolves too
    assert ksr.relay.ruri == "sip:+33142685300@127.0.0.3:5060;transport=udp"
    assert ksr.relay.failure_route == Route.FAILURE_RECEPTIONIST and ksr.relay.branch_route == Route.BRANCH_MEDIA
    assert ksr.vars[Var.MEDIA_HEADERS] == "X-Company: acme\nX-DID: +33142685300"
    assert ksr.vars[Var.COMPANY] == "acme"


def test_an_unregistered_extension_with_a_fallback_goes_to_the_receptionist(world: World):
    ksr = world.request(from_trunk("+33142685301"))
    assert ksr.relay.ruri == "sip:+33142685301@127.0.0.3:5060;transport=udp"


def test_a_registered_extension_with_a_fallback_arms_it(world: World):
    ksr = from_trunk("+33142685301")
    ksr.registered["sip:2001@acme.test"] = 1
    world.request(ksr)
    assert ksr.relay.failure_route == Route.FAILURE_EXTENSION
    assert ksr.vars[Var.FALLBACK] == "reception@udp:127.0.0.3:5060" and ksr.vars[Var.DID] == "+33142685301"


def test_a_did_whose_tls_phones_cannot_be_reached_goes_to_the_receptionist(world: World):
    ksr = from_trunk("+33142685301")
    ksr.registered["sip:2001@acme.test"] = 1
    ksr.bindings["sip:2001@acme.test"] = ["sip:2001@127.0.0.30:40312;transport=tls"]
    ksr.request["$du"] = "sip:127.0.0.30:40312;transport=tls"  # the registration's received
    ksr.unsendable = 1  # the phone's connection is gone (and nothing listens at its old port)
    world.request(ksr)
    assert ksr.armed["keep_unsent"] == 1 and ksr.replies == [] and not ksr.no_connect
    assert [r.ruri for r in ksr.relays] == ["sip:+33142685301@127.0.0.3:5060;transport=udp"]
    assert ksr.relay.failure_route == Route.FAILURE_RECEPTIONIST and ksr.relay.dst is None


def test_a_did_whose_tls_phone_is_reached_rings_it_with_the_fallback_armed(world: World):
    ksr = from_trunk("+33142685301")
    ksr.registered["sip:2001@acme.test"] = 1
    ksr.bindings["sip:2001@acme.test"] = ["sip:2001@127.0.0.30:40312;transport=tls"]
    world.request(ksr)
    assert [r.ruri for r in ksr.relays] == ["sip:2001@127.0.0.30:40312;transport=tls"]
    assert ksr.relay.failure_route == Route.FAILURE_EXTENSION and ksr.replies == []


@pytest.mark.parametrize("received", ["sip:127.0.0.30:40312;transport=tls", "sip:198.51.100.2:20411"])
def test_the_receptionist_after_a_phone_gets_the_invite_not_the_phones_connection(world: World, received):
    """The failure route starts from the request as tm cloned it at the phones' relay: the
    lookup's destination (a TLS phone's connection, a NATed phone's binding), forced socket and
    branch flags must not carry over to the receptionist's branch."""
    ksr = FakeKSR()
    ksr.vars.update({Var.FALLBACK: "reception@udp:127.0.0.3:5060", Var.COMPANY: "acme", Var.DID: "+33142685301"})
    ksr.request["$du"] = received
    ksr.vars["$fs"] = "tls:127.0.0.1:5061"
    ksr.bflags = {6, 7}  # the contact's: behind a NAT, pinged
    ksr.failure_code = 486
    world.router(ksr).ksr_failure_extension(None)
    (relay,) = ksr.relays
    assert relay.ruri == "sip:+33142685301@127.0.0.3:5060;transport=udp"
    assert (relay.dst, relay.socket, relay.bflags) == (None, None, frozenset())
    assert relay.branch_route == Route.BRANCH_MEDIA and not ksr.no_connect


def test_no_answer_from_the_extension_falls_back_busy_too_but_not_a_decline(world: World):
    for code, falls_back in ((408, True), (480, True), (486, True), (603, False)):
        ksr = FakeKSR()
        ksr.vars.update({Var.FALLBACK: "udp:127.0.0.3:5060", Var.COMPANY: "acme", Var.DID: "+33142685301"})
        ksr.failure_code = code
        world.router(ksr).ksr_failure_extension(None)
        assert (ksr.relay is not None) == falls_back, code


def redirect(world: World, contact: str) -> FakeKSR:
    ksr = FakeKSR()
    ksr.vars.update({Var.COMPANY: "acme", Var.DID: "+33142685300", Var.MEDIA_HEADERS: "X-Company: acme"})
    ksr.failure_code, ksr.failure_reply_headers = 302, {"Contact": contact}
    ksr.registered["sip:2002@acme.test"] = 1
    world.router(ksr).ksr_failure_receptionist(None)
    return ksr


def test_the_receptionist_may_send_the_caller_to_an_extension_of_the_same_company(world: World):
    ksr = redirect(world, "<sip:2002@acme.test>")
    assert ksr.lookups == ["sip:2002@acme.test"] and ksr.relay is not None
    assert Var.MEDIA_HEADERS not in ksr.vars  # the phone does not get the media server's headers


def test_a_redirect_anywhere_else_is_refused(world: World):
    for contact in ("<sip:+33612345678@acme.test>", "<sip:2001@globex.test>", "<sip:2002@127.0.0.2:5060>",
                    "<sip:2999@acme.test>"):
        ksr = redirect(world, contact)
        assert ksr.reply == (403, "Redirect Outside Company Refused") and ksr.relays == [], contact


def test_the_media_server_names_company_and_extension(world: World):
    ksr = FakeKSR("INVITE", "sip:2002@127.0.0.1", src="127.0.0.3", sport=5060,
                  headers=[("X-Company", "acme"), ("X-DID", "+33142685300")])
    ksr.registered["sip:2002@acme.test"] = 1
    world.request(ksr)
    assert ksr.lookups == ["sip:2002@acme.test"] and "X-Company" in ksr.removed_headers
    ksr = FakeKSR("INVITE", "sip:2002@127.0.0.1", src="127.0.0.3", sport=5060, headers=[("X-Company", "globex")])
    assert world.request(ksr).reply == (404, "Extension Not Found")


def test_only_trusted_addresses_are_trunks(world: World):
    ksr = world.request(from_trunk("+33142685302", sport=5070))  # the trunk's IP, another port
    # a phone's call as far as the proxy knows: challenged (any domain is), never rung
    assert ksr.challenges == [("carrier.example", 1)] and ksr.lookups == [] and ksr.relays == []
