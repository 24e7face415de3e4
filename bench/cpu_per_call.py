"""Kamailio CPU per call through the real proxy and through the native baseline, same run, by kind.

    bench/.venv/bin/python bench/cpu_per_call.py [--calls 1000] [--rate 100] [--rounds 2]
                                                 [--kind outbound,internal,inbound,prepaid,register] [--floor]
    (any Python with the project's requirements works: .venv/bin/python too)

Starts its own redis-server, the product's Kamailio (kamailio.cfg + kemi/) and the native baseline
(bench/native/kamailio-native.cfg, see the comment at its top) on free loopback ports with the demo
office, plus the native:* keys (bench/native/provision.py). For each kind and round the same SIPp
traffic goes through the product, then through the native config (interleaved, so both see the same
machine load):
- outbound: 2001 (digest auth) calls 0145678901; the trunk carrier-a (127.0.0.2:5060) answers;
- internal: 2001 calls 2002 (registered with that proxy);
- inbound: the trunk calls the DID +33142685302 of 2002 (no auth);
- prepaid: 2001 calls a German mobile on acme's Prepaid Account: balance announcement by the
  announcer (127.0.0.7:5060), then the trunk (the native config relays it straight to the trunk:
  it has no money);
- register: 2002 registers (401, authenticated REGISTER, 200), once per "call".
Calls: INVITE, 407, authenticated INVITE, 180, 200, ACK, BYE.

The figure is CPU time (user + system, from /proc) of every process of each Kamailio's process
group, taken before and after the run, divided by the calls completed; ratio = product / native.
CPU time, unlike wall time, hardly depends on what else the machine runs. Stops by itself.

--floor adds a third system to each round: the native config's routing written in KEMI Python
(bench/native/kemi_floor.py, the same calls into Kamailio and nothing more). floor/native is what
entering Python and calling KSR costs by itself, before any of the product's own work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.native.provision import provision  # noqa: E402
from bench.native.proxy import NATIVE_DEFAULT_RULES, NativeProxy  # noqa: E402
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Phone, Proxy, RedisServer, Sipp, admin, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
# below the kernel's ephemeral range (32768-60999), where free_port() picks the proxies' SIP ports:
# a relay that binds a proxy's SIP port takes its requests
MEDIA_PORTS = ((10000, 17499), (17500, 24999), (25000, 32767))
CALLER = ("2001", "alice-demo-secret", "127.0.0.20")
CALLEE = ("2002", "bruno-demo-secret", "127.0.0.21")
DOMAIN = "acme.cowork.example"
TRUNK = ("127.0.0.2", 5060)
ANNOUNCER = ("127.0.0.7", 5060)
KINDS = {"outbound": "0145678901", "internal": "2002", "inbound": "+33142685302",
         "prepaid": "004915112345678", "register": None}


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


_PHONES: dict[tuple[str, str, str], Phone] = {}


def phone(who: tuple[str, str, str]) -> Phone:
    """The bench's phone for that user, on the same port every run: a REGISTER from a new port would
    add a contact, and after four (the registrar's max_contacts) be refused 503."""
    if who not in _PHONES:
        user, password, ip = who
        _PHONES[who] = Phone(user, DOMAIN, password, ip, free_port(ip))
    return _PHONES[who]


def register(work: Path, proxy: Proxy, who: Phone, calls: int = 1, rate: int = 10, timeout: float = 30) -> int:
    """REGISTERs of one phone (401, then 200); the number answered 200."""
    reg = Sipp("register.xml", [*who.auth_args(), "-set", "expires", "600"], work,
               ip=who.ip, port=who.port, calls=calls, rate=rate).start(f"{proxy.ip}:{proxy.port}", timeout)
    return reg.wait(timeout + 30).log.count("FINAL 200")


def peers(kind: str, work: Path, proxy: Proxy, calls: int, budget: float) -> tuple[list[Sipp], Phone | None]:
    """The answering side of a kind of call (started), and the phone that answers, if any."""
    answer = ["-set", "ring", "0"]
    if kind in ("internal", "inbound"):
        callee = phone(CALLEE)
        assert register(work, proxy, callee) == 1, f"2002 could not register with {proxy.log_path}"
        started = [Sipp("answer.xml", answer, work, ip=callee.ip, port=callee.port, calls=calls)]
    else:
        started = [Sipp("answer.xml", answer, work, ip=TRUNK[0], port=TRUNK[1], calls=calls)]
        if kind == "prepaid" and not isinstance(proxy, NativeProxy):
            started.append(Sipp("announce.xml", [], work, ip=ANNOUNCER[0], port=ANNOUNCER[1], calls=calls))
    for peer in started:
        peer.start(timeout=budget)
    return started, None


# Under load a 180 is now and then relayed after the 200 of the same INVITE (each reply is handled by
# the worker that read it, both systems alike): SIPp would abort such a call as unexpected, as in
# bench/load_sipp.py it ignores the stray reply, and the call counts by its BYE 200.
TOLERANT = ["-default_behaviors", "all,-abortunexp"]


def traffic(kind: str, work: Path, proxy: Proxy, calls: int, rate: int, budget: float) -> Sipp:
    """The calling side of one run (started)."""
    if kind == "inbound":
        args = ["-s", "+33698000001", "-set", "from_domain", "carrier.example", "-set", "dial", KINDS[kind],
                "-set", "company", "", "-d", "0", *TOLERANT]
        return Sipp("inbound.xml", args, work, ip=TRUNK[0], port=TRUNK[1], calls=calls, rate=rate) \
            .start(f"{proxy.ip}:{proxy.port}", timeout=budget)
    caller = phone(CALLER)
    if kind == "register":
        caller = phone(CALLEE)
        return Sipp("register.xml", [*caller.auth_args(), "-set", "expires", "600"], work, ip=caller.ip,
                    port=caller.port, calls=calls, rate=rate).start(f"{proxy.ip}:{proxy.port}", timeout=budget)
    return Sipp("call.xml", [*caller.auth_args(), "-set", "dial", KINDS[kind], "-d", "0", *TOLERANT], work,
                ip=caller.ip, port=caller.port, calls=calls, rate=rate).start(f"{proxy.ip}:{proxy.port}",
                                                                             timeout=budget)


def run(kind: str, work: Path, proxy: Proxy, calls: int, rate: int) -> tuple[int, float]:
    """(calls completed, Kamailio CPU seconds) of one kind through one proxy."""
    budget = calls / rate + 60
    answering, _ = ([], None) if kind == "register" else peers(kind, work, proxy, calls, budget)
    time.sleep(0.5)
    before = group_cpu_s(proxy.proc.pid)
    result = traffic(kind, work, proxy, calls, rate, budget).wait(budget + 30)
    time.sleep(1.0)  # let the dialog-end events (call records) run before reading the CPU
    used = group_cpu_s(proxy.proc.pid) - before
    for peer in answering:
        peer.stop()
    done = result.log.count("FINAL 200") if kind == "register" else result.log.count("BYE 200")
    return done, used


def project_env() -> None:
    """The defaults of scripts/env.sh (what scripts/test.sh exports), for a bench run by hand."""
    import subprocess
    out = subprocess.run(["bash", "-c", f"source {ROOT}/scripts/env.sh && env -0"], capture_output=True,
                         check=True, env=os.environ).stdout.decode()
    for item in filter(None, out.split("\0")):
        name, _, value = item.partition("=")
        os.environ.setdefault(name, value)


def kemi_venv() -> str:
    """The embedded interpreter's venv (KEMI_VENV, else the checkout's .venv), whatever runs the bench."""
    return os.environ.get("KEMI_VENV") or str(ROOT / ".venv")


def prepare(work: Path, floor: bool = False) -> tuple[RedisServer, list[Proxy]]:
    """redis-server and the proxies, started: the product, the native config and, with floor, the
    native config's routing in KEMI Python (bench/native/kemi_floor.py). When any of it fails, what
    was already started is stopped (a relay that could not bind its port must not leave the rest)."""
    project_env()
    redis = RedisServer(work, default_extra=NATIVE_DEFAULT_RULES).start()
    proxies: list[Proxy] = []
    try:
        admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
        admin(redis.url, "prepaid", "activate", "acme")
        admin(redis.url, "prepaid", "topup", "acme", "100000.00", "--ref", "bench-cpu")
        admin(redis.url, "rate", "set", "+4915", "0.20", "--increments", "60/60")
        provision(redis.url)
        # every call comes from one phone's address: a load run, not a flood (pike would ban it)
        common = {"SIP_CHILDREN": CHILDREN, "LOG_LEVEL": "0", "KAMAILIO_SHM_MB": "512", "KEMI_VENV": kemi_venv(),
                  # one phone places every call: the relay's shares must not refuse a measurement
                  # (the checks themselves still run on every call)
                  **LOAD_MEDIA_SHARES}
        proxies += [Proxy(work, redis.url, PIKE_REQS="1000000", **common),
                    NativeProxy(work, redis.url, TRUNK, **common)]
        if floor:
            proxies.append(NativeProxy(work, redis.url, TRUNK, kemi_floor=True, **common))
        # each relay its own range; rtpengine keeps a call's ports for 30 s after the delete (its
        # delete-delay): runs of 100 calls/s back to back would exhaust any range and calls would fail
        # for want of ports, so the relays free them at once (the same for both, as bench/load.py's)
        for proxy, ports in zip(proxies, MEDIA_PORTS):
            proxy.media.ports = ports
            proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]
        for proxy in proxies:
            proxy.start()
    except BaseException:
        stop_all(redis, proxies)
        raise
    return redis, proxies


