"""Load benchmark: the product against the native baseline, same box, same run, under 10 minutes.

    bench/.venv/bin/python bench/load.py [--companies 500] [--extensions 20] [--out DIR] [--netns]
    bench/.venv/bin/python bench/load.py --smoke          # seconds: every phase, tiny sizes

(bench/.venv: `python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/requirements.txt`;
the project's .venv runs it too, without the plot.) It starts its own redis-server, the product
(kamailio.cfg + kemi/, through scripts/kamailio.sh) and the native baseline
(bench/native/kamailio-native.cfg) on 127.0.0.1, and SIPp peers on fixed loopback addresses, one
per role (bench/gen_office.py PEERS: trunk 127.0.0.2, receptionist .3, emergency .5, carrier .6,
announcer .7; callers .10, registered phones .11, the storm's phones .12), all on port 5060:
nothing else may use them. `--netns` runs it all in a network namespace of its own (root). Phases,
with progress on the terminal:

1. provisioning: N companies x M extensions (bench/gen_office.py) through `kemi.admin load`, SIPp
   injection files from it (bench/sipp_csv.py), the native keys (bench/native/provision.py); and
   1,000 extensions in a database of their own, for a second product instance (step 6);
2. registration: every phone registers with each system (register.xml, 401 then 200);
3. call types: a burst of every call type of the user guide through the product (and the
   included domestic call through the native config);
4. zero-failure call rate: included domestic calls stepped up, product and native interleaved at
   each step, until calls fail; post-dial delay p50/p99 and Kamailio CPU per call at each step;
5. registration storm: each system restarted, then every phone re-registers at once while
   included calls run: time until all are registered, calls failed meanwhile;
6. flat lookups: the database of step 1 grows to 100,000 extensions; Kamailio CPU per included call
   of the product serving it and of the product serving the 1,000, alternately;
7. with `--building N` (root): the building storm of bench/building.py, N phones (500) behind one
   NAT address registering twice while the building's calls and a 112 call go on, with the building
   declared as a site and without (the address then gets banned); `--only-building` runs only this
   step. It runs in network namespaces of its own, outside the time budget of steps 1-6.

Writes DIR/results.json, DIR/load.png (with matplotlib) and the logs; exit 0 when every phase
ran (the targets are judged in BENCHMARKS.md, not by the exit code), 1 when a phase could not run.
Everything it started is stopped at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gen_office, sipp_csv  # noqa: E402
from bench.cpu_per_call import group_cpu_s, project_env  # noqa: E402
from bench.load_report import markdown  # noqa: E402
from bench.load_sipp import LOAD, Load, Outcome  # noqa: E402
from bench.native.provision import provision as native_provision  # noqa: E402
from bench.native.proxy import NATIVE_DEFAULT_RULES, NativeProxy  # noqa: E402
from tests.harness import LOAD_MEDIA_SHARES, ROOT, PYTHON, Proxy, RedisServer, admin  # noqa: E402

PEERS = gen_office.PEERS
CALLERS, PHONES, STORM = "127.0.0.10", "127.0.0.11", "127.0.0.12"
SMALL_DB = 1  # the database of the 1,000-extension product instance (flat lookups)
CALL_TYPES = {  # injection file -> (scenario, caller address)
    "internal": ("call.xml", CALLERS), "domestic": ("call.xml", CALLERS),
    "international": ("call.xml", CALLERS), "prepaid": ("call.xml", CALLERS),
    "emergency": ("call.xml", CALLERS), "did": ("carrier-call.xml", PEERS["carrier-in"]),
    "reception": ("carrier-call.xml", PEERS["carrier-in"]),
}


@dataclass
class Sizes:
    companies: int = 500
    extensions: int = 20
    flat_small: int = 50           # companies in the 1,000-extension measurement
    flat_large: int = 5000         # companies in the 100,000-extension one
    flat_calls: int = 900
    flat_rate: int = 60
    prepaid_companies: int = 3
    mix_calls: int = 100
    mix_rate: int = 50
    register_rate: int = 500
    rates: tuple = (50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000)
    step_s: float = 8.0
    storm_call_rate: int = 50
    hold_ms: int = 500
    ring_ms: int = 20              # callee rings before the 200: a 180 relayed after the 200 would fail the call
    budget_s: float = 570.0
    restart_s: float = 15.0        # a restart and what a storm needs beyond its registrations
    storm_limit_s: float = 60.0    # phones that failed register again until all are, at most this long


SMOKE = Sizes(companies=4, extensions=5, flat_small=2, flat_large=6, flat_calls=20, flat_rate=20,
              prepaid_companies=1, mix_calls=4, mix_rate=20, register_rate=100, rates=(10, 20),
              step_s=1.5, storm_call_rate=10, hold_ms=100, budget_s=55.0, restart_s=4.0, storm_limit_s=8.0)


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    flat: dict = field(default_factory=dict)
    register: dict = field(default_factory=dict)
    mix: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    zero_failure_rate: dict = field(default_factory=dict)
    storm: dict = field(default_factory=dict)
    building: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def summary(out: Outcome) -> dict:
    """The figures of one caller process, as results.json keeps them."""
    return {"created": out.created, "completed": out.completed, "failed": out.failed,
            "finals": out.finals, "elapsed_s": round(out.elapsed_s, 2),
            "pdd_p50_ms": out.pdd(50), "pdd_p99_ms": out.pdd(99), "pdd_samples": len(out.pdd_ms)}


class Bench:
    """One run: the processes it started, the files it wrote, the clock of its progress lines."""

    def __init__(self, sizes: Sizes, out: Path):
        self.sizes = sizes
        self.out = out
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.results = Results()
        self.redis: RedisServer | None = None
        self.systems: dict[str, Proxy] = {}
        self.small: Proxy | None = None
        self.peers: list[Load] = []
        self.runs = 0

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def left_s(self) -> float:
        return self.sizes.budget_s - (time.monotonic() - self.t0)

    # -- processes ---------------------------------------------------------------------------
    def start(self) -> None:
        project_env()
        self.redis = RedisServer(self.work, default_extra=NATIVE_DEFAULT_RULES).start()
        common = {"SIP_CHILDREN": "4", "LOG_LEVEL": "1", "KAMAILIO_SHM_MB": "1024",
                  # Kamailio embeds Debian's Python with the project's venv, whatever runs this script
                  "KEMI_VENV": os.environ.get("KEMI_VENV") or str(ROOT / ".venv")}
        # every call of a run comes from one SIPp address: a load test, not a flood (pike would ban it),
        # and from one phone of one company: a load test, not one tenant taking the relay
        common.update(LOAD_MEDIA_SHARES)
        self.systems["product"] = Proxy(self.work, self.redis.url, PIKE_REQS="100000000", **common)
        self.systems["native"] = NativeProxy(self.work, self.redis.url, (PEERS["trunk"], 5060), **common)
        # the product again, on a database of its own that keeps 1,000 extensions: the flat-lookup
        # measurement alternates between it and the product serving 100,000 (same time, same machine)
        self.small = Proxy(self.work, self.redis.url_of(SMALL_DB), PIKE_REQS="100000000", **common)
        # each proxy anchors media in an rtpengine of its own (tests.harness.MediaRelay), with a port
        # range of its own, below the kernel's ephemeral range (32768-60999), where free_port() picks
        # the proxies' SIP ports: a relay that binds a proxy's SIP port takes its requests (seen).
        # rtpengine keeps a deleted call's ports for its delete-delay (30 s): at hundreds of calls/s
        # that exhausts any range and calls would fail for want of ports, not of proxy, so the relays
        # of this run free them at once (the same for both systems)
        for proxy, ports in ((self.systems["product"], (10000, 19999)), (self.small, (20000, 22999)),
                             (self.systems["native"], (23000, 32767))):
            if proxy.media is not None:
                proxy.media.ports = ports
                proxy.media.command = lambda base=proxy.media.command: base() + ["--delete-delay=0"]

    def proxy(self, system: str) -> Proxy:
        return self.small if system == "product-small" else self.systems[system]

    def peer(self, name: str, scenario: str, ip: str, *args: str) -> Load:
        scen = LOAD / scenario if (LOAD / scenario).exists() else ROOT / "sipp-scenarios" / scenario
        load = Load(name, scen, self.work, ip, args=list(args), timeout_s=1200).start()
        self.peers.append(load)
        return load

    def caller(self, name: str, system: str, scenario: str, ip: str, inf: Path, calls: int, rate: float,
               *args: str, hold_ms: int | None = None) -> Load:
        self.runs += 1
        proxy = self.proxy(system)
        return Load(f"{self.runs:03d}-{name}-{system}", LOAD / scenario, self.work, ip,
                    target=f"{proxy.ip}:{proxy.port}", inf=inf, calls=calls, rate=rate,
                    hold_ms=self.sizes.hold_ms if hold_ms is None else hold_ms, args=list(args),
                    timeout_s=int(calls / max(rate, 1) + 120))

    def stop(self) -> None:
        for load in self.peers:
            load.stop()
        for proxy in [*self.systems.values(), self.small]:
            if proxy is not None:
                proxy.stop()
        if self.redis:
            self.redis.stop()

    def cpu_s(self, system: str) -> float:
        return group_cpu_s(self.proxy(system).proc.pid)

    def run(self, load: Load, timeout: float) -> Outcome:
        self.peers.append(load)
        return load.start().wait(timeout)


# -- data ------------------------------------------------------------------------------------------
def load_office(b: Bench, first: int, last: int, dids: bool = True, db: int = 0) -> tuple[Path, float]:
    """Companies first..last through `kemi.admin load`, as an operator runs it; the seconds it took."""
    path = b.work / f"office-{first}-{last}.yaml"
    gen_office.write(str(path), last, b.sizes.extensions, first, dids=dids)
    started = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "kemi.admin", "--redis-url", b.redis.url_of(db), "load", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"kemi.admin load {path} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return path, time.monotonic() - started


def injection_files(b: Bench, name: str, companies: int, prepaid: set[str] | None = None,
                    order: str = "SEQUENTIAL") -> Path:
    files, _ = sipp_csv.rows(gen_office.office(companies, b.sizes.extensions), prepaid)
    outdir = b.work / f"csv-{name}"
    sipp_csv.write(outdir, files, order)
    return outdir


def prepaid_setup(b: Bench) -> set[str]:
    """The first companies get an active Prepaid Account with money; German mobiles get a rate."""
    ids = {gen_office.company_id(i) for i in range(1, b.sizes.prepaid_companies + 1)}
    for co in sorted(ids):
        admin(b.redis.url, "prepaid", "activate", co)
        admin(b.redis.url, "prepaid", "topup", co, "1000000.00", "--ref", f"load-{co}")
    admin(b.redis.url, "rate", "set", "+4915", "0.20", "--increments", "60/60")
    return ids


# -- phases ----------------------------------------------------------------------------------------
def flat(b: Bench) -> None:
    """Kamailio CPU per included call with 1,000 and with 100,000 extensions provisioned, callers drawn
    at random from all of them: two product instances (one per database), alternately, twice."""
    sizes = {"small": ("product-small", b.sizes.flat_small), "large": ("product", b.sizes.flat_large)}
    calls, rate = b.sizes.flat_calls // 2, b.sizes.flat_rate
    files = {label: injection_files(b, f"flat-{label}", companies, order="RANDOM") / "domestic.csv"
             for label, (_, companies) in sizes.items()}
    totals = {label: [0.0, []] for label in sizes}
    for label, (system, _) in sizes.items():  # warm-up: each worker's first calls fill its caches
        b.run(b.caller(f"warm-{label}", system, "call.xml", CALLERS, files[label], rate, rate), 60)
    for _ in range(2):
        for label, (system, _) in sizes.items():
            before = b.cpu_s(system)
            out = b.run(b.caller(f"flat-{label}", system, "call.xml", CALLERS, files[label], calls, rate),
                        calls / rate + 90)
            time.sleep(1.0)  # the dialog-end events (call records) run after the BYE
            totals[label][0] += b.cpu_s(system) - before
            totals[label][1].append(out)
    for label, (system, companies) in sizes.items():
        used, outs = totals[label]
        done = sum(o.completed for o in outs)
        merged = Outcome(sum(o.created for o in outs), done, {}, [v for o in outs for v in o.pdd_ms],
                         sum(o.elapsed_s for o in outs), sum(o.sipp_failed for o in outs))
        for o in outs:
            for code, n in o.finals.items():
                merged.finals[code] = merged.finals.get(code, 0) + n
        row = summary(merged) | {"extensions": companies * b.sizes.extensions,
                                 "cpu_ms_per_call": round(used / done * 1000, 3) if done else None}
        b.results.flat[label] = row
        b.say(f"flat lookups, {row['extensions']} extensions: {done}/{merged.created} calls, "
              f"Kamailio CPU {row['cpu_ms_per_call']} ms/call, post-dial delay p50 {merged.pdd(50)} ms")


def register_rounds(b: Bench, name: str, system: str, ip: str, users_csv: Path, rate: float,
                    limit_s: float) -> dict:
    """Phones register; those without a 200 register again, as phones retry, until all are or limit_s."""
    lines = users_csv.read_text().splitlines()[1:]
    pending, inf, rounds = lines, users_csv, []
    started = time.monotonic()
    all_s = None
    while pending and time.monotonic() - started < limit_s:
        round_start = time.monotonic() - started
        load = b.caller(name, system, "register.xml", ip, inf, len(pending), rate, "-set", "expires", "3600",
                        hold_ms=0)
        out = b.run(load, limit_s + 60)
        log = (load.dir / "calls.log").read_text() if (load.dir / "calls.log").exists() else ""
        ok = set(re.findall(r"^REG (\S+)@(\S+) 200", log, re.M))
        pending = [line for line in pending if tuple(line.split(";")[:2]) not in ok]
        rounds.append(summary(out))
        if not pending:
            all_s = round(round_start + out.last_answer_s, 2)
        else:
            inf = load.dir / "retry.csv"
            inf.write_text("SEQUENTIAL\n" + "\n".join(pending) + "\n")
    first = rounds[0] if rounds else {}
    return {"phones": len(lines), "registered": len(lines) - len(pending), "all_registered_s": all_s,
            "rounds": len(rounds), "first_round": first,
            "first_round_per_s": round(first["completed"] / first["elapsed_s"], 1) if first.get("elapsed_s") else None}


def register_all(b: Bench, csv_dir: Path) -> None:
    for system in b.systems:
        before = b.cpu_s(system)
        reg = register_rounds(b, "register", system, PHONES, csv_dir / "users.csv", b.sizes.register_rate,
                              b.sizes.storm_limit_s)
        # per phone registered: the retries of a second round are part of what registering cost
        reg["cpu_ms_per_registration"] = round((b.cpu_s(system) - before) / max(reg["registered"], 1) * 1000, 3)
        b.results.register[system] = reg
        b.say(f"registration, {system}: {reg['registered']}/{reg['phones']} phones registered, Kamailio CPU "
              f"{reg['cpu_ms_per_registration']} ms each "
              f"(offered {b.sizes.register_rate}/s; first round {reg['first_round']['completed']} in "
              f"{reg['first_round']['elapsed_s']} s; all after {reg['all_registered_s']} s, {reg['rounds']} rounds)")


def sipp_csv_count(path: Path) -> int:
    with open(path) as handle:
        return sum(1 for _ in handle) - 1


def call_types(b: Bench, csv_dir: Path) -> None:
    """Every call type through the product; the included domestic call through the native config too."""
    runs = [(kind, "product") for kind in CALL_TYPES] + [("domestic", "native")]
    for kind, system in runs:
        scenario, ip = CALL_TYPES[kind]
        inf = csv_dir / f"{kind}.csv"
        calls = min(b.sizes.mix_calls, sipp_csv_count(inf))
        out = b.run(b.caller(kind, system, scenario, ip, inf, calls, b.sizes.mix_rate), calls / b.sizes.mix_rate + 90)
        b.results.mix[f"{kind}/{system}"] = summary(out)
        b.say(f"{kind:13s} {system:7s} {out.completed}/{out.created} completed, post-dial delay p50 "
              f"{out.pdd(50)} ms p99 {out.pdd(99)} ms; answers {out.finals}")


def step_rate(b: Bench, csv_dir: Path, reserve_s: float) -> None:
    """Included domestic calls at rising rates, product and native alternately, until each fails.

    A failing step is run once more before the system is out: one stray loss on a shared 2-core
    machine should not decide the figure; two in a row do.
    """
    alive = {system: True for system in b.systems}
    best = {system: 0 for system in b.systems}
    for rate in b.sizes.rates:
        for system in [s for s in b.systems if alive[s]]:
            for attempt in (1, 2):
                if b.left_s() < reserve_s + 2 * b.sizes.step_s + 5:
                    b.say(f"zero-failure rate: time budget reached at {rate}/s, stepping stops")
                    b.results.errors.append(f"step phase stopped by the time budget at {rate}/s")
                    b.results.zero_failure_rate = dict(best)
                    return
                if one_step(b, csv_dir, system, rate, attempt):
                    best[system] = rate
                    break
            else:
                alive[system] = False
        if not any(alive.values()):
            break
    b.results.zero_failure_rate = dict(best)


def one_step(b: Bench, csv_dir: Path, system: str, rate: int, attempt: int) -> bool:
    """One step of included calls at `rate` through `system`: whether every call completed at that rate."""
    calls = int(rate * b.sizes.step_s)
    before = b.cpu_s(system)
    out = b.run(b.caller(f"step{rate}", system, "call.xml", CALLERS, csv_dir / "domestic.csv", calls, rate),
                b.sizes.step_s + 90)
    used = b.cpu_s(system) - before
    sustained = out.failed == 0 and out.achieved_rate >= 0.95 * rate
    b.results.steps.append(summary(out) | {
        "system": system, "offered": rate, "attempt": attempt, "achieved": round(out.achieved_rate, 1),
        "sustained": sustained, "load1": round(os.getloadavg()[0], 2),
        "cpu_ms_per_call": round(used / out.completed * 1000, 3) if out.completed else None})
    b.say(f"{system:7s} {rate:5d}/s offered, {out.achieved_rate:6.1f}/s achieved: "
          f"{out.completed}/{out.created} completed, post-dial delay p50 {out.pdd(50)} ms "
          f"p99 {out.pdd(99)} ms, CPU {b.results.steps[-1]['cpu_ms_per_call']} ms/call"
          f"{'' if sustained else '  <- failing' + (', once more' if attempt == 1 else '')}")
    return sustained


def storm(b: Bench, csv_dir: Path) -> None:
    """Each system restarted, then every phone re-registers at once (those that fail retry) while
    included calls go on: how long until all are registered, and which calls failed meanwhile."""
    users = sipp_csv_count(csv_dir / "users.csv")
    for system, proxy in b.systems.items():
        proxy.stop()
        proxy.start()
        b.say(f"storm, {system}: restarted; {users} phones re-register at once, calls at "
              f"{b.sizes.storm_call_rate}/s meanwhile")
        calls = b.caller("storm-calls", system, "call.xml", CALLERS, csv_dir / "domestic.csv",
                         b.sizes.storm_call_rate * 600, b.sizes.storm_call_rate)
        b.peers.append(calls.start())
        time.sleep(1.0)
        reg = register_rounds(b, "storm", system, STORM, csv_dir / "users.csv", users, b.sizes.storm_limit_s)
        calls.stop()  # SIGUSR1: SIPp starts no new call and lets the running ones finish
        during = calls.outcome(time.monotonic() - calls.started)
        b.results.storm[system] = reg | {"calls": summary(during)}
        b.say(f"storm, {system}: {reg['registered']}/{users} registered, all after {reg['all_registered_s']} s "
              f"({reg['rounds']} rounds; first round {reg['first_round']['completed']}); calls meanwhile "
              f"{during.completed}/{during.created} completed, answers {during.finals}")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())

    def first_line(*cmd: str) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return next((line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()), "")
        except OSError:
            return ""
    commit = first_line("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = first_line("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cpu": cpu,
            "cores": os.cpu_count(), "kernel": platform.release(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
            "kamailio": first_line("/usr/sbin/kamailio", "-v"), "sipp": first_line("sipp", "-v"),
            "redis": first_line("redis-server", "--version"), "commit": commit + (" (modified)" if dirty else "")}


def flat_large_s(b: Bench) -> float:
    """Seconds the large flat-lookup phase needs: `kemi.admin load` of the added extensions, the calls."""
    added = max(b.sizes.flat_large - b.sizes.companies, 0) * b.sizes.extensions
    return added * 0.001 + 2 * b.sizes.flat_calls / b.sizes.flat_rate + 10


def reserve_after_steps(b: Bench, users: int) -> float:
    """Seconds the phases after the step phase need: two storms and the large flat lookups."""
    return b.sizes.storm_limit_s + 2 * b.sizes.restart_s + users / 500 + flat_large_s(b)


def run_all(b: Bench) -> None:
    sizes = b.sizes
    b.start()
    b.say(f"redis-server on {b.redis.port}; provisioning {sizes.companies} companies x {sizes.extensions} "
          f"extensions through kemi.admin load (and {sizes.flat_small} x {sizes.extensions} in database {SMALL_DB})")
    load_office(b, 1, sizes.flat_small, db=SMALL_DB)
    _, took = load_office(b, 1, sizes.companies)
    prepaid = prepaid_setup(b)
    native_provision(b.redis.url)
    csv_dir = injection_files(b, "office", sizes.companies, prepaid)
    users = sipp_csv_count(csv_dir / "users.csv")
    b.results.meta["provisioning_s"] = round(took, 1)
    b.say(f"{users} phones provisioned (load {took:.1f} s); injection files in {csv_dir}")
    for name, proxy in [*b.systems.items(), ("product, 1,000 extensions", b.small)]:
        proxy.start()
        b.say(f"{name} listening on {proxy.ip}:{proxy.port} (log {proxy.log_path})")
    b.peer("trunk", "answer.xml", PEERS["trunk"], "-set", "ring", str(sizes.ring_ms))
    b.peer("emergency", "answer.xml", PEERS["emergency"], "-set", "ring", str(sizes.ring_ms))
    b.peer("announcer", "announce.xml", PEERS["announcer"], "-set", "play", str(sizes.hold_ms))
    b.peer("reception", "standin-reception.xml", PEERS["reception"], "-set", "ext", "2001")

    register_all(b, csv_dir)
    b.peer("phones", "answer.xml", PHONES, "-set", "ring", str(sizes.ring_ms))
    call_types(b, csv_dir)
    step_rate(b, csv_dir, reserve_after_steps(b, users))
    storm(b, csv_dir)

    if b.left_s() < flat_large_s(b):
        b.results.errors.append("flat lookups: skipped, time budget")
        b.say("flat lookups: skipped (time budget)")
        return
    b.say(f"provisioning up to {sizes.flat_large * sizes.extensions} extensions (flat lookups)")
    # only outbound calls from here on: the added companies' extensions need no DIDs (half the keys)
    _, took = load_office(b, sizes.companies + 1, sizes.flat_large, dids=False)
    b.results.meta["provisioning_large_s"] = round(took, 1)
    flat(b)


def building(b: Bench, phones: int) -> None:
    """Step 7 (bench/building.py): its own network, Redis and proxy; the figures of both variants."""
    from bench.building import BuildingSizes, run
    from tests import netns
    why = netns.available()
    if why:
        b.results.errors.append(f"building storm: not run ({why})")
        b.say(f"building storm: not run ({why})")
        return
    sizes = BuildingSizes(phones=phones)
    work = b.out / "building"
    work.mkdir(parents=True, exist_ok=True)
    b.results.building = run(work, sizes, say=b.say) | {"sizes": asdict(sizes)}


def report(b: Bench) -> None:
    r = b.results
    r.meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    r.meta["duration_s"] = round(time.monotonic() - b.t0, 1)
    (b.out / "results.json").write_text(json.dumps(asdict(r), indent=1))
    (b.out / "summary.md").write_text(markdown(asdict(r)))
    zf = r.zero_failure_rate
    if zf.get("native"):
        b.say(f"zero-failure call rate: product {zf.get('product')}/s, native {zf['native']}/s "
              f"({zf.get('product', 0) / zf['native']:.0%} of native; target 90 %)")
    try:
        from bench.plot_load import plot
    except ImportError as exc:
        b.say(f"no plot ({exc.name} is missing: use bench/.venv, see bench/requirements.txt)")
    else:
        if not r.steps:
            return b.say(f"results: {b.out / 'results.json'} (no step measured: no plot)")
        plot(asdict(r), b.out / "load.png")
        b.say(f"plot: {b.out / 'load.png'}")
    b.say(f"results: {b.out / 'results.json'} ({r.meta['duration_s']} s, load average now {r.meta['load_after']})")


def in_netns(argv: list[str]) -> int:
    """This script again, in a network namespace of its own (its fixed peer addresses are then free)."""
    inner = [sys.executable, str(Path(__file__).resolve()), *[a for a in argv if a != "--netns"]]
    script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in inner)
    return subprocess.call(["unshare", "-n", "sh", "-c", script])


def building_step(b: "Bench", phones: int) -> bool:
    """Step 7, the building storm, after the others or alone; False when it could not run (said why)."""
    try:
        building(b, phones)
        return True
    except KeyboardInterrupt:
        b.results.errors.append("interrupted")
    except Exception as exc:
        b.say(f"building storm failed: {exc!r}")
        b.results.errors.append(f"building storm: {exc!r}")
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--companies", type=int, default=Sizes.companies)
    parser.add_argument("--extensions", type=int, default=Sizes.extensions)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks that every phase works")
    parser.add_argument("--out", help="directory for results.json, load.png and the logs (default: a new temp dir)")
    parser.add_argument("--netns", action="store_true", help="run in a network namespace of its own (needs root)")
    parser.add_argument("--building", type=int, metavar="PHONES", default=0,
                        help="then the building storm with PHONES phones behind one NAT address (root; 500 is the bench)")
    parser.add_argument("--only-building", action="store_true", help="only the building storm (default 500 phones)")
    args = parser.parse_args(argv)
    if args.netns:
        return in_netns(argv)
    sizes = SMOKE if args.smoke else Sizes(companies=args.companies, extensions=args.extensions)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="load-"))
    out.mkdir(parents=True, exist_ok=True)
    # thousands of concurrent SIPp calls and Kamailio's sockets: the hard limit, for every child
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # the phases keep to the budget by themselves; this is the bound if one of them does not
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("time budget exceeded")))
    signal.alarm(int(sizes.budget_s) + 20)
    b = Bench(sizes, out)
    b.results.meta.update(machine() | {"sizes": asdict(sizes), "argv": argv})
    b.say(f"load benchmark: {sizes.companies} x {sizes.extensions} extensions, output in {out}; "
          f"machine load {b.results.meta['load_before']}")
    failed = False
    if args.only_building:
        signal.alarm(0)  # its own bounds: every SIPp run and round is limited in time
        failed = not building_step(b, args.building or 500)
        report(b)
        return 1 if failed else 0
    try:
        run_all(b)
    except KeyboardInterrupt:
        b.say("interrupted: stopping everything")
        b.results.errors.append("interrupted")
        failed = True
    except Exception as exc:  # a phase that cannot run: say which, keep what was measured
        b.say(f"failed: {exc!r}")
        b.results.errors.append(repr(exc))
        failed = True
    finally:
        signal.alarm(0)
        b.stop()
    if args.building and not failed:
        failed = not building_step(b, args.building)
    report(b)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
