"""gate: scanners, floods, bans, bytes that are not text, password guessing (fake KSR).

Requests of one test share the node's htables (like one Kamailio's shared memory) through `node`.
"""

from __future__ import annotations

import pytest

from kemi.model import Site, digest_ha1
from kemi.settings import Settings
from kemi.sip.gate import PEERS_TTL_S, TrustedPeers
from kemi.sip.shell import Table, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import PASSWORD, World
from tests.unit.sip.test_in_dialog_and_app import in_dialog

SETTINGS = Settings(emergency_trunks="udp:127.0.0.9:5060", ban_s=300, auth_fail_max=3, auth_fail_window_s=600,
                    auth_ban_s=900)
STRANGER = ("127.0.1.50", 40000)


@pytest.fixture
def world(world: World) -> World:
    world.settings = SETTINGS
    return world


class Node:
    """One proxy's shared memory across several requests, and its clock."""

    def __init__(self):
        self.htables: dict = {}
        self.expiries: dict = {}
        self.now = 1000.0

    def __call__(self, ksr: FakeKSR) -> FakeKSR:
        ksr.htables, ksr.expiries, ksr.now = self.htables, self.expiries, self.now
        return ksr


@pytest.fixture
def node() -> Node:
    return Node()


def options(src=STRANGER, agent: str | None = None) -> FakeKSR:
    headers = [("User-Agent", agent)] if agent else []
    return FakeKSR("OPTIONS", "sip:127.0.0.1:5060", src=src[0], sport=src[1], headers=headers)


# -- scanners ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "INVITE"])
def test_scanner_user_agents_are_dropped_unanswered_with_one_log_line(world: World, method):
    ksr = FakeKSR(method, "sip:127.0.0.1:5060" if method == "OPTIONS" else "sip:0612345678@acme.test",
                  src="127.0.1.50", headers=[("User-Agent", "SIPVicious 0.3.4")])
    world.request(ksr)
    assert ksr.replies == [] and ksr.relays == [] and ksr.challenges == []
    (line,) = [text for _, text in ksr.logs]
    assert "127.0.1.50" in line and "sipvicious" in line


def test_a_phones_user_agent_is_served(world: World):
    assert world.request(options(agent="Yealink SIP-T46S 66.86.0.15")).reply == (200, "OK")


def test_a_user_agent_that_is_not_text_is_not_a_scanner_and_not_an_error(world: World):
    assert world.request(options(agent=b"friendly\xff")).reply == (200, "OK")


# -- floods and bans ---------------------------------------------------------------------------------
def test_a_flooding_stranger_is_banned_for_ban_s_with_one_log_line(world: World, node: Node):
    first = options()
    first.pike_verdict = -2
    world.request(node(first))
    assert first.replies == []
    assert node.htables[Table.IP_BAN] == {STRANGER[0]: 1}
    assert node.expiries[Table.IP_BAN][STRANGER[0]] == node.now + 300
    (line,) = first.logged("warn")
    assert STRANGER[0] in line and "banned for 300s" in line
    # while banned: nothing, not even a log line, and pike is not asked (the ban is enough)
    again = options(src=(STRANGER[0], 40001))
    again.pike_verdict = 1
    world.request(node(again))
    assert again.replies == [] and again.logs == []
    # BAN_S later: served again
    node.now += 300
    assert world.request(node(options())).reply == (200, "OK")


def test_another_address_is_not_touched_by_a_ban(world: World, node: Node):
    flood = options()
    flood.pike_verdict = -2
    world.request(node(flood))
    assert world.request(node(options(src=("127.0.1.51", 40000)))).reply == (200, "OK")


def test_a_trusted_peer_is_never_banned(world: World, node: Node):
    trunk = options(src=("127.0.0.2", 5060))
    trunk.pike_verdict = -1
    world.request(node(trunk))
    assert trunk.reply == (200, "OK") and Table.IP_BAN not in node.htables and trunk.logs == []


