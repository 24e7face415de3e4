"""Toll fraud and abuse at the edge, attacked through the real proxy.

Every attack test asserts on what the trunk, the emergency trunk or the victim RECEIVED
(tests/sip/rawsip.Peer records every datagram), and carries a control in the same test
that proves the setup would have shown the attack: the same peer does receive the
legitimate call. Floods are bounded in count and time and only ever target loopback.

Settings the fixes read (defaults in scripts/env.sh, recipes in SECURITY.md):
PIKE_REQS, PIKE_WINDOW_S, BAN_S (flood bans per source address); AUTH_FAIL_MAX,
AUTH_FAIL_WINDOW_S, AUTH_BAN_S (auth failures per source address and user);
MAX_CONTACTS; TCP_MAX_CONNECTIONS, TCP_IDLE_S.
"""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import OFFICE, SIP_DB
from tests.harness import Proxy, RedisServer, admin, closed_by_peer, wait_for
from tests.sip.conftest import PASSWORDS
from tests.sip.rawsip import (Peer, Uac, call_id, digest_header, fresh_ip, header, header_names, headers, status,
                              tcp_options)

PRIMARY, EMERGENCY, CARRIER_IN = ("127.0.0.2", 5060), ("127.0.0.5", 5060), ("127.0.0.6", 5060)
ALICE = ("2001", "acme.test", "alice-secret-1")
BRUNO = ("2002", "acme.test", "bruno-secret-2")
ALICE_DID, ACME_LOCATION = "+33142685301", "12 rue de la Paix, 75002 Paris"

# The proxy these tests start with low thresholds (its own Kamailio, the session's Redis).
GUARDED = dict(PIKE_REQS="30", PIKE_WINDOW_S="2", BAN_S="4", AUTH_FAIL_MAX="4", AUTH_FAIL_WINDOW_S="60",
               AUTH_BAN_S="60", MAX_CONTACTS="3",
               # the module's tests share this proxy's emergency counters: out of their way (see LIMITS)
               EMERGENCY_CALLS_MAX="1000", EMERGENCY_UNIDENTIFIED_MAX="100000")


@pytest.fixture(scope="module")
def guarded(workdir, proxy, redis_server):
    """A second proxy with low abuse thresholds (depends on `proxy`: the office is loaded)."""
    kam = Proxy(workdir, redis_server.url, **GUARDED).start()
    yield kam
    kam.stop()


@pytest.fixture
def isolated(workdir):
    """Its own Redis (which a test may stop or corrupt) and a proxy with a static emergency trunk."""
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    kam = Proxy(workdir, redis.url, EMERGENCY_TRUNKS="udp:127.0.0.5:5060").start()
    yield redis, kam
    kam.stop()
    redis.stop()


