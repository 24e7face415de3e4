"""Call records (CDRs): what is written for every call, prepaid or not. Pure.

The SIP layer keeps a call's record in a dialog variable from set-up to its
end, then hands the finished record to the ledger (kemi.store.prepaid), which
appends it to the company's stream in the same atomic step as any charge.
"""

from __future__ import annotations

import json
from typing import Any

def start(*, company: str, extension: str | None, caller: str | None, to: str | None, category: str,
          billing: str, direction: str, call_id: str, setup_ms: int, prepaid: bool = False,
          max_secs: int = 0) -> dict[str, Any]:
    return {"company": company, "extension": extension or "", "from": caller or "", "to": to or "",
            "category": category, "billing": billing, "direction": direction, "call_id": call_id,
            "setup_ms": setup_ms, "prepaid": prepaid, "max_secs": max_secs}


def encode(record: dict[str, Any]) -> str:
    """Dialog variables hold strings."""
    return json.dumps(record, separators=(",", ":"))


def decode(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def summary(record: dict[str, Any] | None) -> str:
    """A call in a few words for a log line."""
    if not record:
        return "call without a record (unverified emergency call)"
    who = f"{record.get('extension') or record.get('from') or '?'}@{record.get('company', '?')}"
    return f"{record.get('direction', '?')} {record.get('category', '?')} call {who} -> {record.get('to') or '?'}"


def answered_seconds(answer_ms: int | None, end_ms: int) -> int:
    """Whole seconds of conversation, rounded up: a call of 10.2 s is 11 s (billing rounds up anyway)."""
    if not answer_ms or end_ms <= answer_ms:
        return 0
    return (end_ms - answer_ms + 999) // 1000


def finish(record: dict[str, Any], *, answer_ms: int | None, end_ms: int, failed: bool,
           trunks_failed: bool = False) -> tuple[dict, int]:
    """The final record and the answered seconds to settle. trunks_failed: no trunk took the
    call (silent, or 5xx), as opposed to a callee that did not answer or said busy."""
    secs = 0 if failed else answered_seconds(answer_ms, end_ms)
    if failed and trunks_failed:
        disposition = "trunks-failed"
    elif failed or not answer_ms:
        disposition = "unanswered"
    elif record.get("max_secs") and secs >= record["max_secs"]:
        disposition = "cut-at-max-duration"
    else:
        disposition = "answered"
    final = {k: v for k, v in record.items() if k not in ("prepaid", "max_secs")}
    final.update(answer_ms=answer_ms or 0, end_ms=end_ms, disposition=disposition)
    if not record.get("prepaid"):
        final.update(billed_secs=secs, cost=0)  # a prepaid call's ledger fills in both
    return final, secs


def refused(record: dict[str, Any], code: int, end_ms: int) -> dict[str, Any]:
    """The record of a call the proxy answered itself with an error: it never rang anywhere."""
    final, _ = finish(record, answer_ms=None, end_ms=end_ms, failed=True)
    final.update(disposition=f"refused-{code}", billed_secs=0, cost=0)
    return final