def test_another_port_of_a_trusted_peers_host_is_dropped_but_the_host_is_not_banned(world: World, node: Node):
    forged = options(src=("127.0.0.2", 40000))
    forged.pike_verdict = -2
    world.request(node(forged))
    assert forged.replies == [] and Table.IP_BAN not in node.htables
    assert "not banned" in forged.logged("warn")[0]
    assert world.request(node(options(src=("127.0.0.2", 5060)))).reply == (200, "OK")


def test_with_the_store_never_reached_a_flood_is_let_through_and_nobody_is_banned(world: World, node: Node):
    world.directory.down = True
    flood = options()
    flood.pike_verdict = -2
    world.request(node(flood))
    assert flood.reply == (200, "OK") and Table.IP_BAN not in node.htables


def test_trusted_peers_are_read_once_per_ttl_and_the_last_copy_outlives_an_outage(world: World):
    clock = [0.0]
    peers = TrustedPeers(world.directory, clock=lambda: clock[0])
    assert ("127.0.0.2", 5060) in peers.addresses() and peers.addresses() is peers.addresses()
    assert world.directory.peer_reads == 1
    clock[0] += PEERS_TTL_S
    world.directory.down = True
    assert ("127.0.0.2", 5060) in peers.addresses()  # stale but known: still used
    world.directory.down = False
    clock[0] += PEERS_TTL_S
    peers.addresses()
    assert world.directory.peer_reads == 2


def test_a_registered_address_still_places_emergency_calls_while_banned(world: World, node: Node):
    node.htables[Table.IP_BAN] = {"127.0.1.50": 1}
    node.htables[Table.REGISTERED] = {"127.0.1.50:5071": "2002@acme.test"}
    call = FakeKSR("INVITE", "sip:112@acme.test", src="127.0.1.50", sport=5071)
    world.request(node(call))
    assert call.challenges == [("acme.test", 1)]  # the emergency route took it
    hangup = FakeKSR("BYE", "sip:112@127.0.0.5", src="127.0.1.50", sport=5071, to_tag="t")
    world.request(node(hangup))
    assert hangup.reply == (481, "Call/Transaction Does Not Exist")  # routed: in_dialog answered
    dropped = FakeKSR("INVITE", "sip:0612345678@acme.test", src="127.0.1.50", sport=5071)
    world.request(node(dropped))
    assert dropped.replies == [] and dropped.challenges == []


@pytest.mark.parametrize("why", ["banned", "flooding"])
@pytest.mark.parametrize("sport", [5072, 40000])  # a new NAT port of a registered phone, a phone never seen
def test_an_emergency_call_from_any_port_of_a_banned_address_is_answered_never_dropped(world, node, why, sport):
    node.htables[Table.REGISTERED] = {"127.0.1.50:5071": "2002@acme.test"}
    if why == "banned":
        node.htables[Table.IP_BAN] = {"127.0.1.50": 1}
    call = FakeKSR("INVITE", "sip:112@acme.test", src="127.0.1.50", sport=sport)
    call.pike_verdict = 1 if why == "banned" else -1
    world.request(node(call))
    assert call.challenges == [("acme.test", 1)]
    ordinary = FakeKSR("INVITE", "sip:0612345678@acme.test", src="127.0.1.50", sport=sport)
    ordinary.pike_verdict = call.pike_verdict
    world.request(node(ordinary))
    assert ordinary.replies == [] and ordinary.challenges == [], "control: the address is banned"


def test_what_follows_an_emergency_call_in_its_dialog_passes_a_ban_and_nothing_else_does(world, node):
    node.htables[Table.IP_BAN] = {"127.0.0.30": 1}  # the caller's address, registered at no port
    emergency = node(in_dialog())
    emergency.vars[Var.DLG_EMERGENCY] = "1"
    world.request(emergency)
    assert emergency.relay.ruri == "sip:+33145678901@127.0.0.2:5060"
    ordinary = node(in_dialog())
    world.request(ordinary)
    assert ordinary.relays == [] and ordinary.replies == []
    cancel = node(FakeKSR("CANCEL", "sip:112@acme.test", src="127.0.0.30", sport=5071))
    cancel.transaction = 1  # tm matches it to the INVITE's transaction
    world.request(cancel)
    assert len(cancel.relays) == 1


