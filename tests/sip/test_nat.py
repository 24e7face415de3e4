"""Phones behind an office NAT, media through rtpengine, in a realistic network (tests/netns.py).

The office's phones (SIPp, and baresip from Debian) sit on 192.168.50.0/24 behind a router that
masquerades them (nftables); the proxy and rtpengine are on the public side, the carrier's trunk
in a namespace of its own. Each call plays SIPp's G.711 recording both ways, and nftables
counters in the receiving namespaces count the RTP packets that really arrive from rtpengine's
address: in the office, after the router translated them back. Root only (CI runs as root).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests import netns
from tests.harness import Phone, Proxy, RedisServer, Sipp, admin, wait_for
from tests.netns import CORE, MEDIA, PHONE_A, PHONE_B, ROUTER_WAN, TRUNK, Network
from tests.sip.product import Baresip

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=netns.available() or "")

PCAP = "/usr/share/sip-tester/g711a.pcap"  # SIPp's sample: 236 RTP packets of G.711 A-law, 20 ms each
PCAP_PACKETS = 236
ENOUGH = 150  # packets that must arrive each way (the first ones may go before the far end latched)
HOLD_MS = 6500  # the caller keeps the call up while both recordings play
MEDIA_PORT = 6000
RECEPTION_PORT = 5064  # the receptionist stand-in, beside the announcer on the media server's address
PRIVATE = re.compile(r"\b(?:10\.\d+|172\.(?:1[6-9]|2\d|3[01])|192\.168)\.\d+\.\d+")
OFFICE = """
companies:
  - id: acme
    name: Acme Conseil
    domain: acme.test
    main_number: "+33142685300"
    extensions:
      - {number: "2001", name: Alice, password: alice-nat-1, did: "+33142685301"}
      - {number: "2002", name: Bruno, password: bruno-nat-2, did: "+33142685302"}
      - {number: "2003", name: Chloe, password: chloe-nat-3, ring_timeout: 5}
    dids:
      - {number: "+33142685301", target: "2001"}
      - {number: "+33142685302", target: "2002"}
      - {number: "+33142685303", target: "2003", fallback: receptionist}
    receptionist: reception
trunks:
  - {name: carrier, host: %s, port: 5060, priority: 1}
media_servers:
  - {name: announcer, host: %s, port: 5060, role: announcement}
  - {name: reception, host: %s, port: %d, role: receptionist}
""" % (TRUNK, MEDIA, MEDIA, RECEPTION_PORT)
ALICE = Phone("2001", "acme.test", "alice-nat-1", PHONE_A, 5060)
CHLOE = Phone("2003", "acme.test", "chloe-nat-3", PHONE_A, 5060)  # her DID falls back to the receptionist
BRUNO = Phone("2002", "acme.test", "bruno-nat-2", PHONE_B, 5060)
PLAY = f'<nop><action><exec play_pcap_audio="{PCAP}"/></action></nop>'
# call.xml / inbound.xml / answer.xml with the recording played once the call is up
CALLER_PLAYS = ('<nop><action><log message="FINAL [$code] [$reason]"/></action></nop>\n  <pause/>',
                '<nop><action><log message="FINAL [$code] [$reason]"/></action></nop>\n  ' + PLAY + '\n  <pause/>')
CALLEE_PLAYS = ('<recv request="ACK" crlf="true"/>', '<recv request="ACK" crlf="true"/>\n  ' + PLAY)
CALL_ID_LINE = re.compile(r"^(?:call-id|i)\s*:[^\n]*\n?", re.I | re.M)


def naming(messages: list[str], *addresses: str, private: bool = False) -> list[str]:
    """The first lines of the messages that name one of the addresses (or, private: any private
    address) anywhere but in the Call-ID (topology hiding, kamailio.cfg: SIPp writes its own address
    in its Call-IDs, which the proxy passes on as they are)."""
    named = re.compile("|".join(re.escape(a) + r"(?![0-9])" for a in addresses))
    return [m.split("\n", 1)[0] for m in messages
            if named.search(CALL_ID_LINE.sub("", m)) or (private and PRIVATE.search(CALL_ID_LINE.sub("", m)))]


@pytest.fixture(scope="module")
def net():
    with Network("nat") as network:
        yield network


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("nat")


@pytest.fixture(scope="module")
def redis(workdir):
    server = RedisServer(workdir, unix_socket=True).start()
    office = workdir / "office.yaml"
    office.write_text(OFFICE)
    admin(server.url, "load", str(office))
    yield server
    server.stop()


def start_proxy(net: Network, workdir, redis: RedisServer, port: int, **env: str) -> Proxy:
    return Proxy(workdir, redis.socket_url(), ip=CORE, netns=net.core, port=port, **env).start()


@pytest.fixture(scope="module")
def proxy(net, workdir, redis):
    # no keepalives during these calls: a SIPp callee would take an OPTIONS for a call it must fail
    kam = start_proxy(net, workdir, redis, 5060, NATPING_S="3600")
    yield kam
    kam.stop()


class Office:
    """SIPp peers in the network's namespaces, stopped after each test."""

    def __init__(self, net: Network, workdir, proxy: Proxy):
        self.net, self.workdir, self.proxy = net, workdir, proxy
        self.running: list[Sipp] = []

    def sipp(self, scenario: str, where: str, ip: str, *args: str, edits=(), port: int = 5060) -> Sipp:
        sipp = Sipp(scenario, ["-mi", ip, "-mp", str(MEDIA_PORT), *args], self.workdir, ip=ip, port=port,
                    edits=tuple(edits), netns=where)
        self.running.append(sipp)
        return sipp

    @property
    def target(self) -> str:
        return f"{self.proxy.ip}:{self.proxy.port}"

    def register(self, phone: Phone) -> None:
        result = self.sipp("register.xml", self.net.office, phone.ip, *phone.auth_args(),
                           "-set", "expires", "300").start(self.target).wait()
        assert result.final == (200, "OK"), result.log + result.stdout

    def stop(self) -> None:
        for sipp in self.running:
            sipp.stop()


