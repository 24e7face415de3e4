"""The media server under load: N simultaneous balance announcements and N simultaneous receptionist
calls, through the real Kamailio and rtpengine, with what every caller's socket received.

    unshare -n bash -c 'ip link set lo up && source scripts/env.sh && .venv/bin/python bench/media_load.py [--calls 50] [--at-once K]'

--at-once K: at most K calls of a kind in progress (default: all at once). One media server process holds
4 calls (the pjsua2-python wheel's PJSUA_MAX_CALLS, bench/BENCHMARKS.md "Media server"): --at-once 4
measures the served calls' audio and CPU, the default shows what happens to the others.

Starts its own redis-server, the product's Kamailio with its rtpengine, and the two media servers
(python -m media) on the SIP tests' addresses (tests/sip/office.yaml; run it in a private network
namespace). Then, one kind after the other:
- announcements: N prepaid calls from initech's 2001 placed at once (each from its own address,
  with its own RTP socket), the carrier busy: each caller hears its balance as early media, then
  the 480 + X-Announcement: done, then the carrier's 486;
- receptionist: N carrier calls to acme's main number placed at once, each from a trunk of its own
  (the bench's office adds N inbound trunks 127.0.0.6:5101..), each hears LISTEN_S of the greeting,
  dials 2001 in RFC 4733 events, and is sent there (2001 answers every call), then hangs up.
Per call: the RTP packets received before the final answer (announcement) or before dialling
(receptionist), the sequence gaps (packets lost between the first and the last received), the
stream's length in packets expected from its duration. Per kind: the media server's CPU time
(user + system, /proc) during the kind, divided by the calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import LOAD_MEDIA_SHARES, ROOT, MediaServer, Proxy, RedisServer, admin, wait_for  # noqa: E402
from tests.sip.sipua import UA, Peer  # noqa: E402
from tests.sip.rtp import relay  # noqa: E402
from tests.sip.test_media_server import Recorder, caller_sdp, dtmf_packets  # noqa: E402

OFFICE = ROOT / "tests" / "sip" / "office.yaml"
ANNOUNCER, RECEPTION, PRIMARY = ("127.0.0.7", 5060), ("127.0.0.3", 5060), ("127.0.0.2", 5060)
TICK = os.sysconf("SC_CLK_TCK")
LISTEN_S = 4.0
DB = 5


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bench_office(workdir: Path, calls: int) -> Path:
    """tests/sip/office.yaml with N inbound trunks on 127.0.0.6 (one per simultaneous caller: a trunk
    is trusted by address and port) and initech's 2001 speaking French."""
    text = OFFICE.read_text(encoding="utf-8")
    extra = "".join(f"  - {{name: bench-in-{i}, host: 127.0.0.6, port: {5101 + i}, priority: 9, outbound: false}}\n"
                    for i in range(calls))
    text = text.replace("media_servers:", extra + "media_servers:", 1)
    path = workdir / "bench-office.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def stream_figures(rec: Recorder) -> tuple[int, int, int]:
    """(packets received, sequence gaps, span in packets from the first to the last sequence)."""
    seqs = sorted(p[0] for p in rec.packets if p[1] in (0, 8, 9))
    if not seqs:
        return 0, 0, 0
    return len(seqs), rec.gaps(), seqs[-1] - seqs[0] + 1


def announcements(proxy: Proxy, server: MediaServer, n: int, at_once: int | None = None) -> list[dict]:
    results: list[dict] = [{} for _ in range(n)]
    carrier = Peer(*PRIMARY, invite=(486, "Busy Here"))
    slots = threading.Semaphore(at_once or n)

    def one(i: int) -> None:
        with slots:
            one_call(i)

    def one_call(i: int) -> None:
        ip = f"127.0.1.{10 + i}"
        rec = Recorder(ip)
        ua = UA(ip, (proxy.ip, proxy.port), "2001", "initech.test", "ines-secret-1")
        ua.sdp = caller_sdp(ip, rec.port)
        began = time.monotonic()
        call = ua.invite("004915112345678", timeout=60)
        early = ua.wait(lambda m: not m.is_request and m.status == 183, 0)
        time.sleep(0.3)
        rec.stop()
        got, gaps, span = stream_figures(rec)
        done = next((line for line in server.lines(call.call_id) if " announced" in line), None)
        results[i] = {"final": call.code, "early": early is not None, "announced": done is not None,
                      "packets": got, "gaps": gaps, "span": span, "secs": time.monotonic() - began}
        ua.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    carrier.close()
    return results