def test_a_registered_address_that_floods_with_an_emergency_call_is_banned_but_the_call_goes(world, node):
    node.htables[Table.REGISTERED] = {"127.0.1.50:5071": 1}
    call = FakeKSR("INVITE", "sip:112@acme.test", src="127.0.1.50", sport=5071)
    call.pike_verdict = -2
    world.request(node(call))
    assert call.challenges == [("acme.test", 1)] and node.htables[Table.IP_BAN] == {"127.0.1.50": 1}


# -- bytes that are not text -------------------------------------------------------------------------
def invite_with(place: str, value: bytes, dialled: str = "0612345678") -> FakeKSR:
    ksr = World.phone_invite(dialled)
    ksr.request[place] = value
    return ksr


@pytest.mark.parametrize("place, value, reason", [
    ("$rU", b"06\xff\xfe12", "Invalid UTF-8 In Request-URI"),
    ("$fU", b"20\xff1", "Invalid UTF-8 In From"),
    ("$td", b"acme\xc3(.test", "Invalid UTF-8 In To"),
    ("$au", b"20\xff\xfe", "Invalid UTF-8 In Username"),
    ("$ci", b"abc\x00def", "NUL Byte In Call-ID"),
])
def test_bytes_that_are_not_text_get_400_naming_the_place_before_any_lookup(world: World, place, value, reason):
    world.directory.down = True  # a lookup would answer 503: the refusal comes first
    ksr = world.request(invite_with(place, value))
    assert ksr.reply == (400, reason) and ksr.relays == [] and ksr.digest_checks == []
    (line,) = [text for _, text in ksr.logs]
    assert place in line and "127.0.0.10" in line and "Traceback" not in line


def test_a_register_with_an_unreadable_username_gets_400(world: World):
    ksr = FakeKSR("REGISTER", "sip:acme.test", from_uri="sip:2001@acme.test", auth_user="x")
    ksr.credentials_realm = "acme.test"
    ksr.request["$au"] = b"20\xff\xfe"
    assert world.request(ksr).reply == (400, "Invalid UTF-8 In Username") and ksr.saved == []


@pytest.mark.parametrize("method", ["BYE", "ACK"])
def test_unreadable_bytes_read_later_in_a_route_get_the_same_answer_and_one_log_line(world: World, method):
    """In-dialog requests skip the up-front check; the in-dialog rules read the Request-URI."""
    ksr = in_dialog(method)
    ksr.request["$ru"] = b"sip:20\xff@127.0.0.30:5071"
    world.request(ksr)
    assert ksr.replies == ([] if method == "ACK" else [(400, "Invalid UTF-8 In Request-URI")])
    assert len(ksr.logs) == 1 and ksr.relays == [] and ksr.dialog_managed == 0


def test_an_emergency_invite_is_only_refused_for_its_request_uri(world: World):
    """What else it holds falls back on the emergency route (kemi.sip.emergency), not here."""
    for place in ("$fU", "$au", "$ci"):
        ksr = invite_with(place, b"\xff", dialled="112")
        world.router(ksr).gate.require_text()  # does not raise


# -- password guessing -------------------------------------------------------------------------------
def register(src=STRANGER, user="2001", password=PASSWORD, domain="acme.test") -> FakeKSR:
    ksr = FakeKSR("REGISTER", f"sip:{domain}", src=src[0], sport=src[1], from_uri=f"sip:{user}@{domain}",
                  auth_user=user, headers=[("Contact", f"<sip:{user}@{src[0]}:{src[1]}>"), ("Expires", "300")])
    ksr.credentials_realm = domain
    ksr.good_ha1 = digest_ha1(user, domain, password)
    return ksr


def wrong(src=STRANGER, user="2001") -> FakeKSR:
    ksr = register(src, user)
    ksr.good_ha1 = "0" * 32
    return ksr


