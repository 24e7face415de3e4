"""The proxy's Redis user cannot mint money (issue 21.3): the rights of redis-schema/acl/, in a real
redis-server 7.0 started with them (tests/harness.py), tried as the proxy's user.

Redis checks every command a function runs against the caller's rights, so what the proxy may not
write directly it may not write through FCALL either; what it must write for its calls (HINCRBY of a
balance, RPUSH of a charge) the audit checks (test_audit.py)."""

from __future__ import annotations

import msgpack
import pytest
import redis

from kemi import money
from kemi.paths import PREPAID_LUA
from kemi.settings import SCHEMA_VERSION
from kemi.store.acl import PROXY_USER
from kemi.store.directory import Directory
from kemi.store.prepaid import Keys, PrepaidLedger
from tests.harness import RedisServer

RATE = money.Rate("+44", 120, 0, 60, 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Redis of this module's own: the refusals tried here stay out of the session's ACL LOG, which
    must hold none of the proxy's user at the end (tests/conftest.py)."""
    srv = RedisServer(tmp_path_factory.mktemp("acl")).start()
    PrepaidLedger(srv.store(), loads_functions=True).load_functions()
    srv.client().set("schema:version", msgpack.packb(SCHEMA_VERSION))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin_ledger(server):
    return PrepaidLedger(server.store(), loads_functions=True)


@pytest.fixture(scope="module")
def proxy_ledger(server):
    return PrepaidLedger(server.store(as_proxy=True))


@pytest.fixture(scope="module")
def admin_client(server):
    return server.client()


@pytest.fixture(scope="module")
def proxy(server):
    client = server.client(as_proxy=True)
    assert client.ping()
    return client


@pytest.fixture
def acme(admin_ledger, admin_client):
    """A funded account, and every kind of key of it in use."""
    k = Keys.of("acme")
    admin_client.delete(*vars(k).values())
    admin_ledger.activate("acme", "EUR")
    admin_ledger.topup("acme", "pay-1", 10_000)
    admin_ledger.set_rate(RATE)
    return k


def everything(client, k):
    return {key: client.dump(key) for key in vars(k).values()}


def refused(call, *args) -> str:
    """The error reply, as Redis sent it (redis-py turns NOPERM into NoPermissionError, without the word)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        call(*args)
    return ("NOPERM " if isinstance(info.value, redis.exceptions.NoPermissionError) else "") + str(info.value)


MONEY_WRITES = [
    ("HSET", "{co:acme}:prepaid", "balance", "99999999"),
    ("HSET", "{co:acme}:prepaid", "active", "1"),
    ("HSETNX", "{co:acme}:prepaid", "bonus", "1"),
    ("HINCRBYFLOAT", "{co:acme}:prepaid", "balance", "1"),
    ("DEL", "{co:acme}:prepaid"),
    ("UNLINK", "{co:acme}:ledger"),
    ("RENAME", "{co:acme}:prepaid", "{co:acme}:x"),
    ("COPY", "{co:other}:prepaid", "{co:acme}:prepaid", "REPLACE"),
    ("RESTORE", "{co:acme}:prepaid", "0", "x", "REPLACE"),
    ("HSET", "{co:acme}:topups", "forged", msgpack.packb({"amount": 99999999, "at_ms": 1, "balance_after": 1})),
    ("HDEL", "{co:acme}:topups", "pay-1"),
    ("HSET", "{co:acme}:opening", "charged", "-99999999"),
    ("LTRIM", "{co:acme}:ledger", "1", "0"),
    ("LPOP", "{co:acme}:ledger"),
    ("RPOP", "{co:acme}:ledger"),
    ("LSET", "{co:acme}:ledger", "0", "x"),
    ("LREM", "{co:acme}:ledger", "0", "x"),
    ("EXPIRE", "{co:acme}:prepaid", "1"),
    ("EXPIRE", "{co:acme}:ledger", "1"),
    ("SET", "schema:version", "x"),
    ("HSET", "rates", "+44", "x"),
    ("HSET", "trunks", "evil", "x"),
    ("SET", "{co:acme}:company", "x"),
    ("INCR", "directory:version"),
]
ADMIN_ONLY = [
    ("EVAL", "return redis.call('HSET', KEYS[1], 'balance', 99999999)", "1", "{co:acme}:prepaid"),
    ("EVAL", "return 1", "0"),
    ("EVAL_RO", "return 1", "0"),
    ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "DELETE", "prepaid"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "DUMP"),
    ("FUNCTION", "RESTORE", "x", "REPLACE"),
    ("FUNCTION", "KILL"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "REWRITE"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("KEYS", "{co:*}:prepaid"),
    ("SCAN", "0", "MATCH", "{co:*}:prepaid"),
    ("ACL", "SETUSER", PROXY_USER, "+@all", "~*"),
    ("ACL", "LIST"),
    ("SHUTDOWN", "NOSAVE"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("MIGRATE", "127.0.0.1", "1", "{co:acme}:prepaid", "0", "1"),
    ("MONITOR",),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("MULTI",),
    ("SUBSCRIBE", "x"),
    ("HGETALL", "{co:acme}:topups"),
    ("LRANGE", "{co:acme}:ledger", "0", "-1"),
    ("XRANGE", "{co:acme}:cdr", "-", "+"),
]


@pytest.mark.parametrize("command", MONEY_WRITES, ids=lambda c: " ".join(map(str, c[:2])))
def test_the_proxy_cannot_write_money_or_directory_keys(proxy, admin_client, acme, command):
    before = everything(admin_client, acme)
    assert "NOPERM" in refused(proxy.execute_command, *command)
    assert everything(admin_client, acme) == before


@pytest.mark.parametrize("command", ADMIN_ONLY, ids=lambda c: " ".join(map(str, c[:2])))
def test_the_proxy_has_no_script_function_config_or_keyspace_command(proxy, admin_client, acme, command):
    before = everything(admin_client, acme)
    assert "NOPERM" in refused(proxy.execute_command, *command)
    assert everything(admin_client, acme) == before
    assert admin_client.function_list(library="prepaid"), "the library is still loaded"


def test_the_proxy_cannot_load_or_replace_the_prepaid_library(proxy, admin_client, acme):
    minting = PREPAID_LUA.read_text().replace("local function topup(keys, args)",
                                              "local function topup(keys, args)\n  do return 1 end")
    for args in (("FUNCTION", "LOAD", "REPLACE", minting), ("FUNCTION", "LOAD", "REPLACE", PREPAID_LUA.read_text()),
                 ("FUNCTION", "LOAD", "#!lua name=mint\nredis.register_function('mint', function() return 1 end)")):
        assert "NOPERM" in refused(proxy.execute_command, *args)
    [lib] = admin_client.function_list(library="prepaid", withcode=True)
    assert dict(zip(lib[::2], lib[1::2]))[b"library_code"] == PREPAID_LUA.read_bytes()
    assert not admin_client.function_list(library="mint")


@pytest.mark.parametrize("name, keys, args", [
    ("prepaid_topup", ("prepaid", "topups"), ("mint-1", 99_999_999)),
    ("prepaid_topup", ("prepaid",), ("mint-2", 99_999_999)),  # without the key it may not name
    ("prepaid_activate", ("prepaid",), ("EUR",)),
    ("prepaid_deactivate", ("prepaid",), ()),
    ("prepaid_ledger_open", ("prepaid", "topups", "ledger", "opening"), ()),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_the_admins_functions_are_refused_to_the_proxy_before_they_change_anything(proxy, admin_client, acme,
                                                                                 name, keys, args):
    """FCALL checks the keys it is given; inside, Redis checks each command as the proxy's user, and
    every admin function's first write is one the proxy may not make (prepaid.lua writes records
    first), so nothing is half done."""
    before = everything(admin_client, acme)
    error = refused(proxy.execute_command, "FCALL", name, len(keys), *(getattr(acme, k) for k in keys), *args)
    assert error.startswith("NOPERM") or error.startswith("The user executing the script can't ") or \
        error.startswith("BAD_KEYS"), error
    assert everything(admin_client, acme) == before


def test_calls_still_work_as_the_proxy(proxy_ledger, admin_ledger, server, acme):
    """Everything the routes do for a prepaid call, with the proxy's user only, and not one refusal."""
    server.client().acl_log_reset()
    rate = proxy_ledger.rate_for("+447700900123")
    assert rate == RATE
    held = proxy_ledger.reserve("acme", "resv-1", rate, cap_secs=600, ttl_ms=60_000, ext="2001", to="+447700900123")
    assert held.amount == money.cost(RATE, 600)
    assert proxy_ledger.reserve("acme", "resv-1", rate, cap_secs=600, ttl_ms=60_000).duplicate
    assert proxy_ledger.renew("acme", "resv-1", 120_000)
    assert proxy_ledger.status("acme").reserved == held.amount
    done = proxy_ledger.settle("acme", "resv-1", 61, {"disposition": "answered"})
    assert done.cost == money.cost(RATE, 61) and done.balance == 10_000 - done.cost
    assert proxy_ledger.settle("acme", "resv-1", 61).duplicate
    proxy_ledger.record("acme", {"call_id": "included-1", "disposition": "answered"})
    proxy_ledger.record_unattributed({"call_id": "112-1"})
    assert admin_ledger.status("acme").balance == 10_000 - done.cost
    # the directory reads of a call
    directory = Directory(server.store(as_proxy=True))
    assert directory.company("acme") is None and not directory.trunks()
    assert server.refusals(PROXY_USER) == []


