"""emergency: calls that go out whatever happens to Redis or the credentials (fake KSR)."""

from kemi.sip.shell import Table, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def test_without_credentials_the_phone_is_challenged_before_any_lookup(world: World):
    world.directory.down = True
    ksr = world.request(FakeKSR("INVITE", "sip:112@acme.test", from_uri="sip:2001@acme.test"))
    assert ksr.challenges == [("acme.test", 1)] and ksr.relays == []


def test_an_authenticated_call_carries_callback_and_location_to_the_emergency_trunk(world: World):
    ksr = world.request(world.phone_invite("112"))
    relay = ksr.relay
    assert relay.ruri == "sip:112@127.0.0.5:5060;transport=udp"
    assert relay.headers[:3] == ["Priority: emergency", "X-Emergency-Callback: +33142685301",
                                 "X-Emergency-Location: 12 rue de la Paix, Paris"]
    assert ksr.consumed and ksr.dialog_managed == 1  # tracked: a record for the company


def test_national_forms_are_normalised_and_never_billed(world: World):
    world.ledger.active = False
    ksr = world.request(world.phone_invite("15"))
    assert ksr.relay.ruri.startswith("sip:15@127.0.0.5") and world.ledger.reservations == {}


def test_with_redis_down_the_cached_identity_and_trunks_are_used(world: World):
    world.request(world.phone_invite("0145678901"))  # fills the node's cache, as any authenticated call does
    world.directory.down = True
    ksr = world.phone_invite("112")
    ksr.htables = {Table.EMERGENCY_IDS: {"2001@acme.test": "+33142685301\tFloor 3"},
                   Table.ROUTES: {Table.EMERGENCY_TRUNKS_KEY: "udp:127.0.0.5:5060"}}
    world.request(ksr)
    assert ksr.relay.ruri == "sip:112@127.0.0.5:5060;transport=udp"
    assert "X-Emergency-Callback: +33142685301" in ksr.relay.headers
    assert any("routed from cache" in line for line in ksr.logged("err"))


def test_with_nothing_cached_the_static_trunks_carry_the_call(world: World):
    world.directory.down = True
    ksr = world.request(world.phone_invite("112"))
    assert ksr.relay.ruri == "sip:112@127.0.0.9:5060;transport=udp"
    assert ksr.relay.headers == ["Priority: emergency"]  # nothing verified, nothing claimed


def test_no_route_at_all_is_a_critical_log_and_503(world: World):
    world.directory.down = True
    world.settings = world.settings.__class__()
    ksr = world.request(world.phone_invite("112"))
    assert ksr.reply == (503, "No Route To Destination")
    assert "HAS NO ROUTE" in ksr.logged("crit")[0]


def test_a_wrong_password_still_gets_through_without_a_verified_callback(world: World):
    ksr = world.phone_invite("112")
    ksr.good_ha1 = "0" * 32
    world.request(ksr)
    assert ksr.relay.ruri.startswith("sip:112@127.0.0.5")
    assert not any(h.startswith("X-Emergency-Callback") for h in ksr.relay.headers)
    assert ksr.dialog_managed == 1 and ksr.record_routed == 1  # its dialog is known, for its BYE
    assert Var.RECORD not in ksr.vars and ksr.vars[Var.CALLER] == "udp:127.0.0.10:5060"  # no company record
