"""A site of two proxies sharing one location (kamailio.cfg "Site", kemi.sip.site), in the network of
tests/netns.py: proxy A on 198.51.100.10 and proxy B on 198.51.100.11, both in the core namespace with
one Redis (usrloc db_mode 3 on db_redis: LOCATION_STORE=redis), the office's phones behind the
router's masquerade (which lets in only the address a phone spoke to), the carrier beside them.

A phone registered through A is reached by calls arriving at B (a phone's internal call, a carrier's
DID call): B sends them to A by the Path A saved, and A relays them through the phone's NAT. Nothing
else is relayed for a sibling, and a Route a phone or a carrier writes is never followed. A restart
of A forgets no registration; an un-registration or an expiry on one proxy is seen by the other.
Root only (CI runs as root).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests import netns
from tests.harness import Phone, Proxy, RedisServer, Sipp, admin, run_in_netns, send_raw, status_line, wait_for
from tests.netns import CORE, PHONE_A, PHONE_B, ROUTER_WAN, TRUNK, Network

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=netns.available() or "")

CORE_B = "198.51.100.11"  # proxy B, on the core network beside A (CORE)
MEDIA_PORT = 6000
LOCATION_DB = 1  # LOCATION_REDIS_DB's default (scripts/env.sh)
PCAP = "/usr/share/sip-tester/g711a.pcap"
ENOUGH = 150  # of its 236 packets, each way
OFFICE = """
companies:
  - id: acme
    name: Acme Conseil
    domain: acme.test
    main_number: "+33142685300"
    extensions:
      - {number: "2001", name: Alice, password: alice-site-1, did: "+33142685301"}
      - {number: "2002", name: Bruno, password: bruno-site-2, did: "+33142685302"}
    dids:
      - {number: "+33142685301", target: "2001"}
      - {number: "+33142685302", target: "2002"}
trunks:
  - {name: carrier, host: %s, port: 5060, priority: 1}
""" % TRUNK
ALICE = Phone("2001", "acme.test", "alice-site-1", PHONE_A, 5060)
BRUNO = Phone("2002", "acme.test", "bruno-site-2", PHONE_B, 5060)
PLAY = f'<nop><action><exec play_pcap_audio="{PCAP}"/></action></nop>'
CALLER_PLAYS = ('<nop><action><log message="FINAL [$code] [$reason]"/></action></nop>\n  <pause/>',
                '<nop><action><log message="FINAL [$code] [$reason]"/></action></nop>\n  ' + PLAY + '\n  <pause/>')
CALLEE_PLAYS = ('<recv request="ACK" crlf="true"/>', '<recv request="ACK" crlf="true"/>\n  ' + PLAY)


@pytest.fixture(scope="module")
def net():
    with Network("site") as network:
        network.address(network.core, "br0", CORE_B)
        yield network


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("site")


@pytest.fixture(scope="module")
def redis(net, workdir):
    # in the proxies' namespace: db_redis connects over TCP only (kemi.store.db_redis)
    server = RedisServer(workdir, netns=net.core).start()
    office = workdir / "office.yaml"
    office.write_text(OFFICE)
    admin(server.socket_url(), "load", str(office))
    yield server
    server.stop()


def site_proxy(net: Network, workdir, redis: RedisServer, ip: str, sibling: str, server_id: str, port: int) -> Proxy:
    # no keepalives during these calls: a SIPp callee would take an OPTIONS for a call it must fail
    # (each on a port of its own: the harness names its pid file, log and control socket by port)
    return Proxy(workdir, redis.url, ip=ip, netns=net.core, port=port, LOCATION_STORE="redis",
                 SERVER_ID=server_id, SITE_PROXIES=sibling, NATPING_S="3600", LOCATION_TIMER_S="5")


@pytest.fixture(scope="module")
def site(net, workdir, redis):
    a = site_proxy(net, workdir, redis, CORE, CORE_B, "1", 5060).start()
    b = site_proxy(net, workdir, redis, CORE_B, CORE, "2", 5080).start()
    yield a, b
    a.stop()
    b.stop()


class Office:
    def __init__(self, net: Network, workdir):
        self.net, self.workdir = net, workdir
        self.running: list[Sipp] = []

    def sipp(self, scenario: str, where: str, ip: str, *args: str, edits=(), port: int = 5060,
             media_port: int = MEDIA_PORT) -> Sipp:
        sipp = Sipp(scenario, ["-mi", ip, "-mp", str(media_port), *args], self.workdir, ip=ip, port=port,
                    edits=tuple(edits), netns=where)
        self.running.append(sipp)
        return sipp

    def register(self, phone: Phone, proxy: Proxy, expires: int = 300, edits=()) -> None:
        result = self.sipp("register.xml", self.net.office, phone.ip, *phone.auth_args(), "-set", "expires",
                           str(expires), edits=edits).start(f"{proxy.ip}:{proxy.port}").wait()
        assert result.final == (200, "OK"), result.log + result.stdout

    def answer(self, phone: Phone, edits=()) -> Sipp:
        return self.sipp("answer.xml", self.net.office, phone.ip, "-set", "ring", "200", edits=edits).start(timeout=40)

    def stop(self) -> None:
        for sipp in self.running:
            sipp.stop()


@pytest.fixture
def office(net, workdir):
    made = Office(net, workdir)
    yield made
    made.stop()


def contacts(redis: RedisServer, phone: Phone) -> list[dict]:
    """The location rows of the phone's AOR, as db_redis keeps them (kamailio.cfg, Site)."""
    client = redis.client(LOCATION_DB)
    rows = []
    for key in client.smembers(f"location:usrdom::{phone.user}:{phone.domain}"):
        row = client.hgetall(key)
        if row:
            rows.append({k.decode(): v.decode() for k, v in row.items()})
    return rows


