"""The building storm: a whole building behind one NAT address registers at once, twice.

    python3 bench/building.py [--phones 500] [--rounds 2] [--site|--no-site|--both] [--out DIR]

After a power cut every phone of a coworking building comes back within seconds and registers;
they all share the building's one public address. This step plays it in a real network
(tests/netns.py: the office behind a router that masquerades it to 198.51.100.2, the proxy and
rtpengine on the public side, the carriers beside them) with the product's own configuration
(pike at its defaults: PIKE_REQS per PIKE_WINDOW_S per source address, then BAN_S):

- every phone is one SIPp call of register.xml with CSV injection (bench/sipp_csv.py users.csv),
  `-t un`: one socket per call, so each phone has its own source port, and the router its own
  public port; phones come up at `register_rate` per second (500 spread over 5 s), UDP
  retransmissions included (the scenario's retrans); a phone that got no 200 registers again, as
  phones do, until all are or `limit_s` passed;
- the building registers `rounds` times (a second power cut: every phone again, new ports);
- meanwhile phones of the same building place included calls (call.xml, `-t un` as well) to the
  trunk, and one phone that was up before the storm (on a UPS) dials 112 in the middle of it;
- with the site declared (provisioning `sites:` with the router's address) the gate limits each
  phone instead of banning the address; without it, the address is a stranger's and pike bans it:
  the contrast is the point of running both.

Reports per variant: time until all registered in each round, failed registration attempts,
the calls placed meanwhile and their answers, the emergency call's answer, the bans the proxy
logged. Root only (network namespaces, nftables). Everything it started is stopped, and every
namespace deleted, on every path (tests/netns.Network).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gen_office, sipp_csv  # noqa: E402
from bench.cpu_per_call import project_env  # noqa: E402
from bench.load_sipp import LOAD, Load, Outcome  # noqa: E402
from tests import netns  # noqa: E402
from tests.harness import PYTHON, ROOT, Proxy, RedisServer  # noqa: E402
from tests.netns import CORE, MEDIA, PHONE_A, PHONE_B, ROUTER_WAN, TRUNK, Network  # noqa: E402

# the carriers' side: one address per role (gen_office.PEERS roles); added to the carrier namespace
EMERGENCY, CARRIER_IN, ANNOUNCER = "198.51.100.32", "198.51.100.33", "198.51.100.34"
PEERS = {"trunk": TRUNK, "reception": MEDIA, "emergency": EMERGENCY, "carrier-in": CARRIER_IN,
         "announcer": ANNOUNCER}
SITE = "building"
# office side: the storm's phones, the callers, the phone on a UPS (its own fixed port: its
# registration is the one its 112 call is recognised by)
STORM_IP, CALLERS_IP, UPS_IP, UPS_PORT = PHONE_A, PHONE_B, PHONE_B, 5070


# SIPp's sockets at once with -t un (one per call): phones registering, calls up, retransmissions
MAX_SOCKETS = 4000


class SitesUnsupported(RuntimeError):
    """`kemi.admin load` refused the `sites:` declaration: this tree has no site support yet."""


@dataclass
class BuildingSizes:
    phones: int = 500
    extensions: int = 20          # per company: 500 phones are 25 companies of the building
    register_rate: int = 100      # phones coming up per second
    rounds: int = 2
    call_rate: float = 3.0        # calls per second from the building meanwhile
    hold_ms: int = 1000
    limit_s: float = 60.0         # a round gives up on the phones still unregistered after this
    settle_s: float = 2.0         # between two rounds
    give_up_s: float = 16.0       # a phone (a call) that hears nothing for so long gives up this attempt


def office(sizes: BuildingSizes, site: bool) -> dict:
    """The building's companies (one more phone than the storm: the one on a UPS), and the site."""
    companies = -(-(sizes.phones + 1) // sizes.extensions)
    doc = gen_office.office(companies, sizes.extensions, PEERS)
    if site:
        doc["sites"] = [{"name": SITE, "cidrs": [f"{ROUTER_WAN}/32"]}]
    return doc


def injection(work: Path, doc: dict, phones: int) -> dict[str, Path]:
    """users.csv (the storm's phones), domestic.csv (their calls), ups.csv and sos.csv (the phone
    on a UPS: its registration, its 112 call)."""
    files, _ = sipp_csv.rows(doc, None)
    ups, storm = files["users"][0], files["users"][1:phones + 1]
    storm_users = {tuple(line[:2]) for line in storm}
    chosen = {"users": storm, "domestic": [line for line in files["domestic"] if tuple(line[:2]) in storm_users],
              "ups": [ups], "sos": [ups + ["112"]]}
    outdir = work / "csv"
    sipp_csv.write(outdir, chosen)
    return {name: outdir / f"{name}.csv" for name in chosen}


class Storm:
    """One variant (site declared or not): its network, Redis, proxy and SIPp processes."""

    def __init__(self, work: Path, sizes: BuildingSizes, site: bool, say=print):
        self.work = work
        self.sizes = sizes
        self.site = site
        self.say = say
        self.loads: list[Load] = []
        self.runs = 0

    def load(self, name: str, scenario: str, ip: str, net: Network, port: int = 5060, **kw) -> Load:
        self.runs += 1
        load = Load(f"{self.runs:02d}-{name}", LOAD / scenario, self.work, ip, port=port, netns=net.office,
                    **kw)
        self.loads.append(load)
        return load

    def run(self) -> dict:
        with Network("stm") as net:
            net.address(net.carrier, "eth0", EMERGENCY, CARRIER_IN, ANNOUNCER)
            redis = RedisServer(self.work, unix_socket=True).start()
            proxy = None
            try:
                doc = office(self.sizes, self.site)
                path = self.work / "office.yaml"
                path.write_text(json.dumps(doc))  # JSON is YAML: what `kemi.admin load` reads
                load = subprocess.run([PYTHON, "-m", "kemi.admin", "--redis-url", redis.url, "load", str(path)],
                                      cwd=ROOT, capture_output=True, text=True, timeout=300)
                if load.returncode != 0:
                    if self.site and "sites" in load.stderr:
                        raise SitesUnsupported(load.stderr.strip()[-400:])
                    raise RuntimeError(f"kemi.admin load failed: {load.stderr[-800:]}")
                files = injection(self.work, doc, self.sizes.phones)
                # the product as deployed (pike and BAN_S at their defaults), reached through the NAT
                proxy = Proxy(self.work, redis.socket_url(), ip=CORE, netns=net.core, port=5060,
                              SIP_CHILDREN="4", EMERGENCY_TRUNKS=f"udp:{EMERGENCY}:5060").start()
                return self.storm(net, proxy, files)
            finally:
                for load in self.loads:
                    load.stop()
                if proxy is not None:
                    proxy.stop()
                redis.stop()

    def storm(self, net: Network, proxy: Proxy, files: dict[str, Path]) -> dict:
        s = self.sizes
        target = f"{proxy.ip}:{proxy.port}"
        for name, ip in (("trunk", TRUNK), ("emergency", EMERGENCY)):
            # a retransmitted INVITE (the proxy's tm, when the answer was slow on a busy box) must not
            # abort a call the stand-in already answered: it would then ignore its ACK and BYE
            peer = Load(f"peer-{name}", LOAD / "answer.xml", self.work, ip, timeout_s=1200, netns=net.carrier,
                        args=["-set", "ring", "20", "-default_behaviors", "all,-abortunexp"])
            self.loads.append(peer)
            peer.start()
        ups = self.load("ups-register", "register.xml", UPS_IP, net, port=UPS_PORT, target=target,
                        inf=files["ups"], calls=1, rate=1, args=["-set", "expires", "3600"]).start().wait(30)
        if ups.completed != 1:
            raise RuntimeError(f"the phone on a UPS did not register: {ups.finals}")
        mark = proxy.mark()
        phones = sipp_csv_count(files["users"])
        calls = self.load("calls", "call.xml", CALLERS_IP, net, target=target, inf=files["domestic"],
                          calls=int(s.call_rate * (s.rounds * s.limit_s + 60)), rate=s.call_rate,
                          hold_ms=s.hold_ms, timeout_s=int(s.rounds * s.limit_s + 120),
                          args=["-t", "un", "-max_socket", str(MAX_SOCKETS),
                                "-recv_timeout", str(int(s.give_up_s * 1000))]).start()
        time.sleep(1.0)
        rounds, sos = [], None
        for n in range(1, s.rounds + 1):
            self.say(f"building{' (site declared)' if self.site else ''}: round {n}, {phones} phones behind "
                     f"{ROUTER_WAN} register at {s.register_rate}/s; calls at {s.call_rate:g}/s meanwhile")
            emergency = None
            if n == 1:
                # in the thick of it: after the first second of REGISTERs (the ban, if any, is in place)
                emergency = lambda: self.load("sos", "call.xml", UPS_IP, net, port=UPS_PORT, target=target,  # noqa: E731
                                              inf=files["sos"], calls=1, rate=1, hold_ms=500).start()
            result, sos_load = self.register_round(net, target, files["users"], f"round{n}", emergency)
            # where the proxy reaches each phone: the router's address, a port of its own per phone
            result["sources"] = len(received(proxy, files["users"]))
            rounds.append(result)
            if sos_load is not None:
                out = sos_load.wait(60)
                sos = {"final": next(iter(out.finals), None), "completed": out.completed}
            self.say(f"  round {n}: {result['registered']}/{phones} registered, all after "
                     f"{result['all_registered_s']} s; {result['failed_attempts']} failed attempts "
                     f"in {result['attempts']} passes")
            time.sleep(s.settle_s)
        calls.stop()  # SIGUSR1: no new call; the ones up finish
        during = calls.outcome(time.monotonic() - calls.started)
        log = proxy.log_since(mark)
        bans = re.findall(r"flood from (\S+): (\S+) banned", log)
        # a declared site's phone over its own limit is banned alone (kemi.sip.gate.site_flood)
        phone_bans = len(re.findall(r"\(site [^)]*\): that (?:port|user) banned", log))
        result = {"site": self.site, "phones": phones, "address": ROUTER_WAN, "rounds": rounds,
                  "calls": calls_summary(during), "emergency": sos,
                  "bans": len(bans), "banned": sorted({ip for _, ip in bans}), "phone_bans": phone_bans}
        self.say(f"  calls meanwhile: {during.completed}/{during.created} completed, answers {during.finals}; "
                 f"112 during the storm: {sos}; address bans logged: {len(bans)} {result['banned']}, "
                 f"phones banned alone: {phone_bans}")
        return result

    def register_round(self, net: Network, target: str, users: Path, name: str, during=None):
        """Every phone registers; those without a 200 again, until all are or limit_s. during():
        started one second in (the 112 call). (round figures, what during() returned)."""
        s = self.sizes
        lines = users.read_text().splitlines()[1:]
        pending, inf, passes, failed = lines, users, 0, 0
        started = time.monotonic()
        all_s, extra = None, None
        while pending and time.monotonic() - started < s.limit_s:
            pass_start = time.monotonic() - started
            passes += 1
            # each phone keeps its socket until the last one has registered: a phone that is up
            # keeps its port (SIPp would give a closed one's to a later phone: two phones on one port)
            up_ms = int((len(pending) / s.register_rate + 2) * 1000)
            load = self.load(f"{name}-{passes}", "register.xml", STORM_IP, net, target=target, inf=inf,
                             calls=len(pending), rate=s.register_rate, hold_ms=up_ms, args=["-t", "un", "-max_socket", str(MAX_SOCKETS), "-set", "expires", "3600",
                                   "-recv_timeout", str(int(s.give_up_s * 1000))],
                             timeout_s=int(s.limit_s + 30)).start()
            if during is not None:
                time.sleep(1.0)
                extra, during = during(), None
            out = load.wait(s.limit_s + 60)
            if out.created == 0:
                raise RuntimeError(f"SIPp {load.name} placed no call: {(load.dir / 'stderr.txt').read_text()[-600:]}")
            log = (load.dir / "calls.log").read_text() if (load.dir / "calls.log").exists() else ""
            ok = set(re.findall(r"^REG (\S+)@(\S+) 200", log, re.M))
            failed += len(pending) - len([line for line in pending if tuple(line.split(";")[:2]) in ok])
            pending = [line for line in pending if tuple(line.split(";")[:2]) not in ok]
            if not pending:
                all_s = round(pass_start + out.last_answer_s, 2)
            else:
                inf = load.dir / "retry.csv"
                inf.write_text("SEQUENTIAL\n" + "\n".join(pending) + "\n")
        return ({"phones": len(lines), "registered": len(lines) - len(pending), "all_registered_s": all_s,
                 "attempts": passes, "failed_attempts": failed}, extra)


def received(proxy: Proxy, users: Path) -> set[str]:
    """The router's address:port every phone of users.csv is saved with (one RPC per phone: all of
    usrloc at once is more than kamcmd's reply buffer)."""
    found = set()
    for line in users.read_text().splitlines()[1:]:
        user, domain = line.split(";")[:2]
        found |= set(re.findall(rf"Received: sip:({re.escape(ROUTER_WAN)}:[0-9]+)",
                                proxy.kamcmd("ul.lookup", "location", f"{user}@{domain}")))
    return found


def calls_summary(out: Outcome) -> dict:
    return {"created": out.created, "completed": out.completed, "failed": out.failed, "finals": out.finals}


def sipp_csv_count(path: Path) -> int:
    with open(path) as handle:
        return sum(1 for _ in handle) - 1


def run(work: Path, sizes: BuildingSizes, variants=(True, False), say=print) -> dict:
    """Each variant (site declared: True) in a network of its own; {"site": ..., "no_site": ...}.
    A variant that cannot run (no site support here) says why instead of its figures."""
    project_env()
    results = {}
    for site in variants:
        key = "site" if site else "no_site"
        sub = work / key
        sub.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            results[key] = Storm(sub, sizes, site, say).run()
        except SitesUnsupported as exc:
            say(f"building (site declared): not run, `sites:` is not supported here ({exc})")
            results[key] = {"error": f"sites unsupported: {exc}"}
        results[key]["duration_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=BuildingSizes.phones)
    parser.add_argument("--rounds", type=int, default=BuildingSizes.rounds)
    parser.add_argument("--register-rate", type=int, default=BuildingSizes.register_rate)
    parser.add_argument("--call-rate", type=float, default=BuildingSizes.call_rate)
    parser.add_argument("--limit", type=float, default=BuildingSizes.limit_s)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--site", action="store_true", help="only with the building declared as a site")
    which.add_argument("--no-site", action="store_true", help="only without it")
    parser.add_argument("--out", help="directory for building.json and the logs (default: a new temp dir)")
    args = parser.parse_args(argv)
    why = netns.available()
    if why:
        print(f"building: cannot run: {why}", file=sys.stderr)
        return 2
    sizes = BuildingSizes(phones=args.phones, rounds=args.rounds, register_rate=args.register_rate,
                          call_rate=args.call_rate, limit_s=args.limit)
    variants = (True,) if args.site else (False,) if args.no_site else (True, False)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="building-"))
    out.mkdir(parents=True, exist_ok=True)
    results = {"sizes": asdict(sizes), "argv": sys.argv[1:] if argv is None else argv} | run(out, sizes, variants)
    (out / "building.json").write_text(json.dumps(results, indent=1))
    print(f"results: {out / 'building.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
