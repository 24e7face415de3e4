"""The Prepaid Account through the real proxy: reservation, the spoken balance, the cut at the
maximum duration, settlement and call records (company initech of tests/sip/office.yaml).

SIPp plays the announcement server (127.0.0.7:5060, 183 + RTP from a pcap), the carrier
(127.0.0.2:5060) and the phones.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import OFFICE, SIP_DB
from tests.harness import LOAD_MEDIA_SHARES, Proxy, RedisServer, Sipp, admin, send_raw, status_line, wait_for
from tests.sip.conftest import ANNOUNCER, BACKUP, PRIMARY, Phones, ruri, trunk

GERMAN_MOBILE = "004915112345678"


def announcer(phones, calls: int = 1) -> Sipp:
    ip, port = ANNOUNCER
    sipp = Sipp("announce.xml", [], phones.workdir, ip=ip, port=port, calls=calls)
    phones.running.append(sipp)
    return sipp.start(timeout=60)


class Account:
    """Initech's Prepaid Account, driven through the ops CLI like an operator would."""

    def __init__(self, server, db: int):
        self.url = server.url_of(db)
        self.raw = server.client(db)
        self.ledger = PrepaidLedger(server.store(db))
        self.topups = 0

    def reset(self, cents: int, rate=("+4915", "60", "60/60", "0")) -> int:
        client = self.raw
        for key in client.keys("{co:initech}:*"):
            if not key.endswith((b":company", b":exts", b":dids")) and b":ext:" not in key:
                client.delete(key)
        admin(self.url, "prepaid", "activate", "initech")
        if cents:
            self.topup(cents)
        prefix, per_minute, increments, fee = rate  # in cents: the CLI's explicit 'c'
        admin(self.url, "rate", "set", prefix, f"{per_minute}c", "--increments", increments, "--fee", f"{fee}c")
        return cents

    def topup(self, cents: int) -> None:
        admin(self.url, "prepaid", "topup", "initech", f"{cents}c", "--ref", uuid.uuid4().hex)
        self.topups += cents

    @property
    def balance(self) -> int:
        return self.ledger.status("initech").balance

    def records(self) -> list[dict]:
        return [r for _, r in self.ledger.cdrs("initech")]


@pytest.fixture
def account(proxy, redis_server):
    acct = Account(redis_server, SIP_DB)
    assert acct.url == proxy.redis_url
    yield acct
    admin(proxy.redis_url, "prepaid", "deactivate", "initech")


def test_balance_is_announced_before_the_call_connects_then_charged(phones, account):
    opening = account.reset(500)  # 5.00 EUR; +4915 at 0.60/min, 60/60
    ines = phones.phone("2001", domain="initech.test")
    speaker = announcer(phones)
    carrier = trunk(phones, PRIMARY)
    call = phones.call(ines, GERMAN_MOBILE, hold_ms=1500).wait()
    assert call.final == (200, "OK"), call.log + call.stdout
    # the caller got the announcement's early media before the callee's answer
    early = call.received("SIP/2.0 183")
    assert early and "s=balance" in early[0]
    assert call.messages.index("SIP/2.0 183") < call.messages.index("SIP/2.0 200 OK")
    assert "BALANCE 500 EUR" in speaker.wait().log
    assert ruri(carrier.wait().received("INVITE")[0]).startswith("sip:+4915112345678@127.0.0.2:5060")
    wait_for(lambda: account.records(), 5, "the call record")
    (record,) = account.records()
    assert record["disposition"] == "answered" and record["billing"] == "prepaid"
    assert record["to"] == "+4915112345678" and record["extension"] == "2001"
    assert record["cost"] == 60 and record["billed_secs"] == 60  # one 60 s increment at 0.60/min
    assert account.balance == opening - 60
    assert record["setup_ms"] <= record["answer_ms"] <= record["end_ms"] - 1500  # held for 1.5 s


def test_not_enough_for_the_first_increment_is_402(phones, account):
    account.reset(59)
    ines = phones.phone("2001", domain="initech.test")
    assert phones.call(ines, GERMAN_MOBILE).wait().final == (402, "Insufficient Prepaid Balance")
    assert account.balance == 59
    (record,) = account.records()  # a refused call is a call too
    assert record["disposition"] == "refused-402" and record["cost"] == 0 and record["billing"] == "prepaid"


def test_destination_without_rate_is_refused_never_free(phones, account):
    account.reset(10_000)
    ines = phones.phone("2001", domain="initech.test")
    assert phones.call(ines, "0012125551234").wait().final == (403, "No Rate For Destination")


