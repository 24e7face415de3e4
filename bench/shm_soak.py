"""Shared memory per call, and calls per day per GB of shared memory, through the real proxy.

    .venv/bin/python bench/shm_soak.py [--calls 30000] [--rate 150] [--grace 60] [--shm-mb 128]

Starts its own redis-server and the product's Kamailio (kamailio.cfg + kemi/, KAMAILIO_SHM_MB=--shm-mb)
with the demo office, and places --calls outbound calls (2001, digest auth, to 0145678901, answered by a
SIPp trunk on 127.0.0.2:5060, hung up at once: INVITE/407/INVITE/180/200/ACK/BYE) at --rate per second:
a day's calls of a deployment, compressed. Shared memory is read from the proxy's own /metrics
(kamailio_shmem_real_used_size: what the allocator holds, the series the 70 % alert reads), with the
number of items of the Call-ID table (kamcmd htable.stats: every relayed call leaves one, answered or
not, so the figure does not depend on how many calls a loaded box completes):
- before: after a warm-up of 500 calls whose Call-IDs have expired (every pool, table and cache warm);
- after:  once every call has ended: what the calls left behind (bytes per call kept);
- later:  after --grace (CALL_ID_GRACE_S) + htable's 20 s purge: what stays for good.

Run it twice to compare the Call-ID memory's candidates: --grace 86400 keeps every Call-ID for a day
(the 24 h memory of before, i.e. a table sized from the expected daily calls: nothing expires during
the soak), --grace 60 the bounded memory (production: 300 s; 60 s here so the soak sees it expire).
The report: shared memory per remembered Call-ID (its delta over the items' delta); calls per day per GiB
= GiB / those bytes for a day-long memory,
x 86400 / grace for a bounded one (the memory then holds `grace` seconds of calls at the day's rate:
the figure is at a flat rate; a peak hour at 3x the day's average needs 3x the memory).
Bench only (not a test): its figures go in bench/BENCHMARKS.md, Sizing.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_per_call import TOLERANT, TRUNK, group_cpu_s, kemi_venv, phone, CALLER, project_env  # noqa: E402
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, Sipp, admin  # noqa: E402

GIB = 1 << 30
HTABLE_PURGE_S = 20  # htable's timer_interval (default): expired items are freed by this timer


def shm(proxy: Proxy) -> dict[str, float]:
    """The shared-memory series of the proxy's /metrics, and `callids`: the items of the Call-ID table."""
    m = proxy.metrics()
    found = {name: m[name] for name in ("kamailio_shmem_real_used_size", "kamailio_shmem_used_size",
                                        "kamailio_shmem_total_size", "kamailio_shmem_max_used_size") if name in m}
    stats = proxy.kamcmd("htable.stats")
    table = re.search(r"name: callids\s+slots: \d+\s+all: (\d+)", stats)
    found["callids"] = float(table.group(1)) if table else float("nan")
    return found


def calls(work: Path, proxy: Proxy, count: int, rate: int) -> tuple[int, float]:
    """(calls completed, Kamailio CPU seconds) of `count` outbound calls at `rate` per second."""
    budget = count / rate + 120
    trunk = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=TRUNK[0], port=TRUNK[1], calls=count).start(timeout=budget)
    time.sleep(0.5)
    before = group_cpu_s(proxy.proc.pid)
    caller = phone(CALLER)
    result = Sipp("call.xml", [*caller.auth_args(), "-set", "dial", "0145678901", "-d", "0", *TOLERANT], work,
                  ip=caller.ip, port=caller.port, calls=count, rate=rate) \
        .start(f"{proxy.ip}:{proxy.port}", timeout=budget).wait(budget + 30)
    time.sleep(2.0)  # the dialog-end events (records, the Call-IDs' grace) run
    used = group_cpu_s(proxy.proc.pid) - before
    trunk.stop()
    return result.log.count("BYE 200"), used


def settle(proxy: Proxy, seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return shm(proxy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30000, help="calls of the soak (a day's, compressed)")
    parser.add_argument("--rate", type=int, default=150, help="new calls per second")
    parser.add_argument("--grace", type=int, default=60, help="CALL_ID_GRACE_S of the proxy (86400: a day)")
    parser.add_argument("--shm-mb", type=int, default=128, help="KAMAILIO_SHM_MB of the proxy")
    args = parser.parse_args()
    project_env()
    work = Path(tempfile.mkdtemp(prefix="bench-shm-"))
    redis = RedisServer(work).start()
    proxy = None
    try:
        admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
        proxy = Proxy(work, redis.url, SIP_CHILDREN="4", LOG_LEVEL="0", KAMAILIO_SHM_MB=str(args.shm_mb),
                      KEMI_VENV=kemi_venv(), PIKE_REQS="100000000", CALL_ID_GRACE_S=str(args.grace),
                      **LOAD_MEDIA_SHARES)
        proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]
        proxy.start()
        warm, _ = calls(work, proxy, 500, min(args.rate, 100))
        before = settle(proxy, min(args.grace, 3600) + HTABLE_PURGE_S + 5 if args.grace < 3600 else 5)
        done, cpu = calls(work, proxy, args.calls, args.rate)
        after = settle(proxy, 5)
        later = settle(proxy, args.grace + HTABLE_PURGE_S + 5) if args.grace < 3600 else after
    finally:
        if proxy is not None:
            proxy.stop()
        redis.stop()
    used = "kamailio_shmem_real_used_size"
    items = after["callids"] - before["callids"]  # calls relayed (answered or not): each leaves one
    per_item = (after[used] - before[used]) / items if items > 0 else float("nan")
    # a day-long memory holds every call of the day; a bounded one `grace` s of calls (+ those up)
    per_day = GIB / per_item * (86400 / args.grace if args.grace < 86400 else 1) if per_item > 0 else float("inf")
    print(f"shm_soak: {done}/{args.calls} calls answered and ended at {args.rate}/s (warm-up {warm}), "
          f"CALL_ID_GRACE_S={args.grace}, shm {args.shm_mb} MiB")
    for name, at in (("before", before), ("after the calls", after), ("after the grace", later)):
        print(f"  {name:16} real_used {at[used] / 2**20:7.2f} MiB, callids items {at['callids']:.0f}")
    print(f"  shared memory per remembered Call-ID: {per_item:.0f} bytes ({items:.0f} items)")
    print(f"  after the grace: {(later[used] - before[used]) / max(items, 1):.0f} bytes per call stay, "
          f"{later['callids'] - before['callids']:.0f} items")
    print(f"  calls per day per GiB of shared memory (Call-ID memory alone, flat rate): {per_day:,.0f}")
    print(f"  Kamailio CPU per call: {cpu / max(done, 1) * 1e6:.0f} us (a loaded box: compare runs, not machines)")
    return 0 if done == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