def test_the_proxy_reports_a_missing_library_instead_of_loading_it(server, admin_client, proxy_ledger, acme):
    code = PREPAID_LUA.read_text()
    admin_client.function_delete("prepaid")
    try:
        with pytest.raises(Exception, match="not loaded.*the admin user loads them"):
            proxy_ledger.status("acme")
        assert not admin_client.function_list(library="prepaid")
    finally:
        admin_client.function_load(code, replace=True)


def test_the_proxy_may_still_raise_a_balance_by_hincrby_which_is_why_the_ledger_is_audited(proxy, admin_client,
                                                                                         acme):
    """The one money write Redis cannot take from the proxy without breaking settle: recorded here so
    that a change of the rules that closes it is noticed (and test_audit.py shows it is caught)."""
    assert proxy.execute_command("HINCRBY", acme.prepaid, "balance", "1") == 10_001
    admin_client.hincrby(acme.prepaid, "balance", -1)


def test_the_default_user_is_topology_hidings_and_db_redis_only(server, acme):
    """ndb_redis and db_redis log in as `default` only: their keys, never money nor the directory,
    even through the EVAL db_redis needs."""
    default = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
    assert default.ping()
    default.execute_command("HMSET", "d:z:test", "a", "1")  # what topos_redis writes
    assert default.hgetall("d:z:test") == {b"a": b"1"}
    default.execute_command("HMSET", "dialog:entry::1:2", "callid", "x")  # db_redis: a dialog row, a location index
    default.sadd("location:usrdom::2001:acme", "location:entry::r1")
    assert default.eval("return redis.call('HGET', KEYS[1], 'callid')", 1, "dialog:entry::1:2") == b"x"
    for command in (("HGETALL", acme.prepaid), ("GET", "{co:acme}:company"), ("HINCRBY", acme.prepaid, "balance", "1"),
                    ("FCALL", "prepaid_status", "3", acme.prepaid, acme.resv, acme.calls), ("FLUSHALL",),
                    ("FUNCTION", "FLUSH"), ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', "
                                                            "function() return 1 end)"),
                    ("HGETALL", "trunks"), ("CONFIG", "GET", "*"), ("DEL", acme.prepaid),
                    ("EVAL", "return redis.call('HSET', KEYS[1], 'balance', 99999999)", "1", acme.prepaid)):
        assert "NOPERM" in refused(default.execute_command, *command), command
    # a script that names no key but writes money inside is refused at that command
    error = refused(default.execute_command, "EVAL", "return redis.call('HSET', '{co:acme}:prepaid', 'balance', 1)", "0")
    assert error.startswith("The user executing the script can't"), error
    assert server.client().hget(acme.prepaid, "balance") == b"10000"
