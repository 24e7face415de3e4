"""A bounded fuzz run against the real proxy on loopback, then a health check.

    .venv/bin/python bench/fuzz_sip.py [--messages 3000] [--seed 1] [--rate 800] [--spellings 3000]

Starts its own redis-server and Kamailio (the project's kamailio.cfg, the test office,
flood limits raised so that the mutated messages reach the parser and the routes
instead of a ban) on free loopback ports, sends --messages mutated SIP messages over
UDP from a few 127.0.2.x addresses (byte flips, truncations, huge headers, bytes that
are not UTF-8, duplicated or missing mandatory headers, random methods, garbage),
then checks that the proxy still answers an OPTIONS keepalive with 200, still
authenticates a REGISTER, and has as many Kamailio processes as before. Prints the
figures: messages sent, answers by status code, unanswered, Python tracebacks in the
log, duration. Exit code 0 when the proxy is healthy afterwards.

Then (--spellings, issue 18) it sends Contacts and Routes built from the spellings that a
second parser reads otherwise than Kamailio (a URI in the display name, a `;` in the user
part, maddr, a peer's address as a number, in hex or octal, as a name, on another port, several
contacts, +sip.instance, sips:, URI headers): authenticated REGISTERs of 2002 with such Contacts
(followed by an internal call to 2002), stale location entries written over RPC (followed by a
call), initial INVITEs and strangers' in-dialog requests with such Routes. Recording stand-ins
listen where every trusted peer of the office is (trunks, media servers, another port of the
primary trunk) and where a third party is: the run fails if any of them receives anything.

Only loopback is targeted; the run is bounded by --messages and --max-seconds.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ROOT, Proxy, RedisServer, admin  # noqa: E402
from tests.sip import rawsip  # noqa: E402

SOURCES = [f"127.0.2.{n}" for n in range(10, 14)]
METHODS = ["INVITE", "REGISTER", "OPTIONS", "BYE", "CANCEL", "ACK", "PRACK", "UPDATE", "INFO", "REFER",
           "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH"]
# Raised far above what the fuzzer sends: the run is about parsing and routing, not bans.
FUZZ_ENV = dict(PIKE_REQS="1000000", PIKE_WINDOW_S="1", AUTH_FAIL_MAX="1000000", LOG_LEVEL="1")


@dataclass
class FuzzResult:
    sent: int = 0
    answers: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0
    mutations: collections.Counter = field(default_factory=collections.Counter)
    server_errors: list = field(default_factory=list)  # status lines of the 5xx answers, for the report

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.answers.items()))
        return (f"fuzz: {self.sent} messages in {self.seconds:.1f}s ({self.sent / max(self.seconds, 1e-9):.0f}/s), "
                f"{self.answered} answers [{codes}]")


def templates(proxy, src: str, port: int) -> list[str]:
    """Well-formed requests of every kind the proxy handles: what the mutations start from."""
    cid = uuid.uuid4().hex
    base = (f"Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK{cid[:12]};rport\r\n"
            f"From: <sip:2001@acme.test>;tag={cid[:8]}\r\nCall-ID: {cid}\r\nMax-Forwards: 70\r\n")
    sdp = f"v=0\r\no=- 1 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"
    auth = ('Proxy-Authorization: Digest username="2001", realm="acme.test", nonce="abc", '
            'uri="sip:0612345678@acme.test", response="00000000000000000000000000000000", qop=auth, '
            'nc=00000001, cnonce="x"\r\n')
    return [
        f"OPTIONS sip:{proxy.ip}:{proxy.port} SIP/2.0\r\n{base}To: <sip:{proxy.ip}>\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n",
        f"REGISTER sip:acme.test SIP/2.0\r\n{base}To: <sip:2001@acme.test>\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:2001@{src}:{port}>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n",
        f"INVITE sip:0612345678@acme.test SIP/2.0\r\n{base}To: <sip:0612345678@acme.test>\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:2001@{src}:{port}>\r\n{auth}Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}",
        f"INVITE sip:112@acme.test SIP/2.0\r\n{base}To: <sip:112@acme.test>\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:2001@{src}:{port}>\r\nContent-Length: 0\r\n\r\n",
        f"INVITE sip:+33142685301@{proxy.ip} SIP/2.0\r\n{base}To: <sip:+33142685301@{proxy.ip}>\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:x@{src}:{port}>\r\nContent-Length: 0\r\n\r\n",
        f"BYE sip:2002@{src}:{port} SIP/2.0\r\n{base}To: <sip:2002@acme.test>;tag=abc\r\nCSeq: 2 BYE\r\n"
        f"Route: <sip:{proxy.ip}:{proxy.port};lr>\r\nContent-Length: 0\r\n\r\n",
        f"CANCEL sip:0612345678@acme.test SIP/2.0\r\n{base}To: <sip:0612345678@acme.test>\r\nCSeq: 1 CANCEL\r\n"
        f"Content-Length: 0\r\n\r\n",
        f"ACK sip:0612345678@acme.test SIP/2.0\r\n{base}To: <sip:0612345678@acme.test>;tag=x\r\nCSeq: 1 ACK\r\n"
        f"Content-Length: 0\r\n\r\n",
    ]


def _header_lines(text: str) -> tuple[list[str], str]:
    head, _, body = text.partition("\r\n\r\n")
    return head.split("\r\n"), body


def _join(lines: list[str], body: str) -> str:
    return "\r\n".join(lines) + "\r\n\r\n" + body


def mutate(text: str, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of a well-formed request: (its name, the bytes to send)."""
    kind = rng.choice(["flip", "truncate", "huge_header", "bad_utf8", "duplicate", "missing", "method",
                       "content_length", "nul", "long_uri", "many_vias", "garbage", "header_soup"])
    raw = text.encode()
    lines, body = _header_lines(text)
    if kind == "flip":
        data = bytearray(raw)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return kind, bytes(data)
    if kind == "truncate":
        return kind, raw[:rng.randrange(1, len(raw))]
    if kind == "huge_header":
        size = rng.choice([1000, 8000, 30000, 60000])
        name = rng.choice(["X-Junk", "Subject", "User-Agent", "Via", "Contact", "From"])
        lines.insert(rng.randint(1, len(lines)), f"{name}: " + "A" * size)
        return kind, _join(lines, body).encode()[:65000]
    if kind == "bad_utf8":
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c\xbc", b"\xed\xa0\x80", b"\x80"])
        where = rng.choice([b"2001@", b"0612345678@", b"112@", b"acme.test", b"tag=", b"Call-ID: "])
        return kind, raw.replace(where, where + bad, 1) if where in raw else raw + bad
    if kind == "duplicate":
        mandatory = [i for i, line in enumerate(lines[1:], 1)
                     if re.match(r"(Via|From|To|Call-ID|CSeq|Max-Forwards|Content-Length)\s*:", line)]
        i = rng.choice(mandatory)
        copy = lines[i]
        if rng.random() < 0.5:  # a conflicting copy
            copy = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), copy, count=1) \
                if re.search(r"\d", copy) else copy + "x"
        lines.insert(rng.randint(1, len(lines)), copy)
        return kind, _join(lines, body).encode()
    if kind == "missing":
        mandatory = [i for i, line in enumerate(lines[1:], 1)
                     if re.match(r"(Via|From|To|Call-ID|CSeq|Max-Forwards|Content-Length)\s*:", line)]
        del lines[rng.choice(mandatory)]
        return kind, _join(lines, body).encode()
    if kind == "method":
        method = rng.choice(METHODS + ["FOO", "invite", "", "INVITE INVITE", "\x00", "X" * 200])
        first = lines[0].split(" ", 1)
        lines[0] = f"{method} {first[1] if len(first) > 1 else ''}"
        return kind, _join(lines, body).encode()
    if kind == "content_length":
        value = rng.choice(["-1", "99999999", "abc", "", "5", "4294967296"])
        lines = [f"Content-Length: {value}" if line.startswith("Content-Length") else line for line in lines]
        return kind, _join(lines, body).encode()
    if kind == "nul":
        i = rng.randrange(len(raw))
        return kind, raw[:i] + b"\x00" * rng.randint(1, 8) + raw[i:]
    if kind == "long_uri":
        parts = lines[0].split(" ")
        if len(parts) == 3:
            parts[1] = "sip:" + "9" * rng.choice([300, 3000, 20000]) + "@acme.test"
        lines[0] = " ".join(parts)
        return kind, _join(lines, body).encode()[:65000]
    if kind == "many_vias":
        via = next((line for line in lines if line.startswith("Via:")), "Via: SIP/2.0/UDP 1.2.3.4")
        lines[1:1] = [via.replace("branch=z9hG4bK", f"branch=z9hG4bK{n}") for n in range(rng.choice([10, 100, 600]))]
        return kind, _join(lines, body).encode()[:65000]
    if kind == "garbage":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(1, 1500)))
    # header_soup: headers shuffled, compact forms, odd whitespace and folding
    head = lines[1:]
    rng.shuffle(head)
    separators = [":", " :", ":  ", ":\t"]
    head = [re.sub(r"^(\S+?)\s*:\s*", lambda m: m.group(1) + rng.choice(separators), h) for h in head]
    if head:
        head[rng.randrange(len(head))] += "\r\n  continued"
    return kind, _join([lines[0], *head], body).encode()


