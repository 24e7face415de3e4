"""Dialling out through the real proxy: the country rules, trunks, failover and emergency calls.

SIPp plays the trunks on their own loopback addresses (tests/sip/office.yaml):
primary 127.0.0.2, backup 127.0.0.4, emergency 127.0.0.5, all on port 5060.
"""

from __future__ import annotations

import re

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import OFFICE, SIP_DB
from tests.harness import Proxy, RedisServer, admin, wait_for
from tests.sip.conftest import BACKUP, EMERGENCY, PRIMARY, Phones, header, ruri, trunk


def call_id_of(call) -> str:
    """The Call-ID SIPp used (its message log of the call)."""
    return re.search(r"^Call-ID:\s*(\S+)", call.messages, re.M | re.I).group(1)


def record_of(redis_server, call_id: str) -> dict | None:
    ledger = PrepaidLedger(redis_server.store(SIP_DB))
    return next((r for _, r in ledger.cdrs("acme") if r.get("call_id") == call_id), None)


@pytest.mark.parametrize("dialled, e164", [
    ("0612345678", "+33612345678"),              # French mobile: included
    ("01.42.68.53.00", "+33142685300"),          # landline with the dots a phone may send
    ("+33142685300", "+33142685300"),
    ("00442079460000", "+442079460000"),         # UK landline: included
    ("0800123456", "+33800123456"),              # toll-free: free
    ("003225123456", "+3225123456"),             # Belgian landline: included
    ("116000", "116000"),                        # EU social number: free, no E.164 form
])
def test_included_call_reaches_primary_trunk_in_e164_with_pai(phones, dialled, e164):
    alice = phones.phone("2001")
    carrier = trunk(phones, PRIMARY)
    call = phones.call(alice, dialled, hold_ms=200).wait()
    assert call.final == (200, "OK"), call.log + call.stdout
    assert "BYE 200" in call.log
    got = carrier.wait()
    invite = got.received("INVITE")[0]
    assert ruri(invite).startswith(f"sip:{e164}@127.0.0.2:5060")
    pai = header(invite, "P-Asserted-Identity")
    assert pai is not None and "+33142685301" in pai and '"Alice"' in pai


def test_extension_without_did_shows_company_main_number(phones):
    chloe = phones.phone("2003")
    carrier = trunk(phones, PRIMARY)
    assert phones.call(chloe, "0612345678").wait().final == (200, "OK")
    assert "+33142685300" in header(carrier.wait().received("INVITE")[0], "P-Asserted-Identity")


def test_failover_to_backup_trunk_on_5xx(phones):
    alice = phones.phone("2001")
    failing = trunk(phones, PRIMARY, (503, "Overloaded"))
    backup = trunk(phones, BACKUP)
    call = phones.call(alice, "0612345678").wait()
    assert call.final == (200, "OK"), call.log
    assert "REJECTED" in failing.wait().log
    assert ruri(backup.wait().received("INVITE")[0]).startswith("sip:+33612345678@127.0.0.4:5060")


def test_failover_on_silent_trunk(phones):
    alice = phones.phone("2001")  # nothing listens on the primary: it times out (TRUNK_TIMEOUT_MS)
    backup = trunk(phones, BACKUP)
    call = phones.call(alice, "0612345678").wait()
    assert call.final == (200, "OK"), call.log
    assert ruri(backup.wait().received("INVITE")[0]).startswith("sip:+33612345678@127.0.0.4:5060")


def test_all_trunks_fail_caller_gets_the_last_error(phones, proxy, redis_server):
    alice = phones.phone("2001")
    trunk(phones, PRIMARY, (503, "Overloaded"))
    trunk(phones, BACKUP, (502, "Bad Gateway"))
    mark = proxy.mark()
    call = phones.call(alice, "0612345678").wait()
    assert call.final == (502, "Bad Gateway")
    call_id = call_id_of(call)
    # the record says no trunk took the call, not that it rang out
    record = wait_for(lambda: record_of(redis_server, call_id), 5, "the call record")
    assert record["disposition"] == "trunks-failed" and record["cost"] == 0
    log = proxy.log_since(mark)
    failed = [line for line in log.splitlines() if "every trunk failed" in line]
    assert len(failed) == 1 and call_id in failed[0], log[-3000:]
    assert "127.0.0.2:5060) answered 503" in failed[0] and "127.0.0.4:5060) answered 502" in failed[0]


