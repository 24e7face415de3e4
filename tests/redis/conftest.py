"""The ledger tests run against the session's real redis-server (tests/conftest.py)."""

import itertools

import pytest
import redis

from kemi.store.prepaid import PrepaidLedger


@pytest.fixture(scope="session")
def rclient(redis_server):
    # database 1 of the session's redis-server: the CLI tests flush database 0
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1, decode_responses=False, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ledger(rclient):
    led = PrepaidLedger(rclient)
    led.load_functions()
    return led


@pytest.fixture(scope="session")
def new_co():
    """A factory of company slugs no other test (or hypothesis example) has used."""
    numbers = itertools.count(1)
    return lambda: f"t{next(numbers)}"


@pytest.fixture
def co(new_co):
    return new_co()