def fuzz(proxy, messages: int, seed: int = 1, rate: int = 800, max_seconds: float = 120.0) -> FuzzResult:
    rng = random.Random(seed)
    result = FuzzResult()
    socks = []
    for ip in SOURCES:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        s.setblocking(False)
        socks.append(s)
    corpus = {s: templates(proxy, s.getsockname()[0], s.getsockname()[1]) for s in socks}

    def drain() -> None:
        for s in socks:
            while True:
                try:
                    data = s.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                match = re.match(rb"SIP/2.0 (\d{3})", data)
                code = int(match.group(1)) if match else 0
                result.answers[code] += 1
                if code >= 500:
                    result.server_errors.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))

    started = time.monotonic()
    for n in range(messages):
        if time.monotonic() - started > max_seconds:
            break
        s = socks[n % len(socks)]
        kind, data = mutate(rng.choice(corpus[s]), rng)
        try:
            s.sendto(data, (proxy.ip, proxy.port))
        except OSError:  # e.g. a datagram over the loopback MTU limit
            result.mutations["unsendable"] += 1
            continue
        result.sent += 1
        result.mutations[kind] += 1
        drain()
        # pace: the run measures robustness, not the kernel's socket buffers
        ahead = result.sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        drain()
        time.sleep(0.05)
    result.seconds = time.monotonic() - started
    for s in socks:
        s.close()
    return result


