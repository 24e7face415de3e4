"""emergency: calls that go out whatever happens to Redis, its data or the credentials, but
only for callers who prove who they are or send from a registered address (fake KSR)."""

import msgpack
import pytest

from kemi import records, routing
from kemi.model import digest_ha1
from kemi.routing import EmergencyIdentity
from kemi.sip.shell import Table, Var
from kemi.store import StoreRefused
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import PASSWORD, World

ALICE_HA1 = digest_ha1("2001", "acme.test", PASSWORD)
ALICE_CACHED = routing.encode_emergency_identity(EmergencyIdentity(ALICE_HA1, "+33142685301", "Floor 3"))
CACHED_TRUNKS = "sos@udp:127.0.0.8:5060"


def registered(ksr: FakeKSR) -> FakeKSR:
    """The request's source address holds a current registration."""
    ksr.htables.setdefault(Table.REGISTERED, {})[f"{ksr.request['$si']}:{ksr.request['$sp']}"] = 1
    return ksr


def cached(ksr: FakeKSR, identity: str = ALICE_CACHED, trunks: str | None = CACHED_TRUNKS) -> FakeKSR:
    """This node's cache as an earlier authenticated request of Alice left it."""
    ksr.htables.setdefault(Table.EMERGENCY_IDS, {})["2001@acme.test"] = identity
    if trunks:
        ksr.htables.setdefault(Table.ROUTES, {})[Table.EMERGENCY_TRUNKS_KEY] = trunks
    return ksr


def wrong_password(ksr: FakeKSR) -> FakeKSR:
    ksr.good_ha1 = "0" * 32
    return ksr


def claims(ksr: FakeKSR) -> list[str]:
    return [h for h in ksr.relay.headers if h.startswith(("X-Emergency-", "P-Asserted-Identity"))]


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
    assert ksr.dialog_managed == 1 and Var.RECORD in ksr.vars  # tracked: a record for the company


def test_credentials_and_every_header_a_carrier_need_not_see_are_removed(world: World):
    ksr = world.phone_invite("112", headers=[("Proxy-Authorization", "Digest username=\"2001\""),
                                             ("Authorization", "Digest bogus"), ("Priority", "urgent"),
                                             ("Remote-Party-ID", "<sip:+33144556677@acme.test>")])
    world.request(ksr)
    assert {"Proxy-Authorization", "Authorization", "Priority", "Remote-Party-ID"} <= set(ksr.removed_headers)
    assert ksr.filtered_to(routing.TRUNK_HEADERS)
    assert [h for h in ksr.relay.headers if h.startswith("Priority")] == ["Priority: emergency"]


def test_an_authenticated_call_caches_the_identity_with_its_ha1_and_the_trunks(world: World):
    ksr = world.request(world.phone_invite("112"))
    assert routing.decode_emergency_identity(ksr.htables[Table.EMERGENCY_IDS]["2001@acme.test"]) == \
        EmergencyIdentity(ALICE_HA1, "+33142685301", "12 rue de la Paix, Paris", "acme")
    assert ksr.htables[Table.ROUTES][Table.EMERGENCY_TRUNKS_KEY] == "emergency@udp:127.0.0.5:5060"


def test_national_forms_are_normalised_and_never_billed(world: World):
    world.ledger.active = False
    ksr = world.request(world.phone_invite("15"))
    assert ksr.relay.ruri.startswith("sip:15@127.0.0.5") and world.ledger.reservations == {}


def test_with_redis_down_the_cached_identity_is_used_after_its_ha1_checks_the_call(world: World):
    world.directory.down = True
    ksr = world.request(cached(world.phone_invite("112")))
    assert ksr.digest_checks == [("acme.test", ALICE_HA1, 1, 1)]
    assert ksr.relay.ruri == "sip:112@127.0.0.8:5060;transport=udp"
    assert claims(ksr) == ["X-Emergency-Callback: +33142685301", "X-Emergency-Location: Floor 3",
                           "P-Asserted-Identity: <sip:+33142685301@127.0.0.1;user=phone>"]
    assert any("routed from cache" in line for line in ksr.logged("err"))


def test_with_redis_down_a_wrong_password_from_a_stranger_is_refused(world: World):
    world.directory.down = True
    ksr = world.request(cached(wrong_password(world.phone_invite("112"))))
    assert ksr.reply == (403, "Emergency Calls Need A Registered Phone") and ksr.relays == []
    assert any("refused" in line for line in ksr.logged("warn"))


def test_with_redis_down_a_wrong_password_from_a_registered_address_gets_no_identity(world: World):
    world.directory.down = True
    ksr = world.request(registered(cached(wrong_password(world.phone_invite("112")))))
    assert ksr.relay.ruri == "sip:112@127.0.0.8:5060;transport=udp"
    assert claims(ksr) == [] and ksr.relay.headers == ["Priority: emergency"]


