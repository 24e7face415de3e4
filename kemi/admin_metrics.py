"""`kemi.admin metrics`: the gauges no SIP message needs, for node_exporter's textfile collector.

Written every few minutes by a timer (the monitoring role's cron file), never by the proxy: nothing of
this runs per call. Prometheus text format with # HELP and # TYPE, no sample timestamps; written to a
temporary file and renamed, so the collector never reads half a file.

- cowork_certificate_expiry_timestamp_seconds{path}: when each TLS certificate stops being valid
  (the alert CoworkCertificateExpiring fires 14 days before);
- cowork_prepaid_balance_minor{company, currency}: each Prepaid Account's balance, in minor units;
- cowork_prepaid_balance_low{company}: 1 while an active account's available money (balance less live
  reservations) is under --low-balance, else 0;
- cowork_admin_metrics_written_timestamp_seconds: when this file was written (a stale file shows).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import tempfile
import time

from kemi.cli_errors import CliError


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def certificate_expiry(path: str) -> float:
    """notAfter of a PEM certificate as epoch seconds, read by openssl (the first one of a chain)."""
    proc = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0 or not proc.stdout.startswith("notAfter="):
        raise CliError(f"--cert {path}: not a PEM certificate openssl can read: {proc.stderr.strip()}")
    return float(ssl.cert_time_to_seconds(proc.stdout.strip().split("=", 1)[1]))


def page(certs: dict[str, float], accounts: list[tuple[str, bool, int, int, str]], low: int,
         now: float) -> str:
    """The textfile: certs {path: notAfter}, accounts (company, active, balance, available, currency)."""
    lines = ["# HELP cowork_certificate_expiry_timestamp_seconds When the TLS certificate stops being valid.",
             "# TYPE cowork_certificate_expiry_timestamp_seconds gauge"]
    lines += [f'cowork_certificate_expiry_timestamp_seconds{{path="{escape(p)}"}} {int(t)}'
              for p, t in sorted(certs.items())]
    lines += ["# HELP cowork_prepaid_balance_minor Balance of each Prepaid Account, in minor units (cents).",
              "# TYPE cowork_prepaid_balance_minor gauge"]
    lines += [f'cowork_prepaid_balance_minor{{company="{escape(co)}",currency="{escape(cur)}"}} {balance}'
              for co, _, balance, _, cur in accounts if cur]
    lines += [f"# HELP cowork_prepaid_balance_low 1 while an active Prepaid Account has less than {low} minor "
              "units available.",
              "# TYPE cowork_prepaid_balance_low gauge"]
    lines += [f'cowork_prepaid_balance_low{{company="{escape(co)}"}} {1 if active and available < low else 0}'
              for co, active, _, available, cur in accounts if cur]
    lines += ["# HELP cowork_admin_metrics_written_timestamp_seconds When kemi.admin metrics wrote this file.",
              "# TYPE cowork_admin_metrics_written_timestamp_seconds gauge",
              f"cowork_admin_metrics_written_timestamp_seconds {int(now)}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cowork-metrics-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def collect(args, directory, ledger_of, parse_minor) -> str:
    low = parse_minor(args.low_balance, "--low-balance", low=0, high=10**12)
    certs = {path: certificate_expiry(path) for path in args.cert}
    accounts = []
    ledger = ledger_of(directory)
    for company in directory.companies():
        status = ledger.status(company.id)
        accounts.append((company.id, status.active, status.balance, status.available, status.currency))
    return page(certs, accounts, low, time.time())
