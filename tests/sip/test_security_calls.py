"""Toll-fraud attacks through the real proxy: what reaches the trunks, and what it costs.

Each test plays an attacker against Kamailio and asserts on what the trunk (or another peer)
RECEIVED, and for the money classes on Redis. Classes (security review):
 1. open relay through in-dialog requests (To-tag + Route to a trunk);
 2. registration hijack (a Contact naming a trunk, a media server, the proxy, another host);
 3. forged BYE (an R-URI or Route that does not lead to the other party ends the billing);
 4. Call-ID reuse (money keyed by what the caller chooses);
 5. keepalives stretching a prepaid call past its paid maximum.

The module runs its own Redis and proxy with the office of tests/sip/office.yaml moved to
127.<n>.0.x (so other test runs on the machine never answer for our trunks) and without the
balance announcement (prepaid calls go straight to the trunks). Trunks, media servers and
phones are tests/sip/sipua.py peers: a peer that "saw nothing" recorded no datagram at all.
"""

from __future__ import annotations

import itertools
import random
import re
import ssl
import time

import pytest

from kemi import money
from kemi.store.prepaid import PrepaidLedger
from tests.conftest import OFFICE
from tests.harness import Proxy, RedisServer, admin
from tests.sip.sipua import SDP, UA, Peer, raw_request, token

NET = f"127.{random.randint(100, 199)}.0."
PRIMARY, BACKUP, RECEPTION, CARRIER_IN = (NET + "2", 5060), (NET + "4", 5060), (NET + "3", 5060), (NET + "6", 5060)
VICTIM, VOID = (NET + "98", 5060), (NET + "99", 9)  # hosts that are nobody's phone
GERMAN_MOBILE, E164 = "004915112345678", "+4915112345678"
FORGED_PAI = "P-Asserted-Identity: <sip:+33142685301@acme.test;user=phone>"
GRACE = 0.6  # after the answer, anything relayed would long be at the peer (loopback, ms)


def hostport(where) -> str:
    return f"{where[0]}:{where[1]}"


# -- the proxy of this module ------------------------------------------------------------------------
class Env:
    def __init__(self, proxy: Proxy, redis: RedisServer):
        self.proxy, self.redis = proxy, redis
        self.addr = (proxy.ip, proxy.port)
        self.ledger = PrepaidLedger(redis.store())
        self.client = redis.client()


@pytest.fixture(scope="module")
def env(workdir):
    office = workdir / f"office-sec-{NET.split('.')[1]}.yaml"
    text = OFFICE.read_text().replace("host: 127.0.0.", f"host: {NET}")
    office.write_text("\n".join(line for line in text.splitlines() if "name: announcer" not in line) + "\n")
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(office))
    # prepaid calls of at most 60 s, renewed at the answer for max_secs + 2 s: a call that
    # outlives its reservation is visible within a test
    proxy = Proxy(workdir, redis.url, PREPAID_MAX_CALL_S="60", PREPAID_TTL_MARGIN_S="2").start()
    yield Env(proxy, redis)
    proxy.stop()
    redis.stop()


_phone_ips = itertools.cycle(f"127.0.0.{n}" for n in range(60, 90))
_stranger_ips = itertools.cycle(f"127.0.0.{n}" for n in range(90, 98))
PASSWORDS = {("2001", "acme.test"): "alice-secret-1", ("2002", "acme.test"): "bruno-secret-2",
             ("2001", "initech.test"): "ines-secret-1", ("2002", "initech.test"): "igor-secret-2"}


class Net:
    """Phones, strangers and peers of one test; all closed (and unregistered) afterwards."""

    def __init__(self, env: Env):
        self.env = env
        self.opened: list = []
        self.aors: set[str] = set()

    def peer(self, where, invite="answer", tcp: bool = False, record_route: str | None = None, **kw) -> Peer:
        peer = Peer(where[0], where[1], invite, tcp_listen=tcp, record_route=record_route, **kw)
        self.opened.append(peer)
        return peer

    def phone(self, user: str, domain: str = "acme.test", answer="answer", port: int = 0, tcp: bool = False) -> UA:
        ua = UA(next(_phone_ips), self.env.addr, user, domain, PASSWORDS[(user, domain)], tcp=tcp,
                answer_invites=answer, port=port)
        self.opened.append(ua)
        self.aors.add(f"{user}@{domain}")
        return ua

    def stranger(self, tcp: bool = False) -> UA:
        ua = UA(next(_stranger_ips), self.env.addr, "2001", "acme.test", tcp=tcp)
        self.opened.append(ua)
        return ua

    def carrier(self) -> UA:
        """The inbound-only trunk calling one of our DIDs (trusted by its source address)."""
        ua = UA(CARRIER_IN[0], self.env.addr, "+33698000001", "carrier.example", port=CARRIER_IN[1])
        self.opened.append(ua)
        return ua

    def registered(self, ua: UA) -> UA:
        answer = ua.register()
        assert answer is not None and answer.status == 200, answer
        return ua

    def close(self) -> None:
        time.sleep(0.1)  # let the peers' last answers out, or the proxy retransmits into the next test
        for item in self.opened:
            item.close()
        for aor in self.aors:
            self.env.proxy.unregister(aor)


@pytest.fixture
def net(env):
    made = Net(env)
    yield made
    made.close()


class Money:
    """Initech's Prepaid Account, straight through the ledger's Redis Functions."""

    def __init__(self, ledger: PrepaidLedger, client):
        self.ledger = ledger
        self.client = client

    def reset(self, cents: int, per_minute: int = 60, first: int = 1, nxt: int = 1) -> int:
        client = self.client
        for key in client.keys("{co:initech}:*"):
            if not key.endswith((b":company", b":exts", b":dids")) and b":ext:" not in key:
                client.delete(key)
        self.ledger.activate("initech")
        self.ledger.topup("initech", token(), cents)
        self.ledger.set_rate(money.Rate("+4915", per_minute, 0, first, nxt))  # 1 cent a second by default
        self.since_ms = int(time.time() * 1000)
        return cents

    @property
    def balance(self) -> int:
        return self.ledger.status("initech").balance

    @property
    def reserved(self) -> int:
        return self.ledger.status("initech").reserved

    def records(self) -> list[dict]:
        """The records of calls set up since reset() (a call of an earlier test may still settle)."""
        return [r for _, r in self.ledger.cdrs("initech") if r.get("setup_ms", 0) >= self.since_ms]

    def wait_records(self, count: int, timeout: float = 5) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.records()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.records()