def flood(proxy, ip: str, count: int, seconds: float = 5.0) -> int:
    """Send at most `count` OPTIONS keepalives from ip within `seconds`; how many were answered."""
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        port = s.getsockname()[1]
        s.setblocking(False)
        deadline = time.monotonic() + seconds
        for n in range(count):
            if time.monotonic() > deadline:
                break
            cid = uuid.uuid4().hex
            s.sendto((f"OPTIONS sip:{proxy.ip}:{proxy.port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{cid[:12]};rport\r\n"
                      f"From: <sip:flood@{ip}>;tag={cid[:8]}\r\nTo: <sip:{proxy.ip}:{proxy.port}>\r\n"
                      f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
                     .encode(), (proxy.ip, proxy.port))
            answered += _drain(s)
        time.sleep(0.3)
        answered += _drain(s)
    return answered


def _drain(s) -> int:
    got = 0
    while True:
        try:
            s.recv(65535)
            got += 1
        except (BlockingIOError, ConnectionRefusedError):
            return got


def keepalive_answered(proxy, ip: str, timeout: float = 1.0) -> bool:
    with Uac(proxy, ip) as probe:
        return probe.options(timeout=timeout).final == (200, "OK")


def log_lines_with(proxy, mark: int, needle: str) -> list[str]:
    return [line for line in proxy.log_since(mark).splitlines() if needle in line]


# == 6. Digest replay ================================================================================
def test_captured_invite_credentials_replayed_from_elsewhere_do_not_reach_the_trunk(proxy):
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice, Uac(proxy) as mallory:
        call = alice.invite(*ALICE, "0612345678")
        assert trunk.wait_for("INVITE", call_id(call.last_sent)), "control: Alice's own call reaches the trunk"
        stolen = header(call.last_sent, "Proxy-Authorization")
        # another address, another Call-ID, another number than the digest's uri
        replay = mallory.invite(*ALICE[:2], None, "00442079460000", extra=[f"Proxy-Authorization: {stolen}"])
        time.sleep(0.5)
        assert trunk.requests("INVITE", call_id(replay.last_sent)) == [], f"replay answered {replay.final}"
        assert replay.final is not None and replay.final[0] in (401, 403, 407)


def test_replayed_credentials_for_another_number_from_the_same_address_do_not_reach_the_trunk(proxy):
    """Same source and Call-ID (an eavesdropper behind the same NAT): the digest uri still names 0612345678."""
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice:
        call = alice.invite(*ALICE, "0612345678")
        cid = call_id(call.last_sent)
        assert trunk.wait_for("INVITE", cid), "control: Alice's own call reaches the trunk"
        stolen = header(call.last_sent, "Proxy-Authorization")
        text = call.last_sent.replace("INVITE sip:0612345678@acme.test", "INVITE sip:00442079460000@acme.test") \
            .replace("CSeq: 2 INVITE", "CSeq: 3 INVITE").replace("z9hG4bK", "z9hG4bKre")
        assert stolen in text
        alice.send(text)
        time.sleep(0.8)
        assert not [i for i in trunk.requests("INVITE", cid) if "+442079460000" in i.split("\r\n")[0]]


def test_replayed_register_cannot_add_an_attacker_contact_or_remove_the_victims(proxy):
    proxy.unregister("2001@acme.test")
    try:
        with Uac(proxy) as alice, Uac(proxy) as mallory:
            reg = alice.register(*ALICE)
            assert reg.final == (200, "OK")
            assert any(f"{alice.ip}:{alice.port}" in c for c in proxy.contacts("2001@acme.test"))
            stolen = header(reg.last_sent, "Authorization")
            # the attacker's own Contact, with the victim's credentials
            mallory.register(*ALICE[:2], None, extra=[f"Authorization: {stolen}"])
            time.sleep(0.2)
            contacts = proxy.contacts("2001@acme.test")
            assert not any(mallory.ip in c for c in contacts), f"attacker's contact saved: {contacts}"
            # and a de-registration of everything
            mallory.register(*ALICE[:2], None, contact="*", expires=0, extra=[f"Authorization: {stolen}"])
            time.sleep(0.2)
            contacts = proxy.contacts("2001@acme.test")
            assert any(f"{alice.ip}:{alice.port}" in c for c in contacts), "the victim was de-registered"
    finally:
        proxy.unregister("2001@acme.test")


def test_a_retransmitted_register_gets_the_same_answer_not_a_new_challenge(proxy):
    """Its nonce count was used once: processed twice it would be a replay (stale). tm answers it."""
    proxy.unregister("2001@acme.test")
    try:
        with Uac(proxy) as phone:
            reg = phone.register(*ALICE)
            assert reg.final == (200, "OK")
            phone.send(reg.last_sent)  # the very same datagram, as after a lost 200
            again = phone.collect(call_id(reg.last_sent), 2)
            assert again and status(again[-1]) == (200, "OK"), again
    finally:
        proxy.unregister("2001@acme.test")


def test_phone_reusing_its_nonce_with_a_higher_count_still_calls(proxy):
    """The fix must not break credential caching: nc=2 on the same nonce is a fresh, valid answer."""
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice:
        first = alice.invite(*ALICE, "0612345678")
        assert trunk.wait_for("INVITE", call_id(first.last_sent))
        challenge = next(a for a in first.answers if a.startswith("SIP/2.0 407"))
        name, value = digest_header(challenge, "2001", ALICE[2], "INVITE", "sip:0612345678@acme.test", nc=2)
        again = alice.invite(*ALICE[:2], None, "0612345678", extra=[f"{name}: {value}"])
        if again.final and again.final[0] == 407:  # a proxy with one-time nonces challenges again: fine
            again = alice.invite(*ALICE, "0612345678")
        assert trunk.wait_for("INVITE", call_id(again.last_sent)), again.answers


# == 7. Password guessing, floods, scanners ==========================================================
def test_password_guessing_blocks_that_address_and_user_only(guarded):
    attacker_ip = fresh_ip()
    guarded.unregister("2001@acme.test")
    guarded.unregister("2002@acme.test")
    try:
        with Uac(guarded, attacker_ip) as a:
            assert a.register(*ALICE).final == (200, "OK"), "control: the right password works from here"
            mark = guarded.mark()
            for n in range(int(GUARDED["AUTH_FAIL_MAX"]) + 2):
                a.register(*ALICE[:2], f"guess-{n}")
                time.sleep(0.1)  # stay under the flood limit: this is guessing, not flooding
            blocked = a.register(*ALICE)
            assert blocked.final != (200, "OK"), "the right password still works after the guesses"
            assert log_lines_with(guarded, mark, attacker_ip), "the block is not logged"
            # the rest of the building behind that address keeps working
            assert a.register(*BRUNO).final == (200, "OK")
        # and the user keeps working from everywhere else
        with Uac(guarded) as elsewhere:
            assert elsewhere.register(*ALICE).final == (200, "OK")
    finally:
        guarded.unregister("2001@acme.test")
        guarded.unregister("2002@acme.test")


def test_invite_password_guessing_is_blocked_too(guarded):
    with Peer(*PRIMARY) as trunk, Uac(guarded) as a:
        for n in range(int(GUARDED["AUTH_FAIL_MAX"]) + 2):
            a.invite(*ALICE[:2], f"guess-{n}", "0612345678")
            time.sleep(0.1)
        call = a.invite(*ALICE, "0612345678")
        time.sleep(0.3)
        assert trunk.requests("INVITE", call_id(call.last_sent)) == [], "guessed, then called"
    with Peer(*PRIMARY) as trunk, Uac(guarded) as elsewhere:
        ok = elsewhere.invite(*ALICE, "0612345678")
        assert trunk.wait_for("INVITE", call_id(ok.last_sent)), "control: the same user from elsewhere calls"


def test_flood_bans_the_source_for_a_while_and_logs_it(guarded):
    flooder, bystander = fresh_ip(), fresh_ip()
    mark = guarded.mark()
    sent = 300
    answered = flood(guarded, flooder, sent)
    assert answered < sent, "every request of the flood was answered"
    assert not keepalive_answered(guarded, flooder), "the flooding address is still served"
    assert keepalive_answered(guarded, bystander), "another address must not suffer"
    assert [line for line in log_lines_with(guarded, mark, flooder) if "ban" in line.lower()], \
        "the ban is not logged with the address"
    started = time.monotonic()
    ban_s = int(GUARDED["BAN_S"])
    assert wait_for(lambda: keepalive_answered(guarded, flooder, 0.5), ban_s + 4 * int(GUARDED["PIKE_WINDOW_S"]) + 6,
                    "the ban to expire")
    assert time.monotonic() - started >= ban_s - 2, "the ban was lifted before BAN_S"


def test_flood_bans_a_stranger_but_never_a_trusted_trunk(guarded):
    stranger = fresh_ip()
    assert flood(guarded, stranger, 300) < 300
    assert not keepalive_answered(guarded, stranger), "control: the same flood from a stranger is banned"
    # carrier-in (source:127.0.0.6:5060) sends as much
    with Uac(guarded, *CARRIER_IN) as carrier:
        answered = 0
        for _ in range(150):
            answered += carrier.options(timeout=0.5).final == (200, "OK")
        assert answered == 150
        assert carrier.options().final == (200, "OK")


def http_flood(proxy, ip: str, count: int, transport: str) -> int:
    """`count` HTTP GETs from ip to the proxy's SIP socket, within a few seconds: datagrams over UDP; over TCP ten,
    over TLS thirty pipelined on each connection (a client keeping its connection alive: handshakes alone are
    slower than a flood, and BAN_S would be over before the flood is). How many got an HTTP answer."""
    import select
    import ssl
    request = f"GET /metrics HTTP/1.1\r\nHost: {proxy.ip}\r\nUser-Agent: curl/8.0\r\n\r\n".encode()
    per_socket = {"udp": 1, "tcp": 10, "tls": 30}[transport]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    socks = []
    try:
        for start in range(0, count, per_socket):
            n = min(per_socket, count - start)
            if transport == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((ip, 0))
                s.sendto(request, (proxy.ip, proxy.port))
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((ip, 0))
                s.settimeout(2)
                s.connect((proxy.ip, proxy.tls_port if transport == "tls" else proxy.port))
                if transport == "tls":
                    s = context.wrap_socket(s)
                s.sendall(request * n)
            s.setblocking(False)
            socks.append(s)
        answered, received = 0, {s: b"" for s in socks}
        deadline = time.monotonic() + 1.5
        waiting = list(socks)
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            for s in ready:
                try:
                    data = s.recv(65535)
                except ssl.SSLWantReadError:  # a TLS record that is no data (a session ticket)
                    continue
                except OSError:
                    data = b""
                if not data or transport == "udp":
                    waiting.remove(s)
                received[s] += data
        return sum(data.count(b"HTTP/1.") for data in received.values())
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("transport", ["tcp", "udp", "tls"])
def test_http_flood_on_the_sip_ports_is_limited_like_sip(guarded, transport):
    """Kamailio hands HTTP on any socket to the routes (xhttp), which answered each one 404: 300 GETs from one
    address were all answered. pike now counts them as it counts SIP, and the address is banned."""
    flooder, bystander = fresh_ip(), fresh_ip()
    mark = guarded.mark()
    assert http_flood(guarded, bystander, 1, transport) == 1, "control: one HTTP request is answered (404)"
    sent = 300
    answered = http_flood(guarded, flooder, sent, transport)
    assert answered < sent / 2, f"{answered} of {sent} HTTP requests from one address answered"
    assert [line for line in log_lines_with(guarded, mark, flooder) if "banned" in line], "the ban is not logged"
    assert not keepalive_answered(guarded, flooder), "the flooding address is still served SIP"
    assert keepalive_answered(guarded, bystander), "another address must not suffer"
    # the metrics socket is not the SIP one: Prometheus is served, even from the banned address
    import http.client
    conn = http.client.HTTPConnection(guarded.ip, guarded.metrics_port, timeout=5, source_address=(flooder, 0))
    try:
        conn.request("GET", "/metrics")
        page = conn.getresponse()
        assert page.status == 200 and "kamailio_core_rcv_requests" in page.read().decode()
    finally:
        conn.close()


def shape(answer: str, domain: str, attacker) -> tuple:
    """An answer with what differs between any two requests blanked out (tags, branch, Call-ID, nonce, the
    attacker's own address and the domain it asked about): what it tells about the domain. The status line
    last, the headers sorted before it."""
    text = answer.replace(f"{attacker.ip}:{attacker.port}", "<addr>").replace(attacker.ip, "<ip>")
    text = text.replace(str(attacker.port), "<port>").replace(domain, "<domain>")
    text = re.sub(r'(nonce|opaque)="[^"]*"', r'\1="<x>"', text)
    text = re.sub(r"(tag|branch)=[^;>\s,]*", r"\1=<x>", text)
    text = re.sub(r"^Call-ID:.*$", "Call-ID: <x>", text, flags=re.M | re.I)
    first, *rest = text.strip().split("\r\n")
    return (*sorted(rest), first)


@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_known_and_unknown_domains_get_the_same_answers_so_none_can_be_listed(proxy, method):
    """An unknown domain got 403 at once and ours a challenge: 100 guesses listed our companies. Now every domain is
    challenged, and credentials for one that is not ours are refused as a wrong password is (and counted)."""
    ours = ["acme.test", "globex.test", "initech.test"]
    guesses = [f"{word}{n}.test" for n, word in enumerate(["acme", "corp", "office", "sales", "team"] * 20)][:97]
    shapes = {}
    with Peer(*PRIMARY) as trunk:
        for domain in ours + guesses:
            # an address per guess, as a botnet would: pike's flood limit and the per-address failure limit
            # are not what is tested here
            with Uac(proxy) as attacker:
                if method == "REGISTER":
                    bare = attacker.register("2001", domain, None)
                    tried = attacker.register("2001", domain, "a-guessed-password", rounds=1)
                else:
                    bare = attacker.invite("2001", domain, None, "0612345678")
                    tried = attacker.invite("2001", domain, "a-guessed-password", "0612345678", rounds=1)
                finals = [[a for a in ex.answers if not a.startswith("SIP/2.0 1")] for ex in (bare, tried)]
                assert all(finals), (domain, bare.answers, tried.answers)
                shapes[domain] = tuple(shape(f[-1], domain, attacker) for f in finals)
        time.sleep(0.3)
        assert trunk.requests("INVITE") == [], "a guessed domain's call reached the trunk"
    first = shapes["acme.test"]
    assert first[0][-1].startswith(("SIP/2.0 401", "SIP/2.0 407")) and first[1][-1] == "SIP/2.0 403 Forbidden", first
    assert {domain for domain, got in shapes.items() if got != first} == set(), \
        [(d, got) for d, got in shapes.items() if got != first][:2]
    assert proxy.contacts("2001@acme5.test") == []
    with Uac(proxy) as phone:  # control: the domain is real, and answers its phone's true password
        assert phone.register(*ALICE, expires=0).final == (200, "OK")


def test_guessing_credentials_on_an_unknown_domain_is_counted_and_blocked_like_a_wrong_password(guarded):
    with Uac(guarded) as guesser:
        for _ in range(int(GUARDED["AUTH_FAIL_MAX"])):
            assert guesser.register("2001", "nowhere.test", "guess", rounds=1).final == (403, "Forbidden")
        assert guesser.register("2001", "nowhere.test", "guess", rounds=1).final == (403, "Too Many Failed Attempts")


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipcli/v1.8", "sipvicious", "VaxSIPUserAgent/3.1",
                                   "pplsip", "SIPVicious 0.3.4"])
