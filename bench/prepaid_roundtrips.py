"""Redis commands and round trips of one prepaid call over its whole life, from INFO commandstats deltas.

    .venv/bin/python bench/prepaid_roundtrips.py

Starts its own redis-server and Kamailio on free loopback ports with the test office, activates
initech's Prepaid Account, then places one prepaid call (2001 -> a German mobile: challenge,
authenticated INVITE, balance announcement, trunk, 1 s of talk, BYE) and one included call for
comparison. Between CONFIG RESETSTAT and INFO commandstats only the proxy talks to Redis: the
bench waits for the call record with a plain sleep, not by polling Redis.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ROOT, Phone, Proxy, RedisServer, Sipp, admin, free_port, passwords  # noqa: E402


def commandstats(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


def one_call(work: Path, proxy: Proxy, redis, caller: Phone, dialled: str, peers: list[Sipp]) -> dict[str, int]:
    for peer in peers:
        peer.start(timeout=30)
    time.sleep(0.3)
    client = redis.client()
    client.config_resetstat()
    call = Sipp("call.xml", [*caller.auth_args(), "-set", "dial", dialled, "-d", "1000"], work,
                ip=caller.ip, port=caller.port).start(f"{proxy.ip}:{proxy.port}").wait()
    assert "BYE 200" in call.log, call.log + call.stdout
    time.sleep(1.0)  # the record is written at the BYE; no Redis polling in the measured window
    stats = commandstats(client)
    stats.pop("config|resetstat", None)
    for peer in peers:
        peer.wait()
    return stats


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = RedisServer(work).start()
    office = ROOT / "tests" / "sip" / "office.yaml"
    admin(redis.url, "load", str(office))
    admin(redis.url, "prepaid", "activate", "initech")
    admin(redis.url, "prepaid", "topup", "initech", "10.00", "--ref", "bench-1")
    admin(redis.url, "rate", "set", "+4915", "0.20", "--increments", "60/60")
    proxy = Proxy(work, redis.url, LOG_LEVEL="1").start()
    try:
        caller = Phone("2001", "initech.test", passwords(office)[("2001", "initech.test")], "127.0.0.30",
                       free_port("127.0.0.30"))
        runs = {
            "prepaid (004915112345678)": one_call(work, proxy, redis, caller, "004915112345678", [
                Sipp("announce.xml", [], work, ip="127.0.0.7", port=5060),
                Sipp("answer.xml", ["-set", "ring", "100"], work, ip="127.0.0.2", port=5060)]),
            "included (0612345678)": one_call(work, proxy, redis, caller, "0612345678", [
                Sipp("answer.xml", ["-set", "ring", "100"], work, ip="127.0.0.2", port=5060)]),
        }
        for name, stats in runs.items():
            detail = ", ".join(f"{cmd} {n}" for cmd, n in sorted(stats.items()))
            print(f"{name}: {sum(stats.values())} Redis commands over the call's life: {detail}")
        return 0
    finally:
        proxy.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
