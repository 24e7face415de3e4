"""The tables of bench/BENCHMARKS.md from a load run's results.json.

    python3 bench/load_report.py RESULTS.json        (bench/load.py writes DIR/summary.md itself)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ms(value) -> str:
    return "-" if value is None else f"{value:g}"


def machine(r: dict) -> list[str]:
    m = r["meta"]
    return ["| | |", "|---|---|",
            f"| date (UTC) | {m.get('date_utc')} |", f"| machine | {m.get('cpu')}, {m.get('cores')} cores, "
            f"Linux {m.get('kernel')} |",
            f"| load average (1, 5, 15 min) | {m.get('load_before')} before, {m.get('load_after')} after |",
            f"| software | {m.get('kamailio')}; {m.get('sipp')}; {m.get('redis')} |",
            f"| commit measured | {m.get('commit')} |",
            f"| command | `bench/.venv/bin/python bench/load.py {' '.join(m.get('argv', []))}` "
            f"({m.get('duration_s')} s) |"]


def rates(r: dict) -> list[str]:
    rows = ["| system | offered calls/s | achieved | completed / started | failed | post-dial delay p50 / p99 (ms) "
            "| Kamailio CPU per call (ms) | load avg |", "|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        mark = "" if s["sustained"] else " (fails)"
        rows.append(f"| {s['system']} | {s['offered']}{mark} | {s['achieved']} | {s['completed']} / {s['created']} "
                    f"| {s['failed']} | {ms(s['pdd_p50_ms'])} / {ms(s['pdd_p99_ms'])} | {ms(s['cpu_ms_per_call'])} "
                    f"| {s.get('load1')} |")
    return rows


def call_types(r: dict) -> list[str]:
    rows = ["| call type / system | completed / started | answers | post-dial delay p50 / p99 (ms) |",
            "|---|---|---|---|"]
    for name, s in r["mix"].items():
        answers = ", ".join(f"{n}x {code}" for code, n in s["finals"].items())
        rows.append(f"| {name} | {s['completed']} / {s['created']} | {answers} | {ms(s['pdd_p50_ms'])} / "
                    f"{ms(s['pdd_p99_ms'])} |")
    return rows


def registrations(r: dict) -> list[str]:
    rows = ["| | system | phones registered | first round: registered / elapsed (s) | all registered after (s) "
            "| rounds | Kamailio CPU per registration (ms) | calls meanwhile: completed / started, answers |",
            "|---|---|---|---|---|---|---|---|"]
    for label, part in (("bulk registration", r["register"]), ("storm after restart", r["storm"])):
        for system, s in part.items():
            first = s.get("first_round", {})
            calls = s.get("calls")
            during = (f"{calls['completed']} / {calls['created']}, "
                      + ", ".join(f"{n}x {c}" for c, n in calls["finals"].items())) if calls else "-"
            rows.append(f"| {label} | {system} | {s['registered']} / {s['phones']} | {first.get('completed')} / "
                        f"{first.get('elapsed_s')} | {ms(s['all_registered_s'])} | {s['rounds']} "
                        f"| {ms(s.get('cpu_ms_per_registration'))} | {during} |")
    return rows


def flat(r: dict) -> list[str]:
    rows = ["| extensions provisioned | calls completed / started | Kamailio CPU per call (ms) | "
            "post-dial delay p50 / p99 (ms) |", "|---|---|---|---|"]
    for s in r["flat"].values():
        rows.append(f"| {s['extensions']} | {s['completed']} / {s['created']} | {ms(s['cpu_ms_per_call'])} | "
                    f"{ms(s['pdd_p50_ms'])} / {ms(s['pdd_p99_ms'])} |")
    return rows


def markdown(r: dict) -> str:
    zf = r.get("zero_failure_rate", {})
    share = f" = {zf['product'] / zf['native']:.0%} of native" if zf.get("native") and "product" in zf else ""
    parts = ["### Machine and run", *machine(r),
             "", f"### Zero-failure call rate: product {zf.get('product')}/s, native {zf.get('native')}/s{share}",
             *rates(r), "", "### Call types", *call_types(r), "", "### Registrations", *registrations(r),
             "", "### Flat lookups (product)", *flat(r)]
    if r.get("errors"):
        parts += ["", "Not measured: " + "; ".join(r["errors"])]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
