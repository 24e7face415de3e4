"""kemi.ledger_audit: the reconciliation of one account, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kemi.ledger_audit import reconcile, report_line
from kemi.store.prepaid import LedgerCut


def cut(balance, topups=(), charges=(), opening=None, co="acme"):
    return LedgerCut(co, "EUR", balance, tuple((f"ref-{i}", {"amount": a, "at_ms": 1, "balance_after": 1})
                                             for i, a in enumerate(topups)),
                     opening, tuple({"id": f"c-{i}", "cost": c, "balance": 0, "ms": 1} for i, c in enumerate(charges)))


@pytest.mark.parametrize("account, found, expected, ok", [
    (cut("0"), 0, 0, True),
    (cut(None), 0, 0, True),  # activated, never credited
    (cut("700", [1000], [300]), 700, 700, True),
    (cut("3766", [5000], [], "1234"), 3766, 3766, True),
    (cut("5", [5000], [1000], "-1"), 5, 4001, False),
    (cut("99999999", [1000], [300]), 99999999, 700, False),
    (cut("699", [1000], [300]), 699, 700, False),
    (cut("007", [7]), None, 7, False),
    (cut("-5"), None, 0, False),
])
def test_reconcile(account, found, expected, ok):
    f = reconcile(account)
    assert (f.found, f.expected, f.reconciles) == (found, expected, ok)
    assert report_line(f).endswith(": reconciles" if ok else ": DOES NOT RECONCILE")


@pytest.mark.parametrize("account, problem", [
    (LedgerCut("acme", "EUR", "0", (("r", None),), None, ()), "topups['r'] is not a top-up the ledger wrote"),
    (LedgerCut("acme", "EUR", "0", (("r", {"amount": 0}),), None, ()), "topups['r']"),
    (LedgerCut("acme", "EUR", "0", (), None, (None,)), "ledger[0] is not a charge the ledger wrote"),
    (LedgerCut("acme", "EUR", "0", (), None, ({"id": "x", "cost": -5},)), "ledger[0]"),
    (LedgerCut("acme", "EUR", "0", (), None, ({"id": "x", "cost": 1.5},)), "ledger[0]"),
    (LedgerCut("acme", "EUR", "0", (), None, ({"id": 7, "cost": 5},)), "ledger[0]"),
    (LedgerCut("acme", "EUR", "0", (), "x", ()), "opening charged 'x' is not an integer"),
])
def test_damage_is_named_and_never_reconciles(account, problem):
    f = reconcile(account)
    assert not f.reconciles and any(problem in p for p in f.problems), f.problems


def test_the_line_says_which_company_found_expected_and_the_difference():
    line = report_line(reconcile(cut("99999999", [10000], [450])))
    assert line.startswith("acme: balance 99999999 expected 9550 EUR minor units "
                           "(top-ups 10000 - opening 0 - charges 450)")
    assert "+99990449 more than its ledger" in line


amounts = st.lists(st.integers(1, 10**9), max_size=20)


@given(topups=amounts, charges=amounts, tamper=st.integers(-10**9, 10**9))
def test_any_write_behind_the_ledger_shows_as_exactly_its_amount(topups, charges, tamper):
    honest = sum(topups) - sum(charges)
    if honest + tamper < 0:
        tamper = -honest
    f = reconcile(cut(str(max(honest, 0) + tamper) if honest >= 0 else "0", topups, charges))
    if honest >= 0:
        assert f.difference == tamper and f.reconciles == (tamper == 0)
