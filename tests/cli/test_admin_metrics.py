"""`kemi.admin metrics`: the textfile node_exporter serves (certificate expiry, prepaid balances), from a
real certificate and the session's real redis-server. That node_exporter serves it and that the rules
and the dashboard find its series: tests/sip/test_metrics.py."""

from __future__ import annotations

import re
import ssl
import subprocess

from tests.conftest import CLI_AUDIT_DB, OFFICE
from tests.harness import admin


def test_the_textfile_has_typed_series_without_timestamps(redis_server, tmp_path):
    client = redis_server.client(CLI_AUDIT_DB)
    client.flushdb()
    url = redis_server.url_of(CLI_AUDIT_DB)
    try:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "10", "-subj", "/CN=t",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
        admin(url, "load", str(OFFICE))
        admin(url, "prepaid", "activate", "acme")
        admin(url, "prepaid", "topup", "acme", "3", "--ref", "P1")
        admin(url, "prepaid", "activate", "globex")
        admin(url, "prepaid", "topup", "globex", "30", "--ref", "P2")
        out = tmp_path / "cowork.prom"
        admin(url, "metrics", "--textfile", str(out), "--cert", str(cert), "--low-balance", "5")
        text = out.read_text()
        series = {}
        for line in text.splitlines():
            if not line.startswith("#"):
                name, value = line.rsplit(" ", 1)  # exactly two fields: no timestamp
                series[name] = float(value)
        for name in {re.match(r"[a-z_]+", s).group(0) for s in series}:
            assert f"# TYPE {name} gauge" in text and f"# HELP {name} " in text
        enddate = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(cert)], capture_output=True,
                                 text=True, check=True).stdout.split("=", 1)[1].strip()
        assert series[f'cowork_certificate_expiry_timestamp_seconds{{path="{cert}"}}'] == ssl.cert_time_to_seconds(enddate)
        assert series['cowork_prepaid_balance_minor{company="acme",currency="EUR"}'] == 300
        assert series['cowork_prepaid_balance_low{company="acme"}'] == 1
        assert series['cowork_prepaid_balance_low{company="globex"}'] == 0
        # a certificate that is not one: a clear error, no file rewritten
        bad = admin(url, "metrics", "--textfile", str(out), "--cert", str(key), check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("error: --cert ") and out.read_text() == text
    finally:
        client.flushdb()