def stop_all(redis: RedisServer, proxies: list[Proxy]) -> None:
    for proxy in proxies:
        proxy.stop()
    redis.stop()


@contextmanager
def systems(work: Path, floor: bool = False):
    """prepare()'s redis-server and proxies for a with block, all stopped at its end (failure included)."""
    redis, proxies = prepare(work, floor)
    try:
        yield redis, proxies
    finally:
        stop_all(redis, proxies)


CHILDREN = "4"


def main() -> int:
    global CHILDREN
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100, help="new calls per second offered")
    parser.add_argument("--rounds", type=int, default=1, help="product/native alternations per kind")
    parser.add_argument("--kind", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--children", default="4", help="SIP_CHILDREN of both proxies")
    parser.add_argument("--floor", action="store_true",
                        help="a third system: the native config's routing in KEMI Python (bench/native/kemi_floor.py)")
    args = parser.parse_args()
    CHILDREN = args.children
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    failed = False
    with systems(work, args.floor) as (redis, proxies):
        for kind in args.kind.split(","):
            totals = {name: [0, 0.0] for name in ("product", "native", "floor")[:len(proxies)]}
            for _ in range(args.rounds):
                for name, proxy in zip(totals, proxies):
                    ok, used = run(kind, work, proxy, args.calls, args.rate)
                    totals[name][0] += ok
                    totals[name][1] += used
                    failed |= ok != args.calls
            per = {name: (used / ok * 1000 if ok else float("nan")) for name, (ok, used) in totals.items()}
            print(f"{kind:9s} product {per['product']:.3f} ms/call ({totals['product'][0]} done)  "
                  f"native {per['native']:.3f} ms/call ({totals['native'][0]} done)  "
                  f"ratio {per['product'] / per['native']:.2f}" +
                  (f"  floor {per['floor']:.3f} ms/call ({totals['floor'][0]} done), floor/native "
                   f"{per['floor'] / per['native']:.2f}" if "floor" in per else ""), flush=True)
        client = redis.client()  # both wrote one record per call (the product also one per refused call)
        print(f"call records: product {client.xlen('{co:acme}:cdr')}, native{' and floor' if args.floor else ''} "
              f"{client.xlen('native:cdr')}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