@pytest.fixture
def account(env):
    acct = Money(env.ledger, env.client)
    yield acct
    env.ledger.deactivate("initech")


def saw_nothing(*peers, grace: float = GRACE) -> None:
    time.sleep(grace)
    for peer in peers:
        got = [m.first for m in peer.inbox]
        assert not got, f"{hostport((peer.ip, peer.port))} received {got}"


def byes_of(peer: Peer, call) -> list:
    return [m for m in peer.requests("BYE") if m.call_id == call.call_id]


def is_4xx(answer) -> bool:
    return answer is not None and 400 <= answer.status < 500


# == 1. open relay through in-dialog requests ==========================================================
ROUTES = {
    # the proxy first (as if we had record-routed), then the trunk
    "proxy,trunk": lambda p: [f"Route: <sip:{p};lr>, <sip:{hostport(PRIMARY)};lr>"],
    "proxy;trunk as two headers": lambda p: [f"Route: <sip:{p};lr>", f"Route: <sip:{hostport(PRIMARY)};lr>"],
    "the trunk alone": lambda p: [f"Route: <sip:{hostport(PRIMARY)};lr>"],
    # a Record-Route cookie of the proxy's own shape (ftag, did) that no dialog ever had
    "forged dialog cookie": lambda p: [f"Route: <sip:{p};lr;ftag=a1b2c3;did=4d2.a11>, <sip:{hostport(PRIMARY)};lr>"],
    "trunk by TCP": lambda p: [f"Route: <sip:{p};lr>, <sip:{hostport(PRIMARY)};transport=tcp;lr>"],
    "no Route": lambda p: [],  # passes today (404): the R-URI alone never led anywhere
}
STRANGER_CASES = [pytest.param(m, "proxy,trunk", "udp", id=f"{m}-proxy,trunk")
                  for m in ("INVITE", "BYE", "INFO", "MESSAGE", "OPTIONS", "ACK")]
STRANGER_CASES += [pytest.param("INVITE", shape, "udp", id=f"INVITE-{shape}") for shape in ROUTES
                   if shape != "proxy,trunk"]
STRANGER_CASES += [pytest.param("INVITE", "proxy,trunk", "tcp", id="INVITE-proxy,trunk-over-TCP"),
                   pytest.param("BYE", "the trunk alone", "tcp", id="BYE-trunk-over-TCP")]


@pytest.mark.parametrize("method, shape, transport", STRANGER_CASES)
def test_stranger_in_dialog_request_never_reaches_the_trunk(env, net, method, shape, transport):
    trunk = net.peer(PRIMARY, tcp=True)
    mallory = net.stranger(tcp=transport == "tcp")
    proxy = hostport(env.addr)
    text = raw_request(method, f"sip:{E164}@{hostport(PRIMARY)}", via_host=f"{mallory.ip}:{mallory.port}",
                       from_uri="sip:2001@acme.test", to_uri=f"sip:{E164}@acme.test", to_tag=token(),
                       extra=ROUTES[shape](proxy) + [FORGED_PAI], transport=mallory.transport,
                       body=SDP.format(ip=mallory.ip) if method == "INVITE" else "")
    call_id = re.search(r"Call-ID: (\S+)", text).group(1)
    if method == "ACK":
        mallory.send(text, env.addr)
        answer = None
    else:
        answer = mallory.transact(text, call_id, 1, method, timeout=3)
    saw_nothing(trunk)
    if method != "ACK":
        assert is_4xx(answer), answer


def test_strict_routing_style_request_to_the_proxy_never_reaches_the_trunk(env, net):
    """R-URI naming the proxy, the trunk in Route: the pre-RFC 3261 strict-router shape."""
    trunk = net.peer(PRIMARY)
    mallory = net.stranger()
    text = raw_request("INVITE", f"sip:{hostport(env.addr)};lr", via_host=f"{mallory.ip}:{mallory.port}",
                       from_uri="sip:2001@acme.test", to_uri=f"sip:{E164}@acme.test", to_tag=token(),
                       extra=[f"Route: <sip:{E164}@{hostport(PRIMARY)}>", FORGED_PAI],
                       body=SDP.format(ip=mallory.ip))
    answer = mallory.transact(text, re.search(r"Call-ID: (\S+)", text).group(1), 1, "INVITE", timeout=3)
    saw_nothing(trunk)
    assert is_4xx(answer), answer


def test_preloaded_route_on_an_initial_invite_never_picks_the_next_hop(env, net):
    """Guard (passes today): a phone's own Route towards the trunk is dropped on an initial request."""
    trunk = net.peer(PRIMARY)
    bruno = net.registered(net.phone("2002"))
    alice = net.phone("2001")
    call = alice.invite("2002", extra=[f"Route: <sip:{hostport(PRIMARY)};lr>"])
    assert call.code == 200, call.final
    delivered = bruno.requests("INVITE")[0]
    assert not delivered.all("route"), delivered.raw
    call.bye()
    saw_nothing(trunk)


def test_record_routing_trunk_still_gets_the_in_dialog_requests_of_its_call(env, net):
    """Guard (passes today): a carrier SBC that record-routes looks like the attack above
    (Route: proxy, then trunk); only the dialog tells them apart."""
    trunk = net.peer(PRIMARY, record_route=f"sip:sbc@{hostport(PRIMARY)};lr")
    alice = net.phone("2001")
    call = alice.invite("0612345678")
    # the phone sees neither the SBC nor the proxy's Record-Route (topology hiding, kamailio.cfg): the
    # proxy's Contact is its whole dialog; the trunk's requests still follow the SBC's route set
    assert call.code == 200 and call.route == [] and hostport(env.addr) in call.target, (call.final, call.route)
    assert call.request("INFO").status == 200
    assert call.bye().status == 200
    assert [m.method for m in trunk.requests() if m.method != "ACK"] == ["INVITE", "INFO", "BYE"]
    assert all(r.uris("route") == [f"sip:sbc@{hostport(PRIMARY)};lr"] for r in trunk.requests()[1:])


