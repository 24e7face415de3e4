"""`kemi.admin prepaid audit`: every balance equals its ledger, and a balance written behind the
ledger's back is caught, by the exit status, by the line that names the company, and by the series
the alert (monitoring/prometheus/ledger.rules.yml) reads. A real redis-server with the product's ACL
users: the proxy's moves go through the proxy's user."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

import msgpack
import pytest

from kemi import admin as admin_module
from kemi import ledger_audit, money
from kemi.cli_errors import EXIT_OK, EXIT_STORE_DOWN, EXIT_UNRECONCILED
from kemi.store.prepaid import Keys, PrepaidLedger
from tests.conftest import AUDIT_DB
from tests.harness import admin

RATE = money.Rate("+44", 120, 10, 60, 60)
GAUGE = re.compile(rf'^{ledger_audit.METRIC_DIFFERENCE}{{company="([^"]+)",currency="[A-Z]*"}} (-?\d+)$', re.M)


@pytest.fixture
def db(redis_server):
    raw = redis_server.client(AUDIT_DB)
    raw.flushdb()
    admin_ledger = PrepaidLedger(redis_server.store(AUDIT_DB), loads_functions=True)
    admin_ledger.load_functions()
    admin_ledger.set_rate(RATE)
    yield raw, admin_ledger, PrepaidLedger(redis_server.store(AUDIT_DB, as_proxy=True)), redis_server.url_of(AUDIT_DB)
    raw.flushdb()


def call(ledger: PrepaidLedger, co: str, call_id: str, secs: int) -> int:
    """One prepaid call as the proxy places it: reserve, then settle; its cost."""
    ledger.reserve(co, call_id, RATE, cap_secs=600, ttl_ms=60_000, ext="2001", to="+447700900123")
    return ledger.settle(co, call_id, secs, {"disposition": "answered"}).cost


def funded(admin_ledger, proxy_ledger, co: str, calls: int = 3) -> int:
    admin_ledger.activate(co, "EUR")
    admin_ledger.topup(co, f"{co}-pay-1", 10_000)
    admin_ledger.topup(co, f"{co}-pay-2", 2_550)
    spent = sum(call(proxy_ledger, co, f"{co}-call-{i}", 30 + 40 * i) for i in range(calls))
    assert spent > 0 or not calls
    return 12_550 - spent


def audit(url, *args, textfile=None, capsys=None):
    extra = ["--textfile", str(textfile)] if textfile else []
    code = admin_module.main(["--redis-url", url, "prepaid", "audit", *extra, *args])
    out, err = capsys.readouterr()
    return code, out, err


def gauges(path) -> dict[str, int]:
    return {co: int(v) for co, v in GAUGE.findall(path.read_text())}


def test_every_account_reconciles_after_real_calls(db, tmp_path, capsys):
    raw, admin_ledger, proxy_ledger, url = db
    left = {co: funded(admin_ledger, proxy_ledger, co) for co in ("acme", "initech")}
    admin_ledger.activate("umbrella", "EUR")  # activated, never credited
    code, out, _ = audit(url, textfile=tmp_path / "audit.prom", capsys=capsys)
    assert code == EXIT_OK, out
    assert f"acme: balance {left['acme']} expected {left['acme']} EUR minor units" in out
    assert "umbrella: balance 0 expected 0" in out
    assert "prepaid audit: 3 accounts, 0 do not reconcile" in out
    assert gauges(tmp_path / "audit.prom") == {"acme": 0, "initech": 0, "umbrella": 0}
    assert f"{ledger_audit.METRIC_UNRECONCILED} 0" in (tmp_path / "audit.prom").read_text()
    # the ledger holds one entry per charged call, with the balance after it
    entries = [msgpack.unpackb(b) for b in raw.lrange(Keys.of("acme").ledger, 0, -1)]
    assert [e["id"] for e in entries] == ["acme-call-0", "acme-call-1", "acme-call-2"]
    assert entries[-1]["balance"] == left["acme"]


@pytest.mark.parametrize("how", ["proxy HINCRBY", "admin HSET", "admin HINCRBY down"])
def test_a_balance_written_behind_the_ledgers_back_is_caught(db, tmp_path, capsys, redis_server, how):
    raw, admin_ledger, proxy_ledger, url = db
    left = funded(admin_ledger, proxy_ledger, "acme")
    funded(admin_ledger, proxy_ledger, "initech")
    k = Keys.of("acme")
    if how == "proxy HINCRBY":  # the proxy's password in the wrong hands: its one money write
        redis_server.client(AUDIT_DB, as_proxy=True).hincrby(k.prepaid, "balance", 99_999_999)
        found, diff = left + 99_999_999, 99_999_999
    elif how == "admin HSET":
        raw.hset(k.prepaid, "balance", 99_999_999)
        found, diff = 99_999_999, 99_999_999 - left
    else:
        raw.hincrby(k.prepaid, "balance", -7)
        found, diff = left - 7, -7
    code, out, err = audit(url, textfile=tmp_path / "audit.prom", capsys=capsys)
    assert code == EXIT_UNRECONCILED
    line = next(line for line in out.splitlines() if line.startswith("acme:"))
    assert f"balance {found} expected {left} EUR minor units" in line and f"{diff:+d} " in line, line
    assert line.endswith("DOES NOT RECONCILE")
    assert "initech" in out and "initech" not in err  # the honest account is not accused
    assert "1 Prepaid Account(s) do not reconcile with their ledger: acme" in err
    assert gauges(tmp_path / "audit.prom") == {"acme": diff, "initech": 0}
    assert f"{ledger_audit.METRIC_UNRECONCILED} 1" in (tmp_path / "audit.prom").read_text()


@pytest.mark.parametrize("damage", ["forged charge", "negative charge", "charge removed", "forged top-up",
                                    "balance not an integer"])
def test_damaged_entries_are_named(db, capsys, damage):
    raw, admin_ledger, proxy_ledger, url = db
    funded(admin_ledger, proxy_ledger, "acme")
    k = Keys.of("acme")
    if damage == "forged charge":
        raw.rpush(k.ledger, b"\xc1")
    elif damage == "negative charge":  # would give money back: not an entry settle writes
        raw.rpush(k.ledger, msgpack.packb({"id": "x", "cost": -500, "balance": 1, "ms": 1}))
    elif damage == "charge removed":
        raw.lpop(k.ledger)
    elif damage == "forged top-up":
        raw.hset(k.topups, "forged", msgpack.packb({"amount": "lots"}))
    else:
        raw.hset(k.prepaid, "balance", "12.5")
    code, out, _ = audit(url, "acme", capsys=capsys)
    assert code == EXIT_UNRECONCILED, out
    assert "DOES NOT RECONCILE" in out
    if damage in ("forged charge", "negative charge"):
        assert "ledger[3] is not a charge the ledger wrote" in out
    if damage == "forged top-up":
        assert "topups['forged'] is not a top-up the ledger wrote" in out
    if damage == "balance not an integer":
        assert "balance '12.5' is not an integer the ledger wrote" in out


def test_an_account_older_than_its_ledger_is_opened_once(db, capsys):
    """An account charged by a release without the ledger: its balance is below its top-ups. The
    admin accepts it once (ledger-open); later charges and tampering are judged from there."""
    raw, admin_ledger, proxy_ledger, url = db
    admin_ledger.activate("acme", "EUR")
    admin_ledger.topup("acme", "pay-1", 5_000)
    raw.hincrby(Keys.of("acme").prepaid, "balance", -1_234)  # the old release's charges
    assert audit(url, capsys=capsys)[0] == EXIT_UNRECONCILED
    assert admin_module.main(["--redis-url", url, "prepaid", "ledger-open", "acme"]) == EXIT_OK
    assert "acme: ledger opened: balance 3766 minor units accepted, 1234 minor units charged" in \
        capsys.readouterr().out
    assert admin_module.main(["--redis-url", url, "prepaid", "ledger-open", "acme"]) == EXIT_OK
    assert "already opened" in capsys.readouterr().out
    call(proxy_ledger, "acme", "after-1", 90)
    code, out, _ = audit(url, capsys=capsys)
    assert code == EXIT_OK and "(top-ups 5000 - opening 1234 - charges " in out, out
    raw.hincrby(Keys.of("acme").prepaid, "balance", 1)
    assert audit(url, capsys=capsys)[0] == EXIT_UNRECONCILED


def test_the_audit_never_accuses_an_account_whose_calls_settle_while_it_reads(db, capsys):
    """Its cut is one MULTI (balance, top-ups, opening, ledger length): settles that run meanwhile
    cannot make an honest account look wrong."""
    raw, admin_ledger, proxy_ledger, url = db
    funded(admin_ledger, proxy_ledger, "acme", calls=0)
    admin_ledger.topup("acme", "pay-big", 1_000_000)
    stop = threading.Event()

    def calls():
        i = 0
        while not stop.is_set() and i < 150:
            call(proxy_ledger, "acme", f"busy-{i}", 61)
            i += 1

    worker = threading.Thread(target=calls)
    worker.start()
    results = []
    try:
        while worker.is_alive() and len(results) < 500:
            results.append(audit(url, "acme", capsys=capsys))
    finally:
        stop.set()
        worker.join()
    assert all(code == EXIT_OK for code, _, _ in results), [out for code, out, _ in results if code]
    assert len(results) > 5 and raw.llen(Keys.of("acme").ledger) == 150


def test_an_unreachable_redis_is_exit_3_and_leaves_the_last_export(tmp_path):
    last = tmp_path / "audit.prom"
    last.write_text("previous\n")
    proc = admin("redis://127.0.0.1:1/0", "prepaid", "audit", "--textfile", str(last), check=False)
    assert proc.returncode == EXIT_STORE_DOWN and "unreachable" in proc.stderr
    assert last.read_text() == "previous\n"


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (prometheus package) not installed")
def test_the_export_is_valid_prometheus_text(db, tmp_path, capsys):
    raw, admin_ledger, proxy_ledger, url = db
    funded(admin_ledger, proxy_ledger, "acme")
    raw.hincrby(Keys.of("acme").prepaid, "balance", 5)
    audit(url, textfile=tmp_path / "audit.prom", capsys=capsys)
    check = subprocess.run(["promtool", "check", "metrics"], input=(tmp_path / "audit.prom").read_text(),
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