@pytest.fixture
def office(net, workdir, proxy):
    made = Office(net, workdir, proxy)
    yield made
    made.stop()


def sdp_addresses(messages: list[str]) -> list[str]:
    return [line for message in messages for line in message.splitlines() if line.startswith(("c=", "o="))]


def assert_both_ways(there, back) -> tuple[int, int]:
    """The two counters, once the recordings had time to arrive; both above ENOUGH."""
    wait_for(lambda: there.packets() >= ENOUGH and back.packets() >= ENOUGH, 15, "RTP both ways")
    counts = there.packets(), back.packets()
    assert all(ENOUGH <= n <= PCAP_PACKETS for n in counts), counts
    return counts


def test_a_phone_behind_the_nat_is_saved_with_the_routers_address(office, proxy):
    office.register(ALICE)
    lookup = proxy.kamcmd("ul.lookup", "location", ALICE.aor)
    assert f"sip:2001@{PHONE_A}:5060" in lookup  # the Contact as the phone wrote it: its R-URI
    received = re.search(r"Received: sip:([0-9.]+):([0-9]+)", lookup)
    assert received and received.group(1) == ROUTER_WAN, lookup
    assert 20000 <= int(received.group(2)) <= 29999, lookup  # the port the router mapped


def test_two_office_phones_call_each_other_with_rtp_both_ways(net, office, proxy):
    office.register(ALICE)
    office.register(BRUNO)
    to_alice = net.count_udp(net.office, CORE, PHONE_A, MEDIA_PORT)
    to_bruno = net.count_udp(net.office, CORE, PHONE_B, MEDIA_PORT)
    callee = office.sipp("answer.xml", net.office, BRUNO.ip, "-set", "ring", "200", edits=[CALLEE_PLAYS]).start(timeout=40)
    caller = office.sipp("call.xml", net.office, ALICE.ip, *ALICE.auth_args(), "-set", "dial", "2002",
                         "-d", str(HOLD_MS), edits=[CALLER_PLAYS]).start(office.target, timeout=40)
    result = caller.wait(60)
    assert result.final == (200, "OK"), result.log + result.stdout
    assert "BYE 200" in result.log  # the BYE went to Bruno through his NAT, and its answer came back
    print(f"\nphone<->phone through the NAT: to Alice {to_alice.packets()}, to Bruno {to_bruno.packets()}")
    assert_both_ways(to_alice, to_bruno)
    answered = callee.wait(10)
    assert "HUNGUP" in answered.log
    seen = sdp_addresses(answered.received("INVITE"))  # the other phone, behind another NAT, sees rtpengine
    assert seen and all(line.endswith(CORE) for line in seen), seen


