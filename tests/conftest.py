"""Session fixtures: one real redis-server and one real Kamailio for the SIP tests."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from kemi.store.acl import PROXY_USER
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, admin

OFFICE = ROOT / "tests" / "sip" / "office.yaml"
# Databases of the session's redis-server: each suite has its own, so that none flushes
# or rewrites what another one (or the running proxy) reads.
SIP_DB = 0          # the office the session's proxy serves
LEDGER_DB = 1       # tests/redis
CLI_PREPAID_DB = 2  # tests/cli/test_admin_prepaid.py
CLI_DB = 3          # tests/cli/test_admin.py
AUDIT_DB = 4        # tests/redis/test_audit.py
CLI_AUDIT_DB = 9    # tests/cli/test_admin_audit.py


# The SIP tests' trunks and media servers listen on fixed addresses (127.0.0.2:5060, ...), so two
# test sessions on one machine (two checkouts) would answer each other's calls. A session that runs
# SIP tests waits for this lock; CI runs one session and never waits. A session in a network
# namespace of its own (`unshare -n`) shares no address and may name a lock of its own.
SIP_LOCK = os.environ.get("SIP_TESTS_LOCK", "/tmp/cowork-proxy-sip-tests.lock")


@pytest.fixture(scope="session", autouse=True)
def one_sip_session_per_machine(request):
    if not any("tests/sip/" in item.nodeid or item.nodeid.startswith("sip/") for item in request.session.items):
        yield
        return
    with open(SIP_LOCK, "w") as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        if waited > 1:
            print(f"\n(waited {waited:.0f} s for another SIP test session on this machine)")
        yield


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def redis_server(workdir):
    server = RedisServer(workdir).start()
    yield server
    # The proxies ran as the proxy's Redis user (redis-schema/acl/): one command of theirs refused
    # is a call that failed in production. (Deliberate refusals: tests/redis/test_acl.py, own Redis.)
    refused = server.refusals(PROXY_USER)
    server.stop()
    assert not refused, f"Redis refused the proxy's user (widen redis-schema/acl/cowork-proxy.acl?): {refused}"


@pytest.fixture(scope="session")
def proxy(workdir, redis_server):
    url = redis_server.url_of(SIP_DB)
    admin(url, "load", str(OFFICE))
    # The suite places dozens of emergency calls per extension within a minute on this proxy: its
    # per-phone limit is out of the way (the limits are tested on proxies of their own, test_security_edge).
    # Many calls at once from one phone (money, load): the relay's shares have a proxy of their own.
    kam = Proxy(workdir, url, EMERGENCY_CALLS_MAX="1000", EMERGENCY_UNIDENTIFIED_MAX="100000",
                **LOAD_MEDIA_SHARES).start()
    yield kam
    kam.stop()