@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "INVITE"])
def test_scanner_user_agents_get_no_answer(proxy, agent, method):
    with Uac(proxy) as scanner:
        def probe(ua: str):
            if method == "REGISTER":
                return scanner.register(*ALICE[:2], None, extra=[f"User-Agent: {ua}"], timeout=1)
            if method == "INVITE":
                return scanner.invite(*ALICE[:2], None, "0612345678", extra=[f"User-Agent: {ua}"], timeout=1)
            return scanner.options(extra=[f"User-Agent: {ua}"])
        assert probe("Yealink SIP-T46S 66.86.0.15").final is not None, "control: a phone's agent is answered"
        mark = proxy.mark()
        assert probe(agent).answers == []
        assert log_lines_with(proxy, mark, scanner.ip), "the drop is not logged"


def test_emergency_call_from_a_registered_phone_gets_through_while_its_address_is_banned(guarded):
    ip = fresh_ip()
    guarded.unregister("2002@acme.test")
    try:
        with Uac(guarded, ip) as phone, Peer(*EMERGENCY) as psap:
            assert phone.register(*BRUNO).final == (200, "OK")
            flood(guarded, ip, 300)  # another device behind the same address misbehaves
            assert not keepalive_answered(guarded, ip), "control: the address is banned"
            call = phone.invite(*BRUNO, "112")
            assert psap.wait_for("INVITE", call_id(call.last_sent)), call.answers
    finally:
        guarded.unregister("2002@acme.test")


