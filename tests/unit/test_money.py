"""kemi.money: tables of known answers, then properties over random rates."""

import ast
import pathlib
import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemi import money
from kemi.money import Rate, billed_seconds, candidate_prefixes, cost, longest_prefix_rate, max_duration

UK = Rate("+44", per_minute=25, connection_fee=5, first=60, next=30)
PER_MIN = Rate("+1", per_minute=10)  # 60/60, no fee
SIX = Rate("+49", per_minute=12, first=30, next=6)  # 30/6
PER_SEC = Rate("+41", per_minute=7, first=1, next=1)
FREE = Rate("+800", per_minute=0)
DIRECTORY = Rate("+33118", per_minute=0, connection_fee=300)  # ARCEP: at most 3 EUR a call


@pytest.mark.parametrize("rate, secs, billed", [
    (PER_MIN, -5, 0), (PER_MIN, 0, 0), (PER_MIN, 1, 60), (PER_MIN, 60, 60), (PER_MIN, 61, 120),
    (PER_MIN, 120, 120), (PER_MIN, 121, 180),
    (UK, 1, 60), (UK, 60, 60), (UK, 61, 90), (UK, 90, 90), (UK, 91, 120),
    (SIX, 1, 30), (SIX, 30, 30), (SIX, 31, 36), (SIX, 36, 36), (SIX, 37, 42),
    (PER_SEC, 1, 1), (PER_SEC, 59, 59), (PER_SEC, 3601, 3601),
])
def test_billed_seconds_table(rate, secs, billed):
    assert billed_seconds(rate, secs) == billed


@pytest.mark.parametrize("rate, secs, price", [
    (UK, 0, 0), (UK, -1, 0),  # unanswered: not even the connection fee
    (UK, 1, 5 + 25), (UK, 60, 30), (UK, 61, 5 + 38),  # 90 s * 25/60 = 37.5 -> 38 (rounded up)
    (PER_MIN, 1, 10), (PER_MIN, 61, 20), (PER_MIN, 3600, 600),
    (SIX, 1, 6), (SIX, 31, 8), (SIX, 37, 9),  # 36*12/60 = 7.2 -> 8; 42*12/60 = 8.4 -> 9
    (PER_SEC, 1, 1), (PER_SEC, 60, 7), (PER_SEC, 61, 8),  # 61*7/60 = 7.12 -> 8
    (FREE, 3600, 0), (DIRECTORY, 1, 300), (DIRECTORY, 3600, 300),
])
def test_cost_table(rate, secs, price):
    assert cost(rate, secs) == price


@pytest.mark.parametrize("rate, funds, cap, duration", [
    (PER_MIN, 100, 3600, 600), (PER_MIN, 105, 3600, 600), (PER_MIN, 10, 3600, 60),
    (PER_MIN, 9, 3600, 0), (PER_MIN, 0, 3600, 0), (PER_MIN, -50, 3600, 0),
    (PER_MIN, 100, 60, 60), (PER_MIN, 100, 119, 60),  # cap off the grid: round down onto it
    (PER_MIN, 100, 59, 0),  # cap below the first increment
    (UK, 29, 3600, 0), (UK, 30, 3600, 60), (UK, 43, 3600, 90), (UK, 42, 3600, 60),
    (UK, 5 + 25 * 60, 3600, 3600), (UK, 10**9, 3600, 3600),
    (SIX, 6, 3600, 30), (SIX, 7, 3600, 30), (SIX, 8, 3600, 36),
    (FREE, 0, 125, 120), (FREE, 0, 59, 0),
    (DIRECTORY, 299, 600, 0), (DIRECTORY, 300, 600, 600),
])
def test_max_duration_table(rate, funds, cap, duration):
    assert max_duration(rate, funds, cap) == duration
    if duration:
        assert cost(rate, duration) <= funds


