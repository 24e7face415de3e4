"""Session fixtures: one real redis-server and one real Kamailio for the SIP tests."""

from __future__ import annotations

import pytest

from tests.harness import ROOT, Proxy, RedisServer, admin

OFFICE = ROOT / "tests" / "sip" / "office.yaml"
# Databases of the session's redis-server: each suite has its own, so that none flushes
# or rewrites what another one (or the running proxy) reads.
SIP_DB = 0          # the office the session's proxy serves
LEDGER_DB = 1       # tests/redis
CLI_PREPAID_DB = 2  # tests/cli/test_admin_prepaid.py
CLI_DB = 3          # tests/cli/test_admin.py


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def redis_server(workdir):
    server = RedisServer(workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxy(workdir, redis_server):
    url = redis_server.url_of(SIP_DB)
    admin(url, "load", str(OFFICE))
    kam = Proxy(workdir, url).start()
    yield kam
    kam.stop()
