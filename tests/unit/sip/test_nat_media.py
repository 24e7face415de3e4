"""NAT traversal and media anchoring in the routes: what a phone behind a NAT may register, and
what every connected call asks of rtpengine (fake KSR; the real thing: tests/sip/test_nat.py)."""

from kemi import edge, replies
from kemi.model import digest_ha1
from kemi.sip import media
from kemi.sip.shell import NAT_BFLAG, SIPPING_BFLAG, Route, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import PASSWORD, World

PUBLIC = ("198.51.100.2", 40012)  # the office router's public address and the port it mapped


def register(contact: str, nated: bool, src=PUBLIC) -> FakeKSR:
    ksr = FakeKSR("REGISTER", "sip:acme.test", from_uri="sip:2001@acme.test", auth_user="2001",
                  src=src[0], sport=src[1], headers=[("Contact", contact)])
    ksr.credentials_realm = "acme.test"
    ksr.good_ha1 = digest_ha1("2001", "acme.test", PASSWORD)
    ksr.nated = nated
    return ksr


def test_every_request_is_answered_at_its_source_port(world: World):
    assert world.request(FakeKSR("OPTIONS", "sip:127.0.0.1:5060")).rport_forced


def test_a_phone_behind_a_nat_is_saved_with_its_source_as_received_and_pinged(world: World):
    ksr = world.request(register("<sip:2001@192.168.50.10:5060>", nated=True))
    assert ksr.saved and ksr.replies == []
    assert ksr.nat_registered == 1 and ksr.bflags == {NAT_BFLAG, SIPPING_BFLAG}


def test_a_phone_at_its_own_public_address_is_saved_as_it_is_and_not_pinged(world: World):
    ksr = world.request(register(f"<sip:2001@{PUBLIC[0]}:{PUBLIC[1]}>", nated=False, src=PUBLIC))
    assert ksr.saved and ksr.nat_registered == 0 and ksr.bflags == set()


def test_a_private_contact_without_a_nat_on_the_way_is_still_refused(world: World):
    ksr = world.request(register("<sip:2001@192.168.50.10:5060>", nated=False))
    assert ksr.replies == [(replies.CONTACT_NOT_SOURCE.code, replies.CONTACT_NOT_SOURCE.reason)]
    assert not ksr.saved and ksr.nat_registered == 0


def test_behind_a_nat_a_public_address_that_is_not_the_source_is_refused(world: World):
    # somebody else's address: a NAT never explains that
    ksr = world.request(register("<sip:2001@203.0.113.9:5060>", nated=True))
    assert ksr.replies == [(403, replies.CONTACT_NOT_SOURCE.reason)] and not ksr.saved


def test_behind_a_nat_the_private_contact_must_keep_the_transport_it_came_over(world: World):
    ksr = world.request(register("<sip:2001@192.168.50.10:5060;transport=tcp>", nated=True))
    assert ksr.replies == [(403, replies.CONTACT_NOT_SOURCE.reason)] and not ksr.saved


def test_private_ranges_are_those_nathelper_tests():
    assert all(edge.is_private(ip) for ip in ("10.1.2.3", "172.31.0.1", "192.168.50.10", "100.64.0.7"))
    assert not any(edge.is_private(ip) for ip in ("172.32.0.1", "198.51.100.2", "127.0.0.1", "phone.example"))


def test_a_call_offers_its_sdp_to_rtpengine_before_it_is_relayed(world: World):
    ksr = world.phone_invite("0145678901")
    world.request(ksr)
    # held back until the answer: rtpengine knows no address for the callee's side yet
    assert ksr.media_ops == [("offer", media.PHONE_LOCKED), ("block", "")] and ksr.relays
    assert ksr.armed["on_reply"] == Route.REPLY_MEDIA
    assert ksr.vars[Var.MEDIA] == media.HELD and ksr.vars[Var.DLG_MEDIA] == "1"


def test_rtpengine_down_refuses_a_call_with_503_and_records_it(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.media_up = False
    world.request(ksr)
    assert ksr.replies == [(503, "Media Relay Unavailable")] and ksr.relays == []
    assert "Retry-After: 10" in ksr.reply_headers
    assert ksr.dialog_managed == 0  # nothing to end later: no dialog, no record-route
    assert [r["disposition"] for r in world.ledger.records] == ["refused-503"]
    assert any("rtpengine did not answer" in line for line in ksr.logged("err"))


def test_rtpengine_down_a_prepaid_call_releases_its_reservation(world: World):
    from kemi import money
    world.ledger.rates["+4915"] = money.Rate("+4915", 60)
    world.ledger.balance = 500
    ksr = world.phone_invite("004915112345678")
    ksr.media_up = False
    world.request(ksr)
    assert ksr.replies == [(503, "Media Relay Unavailable")] and world.ledger.reservations == {}
    assert world.ledger.settled and world.ledger.settled[0][1] == 0


def test_rtpengine_down_an_emergency_call_still_goes_out_unanchored(world: World):
    ksr = world.phone_invite("112")
    ksr.media_up = False
    world.request(ksr)
    assert ksr.relay.ruri == "sip:112@127.0.0.5:5060;transport=udp" and ksr.replies == []
    # the offer rtpengine may have taken after the proxy stopped waiting is deleted at once
    assert ksr.media_ops == [("offer", media.PHONE_LOCKED), ("delete", "")] and Var.DLG_MEDIA not in ksr.vars
    assert any("without media anchoring" in line for line in ksr.logged("crit"))


def test_an_invite_without_sdp_gets_its_offer_from_the_reply(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.sdp = False
    world.request(ksr)
    assert ksr.media_ops == [] and ksr.vars[Var.MEDIA] == media.LATE and ksr.relays


def reply(world: World, status: int, mode: str | None = media.OFFERED, sdp=True) -> FakeKSR:
    ksr = FakeKSR("INVITE", "sip:0145678901@acme.test")
    ksr.vars["$rs"] = status
    if mode:
        ksr.vars[Var.MEDIA] = mode
    ksr.sdp = sdp
    world.router(ksr).ksr_reply_media(None)
    return ksr


def test_early_media_and_the_answer_go_through_rtpengine(world: World):
    assert reply(world, 183).media_ops == [("answer", media.PHONE_LOCKED)]
    assert reply(world, 200).media_ops == [("answer", media.PHONE_LOCKED)]
    assert reply(world, 200, media.LATE).media_ops == [("offer", media.PHONE_LOCKED)]
    assert reply(world, 180, sdp=False).media_ops == [] and reply(world, 486).media_ops == []
    # the first answer releases a call held back since its offer, once
    held = reply(world, 183, media.HELD)
    assert held.media_ops == [("answer", media.PHONE_LOCKED), ("unblock", "")]
    assert held.vars[Var.MEDIA] == media.OFFERED


def test_a_reply_rtpengine_refuses_is_passed_on_and_logged(world: World):
    ksr = FakeKSR("INVITE")
    ksr.vars.update({"$rs": 200, Var.MEDIA: media.OFFERED})
    ksr.media_up = False
    world.router(ksr).ksr_reply_media(None)
    assert any("did not take its SDP" in line for line in ksr.logged("err"))