@pytest.fixture
def live_call(net):
    """Alice (acme 2001) on an included call to a French mobile, answered by the primary trunk."""
    trunk = net.peer(PRIMARY)
    alice = net.phone("2001")
    call = alice.invite("0612345678")
    assert call.code == 200, call.final
    assert call.route == [] and hostport(net.env.addr) in call.target, "the dialog's only hop is the proxy"
    assert trunk.wait(lambda m: m.is_request and m.method == "ACK", 3), "the ACK reached the trunk"
    return trunk, alice, call


@pytest.mark.parametrize("method", ["INVITE", "BYE", "INFO"])
def test_stranger_who_knows_the_dialog_cannot_send_in_it(env, net, live_call, method):
    """Call-ID, tags and Route set are not secrets (a SIP trace, a log): the source must be a party."""
    trunk, alice, call = live_call
    mallory = net.stranger()
    before = [m.first for m in trunk.requests()]
    text = mallory.build(method, call.target, call.call_id, call.from_tag, call.to_uri, call.to_tag, 10,
                         [f"Route: <{r}>" for r in call.route] + [FORGED_PAI],
                         SDP.format(ip=mallory.ip) if method == "INVITE" else "", from_uri="sip:2001@acme.test")
    answer = mallory.transact(text, call.call_id, 10, method, timeout=3)
    time.sleep(GRACE)
    after = [m.first for m in trunk.requests()]
    assert after == before, f"the trunk received {after[len(before):]} from a stranger"
    assert is_4xx(answer), answer
    assert call.bye().status == 200  # the real call is still there, and its party can end it


@pytest.mark.parametrize("target", ["the proxy's Contact the trunk was given", "the phone's own Contact"])
def test_stranger_posing_as_the_trunk_cannot_hang_up_the_phone(env, net, live_call, target):
    """The upstream direction: a BYE 'from the callee' sent by someone else, at what the trunk's BYE
    names (topos's Contact, which topos turns back into the phone's), or at the phone's own Contact."""
    trunk, alice, call = live_call
    mallory = net.stranger()
    ruri = trunk.invites()[0].uris("contact")[0] if target.startswith("the proxy") else alice.contact
    assert ("tpsh-" in ruri) == target.startswith("the proxy"), ruri
    # From/To swapped: the callee's tag in From, the caller's in To
    text = raw_request("BYE", ruri, via_host=f"{mallory.ip}:{mallory.port}", call_id=call.call_id,
                       from_uri="sip:+33612345678@acme.test", from_tag=call.to_tag,
                       to_uri="sip:2001@acme.test", to_tag=call.from_tag, cseq=50,
                       extra=[f"Route: <{r}>" for r in reversed(call.route)])
    answer = mallory.transact(text, call.call_id, 50, "BYE", timeout=3)
    time.sleep(GRACE)
    assert call.ended_by_peer() is None, "the phone got a BYE from a stranger"
    assert is_4xx(answer), answer
    assert call.bye().status == 200


def test_party_cannot_retarget_its_dialog_to_another_trunk(env, net, live_call):
    """Alice's re-INVITE with an R-URI at the backup trunk: in-dialog R-URIs are the dialog's remote target."""
    trunk, alice, call = live_call
    backup = net.peer(BACKUP)
    answer = call.request("INVITE", ruri=f"sip:{E164}@{hostport(BACKUP)}", body=SDP.format(ip=alice.ip),
                          extra=[FORGED_PAI], wait=3)
    saw_nothing(backup)
    assert is_4xx(answer), answer
    call.bye()


def test_party_cannot_add_a_route_to_another_trunk(env, net, live_call):
    trunk, alice, call = live_call
    backup = net.peer(BACKUP)
    answer = call.request("INFO", route=call.route + [f"sip:{hostport(BACKUP)};lr"], wait=3)
    saw_nothing(backup)
    assert is_4xx(answer), answer
    call.bye()


def test_internal_call_cannot_be_turned_into_a_trunk_call(env, net):
    """Alice calls Bruno (free, internal), then sends an in-dialog INVITE at the trunk."""
    trunk = net.peer(PRIMARY)
    net.registered(net.phone("2002"))
    alice = net.phone("2001")
    call = alice.invite("2002")
    assert call.code == 200, call.final
    answer = call.request("INVITE", ruri=f"sip:{E164}@{hostport(PRIMARY)}", body=SDP.format(ip=alice.ip),
                          extra=[FORGED_PAI], wait=3)
    saw_nothing(trunk)
    assert is_4xx(answer), answer
    call.bye()


# == 1c. on TCP/TLS a party is its connection (issue 18.8) ==============================================
def connected_phone(env: Env, net: Net, user: str, domain: str, transport: str, ip: str | None = None,
                    port: int = 0) -> UA:
    """A phone on its own UDP socket, TCP connection or TLS connection to the proxy."""
    tls = ssl.create_default_context(cafile=env.proxy.tls_cert) if transport == "tls" else None
    where = (env.proxy.ip, env.proxy.tls_port if transport == "tls" else env.proxy.port)
    ua = UA(ip or next(_phone_ips), where, user, domain, PASSWORDS[(user, domain)], tcp=transport == "tcp",
            tls=tls, port=port)
    net.opened.append(ua)
    net.aors.add(f"{user}@{domain}")
    return ua


def neighbour_of(env: Env, net: Net, phone: UA, transport: str) -> UA:
    """Someone behind the same NAT address as the phone: its IP, a port (a connection) of its own."""
    return connected_phone(env, net, phone.user, phone.domain, transport, ip=phone.ip)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
