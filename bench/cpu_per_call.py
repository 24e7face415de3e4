"""Kamailio CPU per call through the real proxy, by kind of call.

    .venv/bin/python bench/cpu_per_call.py [--calls 1000] [--rate 100] [--kind internal|outbound|all]

Starts its own redis-server and Kamailio (the project's kamailio.cfg) on free loopback ports with the
demo office. For each kind, an answering SIPp plays the callee (extension 2002 registered, or the trunk
carrier-a on 127.0.0.2:5060) and a SIPp caller (2001, digest auth) places --calls calls at --rate
calls/s: INVITE, 407, authenticated INVITE, 180, 200, ACK, BYE.

The figure is CPU time (user + system, from /proc) of every process of the Kamailio process group,
taken before and after the caller's run, divided by the calls completed. CPU time, unlike wall time,
hardly depends on what else the machine runs, so before/after comparisons of a change hold on a busy
machine too (still: compare figures of one run, or runs on an idle machine). Stops by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ROOT, Phone, Proxy, RedisServer, Sipp, admin, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
CALLER = ("2001", "alice-demo-secret", "127.0.0.20")
CALLEE = ("2002", "bruno-demo-secret", "127.0.0.21")
DOMAIN = "acme.cowork.example"
TRUNK = ("127.0.0.2", 5060)
KINDS = {"internal": "2002", "outbound": "0145678901"}


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after ')': state ppid pgrp ...; utime=11, stime=12
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def run_kind(kind: str, work: Path, proxy: Proxy, calls: int, rate: int) -> tuple[int, float]:
    budget = calls / rate + 60
    if kind == "internal":
        user, password, ip = CALLEE
        callee = Phone(user, DOMAIN, password, ip, free_port(ip))
        reg = Sipp("register.xml", [*callee.auth_args(), "-set", "expires", "600"], work,
                   ip=callee.ip, port=callee.port).start(f"{proxy.ip}:{proxy.port}").wait()
        assert "FINAL 200" in reg.log, reg.log + reg.stdout
        answer = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=callee.ip, port=callee.port, calls=calls)
    else:
        answer = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=TRUNK[0], port=TRUNK[1], calls=calls)
    answer.start(timeout=budget)
    user, password, ip = CALLER
    caller = Phone(user, DOMAIN, password, ip, free_port(ip))
    time.sleep(0.5)
    before = group_cpu_s(proxy.proc.pid)
    result = Sipp("call.xml", [*caller.auth_args(), "-set", "dial", KINDS[kind], "-d", "0"], work,
                  ip=caller.ip, port=caller.port, calls=calls, rate=rate) \
        .start(f"{proxy.ip}:{proxy.port}", timeout=budget).wait(budget + 30)
    time.sleep(1.0)  # let the dialog-end events (call records) run before reading the CPU
    used = group_cpu_s(proxy.proc.pid) - before
    answer.stop()
    return result.log.count("BYE 200"), used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100, help="new calls per second offered")
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="all")
    parser.add_argument("--children", default="4", help="SIP_CHILDREN of the proxy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
    # every call comes from one phone's address: a load run, not a flood (pike would ban it)
    proxy = Proxy(work, redis.url, SIP_CHILDREN=args.children, LOG_LEVEL="0", KAMAILIO_SHM_MB="512",
                  PIKE_REQS="1000000").start()
    failed = False
    try:
        for kind in KINDS if args.kind == "all" else [args.kind]:
            ok, used = run_kind(kind, work, proxy, args.calls, args.rate)
            per_call = used / ok * 1000 if ok else float("nan")
            print(f"{kind}: {ok}/{args.calls} calls completed at {args.rate}/s, Kamailio CPU {used:.2f} s "
                  f"= {per_call:.2f} ms per call")
            failed |= ok != args.calls
        return 1 if failed else 0
    finally:
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