# -- Contacts and Routes spelled to be read two ways (issue 18) -----------------------------------------
# tests/sip/office.yaml's trusted peers (trunks, media servers), another port of the primary trunk's
# host, and a third party: none of them may receive anything from the spellings run.
TRUSTED = [("127.0.0.2", 5060), ("127.0.0.3", 5060), ("127.0.0.4", 5060), ("127.0.0.5", 5060),
           ("127.0.0.6", 5060), ("127.0.0.7", 5060), ("127.0.0.2", 5070)]
THIRD_PARTY = ("127.0.2.99", 5060)
PHONE = ("127.0.2.20", 5060)   # 2002's phone: registers, answers every INVITE 486 at once
CALLER = "127.0.2.21"          # 2001, calling 2002 and 2003
STRANGER = "127.0.2.22"        # in-dialog requests with Routes
PASSWORDS = {"2001": "alice-secret-1", "2002": "bruno-secret-2", "2003": "chloe-secret-3"}
MOBILE = "004915112345678"


def spell_host(ip: str, rng: random.Random) -> str:
    """One way of writing an IPv4 address that some resolver or parser reads as it."""
    a, b, c, d = (int(x) for x in ip.split("."))
    number = (a << 24) | (b << 16) | (c << 8) | d
    return rng.choice([
        ip, str(number), f"0x{number:08x}", f"0{a:o}.{b}.{c}.0{d:o}", f"{a:03d}.{b:03d}.{c:03d}.{d:03d}",
        f"{a}.{(b << 16) | (c << 8) | d}", f"[::ffff:{ip}]", f"{ip}.", "localhost", "LocalHost",
        ip.upper() + ";lr",
    ])


