"""monitoring/: the sample Prometheus configuration and rules as promtool reads them (their unit tests
included), the rules' metric names against what the proxy exports, and the logrotate configuration
rotating a log that a process keeps appending to."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kemi.paths import ROOT

PROM = ROOT / "monitoring" / "prometheus"
LOGROTATE = ROOT / "monitoring" / "logrotate" / "cowork-proxy"
DASHBOARD = ROOT / "monitoring" / "grafana" / "cowork-proxy.json"
ROLE_TEMPLATES = ROOT / "ansible" / "roles" / "monitoring" / "templates"
# PromQL words that look like a series name followed by ( { or [ but are not
PROMQL_WORDS = {"sum", "rate", "increase", "max_over_time", "min_over_time", "avg_over_time", "histogram_quantile",
                "clamp_min", "clamp_max", "vector", "time", "hour", "month", "day_of_month", "day_of_week", "by",
                "on", "and", "or", "unless", "without", "ignoring", "group_left", "group_right", "round", "abs",
                "absent", "count", "avg", "max", "min", "topk", "label_replace", "offset"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def rule_files() -> list[Path]:
    """Every rules file of the directory: cowork-proxy's and those other parts add (prometheus.yml loads
    them all with one glob)."""
    return sorted(PROM.glob("*.rules.yml"))


def rules_test_files() -> list[Path]:
    return sorted(PROM.glob("*.rules.test.yml"))


def rules() -> list[dict]:
    return [r for f in rule_files() for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]


def series_names(expr: str) -> set[str]:
    """The series names an expression reads (not the functions, keywords and label names it uses)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                     # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+|inf|nan", n, re.I)}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_the_sample_config_and_every_rules_file_load():
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert len(rule_files()) >= 1
    checked = promtool("check", "rules", *[f.name for f in rule_files()])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the one glob picks up every rules file of the directory
    assert yaml.safe_load((PROM / "prometheus.yml").read_text())["rule_files"] == ["*.rules.yml"]


def test_every_rules_test_file_passes():
    result = promtool("test", "rules", *[f.name for f in rules_test_files()])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rules_file_is_tested_and_every_alert_fires_in_a_test():
    tested_files, tested_alerts = set(), set()
    for path in rules_test_files():
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        tested_files |= set(spec["rule_files"])
        for case in spec["tests"]:
            tested_alerts |= {a["alertname"] for a in case.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert {f.name for f in rule_files()} <= tested_files
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - tested_alerts == set(), "alerts no test sees firing"


def test_the_issue_s_alerts_are_there():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert {"CoworkProxyDown", "CoworkRedisDown", "CoworkProxyRedisErrors", "CoworkEmergencyCallFailed",
            "CoworkHigh5xxRatio", "CoworkPrepaidRefusalsSpiking", "CoworkTrunksFailing", "CoworkMediaRelayDown",
            "CoworkRouteBug", "CoworkRegistrationsDropping", "CoworkRedisMemoryHigh", "CoworkRedisPersistenceFailing",
            "CoworkCertificateExpiring", "CoworkNoCallsInBusinessHours"} <= alerts
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]


def test_the_5xx_ratio_counts_the_500s_sl_sends():
    record = next(r for r in rules() if r.get("record") == "cowork:sip_5xx_replies:rate5m")
    assert {"kamailio_sl_500_replies", "kamailio_sl_5xx_replies", "kamailio_tmx_5xx_transactions"} <= \
        series_names(record["expr"])


def test_series_names_reads_names_not_functions_or_labels():
    assert series_names('sum by (instance) (rate(a_total{reason=~"x|y"}[5m])) / on () b:c:rate5m > 0.5') == \
        {"a_total", "b:c:rate5m"}
    assert series_names("histogram_quantile(0.5, sum by (le) (rate(x_bucket[5m])))") == {"x_bucket"}


def test_the_dashboard_is_grafana_json_with_a_valid_query_in_every_panel(tmp_path):
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "cowork-proxy" and board["timezone"] == "Europe/Paris"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for subject in ("calls by disposition", "refusals by reason", "registered phones", "trunk", "prepaid",
                    "redis", "rtpengine sessions"):
        assert subject in titles, subject
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "cowork-prometheus" and panel["targets"], panel["title"]
    # promtool parses each query (as a recording rule): a typo fails here, not on the wall screen
    queries = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                          for i, e in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(queries))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "dashboard.rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the data source the role provisions is the one the panels name
    assert "uid: cowork-prometheus" in (ROLE_TEMPLATES / "grafana-datasource.yml.j2").read_text()


