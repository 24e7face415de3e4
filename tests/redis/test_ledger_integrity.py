"""The ledger against damaged data and bad calls, on a real redis-server.

A Redis Function does not roll back what it wrote before an error, so every
`prepaid` function must check everything it will read or write before its
first write. Each test here damages one thing (a key of the wrong type, a
stored value that is not what the library writes, an index without its hash
entry, a bad argument or key name), calls a function, and checks the coded
refusal AND that every key of the company is byte-identical (DUMP) afterwards.
"""

from __future__ import annotations

import re
import string
import time

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kemi import money, records
from kemi.money import Rate
from kemi.store.prepaid import Keys, PrepaidError

RATE = Rate("+44", per_minute=10)  # 60/60: 600 s cost 100
TTL = 60_000
CAP = 600


def hyp(examples):
    return settings(deadline=None, max_examples=examples)


def snapshot(r, co):
    """Every key of the company, as DUMP bytes: any write shows."""
    keys = sorted(r.scan_iter(match=f"{{co:{co}}}:*", count=1000))
    return {key: (r.type(key), r.dump(key)) for key in keys}


def now_ms(r):
    secs, micros = r.time()
    return secs * 1000 + micros // 1000


def healthy(ledger, r, co):
    """Every key of a company in use: a top-up, a settled call (and its CDR), two live
    reservations and one expired that nothing has purged yet."""
    ledger.activate(co, "EUR")
    ledger.topup(co, "pay-1", 1000)
    ledger.reserve(co, "done-1", RATE, cap_secs=CAP, ttl_ms=TTL, ext="2001", to="+442071234567")
    ledger.settle(co, "done-1", 90, {"disposition": "answered"})
    for call_id in ("live-1", "live-2"):
        ledger.reserve(co, call_id, RATE, cap_secs=CAP, ttl_ms=TTL, ext="2002", to="+442071234568")
    ledger.reserve(co, "stale-1", RATE, cap_secs=CAP, ttl_ms=1)
    time.sleep(0.01)
    k = Keys.of(co)
    assert r.zscore(k.resv, "stale-1") <= now_ms(r) and r.hexists(k.calls, "stale-1")
    return k


# What each call opens, and whether it writes when the ledger is sound.
CASES = {
    "activate": (("prepaid",), False, lambda led, co: led.activate(co, "EUR")),
    "deactivate": (("prepaid",), True, lambda led, co: led.deactivate(co)),
    "topup-new": (("prepaid", "topups"), True, lambda led, co: led.topup(co, "pay-2", 5)),
    "topup-repeat": (("prepaid", "topups"), False, lambda led, co: led.topup(co, "pay-1", 1000)),
    "reserve-new": (("prepaid", "resv", "calls", "cdr"), True,
                    lambda led, co: led.reserve(co, "new-1", RATE, cap_secs=CAP, ttl_ms=TTL)),
    "reserve-repeat": (("prepaid", "resv", "calls", "cdr"), False,
                       lambda led, co: led.reserve(co, "live-1", RATE, cap_secs=CAP, ttl_ms=TTL)),
    "renew": (("resv",), True, lambda led, co: led.renew(co, "live-1", 2 * TTL)),
    "settle-live": (("prepaid", "resv", "calls", "settled", "cdr", "outcomes"), True,
                    lambda led, co: led.settle(co, "live-1", 30, {"disposition": "answered"})),
    "settle-repeat": (("prepaid", "resv", "calls", "settled", "cdr", "outcomes"), False,
                      lambda led, co: led.settle(co, "done-1", 90, {"disposition": "answered"})),
    "record": (("cdr",), True, lambda led, co: led.record(co, {"call_id": "x", "disposition": "answered"})),
    "status": (("prepaid", "resv", "calls"), False, lambda led, co: led.status(co)),
}
KINDS = {"prepaid": b"hash", "resv": b"zset", "calls": b"hash", "topups": b"hash", "settled": b"zset",
         "outcomes": b"hash", "cdr": b"stream"}