@pytest.mark.parametrize("method", ["BYE", "INVITE"])
def test_a_neighbour_behind_the_callers_nat_cannot_speak_for_it(env, net, account, transport, method):
    """A prepaid caller on TCP/TLS (or UDP); another connection (port) from its IP sends its dialog's
    BYE or re-INVITE: refused, the trunk hears nothing, the money stays held, the call goes on."""
    opening = account.reset(500)
    trunk = net.peer(PRIMARY)
    ines = connected_phone(env, net, "2001", "initech.test", transport)
    call = ines.invite(GERMAN_MOBILE)
    assert call.code == 200, call.final
    assert trunk.wait(lambda m: m.is_request and m.method == "ACK", 3)
    neighbour = neighbour_of(env, net, ines, transport)
    assert neighbour.ip == ines.ip and neighbour.port != ines.port
    before = [m.first for m in trunk.requests()]
    text = neighbour.build(method, call.target, call.call_id, call.from_tag, call.to_uri, call.to_tag, 40,
                           [f"Route: <{r}>" for r in call.route],
                           SDP.format(ip=neighbour.ip) if method == "INVITE" else "", from_uri=f"sip:2001@initech.test")
    answer = neighbour.transact(text, call.call_id, 40, method, timeout=3)
    assert answer is not None and answer.first == "SIP/2.0 403 Not A Party To This Dialog", answer
    time.sleep(GRACE)
    assert [m.first for m in trunk.requests()] == before, "the trunk heard the neighbour"
    assert account.records() == [] and account.reserved > 0, "the neighbour's BYE stopped the billing"
    # the phone itself, on its own connection, still speaks for the call
    assert call.request("INFO").status == 200
    time.sleep(0.6)
    assert call.bye().status == 200
    assert_billed_for_the_trunk_leg(account, trunk, call, opening)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_neighbour_behind_the_callees_nat_cannot_hang_up_the_caller(env, net, transport):
    """Bruno answers over TCP/TLS; another connection from his address sends his BYE to Alice."""
    bruno = connected_phone(env, net, "2002", "acme.test", transport)
    assert bruno.register().status == 200
    alice = net.phone("2001")
    call = alice.invite("2002")
    assert call.code == 200, call.final
    invite, tag = bruno.answered[call.call_id]
    neighbour = neighbour_of(env, net, bruno, transport)
    caller_contact = invite.uris("contact")[0]
    text = neighbour.build("BYE", caller_contact, call.call_id, tag, call.ruri, call.from_tag, 900,
                           [f"Route: <{r}>" for r in invite.uris("record-route")], from_uri=call.to_uri)
    answer = neighbour.transact(text, call.call_id, 900, "BYE", timeout=3)
    assert answer is not None and answer.first == "SIP/2.0 403 Not A Party To This Dialog", answer
    time.sleep(GRACE)
    assert call.ended_by_peer() is None, "Alice got the neighbour's BYE"
    answer = bruno.bye_as_callee(call.call_id)
    assert answer is not None and answer.status == 200, answer
    assert call.ended_by_peer() is not None or alice.wait(
        lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 2)


def test_a_carrier_on_tcp_may_hang_up_on_a_connection_of_its_own(env, net):
    """Guard: a carrier calling in over TCP may send its BYE on a new connection (RFC 3261 18.1.1
    lets it): it is known by its address, as every trusted peer is; nobody else has that address."""
    bruno = net.registered(net.phone("2002"))
    carrier = UA(CARRIER_IN[0], env.addr, "+33698000001", "carrier.example", tcp=True, port=CARRIER_IN[1])
    net.opened.append(carrier)
    call = carrier.invite(f"sip:+33142685302@{hostport(env.addr)}")
    assert call.code == 200, call.final
    again = UA(CARRIER_IN[0], env.addr, "+33698000001", "carrier.example", tcp=True)
    net.opened.append(again)
    assert again.port != carrier.port
    text = again.build("BYE", call.target, call.call_id, call.from_tag, call.to_uri, call.to_tag, 77,
                       [f"Route: <{r}>" for r in call.route])
    answer = again.transact(text, call.call_id, 77, "BYE", timeout=3)
    assert answer is not None and answer.status == 200, answer
    assert bruno.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 2)


# == 2. registration hijack ============================================================================
def stored_contacts(env: Env, aor: str) -> list[dict]:
    text = env.proxy.kamcmd("ul.lookup", "location", aor)
    return [dict(re.findall(r"^\s*(Address|Received): (\S+)", block, re.M))
            for block in text.split("Contact: {")[1:]]


def trusted_hosts(env: Env) -> list[str]:
    return [PRIMARY[0], BACKUP[0], RECEPTION[0], CARRIER_IN[0], NET + "5", NET + "7", hostport(env.addr)]


def assert_contacts_point_at_the_phone(env: Env, phone: UA, answer) -> None:
    """Either the REGISTER was refused (nothing stored), or every stored contact leads to the
    REGISTER's source and names no trusted peer."""
    contacts = stored_contacts(env, f"{phone.user}@{phone.domain}")
    if is_4xx(answer):
        assert contacts == [], contacts
        return
    assert answer is not None and answer.status == 200, answer
    source = f"{phone.ip}:{phone.port}"
    for c in contacts:
        address, received = c.get("Address", ""), c.get("Received", "[not")
        named = [h for h in trusted_hosts(env) if h in address]
        assert not named, f"stored contact {address} names trusted peer {named}"
        assert "maddr" not in address, address
        goes_to = received if not received.startswith("[not") else address
        assert re.search(rf"[@:]{re.escape(source)}(;|>|$)", goes_to), f"{c} does not lead to {source}"


HIJACK_CONTACTS = {
    "trunk": lambda ph: [f"<sip:{E164}@{hostport(PRIMARY)}>"],
    "trunk by TCP": lambda ph: [f"<sip:2002@{hostport(PRIMARY)};transport=tcp>"],
    "media server": lambda ph: [f"<sip:2002@{hostport(RECEPTION)}>"],
    "the proxy itself, premium number": lambda ph: [f"<sip:0899123456@{hostport(ph.proxy)}>"],
    "another host": lambda ph: [f"<sip:2002@{hostport(VICTIM)}>"],
    "maddr to the trunk": lambda ph: [f"<sip:2002@{ph.ip}:{ph.port};maddr={PRIMARY[0]}>"],
    "second contact at the trunk": lambda ph: [f"<{ph.contact}>", f"<sip:{E164}@{hostport(PRIMARY)}>"],
}


