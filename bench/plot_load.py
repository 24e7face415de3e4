"""The plot of a load run: offered call rate against failed calls and post-dial delay, both systems.

    bench/.venv/bin/python bench/plot_load.py RESULTS.json OUT.png   (bench/load.py calls plot() itself)

Needs matplotlib (bench/requirements.txt, the bench venv; never the proxy's embedded venv).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"product": ("tab:blue", "o"), "native": ("tab:orange", "s")}


def plot(results: dict, path: Path) -> None:
    fig, (fail_ax, pdd_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for system, (colour, marker) in STYLE.items():
        every = [s for s in results.get("steps", []) if s["system"] == system]
        if not every:
            continue
        # the line follows each rate's last run; a failed first run that was repeated is a hollow marker
        last = {s["offered"]: s for s in every}
        steps = [last[rate] for rate in sorted(last)]
        for s in every:
            if s is not last[s["offered"]]:
                fail_ax.plot([s["offered"]], [100.0 * s["failed"] / s["created"] if s["created"] else 100.0],
                             marker=marker, color=colour, fillstyle="none", linestyle="none")
        rates = [s["offered"] for s in steps]
        failed = [100.0 * s["failed"] / s["created"] if s["created"] else 100.0 for s in steps]
        fail_ax.plot(rates, failed, marker=marker, color=colour, label=system)
        for q, dash in (("pdd_p50_ms", "-"), ("pdd_p99_ms", ":")):
            points = [(r, s[q]) for r, s in zip(rates, steps) if s[q] is not None]
            if points:
                pdd_ax.plot(*zip(*points), dash, marker=marker, color=colour,
                            label=f"{system} {'p50' if q == 'pdd_p50_ms' else 'p99'}")
    zf = results.get("zero_failure_rate", {})
    fail_ax.set_title("Included domestic calls: " + ", ".join(f"{s} zero-failure {r}/s" for s, r in zf.items()))
    fail_ax.set_ylabel("failed calls (%)\n(hollow: a first run, repeated)")
    fail_ax.grid(True, alpha=0.3)
    fail_ax.legend()
    pdd_ax.set_ylabel("post-dial delay (ms)")
    pdd_ax.set_xlabel("offered call rate (calls/s)")
    pdd_ax.set_yscale("symlog", linthresh=10)
    pdd_ax.grid(True, alpha=0.3)
    pdd_ax.legend()
    meta = results.get("meta", {})
    fig.suptitle(f"{meta.get('date_utc', '')} UTC, {meta.get('cores', '?')} cores, commit {meta.get('commit', '?')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