def render(template: str, **variables) -> str:
    """A role template as Ansible renders it (Jinja2 of Debian's Python, which Ansible runs on)."""
    code = ("import jinja2, json, sys; v = json.load(sys.stdin); "
            "env = jinja2.Environment(loader=jinja2.FileSystemLoader(sys.argv[1]), keep_trailing_newline=True); "
            "sys.stdout.write(env.get_template(sys.argv[2]).render(**v))")
    proc = subprocess.run(["/usr/bin/python3", "-c", code, str(ROLE_TEMPLATES), template],
                          input=json.dumps(variables), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


ALERTMANAGER_DEFAULTS = dict(monitoring_alertmanager_email_to="", monitoring_alertmanager_webhook_url="",
                             monitoring_alertmanager_smarthost="smtp.example.org:587",
                             monitoring_alertmanager_email_from="alertmanager@example.org",
                             monitoring_alertmanager_smtp_require_tls=True,
                             monitoring_alertmanager_smtp_auth_username="", monitoring_alertmanager_smtp_auth_password="",
                             monitoring_alertmanager_group_wait="30s", monitoring_alertmanager_group_interval="5m",
                             monitoring_alertmanager_repeat_interval="4h")


@pytest.mark.parametrize("receiver", [
    {"monitoring_alertmanager_email_to": "ops@example.org"},
    {"monitoring_alertmanager_webhook_url": "https://hooks.example.org/T0/B0/x?y=1"},
    {"monitoring_alertmanager_email_to": "ops@example.org", "monitoring_alertmanager_webhook_url": "http://10.0.0.5:8080/",
     "monitoring_alertmanager_smtp_auth_username": "relay", "monitoring_alertmanager_smtp_auth_password": 'p"w:{x}'},
])
def test_the_alertmanager_config_the_role_writes_is_valid_with_each_receiver(tmp_path, receiver):
    text = render("alertmanager.yml.j2", **{**ALERTMANAGER_DEFAULTS, **receiver}, ansible_managed="test")
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    checked = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr + text
    config = yaml.safe_load(text)
    (ops,) = config["receivers"]
    assert config["route"]["receiver"] == ops["name"] == "ops"
    if receiver.get("monitoring_alertmanager_email_to"):
        assert ops["email_configs"][0]["to"] == "ops@example.org"
    if receiver.get("monitoring_alertmanager_webhook_url"):
        assert ops["webhook_configs"][0]["url"] == receiver["monitoring_alertmanager_webhook_url"]
    if receiver.get("monitoring_alertmanager_smtp_auth_password"):
        assert config["global"]["smtp_auth_password"] == 'p"w:{x}'


def test_logrotate_rotates_a_log_still_being_appended_to(tmp_path):
    logs = tmp_path / "log"
    logs.mkdir(mode=0o750)
    config = tmp_path / "cowork-proxy"
    config.write_text(LOGROTATE.read_text(encoding="utf-8").replace("/var/log/cowork-proxy", str(logs)))
    log = logs / "kamailio.log"
    # the proxy's stderr, as systemd's StandardOutput=append: or a shell's >> opens it
    writer = subprocess.Popen(["sh", "-c", f"while :; do echo 'call c-1 routed internal: x'; sleep 0.05; done >> {log}"])
    try:
        time.sleep(0.5)
        before = log.stat().st_size
        assert before > 0
        check = subprocess.run(["logrotate", "-d", str(config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and "error" not in check.stderr.lower(), check.stderr
        rotate = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(config)],
                                capture_output=True, text=True, timeout=30)
        assert rotate.returncode == 0, rotate.stderr
        (rotated,) = logs.glob("kamailio.log-*")
        assert rotated.stat().st_size >= before and "call c-1 routed" in rotated.read_text()
        time.sleep(0.5)
        # the writer goes on at the start of the emptied file: no hole of the old size
        text = log.read_bytes()
        assert 0 < len(text) < before + 200 and not text.startswith(b"\x00")
    finally:
        writer.kill()
        writer.wait()


def test_the_redis_site_alerts_load_and_fire_as_their_unit_tests_say():
    """sentinel's rules (issue 20): no replica, a failover, replica lag, unconfirmed money changes."""
    assert (checked := promtool("check", "rules", "cowork-redis-site.rules.yml")).returncode == 0, checked.stdout
    result = promtool("test", "rules", "cowork-redis-site.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROM / "cowork-redis-site.rules.yml").read_text(encoding="utf-8"))
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} == {
        "CoworkRedisNoReplica", "CoworkRedisFailover", "CoworkRedisReplicaLag", "CoworkMoneyUnreplicated"}
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    assert any(Path("cowork-redis-site.rules.yml").match(pattern) for pattern in config["rule_files"])