def test_a_did_call_from_the_trunk_rings_an_office_phone_with_rtp_both_ways(net, office, proxy):
    office.register(BRUNO)
    to_bruno = net.count_udp(net.office, CORE, PHONE_B, MEDIA_PORT)
    to_trunk = net.count_udp(net.carrier, CORE, TRUNK, MEDIA_PORT)
    callee = office.sipp("answer.xml", net.office, BRUNO.ip, "-set", "ring", "200", edits=[CALLEE_PLAYS]).start(timeout=40)
    trunk = office.sipp("inbound.xml", net.carrier, TRUNK, "-s", "0612345678", "-set", "from_domain", "carrier.example",
                        "-set", "dial", "+33142685302", "-set", "company", "", "-d", str(HOLD_MS),
                        edits=[CALLER_PLAYS]).start(office.target, timeout=40)
    result = trunk.wait(60)
    assert result.final == (200, "OK"), result.log + result.stdout
    counts = assert_both_ways(to_bruno, to_trunk)
    print(f"\nDID call through the NAT: to the phone {counts[0]}, to the trunk {counts[1]}")
    answered = callee.wait(10)
    assert "HUNGUP" in answered.log  # the trunk's BYE reached the phone through its NAT
    # the phone saw only the proxy, the trunk nothing of the office (its NAT's address neither)
    assert not naming(answered.received("INVITE") + answered.received("ACK") + answered.received("BYE"), TRUNK)
    assert not naming(result.received("SIP/2.0"), PHONE_B, ROUTER_WAN, private=True)
    seen = sdp_addresses(result.received("SIP/2.0"))
    assert seen and not any(PRIVATE.search(line) for line in seen), seen
    assert all(line.endswith(CORE) for line in seen), seen


def test_an_office_phone_calls_out_to_the_trunk_with_rtp_both_ways(net, office, proxy):
    office.register(ALICE)
    to_alice = net.count_udp(net.office, CORE, PHONE_A, MEDIA_PORT)
    to_trunk = net.count_udp(net.carrier, CORE, TRUNK, MEDIA_PORT)
    trunk = office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "200", edits=[CALLEE_PLAYS]).start(timeout=40)
    caller = office.sipp("call.xml", net.office, ALICE.ip, *ALICE.auth_args(), "-set", "dial", "0145678901",
                         "-d", str(HOLD_MS), edits=[CALLER_PLAYS]).start(office.target, timeout=40)
    result = caller.wait(60)
    assert result.final == (200, "OK"), result.log + result.stdout
    counts = assert_both_ways(to_alice, to_trunk)
    print(f"\noutbound call through the NAT: to the phone {counts[0]}, to the trunk {counts[1]}")
    got = trunk.wait(10)
    assert "HUNGUP" in got.log
    messages = got.received("INVITE") + got.received("ACK") + got.received("BYE")
    seen = sdp_addresses(messages)
    assert seen and not any(PRIVATE.search(line) for line in seen), seen
    # nor anywhere in the signalling: not the phone's Contact or Via, not its NAT's address
    assert not naming(messages, PHONE_A, ROUTER_WAN, private=True)
    assert not naming(result.received("SIP/2.0"), TRUNK)


def test_rtpengine_down_refuses_a_call_with_503_but_not_an_emergency_call(net, office, workdir, redis):
    # a proxy whose rtpengine is not running (nothing listens on its control port)
    kam = start_proxy(net, workdir, redis, 5080, RTPENGINE_SOCK=f"udp:{CORE}:5099",
                      EMERGENCY_TRUNKS=f"udp:{TRUNK}:5062")
    try:
        office.proxy = kam
        office.register(ALICE)
        refused = office.sipp("call.xml", net.office, ALICE.ip, *ALICE.auth_args(), "-set", "dial", "0145678901",
                              "-d", "100").start(office.target, timeout=30).wait(40)
        assert refused.final == (503, "Media Relay Unavailable"), refused.log
        office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "100", port=5062).start(timeout=30)
        sos = office.sipp("call.xml", net.office, ALICE.ip, *ALICE.auth_args(), "-set", "dial", "112",
                          "-d", "300").start(office.target, timeout=30).wait(40)
        assert sos.final == (200, "OK"), sos.log + kam.log_text()[-2000:]
        assert "without media anchoring" in kam.log_text()
    finally:
        kam.stop()


