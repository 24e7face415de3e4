"""WAIT after every money change (REDIS_WAIT_REPLICAS), against the session's real redis-server, which has
no replica: WAIT 1 finds none, which is what a dead or lagging replica looks like to the ledger.
(The CLI: tests/cli/test_admin_prepaid.py; with a replica: tests/sip/test_failover.py, where the
top-up through the CLI exits 0.)"""

from __future__ import annotations

import pytest

from kemi import metrics
from kemi.settings import Settings
from kemi.store import Connection
from kemi.store.prepaid import PrepaidLedger, Unreplicated
from tests.conftest import LEDGER_DB


def waiting_ledger(redis_server, replicas: int, require_replica: bool = False) -> tuple[PrepaidLedger, list]:
    conn = Connection(Settings(redis_url=redis_server.url_of(LEDGER_DB), redis_timeout_ms=10_000,
                               redis_wait_replicas=replicas, redis_wait_timeout_ms=20))
    seen: list[str] = []
    conn.on_error = seen.append
    return PrepaidLedger(conn, require_replica=require_replica), seen


def test_the_proxy_s_money_change_goes_on_unconfirmed_and_is_counted(redis_server, ledger, co, rclient):
    proxy_ledger, seen = waiting_ledger(redis_server, 1)
    proxy_ledger.activate(co)
    rclient.config_resetstat()
    done = proxy_ledger.topup(co, "ref-1", 500)
    assert done.balance == 500 and not done.duplicate
    assert seen == [metrics.UNREPLICATED, metrics.UNREPLICATED]  # the activation, then the top-up
    stats = rclient.info("commandstats")
    assert stats["cmdstat_fcall"]["calls"] == 1 and stats["cmdstat_wait"]["calls"] == 1


def test_reads_never_wait(redis_server, ledger, co, rclient):
    ledger.activate(co)
    proxy_ledger, seen = waiting_ledger(redis_server, 1)
    rclient.config_resetstat()
    assert proxy_ledger.status(co).active
    assert "cmdstat_wait" not in rclient.info("commandstats") and seen == []


def test_the_cli_s_change_is_applied_but_reported_unconfirmed(redis_server, ledger, co):
    strict, _ = waiting_ledger(redis_server, 1, require_replica=True)
    with pytest.raises(Unreplicated) as raised:
        strict.activate(co)
    assert raised.value.acknowledged == 0
    assert ledger.status(co).active  # applied on the primary all the same


def test_no_wait_without_replicas_asked(redis_server, ledger, co, rclient):
    quiet, seen = waiting_ledger(redis_server, 0, require_replica=True)
    rclient.config_resetstat()
    quiet.activate(co)
    assert "cmdstat_wait" not in rclient.info("commandstats") and seen == []