def test_emergency_call_of_a_user_blocked_for_guessing_gets_through(guarded):
    ip = fresh_ip()
    guarded.unregister("2002@acme.test")
    try:
        with Uac(guarded, ip) as phone, Uac(guarded, ip) as guesser, Peer(*EMERGENCY) as psap:
            assert phone.register(*BRUNO).final == (200, "OK")
            for n in range(int(GUARDED["AUTH_FAIL_MAX"]) + 2):
                guesser.register(*BRUNO[:2], f"guess-{n}")
                time.sleep(0.1)
            assert guesser.register(*BRUNO).final != (200, "OK"), "control: 2002 is blocked at this address"
            call = phone.invite(*BRUNO, "112")
            assert psap.wait_for("INVITE", call_id(call.last_sent)), call.answers
    finally:
        guarded.unregister("2002@acme.test")


# The proxies of the emergency-limit tests: small limits, a window no test outlives.
LIMITS = dict(GUARDED, EMERGENCY_CALLS_MAX="3", EMERGENCY_UNIDENTIFIED_MAX="5", EMERGENCY_WINDOW_S="60")
BRUNO_DID = "+33142685302"


@pytest.fixture
def limited(workdir, proxy, redis_server):
    """A proxy of its own per test (the per-node emergency counter is the node's), on the session's Redis."""
    kam = Proxy(workdir, redis_server.url, **LIMITS).start()
    yield kam
    kam.stop()


def junk_credentials(variant: str, dial: str = "112") -> tuple[str, list[str]]:
    """(From URI, extra headers) of an emergency INVITE whose credentials prove nothing."""
    if variant == "unknown realm":
        return "sip:x@junk.invalid", [
            f'Proxy-Authorization: Digest username="x", realm="junk.invalid", nonce="00", '
            f'uri="sip:{dial}@junk.invalid", response="0123456789abcdef0123456789abcdef"']
    return "sip:2002@acme.test", [  # a made-up answer to a challenge nobody sent
        f'Proxy-Authorization: Digest username="2002", realm="acme.test", nonce="00", '
        f'uri="sip:{dial}@acme.test", response="0123456789abcdef0123456789abcdef"']


def blast(uac: Uac, count: int, from_uri: str, extra: list[str], dial: str = "112",
          seconds: float = 1.0) -> dict[str, tuple[int, str] | None]:
    """Send `count` emergency INVITEs from uac within about `seconds`, without waiting for answers;
    then each Call-ID's final answer (None: unanswered). Finals of 300 and up are ACKed."""
    cids = [uuid.uuid4().hex for _ in range(count)]
    tags = {cid: cid[:10] for cid in cids}
    ruri = f"sip:{dial}@acme.test"
    for n, cid in enumerate(cids):
        uac.send(uac.build("INVITE", ruri, from_uri=from_uri, to_uri=ruri, cid=cid, from_tag=tags[cid], cseq=1,
                           extra=extra, contact=f"<sip:x@{uac.ip}:{uac.port}>"))
        time.sleep(seconds / count)
    finals: dict[str, tuple[int, str] | None] = {cid: None for cid in cids}
    deadline = time.monotonic() + 6
    while None in finals.values() and time.monotonic() < deadline:
        uac.sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = uac.sock.recv(65535).decode(errors="replace")
        except (socket.timeout, ConnectionRefusedError):
            break
        cid = call_id(data)
        if cid in finals and not data.startswith("SIP/2.0 1") and finals[cid] is None:
            finals[cid] = status(data)
            if finals[cid][0] >= 300:
                uac.ack(data, ruri, from_uri, ruri, cid, tags[cid], 1)
    return finals


def emergency_records(redis_server, company: str | None, cids) -> list[dict]:
    ledger = PrepaidLedger(redis_server.store(SIP_DB))
    rows = ledger.cdrs(company) if company else ledger.unattributed_cdrs()
    return [r for _, r in rows if r.get("call_id") in set(cids)]


def failures_counted(kam, ip: str, user: str = "2001") -> bool:
    """Whether the address is blocked for the user: the right password no longer registers."""
    with Uac(kam, ip) as probe:
        return probe.register(user, "acme.test", PASSWORDS[(user, "acme.test")]).final == \
            (403, "Too Many Failed Attempts")


