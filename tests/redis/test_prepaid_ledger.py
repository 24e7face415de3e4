"""PrepaidLedger against a real redis-server: refusals, idempotency, expiry,
concurrency, conservation of money, and Lua arithmetic == kemi.money."""

import random
import threading
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemi import money
from kemi.money import Rate
from kemi.settings import Settings
from kemi.store import Connection, StoreRefused, StoreUnavailable
from kemi.store.prepaid import Keys, PrepaidError, PrepaidLedger

PER_MIN = Rate("+44", per_minute=10)  # 10 cents a minute, 60/60
UK_MOBILE = Rate("+447", per_minute=25, connection_fee=5, first=60, next=30)
HOUR = 3600
TTL = 60_000

def hyp(examples):
    """Real redis round trips: no per-example deadline."""
    return settings(deadline=None, max_examples=examples)


def funded(ledger, co, amount):
    ledger.activate(co, "EUR")
    if amount:
        ledger.topup(co, f"open-{co}", amount)


def cdr_costs(ledger, co):
    return sum(rec["cost"] for _, rec in ledger.cdrs(co, count=100_000) if "cost" in rec)


def refused(code, fn, *args, **kwargs):
    with pytest.raises(PrepaidError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


# ---------------------------------------------------------------- accounts

def test_functions_load_idempotently(ledger, rclient):
    ledger.load_functions()
    ledger.load_functions()
    [lib] = rclient.function_list(library="prepaid")  # RESP2: flat [name, value, ...] lists
    functions = dict(zip(lib[::2], lib[1::2]))[b"functions"]
    flags = {dict(zip(f[::2], f[1::2]))[b"name"]: dict(zip(f[::2], f[1::2]))[b"flags"] for f in functions}
    assert set(flags) == {b"prepaid_" + n for n in (b"activate", b"deactivate", b"topup", b"reserve",
                                                    b"renew", b"settle", b"record", b"status", b"ledger_open")}
    assert flags[b"prepaid_status"] == [b"no-writes"]  # FCALL_RO: may run on a replica


def test_keys_share_one_hash_tag():
    k = Keys.of("acme")
    assert k.prepaid == "{co:acme}:prepaid" and k.cdr == "{co:acme}:cdr"
    assert all(key.startswith("{co:acme}:") for key in vars(k).values())
    for bad in ("", "Acme", "a}b", "a:b", "{co:x}", "a b", "a_b", "-a", "a" * 33, None):
        with pytest.raises(ValueError):
            Keys.of(bad)  # what provisioning refuses as a company id (kemi.model.COMPANY_ID_RE)
    assert Keys.of("a" * 32).cdr == "{co:" + "a" * 32 + "}:cdr"


def test_unreachable_redis_is_store_unavailable_for_reads_and_writes():
    down = PrepaidLedger(Connection(Settings(redis_url="redis://127.0.0.1:1/0")))
    for attempt in (lambda: down.status("acme"), lambda: down.rate_for("+447700900123"),
                    lambda: down.topup("acme", "ref", 100), lambda: list(down.last_cdrs("acme", 5))):
        with pytest.raises(StoreUnavailable, match=r"Redis at redis://127.0.0.1:1/0 unreachable"):
            attempt()


def test_an_error_reply_that_is_not_a_ledger_refusal_is_store_refused(ledger, rclient, co):
    rclient.set(Keys.of(co).cdr, b"not a stream")
    with pytest.raises(StoreRefused, match="WRONGTYPE"):
        list(ledger.last_cdrs(co, 5))
    rclient.set(Keys.of(co).prepaid, b"not a hash")
    with pytest.raises(PrepaidError, match="LEDGER_BROKEN"):  # the Lua checks key types before it reads
        ledger.status(co)


def test_activate_deactivate_keeps_balance(ledger, co):
    assert ledger.status(co).active is False
    state = ledger.activate(co, "EUR")
    assert (state.active, state.balance, state.currency) == (True, 0, "EUR")
    ledger.topup(co, "pay-1", 500)
    assert ledger.deactivate(co).balance == 500
    refused("NOT_ACTIVE", ledger.reserve, co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    state = ledger.activate(co, "EUR")
    assert (state.active, state.balance) == (True, 500)
    assert ledger.reserve(co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL).max_secs == 3000


def test_currency_cannot_change_under_a_balance(ledger, co):
    funded(ledger, co, 100)
    refused("CURRENCY_MISMATCH", ledger.activate, co, "USD")
    refused("BAD_ARGUMENT", ledger.activate, co, "eur")
    assert ledger.activate(co, "EUR").currency == "EUR"


def test_topup_credits_once_per_reference(ledger, co):
    ledger.activate(co)
    first = ledger.topup(co, "stripe-pi_1", 1000)
    assert (first.amount, first.balance, first.duplicate) == (1000, 1000, False)
    again = ledger.topup(co, "stripe-pi_1", 1000)
    assert again.duplicate and again.balance == 1000 and again.at_ms == first.at_ms
    assert again.balance_after == first.balance_after == 1000
    refused("TOPUP_CONFLICT", ledger.topup, co, "stripe-pi_1", 999)
    assert ledger.topup(co, "stripe-pi_2", 1).balance == 1001
    assert ledger.status(co).balance == 1001


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "10"])
def test_topup_amount_must_be_a_positive_int(ledger, co, amount):
    refused("BAD_ARGUMENT", ledger.topup, co, "r", amount)


