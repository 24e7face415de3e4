"""Does each Prepaid Account's balance equal its ledger? Pure judgement of what the store read
(kemi.store.prepaid.LedgerCut); `kemi.admin prepaid audit` prints it and exports it.

The balance of an account is credited only by top-ups (`{co}:topups`, which only the admin Redis user
can write) and debited only by charges (`{co}:ledger`, to which the proxy's user can only append), so

    balance == sum(top-up amounts) - opening.charged - sum(charge costs)

must hold at every instant (prepaid.lua writes a charge's entry and its HINCRBY in one function).
A balance raised behind the functions' back (HINCRBY/HSET by hand or by a stolen proxy password)
breaks it, and so does an entry that is not one the functions write. Amounts are minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kemi import money

_CANONICAL = re.compile(r"0|[1-9][0-9]{0,13}", re.ASCII)  # what prepaid.lua's account() accepts
_SIGNED = re.compile(r"-?(0|[1-9][0-9]{0,13})", re.ASCII)

METRIC_DIFFERENCE = "cowork_prepaid_ledger_difference_minor_units"
METRIC_DAMAGED = "cowork_prepaid_ledger_damaged_entries"
METRIC_UNRECONCILED = "cowork_prepaid_audit_unreconciled_accounts"
METRIC_ACCOUNTS = "cowork_prepaid_audit_accounts"
METRIC_LAST_RUN = "cowork_prepaid_audit_last_run_timestamp_seconds"


@dataclass(frozen=True)
class Finding:
    company: str
    currency: str
    found: int | None  # the stored balance; None when it is not an integer
    expected: int  # what the top-ups, the opening and the charges add up to
    credited: int
    charged: int
    opening: int
    problems: tuple[str, ...] = ()  # damaged entries, each named

    @property
    def difference(self) -> int | None:
        """found - expected: > 0 is money nobody paid for, < 0 money taken without a charge."""
        return None if self.found is None else self.found - self.expected

    @property
    def reconciles(self) -> bool:
        return self.difference == 0 and not self.problems


def _int(value: Any, low: int, high: int) -> int | None:
    return value if money.is_int(value) and low <= value <= high else None


def reconcile(cut) -> Finding:
    problems: list[str] = []
    credited = 0
    for ref, entry in cut.topups:
        amount = _int(entry.get("amount") if isinstance(entry, dict) else None, 1, money.MAX_BALANCE)
        if amount is None:
            problems.append(f"topups[{ref!r}] is not a top-up the ledger wrote")
        else:
            credited += amount
    charged = 0
    for i, entry in enumerate(cut.charges):
        cost = _int(entry.get("cost") if isinstance(entry, dict) else None, 1, money.MAX_BALANCE)
        if cost is None or not isinstance(entry.get("id"), str):
            problems.append(f"ledger[{i}] is not a charge the ledger wrote")
        else:
            charged += cost
    opening = 0
    if cut.opening_charged is not None:
        if _SIGNED.fullmatch(cut.opening_charged):
            opening = int(cut.opening_charged)
        else:
            problems.append(f"opening charged {cut.opening_charged!r} is not an integer")
    found = int(cut.balance) if cut.balance is not None and _CANONICAL.fullmatch(cut.balance) else None
    if cut.balance is None:
        found = 0  # never credited: HSETNX balance 0 is what activation writes
    elif found is None:
        problems.append(f"balance {cut.balance!r} is not an integer the ledger wrote")
    return Finding(cut.company, cut.currency, found, credited - opening - charged, credited, charged, opening,
                   tuple(problems))


def report_line(f: Finding) -> str:
    """One line an operator can act on: which company, found vs expected, in minor units."""
    head = (f"{f.company}: balance {f.found if f.found is not None else 'unreadable'} "
            f"expected {f.expected} {f.currency or '(no currency)'} minor units "
            f"(top-ups {f.credited} - opening {f.opening} - charges {f.charged})")
    if f.reconciles:
        return head + ": reconciles"
    parts = [head]
    if f.difference:
        parts.append(f"{f.difference:+d} " + ("more than its ledger: credited behind the ledger's back"
                                               if f.difference > 0 else
                                               "less than its ledger: debited behind the ledger's back"))
    parts.extend(f.problems)
    return "; ".join(parts) + ": DOES NOT RECONCILE"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def textfile(findings: list[Finding], now_s: int) -> str:
    """The result in Prometheus text format, for node_exporter's textfile collector (no timestamps)."""
    lines = [f"# HELP {METRIC_DIFFERENCE} Stored balance minus what its ledger adds up to, per company "
             f"(0: reconciles).",
             f"# TYPE {METRIC_DIFFERENCE} gauge"]
    for f in findings:
        diff = f.difference if f.difference is not None else 0
        lines.append(f'{METRIC_DIFFERENCE}{{company="{_label(f.company)}",currency="{_label(f.currency)}"}} {diff}')
    lines += [f"# HELP {METRIC_DAMAGED} Entries of the account that its functions did not write "
              f"(unreadable balance, top-ups, ledger).",
              f"# TYPE {METRIC_DAMAGED} gauge"]
    for f in findings:
        lines.append(f'{METRIC_DAMAGED}{{company="{_label(f.company)}"}} '
                     f'{len(f.problems) + (1 if f.found is None and not f.problems else 0)}')
    bad = sum(1 for f in findings if not f.reconciles)
    lines += [f"# HELP {METRIC_UNRECONCILED} Prepaid Accounts whose balance does not equal their ledger.",
              f"# TYPE {METRIC_UNRECONCILED} gauge", f"{METRIC_UNRECONCILED} {bad}",
              f"# HELP {METRIC_ACCOUNTS} Prepaid Accounts the last audit read.",
              f"# TYPE {METRIC_ACCOUNTS} gauge", f"{METRIC_ACCOUNTS} {len(findings)}",
              f"# HELP {METRIC_LAST_RUN} When the last complete audit ended (Unix time).",
              f"# TYPE {METRIC_LAST_RUN} gauge", f"{METRIC_LAST_RUN} {now_s}"]
    return "\n".join(lines) + "\n"
