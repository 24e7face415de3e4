"""The ledger tests run against the session's real redis-server (tests/conftest.py), in a database
of their own."""

import itertools

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import LEDGER_DB


@pytest.fixture(scope="session")
def rclient(redis_server):
    """A raw client of the ledger's database, to look at (or corrupt) what the ledger wrote."""
    client = redis_server.client(LEDGER_DB)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ledger(redis_server):
    led = PrepaidLedger(redis_server.store(LEDGER_DB))
    led.load_functions()
    return led


@pytest.fixture(scope="session")
def new_co():
    """A factory of company ids no other test (or hypothesis example) has used."""
    numbers = itertools.count(1)
    return lambda: f"t{next(numbers)}"


@pytest.fixture
def co(new_co):
    return new_co()
