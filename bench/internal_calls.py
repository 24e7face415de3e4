"""Calls per second for internal calls (2001 -> 2002 of one company) through the real proxy.

    .venv/bin/python bench/internal_calls.py [--calls 2000] [--rate 200] [--hold-ms 0]

Starts its own redis-server and Kamailio (the project's kamailio.cfg, SIP_CHILDREN=4) on free
loopback ports with the demo office, registers 2002 on an answering SIPp, and has a SIPp
caller place --calls calls at --rate calls/s (each: INVITE, 407, authenticated INVITE, 180,
200, ACK, BYE). Prints completed calls per second and the failures. Stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ROOT, Phone, Proxy, RedisServer, Sipp, admin, free_port, passwords  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200, help="new calls per second offered")
    parser.add_argument("--hold-ms", type=int, default=0, help="how long each answered call lasts")
    parser.add_argument("--children", default="4", help="SIP_CHILDREN of the proxy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = RedisServer(work).start()
    office = ROOT / "redis-schema" / "demo-office.yaml"
    admin(redis.url, "load", str(office))
    # every call comes from one phone's address: a load run, not a flood (pike would ban it)
    proxy = Proxy(work, redis.url, SIP_CHILDREN=args.children, LOG_LEVEL="0", KAMAILIO_SHM_MB="512",
                  PIKE_REQS="1000000").start()
    try:
        secret = passwords(office)
        callee = Phone("2002", "acme.cowork.example", secret[("2002", "acme.cowork.example")], "127.0.0.21",
                       free_port("127.0.0.21"))
        caller = Phone("2001", "acme.cowork.example", secret[("2001", "acme.cowork.example")], "127.0.0.20",
                       free_port("127.0.0.20"))
        reg = Sipp("register.xml", [*callee.auth_args(), "-set", "expires", "600"], work,
                   ip=callee.ip, port=callee.port).start(f"{proxy.ip}:{proxy.port}").wait()
        assert "FINAL 200" in reg.log, reg.log + reg.stdout
        budget = args.calls / args.rate + 60
        answer = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=callee.ip, port=callee.port,
                      calls=args.calls).start(timeout=budget)
        time.sleep(0.3)
        started = time.monotonic()
        calls = Sipp("call.xml", [*caller.auth_args(), "-set", "dial", "2002", "-d", str(args.hold_ms)], work,
                     ip=caller.ip, port=caller.port, calls=args.calls, rate=args.rate)
        result = calls.start(f"{proxy.ip}:{proxy.port}", timeout=budget).wait(budget + 30)
        elapsed = time.monotonic() - started
        answer.stop()
        ok = result.log.count("BYE 200")
        finals = [line.split(" ", 2)[1] for line in result.log.splitlines() if line.startswith("FINAL")]
        failed = len([f for f in finals if f != "200"])
        print(f"internal calls: {ok} completed of {args.calls} offered at {args.rate}/s in {elapsed:.1f}s "
              f"= {ok / elapsed:.0f} calls/s (failed {failed}, unanswered {args.calls - len(finals)}; "
              f"SIP_CHILDREN={args.children}, hold {args.hold_ms} ms)")
        return 0 if ok == args.calls else 1
    finally:
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
