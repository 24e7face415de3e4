"""A bounded fuzz run against the real proxy on loopback, then a health check.

    .venv/bin/python bench/fuzz_sip.py [--messages 3000] [--seed 1] [--rate 800]

Starts its own redis-server and Kamailio (the project's kamailio.cfg, the test office,
flood limits raised so that the mutated messages reach the parser and the routes
instead of a ban) on free loopback ports, sends --messages mutated SIP messages over
UDP from a few 127.0.2.x addresses (byte flips, truncations, huge headers, bytes that
are not UTF-8, duplicated or missing mandatory headers, random methods, garbage),
then checks that the proxy still answers an OPTIONS keepalive with 200, still
authenticates a REGISTER, and has as many Kamailio processes as before. Prints the
figures: messages sent, answers by status code, unanswered, Python tracebacks in the
log, duration. Exit code 0 when the proxy is healthy afterwards.

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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "tests" / "sip" / "office.yaml"))
    proxy = Proxy(work, redis.url, **FUZZ_ENV).start()
    try:
        before = settled_processes(proxy)
        result = fuzz(proxy, args.messages, args.seed, args.rate, args.max_seconds)
        time.sleep(0.5)
        after = settled_processes(proxy)
        checks = health(proxy, "2001", "acme.test", "alice-secret-1")
        tracebacks = proxy.log_text().count("Traceback")
        print(result.summary())
        print(f"mutations: {dict(sorted(result.mutations.items()))}")
        print(f"5xx answers: {dict(collections.Counter(result.server_errors))}")
        print(f"afterwards: OPTIONS {checks['options']}, REGISTER {checks['register']}, "
              f"kamailio processes {before} -> {after}, Python tracebacks in the log: {tracebacks} "
              f"(log: {proxy.log_path})")
        healthy = checks["options"] == (200, "OK") and checks["register"] == (200, "OK") and before == after
        return 0 if healthy else 1
    finally:
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
