"""Session fixtures: one real redis-server and one real Kamailio for the SIP tests."""

from __future__ import annotations

import pytest

from tests.harness import ROOT, Proxy, RedisServer, admin

OFFICE = ROOT / "tests" / "sip" / "office.yaml"


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
    admin(redis_server.url, "load", str(OFFICE))
    kam = Proxy(workdir, redis_server.url).start()
    yield kam
    kam.stop()