# -- issue 18.2: 112 is no password oracle --------------------------------------------------------------
@pytest.mark.parametrize("guessed_with", ["REGISTER", "INVITE to 112"])
def test_after_the_block_a_right_and_a_wrong_password_get_the_same_emergency_call(guarded, redis_server,
                                                                                  guessed_with):
    ip = fresh_ip()
    with Uac(guarded, ip) as a, Peer(*EMERGENCY) as psap:
        for n in range(int(GUARDED["AUTH_FAIL_MAX"])):
            if guessed_with == "REGISTER":
                a.register(*ALICE[:2], f"guess-{n}")
            else:
                guess = a.invite(*ALICE[:2], f"guess-{n}", "112")
                assert guess.final == (403, "Emergency Calls Need A Registered Phone"), guess.answers
                assert psap.requests("INVITE", call_id(guess.last_sent)) == [], "a wrong guess reached the PSAP"
            time.sleep(0.1)  # guessing, not flooding
        # the failures on the emergency path counted like any other: the pair is blocked
        assert failures_counted(guarded, ip)
        right = a.invite(*ALICE, "112")
        wrong = a.invite(*ALICE[:2], "not-alices-password", "112")
        got_right = psap.wait_for("INVITE", call_id(right.last_sent))
        got_wrong = psap.wait_for("INVITE", call_id(wrong.last_sent))
        assert got_right and got_wrong, "an emergency call was refused during a block"
        assert right.final == wrong.final and [status(m) for m in right.answers] == [status(m) for m in wrong.answers]
        claims = [(header_names(m[0]), header(m[0], "X-Emergency-Callback"), header(m[0], "P-Asserted-Identity"))
                  for m in (got_right, got_wrong)]
        assert claims[0] == claims[1] and claims[0][1] is None, claims  # neither borrows Alice's identity
        # both recorded alike, for no company (nobody proved who they are), with where they came from
        cids = [call_id(right.last_sent), call_id(wrong.last_sent)]
        assert wait_for(lambda: len(emergency_records(redis_server, None, cids)) == 2, 8, "both records")
        recs = sorted(emergency_records(redis_server, None, cids), key=lambda r: cids.index(r["call_id"]))
        assert [(r["company"], r["identity"], r["source"], r["to"]) for r in recs] == \
            [("", "none", f"udp:{a.ip}:{a.port}", "112")] * 2
    with Uac(guarded) as elsewhere, Peer(*EMERGENCY) as psap:  # control: the same password from elsewhere
        own = elsewhere.invite(*ALICE, "112")
        got = psap.wait_for("INVITE", call_id(own.last_sent))
        assert got and header(got[0], "X-Emergency-Callback") == ALICE_DID


# -- issue 18.6 and 19: floods, limits, identity, records, bans --------------------------------------------
@pytest.mark.parametrize("credentials", ["unknown realm", "made-up answer"])
def test_an_anonymous_emergency_flood_from_a_registered_phone_is_limited_identified_and_recorded(
        limited, redis_server, credentials):
    limit = int(LIMITS["EMERGENCY_CALLS_MAX"])
    with Uac(limited) as phone, Peer(*EMERGENCY) as psap:
        assert phone.register(*BRUNO).final == (200, "OK")
        mark = limited.mark()
        from_uri, extra = junk_credentials(credentials)
        finals = blast(phone, 100, from_uri, extra)
        reached = [m for cid in finals for m in psap.requests("INVITE", cid)]
        assert len(reached) == limit, f"{len(reached)} of 100 reached the emergency trunk"
        for invite in reached:  # each carries the registered phone's identity
            assert header(invite, "X-Emergency-Callback") == BRUNO_DID, invite
            assert header(invite, "X-Emergency-Location") == ACME_LOCATION
            assert BRUNO_DID in (header(invite, "P-Asserted-Identity") or "")
            assert headers(invite, "Proxy-Authorization") == []
        assert None not in finals.values(), "an emergency INVITE was dropped unanswered"
        refused = [cid for cid, final in finals.items() if final == (503, "Too Many Emergency Calls From This Phone")]
        assert len(refused) == 100 - limit
        lines = log_lines_with(limited, mark, "more than 3 emergency calls of source")
        assert len(lines) == 1 and phone.ip in lines[0], lines
        routed = [cid for cid in finals if cid not in refused]
        assert wait_for(lambda: len(emergency_records(redis_server, "acme", routed)) == limit, 8,
                        "a record for every routed emergency call")
        for rec in emergency_records(redis_server, "acme", routed):
            assert (rec["extension"], rec["from"], rec["to"], rec["identity"], rec["category"]) == \
                ("2002", BRUNO_DID, "112", "registered-source", "emergency"), rec
            assert rec["source"] == f"udp:{phone.ip}:{phone.port}"


def test_unauthenticated_emergency_calls_are_capped_per_node_whatever_their_sources(limited, redis_server):
    cap = int(LIMITS["EMERGENCY_UNIDENTIFIED_MAX"])
    phones = [(BRUNO, Uac(limited)), (("2003", "acme.test", "chloe-secret-3"), Uac(limited)),
              (("2004", "acme.test", "denis-secret-4"), Uac(limited))]
    try:
        with Peer(*EMERGENCY) as psap:
            for who, uac in phones:
                assert uac.register(*who).final == (200, "OK")
            from_uri, extra = junk_credentials("unknown realm")
            finals = {}
            for _ in range(3):  # 3 from each: within each source's limit, over the node's
                for _, uac in phones:
                    finals.update(blast(uac, 1, from_uri, extra, seconds=0.05))
            reached = [cid for cid in finals if psap.requests("INVITE", cid)]
            assert len(reached) == cap, f"{len(reached)} of {len(finals)} reached the emergency trunk"
            assert sorted(f for c, f in finals.items() if c not in reached) == \
                [(503, "Too Many Unauthenticated Emergency Calls")] * (len(finals) - cap)
            # a phone that proves who it is still gets through, from one of those sources too
            own = phones[0][1].invite(*BRUNO, "112")
            got = psap.wait_for("INVITE", call_id(own.last_sent))
            assert got and header(got[0], "X-Emergency-Callback") == BRUNO_DID, own.answers
    finally:
        for _, uac in phones:
            uac.close()
        for user in ("2002", "2003", "2004"):
            limited.unregister(f"{user}@acme.test")


def test_an_authenticated_phone_is_limited_too(limited, redis_server):
    limit = int(LIMITS["EMERGENCY_CALLS_MAX"])
    with Uac(limited) as roaming, Peer(*EMERGENCY) as psap:
        calls = [roaming.invite(*ALICE, "112") for _ in range(limit + 1)]
        reached = [c for c in calls if psap.wait_for("INVITE", call_id(c.last_sent), timeout=1)]
        assert len(reached) == limit and calls[-1].final == (503, "Too Many Emergency Calls From This Phone")
        assert header(calls[-1].answers[-1], "Retry-After") == LIMITS["EMERGENCY_WINDOW_S"]
        cids = [call_id(c.last_sent) for c in reached]
        assert wait_for(lambda: len(emergency_records(redis_server, "acme", cids)) == limit, 8, "records")
        assert {r["identity"] for r in emergency_records(redis_server, "acme", cids)} == {"verified"}
        with Uac(limited) as other:  # another phone is not limited by it
            call = other.invite(*BRUNO, "112")
            assert psap.wait_for("INVITE", call_id(call.last_sent)), call.answers


