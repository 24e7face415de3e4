"""A coworking building behind one NAT address, declared as a site (`sites:` in provisioning).

The office of tests/netns.py is the building: its router masquerades every phone to its one public
address (198.51.100.2), each phone on a port of its own. One neighbour's phone misbehaves (floods,
guesses passwords with made-up users, sends scanner traffic): it is stopped, and every other phone
of the building keeps registering and calling, 112 included; what the trunks RECEIVED is what the
tests assert. A stranger (an undeclared address) that floods is still banned as a whole. Root only.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from kemi.sip.gate import PEERS_TTL_S
from tests import netns
from tests.harness import Proxy, RedisServer, admin
from tests.netns import CORE, PHONE_A, PHONE_B, ROUTER_WAN, TRUNK, Network, run_in
from tests.sip.rawsip import Peer, Uac, call_id

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=netns.available() or "")

NEIGHBOUR = "192.168.50.12"  # a third device of the building, on the office LAN
STRANGER = "198.51.100.40"   # an address of nobody we know, on the public side
SOS_PORT = 5062              # the emergency trunk, beside the carrier's trunk
BUILDING = """
companies:
  - id: acme
    name: Acme Conseil
    domain: acme.test
    location: "Station F, 5 parvis Alan Turing, 75013 Paris"
    extensions:
      - {number: "2001", name: Alice, password: alice-site-1}
  - id: globex
    name: Globex Studio
    domain: globex.test
    location: "Station F, 5 parvis Alan Turing, 75013 Paris"
    extensions:
      - {number: "2001", name: Gaston, password: gaston-site-1}
  - id: initech
    name: Initech
    domain: initech.test
    location: "Station F, 5 parvis Alan Turing, 75013 Paris"
    extensions:
      - {number: "2001", name: Ines, password: ines-site-1}
  - id: hive
    name: Hive Desks
    domain: hive.test
    location: "Station F, 5 parvis Alan Turing, 75013 Paris"
    extensions:
%s
trunks:
  - {name: carrier, host: %s, port: 5060, priority: 1}
  - {name: sos, host: %s, port: %d, emergency: true, outbound: false}
sites:
  - name: station-f
    cidrs: ["%s/32"]
    companies: [acme, globex, initech, hive]
