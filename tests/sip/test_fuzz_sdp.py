"""Hostile SDPs (bench/fuzz_sdp.py) through a proxy and rtpengine of their own: calls carry RTP both
ways, and not a single datagram reaches the third party the spellings name (SECURITY.md class 16)."""

from __future__ import annotations

import sys

import pytest

from tests.harness import ROOT, Proxy

sys.path.insert(0, str(ROOT / "bench"))
import fuzz_sdp  # noqa: E402

CALLS = 80


@pytest.fixture(scope="module")
def fuzzed(workdir, proxy, redis_server):
    """One run shared by the tests below (depends on `proxy`: the office is loaded)."""
    kam = Proxy(workdir, redis_server.url, **fuzz_sdp.FUZZ_ENV).start()
    try:
        mark = kam.mark()
        result = fuzz_sdp.fuzz_sdp(kam, CALLS, seed=11)
        yield result, kam.log_since(mark)
    finally:
        for aor in ("2001@acme.test", "2002@acme.test"):
            kam.unregister(aor)
        kam.stop()


def test_hostile_sdps_never_send_rtp_to_a_third_party(fuzzed):
    result, _ = fuzzed
    assert result.calls == CALLS and result.connected > CALLS // 4, result.summary()
    assert result.rtp_sent > 0, "no call carried RTP: the run proved nothing"
    assert result.third_party_received == [], result.summary()
    assert {"third_c_session", "third_c_media", "rtcp_third", "many_m", "odd_port"} <= set(result.kinds)


def test_hostile_sdps_get_a_clear_answer_never_a_traceback(fuzzed):
    result, log = fuzzed
    assert result.server_errors == [], result.server_errors[:5]
    assert set(result.answers) <= {200, 413, 488, 503}, result.summary()
    assert "Traceback" not in log, [line for line in log.splitlines() if "Traceback" in line][:3]
