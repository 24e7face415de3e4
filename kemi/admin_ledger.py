"""`kemi.admin prepaid audit` and `prepaid ledger-open`: prove each balance equals its ledger.

The judgement is kemi.ledger_audit's (pure); this module reads each account through
kemi.store.prepaid.PrepaidLedger (as the admin Redis user: SCAN, and the keys the proxy cannot
write), prints one line per account, writes the Prometheus textfile, and exits 1 when one account
does not reconcile (kemi.cli_errors).
"""

from __future__ import annotations

import os
import tempfile
import time

from kemi import ledger_audit
from kemi.cli_errors import CliError, Unreconciled
from kemi.model import COMPANY_ID_RE
from kemi.store.prepaid import PrepaidLedger


def _write_atomically(path: str, text: str) -> None:
    """node_exporter must never read half a file: write beside it, then rename over it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".prepaid-audit-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(f"--textfile {path}: cannot write: {exc.strerror}") from None


def cmd_audit(args, directory) -> None:
    ledger = PrepaidLedger(directory.conn)
    for co in args.company:
        if not COMPANY_ID_RE.fullmatch(co):
            raise CliError(f"COMPANY {co!r}: not a company id")
    companies = args.company or ledger.accounts()
    findings = [ledger_audit.reconcile(ledger.ledger_cut(co)) for co in companies]
    for finding in findings:
        if not args.quiet or not finding.reconciles:
            print(ledger_audit.report_line(finding))
    bad = [f.company for f in findings if not f.reconciles]
    if args.textfile:
        # Only a complete audit is exported: a run that failed half-way leaves the last one, whose
        # timestamp then ages (the staleness alert), instead of a partial "all is well".
        _write_atomically(args.textfile, ledger_audit.textfile(findings, int(time.time())))
    print(f"prepaid audit: {len(findings)} accounts, {len(bad)} do not reconcile")
    if bad:
        raise Unreconciled(f"{len(bad)} Prepaid Account(s) do not reconcile with their ledger: {', '.join(bad)}; "
                           f"stop top-ups for them and compare their records (prepaid records COMPANY) "
                           f"with the Redis log before correcting anything")


def cmd_ledger_open(args, directory) -> None:
    if not COMPANY_ID_RE.fullmatch(args.company):
        raise CliError(f"COMPANY {args.company!r}: not a company id")
    ledger = PrepaidLedger(directory.conn, loads_functions=True)
    if not ledger.has_data(args.company):
        raise CliError(f"company {args.company!r}: no Prepaid Account")
    d = ledger.ledger_open(args.company)
    verb = "already opened" if d["duplicate"] else "opened"
    print(f"{args.company}: ledger {verb}: balance {d['balance']} minor units accepted, "
          f"{d['charged']} minor units charged before the ledger existed")


def add_commands(psub, leaf) -> None:
    p = leaf(psub, "audit", cmd_audit, "check that every balance equals its ledger",
             "Reconcile each Prepaid Account: its balance must equal its top-ups minus its opening minus the "
             "charges of its ledger (integer minor units). One line per account; exit 1 when any account "
             "does not reconcile (a balance written behind the ledger's back, or a damaged entry), 3 when "
             "Redis is unreachable. Run as the admin Redis user.")
    p.add_argument("company", metavar="COMPANY", nargs="*", help="only these companies (default: every account)")
    p.add_argument("--textfile", metavar="PATH",
                   help="also write the result for node_exporter's textfile collector (atomically), e.g. "
                        "/var/lib/prometheus/node-exporter/cowork_prepaid_audit.prom")
    p.add_argument("--quiet", action="store_true", help="print only the accounts that do not reconcile")
    p = leaf(psub, "ledger-open", cmd_ledger_open, "accept the balance of an account older than its ledger",
             "Once per account, right after upgrading to the release that keeps a ledger: what its top-ups "
             "and its ledger do not account for (charges settled before) is recorded as its opening, so the "
             "audit reconciles from then on. It accepts the balance as found: audit first.")
    p.add_argument("company", metavar="COMPANY", help="company id")
