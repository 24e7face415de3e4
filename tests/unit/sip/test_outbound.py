"""outbound: the numbering plan's decision carried out (fake KSR)."""

from kemi.routing import PRIVATE_HEADERS
from kemi.sip.shell import Route, Var
from tests.unit.sip.conftest import World


def test_french_landline_goes_to_the_first_trunk_with_the_proxys_identity(world: World):
    ksr = world.request(world.phone_invite("0145678901"))
    relay = ksr.relay
    assert relay.ruri == "sip:+33145678901@127.0.0.2:5060;transport=udp"
    assert relay.failure_route == Route.FAILURE_TRUNK and relay.timers == (120000, 3000)
    assert relay.headers == ['P-Asserted-Identity: "Alice Martin" <sip:+33142685301@127.0.0.1;user=phone>']
    assert set(PRIVATE_HEADERS) <= set(ksr.removed_headers)  # the phone's own claims never reach the trunk
    assert ksr.vars[Var.TRUNKS_LEFT] == "carrier-b@udp:127.0.0.4:5060"  # failover
    assert '"billing":"included"' in ksr.vars[Var.RECORD] and ksr.dialog_managed == 1


def test_premium_number_without_special_numbers_is_refused_and_recorded(world: World):
    ksr = world.request(world.phone_invite("0899123456"))
    code, reason = ksr.reply
    assert code == 403 and reason and ksr.relays == []
    assert world.ledger.records[0]["disposition"] == "refused-403"


def test_incomplete_number_gets_484(world: World):
    ksr = world.request(world.phone_invite("01456"))
    assert ksr.reply == (484, "Address Incomplete") and ksr.relays == []


def test_no_outbound_trunk_gets_503_no_route(world: World):
    world.directory.trunks = ()
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply == (503, "No Route To Destination") and ksr.relays == []
    assert any("no trunk" in line for line in ksr.logged("err"))


def test_virtual_extension_forwards_with_diversion_from_its_did(world: World):
    ksr = world.request(world.phone_invite("2099"))
    relay = ksr.relay
    assert relay.ruri == "sip:+33612345678@127.0.0.2:5060;transport=udp"
    assert "Diversion: <sip:+33142685399@127.0.0.1;user=phone>;reason=unconditional;counter=1" in relay.headers
    assert any(h.startswith("P-Asserted-Identity: <sip:+33142685301@") for h in relay.headers)


def test_forward_to_one_of_our_own_numbers_is_a_loop(world: World):
    world.directory.extensions["acme"]["2099"] = world.directory.extensions["acme"]["2099"].__class__(
        "2099", "Loop", type="virtual", forward="+33142685302")
    ksr = world.request(world.phone_invite("2099"))
    assert ksr.reply == (482, "Forward Loops Back To Our Number") and ksr.relays == []


def test_ops_override_to_blocked_refuses_an_included_number(world: World):
    world.directory.overrides = {"+3314567": "blocked"}
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply[0] == 403 and ksr.relays == []