def test_failures_block_that_address_and_user_even_with_the_right_password(world: World, node: Node):
    for n in range(3):
        assert world.request(node(wrong())).reply == (403, "Forbidden")
    blocked = world.request(node(register()))
    assert blocked.reply == (403, "Too Many Failed Attempts")
    assert blocked.digest_checks == [] and blocked.saved == []  # not even checked
    assert node.expiries[Table.AUTH_BAN][f"{STRANGER[0]}|2001@acme.test"] == node.now + 900
    # another user behind the same address, and the same user elsewhere
    assert world.request(node(register(user="2002"))).saved
    assert world.request(node(register(src=("127.0.1.51", 40000)))).saved
    # AUTH_BAN_S later
    node.now += 900
    assert world.request(node(register())).saved


def test_the_block_is_logged_once_with_the_address_and_the_user(world: World, node: Node):
    lines = []
    for n in range(3):
        lines += world.request(node(wrong())).logged("warn")
    (line,) = lines
    assert STRANGER[0] in line and "2001@acme.test" in line and "900s" in line and "after 3 failures" in line


def test_unknown_users_count_too(world: World, node: Node):
    for n in range(3):
        assert world.request(node(register(user="2999"))).reply == (403, "Forbidden")
    assert world.request(node(register(user="2999"))).reply == (403, "Too Many Failed Attempts")


def test_failures_further_apart_than_the_window_do_not_block(world: World, node: Node):
    for n in range(5):
        world.request(node(wrong()))
        node.now += 301  # two failures per 600 s window at most
    assert world.request(node(register())).saved


def test_a_stale_nonce_is_not_a_failure(world: World, node: Node):
    for n in range(5):
        ksr = register()
        ksr.auth_result = -4
        world.request(node(ksr))
    assert Table.AUTH_FAIL not in node.htables or not node.htables[Table.AUTH_FAIL]
    assert world.request(node(register())).saved


def test_a_guesser_rotating_users_blocks_its_address_for_every_user(world: World, node: Node):
    users = [f"2{n:03d}" for n in range(100, 130)]  # 30 = AUTH_FAIL_MAX x 10, one try each
    for user in users:
        world.request(node(register(user=user)))
    assert world.request(node(register(user="2001"))).reply == (403, "Too Many Failed Attempts")
    assert world.request(node(register(src=("127.0.1.51", 40000)))).saved


def test_credentials_for_an_unknown_domain_count_as_failures_and_block_like_a_wrong_password(
        world: World, node: Node):
    for n in range(3):  # auth_fail_max of SETTINGS
        assert world.request(node(register(domain="evil.test"))).reply == (403, "Forbidden")
    assert world.request(node(register(domain="evil.test"))).reply == (403, "Too Many Failed Attempts")


def test_invite_guessing_counts_the_same_way(world: World, node: Node):
    for n in range(3):
        ksr = World.phone_invite("0612345678", src=STRANGER[0], sport=STRANGER[1])
        ksr.good_ha1 = "0" * 32
        world.request(node(ksr))
    call = world.request(node(World.phone_invite("0612345678", src=STRANGER[0], sport=STRANGER[1])))
    assert call.reply == (403, "Too Many Failed Attempts") and call.relays == []


def test_credentials_for_another_request_uri_are_refused_and_not_counted(world: World, node: Node):
    ksr = World.phone_invite("00442079460000")
    ksr.request["$adu"] = "sip:0612345678@acme.test"  # a captured answer for another number
    world.request(node(ksr))
    assert ksr.reply == (403, "Digest URI Does Not Match Request") and ksr.relays == []
    assert not node.htables.get(Table.AUTH_FAIL)
    assert "0612345678" in ksr.logged("notice")[0]


def test_credentials_whose_uri_is_this_proxy_are_accepted_as_sipp_sends_them(world: World):
    ksr = World.phone_invite("0612345678")
    ksr.request["$adu"] = "sip:127.0.0.1:5060"  # the receiving socket ($Ri:$Rp)
    assert world.request(ksr).relay is not None
    elsewhere = World.phone_invite("0612345678")
    elsewhere.request["$adu"] = "sip:127.0.0.2:5060"  # a host, but not this proxy
    assert world.request(elsewhere).reply == (403, "Digest URI Does Not Match Request")