# Each reply is relayed by the worker that read it: now and then a 180 arrives after its call's 200
# (two hops here, A then B). SIPp would abort the call on that late 180 and send its BYE nowhere; it
# ignores it instead (as bench/cpu_per_call.py's TOLERANT), and the call is judged by its answers.
TOLERANT = ("-default_behaviors", "all,-abortunexp")


def did_call(office: Office, proxy: Proxy, did: str, edits=(), hold_ms: int = 300) -> Sipp:
    return office.sipp("inbound.xml", office.net.carrier, TRUNK, "-s", "0612345678", "-set", "from_domain",
                       "carrier.example", "-set", "dial", did, "-set", "company", "", "-d", str(hold_ms),
                       *TOLERANT, edits=edits).start(f"{proxy.ip}:{proxy.port}", timeout=40)


def test_a_phone_registered_on_a_is_saved_with_a_path_of_a_and_answers_calls_arriving_at_b(net, office, site, redis):
    a, b = site
    office.register(ALICE, a)
    office.register(BRUNO, b)
    (alice,) = contacts(redis, ALICE)
    # A's own Path, with where the phone really is (its router's address and mapped port)
    path = re.fullmatch(rf"<sip:{re.escape(CORE)}:5060;lr;received=sip:{re.escape(ROUTER_WAN)}:(\d+)>", alice["path"])
    assert path and 20000 <= int(path.group(1)) <= 29999, alice
    assert alice["server_id"] == "1" and alice["socket"] == f"udp:{CORE}:5060", alice
    (bruno,) = contacts(redis, BRUNO)
    assert CORE_B in bruno["path"] and bruno["server_id"] == "2", bruno
    # Bruno's phone (behind the same NAT, registered on B) calls Alice: B sends the call to A
    to_alice = net.count_udp(net.office, CORE, PHONE_A, 5060)
    callee = office.answer(ALICE)
    caller = office.sipp("call.xml", net.office, BRUNO.ip, *BRUNO.auth_args(), "-set", "dial", "2001",
                         "-d", "300", *TOLERANT).start(f"{b.ip}:{b.port}", timeout=30)
    result = caller.wait(40)
    assert result.final == (200, "OK"), result.log + result.stdout
    assert "BYE 200" in result.log  # Bruno's BYE went B -> A -> Alice, and her answer came back
    answered = callee.wait(10)
    assert "HUNGUP" in answered.log
    assert to_alice.packets() >= 3  # INVITE, ACK, BYE: all through her NAT, from A (B's would be dropped)


