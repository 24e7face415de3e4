"""A drained proxy (scripts/drain.sh sets $shv(draining)): new calls are refused with 503 and
Retry-After, so phones and carriers place them through the other proxy; emergency calls, calls in
progress and REGISTERs go on (fake KSR)."""

import pytest

from kemi import metrics, replies
from kemi.sip.shell import Metric, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World
from tests.unit.sip.test_inbound import from_trunk


def draining(ksr: FakeKSR, value=1) -> FakeKSR:
    ksr.vars[Var.DRAINING] = value  # pv.shvSet draining int 1: KSR.pv.get answers the int
    return ksr


@pytest.mark.parametrize("invite", [lambda w: w.phone_invite("0145678901"), lambda w: w.phone_invite("2002"),
                                    lambda w: from_trunk("+33142685302")], ids=["outbound", "internal", "inbound"])
def test_a_new_call_gets_503_with_retry_after_and_goes_nowhere(world: World, invite):
    ksr = world.request(draining(invite(world)))
    assert ksr.reply == (503, "Proxy Draining For Restart")
    assert ksr.reply_headers == [f"Retry-After: {replies.DRAINING_RETRY_AFTER_S}"]
    assert ksr.relays == [] and ksr.dialog_managed == 0 and not world.ledger.reservations
    assert ksr.counters[(Metric.REFUSALS, "draining")] == 1 and "draining" in metrics.REASONS


def test_the_drain_is_read_only_on_new_calls_and_a_serving_proxy_routes_them(world: World):
    served = world.request(draining(world.phone_invite("0145678901"), 0))
    assert served.relays and served.reply is None


def test_an_emergency_call_is_routed_whatever_the_drain(world: World):
    ksr = world.request(draining(world.phone_invite("112")))
    assert ksr.reply is None and len(ksr.relays) == 1


def test_registers_go_on_while_draining(world: World):
    ksr = FakeKSR("REGISTER", "sip:acme.test", from_uri="sip:2001@acme.test")
    world.request(draining(ksr))
    assert ksr.reply != (503, "Proxy Draining For Restart")
