"""SIPp processes of a load run (sipp-scenarios/load/) and what they measured.

One `Load` is one SIPp process: a caller (call.xml, carrier-call.xml, register.xml with an
injection file) or an answering peer (answer.xml, announce.xml, standin-reception.xml). A caller's
outcome is read from its own files, never from its exit code: the "FINAL"/"BYE"/"REG" lines of
-trace_logs (what each call got), the post-dial delays of -trace_rtt, and the calls SIPp created
from -trace_stat.
"""

from __future__ import annotations

import collections
import csv
import math
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import NO_CONTROL_SOCKET, ROOT, bound, in_netns, run_in_netns, wait_for

LOAD = ROOT / "sipp-scenarios" / "load"


@dataclass
class Outcome:
    """What one caller process saw."""

    created: int                  # calls SIPp started
    completed: int                # answered and hung up (BYE 200), or registered (REG ... 200)
    finals: dict[str, int]        # final answer -> count ("200 OK", "403 Forbidden", ...)
    pdd_ms: list[float]           # post-dial delay of every call that got an answer
    elapsed_s: float              # wall time of the process
    sipp_failed: int              # calls SIPp itself counted as failed (timeouts, refusals)
    last_answer_s: float = 0.0    # when the last answer that ends a delay measurement came (from start)

    @property
    def achieved_rate(self) -> float:
        """Calls per second SIPp really started: the calls over the time until the last one was answered."""
        return self.created / self.last_answer_s if self.last_answer_s > 0 else 0.0

    @property
    def failed(self) -> int:
        return self.created - self.completed

    def pdd(self, q: float) -> float | None:
        return percentile(self.pdd_ms, q)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Load:
    name: str
    scenario: Path
    workdir: Path
    ip: str
    port: int = 5060
    target: str | None = None      # the proxy, for a caller; None for an answering peer
    inf: Path | None = None
    calls: int = 0                 # -m (0: until stopped)
    rate: float = 10.0             # -r, new calls per second
    hold_ms: int = 0               # -d
    args: list[str] = field(default_factory=list)
    timeout_s: int = 600
    proc: subprocess.Popen | None = None
    started: float = 0.0
    netns: str | None = None       # run in that network namespace (tests/netns.py; bench/building.py)

    def __post_init__(self):
        self.dir = self.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        cmd = in_netns(self.netns) + ["sipp"] + ([self.target] if self.target else []) + [
            *NO_CONTROL_SOCKET, "-sf", str(self.scenario), "-i", self.ip, "-p", str(self.port), "-nostdin",
            "-timeout", f"{self.timeout_s}s", "-trace_err", "-error_file", str(self.dir / "errors.log")]
        if self.inf:
            cmd += ["-inf", str(self.inf)]
        if self.target:
            cmd += ["-m", str(self.calls), "-r", f"{self.rate:g}", "-rp", "1000", "-l", str(max(self.calls, 1)),
                    "-d", str(self.hold_ms), "-recv_timeout", "16000", "-trace_logs", "-log_file",
                    str(self.dir / "calls.log"), "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-stf",
                    str(self.dir / "stat.csv"), "-fd", "1",
                    # a message the scenario does not expect (a 180 relayed after the 200 by another
                    # proxy process) must not abort a call that goes on: a call counts as completed only
                    # by its "BYE 200" line, so one that really fails still fails (timeout, no BYE 200)
                    "-default_behaviors", "all,-abortunexp"]
        return cmd + self.args

    def start(self) -> "Load":
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.txt", "wb"), start_new_session=True)
        if self.target is None:
            wait_for(self.listening, 10, f"SIPp {self.name} on {self.ip}:{self.port}")
        return self

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"SIPp {self.name} exited: {(self.dir / 'stderr.txt').read_text()[-800:]}")
        return run_in_netns(self.netns, lambda: bound(self.ip, self.port))

    def wait(self, timeout: float) -> Outcome:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.outcome(time.monotonic() - self.started)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGUSR1 makes SIPp stop at once and still write its files; then make sure it is gone
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def outcome(self, elapsed: float) -> Outcome:
        log = (self.dir / "calls.log").read_text(errors="replace") if (self.dir / "calls.log").exists() else ""
        finals = collections.Counter(re.findall(r"^(?:FINAL|REG \S+) (\d{3}[^\r\n]*)", log, re.M))
        completed = log.count("BYE 200") if "FINAL" in log else sum(
            n for code, n in finals.items() if code.startswith("200"))
        created, sipp_failed = self.stat_counts()
        stamps = self.rtts()
        return Outcome(created or self.calls, completed, dict(finals), [v for _, v in stamps], elapsed,
                       sipp_failed, max((t for t, _ in stamps), default=0.0) / 1000)

    def stat_counts(self) -> tuple[int, int]:
        path = self.dir / "stat.csv"
        if not path.exists():
            return 0, 0
        rows = list(csv.reader(path.open(errors="replace"), delimiter=";"))
        if len(rows) < 2:
            return 0, 0
        last = dict(zip(rows[0], rows[-1]))
        return int(last.get("OutgoingCall(C)", 0) or 0), int(last.get("FailedCall(C)", 0) or 0)

    def rtts(self) -> list[tuple[float, float]]:
        """(ms since SIPp started, response time in ms) of every measured call (-trace_rtt)."""
        values = []
        for path in self.dir.glob("*_rtt.csv"):
            for row in csv.reader(path.open(errors="replace"), delimiter=";"):
                try:
                    values.append((float(row[0]), float(row[1])))
                except (IndexError, ValueError):
                    continue  # the header line
        return values