def test_directory_service_is_rated_by_its_short_number(phones, account):
    account.reset(1000, rate=("+33118", "80", "1/1", "300"))  # ARCEP cap: 3 EUR a call, 0.80 EUR/min
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones)
    carrier = trunk(phones, PRIMARY)
    assert phones.call(ines, "118712", hold_ms=500).wait().final == (200, "OK")
    assert ruri(carrier.wait().received("INVITE")[0]).startswith("sip:118712@")
    wait_for(lambda: account.records(), 5, "the call record")
    assert account.records()[0]["cost"] == 300 + 2  # fee + 1 to 2 s at 0.80/min, rounded up


def test_call_is_cut_at_the_maximum_duration(phones, account):
    opening = account.reset(3, rate=("+4915", "60", "1/1", "0"))  # 3 cents at 1 cent/s: 3 s
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones)
    callee = trunk(phones, PRIMARY)
    started = time.monotonic()
    call = phones.sipp("call-cut.xml", ines, *ines.auth_args(), "-set", "dial", GERMAN_MOBILE) \
        .start(phones.target, timeout=30).wait()
    assert call.final == (200, "OK") and "CUT" in call.log, call.log + call.stdout
    assert time.monotonic() - started < 15
    assert "HUNGUP" in callee.wait().log  # the proxy's BYE reached the callee too
    wait_for(lambda: account.records(), 5, "the call record")
    (record,) = account.records()
    assert record["disposition"] == "cut-at-max-duration"
    assert record["cost"] <= opening  # no more than what was available at the start
    assert account.balance == opening - record["cost"] < 1  # what is left buys no further second
    assert account.balance >= 0


def test_unanswered_prepaid_call_costs_nothing_and_is_recorded(phones, account):
    opening = account.reset(500)
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones)
    trunk(phones, PRIMARY, (486, "Busy Here"))
    assert phones.call(ines, GERMAN_MOBILE).wait().final == (486, "Busy Here")
    wait_for(lambda: account.records(), 5, "the call record")
    (record,) = account.records()
    assert record["disposition"] == "unanswered" and record["cost"] == 0
    assert account.balance == opening and account.ledger.status("initech").reserved == 0


def test_conservation_over_a_mixed_run(phones, account):
    opening = account.reset(400)
    ines = phones.phone("2001", domain="initech.test")
    outcomes = []
    for hold_ms, refuse in ((300, None), (1200, None), (100, (502, "Bad Gateway"))):
        peers = [announcer(phones), trunk(phones, PRIMARY, refuse)]
        if refuse:
            peers.append(trunk(phones, BACKUP, refuse))
        outcomes.append(phones.call(ines, GERMAN_MOBILE, hold_ms=hold_ms).wait().final[0])
        for peer in peers:  # free their addresses for the next round
            peer.wait()
        account.topup(25)
    assert outcomes == [200, 200, 502]
    wait_for(lambda: len(account.records()) == 3, 5, "three records")
    spent = sum(r["cost"] for r in account.records())
    assert spent == 120  # two answered calls of one 60 s increment each; the failed one is free
    topped_up = account.topups - opening  # reset() counted the opening credit as a top-up
    assert opening + topped_up - spent == account.balance


# -- invariants that need their own proxy -----------------------------------------------------------
@pytest.fixture
def own_proxy(workdir, request):
    """A Redis and a proxy of their own, with short prepaid limits (PREPAID_MAX_CALL_S from the param)."""
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    # PIKE_REQS, LOAD_MEDIA_SHARES: fifty calls at once from one phone are this test's load, not a
    # flood, nor one phone taking the media relay (tests/sip/test_media_security.py)
    proxy = Proxy(workdir, redis.url, PREPAID_MAX_CALL_S=str(request.param), PREPAID_SETUP_S="2",
                  PREPAID_TTL_MARGIN_S="1", PIKE_REQS="1000000", **LOAD_MEDIA_SHARES).start()
    phones = Phones(proxy, workdir)
    yield redis, proxy, phones, Account(redis, 0)
    phones.cleanup()
    proxy.stop()
    redis.stop()


@pytest.mark.parametrize("own_proxy", [60], indirect=True)  # one 60 s increment a call
def test_fifty_simultaneous_calls_on_funds_for_ten(own_proxy):
    redis, proxy, phones, account = own_proxy
    account.reset(100, rate=("+4915", "10", "60/60", "0"))  # each call reserves one 60 s increment: 10 cents
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones, calls=50)
    carrier = Sipp("answer.xml", ["-set", "ring", "100"], phones.workdir, ip=PRIMARY[0], port=PRIMARY[1], calls=50)
    phones.running.append(carrier)
    carrier.start(timeout=60)
    burst = Sipp("call.xml", [*ines.auth_args(), "-set", "dial", GERMAN_MOBILE, "-d", "3000"],
                 phones.workdir, ip=ines.ip, port=ines.port, calls=50, rate=200)
    result = burst.start(phones.target, timeout=60).wait(90)
    connected = result.log.count("FINAL 200 OK")
    refused = result.log.count("FINAL 402 Insufficient Prepaid Balance")
    assert connected == 10 and refused == 40, result.log[-2000:] + result.stdout
    answered = lambda: [r for r in account.records() if r["disposition"] == "answered"]  # noqa: E731
    wait_for(lambda: len(answered()) == 10, 15, "ten answered calls' records")
    assert account.balance == 0 and all(r["cost"] == 10 for r in answered())
    assert [r["disposition"] for r in account.records()].count("refused-402") == 40