def test_an_old_cache_entry_without_ha1_proves_nothing(world: World):
    world.directory.down = True
    ksr = world.request(registered(cached(world.phone_invite("112"), identity="+33142685301\tFloor 3")))
    assert ksr.digest_checks == [] and claims(ksr) == []


def test_with_nothing_cached_the_credentials_cannot_be_checked_and_the_static_trunks_carry_the_call(world: World):
    world.directory.down = True
    ksr = world.request(world.phone_invite("112"))  # from an address without a registration
    assert ksr.relay.ruri == "sip:112@127.0.0.9:5060;transport=udp"
    assert ksr.relay.headers == ["Priority: emergency"]  # nothing verified, nothing claimed
    assert any("could not be checked" in line for line in ksr.logged("warn"))


def test_no_route_at_all_is_a_critical_log_and_503(world: World):
    world.directory.down = True
    world.settings = world.settings.__class__()
    ksr = world.request(world.phone_invite("112"))
    assert ksr.reply == (503, "No Route To Destination")
    assert "HAS NO ROUTE" in ksr.logged("crit")[0]


@pytest.mark.parametrize("caller", ["wrong password", "unknown user", "unknown domain"])
def test_a_caller_who_fails_the_check_is_refused_unless_the_address_is_registered(world: World, caller):
    def invite():
        if caller == "wrong password":
            return wrong_password(world.phone_invite("112"))
        if caller == "unknown user":
            return world.phone_invite("112", user="2999")
        return world.phone_invite("112", user="anonymous", domain="anonymous.invalid")

    stranger = world.request(invite())
    assert stranger.reply == (403, "Emergency Calls Need A Registered Phone") and stranger.relays == []
    ksr = world.request(registered(invite()))
    assert ksr.relay.ruri.startswith("sip:112@127.0.0.5")  # the global emergency trunks, whatever the domain
    assert claims(ksr) == []
    assert ksr.dialog_managed == 1 and ksr.record_routed == 1  # its dialog is known, for its BYE
    assert ksr.vars[Var.CALLER] == "udp:127.0.0.10:5060" and ksr.vars[Var.DLG_EMERGENCY] == "1"
    rec = records.decode(ksr.vars[Var.RECORD])  # a record all the same, for no company
    assert (rec["company"], rec["identity"], rec["source"]) == ("", "none", "udp:127.0.0.10:5060")


def test_a_right_password_from_anywhere_is_enough(world: World):
    ksr = world.request(world.phone_invite("112", src="192.0.2.99"))
    assert "X-Emergency-Callback: +33142685301" in ksr.relay.headers


BROKEN = {
    "undecodable value": msgpack.exceptions.ExtraData(1, b"x"),
    "wrong type": StoreRefused("WRONGTYPE Operation against a key holding the wrong kind of value"),
    "bad field": KeyError("domain"),
    "bad value": ValueError("bad extension"),
}


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_broken_caller_data_falls_back_to_the_cached_identity_and_redis_trunks(world: World, fault):
    world.directory.faults["call_context"] = BROKEN[fault]
    ksr = world.request(cached(world.phone_invite("112")))
    assert ksr.relay.ruri == "sip:112@127.0.0.5:5060;transport=udp"  # the trunk list was still readable
    assert "X-Emergency-Callback: +33142685301" in ksr.relay.headers  # the cached HA1 checked the call
    assert ksr.replies == []


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_broken_trunk_data_falls_back_to_cached_then_static_trunks(world: World, fault):
    world.directory.faults.update(call_context=BROKEN[fault], trunks=BROKEN[fault])
    ksr = world.request(cached(world.phone_invite("112")))
    assert ksr.relay.ruri == "sip:112@127.0.0.8:5060;transport=udp"
    static = world.request(cached(world.phone_invite("112"), trunks=None))
    assert static.relay.ruri == "sip:112@127.0.0.9:5060;transport=udp"


def test_redis_down_is_asked_once_not_twice(world: World):
    calls = []
    world.directory.down = True
    original = world.directory.trunks
    world.directory.trunks = lambda: calls.append("trunks") or original()
    world.request(world.phone_invite("112"))
    assert calls == []


def test_a_from_user_that_is_not_utf8_is_routed_without_identity(world: World):
    ksr = registered(world.phone_invite("112"))
    ksr.request["$fU"] = b"20\xff1"
    ksr.auth_result = -8  # pv_auth_check: the auth user (2001) is not the From user
    world.request(ksr)
    assert ksr.relay.ruri.startswith("sip:112@127.0.0.5") and claims(ksr) == []
    assert ksr.replies == []