def test_first_increment_counts_at_authorisation():
    """A2Billing: 1 cent less than the first increment must refuse, not allow a call."""
    rate = Rate("+44", per_minute=60, first=60, next=1)
    assert max_duration(rate, 59, 3600) == 0
    assert max_duration(rate, 60, 3600) == 60
    assert max_duration(rate, 61, 3600) == 61


@pytest.mark.parametrize("field, value", [
    ("per_minute", -1), ("per_minute", 1.5), ("per_minute", True), ("per_minute", "10"),
    ("per_minute", money.MAX_PER_MINUTE + 1),
    ("connection_fee", -1), ("connection_fee", 0.0), ("connection_fee", False),
    ("first", 0), ("first", -60), ("first", 60.0), ("first", money.MAX_INCREMENT + 1),
    ("next", 0), ("next", None),
    ("prefix", "44"), ("prefix", "+4a"), ("prefix", ""), ("prefix", "+" + "1" * 16), ("prefix", 44),
])
def test_validate_names_the_bad_field(field, value):
    good = dict(prefix="+44", per_minute=10, connection_fee=0, first=60, next=60)
    rate = Rate(**{**good, field: value})
    with pytest.raises(ValueError, match=field):
        rate.validate()
    with pytest.raises(ValueError):
        cost(rate, 60)
    with pytest.raises(ValueError):
        money.rate_from_dict({**good, field: value})


def test_catch_all_prefix_is_valid():
    Rate("+", per_minute=1).validate()


@pytest.mark.parametrize("bad", [1.0, True, None, "60"])
def test_arguments_must_be_int(bad):
    with pytest.raises(ValueError):
        billed_seconds(PER_MIN, bad)
    with pytest.raises(ValueError):
        cost(PER_MIN, bad)
    with pytest.raises(ValueError):
        max_duration(PER_MIN, bad, 60)
    with pytest.raises(ValueError):
        max_duration(PER_MIN, 100, bad)


def test_candidate_prefixes():
    assert candidate_prefixes("+4420") == ["+4420", "+442", "+44", "+4", "+"]
    assert candidate_prefixes("+1") == ["+1", "+"]


@pytest.mark.parametrize("bad", ["4420", "+", "+44 20", "+44a", "", "+" + "1" * 16, None, 4420])
def test_candidate_prefixes_refuses_non_e164(bad):
    with pytest.raises(ValueError):
        candidate_prefixes(bad)


def test_longest_prefix_rate():
    uk, uk_mobile = Rate("+44", 10), Rate("+447", 30)
    rates = {"+44": uk, "+447": uk_mobile}
    assert longest_prefix_rate("+447911123456", rates) is uk_mobile
    assert longest_prefix_rate("+442079460000", rates) is uk
    assert longest_prefix_rate("+33612345678", rates) is None  # no rate: the call is refused
    default = Rate("+", 99)
    assert longest_prefix_rate("+33612345678", {**rates, "+": default}) is default


def test_rate_dict_round_trip_through_msgpack():
    for rate in (UK, PER_MIN, SIX, FREE, DIRECTORY):
        data = msgpack.unpackb(msgpack.packb(money.rate_to_dict(rate)), raw=False)
        assert data == {"prefix": rate.prefix, "per_minute": rate.per_minute,
                        "connection_fee": rate.connection_fee, "first": rate.first, "next": rate.next}
        assert money.rate_from_dict(data) == rate


def test_rate_from_dict_defaults_and_required():
    assert money.rate_from_dict({"prefix": "+44", "per_minute": 10}) == Rate("+44", 10, 0, 60, 60)
    with pytest.raises(ValueError):
        money.rate_from_dict({"prefix": "+44"})
    with pytest.raises(ValueError):
        money.rate_from_dict(["+44", 10])


def test_module_has_no_float_arithmetic():
    """No float literal, true division or float() call in the money code."""
    tree = ast.parse(pathlib.Path(money.__file__).read_text())
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), ast.dump(node)
        assert not isinstance(node, ast.Div), "true division yields floats"
        assert not (isinstance(node, ast.Name) and node.id in ("float", "round")), node.id


