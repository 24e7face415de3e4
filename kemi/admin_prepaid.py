"""Ops CLI for the Prepaid Account and the rates: `python3 -m kemi.admin prepaid|rate --help`.

Added to kemi.admin by add_commands(). Every command validates its arguments
fully before it touches Redis; money only moves through PrepaidLedger (one
atomic FCALL each). Refusals are kemi.cli_errors.CliError, which kemi.admin.main
turns into exit codes. Amounts on the command line are in the currency's main
unit (`50`, `25.50`, `0.25`), or whole cents with an explicit unit (`2550c`),
parsed as text by kemi.money.parse_amount: never through float, never rounded.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from kemi import money
from kemi.cli_errors import CliError, OutcomeUnknown
from kemi.model import COMPANY_ID_RE, E164_PREFIX_RE
from kemi.store import StoreUnavailable
from kemi.store.prepaid import PrepaidError, PrepaidLedger

_INCREMENTS_RE = re.compile(r"([0-9]{1,5})/([0-9]{1,5})", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
MAX_COUNT = 1_000_000  # the CDR stream is capped near this length (prepaid.lua CDR_MAXLEN)
CSV_COLUMNS = ("id", "company", "extension", "from", "to", "category", "billing", "setup", "answer", "end",
               "billed_secs", "cost", "balance_after", "disposition", "note")
# CSV column -> record fields, first present wins; the *_ms ones become ISO 8601 UTC
_CSV_FIELDS = {"extension": ("extension", "ext"), "setup": ("setup_ms",), "answer": ("answer_ms",),
               "end": ("end_ms",)}
_TIME_COLUMNS = frozenset({"setup", "answer", "end"})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@contextmanager
def _writing(advice: str):
    """Around the one call that writes: a lost answer there does not mean "nothing was changed".

    (A timed-out FCALL still runs once Redis gets to it, e.g. behind a slow script.)
    """
    try:
        yield
    except StoreUnavailable as exc:
        raise OutcomeUnknown(f"Redis did not answer ({exc}): {advice}") from None


# ---------------------------------------------------------------- parsing (pure)

def parse_minor(text: str, name: str, *, low: int, high: int) -> int:
    """An amount argument -> minor units, or a CliError naming the argument (see money.parse_amount)."""
    try:
        value = money.parse_amount(text)
    except ValueError as exc:
        raise CliError(f"{name} {text!r}: {exc}; expected {money.AMOUNT_FORMS}") from None
    if not low <= value <= high:
        raise CliError(f"{name} {text!r}: expected {format_minor(low)}..{format_minor(high)} "
                       f"({low}c..{high}c), got {format_minor(value)}")
    return value


def format_minor(amount: int, currency: str = "") -> str:
    """12345 -> '123.45' (and ' EUR' when a currency is given); integer arithmetic only."""
    sign = "-" if amount < 0 else ""
    units, cents = divmod(abs(amount), 100)
    return f"{sign}{units}.{cents:02d}" + (f" {currency}" if currency else "")


def parse_increments(text: str) -> tuple[int, int]:
    match = _INCREMENTS_RE.fullmatch(text.strip())
    first, nxt = (int(g) for g in match.groups()) if match else (0, 0)
    if not (1 <= first <= money.MAX_INCREMENT and 1 <= nxt <= money.MAX_INCREMENT):
        raise CliError(f"--increments {text!r}: expected FIRST/NEXT seconds, each 1..{money.MAX_INCREMENT}, "
                       f"like 60/60, 30/6 or 1/1")
    return first, nxt


def parse_count(value: str, name: str, low: int, high: int = MAX_COUNT) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", value.strip(), re.ASCII) or not low <= int(value) <= high:
        raise CliError(f"{name} {value!r}: expected a whole number {low}..{high}")
    return int(value)


def iso_ms(ms: Any) -> str:
    """Epoch milliseconds -> '2024-05-01T12:00:00.250Z' (exact: no float); other values as text."""
    if not money.is_int(ms):
        return _text(ms)
    try:
        return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except OverflowError:
        return str(ms)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_safe(cell: str) -> str:
    """Neutralise spreadsheet formulas (the From of a call comes from outside); keep +33... numbers."""
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"[+-]?[0-9]+", cell, re.ASCII):
        return "'" + cell
    return cell


def csv_row(co: str, entry_id: str, record: dict[str, Any] | None) -> list[str]:
    rec = record or {}
    row = []
    for column in CSV_COLUMNS:
        if column == "id":
            value: Any = entry_id
        elif column == "company":
            value = rec.get("company", co)
        elif column == "note" and record is None:
            value = "unreadable record"
        else:
            value = next((rec[f] for f in _CSV_FIELDS.get(column, (column,)) if f in rec), None)
            if column in _TIME_COLUMNS and value is not None:
                value = iso_ms(value)
        row.append(_csv_safe(_text(value)))
    return row


# ---------------------------------------------------------------- Redis helpers

def _ledger(directory) -> PrepaidLedger:
    # an operator's money change is reported as unsafe (exit 4) until a replica has it; only the
    # admin user loads the functions
    return PrepaidLedger(directory.conn, require_replica=True, loads_functions=True)


def _company(directory, co: str, *, need_provisioned: bool = True) -> None:
    if not COMPANY_ID_RE.fullmatch(co):
        raise CliError(f"COMPANY {co!r}: not a company id (lower-case letters, digits and '-', at most 32)")
    if directory.is_provisioned(co):
        return
    if not need_provisioned and _ledger(directory).has_data(co):
        return  # removed from the provisioning, but its money and records are still there
    raise CliError(f"company {co!r}: not provisioned")


def _refusal(exc: PrepaidError, co: str, args) -> CliError:
    """A ledger refusal, naming the argument at fault."""
    code = exc.code
    if code == "CURRENCY_MISMATCH":
        held = exc.message.rsplit(" ", 1)[-1]
        return CliError(f"--currency {args.currency}: company {co!r} holds a balance in {held}; "
                        f"a currency cannot change under a balance")
    if code == "TOPUP_CONFLICT":
        return CliError(f"--ref {args.ref!r}: this reference already credited another amount; "
                        f"use a new reference for a new payment")
    if code == "BALANCE_LIMIT":
        return CliError(f"AMOUNT {args.amount}: the balance would exceed the limit of "
                        f"{format_minor(money.MAX_BALANCE)}")
    if code == "BAD_ARGUMENT":
        return CliError(f"refused by the ledger: {exc.message}")
    return CliError(f"refused by the ledger ({code}): {exc.message}")


def _state_line(co: str, active: bool, balance: int, currency: str) -> str:
    return (f"{co}: Prepaid Account {'active' if active else 'inactive'}, "
            f"balance {format_minor(balance, currency)}")


def _summary(entry_id: str, record: dict[str, Any] | None) -> str:
    if record is None:
        return f"{entry_id}  unreadable record"
    when = next((record[f] for f in ("end_ms", "settled_ms", "setup_ms") if money.is_int(record.get(f))), None)
    parts = [iso_ms(when) if when is not None else entry_id,
             f"{_text(record.get('ext', record.get('extension'))) or '-'} -> {_text(record.get('to')) or '-'}",
             _text(record.get("disposition")) or "-"]
    if "billed_secs" in record:
        parts.append(f"billed {_text(record['billed_secs'])}s")
    if money.is_int(record.get("cost")):
        parts.append(f"cost {format_minor(record['cost'])}")
    if money.is_int(record.get("balance_after")):
        parts.append(f"balance {format_minor(record['balance_after'])}")
    if record.get("note"):
        parts.append(f"({_text(record['note'])})")
    if record.get("call_id"):
        parts.append(f"call-id {_text(record['call_id'])}")
    return "  ".join(parts)


# ---------------------------------------------------------------- prepaid commands

def cmd_activate(args, directory) -> None:
    if not _CURRENCY_RE.fullmatch(args.currency):
        raise CliError(f"--currency {args.currency!r}: expected an ISO 4217 code in capitals, like EUR")
    _company(directory, args.company)
    ledger = _ledger(directory)
    try:
        with _writing(f"company {args.company!r} may or may not be activated; run the same command again "
                      f"(safe to repeat)"):
            state = ledger.activate(args.company, args.currency)
    except PrepaidError as exc:
        raise _refusal(exc, args.company, args) from None
    print(_state_line(args.company, state.active, state.balance, state.currency))


def cmd_deactivate(args, directory) -> None:
    _company(directory, args.company)
    ledger = _ledger(directory)
    try:
        with _writing(f"company {args.company!r} may or may not be deactivated; run the same command again "
                      f"(safe to repeat)"):
            state = ledger.deactivate(args.company)
    except PrepaidError as exc:
        raise _refusal(exc, args.company, args) from None
    print(_state_line(args.company, state.active, state.balance, state.currency))
    print("  new calls are refused; calls already reserved still settle")


def cmd_topup(args, directory) -> None:
    amount = parse_minor(args.amount, "AMOUNT", low=1, high=money.MAX_BALANCE)
    ref = args.ref
    if not ref.strip() or len(ref.encode("utf-8")) > 256:
        raise CliError(f"--ref {ref!r}: expected the payment reference, 1..256 bytes")
    _company(directory, args.company)
    ledger = _ledger(directory)
    status = ledger.status(args.company)
    if not status.currency:
        raise CliError(f"company {args.company!r}: no Prepaid Account; "
                       f"run 'prepaid activate {args.company}' first (it sets the currency)")
    try:
        with _writing(f"the top-up may or may not have been credited; run the same command again (the same "
                      f"--ref {ref!r} credits once) or check with 'prepaid show {args.company}'"):
            result = ledger.topup(args.company, ref, amount)
    except PrepaidError as exc:
        raise _refusal(exc, args.company, args) from None
    cur = status.currency
    if result.duplicate:
        print(f"duplicate reference {ref!r}: already credited {format_minor(result.amount, cur)} "
              f"at {iso_ms(result.at_ms)}, balance unchanged: {format_minor(result.balance, cur)}")
    else:
        print(f"{args.company}: credited {format_minor(result.amount, cur)} (reference {ref!r}), "
              f"balance {format_minor(result.balance, cur)}")


def cmd_show(args, directory) -> None:
    count = parse_count(args.records, "--records", 0)
    _company(directory, args.company, need_provisioned=False)
    ledger = _ledger(directory)
    status = ledger.status(args.company)
    cur = status.currency
    if not cur and status.balance == 0 and not status.reservations:
        print(f"{args.company}: no Prepaid Account (never activated)")
    else:
        print(f"{args.company}: Prepaid Account {'active' if status.active else 'inactive'}"
              f"{'' if cur else ' (no currency: never activated)'}")
        print(f"  balance    {format_minor(status.balance, cur)}")
        print(f"  reserved   {format_minor(status.reserved, cur)} ({len(status.reservations)} live calls)")
        print(f"  available  {format_minor(status.available, cur)}")
    if status.reservations:
        now_ms = ledger.now_ms()
        print("  live reservations:")
        for r in status.reservations:
            print(f"    {r.call_id}  {format_minor(r.amount, cur)}  max {r.max_secs}s  "
                  f"expires {iso_ms(r.expires_ms)} (in {max(r.expires_ms - now_ms, 0) // 1000}s)  "
                  f"{r.ext or '-'} -> {r.to or '-'}")
    if count:
        rows = list(ledger.last_cdrs(args.company, count))
        print(f"  last {len(rows)} records:" if rows else "  no records")
        for entry_id, record in rows:
            print(f"    {_summary(entry_id, record)}")


def cmd_records(args, directory) -> None:
    count = parse_count(args.count, "--count", 1)
    _company(directory, args.company, need_provisioned=False)
    rows = _ledger(directory).last_cdrs(args.company, count)
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for entry_id, record in rows:
            writer.writerow(csv_row(args.company, entry_id, record))
        return
    empty = True
    for entry_id, record in rows:
        empty = False
        print(f"{entry_id}  {_summary(entry_id, record)}")
    if empty:
        print(f"{args.company}: no records")


# ---------------------------------------------------------------- rate commands

def _rate_line(rate: money.Rate, width: int = 0) -> str:
    return (f"{rate.prefix:<{width}} {format_minor(rate.per_minute)}/min  connection fee "
            f"{format_minor(rate.connection_fee)}  billed {rate.first}/{rate.next}")


def _prefix(text: str, what: str, *, catch_all: bool) -> str:
    """An E.164 prefix; the catch-all '+' only where asked (rate remove may clean one up, set never makes one)."""
    if not E164_PREFIX_RE.fullmatch(text) or (text == "+" and not catch_all):
        raise CliError(f"PREFIX {text!r}: expected {what}")
    return text


def cmd_rate_set(args, directory) -> None:
    prefix = _prefix(args.prefix, "'+' and 1 to 15 digits, like +44 or +447", catch_all=False)
    per_minute = parse_minor(args.per_minute, "PER_MINUTE", low=0, high=money.MAX_PER_MINUTE)
    fee = parse_minor(args.fee, "--fee", low=0, high=money.MAX_CONNECTION_FEE)
    first, nxt = parse_increments(args.increments)
    rate = money.Rate(prefix, per_minute, fee, first, nxt)
    try:
        rate.validate()
    except ValueError as exc:  # the checks above make this unreachable; never write a bad rate
        raise CliError(str(exc)) from None
    ledger = _ledger(directory)
    directory.conn.ping()  # unreachable here: nothing was sent
    with _writing(f"rate {prefix} may or may not be set; run the same command again (safe to repeat)"):
        old = ledger.set_rate(rate)
    print(f"rate {'replaced' if old else 'added'}: {_rate_line(rate)}")
    if old:
        print(f"  was: {_rate_line(old)}")


def cmd_rate_remove(args, directory) -> None:
    prefix = _prefix(args.prefix, "'+' and up to 15 digits, like +44", catch_all=True)
    ledger = _ledger(directory)
    directory.conn.ping()  # unreachable here: nothing was sent
    with _writing(f"rate {prefix} may or may not be removed; check with 'rate list'"):
        removed = ledger.remove_rate(prefix)
    if not removed:
        raise CliError(f"PREFIX {prefix!r}: no rate for this prefix (see 'rate list')")
    print(f"rate {prefix} removed")


def cmd_rate_list(args, directory) -> None:
    try:
        rates = _ledger(directory).rates()
    except ValueError as exc:
        raise CliError(f"{exc}; replace it with 'rate set' or delete it with 'rate remove'") from None
    if not rates:
        print("no rates: every prepaid destination is refused")
    for rate in rates:
        print(_rate_line(rate, 17))


def cmd_rate_show(args, directory) -> None:
    # what a call is rated by: an E.164 number, or '+33' and a French short number
    if not E164_PREFIX_RE.fullmatch(args.e164) or args.e164 == "+":
        raise CliError(f"E164 {args.e164!r}: expected '+' and 1 to 15 digits, like +447700900123")
    try:
        rate = _ledger(directory).rate_for(args.e164)
    except ValueError as exc:
        raise CliError(f"{exc}; calls to this destination are refused until it is fixed") from None
    if rate is None:
        print(f"{args.e164}: no rate: calls to this destination are refused")
        return
    print(f"{args.e164}: rate {_rate_line(rate)}")
    print(f"  a 1-minute call costs {format_minor(money.cost(rate, 60))}, "
          f"a 10-minute call {format_minor(money.cost(rate, 600))}")


# ---------------------------------------------------------------- wiring

def _command(func: Callable) -> Callable:
    def run(args, directory) -> None:
        try:
            func(args, directory)
        except PrepaidError as exc:  # one the command did not word itself
            raise CliError(f"refused by the ledger ({exc.code}): {exc.message}") from None
    run.__name__ = run.__qualname__ = func.__name__
    run.__doc__ = func.__doc__
    return run


def _leaf(sub, name: str, func: Callable, help: str, description: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(func=_command(func))
    return parser


AMOUNT_HELP = ("in the currency's main unit: 50, 50.00 or 0.25 (at most 2 decimals); cents only with "
               "a final c: 2550c is 25.50; anything else is refused, never rounded")


def add_commands(sub) -> None:
    """Add `prepaid ...` and `rate ...` to the subparsers of kemi.admin.build_parser()."""
    from kemi import admin_ledger  # it builds on this module's helpers
    admin_ledger.add_commands(_add_prepaid_commands(sub), _leaf)
    _add_rate_commands(sub)


def _add_prepaid_commands(sub):
    prepaid = sub.add_parser(
        "prepaid", help="Prepaid Account of a company: activate, top up, show, export records",
        description="Prepaid Account of a company. Money moves only through the atomic `prepaid` Redis "
                    "Functions (loaded on demand). Amounts: " + AMOUNT_HELP + ".")
    psub = prepaid.add_subparsers(dest="prepaid_command", required=True, metavar="ACTION")

    p = _leaf(psub, "activate", cmd_activate, "allow prepaid calls for a company",
              "Allow prepaid calls for a provisioned company (creates its Prepaid Account with a zero "
              "balance the first time). The currency cannot change while the account holds a balance.")
    p.add_argument("company", metavar="COMPANY", help="company id, as provisioned")
    p.add_argument("--currency", default="EUR", help="ISO 4217 code of the account (default: EUR)")

    p = _leaf(psub, "deactivate", cmd_deactivate, "refuse new prepaid calls, keep the balance",
              "Refuse new prepaid calls for a company. The balance is kept and calls already in "
              "progress still settle.")
    p.add_argument("company", metavar="COMPANY", help="company id, as provisioned")

    p = _leaf(psub, "topup", cmd_topup, "credit a payment to a company's Prepaid Account",
              "Credit AMOUNT to the Prepaid Account of COMPANY, once per payment reference: running "
              "the same command again credits nothing (safe to retry). The account must have been "
              "activated (that sets its currency).")
    p.add_argument("company", metavar="COMPANY", help="company id, as provisioned")
    p.add_argument("amount", metavar="AMOUNT", help="the payment, " + AMOUNT_HELP + "; 50 means 50.00")
    p.add_argument("--ref", required=True, metavar="REFERENCE",
                   help="the payment's unique reference (invoice or transaction id), 1..256 bytes")

    p = _leaf(psub, "show", cmd_show, "balance, live reservations and last records of a company",
              "Print whether the account is active, its balance, what live calls have reserved, what is "
              "available for new calls, and the most recent call records.")
    p.add_argument("company", metavar="COMPANY", help="company id")
    p.add_argument("--records", default="10", metavar="N", help="how many recent records to print (default 10; 0: none)")

    p = _leaf(psub, "records", cmd_records, "the call records of a company (text or CSV)",
              "Print the most recent call records of a company, oldest first. With --csv: a header line "
              "and one row per record (columns: " + ", ".join(CSV_COLUMNS) + "); setup/answer/end are "
              "ISO 8601 UTC, cost and balance_after are integer minor units, a field the record lacks "
              "is an empty cell, and a text cell a spreadsheet would run as a formula (=, +, -, @) is "
                "prefixed with a single quote (numbers like +33... are left as they are).")
    p.add_argument("company", metavar="COMPANY", help="company id")
    p.add_argument("--count", default="100", metavar="N",
                   help=f"how many of the most recent records (default 100, at most {MAX_COUNT})")
    p.add_argument("--csv", action="store_true", help="write CSV to stdout")
    return psub


def _add_rate_commands(sub) -> None:
    rate = sub.add_parser(
        "rate", help="per-minute rates of prepaid destinations, by E.164 prefix",
        description="Rates of prepaid destinations, shared by every company. A call is priced by the "
                    "rate of the longest prefix of its E.164 number; a destination without a rate is "
                    "refused. Amounts: " + AMOUNT_HELP + ", in the accounts' currency.")
    rsub = rate.add_subparsers(dest="rate_command", required=True, metavar="ACTION")

    p = _leaf(rsub, "set", cmd_rate_set, "add or replace the rate of a prefix",
              "Add or replace the rate of an E.164 prefix. Calls are billed FIRST seconds, then whole "
              "NEXT-second increments; the connection fee is charged once per answered call.")
    p.add_argument("prefix", metavar="PREFIX", help="'+' and 1 to 15 digits, e.g. +44 or +447")
    p.add_argument("per_minute", metavar="PER_MINUTE", help="price per minute: " + AMOUNT_HELP)
    p.add_argument("--fee", default="0", metavar="AMOUNT",
                   help="connection fee per answered call (default 0): " + AMOUNT_HELP)
    p.add_argument("--increments", default="60/60", metavar="FIRST/NEXT",
                   help="billing increments in seconds (default 60/60; e.g. 30/6, 1/1)")

    p = _leaf(rsub, "remove", cmd_rate_remove, "remove the rate of a prefix",
              "Remove the rate of exactly this prefix; calls then take the next shorter prefix's rate, "
              "or are refused if there is none.")
    p.add_argument("prefix", metavar="PREFIX", help="the prefix as listed by 'rate list'")

    _leaf(rsub, "list", cmd_rate_list, "every rate, by prefix",
          "Print every rate, sorted by prefix: price per minute, connection fee and billing increments "
          "(FIRST/NEXT seconds). A number that matches no prefix cannot be called on prepaid.")

    p = _leaf(rsub, "show", cmd_rate_show, "which rate a number gets",
              "Print the rate that applies to an E.164 number (longest matching prefix), or that calls "
              "to it are refused.")
    p.add_argument("e164", metavar="E164", help="a number in E.164 form, e.g. +447700900123")