def test_with_redis_down_an_emergency_call_goes_and_its_lost_record_is_logged(isolated):
    redis, kam = isolated
    with Uac(kam) as alice, Peer(*EMERGENCY) as psap:
        assert alice.register(*ALICE).final == (200, "OK")
        redis.stop()
        mark = kam.mark()
        call = alice.invite(*ALICE, "112")
        got = psap.wait_for("INVITE", call_id(call.last_sent))
        assert got and header(got[0], "X-Emergency-Callback") == ALICE_DID, call.answers
        assert wait_for(lambda: log_lines_with(kam, mark, "record/settlement not written"), 8,
                        "the lost record in the log")


@pytest.mark.parametrize("caller", ["new port of a registered phone", "phone never registered there"])
def test_an_emergency_call_from_a_banned_address_is_answered_and_its_dialog_passes(guarded, caller):
    ip = fresh_ip()
    guarded.unregister("2002@acme.test")
    try:
        with Uac(guarded, ip) as registered:
            if caller == "new port of a registered phone":
                assert registered.register(*BRUNO).final == (200, "OK")
            flood(guarded, ip, 300)  # forged, or another device of the building
            assert not keepalive_answered(guarded, ip), "control: the address is banned"
            who, did = (BRUNO, BRUNO_DID) if caller.startswith("new port") else (ALICE, ALICE_DID)
            with Uac(guarded, ip) as phone, Peer(*EMERGENCY, answer=(200, "OK"), contact=True) as psap:
                call = phone.invite(*who, "112")
                got = psap.wait_for("INVITE", call_id(call.last_sent))
                assert got and header(got[0], "X-Emergency-Callback") == did, call.answers
                assert call.final == (200, "OK"), call.answers
                # its ACK and BYE pass the ban: without the ACK the PSAP would end the call
                ok = call.answers[-1]
                routes = list(reversed(headers(ok, "Record-Route")))
                target = re.search(r"<([^>]+)>", header(ok, "Contact")).group(1)
                cid, to = call_id(ok), header(ok, "To")
                from_tag = re.search(r"tag=([^;>\s]+)", header(call.last_sent, "From")).group(1)
                cseq = int(header(ok, "CSeq").split()[0])
                for method, number in (("ACK", cseq), ("BYE", cseq + 1)):
                    phone.send(phone.build(method, target, from_uri=f"sip:{who[0]}@acme.test", to_uri="x", cid=cid,
                                           from_tag=from_tag, cseq=number, extra=[f"Route: {r}" for r in routes])
                               .replace("To: <x>", f"To: {to}"))
                    assert psap.wait_for(method, cid), f"the {method} of the emergency call was dropped"
    finally:
        guarded.unregister("2002@acme.test")


# == 8. Identity and charging headers ================================================================
FORGED = [
    "Remote-Party-ID: \"Bank\" <sip:+33144556677@acme.test>;party=calling;screen=yes;privacy=off",
    "P-Charge-Info: <sip:+33144556677@acme.test>",
    "History-Info: <sip:+33144556677@acme.test>;index=1",
    "Diversion: <sip:+33144556677@acme.test>;reason=unconditional",
    "Privacy: id",
    "P-Preferred-Identity: <sip:+33144556677@acme.test>",
    "P-Asserted-Identity: <sip:+33144556677@acme.test>",
    "remote-party-id: <sip:+33144556677@acme.test>;party=calling",
    "DIVERSION: <sip:+33144556677@acme.test>",
    "X-Billing-Account: acct-forged-by-phone",
]


@pytest.mark.parametrize("forged", FORGED)
def test_phone_cannot_put_identity_or_charging_headers_towards_the_trunk(proxy, forged):
    name = forged.split(":", 1)[0]
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice:
        call = alice.invite(*ALICE, "0612345678", extra=[forged])
        got = trunk.wait_for("INVITE", call_id(call.last_sent))
        assert got, f"control: the call reaches the trunk ({call.final})"
        invite = got[0]
        assert "+33144556677" not in invite and "acct-forged-by-phone" not in invite
        if name.lower() != "p-asserted-identity":
            assert headers(invite, name) == [], invite
        pai = headers(invite, "P-Asserted-Identity")
        assert len(pai) == 1 and ALICE_DID in pai[0], pai


def test_phone_cannot_ask_for_emergency_priority_on_an_ordinary_call(proxy):
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice:
        call = alice.invite(*ALICE, "0612345678", extra=["Priority: emergency", "Resource-Priority: esnet.0"])
        got = trunk.wait_for("INVITE", call_id(call.last_sent))
        assert got, f"control: the call reaches the trunk ({call.final})"
        assert not [p for p in headers(got[0], "Priority") if "emergency" in p.lower()]
        assert headers(got[0], "Resource-Priority") == []


def test_only_allowed_headers_reach_the_trunk(proxy):
    """An allow-list: whatever a phone invents, the trunk sees only headers the proxy lets through."""
    allowed = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m", "max-forwards",
               "content-type", "c", "content-length", "l", "record-route", "route", "allow", "supported", "k",
               "require", "session-expires", "x", "min-se", "user-agent", "p-asserted-identity", "accept",
               "content-disposition", "content-encoding", "e", "allow-events", "date", "expires", "organization"}
    invented = ["X-Account: 42", "P-Access-Network-Info: 3GPP-UTRAN-TDD; utran-cell-id-3gpp=00000000",
                "Alert-Info: <http://evil.test/ring>", "Call-Info: <http://evil.test/x>;purpose=icon",
                "P-Called-Party-ID: <sip:+33144556677@acme.test>", "Reason: Q.850;cause=16"]
    with Peer(*PRIMARY) as trunk, Uac(proxy) as alice:
        call = alice.invite(*ALICE, "0612345678", extra=invented)
        got = trunk.wait_for("INVITE", call_id(call.last_sent))
        assert got, f"control: the call reaches the trunk ({call.final})"
        unexpected = {n for n in header_names(got[0]) if n.lower() not in allowed}
        assert unexpected == set(), got[0]


