"""Rates in the global `rates` HASH against a real redis-server: validation before any write,
longest-prefix lookup in one round trip (== kemi.money, the specification), fail-closed reads,
and the paged CDR reader the CLI exports from."""

from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemi import money
from kemi.money import Rate
from kemi.store.prepaid import RATES, Keys

UK = Rate("+44", per_minute=10)
UK_MOBILE = Rate("+447", per_minute=25, connection_fee=5, first=30, next=6)
VODAFONE_UK = Rate("+4477", per_minute=30)


@pytest.fixture(autouse=True)
def no_rates(rclient):
    """`rates` is one global key: every test starts and ends without it."""
    rclient.delete(RATES)
    yield
    rclient.delete(RATES)


def stored(rclient) -> dict:
    return {k.decode(): msgpack.unpackb(v, raw=False) for k, v in rclient.hgetall(RATES).items()}


def test_set_rate_stores_msgpack_of_rate_to_dict_under_its_prefix(ledger, rclient):
    assert ledger.set_rate(UK_MOBILE) is None
    assert stored(rclient) == {"+447": money.rate_to_dict(UK_MOBILE)}
    assert rclient.type(RATES) == b"hash"


def test_set_rate_replaces_and_returns_the_previous_rate(ledger):
    ledger.set_rate(UK)
    cheaper = Rate("+44", per_minute=8, connection_fee=1, first=1, next=1)
    assert ledger.set_rate(cheaper) == UK
    assert ledger.rates() == [cheaper]


@pytest.mark.parametrize("bad", [
    Rate("44", 10), Rate("+4a", 10), Rate("+1234567890123456", 10), Rate("+44", -1),
    Rate("+44", 0.1), Rate("+44", True), Rate("+44", 10, connection_fee=-1), Rate("+44", 10, first=0),
    Rate("+44", 10, next=money.MAX_INCREMENT + 1), Rate("+44", money.MAX_PER_MINUTE + 1),
])
def test_set_rate_validates_before_writing(ledger, rclient, bad):
    ledger.set_rate(UK)
    with pytest.raises(ValueError):
        ledger.set_rate(bad)
    assert ledger.rates() == [UK]


def test_rate_for_takes_the_longest_prefix(ledger):
    for rate in (UK, UK_MOBILE, VODAFONE_UK):
        ledger.set_rate(rate)
    assert ledger.rate_for("+447700900123") == VODAFONE_UK
    assert ledger.rate_for("+447400900123") == UK_MOBILE
    assert ledger.rate_for("+442079460000") == UK
    assert ledger.rate_for("+44") == UK  # the prefix itself
    assert ledger.rate_for("+33123456789") is None


def test_catch_all_prefix_is_the_last_resort(ledger):
    ledger.set_rate(UK)
    anywhere = Rate("+", per_minute=100)
    ledger.set_rate(anywhere)
    assert ledger.rate_for("+33123456789") == anywhere
    assert ledger.rate_for("+442079460000") == UK


def test_rate_for_is_one_hmget(ledger):
    ledger.set_rate(UK)
    with mock.patch.object(ledger.conn, "run", wraps=ledger.conn.run) as spy:
        assert ledger.rate_for("+447700900123") == UK
    (call,) = spy.call_args_list  # one round trip ...
    ((command, key, *prefixes),) = call.args[0]  # ... of one command
    assert (command, key, prefixes) == ("HMGET", "rates", money.candidate_prefixes("+447700900123"))


@pytest.mark.parametrize("bad", ["", "+", "447700900123", "+44 77", "+4477009001234567", "+44a", None])
def test_rate_for_refuses_a_number_that_is_not_e164(ledger, bad):
    with pytest.raises(ValueError):
        ledger.rate_for(bad)


def test_a_corrupt_stored_rate_fails_closed_naming_its_prefix(ledger, rclient):
    ledger.set_rate(UK)
    rclient.hset(RATES, "+447", b"\xc1 not msgpack")
    with pytest.raises(ValueError, match=r"'\+447'"):
        ledger.rate_for("+447700900123")
    assert ledger.rate_for("+442079460000") == UK  # a corrupt longer prefix does not matter here
    with pytest.raises(ValueError, match=r"'\+447'"):
        ledger.rates()


def test_a_rate_stored_under_another_prefix_is_refused(ledger, rclient):
    rclient.hset(RATES, "+447", msgpack.packb(money.rate_to_dict(UK)))  # says +44
    with pytest.raises(ValueError, match="holds prefix"):
        ledger.rate_for("+447700900123")


def test_remove_rate(ledger):
    ledger.set_rate(UK)
    ledger.set_rate(UK_MOBILE)
    assert ledger.remove_rate("+447") is True
    assert ledger.remove_rate("+447") is False
    assert ledger.rate_for("+447700900123") == UK  # falls back to the shorter prefix
    with pytest.raises(ValueError):
        ledger.remove_rate("44")


def test_rates_sorted_by_prefix(ledger):
    for rate in (VODAFONE_UK, Rate("+1", 2), UK, Rate("+33", 3), UK_MOBILE):
        ledger.set_rate(rate)
    assert [r.prefix for r in ledger.rates()] == ["+1", "+33", "+44", "+447", "+4477"]
    assert ledger.rates()[3] == UK_MOBILE  # every field round-trips


def test_a_looked_up_rate_reserves_and_settles_in_lua(ledger, co):
    ledger.set_rate(UK_MOBILE)
    ledger.activate(co, "EUR")
    ledger.topup(co, "pay", 1000)
    rate = ledger.rate_for("+447700900123")
    held = ledger.reserve(co, "call-1", rate, cap_secs=3600, ttl_ms=60_000, to="+447700900123")
    assert held.max_secs == money.max_duration(rate, 1000, 3600)
    assert ledger.settle(co, "call-1", 95).cost == money.cost(rate, 95)


digits = st.text(alphabet="0124", min_size=0, max_size=4)


@settings(deadline=None, max_examples=60)
@given(prefixes=st.sets(digits.map(lambda d: "+" + d), max_size=6),
       numbers=st.lists(st.text(alphabet="0124", min_size=1, max_size=6).map(lambda d: "+" + d), min_size=1,
                        max_size=5))
def test_rate_for_matches_the_pure_specification(ledger, rclient, prefixes, numbers):
    rclient.delete(RATES)
    table = {p: Rate(p, per_minute=i, first=i + 1) for i, p in enumerate(sorted(prefixes))}
    for rate in table.values():
        ledger.set_rate(rate)
    for number in numbers:
        assert ledger.rate_for(number) == money.longest_prefix_rate(number, table)


# ---------------------------------------------------------------- paged CDR reader

def test_last_cdrs_pages_oldest_first_and_tolerates_bad_entries(ledger, rclient, co):
    cdr = Keys.of(co).cdr
    pipe = rclient.pipeline(transaction=False)
    for i in range(25):
        pipe.xadd(cdr, {"r": msgpack.packb({"n": i})})
    pipe.execute()
    bad = rclient.xadd(cdr, {"r": b"\xc1"}).decode()
    assert [rec and rec["n"] for _, rec in ledger.last_cdrs(co, 3)] == [23, 24, None]
    for page in (1, 4, 7, 100):
        for count in (1, 5, 26, 40):
            got = list(ledger.last_cdrs(co, count, page=page))
            want = list(range(26))[-count:]
            assert [rec["n"] if rec else 25 for _, rec in got] == want, (page, count)
            assert got[-1] == (bad, None)
    assert list(ledger.last_cdrs(co, 0)) == []
    assert list(ledger.last_cdrs("never-called", 10)) == []
