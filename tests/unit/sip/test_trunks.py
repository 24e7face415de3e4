"""trunks: failover between trunks in the failure route (fake KSR)."""

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
