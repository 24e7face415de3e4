"""outbound: the numbering plan's decision carried out (fake KSR)."""

from kemi import routing
from kemi.sip.shell import PHONE_FLAG, Route, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def test_french_landline_goes_to_the_first_trunk_with_the_proxys_identity(world: World):
    claims = [("P-Asserted-Identity", "<sip:+33100000000@evil.example>"), ("x-company", "initech"),
              ("X-Balance", "999")]
    ksr = world.request(world.phone_invite("0145678901", headers=claims))
    relay = ksr.relay
    assert relay.ruri == "sip:+33145678901@127.0.0.2:5060;transport=udp"
    assert relay.failure_route == Route.FAILURE_TRUNK and relay.timers == (120000, 3000)
    assert relay.headers == ['P-Asserted-Identity: "Alice Martin" <sip:+33142685301@127.0.0.1;user=phone>']
    # the phone's own claims never reach the trunk, whatever their case; absent ones cost no removal
    leaving = {name.lower() for name, _ in ksr.leaving_headers()}
    assert not {"x-company", "x-balance"} & leaving
    assert ksr.leaving_headers().count(("P-Asserted-Identity", '"Alice Martin" <sip:+33142685301@127.0.0.1;user=phone>')) == 1
    assert {"P-Asserted-Identity", "X-Company", "X-Balance"} <= set(ksr.removed_headers)
    assert not {"X-DID", "X-Currency", "P-Preferred-Identity"} & set(ksr.removed_headers)
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
    world.directory.trunk_list = ()
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


FORGED = [("Remote-Party-ID", '"Bank" <sip:+33144556677@acme.test>;party=calling'),
          ("P-Charge-Info", "<sip:+33144556677@acme.test>"), ("History-Info", "<sip:+33144556677@acme.test>;index=1"),
          ("DIVERSION", "<sip:+33144556677@acme.test>"), ("Privacy", "id"), ("Priority", "emergency"),
          ("Resource-Priority", "esnet.0"), ("X-Billing-Account", "9999"), ("Proxy-Authorization", "Digest x"),
          ("P-Asserted-Identity", "<sip:+33144556677@acme.test>"), ("Supported", "timer"), ("k", "100rel")]


def test_only_allowed_headers_leave_for_the_trunk_then_the_proxys_own(world: World):
    ksr = world.request(world.phone_invite("0145678901", headers=FORGED))
    assert ksr.filtered_to(routing.TRUNK_HEADERS)
    assert ksr.leaving_headers() == [("Supported", "timer"), ("k", "100rel"), (
        "P-Asserted-Identity", '"Alice Martin" <sip:+33142685301@127.0.0.1;user=phone>')]


def test_a_forward_carries_one_diversion_the_proxys(world: World):
    ksr = world.phone_invite("2099", headers=FORGED)
    world.request(ksr)
    diversions = [v for n, v in ksr.leaving_headers() if n.lower() == "diversion"]
    assert diversions == ["<sip:+33142685399@127.0.0.1;user=phone>;reason=unconditional;counter=1"]
    assert not any("+33144556677" in v for _, v in ksr.leaving_headers())


def test_a_carriers_call_forwarded_back_out_loses_the_carriers_claims(world: World):
    ksr = FakeKSR("INVITE", "sip:+33142685399@127.0.0.1", src="127.0.0.2", from_uri="sip:+33612121212@carrier.test",
                  headers=FORGED)
    world.request(ksr)
    assert ksr.relay.ruri == "sip:+33612345678@127.0.0.2:5060;transport=udp"
    leaving = ksr.leaving_headers()
    assert [n for n, _ in leaving if n.lower() == "diversion"] == ["Diversion"]
    assert not any("+33144556677" in v for _, v in leaving)
    assert ("P-Asserted-Identity", "<sip:+33612121212@127.0.0.1;user=phone>") in leaving


def test_an_internal_call_passes_the_carriers_allow_list_too(world: World):
    """Issue 18: a phone's identity and charging claims reached a carrier through another phone's
    registration. An internal call leaves with the headers a carrier would get, no more."""
    ksr = world.phone_invite("2002", headers=[("Alert-Info", "<http://ring/internal>"),
                                              ("Remote-Party-ID", "<sip:+33142685301@acme.test>"),
                                              ("P-Charge-Info", "<sip:+33142685301@acme.test>"),
                                              ("Diversion", "<sip:+33142685301@acme.test>"),
                                              ("User-Agent", "Yealink")])
    ksr.registered["sip:2002@acme.test"] = 1
    world.request(ksr)
    leaving = {name for name, _ in ksr.leaving_headers()}
    assert not leaving & {"Alert-Info", "Remote-Party-ID", "P-Charge-Info", "Diversion"}, leaving
    assert "User-Agent" in leaving and ksr.relays


def test_a_relay_to_the_trunks_clears_the_flag_of_branches_to_phones(world: World):
    """A failure route inherits the transaction's flags: a trunk (or media server) relayed after
    the phones' branches must not be judged as a phone's (kamailio.cfg onsend_route)."""
    ksr = world.phone_invite("0612345678")
    ksr.flags.add(PHONE_FLAG)
    world.request(ksr)
    assert ksr.relays and PHONE_FLAG not in ksr.flags
