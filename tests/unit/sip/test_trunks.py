"""trunks: failover between trunks in the failure route (fake KSR)."""

import re
import time

from kemi.sip.shell import Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def failure(world: World, code: int, left: str, replied: bool = False) -> FakeKSR:
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: left, Var.DIAL_USER: "+33145678901"})
    ksr.failure_code, ksr.branch_replied = code, replied
    world.router(ksr).ksr_failure_trunk(None)
    return ksr


def test_a_failing_trunk_hands_the_call_to_the_next(world: World):
    for code in (408, 500, 502, 503, 504):
        ksr = failure(world, code, "b@udp:127.0.0.4:5060,c@tcp:127.0.0.6:5070")
        assert ksr.relay.ruri == "sip:+33145678901@127.0.0.4:5060;transport=udp", code
        assert ksr.vars[Var.TRUNKS_LEFT] == "c@tcp:127.0.0.6:5070"


def test_the_callee_not_answering_or_refusing_is_not_a_trunk_failure(world: World):
    for code, replied in ((408, True), (486, False), (404, False), (603, True)):
        ksr = failure(world, code, "udp:127.0.0.4:5060", replied)
        assert ksr.relays == [] and ksr.replies == [], code


def test_last_trunk_503_becomes_500_trunks_unavailable(world: World):
    ksr = failure(world, 503, "")
    assert ksr.relays == [] and ksr.reply == (500, "Trunks Unavailable")


def test_a_cancelled_call_tries_no_other_trunk(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "udp:127.0.0.4:5060", Var.DIAL_USER: "+33145678901"})
    ksr.failure_code, ksr.canceled = 487, True
    world.router(ksr).ksr_failure_trunk(None)
    assert ksr.relays == [] and ksr.replies == []


def test_a_silent_trunk_is_logged_as_silence_with_the_time_waited(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "b@udp:127.0.0.4:5060", Var.DIAL_USER: "+33145678901",
                     Var.TRUNK_NOW: f"{int(time.time() * 1000) - 6000} a@udp:127.0.0.2:5060"})
    ksr.failure_code = 408
    world.router(ksr).ksr_failure_trunk(None)
    (warning,) = [text for level, text in ksr.logs if level == "warn"]
    waited = re.search(r"no reply from a@udp:127\.0\.0\.2:5060 in (\d+) ms", warning)
    assert waited and 6000 <= int(waited.group(1)) < 60000, warning  # measured from when it was sent
    assert "answered 408" not in warning and "call-1" in warning


def test_the_last_trunk_failing_is_logged_with_every_trunk_tried_and_marks_the_record(world: World):
    ksr = failure(world, 502, "")
    assert ksr.vars[Var.TRUNKS_FAILED] == "1"
    (error,) = [text for level, text in ksr.logs if level == "err"]
    assert "every trunk failed" in error and "call-1" in error and "answered 502" in error


def test_a_callee_refusing_is_not_a_trunk_failure_in_the_record(world: World):
    ksr = failure(world, 486, "")
    assert Var.TRUNKS_FAILED not in ksr.vars
    assert not [text for level, text in ksr.logs if level in ("err", "crit")]


def test_an_emergency_call_failing_on_every_route_is_logged_at_crit_with_the_routes_tried(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "112", Var.EMERGENCY: "1",
                     Var.TRUNK_NOW: "1764000000000 emergency@udp:127.0.0.5:5060",
                     Var.TRUNKS_TRIED: "no reply from backup@udp:127.0.0.9:5060 in 6000 ms"})
    ksr.failure_code = 408
    world.router(ksr).ksr_failure_trunk(None)
    (crit,) = [text for level, text in ksr.logs if level == "crit"]
    assert "EMERGENCY CALL 112" in crit and "call-1" in crit
    assert "backup@udp:127.0.0.9:5060" in crit and "no reply from emergency@udp:127.0.0.5:5060" in crit


def test_an_emergency_call_the_caller_cancels_is_no_failure(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "112", Var.EMERGENCY: "1"})
    ksr.failure_code, ksr.canceled = 487, True
    world.router(ksr).ksr_failure_trunk(None)
    assert not [text for level, text in ksr.logs if level == "crit"]