# -- declared sites: a building behind one NAT address -----------------------------------------------
SITE_IP = "203.0.113.7"
SITE_SETTINGS = Settings(emergency_trunks="udp:127.0.0.9:5060", ban_s=300, auth_fail_max=3, auth_fail_window_s=600,
                         auth_ban_s=900, site_phone_reqs=5, site_phone_window_s=2)


@pytest.fixture
def building(world: World) -> World:
    world.settings = SITE_SETTINGS
    world.directory.site_list = (Site("station-f", (f"{SITE_IP}/32", "2001:db8:7::/48"), ("acme",)),)
    return world


def hot(ksr: FakeKSR, verdict: int = -1) -> FakeKSR:
    """A request that pike finds over its limit (the address as a whole floods)."""
    ksr.pike_verdict = verdict
    return ksr


def test_a_sites_address_that_floods_is_never_banned_its_flooding_port_is(building: World, node: Node):
    flooder, neighbour = (SITE_IP, 20001), (SITE_IP, 20002)
    for n in range(5):  # SITE_PHONE_REQS while the address is hot: all served
        assert building.request(node(hot(options(src=flooder), -2 if n == 0 else -1))).reply == (200, "OK")
    over = building.request(node(hot(options(src=flooder))))
    assert over.replies == []
    assert node.htables[Table.SITE_BAN] == {f"{SITE_IP}:20001": 1}
    assert node.expiries[Table.SITE_BAN][f"{SITE_IP}:20001"] == node.now + 300
    assert node.htables[Table.IP_BAN] == {SITE_IP: 2}  # a mark, not a ban
    (line,) = over.logged("warn")
    assert f"{SITE_IP}:20001" in line and "station-f" in line and "300s" in line and "other phones are not" in line
    # the neighbour, from the same address while it is still hot, and once it cools down
    assert building.request(node(hot(options(src=neighbour)))).reply == (200, "OK")
    assert building.request(node(options(src=neighbour))).reply == (200, "OK")
    # the flooding port: dropped, silently, even once the address is no longer hot
    quiet = building.request(node(options(src=flooder)))
    assert quiet.replies == [] and quiet.logs == []
    node.now += 300
    assert building.request(node(options(src=flooder))).reply == (200, "OK")


def test_an_undeclared_address_that_floods_is_still_banned_as_a_whole(building: World, node: Node):
    building.request(node(hot(options(src=("203.0.113.8", 20001)), -2)))
    assert node.htables[Table.IP_BAN] == {"203.0.113.8": 1}
    assert building.request(node(options(src=("203.0.113.8", 20002)))).replies == []


def test_an_ipv6_site_is_limited_per_port_too(building: World, node: Node):
    for n in range(6):
        building.request(node(hot(options(src=("2001:db8:7::10", 40000)))))
    assert node.htables[Table.SITE_BAN] == {"2001:db8:7::10:40000": 1} and node.htables[Table.IP_BAN] == {
        "2001:db8:7::10": 2}
    assert building.request(node(options(src=("2001:db8:7::10", 40001)))).reply == (200, "OK")


def test_ordinary_traffic_of_a_site_pays_nothing_new(building: World, node: Node):
    """pike within its limit: no site lookup (no read of the copy), no counter, no table."""
    for port in range(20001, 20011):
        assert building.request(node(options(src=(SITE_IP, port)))).reply == (200, "OK")
    assert building.directory.peer_reads == 0
    assert Table.SITE_FLOOD not in node.htables and Table.SITE_BAN not in node.htables


def test_a_banned_site_phone_with_a_registration_still_calls_112(building: World, node: Node):
    node.htables[Table.REGISTERED] = {f"{SITE_IP}:20001": 1}
    for n in range(6):
        building.request(node(hot(options(src=(SITE_IP, 20001)))))
    assert f"{SITE_IP}:20001" in node.htables[Table.SITE_BAN]
    call = building.request(node(FakeKSR("INVITE", "sip:112@acme.test", src=SITE_IP, sport=20001)))
    assert call.challenges == [("acme.test", 1)]  # the emergency route took it
    ordinary = building.request(node(FakeKSR("INVITE", "sip:0612345678@acme.test", src=SITE_IP, sport=20001)))
    assert ordinary.replies == [] and ordinary.challenges == []