def test_keepalives_reach_a_phone_through_its_nat(net, office, workdir, redis):
    kam = start_proxy(net, workdir, redis, 5070, NATPING_S="1")
    try:
        office.proxy = kam
        office.register(BRUNO)
        phone = office.sipp("ping.xml", net.office, BRUNO.ip).start(timeout=20)
        got = phone.wait(20)
        assert got.returncode == 0 and "PINGED" in got.log, got.log + got.stdout
        ping = got.received("OPTIONS")[0]
        assert ping.startswith(f"OPTIONS sip:2002@{PHONE_B}:5060") and "keepalive@" in ping
    finally:
        kam.stop()


# -- the receptionist fallback of a phone behind the NAT ------------------------------------------
FALLBACK_DID = "+33142685303"


def call_the_fallback_did(net, office):
    """The carrier calls Chloe's DID with the receptionist stand-in listening; (caller, receptionist)."""
    reception = office.sipp("answer.xml", net.carrier, MEDIA, "-set", "ring", "100",
                            port=RECEPTION_PORT).start(timeout=30)
    caller = office.sipp("inbound.xml", net.carrier, TRUNK, "-s", "0612345678", "-set", "from_domain",
                         "carrier.example", "-set", "dial", FALLBACK_DID, "-set", "company", "",
                         "-d", "200").start(office.target, timeout=30)
    result = caller.wait(40)
    assert result.final == (200, "OK"), result.log + result.stdout
    invites = reception.wait(10).received("INVITE")
    assert len(invites) == 1 and invites[0].startswith(f"INVITE sip:{FALLBACK_DID}@{MEDIA}:{RECEPTION_PORT}"), invites
    return result, invites[0]


@pytest.mark.parametrize("phone_does", ["busy", "no answer", "not registered"])
def test_a_did_of_a_phone_behind_the_nat_falls_back_to_the_receptionist(net, office, proxy, phone_does):
    """The lookup points the call at the phone's NAT binding ($du = its "received"): the failure
    route must send the receptionist's INVITE to the receptionist, not down that binding."""
    proxy.unregister(CHLOE.aor)
    phone = None
    if phone_does != "not registered":
        office.register(CHLOE)
        if phone_does == "busy":
            phone = office.sipp("reject.xml", net.office, CHLOE.ip,
                                edits=[("SIP/2.0 503 Service Unavailable", "SIP/2.0 486 Busy Here")]).start(timeout=30)
        else:
            phone = office.sipp("ring.xml", net.office, CHLOE.ip).start(timeout=30)
    started = time.monotonic()
    call_the_fallback_did(net, office)
    if phone is None:
        return
    got = phone.wait(10)
    assert len(got.received("INVITE")) == 1, got.messages  # the receptionist's INVITE never came here
    if phone_does == "no answer":
        assert time.monotonic() - started >= 5 - 0.25 and "CANCELLED" in got.log, got.log
    else:
        assert "REJECTED" in got.log, got.log
    proxy.unregister(CHLOE.aor)


# -- a real softphone ------------------------------------------------------------------------------
def baresip(net, workdir, phone: Phone, proxy: Proxy, talk_s: float) -> Baresip:
    account = (f"<sip:{phone.user}@{phone.domain}>;auth_pass={phone.password};"
               f"outbound=\"sip:{proxy.ip}:{proxy.port}\";answermode=auto")
    return Baresip(workdir, account, phone.ip, talk_s, netns=net.office)