MAKERS = {
    b"string": lambda r, key: r.set(key, b"garbage"),
    b"list": lambda r, key: r.rpush(key, b"garbage"),
    b"set": lambda r, key: r.sadd(key, b"garbage"),
    b"hash": lambda r, key: r.hset(key, "balance", "5"),
    b"zset": lambda r, key: r.zadd(key, {"live-1": 1}),
    b"stream": lambda r, key: r.xadd(key, {"r": b"\x80"}),
}


def refused_unchanged(ledger, r, co, case, *, code="LEDGER_BROKEN", names=()):
    before = snapshot(r, co)
    with pytest.raises(PrepaidError) as info:
        CASES[case][2](ledger, co)
    assert info.value.code == code, str(info.value)
    for name in names:  # the operator is told which key to look at
        assert getattr(Keys.of(co), name) in info.value.message, str(info.value)
    assert snapshot(r, co) == before
    return info.value


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_call_succeeds_on_a_sound_ledger(ledger, rclient, co, case):
    """The control for everything below: the refusals come from the damage, not from the call."""
    healthy(ledger, rclient, co)
    before = snapshot(rclient, co)
    CASES[case][2](ledger, co)
    assert (snapshot(rclient, co) != before) == CASES[case][1]


@pytest.mark.parametrize("case,name,kind", [(case, name, kind) for case, (names, _, _) in sorted(CASES.items())
                                            for name in names for kind in MAKERS if kind != KINDS[name]])
def test_a_key_of_the_wrong_type_is_refused_and_nothing_changes(ledger, rclient, co, case, name, kind):
    k = healthy(ledger, rclient, co)
    rclient.delete(getattr(k, name))
    MAKERS[kind](rclient, getattr(k, name))
    err = refused_unchanged(ledger, rclient, co, case, names=(name,))
    assert kind.decode() in err.message


# ---------------------------------------------------------------- damaged values

def packed(value):
    return msgpack.packb(value, use_bin_type=True)


def stored_map(r, key, field):
    return msgpack.unpackb(r.hget(key, field), raw=False)


def edit_map(key_name, field, change):
    """Replace hash field `field` of key `key_name` by change(its decoded map) (a dict or raw bytes)."""
    def apply(r, k):
        key = getattr(k, key_name)
        new = change(stored_map(r, key, field))
        r.hset(key, field, new if isinstance(new, bytes) else packed(new))
    return apply


def without(*path):
    def change(m):
        inner = m
        for step in path[:-1]:
            inner = inner[step]
        del inner[path[-1]]
        return m
    return change


def with_value(value, *path):
    def change(m):
        inner = m
        for step in path[:-1]:
            inner = inner[step]
        inner[path[-1]] = value
        return m
    return change


PREPAID_READERS = {"activate", "deactivate", "topup-new", "topup-repeat", "reserve-new", "reserve-repeat",
                   "settle-live", "settle-repeat", "status"}
LIVE_READERS = {"reserve-new", "reserve-repeat", "settle-live", "status"}  # read live-1's reservation
PAIR_READERS = {"reserve-new", "reserve-repeat", "settle-live", "settle-repeat", "status"}  # resv <-> calls
PURGERS = {"reserve-new", "reserve-repeat", "settle-live", "settle-repeat"}  # read expired reservations
SETTLERS = {"settle-live", "settle-repeat"}