def hostile_contact(rng: random.Random, own: tuple[str, int], target: tuple[str, int]) -> str:
    """A Contact header value that names target (a trusted peer or a third party) one way or another,
    often next to the phone's own address."""
    host, port = spell_host(target[0], rng), target[1]
    user = rng.choice([MOBILE, "+4915112345678", "2002", "x", f"{own[0]};x=", f"{own[0]}:{own[1]};x="])
    mine = f"{own[0]}:{own[1]}"
    forms = [
        f"<sip:{user}@{host}:{port}>",
        f'"<sip:2002@{mine}>" <sip:{user}@{host}:{port}>',
        f'"x\\" <sip:{user}@{host}:{port}>',
        f"<sip:{own[0]};x=@{host}:{port}>",
        f"<sip:{user}@{host}:{port};maddr={own[0]}>",
        f"<sip:{user}@{mine};maddr={host}>",
        f'<sip:2002@{mine}>;+sip.instance="<urn:uuid:{uuid.uuid4()}>";expires=60, <sip:{user}@{host}:{port}>',
        f'<sip:2002@{mine}>;+sip.instance="<urn:uuid:1>, <sip:{user}@{host}:{port}>"',
        f"sip:{user}@{host}:{port};expires=60",
        f"<sip:{user}@{host}:{port};transport=tcp>",
        f"<sips:{user}@{host}:{port}>",
        f'"a,b" <sip:2002@{mine}>, <sip:{user}@{host}:{port}>',
        f"<sip:{user}@{host}:{port}?Route=%3Csip:{own[0]}%3E>",
        f"<sip:{user}:secret@{host}:{port}>",
        f"<SIP:{user}@{host}:{port}>",
        f"<sip:{user}@{host}:{port}>;expires=0, <sip:2002@{mine}>",
        f"<sip:2002@{mine}>, <sip:{user}@{host}:{port}>;q=1",
        f"<sip:{user}@{host}>",
    ]
    return rng.choice(forms)


def hostile_routes(rng: random.Random, proxy: tuple[str, int], target: tuple[str, int]) -> list[str]:
    host, port = spell_host(target[0], rng), target[1]
    me = f"{proxy[0]}:{proxy[1]}"
    return rng.choice([
        [f"Route: <sip:{host}:{port};lr>"],
        [f"Route: <sip:{me};lr>, <sip:{host}:{port};lr>"],
        [f"Route: <sip:{me};lr>", f"Route: <sip:{host}:{port};lr>"],
        [f'Route: "<sip:{me};lr>" <sip:{host}:{port};lr>'],
        [f"Route: <sip:{me};lr;maddr={host}>"],
        [f"Route: <sip:{me};lr;ftag=x;did=1.2>, <sip:{MOBILE}@{host}:{port}>"],
        [f"Route: <sip:{host}:{port};transport=tcp;lr>"],
    ])