def test_baresip_behind_the_nat_registers_answers_a_call_and_places_one(net, office, workdir, proxy):
    proxy.unregister(ALICE.aor)  # the SIPp phone of the tests above had the same address
    phone = baresip(net, workdir, ALICE, proxy, 12).start()
    try:
        phone.wait_for(f"2001@acme.test: {{0/UDP/v4}} 200 OK () [1 binding]", 15)
        to_trunk = net.count_udp(net.carrier, CORE, TRUNK, MEDIA_PORT)
        trunk = office.sipp("inbound.xml", net.carrier, TRUNK, "-s", "0612345678", "-set", "from_domain",
                            "carrier.example", "-set", "dial", "+33142685301", "-set", "company", "",
                            "-d", str(HOLD_MS), edits=[CALLER_PLAYS]).start(office.target, timeout=40)
        result = trunk.wait(60)
        assert result.final and result.final[0] == 200, result.log + phone.output[-2000:]  # baresip: "200 Answering"
        phone.wait_for("terminated", 15)
        sent, received = phone.packets()
        print(f"\nbaresip answered through the NAT: it received {received}, sent {sent}; "
              f"the trunk received {to_trunk.packets()}")
        assert received >= ENOUGH and to_trunk.packets() >= ENOUGH, (sent, received, to_trunk.packets())
        seen = sdp_addresses(result.received("SIP/2.0"))
        assert seen and not any(PRIVATE.search(line) for line in seen), seen
    finally:
        phone.stop()
    caller = baresip(net, workdir, ALICE, proxy, 7).start("/dial 0145678901")
    try:
        trunk = office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "200", edits=[CALLEE_PLAYS]).start(timeout=40)
        to_trunk = net.count_udp(net.carrier, CORE, TRUNK, MEDIA_PORT)
        caller.wait_for("Call established: sip:0145678901@acme.test", 20)
        caller.wait_for("terminated (duration:", 20)
        sent, received = caller.packets()
        got = trunk.wait(15)
        print(f"\nbaresip called out through the NAT: it received {received}, the trunk {to_trunk.packets()}")
        assert "HUNGUP" in got.log and received >= ENOUGH and to_trunk.packets() >= ENOUGH, \
            (sent, received, to_trunk.packets())
        seen = sdp_addresses(got.received("INVITE"))
        assert seen and not any(PRIVATE.search(line) for line in seen), seen
    finally:
        caller.stop()


def test_early_media_reaches_a_phone_behind_the_nat_and_the_proxys_bye_too(net, office, workdir, redis):
    """A prepaid call: the balance announcement as early media (183), then the trunk; at its maximum
    duration the proxy cuts it, and its BYE must reach the caller through its NAT binding."""
    admin(redis.url, "prepaid", "activate", "acme")
    admin(redis.url, "prepaid", "topup", "acme", "500c", "--ref", "nat-early-media")
    admin(redis.url, "rate", "set", "+4915", "60c", "--increments", "1/1", "--fee", "0c")
    kam = start_proxy(net, workdir, redis, 5090, NATPING_S="3600", PREPAID_MAX_CALL_S="3")
    try:
        office.proxy = kam
        office.register(ALICE)
        to_alice = net.count_udp(net.office, CORE, PHONE_A, MEDIA_PORT)
        to_announcer = net.count_udp(net.carrier, CORE, MEDIA, MEDIA_PORT)
        # the announcement lasts 4 s of the recording; the phone talks as soon as it has early media
        # (as baresip does): that is how rtpengine learns its NAT binding before the answer
        announcer = office.sipp("announce.xml", net.carrier, MEDIA,
                                edits=[('<pause milliseconds="600"/>', '<pause milliseconds="4000"/>')]).start(timeout=40)
        trunk = office.sipp("answer.xml", net.carrier, TRUNK, "-set", "ring", "1500").start(timeout=40)
        caller = office.sipp("call-cut.xml", net.office, ALICE.ip, *ALICE.auth_args(), "-set", "dial",
                             "004915112345678",
                             edits=[('<recv response="183" optional="true"/>',
                                     f'<recv response="183" optional="true">\n    <action><exec play_pcap_audio="{PCAP}"/></action>\n  </recv>')]
                             ).start(kam.ip + ":5090", timeout=40)
        assert "BALANCE 500 EUR" in announcer.wait(30).log
        early = to_alice.packets()  # the trunk is still ringing: all of this was the announcement
        print(f"\nearly media through the NAT: to the phone {early}, to the announcer {to_announcer.packets()}")
        assert early >= 100 and to_announcer.packets() >= 100, (early, to_announcer.packets())
        result = caller.wait(40)
        assert result.final == (200, "OK") and "CUT" in result.log, result.log + result.stdout
        assert "HUNGUP" in trunk.wait(10).log
    finally:
        kam.stop()


# -- media locked to its parties through the NAT (SECURITY.md class 20) ---------------------------
# A third party on the public side (like the carrier, but nobody's peer) and a neighbour behind the
# office's own NAT address (another phone's host): Python RTP sockets (tests/sip/rtp.py) in the
# namespaces, calls by tests/sip/sipua.py phones behind the router.
THIRD_PARTY = "198.51.100.66"


