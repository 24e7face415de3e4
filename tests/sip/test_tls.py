"""SIP over TLS for phones, through the real Kamailio (its tls module, the demo certificate).

A phone on TLS registers with the same digest credentials as on UDP, is reached over its own
TLS connection (never over UDP or a new connection to a port nobody listens on), and calls
cross UDP/TCP <-> TLS with each side given the proxy's socket on its own transport as the
dialog's Contact (topology hiding, kamailio.cfg: no Record-Route leaves the proxy), so that each
side's in-dialog requests stay on its own transport. Old protocol versions and TLS 1.2 ciphers
without AEAD are refused at the handshake. Every assertion is on what the peer received.

The phones are tests/sip/sipua.py UAs (Debian's SIPp has no TLS): the TLS one verifies the
proxy's demo certificate (tests/harness.demo_cert, made by scripts/demo-cert.sh as run.sh does).
"""

from __future__ import annotations

import itertools
import re
import socket
import ssl
import time

import pytest

from tests.conftest import OFFICE
from tests.harness import Proxy, RedisServer, admin, closed_by_peer, wait_for
from tests.sip.conftest import CARRIER_IN, PASSWORDS, PRIMARY, RECEPTION
from tests.sip.conftest import Phones as SippPhones
from tests.sip.sipua import UA, Msg, Peer

_ips = itertools.cycle(f"127.0.0.{n}" for n in range(200, 240))
# cipher_list of kamailio.cfg: TLS 1.2 with forward secrecy and AEAD only
MODERN_TLS12 = re.compile(r"^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")


def client_context(proxy, **versions) -> ssl.SSLContext:
    """A phone's TLS client that trusts the proxy's demo certificate (and checks its address)."""
    ctx = ssl.create_default_context(cafile=proxy.tls_cert)
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


