"""Flat lookups and the registration storm (issue 13), through the real proxy.

    bench/.venv/bin/python bench/scale.py [--sizes 1000,100000] [--calls 1000] [--rate 100]
                                          [--storm 10000] [--storm-rate 2000]

Flat lookups: for each size, a fresh redis-server gets size/20 companies x 20 extensions
(bench/many.py; 100,000 extensions take about 60-90 s to load), a fresh proxy, a warm-up of 1,000
calls, and --calls outbound calls (digest auth, to the trunk) placed by the 1,000 phones of 50
companies taken evenly over the whole office (SIPp CSV injection): the same callers and companies
whatever the size, their keys all over Redis's. Prints Kamailio CPU per call for each size. (A
company's first call in a worker process costs one more round trip, GET domain:<d>, at its challenge:
the process's copy of domain owners then knows it.)

Registration storm: --storm phones (storm/20 companies), a proxy just started (nothing registered),
every phone REGISTERs (401, then 200) offered at --storm-rate per second, while outbound calls run
at 20 per second from other phones of the same office. Prints how long until every phone got its
200 and how many calls failed meanwhile.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cpu_per_call as cpc  # noqa: E402
from bench.many import CALL_CSV_EDITS, register_storm, write_office  # noqa: E402
from tests.harness import ROOT, Proxy, RedisServer, Sipp  # noqa: E402

PER_COMPANY = 20


def spread_csv(csv: Path, out: Path, companies: int) -> Path:
    """Every phone of `companies` companies taken evenly over the whole office: the same number of
    callers and companies whatever the office's size, their keys spread over all of Redis's."""
    rows = csv.read_text().splitlines()[1:]
    domains = list(dict.fromkeys(row.split(";")[1] for row in rows))
    chosen = set(domains[::max(1, len(domains) // companies)][:companies])
    out.write_text("\n".join(["SEQUENTIAL"] + [r for r in rows if r.split(";")[1] in chosen]) + "\n")
    return out


def calls(proxy: Proxy, work: Path, csv: Path, count: int, rate: int, ip: str = "127.0.0.20"):
    """Outbound calls from the CSV's phones; (completed, the SIPp run)."""
    budget = count / rate + 60
    answer = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=cpc.TRUNK[0], port=cpc.TRUNK[1], calls=count)
    answer.start(timeout=budget)
    run = Sipp("call.xml", ["-inf", str(csv), "-set", "dial", "0145678901", "-d", "0"], work, ip=ip,
               calls=count, rate=rate, edits=CALL_CSV_EDITS).start(f"{proxy.ip}:{proxy.port}", timeout=budget)
    result = run.wait(budget + 30)
    answer.stop()
    return result.log.count("BYE 200")


def office(work: Path, phones: int) -> tuple[RedisServer, Path]:
    path = work / f"office-{phones}.yaml"
    csv = write_office(path, max(1, phones // PER_COMPANY), PER_COMPANY)
    redis = RedisServer(work).start()
    started = time.monotonic()
    try:  # the CLI as an operator runs it; 100,000 extensions take longer than tests.harness.admin allows
        subprocess.run([sys.executable, "-m", "kemi.admin", "--redis-url", redis.url, "load", str(path)],
                       cwd=ROOT, check=True, capture_output=True, timeout=900)
    except BaseException:
        redis.stop()
        raise
    print(f"  {phones} extensions loaded in {time.monotonic() - started:.0f} s", flush=True)
    return redis, csv


def proxy_for(work: Path, redis: RedisServer) -> Proxy:
    proxy = Proxy(work, redis.url, PIKE_REQS="1000000", SIP_CHILDREN=cpc.CHILDREN, LOG_LEVEL="0",
                  KAMAILIO_SHM_MB="512", KEMI_VENV=cpc.kemi_venv())
    proxy.media.ports = cpc.MEDIA_PORTS[0]
    return proxy.start()


def flat(work: Path, size: int, count: int, rate: int) -> None:
    redis, csv = office(work, size)
    proxy = proxy_for(work, redis)
    try:
        callers = spread_csv(csv, work / f"callers-{size}.csv", 50)
        calls(proxy, work, callers, 1000, rate)  # warm-up: every worker's copies (domain owners)
        before = cpc.group_cpu_s(proxy.proc.pid)
        done = calls(proxy, work, callers, count, rate)
        time.sleep(1.0)
        used = cpc.group_cpu_s(proxy.proc.pid) - before
        print(f"flat lookups: {size:>6} extensions: {done}/{count} calls, "
              f"{used / max(done, 1) * 1000:.3f} ms Kamailio CPU per call", flush=True)
    finally:
        proxy.stop()
        redis.stop()


def storm(work: Path, phones: int, rate: int) -> None:
    redis, csv = office(work, phones)
    proxy = proxy_for(work, redis)
    try:
        callers = spread_csv(csv, work / "storm-callers.csv", 10)
        outcome = {}
        during = threading.Thread(target=lambda: outcome.update(done=calls(proxy, work, callers, 400, 20)))
        during.start()
        time.sleep(1.0)
        seconds, ok = register_storm(proxy, work, csv, phones, rate)
        during.join()
        print(f"registration storm: {ok}/{phones} phones registered in {seconds:.1f} s (offered at {rate}/s); "
              f"calls meanwhile: {outcome.get('done', 0)}/400 completed", flush=True)
    finally:
        proxy.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--storm", type=int, default=10000, help="phones of the storm (0: none)")
    parser.add_argument("--storm-rate", type=int, default=2000)
    args = parser.parse_args()
    cpc.project_env()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    for size in [int(s) for s in args.sizes.split(",") if s]:
        flat(work, size, args.calls, args.rate)
    if args.storm:
        storm(work, args.storm, args.storm_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