RESERVATION_DAMAGE = {
    "not msgpack": lambda m: b"\xc1",
    "empty": lambda m: b"",
    "truncated": lambda m: packed(m)[:-3],
    "trailing bytes": lambda m: packed(m) + b"\x01",
    "an array": lambda m: packed(list(m.values())),
    "a string": lambda m: packed("amount=100"),
    "no amount": without("amount"),
    "amount lowered": lambda m: with_value(m["amount"] - 1, "amount")(m),
    "amount a float": lambda m: with_value(m["amount"] + 0.5, "amount")(m),
    "amount a string": lambda m: with_value(str(m["amount"]), "amount")(m),
    "max_secs 0": with_value(0, "max_secs"),
    "max_secs above the cap": with_value(money.MAX_CAP_SECS + 60, "max_secs"),
    "no rate": without("rate"),
    "rate an array": with_value([1, 2], "rate"),
    "per_minute negative": with_value(-10, "rate", "per_minute"),
    "per_minute lowered": with_value(1, "rate", "per_minute"),
    "first 0": with_value(0, "rate", "first"),
    "no next": without("rate", "next"),
    "prefix not E.164": with_value("44", "rate", "prefix"),
    "available_before negative": with_value(-1, "available_before"),
    "setup_ms a bool": with_value(True, "setup_ms"),
    "ext a number": with_value(2002, "ext"),
}
OUTCOME_DAMAGE = {
    "not msgpack": lambda m: b"\xc1",
    "an array": lambda m: packed([m["cost"]]),
    "no cost": without("cost"),
    "cost negative": with_value(-20, "cost"),
    "billed_secs a string": with_value("120", "billed_secs"),
    "no settled_ms": without("settled_ms"),
    "note a number": with_value(1, "note"),
}
TOPUP_DAMAGE = {
    "not msgpack": lambda m: b"\xc1",
    "a number": lambda m: packed(1000),
    "amount a float": with_value(1000.5, "amount"),
    "no at_ms": without("at_ms"),
    "balance_after beyond the limit": with_value(money.MAX_BALANCE + 1, "balance_after"),
}


def field_value(field, value):
    return lambda r, k: r.hset(k.prepaid, field, value)


def zadd(key_name, member, score_of_now):
    return lambda r, k: r.zadd(getattr(k, key_name), {member: score_of_now(now_ms(r))})


DAMAGE = {  # name: (damaged key, how, the calls that read it)
    **{f"balance {v!r}": ("prepaid", field_value("balance", v), PREPAID_READERS)
       for v in (b"abc", b"", b"-5", b"007", b"1.5", b"1e3", b" 5", b"+5", b"0x10", b"10000000000001",
                 b"99999999999999999999")},
    **{f"active {v!r}": ("prepaid", field_value("active", v), PREPAID_READERS) for v in (b"yes", b"2", b"")},
    **{f"currency {v!r}": ("prepaid", field_value("currency", v), PREPAID_READERS)
       for v in (b"eur", b"EURO", b"E1R", "ÉUR".encode())},
    "live expiry +inf": ("resv", lambda r, k: r.zadd(k.resv, {"live-1": float("inf")}), LIVE_READERS | {"renew"}),
    "live expiry fractional": ("resv", zadd("resv", "live-1", lambda now: now + TTL + 0.5),
                               LIVE_READERS | {"renew"}),
    "index entry without reservation": ("resv", zadd("resv", "ghost", lambda now: now + TTL), PAIR_READERS),
    "expired index entry without reservation": ("resv", zadd("resv", "ghost", lambda now: now - TTL),
                                                PAIR_READERS),
    "reservation without index entry": ("calls", lambda r, k: r.zrem(k.resv, "live-1"), PAIR_READERS),
    "stray reservation": ("calls", lambda r, k: r.hset(k.calls, "ghost", r.hget(k.calls, "live-2")), PAIR_READERS),
    # the counts agree: seen by the calls that read live-1 (a repeated settle of done-1 reads neither)
    "one id in each": ("calls", lambda r, k: (r.zrem(k.resv, "live-2"), r.hdel(k.calls, "live-1")),
                       LIVE_READERS),
    **{f"live reservation {name}": ("calls", edit_map("calls", "live-1", change), LIVE_READERS)
       for name, change in RESERVATION_DAMAGE.items()},
    **{f"expired reservation {name}": ("calls", edit_map("calls", "stale-1", change), PURGERS)
       for name, change in RESERVATION_DAMAGE.items()},
    **{f"top-up {name}": ("topups", edit_map("topups", "pay-1", change), {"topup-repeat"})
       for name, change in TOPUP_DAMAGE.items()},
    **{f"outcome {name}": ("outcomes", edit_map("outcomes", "done-1", change), {"settle-repeat"})
       for name, change in OUTCOME_DAMAGE.items()},
    "settled without outcome": ("settled", zadd("settled", "ghost", lambda now: now), SETTLERS),
    "outcome without settled": ("outcomes", lambda r, k: r.zrem(k.settled, "done-1"), SETTLERS),
    "stray outcome": ("outcomes", lambda r, k: r.hset(k.outcomes, "ghost", r.hget(k.outcomes, "done-1")), SETTLERS),
}


