"""A drained proxy refuses new calls, and nobody notices (issue 20, items 2 and 4).

Two proxies share one Redis (each keeps its dialogs in a database of its own, DIALOG_REDIS_DB). Proxy A
carries a prepaid call when ops run `scripts/drain.sh start` on it: a new call to A gets 503 with
Retry-After and the phone places it through B, as a phone with two proxies configured does; the call in
progress on A goes on, ends and is billed as any other; `drain.sh wait` returns once it has ended, and
gives up with the count when told to wait less. A then restarts and serves new calls again.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from kemi import replies
from tests.conftest import OFFICE
from tests.harness import LOAD_MEDIA_SHARES, ROOT, Proxy, RedisServer, Sipp, admin, wait_for
from tests.sip.conftest import EMERGENCY, PRIMARY, Phones, header
from tests.sip.test_prepaid import GERMAN_MOBILE, Account, announcer

B_IP = "127.0.0.61"  # beside the phones' 127.0.0.10-59 and the peers' 127.0.0.2-7


@pytest.fixture
def pair(workdir):
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    a = Proxy(workdir, redis.url, **LOAD_MEDIA_SHARES).start()
    b = Proxy(workdir, redis.url, ip=B_IP, DIALOG_REDIS_DB="14", **LOAD_MEDIA_SHARES).start()
    on_a, on_b = Phones(a, workdir), Phones(b, workdir)
    yield redis, a, b, on_a, on_b
    for phones in (on_a, on_b):
        phones.cleanup()
    for proxy in (a, b):
        proxy.stop()
    redis.stop()


def drain(proxy: Proxy, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KAMAILIO_CTL=proxy.ctl)
    return subprocess.run([str(ROOT / "scripts" / "drain.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_drained_proxy_sends_new_calls_to_the_other_and_finishes_its_own(pair):
    redis, a, b, on_a, on_b = pair
    account = Account(redis, 0)
    opening = account.reset(5000, rate=("+4915", "60", "1/1", "0"))
    carrier = Sipp("answer.xml", ["-set", "ring", "100"], on_a.workdir, ip=PRIMARY[0], port=PRIMARY[1], calls=3)
    on_a.running.append(carrier)
    carrier.start(timeout=60)
    announcer(on_a)
    ines = on_a.phone("2001", domain="initech.test")
    in_progress = on_a.call(ines, GERMAN_MOBILE, hold_ms=4000, timeout=60)
    wait_for(lambda: carrier.log_path.exists() and "ANSWERED" in carrier.log_path.read_text(), 15, "the call answered")
    not_draining = drain(a, "wait", "--timeout", "5")  # a wait on a proxy that takes new calls could last forever
    assert not_draining.returncode == 2 and "not draining" in not_draining.stderr

    started = drain(a, "start")
    assert started.returncode == 0 and "1 call(s) in progress" in started.stdout, started.stderr
    assert drain(a, "status").stdout.split() == ["draining", "1"]
    gave_up = drain(a, "wait", "--timeout", "1")
    assert gave_up.returncode == 1 and "1 call(s) still in progress after 1s" in gave_up.stderr

    # a new call: 503 from A, with the time to stay away, then through B, as the phone's next server
    alice = on_a.phone("2001")
    refused = on_a.call(alice, "0145678901").wait()
    assert refused.final == (replies.DRAINING.code, replies.DRAINING.reason), refused.log + refused.stdout
    (answer,) = [m for m in refused.received("SIP/2.0 503")]
    assert header(answer, "Retry-After") == str(replies.DRAINING_RETRY_AFTER_S)
    through_b = on_b.call(alice, "0145678901", hold_ms=300).wait()
    assert through_b.final == (200, "OK") and "BYE 200 OK" in through_b.log, through_b.log + through_b.stdout
    # registrations and emergency calls still go to A
    assert on_a.register(on_a.phone("2002")).final == (200, "OK")
    sos = Sipp("answer.xml", ["-set", "ring", "0"], on_a.workdir, ip=EMERGENCY[0], port=EMERGENCY[1])
    on_a.running.append(sos)
    sos.start(timeout=30)
    emergency = on_a.call(alice, "112", hold_ms=200).wait()
    assert emergency.final == (200, "OK") and "BYE 200 OK" in emergency.log, emergency.log + emergency.stdout
    assert len(sos.wait(10).received("INVITE")) == 1

    # the call in progress ends by itself, is billed as any other, and the wait then returns
    waited = drain(a, "wait", "--timeout", "30")
    assert waited.returncode == 0 and "drained" in waited.stdout, waited.stderr
    assert "BYE 200 OK" in in_progress.wait(30).log
    wait_for(lambda: account.records(), 5, "the prepaid call record")
    (record,) = account.records()
    assert record["disposition"] == "answered" and record["cost"] == record["billed_secs"] >= 4
    status = account.ledger.status("initech")
    assert status.reserved == 0 and status.balance == opening - record["cost"]

    # the ops restart: A comes back serving (the drain lives in its memory only)
    os.killpg(a.proc.pid, signal.SIGTERM)
    a.proc.wait(15)
    a.start()
    assert drain(a, "status").stdout.split() == ["serving", "0"]
    again = on_a.call(on_a.phone("2001"), "0145678901", hold_ms=200).wait()
    assert again.final == (200, "OK"), again.log + again.stdout
    assert len(carrier.wait(20).received("INVITE")) == 3  # the call through B and the one after the restart


@pytest.mark.parametrize("args", [("status",), ("start",), ("stop",), ("wait", "--timeout", "5")])
def test_drain_sh_fails_loudly_when_kamailio_does_not_answer(args):
    gone = subprocess.run([str(ROOT / "scripts" / "drain.sh"), *args], capture_output=True, text=True,
                          env=dict(os.environ, KAMAILIO_CTL="unix:/nonexistent/ctl"), timeout=30)
    assert gone.returncode == 2 and "does not answer" in gone.stderr and not gone.stdout


@pytest.mark.parametrize("args", [(), ("bogus",), ("wait", "--timeout", "soon"), ("wait", "--timeout"),
                                  ("start", "now")])
def test_drain_sh_refuses_what_it_does_not_know(args):
    wrong = subprocess.run([str(ROOT / "scripts" / "drain.sh"), *args], capture_output=True, text=True,
                           env=dict(os.environ, KAMAILIO_CTL="unix:/nonexistent/ctl"), timeout=30)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage:")
