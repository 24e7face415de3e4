"""What the site's Redis costs per round trip: the HAProxy hop, and WAIT after a money change.

    .venv/bin/python bench/redis_site_latency.py [--rounds N]

Starts scripts/redis-site.sh on free loopback ports (as the tests do), then times, with kemi's own
hot-path connection (kemi.store.wire.Wire, one socket, as a SIP worker uses it):
  - GET of a small key straight to the primary, and through HAProxy (the address clients use);
  - a top-up FCALL (prepaid_topup, a fresh reference each time) through HAProxy, alone and followed by
    WAIT 1 <timeout> in the same round trip (what kemi.store.prepaid sends with REDIS_WAIT_REPLICAS=1).
Prints the median and p99 of each in microseconds. Figures go to bench/BENCHMARKS.md ("site").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kemi.paths import PREPAID_LUA  # noqa: E402
from kemi.store.wire import Wire  # noqa: E402
from tests.harness import RedisSite  # noqa: E402


def timed(wire: Wire, commands_of, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        commands = commands_of(i)
        started = time.perf_counter()
        replies = wire.run(commands)
        out.append((time.perf_counter() - started) * 1e6)
        for reply in replies:
            assert not isinstance(reply, Exception), reply
    return out


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<52} median {statistics.median(samples):7.0f} us   p99 {p99:7.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="redis-site-bench-") as tmp:
        site = RedisSite(Path(tmp)).start()
        try:
            primary = site.primary()
            setup = site.client()
            setup.set("bench:key", b"x" * 64)
            setup.function_load(PREPAID_LUA.read_text(encoding="utf-8"), replace=True)
            from kemi.store.prepaid import Keys
            k = Keys.of("bench")
            setup.fcall("prepaid_activate", 1, k.prepaid, "EUR")
            direct, via = Wire("127.0.0.1", primary), Wire("127.0.0.1", site.port)
            get = lambda i: [("GET", "bench:key")]  # noqa: E731
            topup = lambda i: [("FCALL", "prepaid_topup", 2, k.prepaid, k.topups, uuid.uuid4().hex, 1)]  # noqa: E731
            waited = lambda i: topup(i) + [("WAIT", 1, 100)]  # noqa: E731
            for wire in (direct, via):
                timed(wire, get, 200)  # warm-up
            results = {
                "GET, straight to the primary": timed(direct, get, args.rounds),
                "GET, through HAProxy (the site address)": timed(via, get, args.rounds),
                "FCALL prepaid_topup, straight to the primary": timed(direct, topup, args.rounds),
                "FCALL prepaid_topup, through HAProxy": timed(via, topup, args.rounds),
                "FCALL prepaid_topup + WAIT 1 100, through HAProxy": timed(via, waited, args.rounds),
            }
            for name, samples in results.items():
                print(summary(name, samples))
        finally:
            site.stop()


if __name__ == "__main__":
    main()