@pytest.mark.parametrize("case,damage", [(case, name) for name, (_, _, cases) in DAMAGE.items()
                                         for case in sorted(cases)])
def test_damaged_stored_data_is_refused_and_nothing_changes(ledger, rclient, co, case, damage):
    k = healthy(ledger, rclient, co)
    key_name, apply, _ = DAMAGE[damage]
    apply(rclient, k)
    refused_unchanged(ledger, rclient, co, case, names=(key_name,))


def test_every_call_meets_damage_somewhere():
    """The matrix covers every call and every key of each call."""
    covered = {(case, key) for key, _, cases in DAMAGE.values() for case in cases}
    assert {case for case, _ in covered} == set(CASES) - {"record"}  # record reads nothing stored
    for case in CASES:
        assert {key for c, key in covered if c == case} <= set(CASES[case][0])


def test_a_settlement_never_half_applies_on_a_damaged_cdr(ledger, rclient, co):
    """The review's case: the debit ran, then the CDR write failed on a wrong-type key."""
    k = healthy(ledger, rclient, co)
    rclient.delete(k.cdr)
    rclient.set(k.cdr, b"not a stream")
    refused_unchanged(ledger, rclient, co, "settle-live", names=("cdr",))
    assert ledger.status(co).balance == 980 and rclient.hexists(k.calls, "live-1")
    rclient.delete(k.cdr)  # repaired by hand: the same settlement now goes through once
    assert ledger.settle(co, "live-1", 30, {}).cost == 10
    assert ledger.status(co).balance == 970 and not rclient.hexists(k.calls, "live-1")


# single-field damage of a real reservation, drawn: every one is refused, by every reader
packable_ints = st.integers(-2**63, 2**64 - 1)  # what msgpack can carry


def bad_values():
    return st.one_of(
        st.text(max_size=4), st.booleans(), st.lists(st.integers(0, 9), max_size=2),
        st.dictionaries(st.text(max_size=2), packable_ints, max_size=1),
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer()),
        st.integers(-2**63, -1), st.integers(2**53, 2**64 - 1))


REQUIRED = [("amount",), ("max_secs",), ("available_before",), ("setup_ms",), ("rate",), ("rate", "prefix"),
            ("rate", "per_minute"), ("rate", "connection_fee"), ("rate", "first"), ("rate", "next")]


@st.composite
def reservation_damage(draw):
    path = draw(st.sampled_from(REQUIRED + [("ext",), ("to",)]))
    if path in (("ext",), ("to",)):
        return path, draw(st.one_of(packable_ints, st.booleans(), st.lists(packable_ints, max_size=1)))
    if path == ("rate", "prefix"):
        return path, draw(st.one_of(packable_ints, st.from_regex(r"\A[0-9][0-9]{0,5}\Z"),
                                    st.from_regex(r"\A\+[0-9]{17,20}\Z"), st.just("+4a")))
    if path in (("amount",), ("rate", "per_minute"), ("rate", "connection_fee")):
        # any other price, even a valid-looking one, disagrees with the stored amount
        return path, draw(st.one_of(bad_values(), st.integers(0, money.MAX_PER_MINUTE).filter(
            lambda v: v != {("amount",): 100, ("rate", "per_minute"): 10, ("rate", "connection_fee"): 0}[path])))
    return path, draw(st.one_of(bad_values(), st.just(None)))  # None: the field is missing


