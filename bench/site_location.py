"""What the site's shared location costs (kamailio.cfg "Site": usrloc db_mode 3 on db_redis) against the
in-memory one, per REGISTER and per call: Redis commands (INFO commandstats deltas: db_redis sends each
on its own, one round trip each) and Kamailio CPU (bench/cpu_per_call.py's measure), plus what the
expiry timer costs per tick for a given number of contacts.

    .venv/bin/python bench/site_location.py [--calls 500] [--rate 50] [--contacts 10000]

Starts its own redis-server and two product proxies on free loopback ports with the demo office: one
with LOCATION_STORE=memory, one with LOCATION_STORE=redis (SITE_PROXIES set, so it also saves its Path).
Each is measured alone (the other idle):
- Redis commands per REGISTER (401 + authenticated REGISTER) and per inbound DID call to a registered
  phone (the lookup), over 20 of each, between CONFIG RESETSTAT and INFO commandstats;
- CPU per REGISTER and per inbound DID call, --calls at --rate;
- the expiry timer (redis proxy only): --contacts location rows written straight into Redis as db_redis
  lays them out, then the commands of one timer tick (LOCATION_TIMER_S=10 here) and Redis's CPU for them.
Stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_per_call import CALLEE, TRUNK, phone, project_env, kemi_venv, register, run  # noqa: E402
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, Sipp, admin  # noqa: E402

SAMPLES = 20


def commandstats(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in client.info("commandstats").items()}


def per_item(client, action, count: int) -> tuple[float, dict[str, float]]:
    """(commands per item, {command: per item}) of count runs of action()."""
    client.config_resetstat()
    action()
    time.sleep(1.0)  # call records and dialog events land; nothing polls Redis meanwhile
    stats = commandstats(client)
    stats.pop("config|resetstat", None)
    return sum(stats.values()) / count, {k: v / count for k, v in sorted(stats.items())}


def did_calls(work: Path, proxy: Proxy, count: int) -> None:
    callee = phone(CALLEE)
    answer = Sipp("answer.xml", ["-set", "ring", "0"], work, ip=callee.ip, port=callee.port, calls=count).start(timeout=60)
    Sipp("inbound.xml", ["-s", "+33698000001", "-set", "from_domain", "carrier.example", "-set", "dial",
                         "+33142685302", "-set", "company", "", "-d", "0"], work, ip=TRUNK[0], port=TRUNK[1],
         calls=count, rate=10).start(f"{proxy.ip}:{proxy.port}", timeout=60).wait(90)
    answer.stop()


def timer_tick(client, contacts: int) -> tuple[dict[str, int], float]:
    """Commands of one usrloc timer tick with `contacts` rows in Redis, and Redis's CPU seconds for them."""
    now = time.time()
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now + 3600))
    pipe = client.pipeline(transaction=False)
    for i in range(contacts):
        ruid = f"bench-{i}"
        key = f"location:entry::{ruid}"
        pipe.hset(key, mapping={"ruid": ruid, "username": f"u{i}", "domain": "bench.test",
                                "contact": f"sip:u{i}@192.0.2.1:5060", "expires": expires, "partition": "0",
                                "keepalive": "0", "server_id": "9", "path": "", "received": "", "q": "-1",
                                "callid": ruid, "cseq": "1", "flags": "0", "cflags": "0", "socket": "",
                                "methods": "-1", "last_modified": expires, "user_agent": "bench", "reg_id": "0",
                                "instance": "", "connection_id": "-1"})
        pipe.sadd(f"location:usrdom::u{i}:bench.test", key)
        pipe.sadd("location:timer::0:0", key)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    # one whole tick inside the window: from a reset just after a tick to just after the next one
    client.config_resetstat()
    time.sleep(10.5)
    cpu0 = client.info("cpu")
    client.config_resetstat()
    time.sleep(10.5)
    stats = commandstats(client)
    cpu1 = client.info("cpu")
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    used = (cpu1["used_cpu_sys"] + cpu1["used_cpu_user"]) - (cpu0["used_cpu_sys"] + cpu0["used_cpu_user"])
    return stats, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--contacts", type=int, default=10000)
    args = parser.parse_args()
    project_env()
    work = Path(tempfile.mkdtemp(prefix="bench-site-"))
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
    client = redis.client()
    common = {"SIP_CHILDREN": "4", "LOG_LEVEL": "0", "KAMAILIO_SHM_MB": "512", "KEMI_VENV": kemi_venv(),
              "PIKE_REQS": "1000000", "NATPING_S": "3600", **LOAD_MEDIA_SHARES}
    systems = {"memory": {"LOCATION_STORE": "memory"},
               "redis": {"LOCATION_STORE": "redis", "SERVER_ID": "1", "SITE_PROXIES": "127.0.0.250",
                         "LOCATION_TIMER_S": "10"}}
    results: dict[str, dict] = {}
    try:
        for name, env in systems.items():
            proxy = Proxy(work, redis.url, **common, **env)
            # a relay range of its own that frees a call's ports at once (as bench/cpu_per_call.py's)
            proxy.media.ports = (10000, 17499) if name == "memory" else (17500, 24999)
            proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]
            proxy.start()
            try:
                callee = phone(CALLEE)
                reg, reg_cmds = per_item(client, lambda: register(work, proxy, callee, calls=SAMPLES), SAMPLES)
                call, call_cmds = per_item(client, lambda: did_calls(work, proxy, SAMPLES), SAMPLES)
                cpu, completed = {}, {}
                for kind in ("register", "inbound"):
                    done, used = run(kind, work, proxy, args.calls, args.rate)
                    cpu[kind] = used / done * 1000 if done else float("nan")
                    completed[kind] = done
                results[name] = {"reg": reg, "reg_cmds": reg_cmds, "call": call, "call_cmds": call_cmds, "cpu": cpu}
                print(f"{name:6s} Redis commands per REGISTER {reg:.1f} {reg_cmds}", flush=True)
                print(f"{name:6s} Redis commands per DID call {call:.1f} {call_cmds}", flush=True)
                print(f"{name:6s} CPU ms: " + ", ".join(f"{k} {v:.3f} ({completed[k]}/{args.calls} done)"
                                                         for k, v in cpu.items()), flush=True)
                if name == "redis":
                    stats, used = timer_tick(redis.client(1), args.contacts)  # LOCATION_REDIS_DB
                    print(f"redis  expiry timer, one tick with {args.contacts} contacts: {sum(stats.values())} "
                          f"commands {stats}; Redis CPU {used * 1000:.0f} ms", flush=True)
            finally:
                proxy.stop()
        m, r = results["memory"], results["redis"]
        print(f"shared location adds {r['reg'] - m['reg']:.1f} Redis commands per REGISTER, "
              f"{r['call'] - m['call']:.1f} per DID call; CPU per REGISTER x{r['cpu']['register'] / m['cpu']['register']:.2f}, "
              f"per inbound call x{r['cpu']['inbound'] / m['cpu']['inbound']:.2f}")
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
