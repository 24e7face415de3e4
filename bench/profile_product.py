"""Where the product's Kamailio CPU goes: py-spy on every process of the proxy during a load run.

    bench/.venv/bin/python bench/profile_product.py [--kind outbound] [--calls 3000] [--rate 100]
                                                    [--out /tmp/profile]

bench/.venv is a venv of its own (bench/requirements.txt: py-spy), not the embedded interpreter's.
Starts redis-server and the product as bench/cpu_per_call.py does, runs one kind of traffic, and
meanwhile `py-spy record --format raw` samples each Kamailio process (the embedded libpython3 is found
by py-spy in the kamailio binary's maps; --native adds the C frames of Kamailio). Writes one collapsed
stack file per process to --out and prints the hottest Python functions (self and inclusive samples).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cpu_per_call as cpc  # noqa: E402
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, admin  # noqa: E402

PY_SPY = Path(sys.prefix) / "bin" / "py-spy"


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return sorted(pids)


def summary(files: list[Path], top: int) -> None:
    own, incl = collections.Counter(), collections.Counter()
    total = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                incl[frame] += n
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", incl)):
        print(f"-- top {top} by {title}")
        for frame, n in counter.most_common(top):
            print(f"{n / total * 100:6.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="outbound", choices=list(cpc.KINDS))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--native", action="store_true", help="py-spy --native: Kamailio's C frames too")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    out = Path(args.out or work / "profile")
    out.mkdir(parents=True, exist_ok=True)
    cpc.project_env()
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
    admin(redis.url, "prepaid", "activate", "acme")
    admin(redis.url, "prepaid", "topup", "acme", "100000.00", "--ref", "bench-profile")
    admin(redis.url, "rate", "set", "+4915", "0.20", "--increments", "60/60")
    proxy = Proxy(work, redis.url, PIKE_REQS="1000000", SIP_CHILDREN="4", LOG_LEVEL="0",
                  KAMAILIO_SHM_MB="512", KEMI_VENV=cpc.kemi_venv(), **LOAD_MEDIA_SHARES)
    # the relay's ports as cpu_per_call's: with the default range and delete delay the relay runs
    # out and most calls are refused 503 (a profile of refusals)
    proxy.media.ports = cpc.MEDIA_PORTS[0]
    proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]
    proxy.start()
    spies = []
    try:
        seconds = max(5, int(args.calls / args.rate) - 2)
        result = []
        runner = threading.Thread(target=lambda: result.append(
            cpc.run(args.kind, work, proxy, args.calls, args.rate)))
        runner.start()
        time.sleep(2)
        for pid in group_pids(proxy.proc.pid):
            cmd = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
                   "--format", "raw", "--output", str(out / f"{pid}.txt"), "--nonblocking"]
            spies.append(subprocess.Popen(cmd + (["--native"] if args.native else []),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for spy in spies:
            spy.wait()
        runner.join()
        print(f"{args.kind}: (calls completed, Kamailio CPU s) = {result}")
        summary([p for p in out.glob("*.txt") if p.stat().st_size], args.top)
        print(f"collapsed stacks: {out}")
        return 0
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