# ---------------------------------------------------------------- amounts an operator writes

@pytest.mark.parametrize("text, minor", [
    ("50", 5000), ("50.00", 5000), ("50.0", 5000), ("50.5", 5050), ("0.25", 25), ("0.01", 1), ("0", 0),
    ("0.00", 0), ("1", 100), ("19.99", 1999), ("100000000000", 10**13), (" 3.00 ", 300),
    ("2550c", 2550), ("1c", 1), ("0c", 0), ("10000000000000c", 10**13),
])
def test_parse_amount_reads_the_main_unit_and_explicit_cents(text, minor):
    assert money.parse_amount(text) == minor


@pytest.mark.parametrize("text, problem", [
    ("", "empty"), ("   ", "empty"),
    ("-5", "negative"), ("-0.01", "negative"), ("\u22125", "negative"), ("+5", "no sign"),
    ("0.255", "at most 2 decimals; 0.255 would have to be rounded"), ("1.999", "at most 2 decimals"),
    ("1,5", "no decimal comma"), ("1,000.00", "no decimal comma"), ("1 000", "thousands separator"),
    ("1_000", "thousands separator"), ("1'000", "thousands separator"),
    ("1e3", "no exponent"), ("1E3", "no exponent"), ("2.5e-1", "no exponent"), ("nan", "no special value"),
    ("inf", "no special value"), ("Infinity", "no special value"),
    ("50EUR", "no currency"), ("50 EUR", "no currency"), ("EUR50", "no currency"), ("0x10", "no currency"),
    ("abc", "no currency"), ("\u20ac50", "only ASCII"), ("\u0663", "only ASCII"), ("\uff15\uff10", "only ASCII"),
    ("007", "no leading zeros"), ("00.50", "no leading zeros"), ("0007c", "no leading zeros"),
    (".5", "units before the point"), ("5.", "digits must follow the point"), ("1..2", "one decimal point"),
    ("1.2.3", "one decimal point"),
    ("25.50c", "cents are whole"), ("0.5c", "cents are whole"), ("2550C", "lower-case c"), ("c", "digits expected"),
    ("2550cc", "no currency"), ("99999999999999999", "too many digits"), ("9999999999999999999c", "too many digits"),
])
def test_parse_amount_refuses_what_could_be_misread(text, problem):
    with pytest.raises(ValueError) as refused:
        money.parse_amount(text)
    assert problem in str(refused.value), str(refused.value)


@pytest.mark.parametrize("junk", [None, 50, 50.0, b"50", ["50"]])
def test_parse_amount_takes_text_only(junk):
    with pytest.raises(ValueError):
        money.parse_amount(junk)


@given(st.integers(0, money.MAX_BALANCE))
def test_every_amount_reads_back_in_each_form(minor):
    units, cents = divmod(minor, 100)
    assert money.parse_amount(f"{units}.{cents:02d}") == minor
    assert money.parse_amount(f"{minor}c") == minor
    if cents == 0:
        assert money.parse_amount(str(units)) == minor
    if cents % 10 == 0:
        assert money.parse_amount(f"{units}.{cents // 10}") == minor


@given(st.one_of(st.text(max_size=24), st.text(alphabet="0123456789.,c-+eE _", max_size=24)))
def test_parse_amount_accepts_only_its_two_forms(text):
    try:
        minor = money.parse_amount(text)
    except ValueError as exc:
        assert str(exc)  # always says why
        return
    body = text.strip()
    assert is_plain_int(minor) and minor >= 0
    main = re.fullmatch(r"(0|[1-9][0-9]*)(?:\.([0-9]{1,2}))?", body, re.ASCII)
    cents = re.fullmatch(r"(0|[1-9][0-9]*)c", body, re.ASCII)
    assert main or cents, text
    if cents:
        assert minor == int(cents.group(1))
    else:
        assert minor == int(main.group(1)) * 100 + int((main.group(2) or "0").ljust(2, "0"))


