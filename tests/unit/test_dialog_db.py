"""Where the dialogs live (kemi/store/dialog_db.py): REDIS_URL or DIALOG_REDIS_URL in db_redis's words."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from kemi.paths import ROOT
from kemi.store import dialog_db


@pytest.mark.parametrize("url, db, expected", [
    ("redis://127.0.0.1:6379/0", 15, "redis://127.0.0.1:6379/15"),
    ("redis://10.0.0.5:6390/3", None, "redis://10.0.0.5:6390/3"),
    ("redis://:s3cret@10.0.0.5/0", 14, "redis://default:s3cret@10.0.0.5:6379/14"),
    ("redis://default:p%40ss@h:1/0", 15, "redis://default:p%40ss@h:1/15"),
])
def test_a_tcp_url_keeps_its_server_and_password_in_the_proxys_own_database(url, db, expected):
    found = dialog_db.dialog_db(url, db)
    assert (found.mode, found.url, found.problem) == (dialog_db.DB_MODE, expected, None)


@pytest.mark.parametrize("url, why", [
    ("unix:///run/redis/redis.sock?db=0", "unix socket"),
    ("rediss://10.0.0.5:6380/0", "TLS"),
    ("redis://kemi:pw@10.0.0.5:6379/0", "ACL user 'kemi'"),
])
def test_a_url_db_redis_cannot_use_keeps_the_dialogs_in_memory_and_says_why(url, why):
    found = dialog_db.dialog_db(url, 15)
    assert found.mode == 0 and found.url == "" and why in found.problem


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kemi.store.dialog_db", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_kamailio_sh_gets_the_mode_and_url_and_a_deployment_url_it_cannot_use_stops_the_start(monkeypatch, capsys):
    monkeypatch.setattr(dialog_db, "unreachable", lambda url: None)  # a Redis that answers
    assert dialog_db.main(["x", "redis://127.0.0.1:6379/0", "15"]) == 0
    assert capsys.readouterr().out.split() == ["1", "redis://127.0.0.1:6379/15"]
    fallback = run("unix:///tmp/r.sock", "15")
    assert fallback.returncode == 0 and fallback.stdout.split() == ["0", "none"]
    assert "WARNING" in fallback.stderr and "restart cuts every call" in fallback.stderr
    refused = run("--required", "unix:///tmp/r.sock")
    assert refused.returncode == 2 and "Kamailio not started" in refused.stderr and not refused.stdout


def test_kamailio_cfg_keeps_the_dialogs_where_kamailio_sh_says():
    cfg = (ROOT / "kamailio.cfg").read_text()
    assert 'loadmodule "db_redis.so"' in cfg
    assert re.search(r'modparam\("dialog", "db_url", DIALOG_DB_URL\)', cfg)
    assert re.search(r'modparam\("dialog", "db_mode", DIALOG_DB_MODE\)', cfg)
    # the tables the module writes have their keys (db_redis stores nothing for a table without one)
    for table in ("dialog", "dialog_vars"):
        assert re.search(rf'modparam\("db_redis", "keys", "{table}=entry:', cfg)
    assert "-m kemi.store.dialog_db" in (ROOT / "scripts" / "kamailio.sh").read_text()


def test_a_redis_that_does_not_answer_at_start_keeps_the_dialogs_in_memory_so_the_proxy_starts():
    # nothing listens on port 1: refused at once. db_mode 1 without its database would stop Kamailio,
    # and a proxy must start without Redis (emergency calls)
    down = run("--required", "redis://:pw@127.0.0.1:1/0")
    assert down.returncode == 0 and down.stdout.split() == ["0", "none"]
    assert "does not answer" in down.stderr and "restart the proxy once Redis is back" in down.stderr