class Phone(rawsip.Peer):
    """2002's phone: a recording peer that answers INVITEs 486 and can REGISTER from its own socket."""

    def register(self, proxy, contact: str, user: str = "2002", domain: str = "acme.test",
                 expires: int = 60, timeout: float = 2.0) -> tuple[int, str] | None:
        uac = rawsip.Uac.__new__(rawsip.Uac)
        uac.proxy, uac.sock, uac.ip, uac.port = proxy, self.sock, self.ip, self.port
        cid, cseq, auth = uuid.uuid4().hex, 1, []
        for _ in range(2):
            text = uac.build("REGISTER", f"sip:{domain}", from_uri=f"sip:{user}@{domain}", to_uri=f"sip:{user}@{domain}",
                             cid=cid, from_tag="t" + cid[:8], cseq=cseq, contact=contact,
                             extra=[f"Expires: {expires}", *auth])
            self.sock.sendto(rawsip.encode(text), (proxy.ip, proxy.port))
            answer = self._answer(cid, cseq, timeout)
            final = rawsip.status(answer)
            if final is None or final[0] != 401:
                return final
            auth = [": ".join(rawsip.digest_header(answer, user, PASSWORDS[user], "REGISTER", f"sip:{domain}"))]
            cseq += 1
        return final

    def _answer(self, cid: str, cseq: int, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for _, text in self.received:
                    if text.startswith("SIP/2.0") and not text.startswith("SIP/2.0 1") and \
                            rawsip.call_id(text) == cid and (rawsip.header(text, "CSeq") or "").startswith(f"{cseq} "):
                        return text
            time.sleep(0.002)
        return None


@dataclass
class SpellingsResult:
    sent: collections.Counter = field(default_factory=collections.Counter)    # by kind
    answers: collections.Counter = field(default_factory=collections.Counter)  # (kind, code)
    leaked: list = field(default_factory=list)    # (peer, first line) of anything a recorder received
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.sent.items()))
        codes = ", ".join(f"{k} {c}: {n}" for (k, c), n in sorted(self.answers.items(), key=str))
        return (f"spellings: {self.total} Contacts and Routes in {self.seconds:.1f}s ({kinds}); answers [{codes}]; "
                f"received by trusted peers or a third party: {len(self.leaked)}")


def spellings(proxy, count: int, seed: int = 1, max_seconds: float = 300.0, stale_every: int = 20) -> SpellingsResult:
    """Send `count` Contacts and Routes spelled to be read two ways; see the module's docstring."""
    rng = random.Random(seed)
    result = SpellingsResult()
    recorders = [rawsip.Peer(ip, port, answer=(486, "Busy Here")) for ip, port in TRUSTED + [THIRD_PARTY]]
    phone = Phone(*PHONE, answer=(486, "Busy Here"))
    caller, stranger = rawsip.Uac(proxy, CALLER), rawsip.Uac(proxy, STRANGER)
    where = (proxy.ip, proxy.port)
    started = time.monotonic()
    try:
        for n in range(count):
            if time.monotonic() - started > max_seconds:
                break
            target = rng.choice(TRUSTED + [THIRD_PARTY])
            kind = "stale" if n % stale_every == 1 else \
                rng.choices(["contact", "initial-route", "in-dialog-route"], [70, 15, 15])[0]
            if n % 8 == 0:
                # 2002 registered where it is, so that calls reach its phone (and only it); the
                # spellings that do name the phone itself would fill max_contacts (503) otherwise
                phone.register(proxy, "*", expires=0)
                phone.register(proxy, f"<sip:2002@{PHONE[0]}:{PHONE[1]}>")
            if kind == "stale":
                target = rng.choice(TRUSTED)  # an entry of the location table is rung wherever else it is
                # a location entry written behind the registrar's back: only the checks at ringing
                # (and where it is sent) stand between it and the peer
                uri = hostile_contact(rng, PHONE, target)
                uri = uri[uri.find("<") + 1:uri.find(">")] if "<" in uri else uri.split(";")[0]
                proxy.kamcmd("ul.rm", "location", "2003@acme.test")
                proxy.kamcmd("ul.add", "location", "2003@acme.test", uri, "60", "1.0", ".", "0", "0", "0")
                answer = caller.invite("2001", "acme.test", PASSWORDS["2001"], "2003", timeout=1.5).final
            elif kind == "contact":
                answer = phone.register(proxy, hostile_contact(rng, PHONE, target))
                result.answers[("register", answer[0] if answer else 0)] += 1
                if n % 4 == 0:  # and what a call to 2002 then does
                    call = caller.invite("2001", "acme.test", PASSWORDS["2001"], "2002", timeout=1.5).final
                    result.answers[("call", call[0] if call else 0)] += 1
                result.sent[kind] += 1
                continue
            elif kind == "initial-route":
                answer = caller.invite("2001", "acme.test", PASSWORDS["2001"], "2002", timeout=1.5,
                                       extra=hostile_routes(rng, where, target)).final
            else:
                text = stranger.build("INVITE", f"sip:{MOBILE}@{spell_host(target[0], rng)}:{target[1]}",
                                      from_uri="sip:2001@acme.test", to_uri=f"sip:{MOBILE}@acme.test",
                                      cid=uuid.uuid4().hex, from_tag="f1", to_tag="t1", cseq=1,
                                      extra=hostile_routes(rng, where, target), body=rawsip.sdp(STRANGER))
                stranger.send(text)
                got = stranger.collect(rawsip.call_id(text), 1, timeout=1.5)
                answer = rawsip.status(got[-1]) if got else None
            result.sent[kind] += 1
            result.answers[(kind, answer[0] if answer else 0)] += 1
        time.sleep(1.0)  # anything relayed late would be at a recorder by now (loopback)
    finally:
        result.seconds = time.monotonic() - started
        for peer in recorders:
            result.leaked += [(f"{peer.ip}:{peer.port}", text.split("\r\n", 1)[0]) for text in peer.requests()]
            peer.close()
        phone.register(proxy, "*", expires=0)
        phone.close()
        caller.close()
        stranger.close()
        proxy.kamcmd("ul.rm", "location", "2003@acme.test")
    return result


