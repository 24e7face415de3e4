"""A small bounded fuzz run (bench/fuzz_sip.py) against a proxy of its own: it must survive,
and no mutated message may reach a Python traceback or a 500. Then Contacts and Routes spelled
to be read two ways (issue 18): no trusted peer and no third party may receive anything."""

from __future__ import annotations

import sys
import time

import pytest

from tests.harness import ROOT, Proxy

sys.path.insert(0, str(ROOT / "bench"))
import fuzz_sip  # noqa: E402

MESSAGES = 500
SPELLINGS = 2000


@pytest.fixture(scope="module")
def fuzzed(workdir, proxy, redis_server):
    """One run shared by the tests below (depends on `proxy`: the office is loaded)."""
    kam = Proxy(workdir, redis_server.url, **fuzz_sip.FUZZ_ENV).start()
    try:
        mark = kam.mark()
        before = fuzz_sip.settled_processes(kam)
        result = fuzz_sip.fuzz(kam, MESSAGES, seed=7, rate=500, max_seconds=30)
        time.sleep(0.5)
        after = fuzz_sip.settled_processes(kam)
        health = fuzz_sip.health(kam, "2001", "acme.test", "alice-secret-1")
        spelled_mark = kam.mark()
        spelled = fuzz_sip.spellings(kam, SPELLINGS, seed=7, max_seconds=240)
        yield result, before, after, health, kam.log_since(mark), spelled, kam.log_since(spelled_mark)
    finally:
        kam.unregister("2001@acme.test")
        kam.stop()


def test_proxy_survives_a_fuzz_run(fuzzed):
    result, before, after, health, *_ = fuzzed
    assert result.sent >= MESSAGES * 0.9, result.summary()
    assert result.answered > 0, "the proxy answered none of the fuzz: the run did not reach it"
    assert health["options"] == (200, "OK")
    assert health["register"] == (200, "OK"), "an authenticated REGISTER fails after the fuzz"
    assert before > 0 and after == before, f"kamailio processes {before} -> {after}"


def test_fuzz_never_reaches_a_traceback_or_a_500(fuzzed):
    result, _, _, _, log, *_ = fuzzed
    assert "Traceback" not in log, [line for line in log.splitlines() if "Traceback" in line][:3]
    assert result.answers[500] == 0, f"{result.summary()}; 5xx: {result.server_errors}"


def test_no_contact_or_route_spelling_reaches_a_trusted_peer_or_a_third_party(fuzzed):
    *_, spelled, log = fuzzed
    assert spelled.total >= SPELLINGS * 0.9, spelled.summary()
    assert not spelled.leaked, f"{spelled.summary()}: {spelled.leaked[:10]}"
    # the run reached the routes: REGISTERs refused and saved, calls relayed to the phone (486)
    assert spelled.answers[("register", 403)] > 0 and spelled.answers[("register", 200)] > 0, spelled.summary()
    assert spelled.answers[("call", 486)] > 0, spelled.summary()
    assert not [key for key in spelled.answers if key[1] >= 500 and key[1] != 503], spelled.summary()
    assert "Traceback" not in log, [line for line in log.splitlines() if "Traceback" in line][:3]