def test_an_authenticated_user_flooding_from_many_ports_is_banned_alone(building: World, node: Node):
    for port in range(20001, 20006):  # one request per port: no port reaches its limit
        assert building.request(node(hot(register(src=(SITE_IP, port))))).saved
    over = building.request(node(hot(register(src=(SITE_IP, 20006)))))
    assert over.reply == (503, "Too Many Requests From This Phone") and not over.saved
    assert "Retry-After: 300" in over.reply_headers
    assert f"{SITE_IP}|2001@acme.test" in node.htables[Table.SITE_BAN]
    assert "2001@acme.test" in over.logged("warn")[0]
    # that user, from any port of the site: dropped at the gate; another user: served
    again = building.request(node(register(src=(SITE_IP, 20099))))
    assert again.replies == [] and again.digest_checks == []
    assert building.request(node(register(src=(SITE_IP, 20100), user="2002"))).saved
    # the same user from another address is another matter
    assert building.request(node(register(src=("127.0.1.51", 40000)))).saved


def test_nobody_gets_a_member_banned_by_sending_in_its_name(building: World, node: Node):
    """Only a passed digest check counts a user: wrong passwords in 2001's name, from many ports
    of the site while it floods, ban no user (they are password guesses, counted as such)."""
    for port in range(20001, 20021):
        building.request(node(hot(wrong(src=(SITE_IP, port)))))
    assert not any("|" in key for key in node.htables.get(Table.SITE_BAN, {}))
    assert not any("|" in key for key in node.htables.get(Table.SITE_FLOOD, {}))


def test_at_a_site_a_guesser_rotating_users_blocks_its_own_port_not_the_building(building: World, node: Node):
    guesser = (SITE_IP, 20001)
    lines = []
    for n in range(30):  # AUTH_FAIL_MAX x 10 made-up users, one try each
        lines += building.request(node(register(src=guesser, user=f"2{n + 100:03d}"))).logged("warn")
    assert [line for line in lines if f"auth from {SITE_IP}:20001 for any user blocked" in line], lines
    assert building.request(node(register(src=guesser))).reply == (403, "Too Many Failed Attempts")
    assert f"{SITE_IP}:20001|*" in node.htables[Table.AUTH_BAN]
    assert f"{SITE_IP}|*" not in node.htables[Table.AUTH_BAN]
    # another company's phone of the building, with its right password
    assert building.request(node(register(src=(SITE_IP, 20002), user="2002"))).saved


def test_a_site_with_the_store_never_reached_is_treated_as_today(building: World, node: Node):
    building.directory.down = True
    flood = building.request(node(hot(options(src=(SITE_IP, 20001)), -2)))
    assert flood.reply == (200, "OK") and Table.IP_BAN not in node.htables  # nobody banned, as for any address


def test_sites_are_read_with_the_peers_and_a_store_down_since_start_is_not_asked_at_every_digest(building: World):
    clock = [0.0]
    reads = []
    real = building.directory.sites
    building.directory.sites = lambda: reads.append(1) or real()
    peers = TrustedPeers(building.directory, clock=lambda: clock[0])
    assert peers.site(SITE_IP) == "station-f" and peers.site("203.0.113.8") is None and len(reads) == 1
    building.directory.site_list = ()
    clock[0] += PEERS_TTL_S
    assert peers.site(SITE_IP) is None and len(reads) == 2  # a removed site is gone within PEERS_TTL_S
    down = TrustedPeers(building.directory, clock=lambda: clock[0])
    building.directory.down = True
    attempts = []
    asked = building.directory.peer_addresses
    building.directory.peer_addresses = lambda: attempts.append(1) or asked()
    for _ in range(5):
        assert down.site(SITE_IP) is None
    assert len(attempts) == 1
    clock[0] += PEERS_TTL_S
    assert down.site(SITE_IP) is None and len(attempts) == 2