def kamailio_processes(proxy) -> int:
    """Processes of the proxy's session (Proxy starts Kamailio in a session of its own)."""
    sid = os.getsid(proxy.proc.pid)
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if int(fields[3]) == sid and name == "kamailio" and fields[0] != "Z":
            count += 1
    return count


def settled_processes(proxy, timeout: float = 10.0) -> int:
    """The process count once Kamailio has finished forking (it answers OPTIONS before its last
    processes exist): the same count twice, half a second apart."""
    deadline = time.monotonic() + timeout
    last = kamailio_processes(proxy)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = kamailio_processes(proxy)
        if now == last:
            return now
        last = now
    return last


def health(proxy, user: str, domain: str, password: str) -> dict:
    """What a normal client gets after the run: OPTIONS keepalive and an authenticated REGISTER."""
    from tests.sip.rawsip import Uac
    with Uac(proxy, "127.0.2.200") as probe:
        options = probe.options(timeout=2).final
        register = probe.register(user, domain, password, expires=60).final
    return {"options": options, "register": register}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=int, default=800, help="messages per second at most")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--spellings", type=int, default=3000, help="Contacts and Routes spelled two ways")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "tests" / "sip" / "office.yaml"))
    proxy = Proxy(work, redis.url, **FUZZ_ENV).start()
    try:
        before = settled_processes(proxy)
        result = fuzz(proxy, args.messages, args.seed, args.rate, args.max_seconds)
        spelled = spellings(proxy, args.spellings, args.seed, max_seconds=max(args.max_seconds, 300))
        time.sleep(0.5)
        after = settled_processes(proxy)
        checks = health(proxy, "2001", "acme.test", "alice-secret-1")
        tracebacks = proxy.log_text().count("Traceback")
        print(result.summary())
        print(f"mutations: {dict(sorted(result.mutations.items()))}")
        print(f"5xx answers: {dict(collections.Counter(result.server_errors))}")
        print(spelled.summary())
        for peer, line in spelled.leaked[:20]:
            print(f"  LEAKED to {peer}: {line}")
        print(f"afterwards: OPTIONS {checks['options']}, REGISTER {checks['register']}, "
              f"kamailio processes {before} -> {after}, Python tracebacks in the log: {tracebacks} "
              f"(log: {proxy.log_path})")
        healthy = checks["options"] == (200, "OK") and checks["register"] == (200, "OK") and before == after \
            and not spelled.leaked
        return 0 if healthy else 1
    finally:
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