def receptionist_calls(proxy: Proxy, n: int, at_once: int | None = None) -> list[dict]:
    results: list[dict] = [{} for _ in range(n)]
    from tests.sip.conftest import PASSWORDS
    alice = UA("127.0.0.65", (proxy.ip, proxy.port), "2001", "acme.test", PASSWORDS[("2001", "acme.test")])
    assert alice.register().status == 200
    slots = threading.Semaphore(at_once or n)

    def one(i: int) -> None:
        with slots:
            one_call(i)

    def one_call(i: int) -> None:
        rec = Recorder("127.0.0.6")
        ua = UA("127.0.0.6", (proxy.ip, proxy.port), "+33698000001", "carrier.example", port=5101 + i)
        ua.sdp = caller_sdp("127.0.0.6", rec.port)
        holder: dict = {}
        t = threading.Thread(target=lambda: holder.update(call=ua.invite(
            f"sip:+33142685300@{proxy.ip}:{proxy.port}", timeout=60)), daemon=True)
        t.start()
        early = ua.wait(lambda m: not m.is_request and m.status == 183, 20)
        if early is None:
            t.join(30)
            call = holder.get("call")
            results[i] = {"final": call.code if call else None, "early": False}
            rec.stop()
            ua.close()
            return
        time.sleep(LISTEN_S)
        got, gaps, span = stream_figures(rec)  # the greeting heard before dialling
        dest = relay(early.body)
        seq, ts = 1000, 16000
        for digit in "2001":
            for packet in dtmf_packets(digit, seq, ts, 0xBE00 + i):
                rec.sock.sendto(packet, dest)
                time.sleep(0.02)
            seq, ts = seq + 7, ts + 1600
            time.sleep(0.2)
        t.join(30)
        call = holder.get("call")
        results[i] = {"final": call.code if call else None, "early": True, "packets": got, "gaps": gaps,
                      "span": span}
        if call is not None and call.code == 200:
            call.bye()
        rec.stop()
        ua.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    results_answered = len(alice.answered)
    alice.register(expires=0)
    alice.close()
    for r in results:
        r["answered_by_2001"] = results_answered
    return results


def report(kind: str, results: list[dict], cpu: float, wall: float) -> None:
    ok = [r for r in results if r.get("packets")]
    packets = [r["packets"] for r in ok]
    gaps = sum(r["gaps"] for r in ok)
    spans = sum(r["span"] for r in ok)
    finals: dict = {}
    for r in results:
        finals[r.get("final")] = finals.get(r.get("final"), 0) + 1
    print(f"{kind}: {len(results)} calls, finals {finals}, with audio {len(ok)}; "
          f"RTP packets per call min {min(packets, default=0)} max {max(packets, default=0)}, "
          f"total {sum(packets)} of {spans} sent in sequence ({gaps} lost, "
          f"{100 * gaps / max(spans, 1):.3f} %); media server CPU {cpu:.2f} s = "
          f"{1000 * cpu / max(len(results), 1):.0f} ms per call ({100 * cpu / wall:.0f} % of a core over {wall:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--at-once", type=int, default=0,
                        help="calls in progress at most (default: all of them at once)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="media-load-"))
    redis = RedisServer(workdir).start()
    office = bench_office(workdir, args.calls)
    servers = []
    proxy = None
    try:
        url = redis.url_of(DB)
        admin(url, "load", str(office))
        admin(url, "prepaid", "activate", "initech")
        admin(url, "prepaid", "topup", "initech", "100000000c", "--ref", "bench")
        admin(url, "rate", "set", "+4915", "60c", "--increments", "60/60", "--fee", "0c")
        proxy = Proxy(workdir, url, EMERGENCY_CALLS_MAX="1000", **LOAD_MEDIA_SHARES).start()
        announcer = MediaServer("announcement", *ANNOUNCER, workdir, office).start()
        reception = MediaServer("receptionist", *RECEPTION, workdir, office).start()
        servers = [announcer, reception]
        # the sentences are rendered once, before the clock starts: the cache's steady state
        warm = announcements(proxy, announcer, 1)
        assert warm[0].get("announced"), warm
        at_once = args.at_once or args.calls
        for kind, server, run in (("announcements", announcer, lambda: announcements(proxy, announcer, args.calls, at_once)),
                                  ("receptionist", reception, lambda: receptionist_calls(proxy, args.calls, at_once))):
            before, began = cpu_s(server.proc.pid), time.monotonic()
            results = run()
            wall = time.monotonic() - began
            report(kind, results, cpu_s(server.proc.pid) - before, wall)
    finally:
        for server in servers:
            server.stop()
        if proxy is not None:
            proxy.stop()
        redis.stop()


if __name__ == "__main__":
    main()