def test_a_did_call_arriving_at_b_reaches_the_phone_on_a_with_audio_both_ways(net, office, site):
    a, b = site
    office.register(ALICE, a)
    to_alice = net.count_udp(net.office, CORE, PHONE_A, MEDIA_PORT)  # A's relay, through her NAT
    to_trunk = net.count_udp(net.carrier, CORE_B, TRUNK, MEDIA_PORT)  # B's relay
    callee = office.answer(ALICE, edits=[CALLEE_PLAYS])
    trunk = did_call(office, b, "+33142685301", edits=[CALLER_PLAYS], hold_ms=6500)
    result = trunk.wait(60)
    assert result.final == (200, "OK"), result.log + result.stdout
    wait_for(lambda: to_alice.packets() >= ENOUGH and to_trunk.packets() >= ENOUGH, 15, "RTP both ways")
    print(f"\nDID call at B to a phone on A: to the phone {to_alice.packets()}, to the trunk {to_trunk.packets()}")
    assert "HUNGUP" in callee.wait(10).log  # the carrier's BYE reached her through B and A


def test_a_restart_of_a_forgets_no_registration(net, office, site, redis):
    a, b = site
    office.register(ALICE, a)
    before = contacts(redis, ALICE)
    a.stop()
    a.start()
    assert contacts(redis, ALICE) == before
    callee = office.answer(ALICE)
    result = did_call(office, b, "+33142685301").wait(40)  # Alice did not register again
    assert result.final == (200, "OK"), result.log + result.stdout
    assert "HUNGUP" in callee.wait(10).log


def test_an_unregistration_on_a_is_seen_by_b(office, site, redis):
    a, b = site
    office.register(ALICE, a)
    assert contacts(redis, ALICE)
    office.register(ALICE, a, expires=0)
    assert contacts(redis, ALICE) == []
    result = did_call(office, b, "+33142685301").wait(40)
    assert result.final == (480, "Extension Not Registered"), result.log


def test_an_expired_contact_is_neither_rung_nor_kept(office, site, redis):
    a, b = site
    office.register(ALICE, a)
    (row,) = contacts(redis, ALICE)
    key = f"location:entry::{row['ruid']}"
    # its registration ran out a minute ago (usrloc keeps expires as local time)
    redis.client(LOCATION_DB).hset(key, "expires", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 60)))
    result = did_call(office, b, "+33142685301").wait(40)
    assert result.final == (480, "Extension Not Registered"), result.log
    wait_for(lambda: not redis.client(LOCATION_DB).exists(key), 15, "the expired contact removed by the usrloc timer")


def test_a_path_the_phone_sends_is_not_saved(office, site, redis):
    a, _ = site
    forged = f"Path: <sip:{TRUNK}:5060;lr;received=sip:{TRUNK}:5060>\n      Max-Forwards: 70"
    office.register(ALICE, a, edits=[("Max-Forwards: 70", forged)])
    (row,) = contacts(redis, ALICE)
    assert row["path"].startswith(f"<sip:{CORE}:5060;lr;received=sip:{ROUTER_WAN}:") and TRUNK not in row["path"], row