def handshake(proxy, ctx: ssl.SSLContext) -> tuple[str, str]:
    """(protocol version, cipher) the proxy's TLS port agrees to with this client; ssl.SSLError if none."""
    with socket.create_connection((proxy.ip, proxy.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=proxy.ip) as tls:
            return tls.version(), tls.cipher()[0]


class Phones:
    """UAs of one test on UDP, TCP or TLS (and the peers it made); closed and unregistered afterwards."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.made: list[UA | Peer] = []

    def phone(self, user: str, transport: str = "udp", domain: str = "acme.test") -> UA:
        proxy = self.proxy
        where = (proxy.ip, proxy.tls_port if transport == "tls" else proxy.port)
        ua = UA(next(_ips), where, user, domain, PASSWORDS[(user, domain)], tcp=transport == "tcp",
                tls=client_context(proxy) if transport == "tls" else None)
        ua.ring_first = True
        self.made.append(ua)
        return ua

    def registered(self, user: str, transport: str = "udp") -> UA:
        ua = self.phone(user, transport)
        answer = ua.register()
        assert answer is not None and answer.status == 200, answer and answer.raw
        return ua

    def close(self) -> None:
        time.sleep(0.1)
        for ua in self.made:
            ua.close()
        for ua in self.made:
            if isinstance(ua, UA):
                self.proxy.unregister(f"{ua.user}@{ua.domain}")


@pytest.fixture
def phones(proxy):
    made = Phones(proxy)
    yield made
    made.close()


def came_over(ua: UA, msg: Msg) -> str:
    """The transport msg reached ua on, as the ua's socket tells."""
    if msg.conn is None:
        return "udp"
    return "tls" if isinstance(msg.conn, ssl.SSLSocket) else "tcp"


def contact_socket(msg: Msg) -> tuple[str, int, str] | None:
    """(host, port, transport) of the Contact of msg."""
    uris = msg.uris("contact")
    match = re.match(r"sips?:(?:[^@;>]+@)?([^:;>]+):(\d+)", uris[0]) if uris else None
    if match is None:
        return None
    transport = re.search(r";transport=(\w+)", uris[0])
    return match.group(1), int(match.group(2)), transport.group(1).lower() if transport else "udp"


def assert_bridged(proxy, invite: Msg, callee: UA | None, transport: str, answer: Msg, other: str) -> None:
    """The INVITE reached the callee over transport (callee None: a UDP peer, not a UA) and names
    the proxy's socket on that transport as the dialog's Contact; the caller's 200 (answer) names
    the proxy's socket on the caller's transport (other). Neither carries a Record-Route: topos
    restores the route set on what comes back (kamailio.cfg)."""
    if callee is not None:
        assert came_over(callee, invite) == transport, invite.raw
        assert invite.header("via").startswith(f"SIP/2.0/{transport.upper()}"), invite.raw
    ports = {"udp": proxy.port, "tcp": proxy.port, "tls": proxy.tls_port}
    assert contact_socket(invite) == (proxy.ip, ports[transport], transport), invite.raw
    assert contact_socket(answer) == (proxy.ip, ports[other], other), answer.raw
    assert not invite.all("record-route") and not answer.all("record-route"), (invite.raw, answer.raw)


def invite_for(ua: UA, timeout: float = 5) -> Msg:
    got = ua.wait(lambda m: m.is_request and m.method == "INVITE" and not m.tag("to"), timeout)
    assert got is not None, f"{ua.user} on {ua.transport} received no INVITE"
    return got


def ringing_seen(ua: UA, call_id: str) -> bool:
    return any(not m.is_request and m.call_id == call_id and m.status == 180 for m in ua.inbox)


# -- the handshake -----------------------------------------------------------------------------------
def test_tls_listener_speaks_tls_1_3_with_the_demo_certificate(proxy):
    version, _ = handshake(proxy, client_context(proxy))
    assert version == "TLSv1.3"


def test_tls_1_2_only_with_forward_secret_aead_ciphers(proxy):
    version, cipher = handshake(proxy, client_context(proxy, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and MODERN_TLS12.match(cipher), cipher
    # a TLS 1.2 client offering only CBC suites (no AEAD; these would fit the demo's ECDSA key) gets nothing
    weak = client_context(proxy, maximum_version=ssl.TLSVersion.TLSv1_2)
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
                     "ECDHE-ECDSA-AES256-SHA384")
    with pytest.raises(ssl.SSLError):
        handshake(proxy, weak)


@pytest.mark.parametrize("old", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused_at_the_handshake(proxy, old):
    ctx = client_context(proxy, minimum_version=old, maximum_version=old)
    # OpenSSL 3 clients disable TLS 1.0/1.1 at the default security level: level 0 makes this
    # client really offer them, as an old phone would
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(proxy, ctx)
    # the proxy's alert (RFC 8446 6.2 protocol_version), not this client giving up by itself
    assert "alert protocol version" in str(refused.value).lower(), refused.value
    # the same client allowed TLS 1.2 is let in: the refusal is the version, not the client
    ctx = client_context(proxy, minimum_version=old, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert handshake(proxy, ctx)[0] == "TLSv1.2"


# -- registration --------------------------------------------------------------------------------------
def test_tls_phone_registers_with_its_digest_and_is_saved_on_the_tls_socket(proxy, phones):
    alice = phones.registered("2001", "tls")
    assert alice.sock.version() == "TLSv1.3"
    contacts = proxy.contacts("2001@acme.test")
    assert contacts == [f"sip:2001@{alice.ip}:{alice.port};transport=tls"], contacts
    lookup = proxy.kamcmd("ul.lookup", "location", "2001@acme.test")
    assert f"Socket: tls:{proxy.ip}:{proxy.tls_port}" in lookup, lookup
    assert f"Received: sip:{alice.ip}:{alice.port};transport=tls" in lookup, lookup
    # the challenge and realm are the ones a UDP phone gets: the company's domain
    challenge = next(m for m in alice.inbox if not m.is_request and m.status == 401)
    assert 'realm="acme.test"' in challenge.header("www-authenticate")


def test_tls_phone_with_a_wrong_password_or_a_contact_without_tls_is_refused(proxy, phones):
    mallory = phones.phone("2001", "tls")
    mallory.password = "not-alice"
    answer = mallory.register()
    assert answer is not None and answer.status == 403, answer
    alice = phones.phone("2002", "tls")
    # its own address and port, but not asking for TLS: the phone would expect plain SIP there
    answer = alice.register(contacts=[f"<sip:2002@{alice.ip}:{alice.port}>"])
    assert answer is not None and (answer.status, answer.first.split(" ", 2)[2]) == (403, "Contact Must Use TLS")
    assert proxy.contacts("2002@acme.test") == [] and proxy.contacts("2001@acme.test") == []


def test_tls_phone_with_its_listening_address_as_contact_is_reached_through_its_connection(proxy, phones):
    """As baresip (and phones behind a NAT) register: the Contact names where the phone listens,
    not the connection's source port. The proxy keeps the Contact as the Request-URI and sends
    over the connection the REGISTER came on; nothing is sent to the address the Contact names."""
    elsewhere = UA(next(_ips), (proxy.ip, proxy.port), "nobody")  # a UDP listener where the Contact points
    phones.made.append(elsewhere)
    alice = phones.phone("2001", "tls")
    alice.own_contact = f"sip:2001-0x5e1f@{elsewhere.ip}:{elsewhere.port};transport=tls"
    assert alice.register().status == 200
    lookup = proxy.kamcmd("ul.lookup", "location", "2001@acme.test")
    assert f"Address: {alice.own_contact}" in lookup and \
        f"Received: sip:{alice.ip}:{alice.port};transport=tls" in lookup, lookup
    bruno = phones.registered("2002", "udp")
    call = bruno.invite("2001")
    assert call.code == 200, call.final
    invite = invite_for(alice)
    assert came_over(alice, invite) == "tls" and invite.ruri == alice.own_contact
    assert contact_socket(call.final)[:2] == (proxy.ip, proxy.port)  # the caller sees the proxy only...
    assert call.bye().status == 200  # ...and its BYE still reaches alice's Contact over her connection
    bye = alice.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 3)
    assert bye is not None and came_over(alice, bye) == "tls" and bye.ruri == alice.own_contact
    # as the caller: the callee's BYE names alice's Contact and comes through her connection
    out = alice.invite("2002")
    assert out.code == 200, out.final
    assert bruno.bye_as_callee(out.call_id).status == 200
    bye = out.ended_by_peer()
    assert bye is not None and came_over(alice, bye) == "tls" and bye.ruri == alice.own_contact
    assert elsewhere.inbox == []


# -- calls across transports ---------------------------------------------------------------------------
def test_tls_phone_calls_a_udp_phone_and_the_callee_hangs_up(proxy, phones):
    bruno = phones.registered("2002", "udp")
    alice = phones.registered("2001", "tls")
    call = alice.invite("2002")
    assert call.code == 200, call.final
    invite = invite_for(bruno)
    assert_bridged(proxy, invite, bruno, "udp", call.final, "tls")
    assert ringing_seen(alice, call.call_id)
    # the callee's BYE reaches the caller over its TLS connection
    bye_answer = bruno.bye_as_callee(call.call_id)
    assert bye_answer is not None and bye_answer.status == 200, bye_answer
    bye = call.ended_by_peer()
    assert bye is not None and came_over(alice, bye) == "tls"
    assert bye.first.startswith(f"BYE sip:2001@{alice.ip}:{alice.port};transport=tls ")


def test_udp_phone_calls_a_tls_phone_and_the_caller_hangs_up(proxy, phones):
    alice = phones.registered("2001", "tls")
    bruno = phones.registered("2002", "udp")
    call = bruno.invite("2001")
    assert call.code == 200, call.final
    invite = invite_for(alice)
    assert_bridged(proxy, invite, alice, "tls", call.final, "udp")
    assert invite.first.startswith(f"INVITE sip:2001@{alice.ip}:{alice.port};transport=tls ")
    assert ringing_seen(bruno, call.call_id)
    # the ACK of the 200 too: it follows the route set, the proxy sends it on over TLS
    assert alice.wait(lambda m: m.is_request and m.method == "ACK" and m.call_id == call.call_id, 3) is not None
    answer = call.bye()
    assert answer is not None and answer.status == 200, answer
    bye = alice.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 3)
    assert bye is not None and came_over(alice, bye) == "tls"


def test_a_udp_caller_cancels_while_a_tls_phone_rings(proxy, workdir):
    """SIPp's call-cancel.xml (UDP) hangs up on 180: the CANCEL reaches the TLS phone over its
    connection, the phone's 487 reaches SIPp."""
    sipp_phones = SippPhones(proxy, workdir)
    alice = None
    try:
        alice = UA(next(_ips), (proxy.ip, proxy.tls_port), "2001", "acme.test", PASSWORDS[("2001", "acme.test")],
                   tls=client_context(proxy), answer_invites="ring")
        assert alice.register().status == 200
        bruno = sipp_phones.phone("2002")
        call = sipp_phones.sipp("call-cancel.xml", bruno, *bruno.auth_args(), "-set", "dial", "2001") \
            .start(sipp_phones.target).wait()
        assert "FINAL 487" in call.log, call.log + call.stdout
        cancel = alice.wait(lambda m: m.is_request and m.method == "CANCEL", 3)
        assert cancel is not None and came_over(alice, cancel) == "tls"
    finally:
        sipp_phones.cleanup()
        if alice is not None:
            alice.close()
        proxy.unregister("2001@acme.test")


def test_tls_phone_hangs_up_a_call_it_answered(proxy, phones):
    alice = phones.registered("2001", "tls")
    bruno = phones.registered("2002", "udp")
    call = bruno.invite("2001")
    assert call.code == 200, call.final
    answer = alice.bye_as_callee(call.call_id)
    assert answer is not None and answer.status == 200, answer
    bye = call.ended_by_peer()
    assert bye is not None and came_over(bruno, bye) == "udp"


def test_plain_tcp_phone_is_unaffected_and_reaches_a_tls_phone(proxy, phones):
    carol = phones.registered("2002", "tcp")
    assert proxy.contacts("2002@acme.test") == [f"sip:2002@{carol.ip}:{carol.port};transport=tcp"]
    alice = phones.registered("2001", "tls")
    # TLS -> TCP: the TCP phone gets it over its TCP connection, as before TLS existed
    call = alice.invite("2002")
    assert call.code == 200, call.final
    invite = invite_for(carol)
    assert_bridged(proxy, invite, carol, "tcp", call.final, "tls")
    assert call.bye().status == 200
    assert carol.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == call.call_id, 3) is not None
    # TCP -> TLS
    back = carol.invite("2001")
    assert back.code == 200, back.final
    assert came_over(alice, invite_for(alice)) == "tls"
    assert alice.bye_as_callee(back.call_id).status == 200
    bye = back.ended_by_peer()
    assert bye is not None and came_over(carol, bye) == "tcp"


def test_tls_phone_calls_out_through_the_udp_trunk(proxy, phones):
    trunk = Peer(*PRIMARY)
    phones.made.append(trunk)
    alice = phones.registered("2001", "tls")
    call = alice.invite("0612345678")
    assert call.code == 200, call.final
    (invite,) = trunk.invites()
    assert invite.ruri.startswith("sip:+33612345678@") and invite.conn is None  # UDP, as the trunk is
    assert_bridged(proxy, invite, None, "udp", call.final, "tls")
    assert call.bye().status == 200
    assert trunk.wait(lambda m: m.is_request and m.method == "BYE" and m.call_id == invite.call_id, 3) is not None


def test_a_tls_phone_whose_connection_is_gone_is_not_rung_over_anything_else(proxy, phones):
    alice = phones.registered("2001", "tls")
    bruno = phones.registered("2002", "udp")
    assert alice.port in connected_ports(proxy)
    alice.close()  # the phone's TLS connection closes (it left the network without unregistering)
    wait_for(lambda: alice.port not in connected_ports(proxy), 5, "the proxy to see the connection closed")
    mark = proxy.mark()
    call = bruno.invite("2001")
    # nothing listens at the phone's old source port: a clear answer at once, and no connection
    # attempt to that port (nor a datagram: the UA's socket is closed, a UDP relay would time out)
    assert (call.code, call.final.first.split(" ", 2)[2]) == (480, "Extension Not Connected"), call.final
    log = proxy.log_since(mark)
    assert f"{alice.ip}:{alice.port}" not in log.replace(f"{alice.ip}:{alice.port};transport=tls", ""), log


def test_a_did_whose_tls_phone_is_gone_goes_to_the_receptionist(proxy, phones):
    """+33142685304 rings 2004 and falls back to the receptionist (tests/sip/office.yaml): a TLS
    phone that cannot be reached is treated as not registered, not as a failed call."""
    reception = Peer(*RECEPTION)
    carrier = UA(CARRIER_IN[0], (proxy.ip, proxy.port), "+33698000001", "carrier.example", port=CARRIER_IN[1])
    phones.made += [reception, carrier]
    denis = phones.registered("2004", "tls")
    denis.close()
    wait_for(lambda: denis.port not in connected_ports(proxy), 5, "the proxy to see the connection closed")
    call = carrier.invite(f"sip:+33142685304@{proxy.ip}:{proxy.port}")
    assert call.code == 200, call.final
    (invite,) = reception.invites()
    assert invite.ruri.startswith(f"sip:+33142685304@{RECEPTION[0]}:{RECEPTION[1]}")
    assert call.bye().status == 200


def test_the_proxys_bye_at_a_prepaid_maximum_reaches_a_tls_caller_through_its_connection(workdir):
    """A prepaid call from a TLS phone whose Contact is its listening address: at the maximum
    duration the proxy hangs up both legs itself, and the caller's BYE goes through the TLS
    connection (kemi.edge.next_hop), not to the Contact's address."""
    office = workdir / "office-tls-prepaid.yaml"
    office.write_text("\n".join(line for line in OFFICE.read_text().splitlines() if "name: announcer" not in line)
                      + "\n")  # no balance announcement: the call goes straight to the trunk
    redis = RedisServer(workdir).start()
    kam = None
    opened: list = []
    try:
        admin(redis.url, "load", str(office))
        admin(redis.url, "prepaid", "activate", "acme")
        admin(redis.url, "prepaid", "topup", "acme", "500c", "--ref", "tls-prepaid")
        admin(redis.url, "rate", "set", "+4915", "60c", "--increments", "1/1", "--fee", "0c")
        kam = Proxy(workdir, redis.url, PREPAID_MAX_CALL_S="3").start()
        trunk = Peer(*PRIMARY)
        elsewhere = UA(next(_ips), (kam.ip, kam.port), "nobody")
        alice = UA(next(_ips), (kam.ip, kam.tls_port), "2001", "acme.test", PASSWORDS[("2001", "acme.test")],
                   tls=client_context(kam))
        opened += [trunk, elsewhere, alice]
        alice.own_contact = f"sip:2001@{elsewhere.ip}:{elsewhere.port};transport=tls"
        assert alice.register().status == 200
        call = alice.invite("004915112345678")
        assert call.code == 200, call.final
        bye = wait_for(call.ended_by_peer, 10, "the proxy's BYE at the maximum duration")
        assert came_over(alice, bye) == "tls" and bye.ruri == alice.own_contact
        assert trunk.wait(lambda m: m.is_request and m.method == "BYE", 3) is not None
        assert elsewhere.inbox == []
    finally:
        for item in opened:
            item.close()
        if kam is not None:
            kam.stop()
        redis.stop()


def connected_ports(proxy) -> set[int]:
    """Source ports of the TLS/TCP connections the proxy has open (kamcmd core.tcp_list)."""
    listing = proxy.kamcmd("core.tcp_list")
    return {int(port) for port in re.findall(r"src_port:\s*(\d+)", listing)}


# -- connections that never speak ----------------------------------------------------------------------
def test_silent_tls_connections_are_closed_and_do_not_lock_phones_out(workdir, redis_server, proxy):
    """Class 10 of SECURITY.md on the TLS port: connections that never even start a handshake
    fill the connection limit (TCP_MAX_CONNECTIONS, TCP and TLS together) for no longer than
    TCP_IDLE_S (tls connection_timeout; the module's default would be 10 minutes)."""
    kam = Proxy(workdir, redis_server.url_of(0), TCP_MAX_CONNECTIONS="16", TCP_IDLE_S="3").start()
    silent: list[socket.socket] = []
    try:
        for _ in range(16 + 4):
            s = socket.socket()
            s.bind(("127.0.0.241", 0))
            s.settimeout(2)
            try:
                s.connect((kam.ip, kam.tls_port))
            except OSError:
                s.close()
                continue
            silent.append(s)
        with pytest.raises((ssl.SSLError, OSError)):  # control: the limit is full
            handshake(kam, client_context(kam))
        started = time.monotonic()
        wait_for(lambda: _handshakes(kam), 3 + 8, "a phone to get a TLS handshake again")
        assert time.monotonic() - started >= 1  # not at once: the silent ones had to time out first
        closed = closed_by_peer(silent)
        assert closed >= 16, f"only {closed} of {len(silent)} silent connections closed by the proxy"
    finally:
        for s in silent:
            s.close()
        kam.stop()


def _handshakes(proxy) -> bool:
    try:
        return handshake(proxy, client_context(proxy))[0] == "TLSv1.3"
    except (ssl.SSLError, OSError):
        return False
