"""`kemi.admin prepaid ...` and `kemi.admin rate ...` as an operator runs them, against the
session's real redis-server, in a database of their own (tests/conftest.py)."""

from __future__ import annotations

import csv
import io

import msgpack
import pytest

from kemi import money
from kemi.cli_errors import EXIT_STORE_DOWN
from kemi.store import StoreUnavailable
from kemi.store.prepaid import RATES, Keys, PrepaidLedger
from tests.conftest import CLI_PREPAID_DB, OFFICE
from tests.harness import admin


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


@pytest.mark.parametrize("args, usage, says", [
    (["prepaid"], "ACTION ...", ["activate", "deactivate", "topup", "show", "records",
                                 "Money moves only through the atomic `prepaid` Redis Functions"]),
    (["prepaid", "activate"], "[--currency CURRENCY] COMPANY", ["ISO 4217 code of the account (default: EUR)",
                                                                 "The currency cannot change while"]),
    (["prepaid", "deactivate"], "COMPANY", ["The balance is kept and calls already in progress still settle"]),
    (["prepaid", "topup"], "--ref REFERENCE COMPANY AMOUNT", ["25 means 0.25, write 25.00 for 25",
                                                              "running the same command again credits nothing"]),
    (["prepaid", "show"], "[--records N] COMPANY", ["(default 10; 0: none)"]),
    (["prepaid", "records"], "[--count N] [--csv] COMPANY",
     ["columns: id, company, extension, from, to, category, billing, setup, answer, end, billed_secs, cost, "
      "balance_after, disposition, note", "prefixed with a single quote"]),
    (["rate"], "ACTION ...", ["set", "remove", "list", "show", "the longest prefix of its E.164 number"]),
    (["rate", "set"], "[--fee N] [--increments FIRST/NEXT] PREFIX PER_MINUTE",
     ["(default 60/60; e.g. 30/6, 1/1)", "connection fee per answered call (default 0)"]),
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


@pytest.mark.parametrize("text, cents", [
    ("25.50", 2550), ("25.5", 2550), ("2550", 2550), ("0.01", 1), ("1", 1), ("007", 7), ("0.10", 10),
    ("19.99", 1999), (" 3.00 ", 300), ("100000000000.00", money.MAX_BALANCE),
])
def test_topup_amounts_are_exact(db, text, cents):
    db.run("prepaid", "activate", "acme")
    db.run("prepaid", "topup", "acme", text, "--ref", "r")
    assert db.balance("acme") == cents


def test_same_reference_credits_once(funded):
    first = funded.run("prepaid", "topup", "acme", "5", "--ref", "PAY-9")
    again = funded.run("prepaid", "topup", "acme", "0.05", "--ref", "PAY-9")  # the same amount, written otherwise
    assert "credited 0.05 EUR" in first
    assert again.startswith("duplicate reference 'PAY-9'") and "balance unchanged: 20.05 EUR" in again
    assert funded.balance("acme") == 2005


def test_reference_reused_for_another_amount_is_refused(funded):
    funded.run("prepaid", "topup", "acme", "5.00", "--ref", "PAY-9")
    err = funded.refused("prepaid", "topup", "acme", "6.00", "--ref", "PAY-9")
    assert "--ref 'PAY-9'" in err and "another amount" in err


@pytest.mark.parametrize("amount", [
    "0", "0.00", "-5", "-0.01", "1.234", "1e3", "abc", "25,50", "nan", "inf", "", " ", "1.", ".5", "0x10",
    "1_000", "٣", "100000000000.01", "99999999999999999999",
])
def test_bad_amounts_are_refused_naming_the_argument(funded, amount):
    err = funded.refused("prepaid", "topup", "acme", amount, "--ref", "x")
    assert f"AMOUNT {amount!r}" in err


@pytest.mark.parametrize("ref", ["", "   ", "r" * 257])
def test_bad_reference_is_refused(funded, ref):
    assert "--ref" in funded.refused("prepaid", "topup", "acme", "1", "--ref", ref)


def test_balance_limit_names_the_amount(funded):
    err = funded.refused("prepaid", "topup", "acme", "100000000000.00", "--ref", "big")
    assert "AMOUNT 100000000000.00" in err and "limit" in err


@pytest.mark.parametrize("command", [["activate"], ["deactivate"], ["topup", "1", "--ref", "x"]])
@pytest.mark.parametrize("co, message", [
    ("umbrella", "company 'umbrella': not provisioned"),
    ("Acme", "COMPANY 'Acme': not a company id"),
    ("a}b", "COMPANY 'a}b': not a company id"),
])
def test_unknown_company_is_refused(db, command, co, message):
    assert message in db.refused("prepaid", command[0], co, *command[1:])


def test_topup_before_activation_is_refused(db):
    err = db.refused("prepaid", "topup", "acme", "10.00", "--ref", "early")
    assert "company 'acme': no Prepaid Account" in err and "prepaid activate acme" in err


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", ""])
def test_bad_currency_is_refused(db, currency):
    assert f"--currency {currency!r}" in db.refused("prepaid", "activate", "acme", "--currency", currency)


def test_currency_cannot_change_under_a_balance(funded):
    err = funded.refused("prepaid", "activate", "acme", "--currency", "USD")
    assert "--currency USD" in err and "EUR" in err
    assert "balance 0.00 USD" in funded.run("prepaid", "activate", "globex", "--currency", "USD")


def test_deactivate_keeps_the_balance(funded):
    out = funded.run("prepaid", "deactivate", "acme")
    assert "inactive, balance 20.00 EUR" in out
    assert "Prepaid Account inactive" in funded.run("prepaid", "show", "acme")
    assert "active, balance 20.00 EUR" in funded.run("prepaid", "activate", "acme")


def test_the_library_is_loaded_on_demand(db):
    db.client.function_delete("prepaid")
    try:
        assert "active" in db.run("prepaid", "activate", "acme")
        assert db.client.function_list(library="prepaid")
    finally:
        db.ledger.load_functions()  # the ledger tests share this server's functions


# ---------------------------------------------------------------- show and records

def test_show_lists_live_reservations_and_last_records(funded):
    rate = money.Rate("+44", per_minute=10)
    funded.ledger.reserve("acme", "live-call@pbx", rate, cap_secs=600, ttl_ms=700_000, ext="2001", to="+442079460000")
    for i in range(3):
        funded.ledger.reserve("acme", f"done-{i}", rate, cap_secs=600, ttl_ms=60_000, ext="2002", to="+442079460001")
        funded.ledger.settle("acme", f"done-{i}", 61, {"disposition": "answered"})
    out = funded.run("prepaid", "show", "acme", "--records", "2")
    assert "balance    19.40 EUR" in out  # 3 calls of 120 s billed at 0.10/min
    assert "reserved   1.00 EUR (1 live calls)" in out and "available  18.40 EUR" in out
    [live] = [line for line in out.splitlines() if "live-call@pbx" in line]
    assert "1.00 EUR" in live and "max 600s" in live and "expires 20" in live and "2001 -> +442079460000" in live
    assert "last 2 records:" in out and "done-0" not in out and "done-1" in out and "done-2" in out
    assert "cost 0.20" in out and "balance 19.40" in out
    assert "done" not in funded.run("prepaid", "show", "acme", "--records", "0")


@pytest.mark.parametrize("records", ["-1", "x", "1.5", "1000001"])
def test_show_refuses_a_bad_record_count(funded, records):
    assert "--records" in funded.refused("prepaid", "show", "acme", "--records", records)


def test_show_without_an_account(db):
    assert "acme: no Prepaid Account (never activated)" in db.run("prepaid", "show", "acme")
    assert "company 'umbrella': not provisioned" in db.refused("prepaid", "show", "umbrella")


def test_money_of_a_removed_company_stays_visible(funded, tmp_path):
    text = OFFICE.read_text()
    acme, globex = text.index("  - id: acme"), text.index("  - id: globex")
    assert acme < globex
    only_globex = tmp_path / "globex.yaml"
    only_globex.write_text(text[:acme] + text[globex:])
    funded.run("load", "--prune", str(only_globex))
    assert funded.client.exists("{co:acme}:company") == 0
    assert "balance    20.00 EUR" in funded.run("prepaid", "show", "acme")
    assert "not provisioned" in funded.refused("prepaid", "topup", "acme", "1", "--ref", "late")


CSV_HEADER = ("id,company,extension,from,to,category,billing,setup,answer,end,billed_secs,cost,balance_after,"
              "disposition,note")


def test_records_csv(funded):
    rate = money.Rate("+44", per_minute=10)
    funded.ledger.reserve("acme", "c1", rate, cap_secs=600, ttl_ms=60_000, ext="2001", to="+442079460000",
                          meta={"from": "2001", "category": "international", "billing": "prepaid"})
    funded.ledger.settle("acme", "c1", 61, {"answer_ms": 1_700_000_000_250, "end_ms": 1_700_000_061_250})
    funded.ledger.record("acme", {"ext": "2002", "from": "=HYPERLINK(\"http://x\")", "to": "+33144556677",
                                  "category": "domestic", "billing": "included", "setup_ms": 0,
                                  "disposition": "answered"})
    entry = funded.client.xadd(Keys.of("acme").cdr, {"r": b"\xc1"}).decode()  # unreadable
    out = funded.run("prepaid", "records", "acme", "--csv")
    assert out.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3
    paid, free, broken = rows
    assert paid["company"] == "acme" and paid["extension"] == "2001" and paid["from"] == "2001"
    assert (paid["to"], paid["category"], paid["billing"]) == ("+442079460000", "international", "prepaid")
    assert paid["setup"].endswith("Z") and paid["setup"][:2] == "20"  # reservation time, server clock
    assert (paid["answer"], paid["end"]) == ("2023-11-14T22:13:20.250Z", "2023-11-14T22:14:21.250Z")
    assert (paid["billed_secs"], paid["cost"], paid["balance_after"]) == ("120", "20", "1980")
    assert (paid["disposition"], paid["note"]) == ("answered", "")
    assert free["from"] == "'=HYPERLINK(\"http://x\")"  # a spreadsheet shows it, does not run it
    assert free["to"] == "+33144556677" and free["setup"] == "1970-01-01T00:00:00.000Z"
    assert free["answer"] == free["cost"] == free["billed_secs"] == free["note"] == ""
    assert broken["id"] == entry and broken["company"] == "acme" and broken["note"] == "unreadable record"
    assert rows[0]["id"] < rows[1]["id"] < rows[2]["id"]


def test_records_count_takes_the_most_recent_across_pages(funded):
    cdr = Keys.of("acme").cdr
    pipe = funded.client.pipeline(transaction=False)
    for i in range(2300):
        pipe.xadd(cdr, {"r": msgpack.packb({"note": str(i)})})
    pipe.execute()
    rows = list(csv.DictReader(io.StringIO(funded.run("prepaid", "records", "acme", "--csv", "--count", "2100"))))
    assert [r["note"] for r in rows] == [str(i) for i in range(200, 2300)]
    text = funded.run("prepaid", "records", "acme", "--count", "2").splitlines()
    assert len(text) == 2 and "(2298)" in text[0] and "(2299)" in text[1]


def test_records_of_a_company_without_calls(funded):
    assert funded.run("prepaid", "records", "acme") == "acme: no records\n"
    assert funded.run("prepaid", "records", "acme", "--csv") == CSV_HEADER + "\n"
    assert "--count '0'" in funded.refused("prepaid", "records", "acme", "--count", "0")


# ---------------------------------------------------------------- rates

def test_rate_set_list_show_remove(db):
    assert "rate added: +44 0.10/min" in db.run("rate", "set", "+44", "0.10")
    out = db.run("rate", "set", "+447", "25", "--fee", "0.05", "--increments", "30/6")
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
    (["+44", "ten"], "PER_MINUTE 'ten'"),
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
