"""Time in the request route, by SIP message, for the product and the native baseline: Kamailio's
own latency logging (core `latency_cfg_log`), switched on at run time over RPC.

    bench/.venv/bin/python bench/route_latency.py [--calls 1000] [--rate 100] [--floor]
                                                  [--kind outbound,internal,inbound,prepaid,register]

Starts redis-server, the product and the native config as bench/cpu_per_call.py does and runs the
same traffic. Before each run `cfg.seti core latency_cfg_log 0` makes Kamailio log, at the level
both proxies print, one line per request: "request-route executed in: N usec", the wall time from
the start to the end of the route (the product's Python callback with its Redis round trips; the
native script). Both configs prefix their log lines with "{$mt $hdr(CSeq) $ci}", so each line is
put with its message: "1 INVITE" (the challenged INVITE), "2 INVITE" (with credentials), "2 ACK"
(of the 200), "3 BYE", "1 REGISTER", "2 REGISTER". (The ACK of the 407 never reaches a route: the
sl module absorbs the ACK of its own answer.) --floor adds the native routing written in KEMI
Python (bench/cpu_per_call.py --floor). The logging is switched off after each run (level 3,
debug, which neither proxy prints). Stops by itself.

An ops engineer can do the same on a live proxy: `kamcmd cfg.seti core latency_cfg_log 2` (info),
and back with `kamcmd cfg.seti core latency_cfg_log 3`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cpu_per_call as cpc  # noqa: E402

LINE = re.compile(r"\{1 (\d+) ([A-Z]+) [^}]*\}.*request-route executed in: (\d+) usec")
SHOWN = 0  # the level both proxies print in the bench (cpu_per_call runs them at LOG_LEVEL 0)
HIDDEN = 3  # debug: printed by neither


def latencies(text: str) -> dict[str, list[int]]:
    """usec per request route, keyed "<CSeq number> <method>", from a Kamailio log."""
    found: dict[str, list[int]] = {}
    for match in LINE.finditer(text):
        found.setdefault(f"{match[1]} {match[2]}", []).append(int(match[3]))
    return found


def timed_run(kind: str, work: Path, proxy, calls: int, rate: int) -> tuple[int, dict[str, list[int]]]:
    start = proxy.log_path.stat().st_size
    proxy.kamcmd("cfg.seti", "core", "latency_cfg_log", str(SHOWN))
    try:
        done, _ = cpc.run(kind, work, proxy, calls, rate)
    finally:
        proxy.kamcmd("cfg.seti", "core", "latency_cfg_log", str(HIDDEN))
    with open(proxy.log_path, "rb") as log:
        log.seek(start)
        return done, latencies(log.read().decode(errors="replace"))


def table(kind: str, product: dict[str, list[int]], native: dict[str, list[int]],
          floor: dict[str, list[int]] | None = None) -> str:
    """One row per message: count (product), median / mean of each system, product / native means."""
    systems = {"product": product, "native": native} | ({"floor": floor} if floor is not None else {})
    rows = [f"{kind}: request route, usec (median / mean), {' vs '.join(systems)}",
            f"  {'message':12s} {'count':>6s} " + " ".join(f"{name:>15s}" for name in systems) + "  product/native"]
    cell = lambda v: f"{statistics.median(v):6.0f} / {statistics.fmean(v):6.0f}" if v else f"{'-':>15s}"
    for key in sorted(set().union(*systems.values()), key=lambda k: (int(k.split()[0]), k)):
        p, n = product.get(key, []), native.get(key, [])
        ratio = f"{statistics.fmean(p) / statistics.fmean(n):.1f}x" if p and n else "-"
        rows.append(f"  {key:12s} {len(p):6d} " + " ".join(f"{cell(found.get(key, [])):>15s}"
                                                          for found in systems.values()) + f"  {ratio}")
    rows.append("  all requests of the run: " + ", ".join(
        f"{name} {sum(sum(v) for v in found.values()) / 1000:.0f} ms" for name, found in systems.items()))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--kind", default=",".join(cpc.KINDS))
    parser.add_argument("--floor", action="store_true", help="a third column: the native routing in KEMI Python")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    failed = False
    with cpc.systems(work, args.floor) as (_, proxies):
        for kind in args.kind.split(","):
            found = []
            for proxy in proxies:
                done, per_message = timed_run(kind, work, proxy, args.calls, args.rate)
                failed |= done != args.calls or not per_message
                found.append(per_message)
            print(table(kind, *found), flush=True)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