def test_forwarded_call_carries_only_the_proxys_diversion_and_identity(proxy):
    """A carrier's caller forwarded by a virtual extension: the carrier's claims do not go back out."""
    with Peer(*PRIMARY) as trunk, Uac(proxy, *CARRIER_IN) as carrier:
        call = carrier.request("INVITE", "sip:+33142685390@127.0.0.1", user="+33612121212", domain="carrier.test",
                               extra=["Remote-Party-ID: <sip:+33144556677@carrier.test>;party=calling",
                                      "History-Info: <sip:+33144556677@carrier.test>;index=1",
                                      "Diversion: <sip:+33144556677@carrier.test>;reason=user-busy",
                                      "P-Charge-Info: <sip:+33144556677@carrier.test>"])
        got = trunk.wait_for("INVITE", call_id(call.last_sent))
        assert got, f"control: the forward reaches the trunk ({call.final})"
        invite = got[0]
        assert "+33144556677" not in invite
        diversion = headers(invite, "Diversion")
        assert len(diversion) == 1 and "+33142685390" in diversion[0]


# == 9. Emergency calls ==============================================================================
def test_wrong_password_with_redis_down_does_not_borrow_a_registered_phones_identity(isolated):
    redis, kam = isolated
    with Uac(kam) as alice, Uac(kam) as mallory, Peer(*EMERGENCY) as psap:
        assert alice.register(*ALICE).final == (200, "OK")
        redis.stop()
        attack = mallory.invite(*ALICE[:2], "not-alices-password", "112")
        time.sleep(0.5)
        for invite in psap.requests("INVITE", call_id(attack.last_sent)):
            assert ALICE_DID not in invite and ACME_LOCATION not in invite, invite
        assert attack.final is None or attack.final[0] != 500
        # control: Alice herself, same store outage, keeps her identity
        own = alice.invite(*ALICE, "112")
        got = psap.wait_for("INVITE", call_id(own.last_sent))
        assert got and header(got[0], "X-Emergency-Callback") == ALICE_DID, own.answers


@pytest.mark.parametrize("store", ["up", "down"])
@pytest.mark.parametrize("credential", ["Proxy-Authorization", "Authorization"])
def test_callers_credentials_never_reach_the_emergency_trunk(isolated, store, credential):
    redis, kam = isolated
    with Uac(kam) as phone, Peer(*EMERGENCY) as psap:
        assert phone.register(*ALICE).final == (200, "OK")  # this address has a current registration
        if store == "down":
            redis.stop()
        bogus = (f'{credential}: Digest username="2001", realm="acme.test", nonce="00", uri="sip:112@acme.test", '
                 f'response="0123456789abcdef0123456789abcdef"')
        call = phone.invite(*ALICE[:2], "wrong-password", "112", extra=[bogus])
        got = psap.wait_for("INVITE", call_id(call.last_sent))
        assert got, f"an emergency call from a registered address must get through ({call.answers})"
        assert headers(got[0], "Proxy-Authorization") == [] and headers(got[0], "Authorization") == [], got[0]


@pytest.mark.parametrize("caller", [("anonymous", "anonymous.invalid", "anything"),
                                    ("2001", "acme.test", "not-the-password")])
def test_unauthenticated_emergency_call_from_an_address_without_registration_is_refused(proxy, caller):
    with Uac(proxy) as stranger, Peer(*EMERGENCY) as psap:
        call = stranger.invite(*caller, "112")
        time.sleep(0.5)
        assert psap.requests("INVITE", call_id(call.last_sent)) == [], "an unknown address placed an emergency call"
        assert call.final is not None and call.final[0] >= 400
    # controls: the same caller from a registered phone's address, and a good password from anywhere
    proxy.unregister("2002@acme.test")
    try:
        with Uac(proxy) as phone, Peer(*EMERGENCY) as psap:
            assert phone.register(*BRUNO).final == (200, "OK")
            call = phone.invite(*caller, "112")
            assert psap.wait_for("INVITE", call_id(call.last_sent)), call.answers
        with Uac(proxy) as roaming, Peer(*EMERGENCY) as psap:
            call = roaming.invite(*ALICE, "112")
            assert psap.wait_for("INVITE", call_id(call.last_sent)), call.answers
    finally:
        proxy.unregister("2002@acme.test")


EMERGENCY_FAULTS = {
    "trunks of the wrong type": lambda r: (r.delete("trunks"), r.rpush("trunks", "x")),
    "undecodable extension": lambda r: r.set("{co:acme}:ext:2001", b"\xc1\xff\x00"),
    "undecodable domain": lambda r: r.set("domain:acme.test", b"\xc1"),
    "schema version of the wrong type": lambda r: (r.delete("schema:version"), r.sadd("schema:version", "1")),
    "undecodable trunk": lambda r: r.hset("trunks", "emergency", b"\xc1\xc1"),
}


@pytest.mark.parametrize("fault", sorted(EMERGENCY_FAULTS))
def test_emergency_call_falls_back_on_any_data_fault(isolated, fault):
    redis, kam = isolated
    with Uac(kam) as alice, Peer(*EMERGENCY) as psap:
        assert alice.register(*ALICE).final == (200, "OK")
        EMERGENCY_FAULTS[fault](redis.client())
        call = alice.invite(*ALICE, "112")
        assert psap.wait_for("INVITE", call_id(call.last_sent)), f"{fault}: {call.answers}"
        assert call.final != (500, "Internal Server Error")


def test_emergency_call_with_a_non_utf8_user_falls_back(isolated):
    redis, kam = isolated
    with Uac(kam) as caller, Peer(*EMERGENCY) as psap:
        assert caller.register(*BRUNO).final == (200, "OK")  # a registered address: no question of policy
        call = caller.invite("20\udcff1", "acme.test", "whatever", "112", auth_user="2001")
        got = psap.wait_for("INVITE", call_id(call.last_sent))
        assert got, call.answers
        # unauthenticated: the identity of the phone registered there, never the one the credentials name
        assert ALICE_DID not in got[0] and header(got[0], "X-Emergency-Callback") == "+33142685302"


# == 10. TCP exhaustion ==============================================================================
TCP_LIMITS = dict(TCP_MAX_CONNECTIONS="64", TCP_IDLE_S="3")