@pytest.fixture(scope="module")
def third_party(net):
    net.ns(net.carrier, "ip", "addr", "add", f"{THIRD_PARTY}/24", "dev", "eth0")
    return THIRD_PARTY


class NatCall:
    """Alice behind the NAT calls out to the trunk; each has an RTP socket; the trunk answers."""

    def __init__(self, net: Network, proxy: Proxy, caller_c: str | None = None):
        from tests.sip.rtp import Rtp, relay, sdp
        from tests.sip.sipua import UA, Peer

        self.net, self.opened = net, []
        self.alice = self.open(net.office, lambda: UA(PHONE_A, (proxy.ip, proxy.port), "2001", "acme.test",
                                                      "alice-nat-1"))
        self.alice_rtp = self.open(net.office, lambda: Rtp(PHONE_A))
        self.trunk = self.open(net.carrier, lambda: Peer(TRUNK, 5060))
        self.trunk_rtp = self.open(net.carrier, lambda: Rtp(TRUNK))
        answer = self.alice.register()
        assert answer is not None and answer.status == 200, answer
        self.alice.sdp = sdp(PHONE_A, self.alice_rtp.port, caller_c)
        self.trunk.sdp = sdp(TRUNK, self.trunk_rtp.port)
        self.call = self.alice.invite("0145678901")
        assert self.call.code == 200, self.call.final
        self.to_trunk_relay = relay(self.trunk.invites()[-1].body)  # where the trunk sends
        self.to_alice_relay = relay(self.call.final.body)           # where Alice sends, through her NAT

    def open(self, where: str, make):
        made = netns.run_in(where, make)
        self.opened.append(made)
        return made

    def talk(self) -> None:
        self.alice_rtp.send(self.to_alice_relay)
        self.trunk_rtp.send(self.to_trunk_relay)

    def close(self) -> None:
        self.call.bye()
        for item in self.opened:
            item.close()


def test_behind_the_nat_a_third_party_and_a_neighbour_reach_nobody_and_hear_nothing(net, proxy, third_party):
    from tests.sip.rtp import Rtp

    call = NatCall(net, proxy)
    try:
        third = call.open(net.carrier, lambda: Rtp(third_party))
        third.send(call.to_trunk_relay)  # first, at the trunk's relay port: locked to its SDP from the start
        call.talk()
        time.sleep(0.2)
        # after both parties talked: both relay ports, from outside and from behind the same NAT address
        neighbour = call.open(net.office, lambda: Rtp(PHONE_B))
        for sender in (third, neighbour):
            sender.send(call.to_alice_relay)
            sender.send(call.to_trunk_relay)
        call.talk()
        assert call.trunk_rtp.ssrcs() == {call.alice_rtp.ssrc}, "the trunk heard someone else (or nobody)"
        assert call.alice_rtp.ssrcs() == {call.trunk_rtp.ssrc}, "the phone heard someone else (or nobody)"
        assert third.drain() == [] and neighbour.drain() == []
    finally:
        call.close()


def test_behind_the_nat_an_sdp_naming_a_third_party_never_sends_it_the_call(net, proxy, third_party):
    from tests.sip.rtp import Rtp

    victim = netns.run_in(net.carrier, lambda: Rtp(third_party))
    call = NatCall(net, proxy, caller_c=third_party)
    try:
        call.trunk_rtp.send(call.to_trunk_relay)
        assert victim.drain() == []
        call.talk()  # the phone itself, from behind its NAT: its call works
        assert call.trunk_rtp.ssrc in call.alice_rtp.ssrcs() and victim.drain() == []
    finally:
        call.close()
        victim.close()


@pytest.mark.xfail(strict=True, reason="SECURITY.md class 20, left open: rtpengine 10.5 learns a NATed phone's "
                                       "port from the first packet at its relay port, whoever sends it")
def test_behind_the_nat_a_third_party_that_beats_the_phone_to_its_relay_port_gets_nothing(net, proxy, third_party):
    from tests.sip.rtp import Rtp

    call = NatCall(net, proxy)
    try:
        third = call.open(net.carrier, lambda: Rtp(third_party))
        third.send(call.to_alice_relay)  # before the phone's first packet
        call.talk()
        assert third.drain() == [] and call.trunk_rtp.ssrcs() == {call.alice_rtp.ssrc}
    finally:
        call.close()