@given(st.integers(0, 10**6), st.integers(0, 99), st.integers(0, 9))
def test_three_decimals_are_always_refused(units, cents, extra):
    with pytest.raises(ValueError, match="at most 2 decimals"):
        money.parse_amount(f"{units}.{cents:02d}{extra}")


# ---------------------------------------------------------------- properties

@st.composite
def rates(draw):
    per_minute = draw(st.one_of(st.integers(0, 200), st.integers(0, money.MAX_PER_MINUTE)))
    fee = draw(st.one_of(st.just(0), st.integers(0, 500), st.integers(0, money.MAX_CONNECTION_FEE)))
    first = draw(st.sampled_from([1, 6, 30, 60, 120]) | st.integers(1, money.MAX_INCREMENT))
    nxt = draw(st.sampled_from([1, 6, 30, 60]) | st.integers(1, money.MAX_INCREMENT))
    return Rate("+44", per_minute, fee, first, nxt)


secs_st = st.integers(-10, 2 * money.MAX_CAP_SECS)
funds_st = st.one_of(st.integers(-100, 10_000), st.integers(0, money.MAX_BALANCE))
cap_st = st.integers(1, money.MAX_CAP_SECS)


def on_grid(rate, secs):
    return secs == 0 or (secs >= rate.first and (secs - rate.first) % rate.next == 0)


def is_plain_int(value):
    return type(value) is int


@given(rates(), secs_st, secs_st)
def test_cost_is_monotone(rate, a, b):
    a, b = sorted((a, b))
    assert cost(rate, a) <= cost(rate, b)


@given(rates(), secs_st)
def test_billed_seconds_covers_the_call_on_the_grid(rate, secs):
    billed = billed_seconds(rate, secs)
    assert is_plain_int(billed)
    assert billed >= secs and on_grid(rate, billed)
    if secs > 0:
        assert billed - secs < max(rate.first, rate.next)  # never a whole increment too much
    assert billed_seconds(rate, billed) == billed  # idempotent: settling at D costs cost(D)
    assert cost(rate, billed) == cost(rate, secs)


@given(rates(), funds_st, cap_st)
def test_max_duration_is_affordable_and_maximal(rate, funds, cap):
    d = max_duration(rate, funds, cap)
    assert is_plain_int(d) and 0 <= d <= cap and on_grid(rate, d)
    if d == 0:
        # refused: either the fee + first increment is unaffordable or cap is below it
        assert cap < rate.first or cost(rate, rate.first) > funds
        return
    assert is_plain_int(cost(rate, d)) and cost(rate, d) <= funds
    more = d + (rate.next if d >= rate.first else rate.first)
    if more <= cap:
        # what is left is less than the price of one more increment
        assert cost(rate, more) > funds


@given(rates(), funds_st, funds_st, cap_st)
def test_max_duration_monotone_in_funds(rate, f1, f2, cap):
    f1, f2 = sorted((f1, f2))
    assert max_duration(rate, f1, cap) <= max_duration(rate, f2, cap)


@given(rates(), funds_st, cap_st, secs_st)
def test_settlement_never_exceeds_reservation(rate, funds, cap, answered):
    """What settle charges (clamped to max_secs) never exceeds what reserve held."""
    d = max_duration(rate, funds, cap)
    if d:
        charged = cost(rate, min(billed_seconds(rate, answered), d))
        assert 0 <= charged <= cost(rate, d) <= funds


@settings(max_examples=50)
@given(st.from_regex(r"\+[0-9]{1,15}", fullmatch=True))
def test_candidate_prefixes_property(e164):
    cands = candidate_prefixes(e164)
    assert cands[0] == e164 and cands[-1] == "+"
    assert [len(c) for c in cands] == list(range(len(e164), 0, -1))
    assert all(e164.startswith(c) for c in cands)
