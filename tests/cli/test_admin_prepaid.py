"""`kemi.admin prepaid ...` and `kemi.admin rate ...` as an operator runs them, against the
session's real redis-server, in a database of their own (tests/conftest.py)."""

from __future__ import annotations

import csv
import io
import os
import subprocess

import msgpack
import pytest

from kemi import money
from kemi.cli_errors import EXIT_STORE_DOWN, EXIT_UNREPLICATED
from kemi.store import StoreUnavailable
from kemi.store.prepaid import RATES, Keys, PrepaidLedger
from tests.conftest import CLI_PREPAID_DB, OFFICE
from tests.harness import PYTHON, ROOT, admin


class Db:
    def __init__(self, server):
        self.url = server.url_of(CLI_PREPAID_DB)
        self.client = server.client(CLI_PREPAID_DB)
        self.ledger = PrepaidLedger(server.store(CLI_PREPAID_DB))

    def run(self, *args: str) -> str:
        return admin(self.url, *args).stdout

    def refused(self, *args: str) -> str:
        """Run a command that must be refused: exit 2, 'error: ...', nothing written."""
        before = self.snapshot()
        proc = admin(self.url, *args, check=False)
        assert proc.returncode == 2, (args, proc.returncode, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
        assert self.snapshot() == before
        return proc.stderr

    def snapshot(self) -> dict:
        return {k: self.client.dump(k) for k in sorted(self.client.keys("*"))}

    def balance(self, co: str) -> int:
        return int(self.client.hget(Keys.of(co).prepaid, "balance") or 0)


@pytest.fixture(scope="module")
def office(redis_server):
    """The office provisioned once through the CLI, kept as DUMPs: a CLI start costs ~0.4 s."""
    db = Db(redis_server)
    db.client.flushdb()
    admin(db.url, "load", str(OFFICE))  # companies acme and globex
    dumps = {k: db.client.dump(k) for k in db.client.keys("*")}
    db.client.flushdb()
    db.client.close()
    return dumps


@pytest.fixture
def db(redis_server, office):
    db = Db(redis_server)
    db.client.flushdb()
    pipe = db.client.pipeline(transaction=False)
    for key, dump in office.items():
        pipe.restore(key, 0, dump)
    pipe.execute()
    yield db
    db.client.flushdb()
    db.client.close()


@pytest.fixture
def funded(db):
    """acme activated in EUR with 20.00, through the ledger (the CLI path has its own tests)."""
    db.ledger.load_functions()
    db.ledger.activate("acme", "EUR")
    db.ledger.topup("acme", "open", 2000)
    return db


AMOUNT_WORDS = ("in the currency's main unit: 50, 50.00 or 0.25 (at most 2 decimals); cents only with a final c: "
                "2550c is 25.50; anything else is refused, never rounded")


@pytest.mark.parametrize("args, usage, says", [
    (["prepaid"], "ACTION ...", ["activate", "deactivate", "topup", "show", "records",
                                 "Money moves only through the atomic `prepaid` Redis Functions", AMOUNT_WORDS]),
    (["prepaid", "activate"], "[--currency CURRENCY] COMPANY", ["ISO 4217 code of the account (default: EUR)",
                                                                 "The currency cannot change while"]),
    (["prepaid", "deactivate"], "COMPANY", ["The balance is kept and calls already in progress still settle"]),
    (["prepaid", "topup"], "--ref REFERENCE COMPANY AMOUNT", [f"the payment, {AMOUNT_WORDS}; 50 means 50.00",
                                                              "running the same command again credits nothing"]),
    (["prepaid", "show"], "[--records N] COMPANY", ["(default 10; 0: none)"]),
    (["prepaid", "records"], "[--count N] [--csv] COMPANY",
     ["columns: id, company, extension, from, to, category, billing, setup, answer, end, billed_secs, cost, "
      "balance_after, disposition, note", "prefixed with a single quote"]),
    (["rate"], "ACTION ...", ["set", "remove", "list", "show", "the longest prefix of its E.164 number",
                              AMOUNT_WORDS]),
    (["rate", "set"], "[--fee AMOUNT] [--increments FIRST/NEXT] PREFIX PER_MINUTE",
     ["(default 60/60; e.g. 30/6, 1/1)", f"connection fee per answered call (default 0): {AMOUNT_WORDS}",
      f"price per minute: {AMOUNT_WORDS}"]),
    (["rate", "remove"], "PREFIX", ["the next shorter prefix's rate"]),
    (["rate", "list"], "", ["sorted by prefix"]),
    (["rate", "show"], "E164", ["a number in E.164 form, e.g. +447700900123"]),
])
def test_help_everywhere(redis_server, args, usage, says):
    out = " ".join(admin(redis_server.url, *args, "--help").stdout.split())  # argparse wraps to the terminal
    assert out.startswith(f"usage: python3 -m kemi.admin {' '.join(args)} [-h] {usage}".rstrip()), out
    for words in says:
        assert words in out, (words, out)


# ---------------------------------------------------------------- accounts

def test_activate_topup_show(db):
    assert db.run("prepaid", "activate", "acme") == "acme: Prepaid Account active, balance 0.00 EUR\n"
    out = db.run("prepaid", "topup", "acme", "25.50", "--ref", "INV-1")
    assert "credited 25.50 EUR" in out and "balance 25.50 EUR" in out
    assert db.balance("acme") == 2550
    shown = db.run("prepaid", "show", "acme")
    assert "Prepaid Account active" in shown
    assert "balance    25.50 EUR" in shown and "available  25.50 EUR" in shown and "no records" in shown


# Every form an amount may take, and what it is in minor units: the main unit, with or without
# decimals, and cents only with the explicit 'c'.
GOOD_AMOUNTS = [
    ("50", 5000), ("50.00", 5000), ("50.0", 5000), ("0.25", 25), ("25.50", 2550), ("25.5", 2550), ("1", 100),
    ("0.01", 1), ("19.99", 1999), (" 3.00 ", 300), ("2550c", 2550), ("1c", 1), ("100c", 100),
]
# Ambiguous, too precise or not an amount at all, with the words that say why.
BAD_AMOUNTS = [
    ("0.255", "at most 2 decimals; 0.255 would have to be rounded"), ("1.999", "at most 2 decimals"),
    ("1,5", "no decimal comma"), ("25,50", "no decimal comma"), ("1,000.00", "no decimal comma"),
    ("1 000", "thousands separator"), ("1_000", "thousands separator"),
    ("1e3", "no exponent"), ("1E3", "no exponent"), ("nan", "no special value"), ("inf", "no special value"),
    ("-5", "negative"), ("-0.01", "negative"), ("+5", "no sign"), ("", "empty"), (" ", "empty"),
    ("007", "no leading zeros"), ("0050c", "no leading zeros"), (".5", "units before the point"),
    ("1.", "digits must follow the point"), ("1.2.3", "one decimal point"), ("25.50c", "cents are whole"),
    ("2550C", "lower-case c"), ("c", "digits expected"), ("50EUR", "no currency"), ("50 EUR", "no currency"),
    ("\u20ac50", "only ASCII"), ("abc", "no currency"), ("0x10", "no currency"), ("\u0663", "only ASCII"),
    ("99999999999999999999", "too many digits"),
]
ACCEPTED_FORMS = "expected 50, 50.00 or 0.25 in the currency's main unit (at most 2 decimals), or 2550c in cents"


@pytest.mark.parametrize("text, cents", GOOD_AMOUNTS + [("100000000000.00", money.MAX_BALANCE),
                                                        ("10000000000000c", money.MAX_BALANCE)])
def test_topup_amounts_are_exact(db, text, cents):
    db.run("prepaid", "activate", "acme")
    out = db.run("prepaid", "topup", "acme", text, "--ref", "r")
    assert db.balance("acme") == cents
    assert f"credited {cents // 100}.{cents % 100:02d} EUR" in out  # the operator sees what was understood


def test_fifty_is_fifty_euros_not_fifty_cents(db):
    db.run("prepaid", "activate", "acme")
    assert "credited 50.00 EUR" in db.run("prepaid", "topup", "acme", "50", "--ref", "INV-50")
    assert db.balance("acme") == 5000


def test_same_reference_credits_once(funded):
    first = funded.run("prepaid", "topup", "acme", "5", "--ref", "PAY-9")
    assert "credited 5.00 EUR" in first
    for same in ("5.00", "5.0", "500c"):  # the same amount, written otherwise
        again = funded.run("prepaid", "topup", "acme", same, "--ref", "PAY-9")
        assert again.startswith("duplicate reference 'PAY-9'") and "balance unchanged: 25.00 EUR" in again
    assert funded.balance("acme") == 2500


def test_reference_reused_for_another_amount_is_refused(funded):
    funded.run("prepaid", "topup", "acme", "5.00", "--ref", "PAY-9")
    err = funded.refused("prepaid", "topup", "acme", "6.00", "--ref", "PAY-9")
    assert "--ref 'PAY-9'" in err and "another amount" in err


@pytest.mark.parametrize("amount, why", BAD_AMOUNTS)
def test_bad_amounts_are_refused_naming_the_argument(funded, amount, why):
    err = funded.refused("prepaid", "topup", "acme", "--ref", "x", "--", amount)
    assert err.startswith(f"error: AMOUNT {amount!r}: ") and why in err and ACCEPTED_FORMS in err, err


@pytest.mark.parametrize("amount", ["0", "0.00", "0c", "100000000000.01", "10000000000001c"])
def test_amounts_out_of_range_are_refused_in_both_units(funded, amount):
    err = funded.refused("prepaid", "topup", "acme", amount, "--ref", "x")
    assert f"AMOUNT {amount!r}: expected 0.01..100000000000.00 (1c..10000000000000c)" in err, err


def in_process(db, capsys, *args: str) -> tuple[int, str, str]:
    """kemi.admin's main() in this process: the same parser and commands as the subprocess runs above, at a
    fraction of the cost for the long tables below (topup runs every form as a real process)."""
    from kemi import admin as admin_module

    code = admin_module.main(["--redis-url", db.url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("where", ["PER_MINUTE", "--fee"])
@pytest.mark.parametrize("text, cents", GOOD_AMOUNTS + [("0", 0), ("0.00", 0), ("0c", 0)])
def test_rate_amounts_are_exact(db, capsys, where, text, cents):
    args = ["rate", "set", "+44", text] if where == "PER_MINUTE" else ["rate", "set", "+44", "1", "--fee", text]
    code, out, err = in_process(db, capsys, *args)
    assert code == 0, err
    rate = db.ledger.rate_for("+442079460000")
    assert (rate.per_minute if where == "PER_MINUTE" else rate.connection_fee) == cents
    shown = f"{cents // 100}.{cents % 100:02d}"
    assert (f"+44 {shown}/min" if where == "PER_MINUTE" else f"connection fee {shown}") in out


@pytest.mark.parametrize("where", ["PER_MINUTE", "--fee"])
@pytest.mark.parametrize("amount, why", BAD_AMOUNTS)
def test_bad_rate_amounts_are_refused_naming_the_argument(db, capsys, where, amount, why):
    db.client.hset(RATES, "+33", msgpack.packb(money.rate_to_dict(money.Rate("+33", 100))))  # one to keep
    before = db.snapshot()
    if where == "PER_MINUTE":
        code, out, err = in_process(db, capsys, "rate", "set", "--", "+44", amount)
    else:
        code, out, err = in_process(db, capsys, "rate", "set", "+44", "1", f"--fee={amount}")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {where} {amount!r}: ") and why in err and ACCEPTED_FORMS in err, err
    assert db.snapshot() == before


def test_rate_amounts_through_the_real_command(db):
    """The in-process tables above and the command an operator runs agree."""
    assert "+44 0.25/min  connection fee 0.05" in db.run("rate", "set", "+44", "0.25", "--fee", "5c")
    assert "+45 25.00/min  connection fee 0.00" in db.run("rate", "set", "+45", "25")
    assert "PER_MINUTE '1,5'" in db.refused("rate", "set", "+44", "1,5")
    assert "--fee '0.255'" in db.refused("rate", "set", "+44", "1", "--fee", "0.255")


def test_rate_set_list_show_remove(db):
    assert "rate added: +44 0.10/min" in db.run("rate", "set", "+44", "0.10")
    out = db.run("rate", "set", "+447", "25c", "--fee", "0.05", "--increments", "30/6")
    assert "rate added: +447 0.25/min  connection fee 0.05  billed 30/6" in out
    assert db.ledger.rate_for("+447700900123") == money.Rate("+447", 25, 5, 30, 6)
    out = db.run("rate", "set", "+447", "0.26", "--increments", "1/1")
    assert "rate replaced: +447 0.26/min" in out and "was: +447 0.25/min" in out
    assert db.run("rate", "list").splitlines() == [
        "+44               0.10/min  connection fee 0.00  billed 60/60",
        "+447              0.26/min  connection fee 0.00  billed 1/1"]
    assert "rate +447 0.26/min" in db.run("rate", "show", "+447700900123")
    assert "rate +44 0.10/min" in db.run("rate", "show", "+442079460000")
    assert db.run("rate", "show", "+33144556677") == \
        "+33144556677: no rate: calls to this destination are refused\n"
    assert db.run("rate", "remove", "+447") == "rate +447 removed\n"
    assert "rate +44 " in db.run("rate", "show", "+447700900123")
    assert "PREFIX '+447': no rate" in db.refused("rate", "remove", "+447")
    db.run("rate", "remove", "+44")
    assert db.run("rate", "list") == "no rates: every prepaid destination is refused\n"
    assert db.client.exists(RATES) == 0


@pytest.mark.parametrize("args, named", [
    (["44", "10"], "PREFIX '44'"), (["+", "10"], "PREFIX '+'"), (["+4a", "10"], "PREFIX '+4a'"),
    (["+1234567890123456", "10"], "PREFIX '+1234567890123456'"), (["", "10"], "PREFIX ''"),
    (["+44", "-1"], "PER_MINUTE '-1'"), (["+44", "0.001"], "PER_MINUTE '0.001'"),
    (["+44", "1e2"], "PER_MINUTE '1e2'"), (["+44", "10000.01"], "PER_MINUTE '10000.01'"),
    (["+44", "1000001c"], "PER_MINUTE '1000001c'"), (["+44", "ten"], "PER_MINUTE 'ten'"),
    (["+44", "10", "--fee", "10000.01"], "--fee '10000.01'"),
    (["+44", "10", "--fee", "0.5.0"], "--fee '0.5.0'"), (["+44", "10", "--fee", "-0.01"], "--fee '-0.01'"),
    (["+44", "10", "--increments", "60"], "--increments '60'"),
    (["+44", "10", "--increments", "0/60"], "--increments '0/60'"),
    (["+44", "10", "--increments", "60/0"], "--increments '60/0'"),
    (["+44", "10", "--increments", "3601/60"], "--increments '3601/60'"),
    (["+44", "10", "--increments", "a/b"], "--increments 'a/b'"),
    (["+44", "10", "--increments", "60/60/60"], "--increments '60/60/60'"),
])
def test_bad_rate_is_refused_naming_the_argument(db, args, named):
    db.run("rate", "set", "+33", "1")
    assert named in db.refused("rate", "set", *args)


@pytest.mark.parametrize("number", ["447700900123", "+", "+44 77", "+4477009001234567", "tel:+44"])
def test_rate_show_refuses_a_number_that_is_not_e164(db, number):
    assert f"E164 {number!r}" in db.refused("rate", "show", number)


def test_a_corrupt_rate_is_reported_not_a_traceback(db):
    db.run("rate", "set", "+44", "10")
    db.client.hset(RATES, "+447", b"\xc1")
    assert "'+447'" in db.refused("rate", "list")
    assert "'+447'" in db.refused("rate", "show", "+447700900123")
    assert "rate +447 removed" in db.run("rate", "remove", "+447")


def test_an_error_reply_of_redis_is_a_refusal_not_a_traceback(db):
    db.client.set(RATES, b"not a hash")
    proc = admin(db.url, "rate", "list", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Redis refused the command: WRONGTYPE"), proc.stderr


# ---------------------------------------------------------------- Redis down

@pytest.mark.parametrize("args", [
    ["prepaid", "show", "acme"], ["prepaid", "topup", "acme", "1", "--ref", "x"], ["prepaid", "records", "acme"],
    ["rate", "list"], ["rate", "set", "+44", "1"],
])
def test_unreachable_redis_is_exit_3(args):
    proc = admin("redis://127.0.0.1:1/2", *args, check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: Redis at redis://127.0.0.1:1/2 unreachable: ")
    assert proc.stderr.rstrip().endswith("nothing was changed")


def test_a_lost_answer_to_a_write_is_not_reported_as_nothing_changed(funded, monkeypatch, capsys):
    """Redis may run a command whose answer never came back (a real redis-server does, behind a slow
    script): the operator is told to check or retry, never that nothing changed. In-process, so that
    the answer can be lost on purpose; this also runs kemi.admin imported rather than as __main__."""
    from kemi import admin as admin_module

    real = PrepaidLedger.topup

    def applied_then_lost(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise StoreUnavailable(f"Redis at {funded.url} unreachable: Timeout reading from socket")

    monkeypatch.setattr(PrepaidLedger, "topup", applied_then_lost)
    code = admin_module.main(["--redis-url", funded.url, "prepaid", "topup", "acme", "5.00", "--ref", "lost"])
    assert code == EXIT_STORE_DOWN
    err = capsys.readouterr().err
    assert err.startswith("error: Redis did not answer") and "may or may not have been credited" in err
    assert "--ref 'lost'" in err and "nothing was changed" not in err
    monkeypatch.undo()
    assert funded.balance("acme") == 2500
    assert "duplicate reference 'lost'" in funded.run("prepaid", "topup", "acme", "5.00", "--ref", "lost")
    assert funded.balance("acme") == 2500


def test_in_process_refusals_are_exit_2(db, capsys):
    from kemi import admin as admin_module

    assert admin_module.main(["--redis-url", db.url, "prepaid", "activate", "umbrella"]) == 2
    assert capsys.readouterr().err == "error: company 'umbrella': not provisioned\n"


def test_a_top_up_no_replica_confirmed_is_reported_applied_but_unconfirmed(db):
    """REDIS_WAIT_REPLICAS=1 and no replica (the session's Redis has none): exit 4, and the message says
    the top-up is applied and that repeating it with the same --ref is safe (sentinel, issue 20)."""
    db.run("prepaid", "activate", "acme")
    env = {**os.environ, "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "20"}
    args = [PYTHON, "-m", "kemi.admin", "--redis-url", db.url, "prepaid", "topup", "acme", "5", "--ref", "INV-W"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == EXIT_UNREPLICATED, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: prepaid_topup was applied on the primary") and "Traceback" not in proc.stderr
    assert "same --ref credits once" in proc.stderr
    assert db.balance("acme") == 500
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == EXIT_UNREPLICATED and db.balance("acme") == 500  # the same --ref credits once
