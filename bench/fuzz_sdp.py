"""Hostile SDPs through the real proxy and rtpengine: no RTP may ever reach a third party.

    .venv/bin/python bench/fuzz_sdp.py [--calls 200] [--seed 1]

Two phones of the test office (tests/sip/office.yaml, acme 2001 and 2002, on 127.0.3.x) call each
other --calls times, authenticated, each offer and each answer an SDP built from hostile
spellings (hostile_sdp): connection addresses naming a third party (session or media level,
with a TTL, twice, as an IPv6 or a host name, 0.0.0.0), a=rtcp and ICE candidates naming it,
many m= lines (up to the issue's 1,240), odd ports (0, 1, 65535, 65536, -1, words, port/count),
several sessions in one body, bare LF line ends. Each call that connects carries RTP both ways
(each phone sends to the relay port its SDP answer named, from the address its signalling came
from), then is hung up. The third party (127.0.3.99) listens on every port the spellings name;
the run fails if a single datagram reaches it, if any answer is a 5xx other than the relay's own
(503 shares) or if a Python traceback shows in the log. Prints the answers by code.

Only loopback is targeted; the run is bounded by --calls.
"""

from __future__ import annotations

import argparse
import collections
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.harness import ROOT, Proxy, RedisServer, admin  # noqa: E402
from tests.sip.rtp import Rtp, relay  # noqa: E402
from tests.sip.sipua import UA  # noqa: E402

CALLER_IP, CALLEE_IP, THIRD = "127.0.3.10", "127.0.3.11", "127.0.3.99"
THIRD_PORTS = (1, 9, 4000, 4001, 4002, 4003, 40000, 40001, 65535)
FUZZ_ENV = dict(PIKE_REQS="1000000", PIKE_WINDOW_S="1", LOG_LEVEL="1")


def hostile_sdp(rng: random.Random, own_ip: str, own_port: int) -> tuple[str, str]:
    """(the spelling's name, an SDP body) of a party at own_ip:own_port."""
    kind = rng.choice(["third_c_session", "third_c_media", "third_c_ttl", "two_c", "c_ip6", "c_hostname",
                       "c_zero", "rtcp_third", "candidate_third", "many_m", "odd_port", "port_count",
                       "two_sessions", "bare_lf", "plain"])
    port = rng.choice(THIRD_PORTS[2:])
    c_session, c_media, extra_media, streams, m_port = own_ip, None, [], 1, own_port
    head_extra: list[str] = []
    if kind == "third_c_session":
        c_session = THIRD
    elif kind == "third_c_media":
        c_media = THIRD
    elif kind == "third_c_ttl":
        c_session = f"{THIRD}/127"
    elif kind == "two_c":
        c_media = f"{own_ip}\r\nc=IN IP4 {THIRD}"
    elif kind == "c_ip6":
        c_session = "::ffff:" + THIRD
    elif kind == "c_hostname":
        c_session = rng.choice(["localhost", "third.example", THIRD + "."])
    elif kind == "c_zero":
        c_session = "0.0.0.0"
    elif kind == "rtcp_third":
        extra_media = [f"a=rtcp:{port} IN IP4 {THIRD}"]
    elif kind == "candidate_third":
        extra_media = [f"a=candidate:1 1 UDP 2130706431 {THIRD} {port} typ host",
                       f"a=candidate:2 1 UDP 1694498815 {THIRD} {port + 1} typ srflx raddr {own_ip} rport {own_port}"]
    elif kind == "many_m":
        streams = rng.choice([2, 4, 5, 50, 1240])
    elif kind == "odd_port":
        m_port = rng.choice(["0", "1", "65535", "65536", "-1", "abc", "", "4000.5", str(port)])
        c_session = rng.choice([own_ip, THIRD])
    elif kind == "port_count":
        m_port = f"{port}/2"
        c_session = rng.choice([own_ip, THIRD])
    elif kind == "two_sessions":
        head_extra = None  # built below
    lines = ["v=0", f"o=- {rng.randrange(1, 10**6)} 1 IN IP4 {own_ip}", "s=-", f"c=IN IP4 {c_session}"
             if not c_session.startswith("::") else f"c=IN IP6 {c_session}", "t=0 0"]
    lines += [f"m=audio {m_port} RTP/AVP 8 0 101"]
    if c_media:
        lines.append(f"c=IN IP4 {c_media}")
    lines += ["a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=sendrecv", *extra_media]
    lines += [f"m=audio {own_port + 2 * i} RTP/AVP 8" for i in range(1, streams)]
    if head_extra is None:
        lines += ["v=0", f"o=- 2 2 IN IP4 {THIRD}", "s=-", f"c=IN IP4 {THIRD}", "t=0 0",
                  f"m=audio {port} RTP/AVP 8"]
    eol = "\n" if kind == "bare_lf" else "\r\n"
    return kind, eol.join(lines) + eol


