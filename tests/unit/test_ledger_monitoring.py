"""monitoring/prometheus/ledger.rules.yml: its alerts fire as their promtool tests say, on the series
the audit really writes (kemi.ledger_audit) and Kamailio really exports (kamailio_shmem_*: checked
against a running proxy by tests/sip/test_shm.py)."""

from __future__ import annotations

import re
import subprocess

import yaml

from kemi import ledger_audit
from kemi.ledger_audit import Finding
from kemi.paths import ROOT

PROM = ROOT / "monitoring" / "prometheus"
AUDIT_SERIES = {ledger_audit.METRIC_DIFFERENCE, ledger_audit.METRIC_DAMAGED, ledger_audit.METRIC_LAST_RUN}
SHM_SERIES = {"kamailio_shmem_real_used_size", "kamailio_shmem_total_size"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120, input=stdin)


def test_the_rules_load_and_their_tests_pass():
    for args in (("check", "rules", "ledger.rules.yml"), ("test", "rules", "ledger.rules.test.yml"),
                 ("check", "config", "prometheus.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_and_their_tests_name_only_real_series():
    rules = yaml.safe_load((PROM / "ledger.rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"CoworkPrepaidLedgerNotReconciled", "CoworkProxySharedMemoryHigh"} <= set(alerts)
    used = {n for expr in alerts.values() for n in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", expr)
            if n.startswith(("cowork_", "kamailio_"))}
    assert used == AUDIT_SERIES | SHM_SERIES
    tests = yaml.safe_load((PROM / "ledger.rules.test.yml").read_text(encoding="utf-8"))
    fed = {s["series"].split("{")[0] for t in tests["tests"] for s in t["input_series"]} - {"up"}
    assert fed == used


def test_the_audit_textfile_is_valid_exposition_with_the_series_the_alert_reads():
    findings = [Finding("acme", "EUR", 10_005, 10_000, 12_000, 2_000, 0),
                Finding("initech", "EUR", 500, 500, 500, 0, 0),
                Finding("umbrella", "", None, 0, 0, 0, 0, ("balance '1.5' is not an integer the ledger wrote",))]
    text = ledger_audit.textfile(findings, 1_700_000_000)
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f'{ledger_audit.METRIC_DIFFERENCE}{{company="acme",currency="EUR"}} 5' in text.splitlines()
    assert f'{ledger_audit.METRIC_DIFFERENCE}{{company="initech",currency="EUR"}} 0' in text.splitlines()
    assert f'{ledger_audit.METRIC_DAMAGED}{{company="umbrella"}} 1' in text.splitlines()
    assert f"{ledger_audit.METRIC_UNRECONCILED} 2" in text.splitlines()
