"""Prepaid call pricing: pure integer arithmetic, no I/O.

Every amount is an int in minor units (cents) and every duration an int in
seconds. There are no floats anywhere: a float price drifts, and the same
arithmetic must give the same answer here and in redis-schema/prepaid.lua,
which mirrors this module line for line (the Lua side is what actually moves
money; this module is the specification it is tested against).

Billing grid: a call is billed `first` seconds, then whole `next`-second
increments. Authorisation (max_duration) and settlement (cost) use the same
grid, so a call cut at its maximum duration never costs more than what was
reserved for it (the A2Billing "60/60 vs max duration" trap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from kemi.model import E164_PREFIX_RE

# Upper bounds keep every intermediate product far below 2**53, the largest
# integer a Lua number (a double) holds exactly; prepaid.lua enforces the same.
MAX_PER_MINUTE = 1_000_000  # 10 000.00 per minute
MAX_CONNECTION_FEE = 1_000_000
MAX_INCREMENT = 3600
MAX_CAP_SECS = 86_400  # the longest single call anyone may authorise
MAX_BALANCE = 10**13  # 60 * MAX_BALANCE < 2**53

_RATE_FIELDS = ("prefix", "per_minute", "connection_fee", "first", "next")

# How an operator writes an amount (kemi.admin): the currency's main unit, as every
# invoice and billing screen shows it ('50', '50.00', '0.25'), or whole cents with
# an explicit unit ('2550c'). A bare integer meaning cents would make '50' credit
# 0.50. Minor units are hundredths of the main unit throughout this project.
AMOUNT_FORMS = "50, 50.00 or 0.25 in the currency's main unit (at most 2 decimals), or 2550c in cents"
_MAIN_UNIT_RE = re.compile(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,2}))?", re.ASCII)
_CENTS_RE = re.compile(r"(0|[1-9][0-9]{0,17})c", re.ASCII)


def is_int(value: Any) -> bool:
    """True for a real int; bool is an int subclass but never an amount."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rate:
    prefix: str  # E.164 prefix with '+', e.g. '+44'; '+' alone is a catch-all
    per_minute: int  # minor units per minute (>= 0)
    connection_fee: int = 0  # minor units, charged once when the call is answered
    first: int = 60  # first billing increment, seconds (>= 1)
    next: int = 60  # next increments, seconds (>= 1)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not isinstance(self.prefix, str) or not E164_PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"prefix: expected '+' and up to 15 digits, got {self.prefix!r}")
        _check_int("per_minute", self.per_minute, 0, MAX_PER_MINUTE)
        _check_int("connection_fee", self.connection_fee, 0, MAX_CONNECTION_FEE)
        _check_int("first", self.first, 1, MAX_INCREMENT)
        _check_int("next", self.next, 1, MAX_INCREMENT)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    _require_int(name, value)
    if not low <= value <= high:
        raise ValueError(f"{name}: expected {low}..{high}, got {value}")


def _require_int(name: str, value: Any) -> None:
    if not is_int(value):
        raise ValueError(f"{name}: expected an int, got {type(value).__name__} {value!r}")


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def billed_seconds(rate: Rate, secs: int) -> int:
    """Seconds billed for a call that lasted `secs`: rounded up onto the grid."""
    rate.validate()
    _require_int("secs", secs)
    if secs <= 0:
        return 0
    if secs <= rate.first:
        return rate.first
    return rate.first + _ceil_div(secs - rate.first, rate.next) * rate.next


def cost(rate: Rate, secs: int) -> int:
    """Price of a call that lasted `secs`; unanswered or zero-length calls are free."""
    billed = billed_seconds(rate, secs)
    if billed == 0:
        return 0
    return rate.connection_fee + _ceil_div(billed * rate.per_minute, 60)


def _grid_floor(rate: Rate, secs: int) -> int:
    """The largest grid point <= secs, or 0 when secs is below the first increment."""
    if secs < rate.first:
        return 0
    return rate.first + (secs - rate.first) // rate.next * rate.next