def tcp_max_connections(proxy) -> int:
    match = re.search(r"max_connections: (\d+)", proxy.kamcmd("core.tcp_info"))
    assert match, proxy.kamcmd("core.tcp_info")
    return int(match.group(1))


def test_idle_tcp_connections_from_one_source_are_closed_and_do_not_lock_others_out(workdir, proxy, redis_server):
    kam = Proxy(workdir, redis_server.url, **TCP_LIMITS).start()
    attacker, phone = fresh_ip(), fresh_ip()
    idle: list[socket.socket] = []
    try:
        limit = tcp_max_connections(kam)
        assert limit <= 4096, "the test opens the proxy's limit in connections; keep it bounded"
        for _ in range(limit + 8):
            s = socket.socket()
            s.bind((attacker, 0))
            s.settimeout(2)
            try:
                s.connect((kam.ip, kam.port))
            except OSError:
                s.close()
                continue
            idle.append(s)
        assert tcp_options(kam, phone) is None, "control: the idle connections fill the proxy"
        grace = int(TCP_LIMITS["TCP_IDLE_S"]) + 6
        assert wait_for(lambda: tcp_options(kam, phone, 1.0) == (200, "OK"), grace,
                        "a phone to be served again over TCP")
        closed = closed_by_peer(idle)
        assert closed >= limit - 8, f"only {closed} of {len(idle)} idle connections closed by the proxy"
    finally:
        for s in idle:
            s.close()
        kam.stop()


# == 12. Bytes that are not UTF-8 ====================================================================
BAD = "\udcff\udcfe"


@pytest.mark.parametrize("where", ["invite request-uri user", "options request-uri user",
                                   "invite digest username", "register digest username"])
def test_non_utf8_bytes_get_400_and_one_log_line(proxy, where):
    with Uac(proxy) as caller:
        mark = proxy.mark()
        if where == "invite request-uri user":
            ex = caller.invite(*ALICE, f"06{BAD}12")
        elif where == "options request-uri user":
            ex = caller.options(ruri=f"sip:20{BAD}@acme.test")
        elif where == "invite digest username":
            ex = caller.invite(*ALICE, "0612345678", auth_user=f"20{BAD}")
        else:
            ex = caller.register(*ALICE, auth_user=f"20{BAD}")
        assert ex.final is not None and ex.final[0] == 400, ex.answers
        assert ex.final[1] != "Bad Request" and ex.final[1], "the reason phrase must say what is wrong"
        time.sleep(0.3)
        text = proxy.log_since(mark)
        assert "Traceback" not in text
        assert len(log_lines_with(proxy, mark, call_id(ex.last_sent))) == 1, text
    assert keepalive_answered(proxy, fresh_ip())


# == 13. Amplification ===============================================================================
def did_call_from_carrier(proxy, did: str = ALICE_DID, seconds: float = 4.0) -> str:
    """A carrier's call to one of our DIDs, given `seconds` to fan out (nobody answers it)."""
    with Uac(proxy, *CARRIER_IN) as carrier:
        cid = uuid.uuid4().hex
        carrier.request("INVITE", f"sip:{did}@{proxy.ip}", user="+33612121212", domain="carrier.test", cid=cid,
                        timeout=seconds)
    return cid


def test_contacts_that_point_elsewhere_than_the_register_source_receive_nothing(proxy):
    proxy.unregister("2001@acme.test")
    try:
        with Uac(proxy) as attacker, Peer(fresh_ip(), 5099, answer=None) as victim:
            # two contacts: within any MAX_CONTACTS, so only the source check can stop it
            contacts = ", ".join(f"<sip:v{n}@{victim.ip}:{victim.port}>" for n in range(2))
            attacker.register(*ALICE, contact=contacts)
            cid = did_call_from_carrier(proxy)
            assert victim.requests("INVITE", cid) == [], f"{len(victim.requests('INVITE', cid))} INVITEs at the victim"
        # control: a contact at the REGISTER's own address does get the call
        with Uac(proxy) as phone:
            assert phone.register(*ALICE).final == (200, "OK")
            where = (phone.ip, phone.port)
        with Peer(*where, answer=None) as own:
            cid = did_call_from_carrier(proxy)
            assert own.requests("INVITE", cid)
    finally:
        proxy.unregister("2001@acme.test")


def test_one_did_call_forks_to_at_most_max_contacts(guarded):
    guarded.unregister("2001@acme.test")
    try:
        with Uac(guarded) as phone:
            where = (phone.ip, phone.port)
            contacts = ", ".join(f"<sip:d{n}@{phone.ip}:{phone.port}>" for n in range(8))
            phone.register(*ALICE, contact=contacts)
        saved = guarded.contacts("2001@acme.test")
        assert len(saved) <= int(GUARDED["MAX_CONTACTS"]), saved
        with Peer(*where, answer=None) as own:
            cid = did_call_from_carrier(guarded)
            branches = {re.search(r"branch=([^;\r\n]+)", i).group(1) for i in own.requests("INVITE", cid)}
            assert len(branches) <= int(GUARDED["MAX_CONTACTS"])
    finally:
        guarded.unregister("2001@acme.test")


def test_a_stale_contact_at_a_trusted_peers_address_is_never_rung(proxy):
    """Defence in depth: a contact saved before a trunk was provisioned at its address (put straight
    into the location table here, as no REGISTER can) is dropped when the extension rings."""
    proxy.unregister("2001@acme.test")
    try:
        with Uac(proxy) as phone:
            assert phone.register(*ALICE).final == (200, "OK")
            where = (phone.ip, phone.port)
        stale = f"sip:stale@{PRIMARY[0]}:{PRIMARY[1]}"
        proxy.kamcmd("ul.add", "location", "2001@acme.test", stale, "300", "1.0", ".", "0", "0", "0")
        assert stale in proxy.contacts("2001@acme.test"), "control: the stale contact is there"
        mark = proxy.mark()
        with Peer(*PRIMARY, answer=None) as trunk, Peer(*where, answer=None) as own:
            cid = did_call_from_carrier(proxy)
            assert own.requests("INVITE", cid), "control: the phone itself rings"
            assert trunk.requests("INVITE", cid) == [], "the trunk was rung as if it were a phone"
        assert [line for line in log_lines_with(proxy, mark, stale) if "not rung" in line]
    finally:
        proxy.unregister("2001@acme.test")