@pytest.mark.parametrize("form", list(HIJACK_CONTACTS))
def test_registered_contact_cannot_send_internal_calls_to_a_trusted_peer(env, net, form):
    trunk = net.peer(PRIMARY, invite=(486, "Busy Here"), tcp=True)
    media = net.peer(RECEPTION, invite=(486, "Busy Here"))
    victim = net.peer(VICTIM, invite=(486, "Busy Here"))
    # port 5060 on its own address, so that "maddr" keeps the right host:port and only diverts
    bruno = net.phone("2002", answer=(486, "Busy Here"), port=5060 if form.startswith("maddr") else 0)
    answer = bruno.register(HIJACK_CONTACTS[form](bruno))
    call = net.phone("2001").invite("2002")
    assert call.final is not None and call.code != 200, call.final  # Bruno's phone says busy, if anything
    saw_nothing(trunk, media, victim)
    assert_contacts_point_at_the_phone(env, bruno, answer)


@pytest.mark.parametrize("form", ["trunk", "trunk by TCP"])
def test_registered_contact_cannot_send_did_calls_to_the_trunk(env, net, form):
    trunk = net.peer(PRIMARY, invite=(486, "Busy Here"), tcp=True)
    bruno = net.phone("2002", answer=(486, "Busy Here"))
    answer = bruno.register(HIJACK_CONTACTS[form](bruno))
    call = net.carrier().invite(f"sip:+33142685302@{hostport(env.addr)}")  # acme's DID of 2002
    assert call.final is not None and call.code != 200, call.final
    saw_nothing(trunk)
    assert_contacts_point_at_the_phone(env, bruno, answer)


@pytest.mark.parametrize("contact, received", [
    (f"sip:{E164}@{hostport(PRIMARY)}", "."),                 # a location entry naming the trunk
    ("sip:2002@127.0.0.61:5060", f"sip:{hostport(PRIMARY)}"),  # a NAT 'received' address at the trunk
])
def test_lookup_result_at_a_trusted_peer_is_refused(env, net, contact, received):
    """Defence in depth: whatever put it in usrloc (an older proxy, a replica), it is never dialled."""
    trunk = net.peer(PRIMARY)
    env.proxy.kamcmd("ul.add", "location", "2002@acme.test", contact, "300", "1.0", ".", "0", "0", "0", received)
    net.aors.add("2002@acme.test")
    assert stored_contacts(env, "2002@acme.test"), "ul.add stored the contact"
    call = net.phone("2001").invite("2002")
    saw_nothing(trunk)
    assert call.final is not None and call.code >= 400, call.final