def max_duration(rate: Rate, funds: int, cap: int) -> int:
    """Largest billed duration D on the grid with cost(rate, D) <= funds and D <= cap.

    0 means the funds cannot pay the connection fee plus the first increment
    (or cap is shorter than the first increment). Exact because
    F + ceil(x*P/60) <= funds  <=>  x*P <= 60*(funds - F)  (funds - F is an integer).
    """
    rate.validate()
    _require_int("funds", funds)
    _require_int("cap", cap)
    budget = funds - rate.connection_fee
    if budget < 0:
        return 0
    limit = cap
    if rate.per_minute > 0:
        limit = min(cap, 60 * budget // rate.per_minute)
    return _grid_floor(rate, limit)


def candidate_prefixes(e164: str) -> list[str]:
    """Every prefix of an E.164 number, longest first, ending with the catch-all '+'.

    One HMGET of these finds the longest-prefix rate in one round trip. The number may be
    short of a full E.164 number: a French short number is rated as '+33' and its digits.
    """
    if not isinstance(e164, str) or len(e164) < 2 or not E164_PREFIX_RE.fullmatch(e164):
        raise ValueError(f"not an E.164 number: {e164!r}")
    return [e164[:n] for n in range(len(e164), 0, -1)]


def longest_prefix_rate(e164: str, rates: Mapping[str, Rate]) -> Rate | None:
    """The rate of the longest prefix of e164 in `rates`, None if none matches."""
    for prefix in candidate_prefixes(e164):
        rate = rates.get(prefix)
        if rate is not None:
            return rate
    return None


def rate_to_dict(rate: Rate) -> dict[str, Any]:
    """msgpack-able form, also the form prepaid.lua reads."""
    rate.validate()
    return {name: getattr(rate, name) for name in _RATE_FIELDS}


def rate_from_dict(data: Mapping[str, Any]) -> Rate:
    """Inverse of rate_to_dict; validates, so bad stored data fails loudly."""
    if not isinstance(data, Mapping):
        raise ValueError(f"rate: expected a map, got {type(data).__name__}")
    if "prefix" not in data or "per_minute" not in data:
        raise ValueError("rate: prefix and per_minute are required")
    rate = Rate(**{name: data[name] for name in _RATE_FIELDS if name in data})
    rate.validate()
    return rate


def parse_amount(text: Any) -> int:
    """An operator's amount -> minor units: '50' -> 5000, '0.25' -> 25, '25.5' -> 2550, '2550c' -> 2550.

    Exact, by string arithmetic (never through float). Anything else raises
    ValueError saying what is wrong with it, so nothing is ever guessed or rounded:
    '0.255', '1,5', '1e3', '-5', '', '007', '.5', '5.', '25.50c', '50 EUR'.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    body = text.strip()
    match = _MAIN_UNIT_RE.fullmatch(body)
    if match:
        units, cents = match.groups()
        return int(units) * 100 + int((cents or "").ljust(2, "0"))
    match = _CENTS_RE.fullmatch(body)
    if match:
        return int(match.group(1))
    raise ValueError(_amount_problem(body))


def _amount_problem(body: str) -> str:
    """Why `body` is not an amount, in the words an operator needs to fix it."""
    if not body:
        return "empty"
    if body[0] in "-\u2212":
        return "negative"
    if not body.isascii():
        return "only ASCII digits, '.' and a final 'c'"
    if body[0] == "+":
        return "no sign"
    if body.lower() in ("nan", "inf", "infinity") or re.search(r"[0-9.][eE][-+]?[0-9]", body):
        return "a plain decimal number: no exponent, no special value"
    cents = body[-1] in "cC"
    core = body[:-1] if cents else body
    if re.search(r"[A-Za-z]", core):
        return "no currency or letters: the amount is in the account's currency"
    if re.search(r"[^0-9.]", core):
        return "no decimal comma or thousands separator: use '.' for decimals, like 1500.50"
    if not core:
        return "digits expected before the c: 2550c"
    if cents:
        if body[-1] == "C":
            return "cents take a lower-case c: 2550c"
        if "." in core:
            return "cents are whole: 2550c, or 25.50 in the main unit"
    units, dot, decimals = core.partition(".")
    if "." in decimals:
        return "one decimal point at most"
    if dot and not units:
        return "write the units before the point: 0.50"
    if dot and not decimals:
        return "digits must follow the point: 5.00, or 5"
    if len(decimals) > 2:
        return f"at most 2 decimals; {body} would have to be rounded"
    if len(units) > 1 and units[0] == "0":
        return "no leading zeros"
    return "too many digits"