@hyp(120)
@given(damage=reservation_damage(), case=st.sampled_from(sorted(LIVE_READERS)))
def test_any_damage_to_a_live_reservation_is_refused(ledger, rclient, new_co, damage, case):
    co = new_co()
    k = healthy(ledger, rclient, co)
    path, value = damage
    entry = stored_map(rclient, k.calls, "live-1")
    assert entry["amount"] == 100 and entry["rate"]["per_minute"] == 10 and entry["rate"]["connection_fee"] == 0
    edit = without(*path) if value is None else with_value(value, *path)
    rclient.hset(k.calls, "live-1", packed(edit(entry)))
    refused_unchanged(ledger, rclient, co, case, names=("calls",))


def canonical_balance(raw: bytes) -> bool:
    """What HINCRBY accepts and the ledger can hold: no sign, no leading zero, at most 10^13."""
    return re.fullmatch(rb"0|[1-9][0-9]{0,13}", raw) is not None and int(raw) <= money.MAX_BALANCE


@hyp(150)
@given(raw=st.one_of(st.integers(-10**14, 10**14).map(lambda n: str(n).encode()),
                     st.text(alphabet="0123456789-+. eEx", max_size=16).map(str.encode),
                     st.binary(max_size=6)),
       case=st.sampled_from(["status", "deactivate", "topup-new", "settle-live"]))
@example(raw=b"10000000000000", case="status")
@example(raw=b"0", case="settle-live")
def test_the_balance_is_used_only_when_it_is_a_canonical_integer(ledger, rclient, new_co, raw, case):
    co = new_co()
    k = healthy(ledger, rclient, co)
    rclient.hset(k.prepaid, "balance", raw)
    if not canonical_balance(raw):
        refused_unchanged(ledger, rclient, co, case, names=("prepaid",))
        return
    before = snapshot(rclient, co)
    try:
        CASES[case][2](ledger, co)
    except PrepaidError as err:  # a sound balance too low (or too high) for this call
        assert (err.code, "below cost" in err.message) in (("LEDGER_BROKEN", True), ("BALANCE_LIMIT", False)), err
        assert snapshot(rclient, co) == before
    else:
        assert 0 <= int(rclient.hget(k.prepaid, "balance")) <= money.MAX_BALANCE


# ---------------------------------------------------------------- bad calls

def fcall(r, name, keys, *args):
    return r.fcall(name, len(keys), *keys, *args)


def lua_refused(r, co, code, name, keys, *args):
    before = snapshot(r, co)
    with pytest.raises(Exception) as info:
        fcall(r, name, keys, *args)
    assert str(info.value).split()[0] == code, str(info.value)
    assert snapshot(r, co) == before