# -- issue 18.1: Contacts that a hand-written parser and Kamailio's registrar read differently ----------
def decimal(ip: str) -> str:
    """The address as one number: what inet_aton, and so Kamailio's resolver, reads as that IP."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return str((a << 24) | (b << 16) | (c << 8) | d)


PARSER_SPELLINGS = {
    # a URI inside the quoted display name: the registrar saves the one in <> after it
    "URI in the display name": lambda ph: [f'"<sip:2002@{ph.ip}:{ph.port}>" <sip:{GERMAN_MOBILE}@{decimal(PRIMARY[0])}:5060>'],
    # a ; in the user part: the registrar's host is the trunk's
    "; in the user part": lambda ph: [f"<sip:{ph.ip};x=@{hostport(PRIMARY)}>"],
    # maddr at the phone itself: Kamailio ignores maddr and sends to the URI's host
    "maddr at the phone": lambda ph: [f"<sip:{GERMAN_MOBILE}@{hostport(PRIMARY)};maddr={ph.ip}>"],
    "the trunk as a number": lambda ph: [f"<sip:{GERMAN_MOBILE}@{decimal(PRIMARY[0])}:5060>"],
    "the trunk in hex": lambda ph: [f"<sip:{GERMAN_MOBILE}@0x{int(decimal(PRIMARY[0])):08x}:5060>"],
    "another port on the trunk's host": lambda ph: [f"<sip:{GERMAN_MOBILE}@{PRIMARY[0]}:5070>"],
    "a host name": lambda ph: [f"<sip:{GERMAN_MOBILE}@localhost:{PRIMARY[1]}>"],
    "+sip.instance then the trunk": lambda ph: [f'<sip:2002@{ph.ip}:{ph.port}>;+sip.instance="<urn:uuid:1>"',
                                                f"<sip:{GERMAN_MOBILE}@{hostport(PRIMARY)}>"],
}


@pytest.mark.parametrize("form", list(PARSER_SPELLINGS))
def test_contact_spellings_of_issue_18_never_turn_an_extension_into_a_carrier_call(env, net, form):
    """Bruno registers a Contact that names the trunk in a spelling a second parser reads
    otherwise; Alice then calls him internally, and the carrier calls his DID. The trunks receive
    nothing, and nothing of his stays registered."""
    trunk = net.peer(PRIMARY, invite=(486, "Busy Here"), tcp=True)
    trunk_other_port = net.peer((PRIMARY[0], 5070), invite=(486, "Busy Here"))
    backup = net.peer(BACKUP, invite=(486, "Busy Here"))
    bruno = net.phone("2002", answer=(486, "Busy Here"), port=5060)  # "maddr": sent from 5060
    answer = bruno.register(PARSER_SPELLINGS[form](bruno))
    assert is_4xx(answer), f"saved: {stored_contacts(env, '2002@acme.test')}"
    assert stored_contacts(env, "2002@acme.test") == [], "a refused REGISTER left its contacts saved"
    internal = net.phone("2001").invite("2002")
    did = net.carrier().invite(f"sip:+33142685302@{hostport(env.addr)}")
    for call in (internal, did):
        assert call.final is not None and call.code != 200, call.final
    saw_nothing(trunk, trunk_other_port, backup)


@pytest.mark.parametrize("contact", [
    f"sip:{GERMAN_MOBILE}@{decimal(PRIMARY[0])}:5060",            # resolved only when sent
    f"sip:{GERMAN_MOBILE}@{PRIMARY[0]}:5070",                     # another port of the trunk's host
    f"sip:{GERMAN_MOBILE}@{hostport(PRIMARY)};maddr=127.0.0.61",  # maddr: Kamailio goes to the host
])
def test_a_saved_contact_whose_real_destination_is_a_trusted_peer_is_never_sent(env, net, contact):
    """Defence in depth where it is sent (kamailio.cfg onsend_route, $sndto): a location entry
    that names the trunk in a form only the resolver understands. The caller gets an answer."""
    trunk = net.peer(PRIMARY)
    other_port = net.peer((PRIMARY[0], 5070))
    mark = env.proxy.mark()
    env.proxy.kamcmd("ul.add", "location", "2002@acme.test", contact, "300", "1.0", ".", "0", "0", "0")
    net.aors.add("2002@acme.test")
    call = net.phone("2001").invite("2002")
    saw_nothing(trunk, other_port)
    assert call.final is not None and call.code == 480, call.final
    log = env.proxy.log_since(mark)
    assert "trusted peer" in log, log[-2000:]


def test_an_internal_call_reaches_the_phone_without_the_callers_identity_claims(env, net):
    """Issue 18.1: the caller's P-Charge-Info, RPID and Diversion reached the carrier through the
    callee's registration; an internal call now passes the carriers' allow-list."""
    bruno = net.registered(net.phone("2002"))
    alice = net.phone("2001")
    claims = ["P-Charge-Info: <sip:+33142685301@acme.test>", "Remote-Party-ID: <sip:+33142685301@acme.test>",
              "Diversion: <sip:+33142685301@acme.test>;reason=unconditional", "X-Billing-Account: 42"]
    call = alice.invite("2002", extra=claims)
    assert call.code == 200, call.final
    delivered = bruno.requests("INVITE")[0]
    for name in ("p-charge-info", "remote-party-id", "diversion", "x-billing-account"):
        assert not delivered.all(name), delivered.raw
    call.bye()


# == 3. forged BYE ======================================================================================
@pytest.fixture
def prepaid_call(net, account):
    """Ines (initech 2001) on an answered prepaid call to a German mobile; 1 cent a second."""
    opening = account.reset(500)
    trunk = net.peer(PRIMARY)
    ines = net.phone("2001", domain="initech.test")
    call = ines.invite(GERMAN_MOBILE)
    assert call.code == 200, call.final
    assert trunk.invites() and trunk.invites()[0].ruri.startswith(f"sip:{E164}@")
    return opening, trunk, ines, call


def assert_billed_for_the_trunk_leg(account: Money, trunk: Peer, call, opening: int) -> None:
    """At the end, the trunk got a BYE, and the settlement covers at least as long as the trunk leg was up."""
    byes = byes_of(trunk, call)
    assert byes, "the trunk never got a BYE: its leg is still up"
    (record,) = account.wait_records(1)
    leg = byes[0].at - call.answered_at
    assert record["billed_secs"] >= int(leg), f"billed {record['billed_secs']} s for a trunk leg of {leg:.1f} s"
    assert account.balance == opening - record["cost"] and account.reserved == 0


def test_genuine_bye_reaches_the_trunk_and_settles(net, account, prepaid_call):
    """Control (passes today): the honest hang-up the attacks below are measured against."""
    opening, trunk, ines, call = prepaid_call
    time.sleep(1.2)
    assert call.bye().status == 200
    assert_billed_for_the_trunk_leg(account, trunk, call, opening)
    assert account.records()[0]["cost"] == 2  # 1.2 s, rounded up to 2 s at 1 cent a second


# Under topology hiding (kamailio.cfg, topos) a phone's dialog is the proxy's Contact (call.target,
# atpsh-<id>@proxy) and no Route: topos puts the trunk's Contact in the Request-URI and appends the
# proxy's Record-Route (and the trunk's, if it record-routed) after whatever Route the request
# carries, before the routes run. The in-dialog check judges that restored request, what tm acts
# on: a Route the phone adds comes first (404, or 403 when it names the proxy: two entries of ours);
# a Request-URI that is not a topos Contact of a dialog is left as the phone wrote it.
OUR_ADDRESS = lambda call: "sip:" + call.target.split("@", 1)[1].split(";")[0]
FORGED_BYES = {
    "R-URI nowhere": lambda call: {"ruri": f"sip:void@{hostport(VOID)}"},
    "R-URI at the backup trunk": lambda call: {"ruri": f"sip:{E164}@{hostport(BACKUP)}"},
    # the trunk's own Contact (learnt elsewhere: a trace), skipping the proxy's topos record
    "R-URI the trunk's Contact, no Route": lambda call: {"ruri": f"sip:peer@{hostport(PRIMARY)}"},
    "extra Route nowhere": lambda call: {"route": call.route + [f"sip:{hostport(VOID)};lr"]},
    "R-URI at the proxy": lambda call: {"ruri": OUR_ADDRESS(call)},
    # a Contact of the proxy's topology hiding that names no dialog
    "R-URI at a made-up topos Contact": lambda call: {"ruri": call.target.replace("atpsh-", "atpsh-9", 1)},
    # issue 18.5: a strict router's URI (no ;lr) before the Record-Route topos restores
    "extra strict Route": lambda call: {"route": call.route + [f"sip:{VOID[0]}"]},
    # the phone writes the proxy's Route itself, topos appends the real one: ours twice
    "our Route twice": lambda call: {"route": [OUR_ADDRESS(call) + ";lr"]},
    "extra Route at the backup trunk": lambda call: {"route": call.route + [f"sip:{hostport(BACKUP)};lr"]},
    # the pre-RFC 3261 shape: R-URI the proxy, the real target (topos's Contact) last in Route
    "strict-routing style": lambda call: {"ruri": OUR_ADDRESS(call) + ";lr", "route": [f"{call.target}"]},
    # our Route as the dialog module would have it, a made-up did, and bare: topos's follows it
    "our Route with other parameters": lambda call: {"route": [OUR_ADDRESS(call) + ";lr;did=999.999"]},
    "our Route without parameters": lambda call: {"route": [OUR_ADDRESS(call) + ";lr"]},
}


@pytest.mark.parametrize("forgery", list(FORGED_BYES))
def test_forged_bye_never_stops_billing_while_the_trunk_leg_is_up(env, net, account, prepaid_call, forgery):
    opening, trunk, ines, call = prepaid_call
    void, backup = net.peer(VOID), net.peer(BACKUP)
    time.sleep(0.5)
    answer = call.bye(wait=1.5, **FORGED_BYES[forgery](call))
    time.sleep(GRACE)
    trunk_got_bye = bool(byes_of(trunk, call))
    settled = account.records()
    saw_nothing(void, backup, grace=0)
    # under topos none of them leads to the callee (see above): each is refused before the dialog
    assert is_4xx(answer) and not trunk_got_bye, (answer, byes_of(trunk, call))
    assert trunk_got_bye == bool(settled), (
        f"settled {settled} while the trunk leg is still up" if settled else "the trunk got a BYE, nothing settled")
    if not trunk_got_bye:  # refused: the call goes on, and is billed when it really ends
        assert account.reserved > 0, "refused, yet the reservation is gone"
        time.sleep(1.0)
        assert call.bye().status == 200
    assert_billed_for_the_trunk_leg(account, trunk, call, opening)


def test_a_bye_naming_the_topos_contact_of_the_phones_other_call_ends_neither(env, net, account, prepaid_call):
    """The phone's second call's Contact (atpsh-) as the first call's R-URI: topos restores what it
    recorded for the second call (keyed by that Contact, not the Call-ID), and, the From tag not
    being that call's caller's, as if it came from its callee: the phone's own Contact and route
    set. The check judges that restored R-URI against the first dialog's target."""
    opening, trunk, ines, call = prepaid_call
    other = ines.invite(GERMAN_MOBILE)
    assert other.code == 200 and other.target != call.target, (other.final, other.target)
    answer = call.bye(ruri=other.target, wait=1.5)
    time.sleep(GRACE)
    assert is_4xx(answer), answer
    assert byes_of(trunk, call) == [] and byes_of(trunk, other) == [], "the trunk got a BYE"
    assert ines.requests("BYE") == [], "the phone got its own BYE back"
    assert account.records() == [] and account.reserved > 0, "refused, yet something settled"
    # both calls go on and end as they should
    assert other.bye().status == 200 and call.bye().status == 200
    records = account.wait_records(2)
    assert account.balance == opening - sum(r["cost"] for r in records) and account.reserved == 0