@pytest.mark.parametrize("own_proxy", [4], indirect=True)  # calls of 4 s at most: a TTL of seconds
def test_proxy_killed_mid_call_releases_the_reservation_and_charges_nothing_twice(own_proxy):
    redis, proxy, phones, account = own_proxy
    account.reset(100, rate=("+4915", "60", "1/1", "0"))
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones)
    trunk(phones, PRIMARY)
    call = phones.sipp("call-cut.xml", ines, *ines.auth_args(), "-set", "dial", GERMAN_MOBILE) \
        .start(phones.target, timeout=30)
    held = wait_for(lambda: account.ledger.status("initech").reservations, 10, "the reservation")
    wait_for(lambda: call.log_path.exists() and "FINAL 200" in call.log_path.read_text(), 10, "the answer")
    os.killpg(proxy.proc.pid, signal.SIGKILL)  # no BYE, no settlement: the proxy is gone
    proxy.proc.wait(10)
    call.stop()
    # renewed at the answer for 4 s + 1 s margin: released without the proxy
    wait_for(lambda: account.ledger.status("initech").reserved == 0, 15, "the reservation to expire", interval=0.2)
    assert account.balance == 100
    # the next reservation clears it out, and the records say what happened
    account.ledger.reserve("initech", "probe", account.ledger.rate_for("+4915112345678"), cap_secs=4, ttl_ms=1000)
    assert [r["disposition"] for r in account.records()] == ["reservation-expired"]
    # a settlement arriving late (another proxy, a replay) charges nothing
    assert account.ledger.settle("initech", held[0].call_id, 4).cost == 0
    assert account.balance == 100


SDP = '''      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]>
'''  # the offer of a re-INVITE and the answer to it
REINVITE = '''  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller [service]" <sip:[service]@[$domain]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[$dial]@[$domain]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 3 INVITE
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
''' + SDP + '''  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller [service]" <sip:[service]@[$domain]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[$dial]@[$domain]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 3 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><log message="REINVITED"/></action></nop>
  <pause/>
'''
ANSWER_REINVITE = '''  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
''' + SDP + '''  </send>
  <recv request="ACK"/>
'''


def test_reinvite_and_a_second_bye_never_charge_twice(phones, account, proxy):
    opening = account.reset(500)
    ines = phones.phone("2001", domain="initech.test")
    announcer(phones)
    callee = Sipp("answer.xml", ["-set", "ring", "100"], phones.workdir, ip=PRIMARY[0], port=PRIMARY[1],
                  edits=(('<nop><action><log message="ANSWERED [$ruri]"/></action></nop>\n',
                          '<nop><action><log message="ANSWERED [$ruri]"/></action></nop>\n' + ANSWER_REINVITE),))
    phones.running.append(callee)
    callee.start(timeout=30)
    call = phones.sipp("call.xml", ines, *ines.auth_args(), "-set", "dial", GERMAN_MOBILE, "-d", "300")
    call.edits = (("  <pause/>\n", REINVITE), ("CSeq: 3 BYE", "CSeq: 4 BYE"))
    result = call.start(phones.target).wait()
    assert "REINVITED" in result.log and "BYE 200" in result.log, result.log + result.stdout
    assert "HUNGUP" in callee.wait().log
    wait_for(lambda: account.records(), 5, "the call record")
    # the caller's BYE once more, as a new transaction (another branch, a higher CSeq)
    bye = result.messages.split("BYE sip:", 1)[1].split("\n\n", 1)[0]
    again = re.sub(r"Via: [^\n]*", f"Via: SIP/2.0/UDP {ines.ip}:src_port_placeholder;branch=z9hG4bKagain;rport",
                   "BYE sip:" + bye).replace("CSeq: 4 BYE", "CSeq: 5 BYE")
    answer = send_raw(proxy, again.replace("\n", "\r\n") + "\r\n\r\n", src=ines.ip, timeout=8)
    # the dialog has ended: the proxy answers for it and relays nothing (nor settles twice)
    assert status_line(answer) == (481, "Call/Transaction Does Not Exist"), answer
    assert "CSeq: 5 BYE" in answer and "branch=z9hG4bKagain" in answer
    time.sleep(1)
    (record,) = account.records()
    assert record["cost"] == 60 and account.balance == opening - 60