@pytest.mark.parametrize("raw", [b"0", b"-5", b"1.5", b"abc", b"0x10", b" 10", b"", b"99999999999999999"])
def test_lua_topup_refuses_bad_amounts(ledger, rclient, co, raw):
    """The Lua side checks too: it is the last line and can be called directly."""
    k = Keys.of(co)
    with pytest.raises(Exception, match="BAD_ARGUMENT"):
        rclient.fcall("prepaid_topup", 2, k.prepaid, k.topups, "r", raw)
    assert ledger.status(co).balance == 0


def test_balance_limit(ledger, co):
    ledger.activate(co)
    ledger.topup(co, "a", money.MAX_BALANCE)
    refused("BALANCE_LIMIT", ledger.topup, co, "b", 1)


def test_lua_refuses_keys_of_two_companies(rclient):
    with pytest.raises(Exception, match="BAD_KEYS"):
        rclient.fcall("prepaid_topup", 2, "{co:a}:prepaid", "{co:b}:topups", "r", 5)
    with pytest.raises(Exception, match="BAD_KEYS"):
        rclient.fcall("prepaid_topup", 1, "{co:a}:prepaid", "r", 5)


# ---------------------------------------------------------------- reserve

def test_reserve_refused_when_never_activated(ledger, co):
    ledger.topup(co, "pay", 1000)
    refused("NOT_ACTIVE", ledger.reserve, co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)


