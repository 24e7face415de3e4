"""Phones register and call each other, through the real proxy (issue: the runnable foundation)."""

from __future__ import annotations

import re
import time

from tests.harness import options_request, send_raw, status_line
from tests.sip.conftest import PASSWORDS


# -- REGISTER -----------------------------------------------------------------------------------
def test_register_without_credentials_is_challenged_then_saved(phones, proxy):
    alice = phones.phone("2001")
    result = phones.register(alice)
    assert result.final == (200, "OK")
    challenge = result.received("SIP/2.0 401")[0]
    assert 'realm="acme.test"' in challenge and 'qop="auth"' in challenge
    assert any(f"{alice.ip}:{alice.port}" in c for c in proxy.contacts("2001@acme.test"))


def test_wrong_password_and_unknown_user_get_the_same_403(phones, proxy):
    wrong = phones.phone("2001", password="not-the-password")
    unknown = phones.phone("2999", password="whatever-pass")
    answers = [phones.register(p).final for p in (wrong, unknown)]
    assert answers == [(403, "Forbidden"), (403, "Forbidden")]
    assert proxy.contacts("2999@acme.test") == []
    assert not any(wrong.ip in c for c in proxy.contacts("2001@acme.test"))


def test_company_a_phone_cannot_register_as_company_b_extension(phones, proxy):
    # acme's 2001 password, presented for globex's 2001
    intruder = phones.phone("2001", domain="globex.test", password=PASSWORDS[("2001", "acme.test")])
    assert phones.register(intruder).final == (403, "Forbidden")
    assert proxy.contacts("2001@globex.test") == []


# -- INVITE between extensions ------------------------------------------------------------------
def test_call_rings_every_phone_of_the_extension_first_answer_wins(phones):
    alice = phones.registered(phones.phone("2001"))
    desk = phones.registered(phones.phone("2002"))
    mobile_app = phones.registered(phones.phone("2002"))
    answering = phones.answer(desk, ring_ms=500)
    ringing = phones.ring(mobile_app)
    call = phones.call(alice, "2002", hold_ms=300).wait()
    assert call.final == (200, "OK"), call.log + call.stdout
    # the BYE went through the proxy: the only Contact the caller was given is the proxy's (topology
    # hiding, kamailio.cfg), and no Record-Route
    assert "BYE 200" in call.log
    ok = call.received("SIP/2.0 200")[0]
    assert re.search(rf"^Contact: <sip:[^@>]+@{re.escape(phones.proxy.ip)}:{phones.proxy.port}[;>]", ok, re.M | re.I), ok
    assert "Record-Route:" not in ok, ok
    answered = answering.wait()
    assert "ANSWERED" in answered.log and "HUNGUP" in answered.log
    cancelled = ringing.wait()
    assert "CANCELLED" in cancelled.log, cancelled.stdout  # the other phone stopped ringing


def test_invite_without_credentials_is_challenged_407(phones):
    alice = phones.phone("2001")
    call = phones.call(alice, "2002").wait()  # nobody registered for 2002: 480 after auth
    challenge = call.received("SIP/2.0 407")[0]
    assert 'realm="acme.test"' in challenge and 'qop="auth"' in challenge  # kamailio.cfg, auth
    assert call.final == (480, "Extension Not Registered")


def test_call_to_missing_extension_is_404(phones):
    alice = phones.phone("2001")
    assert phones.call(alice, "2998").wait().final == (404, "Extension Not Found")


def test_caller_with_wrong_password_cannot_call(phones):
    mallory = phones.phone("2001", password="guessing-game")
    assert phones.call(mallory, "2002").wait().final == (403, "Forbidden")


def test_companies_never_reach_each_others_extensions(phones):
    globex_2002 = phones.registered(phones.phone("2002", domain="globex.test"))
    listener = phones.answer(globex_2002)
    alice = phones.phone("2001")  # acme
    call = phones.call(alice, "2002").wait()
    assert call.final == (480, "Extension Not Registered")  # acme's 2002 is not registered
    listener.stop()
    assert "ANSWERED" not in listener.wait().log