# A BYE that reaches the trunk but that the trunk does not accept: its leg stays up (issue 18.5).
# A carrier refuses a BYE whose CSeq went backwards (500), that requires an extension it lacks
# (420), for a dialog it does not know (481), or says nothing (tm's 408 after fr_timer, 5 s).
REFUSED_BYES = {
    "481": dict(answers=[(481, "Call/Transaction Does Not Exist")], extra=[]),
    "420 to a Require": dict(answers=[(420, "Bad Extension")], extra=["Require: x-made-up"]),
    "500 to a CSeq gone back": dict(answers=[(500, "Server Internal Error")], extra=[]),
    "silence": dict(answers=["silent"], extra=[]),
}


def via_branch(msg) -> str:
    return re.search(r"branch=([^;,\s]+)", msg.header("via") or "").group(1)


def relayed_and_own_byes(trunk: Peer, call) -> tuple[list, list]:
    """The phone's BYE as the proxy relayed it (the first BYE transaction, its retransmissions
    included), and the BYEs the proxy sent the trunk itself (transactions of their own). Both
    carry the proxy's Via alone (topology hiding): the transaction tells them apart."""
    byes = byes_of(trunk, call)
    if not byes:
        return [], []
    first = via_branch(byes[0])
    return [m for m in byes if via_branch(m) == first], [m for m in byes if via_branch(m) != first]


def own_byes(trunk: Peer, call) -> list:
    return relayed_and_own_byes(trunk, call)[1]


@pytest.mark.parametrize("variant", list(REFUSED_BYES))
def test_a_bye_the_trunk_does_not_accept_has_the_proxy_end_the_call_and_bill_it_to_the_end(env, net, account, variant):
    opening = account.reset(500)
    trunk = net.peer(PRIMARY, bye_answers=REFUSED_BYES[variant]["answers"])
    ines = net.phone("2001", domain="initech.test")
    call = ines.invite(GERMAN_MOBILE)
    assert call.code == 200, call.final
    time.sleep(0.5)
    answer = call.bye(extra=REFUSED_BYES[variant]["extra"], wait=8)
    assert answer is not None and answer.status >= 400, answer  # the trunk's answer, relayed
    relayed = relayed_and_own_byes(trunk, call)[0]
    assert relayed and relayed[0].cseq == (call.cseq, "BYE"), "the phone's BYE never reached the trunk"
    assert trunk.wait(lambda m: own_byes(trunk, call), 3), "the proxy never ended the trunk's leg itself"
    own = own_byes(trunk, call)[0]
    # through topology hiding as the trunk's dialog has it: its Contact, its tags, the proxy's Via alone
    assert own.ruri == f"sip:peer@{hostport(PRIMARY)}" and not own.all("route"), own.raw
    assert own.tag("from") == call.from_tag and own.tag("to") == call.to_tag
    assert len(own.all("via")) == 1 and hostport(env.addr) in own.header("via"), own.raw
    # and the phone's leg too
    assert ines.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 3)
    (record,) = account.wait_records(1)
    leg = own.at - call.answered_at
    assert record["billed_secs"] >= int(leg), f"billed {record['billed_secs']} s for a trunk leg of {leg:.1f} s"
    assert account.balance == opening - record["cost"] and account.reserved == 0
    time.sleep(GRACE)
    assert len(account.records()) == 1 and len(own_byes(trunk, call)) == 1, "settled or hung up twice"
    assert call.bye().status == 481  # the call is over


