"""What the user guide promises, through the real proxy: Danish landlines and the French overseas
departments are included (they reach the trunk with no Prepaid Account), a Danish mobile is not.

Company acme of tests/sip/office.yaml has no Prepaid Account; SIPp plays the primary trunk
(127.0.0.2:5060) and the phones.
"""

from __future__ import annotations

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import SIP_DB
from tests.harness import wait_for
from tests.sip.conftest import PRIMARY, ruri, trunk


@pytest.fixture
def ledger(proxy, redis_server):
    ledger = PrepaidLedger(redis_server.store(SIP_DB))
    status = ledger.status("acme")
    assert not status.active and status.balance == 0, "acme must have no Prepaid Account for these tests"
    return ledger


def record_to(ledger, e164: str, known: set[str]) -> dict:
    """The newest call record of acme to `e164` that was not there before the call."""
    def fresh():
        return [r for entry, r in ledger.last_cdrs("acme", 50) if entry not in known and r and r.get("to") == e164]
    wait_for(fresh, 5, f"the call record to {e164}")
    return fresh()[-1]


@pytest.mark.parametrize("dialled, e164, line", [
    ("004533123456", "+4533123456", "Danish landline, Copenhagen series 33"),
    ("+45.86.12.34.56", "+4586123456", "Danish landline, Aarhus series 86"),
    ("0690123456", "+590690123456", "Guadeloupe mobile, national form"),
    ("06-92-12-34-56", "+262692123456", "Reunion mobile, national form"),
    ("00596696201234", "+596696201234", "Martinique mobile, international form"),
    ("0262123456", "+262262123456", "Reunion landline"),
])
def test_included_numbers_reach_the_trunk_without_a_prepaid_account(phones, ledger, dialled, e164, line):
    known = {entry for entry, _ in ledger.last_cdrs("acme", 50)}
    alice = phones.phone("2001")
    carrier = trunk(phones, PRIMARY)
    call = phones.call(alice, dialled, hold_ms=200).wait()
    assert call.final == (200, "OK"), (line, call.log + call.stdout)
    invite = carrier.wait().received("INVITE")[0]
    assert ruri(invite).startswith(f"sip:{e164}@127.0.0.2:5060"), (line, ruri(invite))
    record = record_to(ledger, e164, known)
    assert (record["billing"], record["disposition"]) == ("included", "answered"), (line, record)
    assert record["category"] == ("international" if e164.startswith("+45") else "domestic"), record
    assert record.get("cost", 0) == 0
    assert ledger.status("acme").balance == 0


@pytest.mark.parametrize("dialled, e164", [
    ("004520123456", "+4520123456"),   # series 2: mobile
    ("+4543123456", "+4543123456"),    # 43 is a landline series, 43-1x was reassigned to mobile
])
def test_danish_mobile_is_refused_without_a_prepaid_account(phones, ledger, dialled, e164):
    known = {entry for entry, _ in ledger.last_cdrs("acme", 50)}
    alice = phones.phone("2001")
    carrier = trunk(phones, PRIMARY)
    assert phones.call(alice, dialled).wait().final == (403, "Prepaid Account Not Activated")
    carrier.stop()
    assert not carrier.wait().received("INVITE")  # nothing reached the carrier
    record = record_to(ledger, e164, known)
    assert (record["billing"], record["disposition"]) == ("prepaid", "refused-403"), record