def test_reserve_refused_when_insufficient(ledger, co):
    funded(ledger, co, 9)
    err = refused("INSUFFICIENT_FUNDS", ledger.reserve, co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    assert err.available == 9
    # the connection fee plus the first increment must be affordable (5 + 25 = 30)
    ledger.topup(co, "more", 20)
    refused("INSUFFICIENT_FUNDS", ledger.reserve, co, "c1", UK_MOBILE, cap_secs=HOUR, ttl_ms=TTL)
    ledger.topup(co, "last", 1)
    assert ledger.reserve(co, "c1", UK_MOBILE, cap_secs=HOUR, ttl_ms=TTL).max_secs == 60


def test_reserve_without_rate_is_refused(ledger, co):
    funded(ledger, co, 1000)
    refused("NO_RATE", ledger.reserve, co, "c1", None, cap_secs=HOUR, ttl_ms=TTL, to="+8821612345")


def test_reserve_refuses_bad_rates_in_lua(ledger, rclient, co):
    funded(ledger, co, 1000)
    k = Keys.of(co)
    good = money.rate_to_dict(PER_MIN)
    for bad in ({"per_minute": -1}, {"per_minute": True}, {"per_minute": 1.5}, {"first": 0},
                {"next": 0}, {"prefix": "44"}, {"connection_fee": -3}, {"first": 10**6}):
        with pytest.raises(Exception, match="BAD_RATE"):
            rclient.fcall("prepaid_reserve", 4, k.prepaid, k.resv, k.calls, k.cdr, "c1", TTL, HOUR,
                          msgpack.packb({**good, **bad}), msgpack.packb({}))
    assert ledger.status(co).reserved == 0


def test_reserve_is_idempotent_per_call_id(ledger, co):
    """A retransmitted INVITE or a re-INVITE must not reserve (or later charge) twice."""
    funded(ledger, co, 1000)
    first = ledger.reserve(co, "call-1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL, ext="2001", to="+447911123456")
    assert (first.amount, first.max_secs, first.available_before, first.duplicate) == (600, 3600, 1000, False)
    again = ledger.reserve(co, "call-1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    assert again.duplicate and (again.amount, again.max_secs, again.expires_ms) == (600, 3600, first.expires_ms)
    status = ledger.status(co)
    assert status.reserved == 600 and len(status.reservations) == 1
    live = status.reservations[0]
    assert (live.call_id, live.ext, live.to, live.amount) == ("call-1", "2001", "+447911123456", 600)


def test_reservations_share_the_balance(ledger, co):
    funded(ledger, co, 1000)
    a = ledger.reserve(co, "a", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    b = ledger.reserve(co, "b", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    assert (a.amount, b.available_before, b.amount, b.max_secs) == (600, 400, 400, 2400)
    refused("INSUFFICIENT_FUNDS", ledger.reserve, co, "c", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    assert ledger.status(co).available == 0


def test_cap_below_first_increment_is_an_argument_error(ledger, co):
    funded(ledger, co, 1000)
    refused("BAD_ARGUMENT", ledger.reserve, co, "c", PER_MIN, cap_secs=59, ttl_ms=TTL)


# ---------------------------------------------------------------- settle

def test_settle_charges_billed_time_and_writes_cdr(ledger, co):
    funded(ledger, co, 1000)
    res = ledger.reserve(co, "c1", UK_MOBILE, cap_secs=HOUR, ttl_ms=TTL, ext="2001", to="+447911123456")
    out = ledger.settle(co, "c1", 61, {"disposition": "answered", "from": "2001"})
    assert (out.cost, out.billed_secs, out.balance, out.duplicate) == (43, 90, 957, False)
    assert out.cost == money.cost(UK_MOBILE, 61)
    status = ledger.status(co)
    assert (status.balance, status.reserved, status.reservations) == (957, 0, ())
    [(_, rec)] = ledger.cdrs(co)
    assert rec["call_id"] == "c1" and rec["cost"] == 43 and rec["billed_secs"] == 90
    assert rec["balance_after"] == 957 and rec["reserved"] == res.amount and rec["max_secs"] == res.max_secs
    assert rec["disposition"] == "answered" and rec["from"] == "2001" and rec["to"] == "+447911123456"
    assert rec["rate"] == money.rate_to_dict(UK_MOBILE) and rec["settled_ms"] == out.settled_ms


def test_settle_unanswered_costs_nothing(ledger, co):
    funded(ledger, co, 1000)
    ledger.reserve(co, "c1", UK_MOBILE, cap_secs=HOUR, ttl_ms=TTL)
    out = ledger.settle(co, "c1", 0, {"disposition": "busy"})
    assert (out.cost, out.billed_secs, out.balance) == (0, 0, 1000)
    assert ledger.status(co).reserved == 0
    assert ledger.cdrs(co)[0][1]["disposition"] == "busy"


def test_settle_twice_charges_once(ledger, co):
    funded(ledger, co, 1000)
    ledger.reserve(co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    first = ledger.settle(co, "c1", 125, {"disposition": "answered"})
    second = ledger.settle(co, "c1", 125, {"disposition": "answered"})
    third = ledger.settle(co, "c1", 3000, {"disposition": "answered"})  # a lying retransmission
    assert first.cost == 30 and not first.duplicate
    for again in (second, third):
        assert again.duplicate and (again.cost, again.billed_secs, again.balance) == (30, 180, 970)
        assert again.settled_ms == first.settled_ms
    assert ledger.status(co).balance == 970 and len(ledger.cdrs(co)) == 1


def test_settle_clamps_to_the_reservation(ledger, co):
    """A call that overran its cut-off is charged what was reserved, never more."""
    funded(ledger, co, 100)
    res = ledger.reserve(co, "c1", UK_MOBILE, cap_secs=HOUR, ttl_ms=TTL)
    out = ledger.settle(co, "c1", 10 * HOUR, {})
    assert out.billed_secs == res.max_secs and out.cost == res.amount <= 100
    assert out.balance == 100 - res.amount >= 0


def test_settle_without_reservation_charges_nothing(ledger, co):
    funded(ledger, co, 1000)
    out = ledger.settle(co, "ghost", 300, {"disposition": "answered", "to": "+447911123456"})
    assert (out.cost, out.billed_secs, out.balance, out.note) == (0, 0, 1000, "no-reservation")
    [(_, rec)] = ledger.cdrs(co)
    assert (rec["cost"], rec["note"], rec["disposition"], rec["call_id"]) == (0, "no-reservation", "answered", "ghost")
    assert ledger.settle(co, "ghost", 300, {}).duplicate


def test_settled_index_is_trimmed_after_a_day(ledger, rclient, co):
    k = Keys.of(co)
    funded(ledger, co, 1000)
    now_ms = int(rclient.time()[0]) * 1000
    rclient.zadd(k.settled, {"old": now_ms - 25 * 3600 * 1000, "recent": now_ms - 3600 * 1000})
    rclient.hset(k.outcomes, mapping={"old": msgpack.packb({"cost": 1}), "recent": msgpack.packb({"cost": 1})})
    ledger.settle(co, "new", 0, {})
    assert rclient.zscore(k.settled, "old") is None and not rclient.hexists(k.outcomes, "old")
    assert rclient.zscore(k.settled, "recent") is not None and rclient.hexists(k.outcomes, "recent")


def test_record_appends_a_non_prepaid_cdr(ledger, co):
    entry = ledger.record(co, {"call_id": "x1", "to": "+33142685300", "disposition": "answered", "secs": 42})
    [(entry_id, rec)] = ledger.cdrs(co)
    assert entry_id == entry and rec == {"call_id": "x1", "to": "+33142685300", "disposition": "answered",
                                         "secs": 42}
    refused("BAD_ARGUMENT", ledger.record, co, [1, 2])


# ---------------------------------------------------------------- expiry

def test_expired_reservation_is_purged_and_frees_funds(ledger, co):
    funded(ledger, co, 100)
    first = ledger.reserve(co, "stale", PER_MIN, cap_secs=HOUR, ttl_ms=200, ext="2001", to="+44207")
    assert first.amount == 100
    refused("INSUFFICIENT_FUNDS", ledger.reserve, co, "blocked", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    time.sleep(0.3)
    assert ledger.status(co).reserved == 0  # no longer live even before the purge
    second = ledger.reserve(co, "fresh", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    assert (second.available_before, second.amount) == (100, 100)
    [(_, rec)] = ledger.cdrs(co)
    assert (rec["call_id"], rec["disposition"], rec["cost"], rec["reserved"]) == ("stale", "reservation-expired", 0, 100)
    assert rec["ext"] == "2001" and rec["to"] == "+44207"
    # the stale call's BYE comes too late: its funds went to another call, it is not charged
    out = ledger.settle(co, "stale", 600, {"disposition": "answered"})
    assert (out.cost, out.note, out.balance) == (0, "no-reservation", 100)
    again = ledger.settle(co, "stale", 600, {"disposition": "answered"})
    assert again.duplicate and again.cost == 0
    assert ledger.renew(co, "stale", TTL) is None
    assert cdr_costs(ledger, co) == 0 and ledger.status(co).balance == 100


def test_settle_after_expiry_without_purge_charges_nothing(ledger, co):
    funded(ledger, co, 100)
    ledger.reserve(co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=150)
    time.sleep(0.25)
    out = ledger.settle(co, "c1", 60, {})
    assert (out.cost, out.note, out.balance) == (0, "no-reservation", 100)
    dispositions = [rec.get("disposition") for _, rec in ledger.cdrs(co)]
    assert dispositions[0] == "reservation-expired" and len(dispositions) == 2


def test_renew_extends_a_live_reservation(ledger, co):
    funded(ledger, co, 100)
    res = ledger.reserve(co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=300)
    expires = ledger.renew(co, "c1", 5_000)
    assert expires is not None and expires > res.expires_ms
    assert ledger.renew(co, "c1", 1) == expires  # never shortens
    time.sleep(0.4)
    assert ledger.status(co).reserved == 100  # still live past the first TTL
    assert ledger.settle(co, "c1", 60, {}).cost == 10
    assert ledger.renew(co, "c1", 5_000) is None  # settled: nothing to renew
    assert ledger.renew(co, "never", 5_000) is None


# ---------------------------------------------------------------- concurrency

def run_threads(n, target):
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # collected and checked by the test
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_fifty_concurrent_reserves_on_ten_reservations_of_funds(ledger, co):
    funded(ledger, co, 100)  # 10 x 10 cents: one first minute each
    results = run_threads(50, lambda i: ledger.reserve(co, f"c{i}", PER_MIN, cap_secs=60, ttl_ms=TTL))
    ok = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(ok) == 10 and all(r.amount == 10 and r.max_secs == 60 for r in ok)
    assert len(errors) == 40 and all(isinstance(e, PrepaidError) and e.code == "INSUFFICIENT_FUNDS"
                                     for e in errors)
    status = ledger.status(co)
    assert (status.balance, status.reserved, len(status.reservations)) == (100, 100, 10)


def test_concurrent_settles_of_one_call_charge_once(ledger, co):
    funded(ledger, co, 1000)
    ledger.reserve(co, "c1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL)
    results = run_threads(20, lambda i: ledger.settle(co, "c1", 90, {"disposition": "answered"}))
    assert all(not isinstance(r, Exception) for r in results), results
    assert sum(not r.duplicate for r in results) == 1 and all(r.cost == 20 for r in results)
    assert ledger.status(co).balance == 980 and cdr_costs(ledger, co) == 20


def test_concurrent_duplicate_topups_credit_once(ledger, co):
    ledger.activate(co)
    results = run_threads(20, lambda i: ledger.topup(co, "same-payment", 500))
    assert sum(not r.duplicate for r in results) == 1
    assert ledger.status(co).balance == 500


def test_concurrent_mixed_traffic_conserves_money(ledger, co):
    funded(ledger, co, 5000)

    def call(i):
        rng = random.Random(i)
        try:
            ledger.reserve(co, f"c{i}", UK_MOBILE, cap_secs=rng.choice([60, 600, HOUR]), ttl_ms=TTL)
        except PrepaidError:
            pass
        if i % 3 == 0:
            ledger.topup(co, f"t{i}", 100)
        return ledger.settle(co, f"c{i}", rng.randrange(0, 4000), {})

    results = run_threads(40, call)
    assert all(not isinstance(r, Exception) for r in results), results
    status = ledger.status(co)
    topups = 100 * len(range(0, 40, 3))
    assert status.balance == 5000 + topups - cdr_costs(ledger, co) >= 0
    assert status.reserved == 0


# ---------------------------------------------------------------- properties

@st.composite
def rates(draw):
    per_minute = draw(st.one_of(st.integers(0, 300), st.integers(0, money.MAX_PER_MINUTE)))
    fee = draw(st.one_of(st.just(0), st.integers(0, 100), st.integers(0, money.MAX_CONNECTION_FEE)))
    first = draw(st.sampled_from([1, 30, 60]) | st.integers(1, money.MAX_INCREMENT))
    nxt = draw(st.sampled_from([1, 6, 60]) | st.integers(1, money.MAX_INCREMENT))
    return Rate("+44", per_minute, fee, first, nxt)


@hyp(300)
@given(rate=rates(), funds=st.one_of(st.integers(0, 5000), st.integers(0, money.MAX_BALANCE)),
       cap=st.integers(1, money.MAX_CAP_SECS), answered=st.integers(-5, 2 * money.MAX_CAP_SECS))
def test_lua_arithmetic_equals_money_py(ledger, new_co, rate, funds, cap, answered):
    co = new_co()
    funded(ledger, co, funds)
    cap = max(cap, rate.first)
    expected = money.max_duration(rate, funds, cap)
    if expected == 0:
        err = refused("INSUFFICIENT_FUNDS", ledger.reserve, co, "c", rate, cap_secs=cap, ttl_ms=TTL)
        assert err.available == funds
        return
    res = ledger.reserve(co, "c", rate, cap_secs=cap, ttl_ms=TTL)
    assert (res.max_secs, res.amount) == (expected, money.cost(rate, expected))
    out = ledger.settle(co, "c", answered, {})
    billed = min(money.billed_seconds(rate, answered), expected)
    assert (out.billed_secs, out.cost) == (billed, money.cost(rate, billed))
    assert out.balance == funds - out.cost >= 0


ops = st.lists(st.one_of(
    st.tuples(st.just("topup"), st.integers(1, 3), st.integers(1, 2000)),  # (ref number, amount)
    st.tuples(st.just("reserve"), st.integers(0, 5), st.sampled_from([60, 90, 600, HOUR]),
              st.sampled_from([1, TTL])),  # a 1 ms TTL expires during the sequence
    st.tuples(st.just("settle"), st.integers(0, 5), st.integers(-1, 2 * HOUR)),
    st.tuples(st.just("renew"), st.integers(0, 5)),
    st.tuples(st.just("toggle"), st.booleans()),
), max_size=40)


@hyp(150)
@given(rate=rates(), opening=st.integers(0, 3000), script=ops)
def test_conservation_of_money(ledger, new_co, rate, opening, script):
    """opening + topups - CDR costs == closing, exactly, and the balance never dips below 0."""
    co = new_co()
    funded(ledger, co, opening)
    topups = {}
    for op in script:
        try:
            if op[0] == "topup":
                ref, amount = f"ref-{op[1]}", op[2]
                if ledger.topup(co, ref, topups.get(ref, amount)).duplicate is False:
                    topups[ref] = amount
            elif op[0] == "reserve":
                ledger.reserve(co, f"c{op[1]}", rate, cap_secs=max(op[2], rate.first), ttl_ms=op[3])
            elif op[0] == "settle":
                ledger.settle(co, f"c{op[1]}", op[2], {})
            elif op[0] == "renew":
                ledger.renew(co, f"c{op[1]}", TTL)
            else:
                (ledger.activate if op[1] else ledger.deactivate)(co)
        except PrepaidError as err:
            assert err.code in ("INSUFFICIENT_FUNDS", "NOT_ACTIVE"), err
        status = ledger.status(co)
        assert 0 <= status.reserved <= status.balance
    closing = ledger.status(co).balance
    assert opening + sum(topups.values()) - cdr_costs(ledger, co) == closing >= 0


def test_the_record_keeps_the_sip_call_id_and_the_minted_reservation_id(ledger, co):
    ledger.activate(co, "EUR")
    ledger.topup(co, "pay-1", 10_000)
    ledger.reserve(co, "r-1", PER_MIN, cap_secs=HOUR, ttl_ms=TTL, meta={"call_id": "same@phone"})
    ledger.reserve(co, "r-2", PER_MIN, cap_secs=HOUR, ttl_ms=TTL, meta={"call_id": "same@phone"})
    first = ledger.settle(co, "r-1", 60, {"call_id": "same@phone"})
    second = ledger.settle(co, "r-2", 60, {"call_id": "same@phone"})
    assert first.cost == second.cost > 0 and not second.duplicate  # a reused Call-ID is charged again
    records = [r for _, r in ledger.cdrs(co)]
    assert [(r["call_id"], r["reservation"]) for r in records] == [("same@phone", "r-1"), ("same@phone", "r-2")]