def test_a_garbled_from_still_finds_the_global_emergency_trunks(world: World):
    """Fuzz finding: no company could be read, so no trunks came with it, although Redis has them."""
    ksr = registered(FakeKSR("INVITE", "sip:112@127.0.0.1"))
    ksr.request.update({"$fU": "", "$fd": ""})  # what Kamailio reads from a From it cannot parse
    world.request(ksr)
    assert ksr.relay.ruri == "sip:112@127.0.0.5:5060;transport=udp"


def test_a_bug_in_the_admission_still_routes_the_call_bare(world: World, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(routing, "emergency_admission", broken)
    ksr = world.request(world.phone_invite("112"))
    # the trunks this very call cached before the bug, else the static ones
    assert ksr.relay.ruri == "sip:112@127.0.0.5:5060;transport=udp" and claims(ksr) == []
    assert any("boom" in line for line in ksr.logged("crit"))
    world.directory.down = True
    bare = world.request(world.phone_invite("112"))
    assert bare.relay.ruri == "sip:112@127.0.0.9:5060;transport=udp" and claims(bare) == []


# -- issue 18.2: no password oracle while blocked ------------------------------------------------------
class Node:
    """One proxy's shared memory across several requests."""

    def __init__(self):
        self.htables: dict = {}
        self.expiries: dict = {}

    def __call__(self, ksr: FakeKSR) -> FakeKSR:
        ksr.htables, ksr.expiries = self.htables, self.expiries
        return ksr


def blocked(node: Node, ip: str = "127.0.0.10", user: str = "2001") -> Node:
    node.htables.setdefault(Table.AUTH_BAN, {})[f"{ip}|{user}@acme.test"] = 1
    return node


@pytest.mark.parametrize("source", ["registered", "unregistered"])
def test_while_blocked_a_right_and_a_wrong_password_get_the_same_call_and_no_check(world: World, source):
    calls = []
    for password in ("right", "wrong"):
        node = blocked(Node())
        ksr = node(world.phone_invite("112"))
        cached(ksr)
        if source == "registered":
            node.htables.setdefault(Table.REGISTERED, {})["127.0.0.10:5060"] = "2002@acme.test"
        if password == "wrong":
            wrong_password(ksr)
        world.request(ksr)
        assert ksr.digest_checks == [], "a blocked caller's credentials were checked"
        calls.append((ksr.replies, ksr.relay.ruri, ksr.relay.headers))
    assert calls[0] == calls[1]
    assert "X-Emergency-Callback: +33142685301" not in calls[0][2], "the blocked user's own identity was used"


def test_failed_checks_on_the_emergency_path_count_towards_the_block(world: World):
    world.settings = world.settings.__class__(emergency_trunks="udp:127.0.0.9:5060", auth_fail_max=3)
    node = Node()
    for n in range(3):
        ksr = world.request(node(wrong_password(world.phone_invite("112", call_id=f"c{n}"))))
        assert ksr.reply == (403, "Emergency Calls Need A Registered Phone")
    assert "127.0.0.10|2001@acme.test" in node.htables[Table.AUTH_BAN]
    # from now on the right password proves nothing either: the same answer as a wrong one
    right = world.request(node(world.phone_invite("112", call_id="c9")))
    assert right.digest_checks == [] and right.relay is not None and claims(right) == []


@pytest.mark.parametrize("who", ["unknown user", "unknown domain"])
def test_unknown_callers_are_counted_like_wrong_passwords(world: World, who):
    node = Node()
    ksr = world.phone_invite("112", user="2999") if who == "unknown user" else \
        world.phone_invite("112", user="x", domain="nowhere.invalid")
    world.request(node(ksr))
    assert list(node.htables[Table.AUTH_FAIL].values()) == [1, 1]  # the pair and the address


def test_a_stale_nonce_is_no_failure(world: World):
    node = Node()
    ksr = world.phone_invite("112")
    ksr.auth_result = -4
    world.request(node(ksr))
    assert Table.AUTH_FAIL not in node.htables


# -- issue 18.6: identity, limits and records -----------------------------------------------------------
def test_an_unauthenticated_call_from_a_registered_address_carries_that_phones_identity(world: World):
    node = Node()
    node.htables[Table.REGISTERED] = {"127.0.0.10:5060": "2001@acme.test"}
    ksr = cached(node(world.phone_invite("112", user="anonymous", domain="junk.invalid")))
    ksr.htables[Table.EMERGENCY_IDS]["2001@acme.test"] = routing.encode_emergency_identity(
        EmergencyIdentity(ALICE_HA1, "+33142685301", "Floor 3", "acme"))
    world.request(ksr)
    assert claims(ksr) == ["X-Emergency-Callback: +33142685301", "X-Emergency-Location: Floor 3",
                           "P-Asserted-Identity: <sip:+33142685301@127.0.0.1;user=phone>"]
    rec = records.decode(ksr.vars[Var.RECORD])
    assert (rec["company"], rec["extension"], rec["identity"]) == ("acme", "2001", "registered-source")
    assert any("as 2001@acme.test, the phone registered at that address" in line for line in ksr.logged("warn"))


def test_an_entry_of_an_older_version_admits_without_an_identity(world: World):
    node = Node()
    node.htables[Table.REGISTERED] = {"127.0.0.10:5060": 1}
    ksr = world.request(cached(node(wrong_password(world.phone_invite("112")))))
    assert ksr.relay is not None and claims(ksr) == []


def test_a_verified_call_with_redis_down_is_recorded_for_the_cached_company(world: World):
    world.directory.down = True
    ksr = cached(world.phone_invite("112"))
    ksr.htables[Table.EMERGENCY_IDS]["2001@acme.test"] = routing.encode_emergency_identity(
        EmergencyIdentity(ALICE_HA1, "+33142685301", "Floor 3", "acme"))
    world.request(ksr)
    rec = records.decode(ksr.vars[Var.RECORD])
    assert (rec["company"], rec["identity"], rec["from"], rec["to"]) == ("acme", "verified", "+33142685301", "112")


def limited_world(world: World) -> World:
    world.settings = world.settings.__class__(emergency_trunks="udp:127.0.0.9:5060", emergency_calls_max=2,
                                              emergency_unidentified_max=3, emergency_window_s=60)
    return world


def test_a_phone_is_limited_per_window_and_hears_why(world: World):
    limited_world(world)
    node = Node()
    answers = [world.request(node(world.phone_invite("112", call_id=f"c{n}"))) for n in range(4)]
    assert [len(a.relays) for a in answers] == [1, 1, 0, 0]
    assert answers[2].reply == answers[3].reply == (503, "Too Many Emergency Calls From This Phone")
    assert answers[2].reply_headers == ["Retry-After: 60"]
    assert len(answers[2].logged("warn")) == 1 and answers[3].logged("warn") == []  # one line per window
    assert answers[3].counted("call_refusals_total") == {"emergency_phone_limit": 1}
    # another phone, from the same address too, is not limited by it
    other = world.request(node(world.phone_invite("112", user="2002", call_id="c9")))
    assert len(other.relays) == 1
    # and the window ends
    node.htables[Table.EMERGENCY_CALLS].clear()
    assert len(world.request(node(world.phone_invite("112", call_id="c10"))).relays) == 1


def test_unauthenticated_calls_are_limited_per_source_and_per_node_authenticated_ones_never_per_node(world):
    limited_world(world)
    node = Node()
    sources = [("127.0.0.10", 5060), ("127.0.0.10", 5060), ("127.0.0.10", 5060), ("127.0.0.11", 5060),
               ("127.0.0.12", 5060), ("127.0.0.13", 5060)]
    node.htables[Table.REGISTERED] = {f"{ip}:{port}": "2002@acme.test" for ip, port in sources}
    answers = []
    for n, (ip, port) in enumerate(sources):
        ksr = wrong_password(world.phone_invite("112", src=ip, sport=port, call_id=f"c{n}"))
        answers.append(world.request(node(ksr)))
    assert [a.reply for a in answers] == [None, None, (503, "Too Many Emergency Calls From This Phone"), None,
                                          (503, "Too Many Unauthenticated Emergency Calls"),
                                          (503, "Too Many Unauthenticated Emergency Calls")]
    assert sum(len(a.relays) for a in answers) == 3
    # a phone that proves who it is still gets through, from a source of the flood too
    for n in range(2):
        ok = world.request(node(world.phone_invite("112", src="127.0.0.12", call_id=f"ok{n}")))
        assert len(ok.relays) == 1


def test_an_over_limit_call_costs_no_trunk_lookup(world: World):
    limited_world(world)
    node = Node()
    for n in range(2):
        world.request(node(world.phone_invite("112", call_id=f"c{n}")))
    asked = []
    original = world.directory.trunks
    world.directory.trunks = lambda: asked.append(1) or original()
    world.request(node(world.phone_invite("112", call_id="c3")))
    assert asked == []


def test_every_routed_call_leaves_a_record_the_unidentified_ones_in_the_unattributed_stream(world: World):
    ksr = world.request(registered(wrong_password(world.phone_invite("112"))))
    rec = records.decode(ksr.vars[Var.RECORD])
    assert rec["company"] == "" and rec["identity"] == "none"
    ended = FakeKSR("BYE", "sip:112@127.0.0.5", to_tag="t")
    ended.vars[Var.RECORD] = ksr.vars[Var.RECORD]
    router = world.router(ended)
    with router.sip.scope():
        router.calls.dialog_event("dialog:failed", router.prepaid)
    assert world.ledger.records[-1]["disposition"] == "unanswered" and world.ledger.records[-1]["company"] == ""
    assert world.ledger.unattributed == 1