GOOD_RATE = packed(money.rate_to_dict(RATE))
META = packed({"ext": "2001", "to": "+442071234567"})
FUNCTION_KEYS = {
    "prepaid_activate": ("prepaid",), "prepaid_deactivate": ("prepaid",), "prepaid_topup": ("prepaid", "topups"),
    "prepaid_reserve": ("prepaid", "resv", "calls", "cdr"), "prepaid_renew": ("resv",),
    "prepaid_settle": ("prepaid", "resv", "calls", "settled", "cdr", "outcomes", "ledger"), "prepaid_record": ("cdr",),
    "prepaid_status": ("prepaid", "resv", "calls"), "prepaid_ledger_open": ("prepaid", "topups", "ledger", "opening"),
}
GOOD_ARGS = {
    "prepaid_activate": ("EUR",), "prepaid_deactivate": (), "prepaid_topup": ("pay-9", 5),
    "prepaid_reserve": ("new-1", TTL, CAP, GOOD_RATE, META), "prepaid_renew": ("live-1", TTL),
    "prepaid_settle": ("live-1", 30, packed({})), "prepaid_record": (packed({"call_id": "x"}),),
    "prepaid_status": (), "prepaid_ledger_open": (),
}
BAD_CALL_IDS = ["", "x" * 129, "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "é", "\u2028"]
BAD_ARGS = {
    "prepaid_activate": [(), ("eur",), ("EURO",), ("EUR", "x")],
    "prepaid_deactivate": [("x",)],
    "prepaid_topup": [("", 5), ("r" * 257, 5), ("r", 0), ("r", "1.5"), ("r", "x"), ("r",), ("r", 5, "x"),
                      ("r", 10**13 + 1)],
    "prepaid_reserve": [(c, TTL, CAP, GOOD_RATE, META) for c in BAD_CALL_IDS] + [
        ("n", 0, CAP, GOOD_RATE, META), ("n", 2 * 86_400_000 + 1, CAP, GOOD_RATE, META),
        ("n", TTL, 0, GOOD_RATE, META), ("n", TTL, 59, GOOD_RATE, META), ("n", TTL, 86_401, GOOD_RATE, META),
        ("n", TTL, CAP, GOOD_RATE, b"\xc1"), ("n", TTL, CAP, GOOD_RATE, packed([1])),
        ("n", TTL, CAP, GOOD_RATE, packed({"ext": 2001})), ("n", TTL, CAP, GOOD_RATE, packed({"to": ["x"]})),
        ("n", TTL, CAP, GOOD_RATE, packed({"pad": "x" * 5000})), ("n", TTL, CAP, GOOD_RATE),
        ("n", TTL, CAP, GOOD_RATE, META, "x")],
    "prepaid_renew": [(c, TTL) for c in BAD_CALL_IDS] + [("live-1", 0), ("live-1", "1e3"), ("live-1",)],
    "prepaid_settle": [(c, 30, packed({})) for c in BAD_CALL_IDS] + [
        ("live-1", "x", packed({})), ("live-1", 30, b"\xc1"), ("live-1", 30, packed("answered")),
        ("live-1", 30, packed({"pad": "x" * 70_000})), ("live-1", 30), ("live-1", 30, packed({}), "x")],
    "prepaid_record": [(b"\xc1",), (packed([1, 2]),), (packed({"pad": "x" * 70_000}),), (),
                       (packed({}), "x")],
    "prepaid_status": [("x",)],
    "prepaid_ledger_open": [("x",)],
}


@pytest.mark.parametrize("name,args", [(n, a) for n, variants in BAD_ARGS.items() for a in variants])
def test_bad_arguments_are_refused_and_nothing_changes(ledger, rclient, co, name, args):
    k = healthy(ledger, rclient, co)
    keys = [getattr(k, key) for key in FUNCTION_KEYS[name]]
    lua_refused(rclient, co, "BAD_ARGUMENT", name, keys, *args)


@pytest.mark.parametrize("name", sorted(FUNCTION_KEYS))
def test_good_arguments_of_the_bad_argument_tests_are_accepted(ledger, rclient, co, name):
    k = healthy(ledger, rclient, co)
    fcall(rclient, name, [getattr(k, key) for key in FUNCTION_KEYS[name]], *GOOD_ARGS[name])


def key_variants(co, names):
    k, other = Keys.of(co), Keys.of(co + "x")
    keys = [getattr(k, n) for n in names]
    yield "one key too few", keys[:-1]
    yield "one key too many", keys + [k.topups if "topups" not in names else k.cdr]
    if len(keys) > 1:  # alone, another company's key is a sound call for that company
        yield "another company's key last", keys[:-1] + [getattr(other, names[-1])]
    yield "no hash tag", [key.replace("{co:", "co:").replace("}", "") for key in keys]
    yield "capitals in the tag", [key.replace(co, co.upper()) for key in keys]
    yield "a space in the tag", [key.replace(co, co + " x") for key in keys]
    yield "another key name", keys[:-1] + [keys[-1] + "2"]
    if len(keys) > 1:
        yield "keys swapped", [keys[1], keys[0]] + keys[2:]
    else:
        yield "the wrong key", [k.outcomes]


@pytest.mark.parametrize("name", sorted(FUNCTION_KEYS))
def test_bad_keys_are_refused_and_nothing_changes(ledger, rclient, co, name):
    healthy(ledger, rclient, co)
    for why, keys in key_variants(co, FUNCTION_KEYS[name]):
        before = snapshot(rclient, co)
        with pytest.raises(Exception) as info:
            fcall(rclient, name, keys, *GOOD_ARGS[name])
        assert str(info.value).startswith("BAD_KEYS"), (why, str(info.value))
        assert snapshot(rclient, co) == before, why


def test_refusals_leave_expired_reservations_alone(ledger, rclient, co):
    """Every refusal changes nothing, not even the purge a successful reserve does."""
    k = healthy(ledger, rclient, co)
    dear = Rate("+44", per_minute=10, connection_fee=5000)

    def reserve_dear():
        return ledger.reserve(co, "new-1", dear, cap_secs=CAP, ttl_ms=TTL)

    before = snapshot(rclient, co)
    with pytest.raises(PrepaidError) as info:
        reserve_dear()
    assert info.value.code == "INSUFFICIENT_FUNDS" and info.value.available == 780
    assert snapshot(rclient, co) == before and rclient.hexists(k.calls, "stale-1")
    ledger.deactivate(co)
    refused_unchanged(ledger, rclient, co, "reserve-new", code="NOT_ACTIVE")
    assert rclient.hexists(k.calls, "stale-1")
    ledger.activate(co)
    ledger.reserve(co, "new-1", RATE, cap_secs=CAP, ttl_ms=TTL)  # a success purges it, with its record
    assert not rclient.hexists(k.calls, "stale-1")
    assert ledger.cdrs(co)[-1][1]["disposition"] == "reservation-expired"


# ---------------------------------------------------------------- call ids: opaque keys

CALL_ID_CHARS = string.ascii_letters + string.digits + string.punctuation  # printable ASCII, no space
call_ids = st.text(alphabet=CALL_ID_CHARS, min_size=1, max_size=128)


def test_call_ids_are_any_printable_ascii_up_to_128(ledger, rclient, co):
    ledger.activate(co)
    ledger.topup(co, "p", 10_000)
    for call_id in (CALL_ID_CHARS, "x" * 128, "*", "?", "[a-z]", "%d", "-inf", "+inf", "(5", "\\", '"'):
        res = ledger.reserve(co, call_id, RATE, cap_secs=60, ttl_ms=TTL)
        assert not res.duplicate and ledger.renew(co, call_id, TTL) is not None
        assert ledger.settle(co, call_id, 60, {}).cost == 10
    assert ledger.status(co).balance == 10_000 - 11 * 10
    for bad in BAD_CALL_IDS:
        with pytest.raises(PrepaidError) as info:
            ledger.reserve(co, bad, RATE, cap_secs=60, ttl_ms=TTL)
        assert info.value.code == "BAD_ARGUMENT"


@hyp(100)
@given(ids=st.lists(call_ids, min_size=2, max_size=2, unique=True), answered=st.integers(-1, 700))
@example(ids=["call-1", "call-1*"], answered=60)
@example(ids=["a", "A"], answered=60)
@example(ids=["1", "1.0"], answered=0)
def test_settling_one_id_leaves_another_ids_reservation_intact(ledger, rclient, new_co, ids, answered):
    co = new_co()
    k = Keys.of(co)
    mine, other = ids
    ledger.activate(co)
    ledger.topup(co, "p", 1000)
    ledger.reserve(co, mine, RATE, cap_secs=CAP, ttl_ms=TTL, ext="2001")
    ledger.reserve(co, other, RATE, cap_secs=CAP, ttl_ms=TTL, ext="2002")
    kept = (rclient.zscore(k.resv, other), rclient.hget(k.calls, other))
    out = ledger.settle(co, mine, answered, {})
    assert out.cost == money.cost(RATE, min(answered, CAP)) and not out.note
    assert (rclient.zscore(k.resv, other), rclient.hget(k.calls, other)) == kept
    assert not rclient.hexists(k.calls, mine) and rclient.zscore(k.settled, other) is None
    assert ledger.settle(co, mine, answered, {}).duplicate  # and again: still nothing of the other touched
    assert ledger.renew(co, mine, TTL) is None
    assert (rclient.zscore(k.resv, other), rclient.hget(k.calls, other)) == kept
    [live] = ledger.status(co).reservations
    assert (live.call_id, live.ext, live.amount) == (other, "2002", 100)
    assert ledger.settle(co, other, 600, {}).cost == 100
    assert ledger.status(co).balance == 1000 - out.cost - 100


other_ops = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 3), st.sampled_from([1, TTL])),
    st.tuples(st.just("settle"), st.integers(0, 3), st.integers(-1, 700)),
    st.tuples(st.just("renew"), st.integers(0, 3)),
    st.tuples(st.just("topup"), st.integers(1, 500)),
    st.tuples(st.just("toggle"), st.booleans()),
), max_size=25)


