"""The admin audit (kemi/admin_audit.py): every change made through kemi.admin leaves one record, who,
when and what, in Redis (the capped stream audit:admin) and in the log file; reads and refused
changes leave none. Against the session's real redis-server, in a database of its own."""

from __future__ import annotations

import json
import re

import pytest

from kemi.store import keys
from tests.conftest import CLI_AUDIT_DB, OFFICE
from tests.harness import admin


@pytest.fixture
def db(redis_server, tmp_path, monkeypatch):
    client = redis_server.client(CLI_AUDIT_DB)
    client.flushdb()
    log = tmp_path / "admin-audit.log"
    monkeypatch.setenv("COWORK_AUDIT_LOG", str(log))
    monkeypatch.delenv("SUDO_USER", raising=False)
    url = redis_server.url_of(CLI_AUDIT_DB)
    yield url, client, log
    client.flushdb()


def records(client) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(keys.ADMIN_AUDIT)]


def logged(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_every_change_is_recorded_with_who_when_and_what(db):
    url, client, log = db
    admin(url, "--actor", "ops-alice", "load", str(OFFICE))
    admin(url, "prepaid", "activate", "acme")
    admin(url, "--actor", "billing-job", "prepaid", "topup", "acme", "25.50", "--ref", "INV-7")
    admin(url, "rate", "set", "+44", "0.12", "--fee", "0.05")
    admin(url, "rate", "remove", "+44")
    admin(url, "override", "set", "+4475", "blocked")
    admin(url, "prepaid", "deactivate", "acme")
    stored = records(client)
    assert [r["command"] for r in stored] == ["load", "prepaid activate", "prepaid topup", "rate set", "rate remove",
                                            "override set", "prepaid deactivate"]
    load, _, topup, rate, *_ = stored
    assert load["actor"] == "ops-alice" and load["file"] == str(OFFICE) and re.fullmatch(r"[0-9a-f]{64}", load["sha256"])
    assert (topup["actor"], topup["company"], topup["amount"], topup["ref"]) == ("billing-job", "acme", "25.50", "INV-7")
    assert (rate["prefix"], rate["per_minute"], rate["fee"]) == ("+44", "0.12", "0.05")
    # without --actor: the OS user running the command
    assert stored[1]["actor"] and stored[1]["actor"] not in ("ops-alice", "billing-job")
    for r in stored:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["at"]) and r["host"]
    # the same records in the log, each naming its entry in Redis
    lines = logged(log)
    assert [line["command"] for line in lines] == [r["command"] for r in stored]
    assert [line["audit_id"] for line in lines] == [e.decode() for e, _ in client.xrange(keys.ADMIN_AUDIT)]
    assert lines[2]["actor"] == "billing-job" and lines[2]["amount"] == "25.50"
    # and readable through the CLI
    out = admin(url, "history", "--count", "3").stdout.splitlines()
    assert len(out) == 3 and "override set" in out[1] and "prefix=+4475" in out[1] and "billing=blocked" in out[1]


def test_reads_dry_runs_and_refused_changes_leave_no_record(db):
    url, client, log = db
    admin(url, "load", str(OFFICE), "--dry-run")
    admin(url, "load", str(OFFICE))
    before = client.xlen(keys.ADMIN_AUDIT)
    admin(url, "show")
    admin(url, "rate", "list")
    admin(url, "history")
    # refused: not activated (no currency), an amount that is not one, an unknown company
    assert admin(url, "prepaid", "topup", "acme", "10", "--ref", "R1", check=False).returncode == 2
    assert admin(url, "prepaid", "topup", "acme", "10.001", "--ref", "R1", check=False).returncode == 2
    assert admin(url, "prepaid", "activate", "nobody", check=False).returncode == 2
    assert client.xlen(keys.ADMIN_AUDIT) == before == 1
    assert len(logged(log)) == 1


def test_the_stream_is_capped(db):
    url, client, _ = db
    admin(url, "load", str(OFFICE))
    entry = client.xinfo_stream(keys.ADMIN_AUDIT)
    assert entry["length"] == 1
    # XADD MAXLEN ~: a stream past its cap is trimmed by the next record
    client.delete(keys.ADMIN_AUDIT)
    pipe = client.pipeline()
    for i in range(keys.ADMIN_AUDIT_MAXLEN + 500):
        pipe.xadd(keys.ADMIN_AUDIT, {"command": "filler", "i": str(i)})
    pipe.execute()
    admin(url, "rate", "set", "+44", "0.12")
    assert client.xlen(keys.ADMIN_AUDIT) <= keys.ADMIN_AUDIT_MAXLEN + 200
    assert records(client)[-1]["command"] == "rate set"