@dataclass
class SdpFuzzResult:
    calls: int = 0
    answers: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    connected: int = 0
    rtp_sent: int = 0
    third_party_received: list = field(default_factory=list)  # (port, source) of every datagram
    server_errors: list = field(default_factory=list)
    by_offer: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))  # kind -> codes

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.answers.items()))
        return (f"SDP fuzz: {self.calls} calls [{codes}], {self.connected} connected, {self.rtp_sent} RTP packets "
                f"sent, third party received {len(self.third_party_received)}")


def fuzz_sdp(proxy: Proxy, calls: int, seed: int = 1, passwords=("alice-secret-1", "bruno-secret-2"),
             domain: str = "acme.test") -> SdpFuzzResult:
    rng = random.Random(seed)
    result = SdpFuzzResult()
    where = (proxy.ip, proxy.port)
    caller = UA(CALLER_IP, where, "2001", domain, passwords[0])
    callee = UA(CALLEE_IP, where, "2002", domain, passwords[1])
    third = []
    for port in THIRD_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((THIRD, port))
        sock.setblocking(False)
        third.append(sock)
    caller_rtp, callee_rtp = Rtp(CALLER_IP), Rtp(CALLEE_IP)
    try:
        for ua in (caller, callee):
            answer = ua.register()
            assert answer is not None and answer.status == 200, f"{ua.user} did not register: {answer}"
        for _ in range(calls):
            kind_a, caller.sdp = hostile_sdp(rng, CALLER_IP, caller_rtp.port)
            kind_b, callee.sdp = hostile_sdp(rng, CALLEE_IP, callee_rtp.port)
            result.kinds.update([kind_a, kind_b])
            call = caller.invite("2002", timeout=6)
            result.calls += 1
            code = call.code or 0
            result.answers[code] += 1
            result.by_offer[kind_a][code] += 1
            if code >= 500 and code != 503:
                result.server_errors.append(f"{call.final.first} ({kind_a} / {kind_b})")
            if code == 200:
                result.connected += 1
                try:
                    to_caller = relay(call.final.body)
                    to_callee = relay(callee.callee_invites()[-1].body)
                    caller_rtp.send(to_caller, 5)
                    callee_rtp.send(to_callee, 5)
                    result.rtp_sent += 10
                except (AttributeError, ValueError, OSError, OverflowError):
                    pass  # an SDP rtpengine did not rewrite (not handed to it): no relay port to send to
                call.bye()
            for sock in third:
                while True:
                    try:
                        _, src = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    result.third_party_received.append((sock.getsockname()[1], src))
        time.sleep(0.5)
        for sock in third:
            try:
                while True:
                    _, src = sock.recvfrom(65535)
                    result.third_party_received.append((sock.getsockname()[1], src))
            except BlockingIOError:
                pass
    finally:
        for closable in (caller, callee, caller_rtp, callee_rtp, *third):
            closable.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from cpu_per_call import project_env  # noqa: PLC0415  (the same defaults as scripts/test.sh)
    project_env()
    work = Path(tempfile.mkdtemp(prefix="fuzz-sdp-"))
    redis = RedisServer(work).start()
    proxy = None
    try:
        admin(redis.url, "load", str(ROOT / "tests" / "sip" / "office.yaml"))
        proxy = Proxy(work, redis.url, **FUZZ_ENV).start()
        mark = proxy.mark()
        started = time.monotonic()
        result = fuzz_sdp(proxy, args.calls, args.seed)
        print(f"{result.summary()} in {time.monotonic() - started:.1f}s")
        print("spellings:", dict(sorted(result.kinds.items())))
        print("answers by the offer's spelling:", {k: dict(v) for k, v in sorted(result.by_offer.items())})
        tracebacks = proxy.log_since(mark).count("Traceback")
        print(f"5xx (other than 503): {result.server_errors[:5]}, tracebacks: {tracebacks}")
        return 0 if not result.third_party_received and not result.server_errors and not tracebacks else 1
    finally:
        if proxy is not None:
            proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
