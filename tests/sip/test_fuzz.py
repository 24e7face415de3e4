"""A small bounded fuzz run (bench/fuzz_sip.py) against a proxy of its own: it must survive,
and no mutated message may reach a Python traceback or a 500."""

from __future__ import annotations

import sys
import time

import pytest

from tests.harness import ROOT, Proxy

sys.path.insert(0, str(ROOT / "bench"))
import fuzz_sip  # noqa: E402

MESSAGES = 500


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
        yield result, before, after, health, kam.log_since(mark)
    finally:
        kam.unregister("2001@acme.test")
        kam.stop()


def test_proxy_survives_a_fuzz_run(fuzzed):
    result, before, after, health, _ = fuzzed
    assert result.sent >= MESSAGES * 0.9, result.summary()
    assert result.answered > 0, "the proxy answered none of the fuzz: the run did not reach it"
    assert health["options"] == (200, "OK")
    assert health["register"] == (200, "OK"), "an authenticated REGISTER fails after the fuzz"
    assert before > 0 and after == before, f"kamailio processes {before} -> {after}"


def test_fuzz_never_reaches_a_traceback_or_a_500(fuzzed):
    result, _, _, _, log = fuzzed
    assert "Traceback" not in log, [line for line in log.splitlines() if "Traceback" in line][:3]
    assert result.answers[500] == 0, f"{result.summary()}; 5xx: {result.server_errors}"