@hyp(60)
@given(script=other_ops)
def test_a_live_reservation_never_vanishes_under_other_calls(ledger, rclient, new_co, script):
    """While its call is up, nothing but its own settlement (or its expiry) removes it."""
    co = new_co()
    k = Keys.of(co)
    ledger.activate(co)
    ledger.topup(co, "p", 2000)
    ledger.reserve(co, "up", RATE, cap_secs=CAP, ttl_ms=TTL)
    kept = (rclient.zscore(k.resv, "up"), rclient.hget(k.calls, "up"))
    for n, op in enumerate(script):
        try:
            if op[0] == "reserve":
                ledger.reserve(co, f"o{op[1]}", RATE, cap_secs=CAP, ttl_ms=op[2])
            elif op[0] == "settle":
                ledger.settle(co, f"o{op[1]}", op[2], {})
            elif op[0] == "renew":
                ledger.renew(co, f"o{op[1]}", TTL)
            elif op[0] == "topup":
                ledger.topup(co, f"t{n}", op[1])
            else:
                (ledger.activate if op[1] else ledger.deactivate)(co)
        except PrepaidError as err:
            assert err.code in ("INSUFFICIENT_FUNDS", "NOT_ACTIVE"), err
        assert (rclient.zscore(k.resv, "up"), rclient.hget(k.calls, "up")) == kept
    assert "up" in {r.call_id for r in ledger.status(co).reservations}


