"""Call records (pure)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from kemi import records


def base(**kw):
    return records.start(company="acme", extension="2001", caller="+33142685301", to="+33612345678",
                         category="domestic", billing="included", direction="outbound", call_id="c1",
                         setup_ms=1_000, **kw)


def test_answered_call_rounds_up_to_whole_seconds():
    final, secs = records.finish(base(), answer_ms=2_000, end_ms=12_200, failed=False)
    assert secs == 11
    assert final["disposition"] == "answered" and final["billed_secs"] == 11 and final["cost"] == 0
    assert "prepaid" not in final and "max_secs" not in final


def test_unanswered_and_failed_calls_are_zero_seconds():
    for answer, failed in ((0, False), (2_000, True)):
        final, secs = records.finish(base(), answer_ms=answer, end_ms=5_000, failed=failed)
        assert secs == 0 and final["disposition"] == "unanswered"


def test_a_call_no_trunk_took_is_told_apart_from_one_that_rang_out():
    final, secs = records.finish(base(), answer_ms=0, end_ms=5_000, failed=True, trunks_failed=True)
    assert secs == 0 and final["disposition"] == "trunks-failed" and final["cost"] == 0
    # the flag only ever describes a call that failed: an answered call stays answered
    final, _ = records.finish(base(), answer_ms=2_000, end_ms=5_000, failed=False, trunks_failed=True)
    assert final["disposition"] == "answered"


def test_summary_names_the_call_for_a_log_line():
    assert records.summary(base()) == "outbound domestic call 2001@acme -> +33612345678"
    assert "unverified emergency" in records.summary(None)


def test_prepaid_call_cut_at_its_maximum_leaves_cost_to_the_ledger():
    final, secs = records.finish(base(prepaid=True, max_secs=3), answer_ms=1_000, end_ms=4_001, failed=False)
    assert secs == 4 and final["disposition"] == "cut-at-max-duration"
    assert "cost" not in final and "billed_secs" not in final


def test_encode_decode_round_trip_and_garbage():
    rec = base(prepaid=True, max_secs=60)
    assert records.decode(records.encode(rec)) == rec
    assert records.decode(None) is None and records.decode("not json") is None and records.decode("[1]") is None


@given(st.integers(0, 10**13), st.integers(0, 10**13))
def test_answered_seconds_is_never_negative_and_covers_the_call(answer, end):
    secs = records.answered_seconds(answer, end)
    assert secs >= 0
    if answer and end > answer:
        assert secs * 1000 >= end - answer > (secs - 1) * 1000


def test_refused_call_record():
    final = records.refused(base(prepaid=True, max_secs=60), 402, 1_500)
    assert final["disposition"] == "refused-402" and final["cost"] == 0 and final["billed_secs"] == 0
    assert final["answer_ms"] == 0 and final["end_ms"] == 1_500 and "prepaid" not in final