""" % ("\n".join(f'      - {{number: "{n}", name: Desk {n}, password: hive-desk-{n}}}' for n in range(2100, 2220)),
       TRUNK, TRUNK, SOS_PORT, ROUTER_WAN)
DESKS = range(2100, 2220)  # hive's phones: a whole floor that registers again after a power cut
ALICE = ("2001", "acme.test", "alice-site-1")
GASTON = ("2001", "globex.test", "gaston-site-1")
INES = ("2001", "initech.test", "ines-site-1")  # the neighbour
# pike as shipped (30 per 2 s); short bans so the module's tests stay independent of each other
GUARDED = dict(PIKE_REQS="30", PIKE_WINDOW_S="2", BAN_S="60", AUTH_FAIL_MAX="4", AUTH_FAIL_WINDOW_S="60",
               AUTH_BAN_S="60", SITE_PHONE_REQS="30", SITE_PHONE_WINDOW_S="2", NATPING_S="3600")


@pytest.fixture(scope="module")
def net():
    with Network("site") as network:
        network.ns(network.office, "ip", "addr", "add", f"{NEIGHBOUR}/24", "dev", "eth0")
        network.ns(network.carrier, "ip", "addr", "add", f"{STRANGER}/24", "dev", "eth0")
        yield network


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("site")


@pytest.fixture(scope="module")
def proxy(net, workdir):
    redis = RedisServer(workdir, unix_socket=True).start()
    office = workdir / "building.yaml"
    office.write_text(BUILDING)
    admin(redis.url, "load", str(office))
    kam = Proxy(workdir, redis.socket_url(), ip=CORE, netns=net.core, port=5060, **GUARDED).start()
    yield kam
    kam.stop()
    redis.stop()


class Building:
    """Phones (raw SIP user agents) on the office LAN and recording trunks on the carrier's side,
    each socket made in its namespace; all closed after the test."""

    def __init__(self, net: Network, proxy: Proxy):
        self.net, self.proxy = net, proxy
        self.open: list = []

    def phone(self, ip: str, where: str | None = None) -> Uac:
        uac = run_in(where or self.net.office, lambda: Uac(self.proxy, ip))
        self.open.append(uac)
        return uac

    def trunk(self, port: int = 5060) -> Peer:
        peer = run_in(self.net.carrier, lambda: Peer(TRUNK, port))
        self.open.append(peer)
        return peer

    def close(self) -> None:
        for thing in self.open:
            thing.close()


@pytest.fixture
def building(net, proxy):
    made = Building(net, proxy)
    yield made
    made.close()
    for user, domain, _ in (ALICE, GASTON, INES):  # each test's phones are new sockets: MAX_CONTACTS
        proxy.unregister(f"{user}@{domain}")


def flood(uac: Uac, count: int, seconds: float) -> int:
    """`count` OPTIONS from the phone's own socket, spread over about `seconds`; how many were
    answered (the proxy drops what it does not answer)."""
    answered, gap = 0, seconds / count
    uac.sock.setblocking(False)
    try:
        for _ in range(count):
            cid = uuid.uuid4().hex
            uac.send(uac.build("OPTIONS", f"sip:{uac.proxy.ip}:{uac.proxy.port}", from_uri=f"sip:flood@{uac.ip}",
                               to_uri=f"sip:{uac.proxy.ip}", cid=cid, from_tag=cid[:8], cseq=1))
            answered += _drain(uac.sock)
            time.sleep(gap)
        time.sleep(0.3)
        return answered + _drain(uac.sock)
    finally:
        uac.sock.setblocking(True)


def _drain(sock) -> int:
    got = 0
    while True:
        try:
            sock.recv(65535)
            got += 1
        except (BlockingIOError, ConnectionRefusedError):
            return got


def answered(uac: Uac) -> bool:
    return uac.options(timeout=1.0).final == (200, "OK")


def the_building_works(building: Building, alice: Uac, gaston: Uac, note: str) -> None:
    """Every other phone of the building registers, calls out and calls 112; the trunks received the calls."""
    assert alice.register(*ALICE).final == (200, "OK"), f"{note}: Alice could not register"
    assert gaston.register(*GASTON).final == (200, "OK"), f"{note}: Gaston could not register"
    newcomer = building.phone(PHONE_B)  # a phone switched on just now: a port the proxy never saw
    assert newcomer.register(*GASTON).final == (200, "OK"), f"{note}: a new phone could not register"
    carrier, psap = building.trunk(), building.trunk(SOS_PORT)
    call = gaston.invite(*GASTON, "0145678901")
    assert carrier.wait_for("INVITE", call_id(call.last_sent)), f"{note}: Gaston's call never reached the trunk"
    sos = alice.invite(*ALICE, "112")
    assert psap.wait_for("INVITE", call_id(sos.last_sent)), f"{note}: Alice's 112 never reached the PSAP"
    carrier.close(), psap.close()
    building.open.remove(carrier), building.open.remove(psap)


def test_after_a_power_cut_every_phone_of_the_building_registers_again_at_once(building, proxy):
    """120 phones register in the same second or two, each from its own port of the router's one
    address: far over pike's limit for the address, so counted per phone, and none is refused."""
    phones = [building.phone(PHONE_A if n % 2 else PHONE_B) for n in DESKS]
    mark = proxy.mark()
    results: dict[int, tuple | None] = {}

    def register(batch):
        for n, phone in batch:
            results[n] = phone.register(str(n), "hive.test", f"hive-desk-{n}", timeout=4).final

    pairs = list(zip(DESKS, phones))
    workers = [threading.Thread(target=register, args=(pairs[i::12],)) for i in range(12)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    took = time.monotonic() - started
    refused = {n: final for n, final in results.items() if final != (200, "OK")}
    print(f"\npower cut: {len(results)} phones registered again in {took:.1f}s through one address, "
          f"{len(refused)} refused")
    log = proxy.log_since(mark)
    assert not refused and len(results) == len(DESKS), (refused, log[-3000:])
    assert "PIKE - BLOCKing" in log, "the storm never reached pike's limit for the address: it tested nothing"
    assert "banned" not in log, log[-3000:]
    alice, gaston = building.phone(PHONE_A), building.phone(PHONE_B)
    the_building_works(building, alice, gaston, "right after the power cut")
    for n in DESKS:
        proxy.unregister(f"{n}@hive.test")


def test_a_neighbour_flooding_is_stopped_and_the_rest_of_the_building_keeps_working(building, proxy):
    alice, gaston, neighbour = building.phone(PHONE_A), building.phone(PHONE_B), building.phone(NEIGHBOUR)
    assert neighbour.register(*INES).final == (200, "OK"), "control: the neighbour is a member phone"
    mark = proxy.mark()
    sent, got = 300, []
    flooder = threading.Thread(target=lambda: got.append(flood(neighbour, sent, 3.0)))
    flooder.start()
    try:
        time.sleep(0.8)  # the address is over pike's limit by now: the rest happens while it floods
        the_building_works(building, alice, gaston, "during the flood")
    finally:
        flooder.join(30)
    assert got and got[0] < sent / 2, f"the flood was served: {got} of {sent}"
    assert not answered(neighbour), "the flooding phone is still served"
    log = proxy.log_since(mark)
    assert "(site station-f): that port banned for 60s; the site's other phones are not" in log, log[-3000:]
    assert f"{ROUTER_WAN} banned" not in log, "the building's address was banned"
    the_building_works(building, alice, gaston, "after the flood")
    # the banned neighbour's own emergency call still goes through (a registered phone's, today's rule)
    psap = building.trunk(SOS_PORT)
    sos = neighbour.invite(*INES, "112")
    assert psap.wait_for("INVITE", call_id(sos.last_sent)), sos.answers


def test_a_neighbour_guessing_with_made_up_users_blocks_its_own_port_not_the_building(building, proxy):
    alice, gaston, guesser = building.phone(PHONE_A), building.phone(PHONE_B), building.phone(NEIGHBOUR)
    mark = proxy.mark()
    for n in range(4 * 10):  # AUTH_FAIL_MAX x 10 users that do not exist, one try each
        tried = guesser.register(f"2{n + 100:03d}", "acme.test", "guess")
        assert tried.final == (403, "Forbidden"), (n, tried.sent, tried.answers, proxy.log_since(mark)[-3000:])
        time.sleep(0.3)  # well under the flood limit: this is guessing, not flooding
    refused = guesser.register(*GASTON)
    assert refused.final == (403, "Too Many Failed Attempts"), "control: the guesser's port is blocked for anyone"
    assert f"auth from {ROUTER_WAN}:" in proxy.log_since(mark) and "for any user blocked" in proxy.log_since(mark)
    # another company's phone of the building, right password: 200, where it used to get 403
    the_building_works(building, alice, gaston, "after the guessing")


def test_scanner_traffic_from_a_neighbour_is_dropped_and_nobody_else_notices(building, proxy):
    alice, gaston, scanner = building.phone(PHONE_A), building.phone(PHONE_B), building.phone(NEIGHBOUR)
    for _ in range(20):
        probe = scanner.options(extra=["User-Agent: friendly-scanner"], timeout=0.3)
        assert probe.answers == []
    the_building_works(building, alice, gaston, "after the scanner")


def test_a_stranger_flooding_is_still_banned_as_a_whole(building, proxy):
    stranger = building.phone(STRANGER, where=building.net.carrier)
    assert answered(stranger), "control: the stranger is served before it floods"
    mark = proxy.mark()
    assert flood(stranger, 300, 3.0) < 300
    other_port = building.phone(STRANGER, where=building.net.carrier)
    assert not answered(other_port), "another port of the flooding stranger is still served"
    assert f"{STRANGER} banned for 60s" in proxy.log_since(mark)


def test_control_the_same_building_undeclared_is_locked_out_by_one_phone(building, proxy, workdir):
    """The site removed (`sites: []`), the proxy's copy follows within PEERS_TTL_S and the address
    is again an ordinary sender: the same flood bans it, and with it every phone of the building.
    (Last in the module: the address stays banned for BAN_S.)"""
    undeclared = workdir / "no-sites.yaml"
    undeclared.write_text("sites: []\n")
    admin(proxy.redis_url, "load", str(undeclared))
    time.sleep(PEERS_TTL_S + 1)
    alice, neighbour = building.phone(PHONE_A), building.phone(NEIGHBOUR)
    mark = proxy.mark()
    flood(neighbour, 300, 3.0)
    assert f"{ROUTER_WAN} banned for 60s" in proxy.log_since(mark)
    assert alice.register(*ALICE).answers == [], "an undeclared building's other phones are dropped too"