# -- what A relays for whom: a Route to A is followed only from a sibling, only to a phone ------------------
def invite(route: str | None, ruri: str = f"sip:2001@{PHONE_A}:5060", src: str = CORE_B) -> str:
    call_id = uuid.uuid4().hex
    return (f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:src_port_placeholder;branch=z9hG4bK{call_id[:12]};rport\r\n"
            + (f"Route: {route}\r\n" if route else "") +
            f"From: <sip:0612345678@carrier.example>;tag={call_id[:8]}\r\n"
            f"To: <sip:2001@acme.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:0612345678@{src}:src_port_placeholder>\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("src, route, expected", [
    # from a sibling's address: only one Route, ours, with where the phone is
    (CORE_B, f"<sip:{CORE}:5060;lr;received=sip:{TRUNK}:5060>", (403, "Not Routed By A Path Of Ours")),  # a trunk
    (CORE_B, f"<sip:{CORE}:5060;lr;received=sip:{TRUNK}:5070>", (403, "Not Routed By A Path Of Ours")),  # its host
    (CORE_B, f"<sip:{CORE}:5060;lr;received=sip:{CORE}:5060>", (403, "Not Routed By A Path Of Ours")),  # A itself
    (CORE_B, f"<sip:{CORE}:5060;lr>, <sip:{TRUNK}:5060;lr>", (403, "Not Routed By A Path Of Ours")),
    (CORE_B, f"<sip:{CORE}:5060;lr;received=sip:{PHONE_A}:5060>, <sip:{TRUNK}:5060;lr>",
     (403, "Not Routed By A Path Of Ours")),
    (CORE_B, f"<sip:{CORE}:5060;lr>", (403, "Not Routed By A Path Of Ours")),
    (CORE_B, None, (403, "Not Routed By A Path Of Ours")),
    (CORE_B, f"<sip:{TRUNK}:5060;lr;received=sip:{TRUNK}:5060>", (403, "Not Routed By A Path Of Ours")),
    # from the carrier: an inbound call, routed by its number, never by its Route
    (TRUNK, f"<sip:{CORE}:5060;lr;received=sip:{TRUNK}:5070>", None),
    # from a phone: a call of its own (challenged), its Route dropped
    (PHONE_A, f"<sip:{CORE}:5060;lr;received=sip:{TRUNK}:5070>", (407, "Proxy Authentication Required")),
    (PHONE_A, f"<sip:{TRUNK}:5070;lr>", (407, "Proxy Authentication Required")),
])
def test_a_route_to_a_is_followed_only_from_a_sibling_and_only_to_a_phone(net, site, office, src, route, expected):
    a, _ = site
    victim = office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "0", port=5070,
                         media_port=MEDIA_PORT + 10).start(timeout=20)
    listener = office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "0").start(timeout=20)
    where = net.core if src in (CORE, CORE_B) else net.carrier if src == TRUNK else net.office
    answer = run_in_netns(where, lambda: send_raw(a, invite(route, src=src), src=src, timeout=4))
    got = status_line(answer)
    if expected is not None:
        assert got == expected, answer
    else:
        assert got is None or got[0] >= 400, answer  # refused, or nothing sent at all (408 from tm)
    time.sleep(0.5)
    victim.stop()
    listener.stop()
    for peer in (victim, listener):
        assert not peer.wait(5).received("INVITE"), f"{peer.ip}:{peer.port} received an INVITE"


def test_a_sibling_sends_calls_only(net, site):
    a, _ = site
    call_id = uuid.uuid4().hex
    register = (f"REGISTER sip:acme.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {CORE_B}:src_port_placeholder;branch=z9hG4bK{call_id[:12]};rport\r\n"
                f"From: <sip:2001@acme.test>;tag={call_id[:8]}\r\nTo: <sip:2001@acme.test>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:2001@{CORE_B}:5080>\r\n"
                f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    answer = run_in_netns(net.core, lambda: send_raw(a, register, src=CORE_B))
    assert status_line(answer) == (405, "A Sibling Proxy Sends Calls Only"), answer


@pytest.mark.parametrize("url, why", [
    ("unix:///run/redis/redis.sock?db=0", "a unix socket: db_redis 5.6 connects over TCP only"),
    ("redis://cowork-proxy:pw@127.0.0.1:6379/0", "ACL user 'cowork-proxy'"),
    ("rediss://127.0.0.1:6380/0", "TLS (rediss://)"),
])
def test_a_proxy_of_a_site_does_not_start_with_a_redis_url_db_redis_cannot_use(tmp_path, url, why):
    """Started, it would keep its registrations to itself while its siblings look in Redis: 480 for
    every phone registered through it. scripts/kamailio.sh stops instead and says why."""
    proxy = Proxy(tmp_path, url, LOCATION_STORE="redis", RTPENGINE_SOCK="udp:127.0.0.1:9")
    with pytest.raises(RuntimeError) as refused:
        proxy.start()
    proxy.stop()
    assert f"the site's shared registrations (LOCATION_STORE=redis) cannot use that Redis URL: {why}" \
        in str(refused.value)