def test_renew_never_revives_an_expired_or_missing_reservation(ledger, rclient, co):
    k = Keys.of(co)
    ledger.activate(co)
    ledger.topup(co, "p", 100)
    ledger.reserve(co, "short", RATE, cap_secs=CAP, ttl_ms=50)
    time.sleep(0.1)
    before = snapshot(rclient, co)
    assert ledger.renew(co, "short", TTL) is None  # expired, not yet purged: 0, untouched
    assert ledger.renew(co, "never", TTL) is None
    assert snapshot(rclient, co) == before and rclient.zscore(k.resv, "short") is not None
    assert ledger.status(co).reserved == 0


# ---------------------------------------------------------------- dispositions

def test_a_settlement_without_disposition_gets_the_records_vocabulary(ledger, rclient, co):
    """records.finish says `unanswered`; the ledger's default must be the same word."""
    ledger.activate(co)
    ledger.topup(co, "p", 1000)
    rec = records.start(company=co, extension="2001", caller="", to="+442071234567", category="international",
                        billing="prepaid", direction="outbound", call_id="u1", setup_ms=1, prepaid=True,
                        max_secs=CAP)
    unanswered = records.finish(rec, answer_ms=None, end_ms=2, failed=False)[0]["disposition"]
    answered = records.finish(rec, answer_ms=2, end_ms=5000, failed=False)[0]["disposition"]
    for call_id, secs, reserved in (("u1", 0, True), ("u2", -1, True), ("a1", 30, True), ("u3", 0, False),
                                    ("a2", 30, False)):
        if reserved:
            ledger.reserve(co, call_id, RATE, cap_secs=CAP, ttl_ms=TTL)
        ledger.settle(co, call_id, secs, {"to": "+442071234567"})
    got = {rec["call_id"]: rec["disposition"] for _, rec in ledger.cdrs(co)}
    assert got == {"u1": unanswered, "u2": unanswered, "a1": answered, "u3": unanswered, "a2": answered}
    assert unanswered == "unanswered"
    ledger.reserve(co, "given", RATE, cap_secs=CAP, ttl_ms=TTL)
    ledger.settle(co, "given", 0, {"disposition": "busy"})  # the proxy's word wins when it gives one
    assert ledger.cdrs(co)[-1][1]["disposition"] == "busy"