def test_a_call_that_rings_out_is_unanswered_not_trunks_failed(phones, redis_server):
    alice = phones.phone("2001")
    trunk(phones, PRIMARY, (486, "Busy Here"))
    call = phones.call(alice, "0612345679").wait()
    assert call.final == (486, "Busy Here")
    record = wait_for(lambda: record_of(redis_server, call_id_of(call)), 5, "the call record")
    assert record["disposition"] == "unanswered"


def test_a_silent_trunk_is_logged_as_silence(phones, proxy):
    alice = phones.phone("2001")  # nothing listens on the primary
    backup = trunk(phones, BACKUP)
    mark = proxy.mark()
    call = phones.call(alice, "0612345678").wait()
    assert call.final == (200, "OK"), call.log
    backup.wait()
    log = proxy.log_since(mark)
    assert re.search(r"no reply from \S+ \(udp:127\.0\.0\.2:5060\) in \d+ ms: trying \S+ \(udp:127\.0\.0\.4:5060\)", log), log[-3000:]
    assert "answered 408" not in log


def test_registration_and_connected_call_each_get_one_info_line(phones, proxy):
    mark = proxy.mark()
    bruno = phones.registered(phones.phone("2002"))
    answering = phones.answer(bruno)
    call = phones.call(phones.phone("2001"), "2002").wait()
    assert call.final == (200, "OK"), call.log
    answering.wait()
    log = proxy.log_since(mark)
    registered = [line for line in log.splitlines() if "2002@acme.test registered for " in line and " from udp:" in line]
    assert len(registered) == 1 and "INFO" in registered[0], log[-3000:]
    connected = [line for line in log.splitlines() if f"call-id {call_id_of(call)} connected" in line]
    assert len(connected) == 1 and "internal call 2001@acme -> 2002" in connected[0], log[-3000:]


def test_callee_busy_is_not_retried_on_the_backup(phones):
    alice = phones.phone("2001")
    trunk(phones, PRIMARY, (486, "Busy Here"))
    backup = trunk(phones, BACKUP)
    assert phones.call(alice, "0612345678").wait().final == (486, "Busy Here")
    backup.stop()
    assert not backup.wait().received("INVITE")


@pytest.mark.parametrize("dialled, answer", [
    ("0899123456", (403, "Premium-rate or shared-cost number blocked")),
    ("3631", (403, "Short service number blocked")),
    ("1016", (403, "Carrier selection prefix not allowed")),
    ("004915112345678", (403, "Prepaid Account Not Activated")),   # German mobile: prepaid
    ("118712", (403, "Prepaid Account Not Activated")),            # directory: prepaid
    ("06123", (484, "Address Incomplete")),
    ("0712345678", (404, "Unallocated number")),
    ("0612345678%3Bfoo", (404, "Not a dialable number")),
])
def test_refused_numbers_get_the_precise_reason(phones, dialled, answer):
    alice = phones.phone("2001")
    assert phones.call(alice, dialled).wait().final == answer


def test_ops_override_takes_effect_without_restart(phones, proxy):
    alice = phones.phone("2001")
    admin(proxy.redis_url, "override", "set", "+4915", "included")
    try:
        carrier = trunk(phones, PRIMARY)
        assert phones.call(alice, "004915112345678").wait().final == (200, "OK")
        assert ruri(carrier.wait().received("INVITE")[0]).startswith("sip:+4915112345678@")
        admin(proxy.redis_url, "override", "set", "+3361", "blocked")
        assert phones.call(alice, "0612345678").wait().final[0] == 403
    finally:
        admin(proxy.redis_url, "override", "remove", "+4915")
        admin(proxy.redis_url, "override", "remove", "+3361")


