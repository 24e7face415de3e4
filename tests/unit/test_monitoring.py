"""monitoring/: the sample Prometheus configuration and rules as promtool reads them (their unit tests
included), the rules' metric names against what the proxy exports, and the logrotate configuration
rotating a log that a process keeps appending to."""

from __future__ import annotations

import re
import subprocess
import time

import yaml

from kemi.paths import ROOT
from kemi.sip.shell import Metric

PROM = ROOT / "monitoring" / "prometheus"
LOGROTATE = ROOT / "monitoring" / "logrotate" / "cowork-proxy"
# Kamailio's own statistics the rules use (xhttp_prom_stats "all": kamailio_<group>_<name>)
NATIVE = {"kamailio_tmx_UAS_transactions", "kamailio_sl_sent_replies", "kamailio_tmx_5xx_transactions",
          "kamailio_sl_5xx_replies"}
EXPORTER = {"redis_up", "up"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_the_sample_config_and_rules_load():
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "cowork-proxy.rules.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_alerts_fire_as_their_unit_tests_say():
    result = promtool("test", "rules", "cowork-proxy.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_s_alerts_are_there():
    rules = yaml.safe_load((PROM / "cowork-proxy.rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"CoworkProxyDown", "CoworkRedisDown", "CoworkProxyRedisErrors", "CoworkEmergencyCallFailed",
            "CoworkHigh5xxRatio", "CoworkPrepaidRefusalsSpiking"} <= alerts


def test_the_rules_use_only_metrics_the_proxy_or_the_exporter_export():
    text = (PROM / "cowork-proxy.rules.yml").read_text(encoding="utf-8")
    exprs = [r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
    records = {r["record"] for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "record" in r}
    ours = {f"kamailio_{name}" for name in list(Metric.COUNTERS) + list(Metric.GAUGES)}
    used = {name for expr in exprs for name in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr)}
    unknown = used - ours - NATIVE - EXPORTER - records
    assert not unknown, unknown


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
    assert "cowork-redis-site.rules.yml" in config["rule_files"]