def test_caller_hangs_up_while_ringing_cancel_reaches_the_phone(phones):
    alice = phones.phone("2001")
    bruno = phones.registered(phones.phone("2002"))
    ringing = phones.ring(bruno)
    call = phones.sipp("call-cancel.xml", alice, *alice.auth_args(), "-set", "dial", "2002") \
        .start(phones.target).wait()
    assert "FINAL 487" in call.log, call.log + call.stdout
    assert "CANCELLED" in ringing.wait().log


# -- the proxy itself ---------------------------------------------------------------------------
def test_options_keepalive_gets_200(proxy):
    assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")


def test_max_forwards_exhausted_gets_483(proxy):
    answer = send_raw(proxy, options_request(proxy, ruri="sip:2002@acme.test", max_forwards=0))
    assert status_line(answer) == (483, "Too Many Hops")


def test_malformed_request_gets_400_and_proxy_keeps_serving(proxy):
    bad = options_request(proxy).replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS")
    answer = send_raw(proxy, bad)
    assert status_line(answer)[0] == 400
    assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")


def test_unsupported_method_gets_405_with_allow(proxy):
    answer = send_raw(proxy, options_request(proxy, ruri="sip:2002@acme.test").replace("OPTIONS", "SUBSCRIBE"))
    assert status_line(answer) == (405, "Method Not Allowed")
    assert "Allow: INVITE" in answer


def test_phones_on_tcp_register_and_call(phones):
    alice, bruno = phones.phone("2001"), phones.phone("2002")
    tcp = ["-t", "t1"]
    reg = phones.sipp("register.xml", bruno, *bruno.auth_args(), "-set", "expires", "300", *tcp) \
        .start(phones.target).wait()
    assert reg.final == (200, "OK"), reg.log + reg.stdout
    answering = phones.sipp("answer.xml", bruno, "-set", "ring", "100", *tcp).start(timeout=30)
    call = phones.sipp("call.xml", alice, *alice.auth_args(), "-set", "dial", "2002", "-d", "200", *tcp) \
        .start(phones.target).wait()
    assert call.final == (200, "OK") and "BYE 200" in call.log, call.log + call.stdout
    assert "HUNGUP" in answering.wait().log


def test_baresips_registration_is_remembered_for_as_long_as_the_registrar_keeps_it(proxy, workdir):
    """Issue 18: baresip's Contact carries +sip.instance="<urn:uuid:...>", whose `>` cut the old
    hand-written reading short: the log said 600 s while the registrar kept 3595 s, and the
    same number set the emergency "current registration" window. Now both are the registrar's
    own, and baresip's de-registration at exit is logged as one."""
    from tests.sip.product import Baresip  # noqa: PLC0415  (baresip only where it is needed)
    ip = "127.0.3.33"
    account = f'<sip:2003@acme.test>;auth_pass=chloe-secret-3;outbound="sip:{proxy.ip}:{proxy.port}"'
    mark = proxy.mark()
    # uuid.so is in baresip's default config (module_tmp): its Contact then carries +sip.instance
    phone = Baresip(workdir, account, ip, talk_s=1, config="module_tmp uuid.so").start()
    try:
        phone.wait_for("200 OK", 15)
        saved = proxy.kamcmd("ul.lookup", "location", "2003@acme.test")
        assert re.search(r"Instance: <urn:uuid:", saved), saved  # baresip did send +sip.instance
        expires = int(re.search(r"Expires: (\d+)", saved).group(1))
        assert 3000 < expires <= 3600, saved  # baresip's own request (regint), within max_expires
        logged = re.search(rf"2003@acme\.test registered for (\d+) s from udp:{re.escape(phone.sip_addr)}",
                           proxy.log_since(mark))
        assert logged and abs(int(logged.group(1)) - expires) <= 2, proxy.log_since(mark)[-2000:]
    finally:
        phone.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "2003@acme.test unregistered" not in proxy.log_since(mark):
        time.sleep(0.1)
    assert f"2003@acme.test unregistered from udp:{phone.sip_addr}" in proxy.log_since(mark)
    assert "Contact: {" not in proxy.kamcmd("ul.lookup", "location", "2003@acme.test")
