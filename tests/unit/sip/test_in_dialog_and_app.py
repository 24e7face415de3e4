"""in_dialog and the facade: what every request gets before a role decides (fake KSR)."""

from kemi import records
from kemi.sip.shell import Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def in_dialog(method: str, loose_route: bool, transaction: int = -1) -> FakeKSR:
    ksr = FakeKSR(method, "sip:2002@127.0.0.30:5060")
    ksr.in_dialog, ksr.loose_route_result, ksr.transaction = True, 1 if loose_route else -1, transaction
    return ksr


def test_in_dialog_requests_follow_our_record_route(world: World):
    ksr = world.request(in_dialog("BYE", True))
    assert ksr.relay.ruri == "sip:2002@127.0.0.30:5060" and ksr.dialog_managed == 1


def test_in_dialog_requests_not_routed_by_us_get_404_and_acks_silence(world: World):
    assert world.request(in_dialog("BYE", False)).reply == (404, "Not Here")
    ack = world.request(in_dialog("ACK", False))
    assert ack.replies == [] and ack.relays == []


def test_options_to_the_proxy_is_answered_and_other_methods_get_405_with_allow(world: World):
    assert world.request(FakeKSR("OPTIONS", "sip:127.0.0.1:5060")).reply == (200, "OK")
    ksr = world.request(FakeKSR("MESSAGE", "sip:2002@acme.test"))
    assert ksr.reply == (405, "Method Not Allowed") and ksr.reply_headers[0].startswith("Allow: INVITE")


def test_preloaded_routes_are_dropped_from_initial_requests(world: World):
    ksr = world.request(world.phone_invite("0145678901", headers=[("Route", "<sip:127.0.0.2;lr>")]))
    assert "Route" in ksr.removed_headers


def test_malformed_and_looping_requests_are_stopped_first(world: World):
    insane = FakeKSR("INVITE")
    insane.sane = False
    assert world.request(insane).replies == []  # sanity answered 400 itself
    looping = FakeKSR("INVITE")
    looping.hops = False
    assert world.request(looping).reply == (483, "Too Many Hops")


def test_store_down_is_503_with_retry_after(world: World):
    world.directory.down = True
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply == (503, "Subscriber Data Unavailable") and ksr.reply_headers == ["Retry-After: 5"]


def test_a_bug_is_a_500_and_a_traceback_in_the_log_never_silence(world: World):
    world.directory.call_context = None  # not callable: a TypeError inside the route
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply == (500, "Internal Server Error")
    assert "Traceback" in ksr.logged("err")[0]


def test_dialog_end_of_an_included_call_writes_its_record(world: World):
    rec = records.start(company="acme", extension="2001", caller="+33142685301", to="+33145678901",
                        category="national", billing="included", direction="outbound", call_id="c-1", setup_ms=1)
    ksr = FakeKSR("BYE")
    ksr.vars[Var.RECORD] = records.encode(rec)
    world.router(ksr).ksr_dialog_event(None, "dialog:end")
    (final,) = world.ledger.records
    assert final["disposition"] == "unanswered" and final["cost"] == 0 and world.ledger.settled == []


def test_dialog_events_of_untracked_dialogs_are_ignored(world: World):
    world.router(FakeKSR("BYE")).ksr_dialog_event(None, "dialog:end")
    assert world.ledger.records == []