def test_a_bye_the_trunk_accepts_settles_at_its_answer(net, account):
    """The trunk takes its time (a carrier far away): the call is billed until it accepted the BYE."""
    opening = account.reset(500)
    trunk = net.peer(PRIMARY, bye_delay=1.5)
    ines = net.phone("2001", domain="initech.test")
    call = ines.invite(GERMAN_MOBILE)
    assert call.code == 200, call.final
    time.sleep(0.3)
    sent = time.monotonic()
    assert call.bye(wait=4).status == 200
    assert time.monotonic() - sent >= 1.4
    (record,) = account.wait_records(1)
    assert record["billed_secs"] >= 2, record  # 0.3 s + 1.5 s before the trunk's 200
    assert record["disposition"] == "answered" and account.balance == opening - record["cost"]
    time.sleep(2.5)  # the dialog expires quietly: no BYE of the proxy's own, nothing settled twice
    assert own_byes(trunk, call) == [] and call.ended_by_peer() is None
    assert len(account.records()) == 1 and account.reserved == 0


# == 4. Call-ID reuse ===================================================================================
def hang_up_after(call, secs: float) -> None:
    time.sleep(secs)
    assert call.bye().status == 200


def assert_every_answered_call_paid(account: Money, calls, opening: int) -> None:
    answered = [c for c in calls if c.code == 200]
    records = account.wait_records(len(calls))
    charged = [r for r in records if r.get("cost", 0) > 0]
    assert len(charged) == len(answered), f"{len(answered)} answered calls, charges: {records}"
    assert account.balance == opening - sum(r["cost"] for r in records)
    assert account.reserved == 0, account.ledger.status("initech").reservations
    for c in calls:
        assert c.code == 200 or is_4xx(c.final), c.final  # charged as a new call, or refused


def test_second_call_reusing_a_settled_call_id_is_not_free(net, account):
    opening = account.reset(500)
    trunk = net.peer(PRIMARY)
    ines = net.phone("2001", domain="initech.test")
    call_id = f"{token()}@{ines.ip}"
    first = ines.invite(GERMAN_MOBILE, call_id=call_id)
    assert first.code == 200, first.final
    hang_up_after(first, 1.2)
    account.wait_records(1)
    second = ines.invite(GERMAN_MOBILE, call_id=call_id)  # new From-tag, same Call-ID
    if second.code == 200:
        hang_up_after(second, 1.2)
    else:
        assert len(trunk.invites()) == 1, "refused, yet the trunk got the call"
    assert_every_answered_call_paid(account, [first, second], opening)


def test_parallel_calls_sharing_a_call_id_are_each_charged(net, account):
    opening = account.reset(500)
    net.peer(PRIMARY)
    ines = net.phone("2001", domain="initech.test")
    call_id = f"{token()}@{ines.ip}"
    first = ines.invite(GERMAN_MOBILE, call_id=call_id)
    second = ines.invite(GERMAN_MOBILE, call_id=call_id)
    assert first.code == 200, first.final
    time.sleep(1.2)
    for call in (first, second):
        if call.code == 200:
            assert call.bye().status == 200
    assert_every_answered_call_paid(account, [first, second], opening)


def test_reused_call_id_leaves_no_reservation_that_blocks_the_company(net, account):
    """Funds for one 60 s reservation: a leftover reservation would refuse the next call with 402."""
    opening = account.reset(60)
    net.peer(PRIMARY)
    ines = net.phone("2001", domain="initech.test")
    call_id = f"{token()}@{ines.ip}"
    calls = []
    for reuse in (call_id, call_id, None):
        call = ines.invite(GERMAN_MOBILE, call_id=reuse)
        calls.append(call)
        if call.code == 200:
            hang_up_after(call, 0.3)
        account.wait_records(len(calls))
    assert calls[2].code == 200, f"a fresh call after a reused Call-ID: {calls[2].final}"
    assert_every_answered_call_paid(account, calls, opening)


# == 5. keepalives stretch prepaid calls ================================================================
KEEPALIVES = {
    "INFO": dict(method="INFO"),
    "OPTIONS": dict(method="OPTIONS"),
    "re-INVITE": dict(method="INVITE"),
    # the 2xx ACK restarts the dialog timer (CONFIRMED_NA -> CONFIRMED), even with timeout_noreset
    "late ACK": dict(method=None, ack_after=2.5),
    # before the ACK, every in-dialog request restarts it too
    "INFO, ACK withheld": dict(method="INFO", ack_after=None),
}


@pytest.mark.parametrize("variant", list(KEEPALIVES))
def test_in_dialog_requests_never_stretch_a_prepaid_call(net, account, variant):
    method, ack_after = KEEPALIVES[variant]["method"], KEEPALIVES[variant].get("ack_after", 0)
    opening = account.reset(3)  # 3 s at 1 cent a second
    trunk = net.peer(PRIMARY)
    ines = net.phone("2001", domain="initech.test")
    call = ines.invite(GERMAN_MOBILE, ack=ack_after == 0)
    assert call.code == 200, call.final
    max_secs, gone_at = 3, None
    next_keepalive = call.answered_at + 0.8
    while time.monotonic() < call.answered_at + 6 and not byes_of(trunk, call):
        if ack_after and time.monotonic() >= call.answered_at + ack_after:
            call.ack()
        if method and time.monotonic() >= next_keepalive and call.ended_by_peer() is None:
            call.request(method, body=SDP.format(ip=ines.ip) if method == "INVITE" else "", wait=1)
            next_keepalive += 0.8
        if gone_at is None and account.reserved == 0:
            gone_at = time.monotonic()  # the money is released: the call must be over by now
        time.sleep(0.05)
    byes = byes_of(trunk, call) or [trunk.wait(lambda m: m.is_request and m.method == "BYE" and
                                              m.call_id == call.call_id, 4)]
    assert byes[0] is not None, "the call was never cut"
    cut_after = byes[0].at - call.answered_at
    # the dialog timer ticks once a second: the cut comes within a second of the paid maximum
    assert max_secs - 1.2 <= cut_after <= max_secs + 1.5, \
        f"cut {cut_after:.1f} s after the answer, paid for {max_secs} s"
    assert gone_at is None or gone_at >= byes[0].at - 0.5, (
        f"reservation gone {gone_at - call.answered_at:.1f} s after the answer, the call cut at {cut_after:.1f} s")
    assert call.ended_by_peer() is not None or ines.wait(lambda m: m.is_request and m.method == "BYE", 2)
    (record,) = account.wait_records(1)
    assert record["disposition"] == "cut-at-max-duration", record
    assert record["cost"] <= opening and account.balance == opening - record["cost"] >= 0
