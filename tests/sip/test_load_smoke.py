"""The load benchmark's smoke run (bench/load.py --smoke): every phase, both systems, in seconds.

It keeps the benchmark working: the answers come from the files SIPp wrote in the run (every call
answered and hung up, every phone registered), not from the exit code alone. Its SIPp peers use the
fixed loopback addresses of the load suite (bench/gen_office.py PEERS), hence tests/sip/ (one SIP
session per machine).
"""

from __future__ import annotations

import json
import subprocess
import time

from tests.harness import PYTHON, ROOT


def test_smoke_run_completes_calls_of_every_type_through_both_systems(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "load.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert took < 60, f"the smoke run took {took:.0f} s"
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["errors"] == [], r["errors"]

    # every call type of the user guide through the product, the included call through the native too
    kinds = {"internal", "domestic", "international", "prepaid", "emergency", "did", "reception"}
    assert {k.split("/")[0] for k in r["mix"] if k.endswith("/product")} == kinds
    for name, run in r["mix"].items():
        assert run["created"] > 0 and run["completed"] == run["created"], (name, run)
        assert run["finals"] == {"200 OK": run["created"]}, (name, run)
        assert run["pdd_samples"] == run["created"] and run["pdd_p99_ms"] is not None, (name, run)
    assert r["mix"]["domestic/native"]["completed"] > 0

    for system in ("product", "native"):
        phones = r["register"][system]
        assert phones["registered"] == phones["phones"] == 20 and phones["rounds"] == 1, (system, phones)
        steps = [s for s in r["steps"] if s["system"] == system]
        assert steps and all(s["completed"] == s["created"] > 0 for s in steps), steps
        assert r["zero_failure_rate"][system] == max(s["offered"] for s in steps)
        storm = r["storm"][system]
        assert storm["registered"] == storm["phones"] == 20, storm
        assert storm["calls"]["completed"] == storm["calls"]["created"] > 0, storm

    for size, extensions in (("small", 10), ("large", 30)):
        flat = r["flat"][size]
        assert flat["extensions"] == extensions
        assert flat["completed"] == flat["created"] > 0 and flat["cpu_ms_per_call"] > 0, flat
