"""The candidate not chosen for the site's registrations, measured: dmq_usrloc (every proxy keeps every
contact in memory, each REGISTER replicated to the others over SIP, KDMQ) against the lone in-memory proxy.

    .venv/bin/python bench/site_dmq.py [--calls 500] [--rate 50]

Starts its own redis-server, one product proxy with LOCATION_STORE=memory, and two proxies A and B of a
DMQ site: the product's kamailio.cfg with dmq + dmq_usrloc added (a copy in the work directory: the
product does not carry them) and its KEMI routes behind a wrapper that hands KDMQ requests to
dmq.handle_message() before the product's routes (which would refuse the method). Measured:
- Kamailio CPU per REGISTER on the lone proxy, and on A + B together for REGISTERs sent to A;
- whether B finds the phone registered on A (a DID call at B), and what a DID call costs at A;
- Redis commands per REGISTER (none more than in memory: DMQ does not touch Redis).
What DMQ cannot give by itself, a restart of every proxy losing nothing, is not measured: it needs a
database behind it (bench/BENCHMARKS.md, Site). Stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_per_call import CALLEE, TRUNK, group_cpu_s, kemi_venv, phone, project_env, register, run  # noqa: E402
from bench.site_location import commandstats  # noqa: E402
from tests.harness import (LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, Sipp, admin, free_port,  # noqa: E402
                           in_netns, wait_for)

WRAPPER = '''
import os, sys
sys.path.insert(0, {root!r})
exec(compile(open({entry!r}).read(), {entry!r}, "exec"))
import KSR
_product_mod_init = mod_init


def mod_init():
    router = _product_mod_init()
    product_route = router.ksr_request_route

    def request_route(msg):
        if KSR.pv.get("$rm") == "KDMQ":
            return KSR.dmq.handle_message()
        return product_route(msg)
    router.ksr_request_route = request_route
    return router
'''


class DmqProxy(Proxy):
    """The product with dmq + dmq_usrloc, DMQ on ip:dmq_port, notifying `peer` (sip:ip:port)."""

    def __init__(self, workdir: Path, redis_url: str, ip: str, dmq_port: int, peer: str, **env: str):
        cfg = (ROOT / "kamailio.cfg").read_text()
        cfg = cfg.replace('listen=udp:SIP_ADDR:SIP_PORT\n', f'listen=udp:SIP_ADDR:SIP_PORT\nlisten=udp:{ip}:{dmq_port}\n', 1)
        cfg = cfg.replace('loadmodule "usrloc.so"\n', 'loadmodule "usrloc.so"\nloadmodule "dmq.so"\nloadmodule "dmq_usrloc.so"\n', 1)
        cfg = cfg.replace('cfgengine "python"', f'''modparam("dmq", "server_address", "sip:{ip}:{dmq_port}")
modparam("dmq", "notification_address", "{peer}")
modparam("dmq", "multi_notify", 0)
modparam("dmq_usrloc", "enable", 1)
modparam("dmq_usrloc", "replicate_socket_info", 1)
cfgengine "python"''', 1)
        self.cfg_path = workdir / f"kamailio-dmq-{dmq_port}.cfg"
        self.cfg_path.write_text(cfg)
        script = workdir / f"kemi-dmq-{dmq_port}.py"
        script.write_text(WRAPPER.format(root=str(ROOT), entry=str(ROOT / "kemi" / "kamailio_entry.py")))
        super().__init__(workdir, redis_url, ip=ip, KEMI_SCRIPT=str(script), **env)

    def start(self, wait: bool = True) -> "DmqProxy":
        import subprocess
        if self.media is not None and self.media.proc is None:
            self.media.start()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            in_netns(self.netns) + [str(ROOT / "scripts" / "kamailio.sh"), "-f", str(self.cfg_path), "-DD", "-E",
                                    "-m", "512", "-M", "16", "-P", str(self.workdir / f"kamailio-{self.port}.pid")],
            env=self.env(), stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        if wait:
            wait_for(self.answers_options, 20, f"Kamailio on {self.ip}:{self.port} (log: {self.log_path})")
        return self


def fresh_ports(proxy: Proxy, ports: tuple[int, int]) -> Proxy:
    """A relay range of its own that frees a call's ports at once (as bench/cpu_per_call.py's)."""
    proxy.media.ports = ports
    proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]
    return proxy


def cpu_of(proxies, action) -> float:
    before = sum(group_cpu_s(p.proc.pid) for p in proxies)
    action()
    time.sleep(1.0)
    return sum(group_cpu_s(p.proc.pid) for p in proxies) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=int, default=50)
    args = parser.parse_args()
    project_env()
    work = Path(tempfile.mkdtemp(prefix="bench-dmq-"))
    redis = RedisServer(work).start()
    admin(redis.url, "load", str(ROOT / "redis-schema" / "demo-office.yaml"))
    common = {"SIP_CHILDREN": "4", "LOG_LEVEL": "1", "KEMI_VENV": kemi_venv(), "PIKE_REQS": "1000000",
              "NATPING_S": "3600", **LOAD_MEDIA_SHARES}
    callee = phone(CALLEE)
    started: list[Proxy] = []
    try:
        lone = fresh_ports(Proxy(work, redis.url, **common), (10000, 17499)).start()
        started.append(lone)
        n = args.calls
        used = cpu_of([lone], lambda: register(work, lone, callee, calls=n, rate=args.rate, timeout=n / args.rate + 30))
        print(f"memory  CPU per REGISTER {used / n * 1000:.3f} ms", flush=True)
        done, used = run("inbound", work, lone, n, args.rate)
        print(f"memory  CPU per DID call {used / done * 1000:.3f} ms ({done} done)", flush=True)
        lone.stop()
        a_port, b_port = free_port("127.0.0.1"), free_port("127.0.0.12")
        a = fresh_ports(DmqProxy(work, redis.url, "127.0.0.1", a_port, f"sip:127.0.0.12:{b_port}", **common),
                        (17500, 24999)).start()
        started.append(a)
        b = fresh_ports(DmqProxy(work, redis.url, "127.0.0.12", b_port, f"sip:127.0.0.1:{a_port}", **common),
                        (25000, 32767)).start()
        started.append(b)
        time.sleep(3)  # the nodes find each other (KDMQ notification)
        client = redis.client()
        client.config_resetstat()
        used_a = group_cpu_s(a.proc.pid)
        used = cpu_of([a, b], lambda: register(work, a, callee, calls=n, rate=args.rate, timeout=n / args.rate + 30))
        used_a = group_cpu_s(a.proc.pid) - used_a
        stats = commandstats(client)
        stats.pop("config|resetstat", None)
        print(f"dmq     CPU per REGISTER on A {used_a / n * 1000:.3f} ms, A + B {used / n * 1000:.3f} ms; "
              f"Redis commands per REGISTER {sum(stats.values()) / n:.1f} {stats}", flush=True)
        seen = b.kamcmd("ul.lookup", "location", callee.aor)
        print(f"dmq     B's copy of the contact registered on A: {' '.join(seen.split())[:300]}", flush=True)
        done, used = run("inbound", work, a, n, args.rate)
        print(f"dmq     CPU per DID call at A {used / done * 1000:.3f} ms ({done} done)", flush=True)
    finally:
        for proxy in started:
            proxy.stop()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
