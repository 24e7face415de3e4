"""The proxy and its data store: started without Redis, Redis coming back, a foreign schema."""

from __future__ import annotations

import msgpack
import pytest

from tests.conftest import OFFICE
from tests.harness import Proxy, RedisServer, admin, options_request, send_raw, status_line, wait_for
from tests.sip.conftest import Phones


@pytest.fixture
def lonely(workdir):
    """A Redis that is not running yet, and a proxy started while it is down."""
    redis = RedisServer(workdir)
    proxy = Proxy(workdir, redis.url).start()
    yield redis, proxy
    proxy.stop()
    redis.stop()


def test_proxy_starts_without_redis_answers_503_then_recovers(lonely, workdir):
    redis, proxy = lonely
    assert "starting without data" in proxy.log_text()
    phones = Phones(proxy, workdir)
    try:
        alice = phones.phone("2001")
        # keepalives need no data
        assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")
        down = phones.register(alice)
        assert down.final == (503, "Subscriber Data Unavailable")
        assert "Retry-After: 5" in down.received("SIP/2.0 503")[0]
        assert "unreachable" in proxy.log_text()

        redis.start()
        admin(redis.url, "load", str(OFFICE))
        up = wait_for(lambda: phones.register(alice).final == (200, "OK"), 15, "service to resume")
        assert up
    finally:
        phones.cleanup()


def test_redis_lost_while_running_then_back(lonely, workdir):
    redis, proxy = lonely
    redis.start()
    admin(redis.url, "load", str(OFFICE))
    phones = Phones(proxy, workdir)
    try:
        alice = phones.phone("2001")
        assert phones.register(alice).final == (200, "OK")
        redis.stop()
        assert phones.call(alice, "2002").wait().final == (503, "Subscriber Data Unavailable")
        redis.start()  # empty: nothing provisioned, no schema
        assert phones.register(alice).final == (503, "Subscriber Data Not Provisioned")
        assert "schema:version=None" in proxy.log_text()
        admin(redis.url, "load", str(OFFICE))
        assert wait_for(lambda: phones.register(alice).final == (200, "OK"), 15, "service to resume")
    finally:
        phones.cleanup()


def test_proxy_refuses_to_start_on_an_unknown_schema_version(workdir):
    redis = RedisServer(workdir).start()
    try:
        redis.client().set("schema:version", msgpack.packb(99))
        proxy = Proxy(workdir, redis.url).start(wait=False)
        try:
            proxy.proc.wait(20)
            assert proxy.proc.returncode != 0
            assert "refusing to start" in proxy.log_text()
            assert "schema:version=99, this proxy understands 1" in proxy.log_text()
        finally:
            proxy.stop()
    finally:
        redis.stop()