@pytest.mark.parametrize("code", ["15", "17", "18", "112", "114", "115", "119", "191", "196", "197"])
def test_every_emergency_code_reaches_the_emergency_trunk(phones, code):
    alice = phones.phone("2001")
    answering = trunk(phones, EMERGENCY)
    call = phones.call(alice, code, hold_ms=100).wait()
    assert call.final == (200, "OK"), call.log
    invite = answering.wait().received("INVITE")[0]
    assert ruri(invite).startswith(f"sip:{code}@127.0.0.5:5060")
    assert header(invite, "X-Emergency-Callback") == "+33142685301"
    assert header(invite, "X-Emergency-Location") == "12 rue de la Paix, 75002 Paris"
    assert header(invite, "Priority") == "emergency"


# -- emergency calls without Redis ------------------------------------------------------------------
@pytest.fixture
def isolated(workdir):
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    proxy = Proxy(workdir, redis.url, EMERGENCY_TRUNKS="udp:127.0.0.5:5060").start()
    phones = Phones(proxy, workdir)
    yield redis, proxy, phones
    phones.cleanup()
    proxy.stop()
    redis.stop()


def test_emergency_call_with_redis_down_uses_what_registration_cached(isolated):
    redis, proxy, phones = isolated
    alice = phones.registered(phones.phone("2001"))
    redis.stop()
    answering = trunk(phones, EMERGENCY)
    call = phones.call(alice, "112", hold_ms=100).wait()
    assert call.final == (200, "OK"), call.log + proxy.log_text()[-2000:]
    invite = answering.wait().received("INVITE")[0]
    assert header(invite, "X-Emergency-Callback") == "+33142685301"
    assert header(invite, "X-Emergency-Location") == "12 rue de la Paix, 75002 Paris"
    # the same phone's ordinary call is refused meanwhile
    assert phones.call(alice, "0612345678").wait().final == (503, "Subscriber Data Unavailable")


@pytest.mark.parametrize("store", ["down", "empty"])
def test_emergency_call_from_a_proxy_that_never_saw_data(workdir, store):
    redis = RedisServer(workdir)  # down: never started; empty: running, nothing provisioned
    if store == "empty":
        redis.start()
    proxy = Proxy(workdir, redis.url, EMERGENCY_TRUNKS="udp:127.0.0.5:5060").start()
    phones = Phones(proxy, workdir)
    try:
        answering = trunk(phones, EMERGENCY)
        call = phones.call(phones.phone("2002"), "18", hold_ms=100).wait()
        assert call.final == (200, "OK"), call.log
        assert ruri(answering.wait().received("INVITE")[0]).startswith("sip:18@127.0.0.5:5060")
        assert "starting without data" in proxy.log_text()
    finally:
        phones.cleanup()
        proxy.stop()
        redis.stop()


def test_emergency_call_failing_on_every_route_is_logged_at_crit(isolated):
    _, proxy, phones = isolated  # nothing answers on the emergency trunk: it stays silent
    alice = phones.phone("2001")
    mark = proxy.mark()
    call = phones.call(alice, "112", hold_ms=100).wait()
    assert call.final[0] == 408, call.log
    log = proxy.log_since(mark)
    crit = [line for line in log.splitlines() if "EMERGENCY CALL 112" in line and "FAILED" in line]
    assert len(crit) == 1 and "CRIT" in crit[0] and call_id_of(call) in crit[0], log[-3000:]
    assert re.search(r"no reply from \S+ \(udp:127\.0\.0\.5:5060\) in \d+ ms", crit[0])


def test_phone_cannot_fake_the_emergency_location(phones):
    alice = phones.phone("2001")
    answering = trunk(phones, EMERGENCY)
    call = phones.sipp("call.xml", alice, *alice.auth_args(), "-set", "dial", "112", "-d", "100")
    call.edits = (("User-Agent: sipp-phone", "User-Agent: sipp-phone\n      X-Emergency-Location: Nowhere\n"
                   "      X-Company: globex"),)
    assert call.start(phones.target).wait().final == (200, "OK")
    invite = answering.wait().received("INVITE")[0]
    assert header(invite, "X-Emergency-Location") == "12 rue de la Paix, 75002 Paris"
    assert invite.count("X-Emergency-Location:") == 1 and "X-Company" not in invite
