"""What each role counts (fake KSR): one series per decision, the decision line with the Call-ID, the
prepaid profile, the page served only on the metrics socket, and SIP there dropped."""

from kemi import money
from kemi.sip.shell import Metric, Profile, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


def decision_lines(ksr: FakeKSR) -> list[str]:
    return [text for _, text in ksr.logs if text.startswith("call ")]


def test_an_included_call_counts_once_and_says_so_in_one_line(world: World):
    ksr = world.request(world.phone_invite("0145678901", call_id="c-1"))
    assert ksr.relays
    assert ksr.counted(Metric.CALLS_ROUTED) == {"included": 1} and ksr.counted(Metric.REFUSALS) == {}
    assert decision_lines(ksr) == ["call c-1 routed included: acme/2001 to +33145678901 (outbound, included)"]
    assert Profile.PREPAID not in ksr.profiles


def test_a_refused_number_counts_its_reason_and_nothing_else(world: World):
    ksr = world.request(world.phone_invite("0899123456", call_id="c-2"))
    assert ksr.reply[0] == 403
    assert ksr.counted(Metric.REFUSALS) == {"premium_blocked": 1} and ksr.counted(Metric.CALLS_ROUTED) == {}
    (line,) = decision_lines(ksr)
    assert line.startswith("call c-2 refused premium_blocked: 403 Premium-rate") and "acme/2001" in line


def test_a_prepaid_call_joins_the_profile_that_counts_reservations_in_flight(world: World):
    world.ledger.rates = {"+4915": money.Rate("+4915", 60, 0, 60, 60)}
    world.ledger.balance = 1000
    ksr = world.request(world.phone_invite("004915112345678"))
    assert ksr.counted(Metric.CALLS_ROUTED) == {"prepaid": 1} and ksr.profiles.count(Profile.PREPAID) == 1


def test_a_prepaid_refusal_counts_as_prepaid(world: World):
    world.ledger.active = False
    world.ledger.rates = {"+4915": money.Rate("+4915", 60, 0, 60, 60)}
    ksr = world.request(world.phone_invite("004915112345678"))
    assert ksr.reply == (403, "Prepaid Account Not Activated")
    assert ksr.counted(Metric.REFUSALS) == {"prepaid_not_active": 1} and ksr.profiles == []


def test_unregistered_extension_and_no_trunk_are_refusals(world: World):
    assert world.request(world.phone_invite("2002")).counted(Metric.REFUSALS) == {"not_registered": 1}
    world.directory.trunk_list = ()
    assert world.request(world.phone_invite("0145678901")).counted(Metric.REFUSALS) == {"no_route": 1}


def test_the_last_emergency_trunk_failing_is_a_failed_emergency_call(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "112", Var.EMERGENCY: "1"})
    ksr.failure_code = 503
    world.router(ksr).ksr_failure_trunk(None)
    assert ksr.reply == (500, "Trunks Unavailable")
    assert ksr.counted(Metric.CALLS_FAILED) == {"emergency": 1}
    assert any(line.startswith("EMERGENCY CALL 112 call-id call-1") for line in ksr.logged("crit"))


def test_the_last_trunk_failing_an_ordinary_call_is_a_failed_external_call(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "+33145678901"})
    ksr.failure_code = 502
    world.router(ksr).ksr_failure_trunk(None)
    assert ksr.counted(Metric.CALLS_FAILED) == {"external": 1}


def test_a_trunk_failing_over_or_the_callee_busy_is_no_failure(world: World):
    """(An emergency call that ends busy is one: see the trunks' own tests.)"""
    for code, left in ((503, "b@udp:127.0.0.4:5060"), (486, "")):
        ksr = FakeKSR()
        ksr.vars.update({Var.TRUNKS_LEFT: left, Var.DIAL_USER: "+33145678901"})
        ksr.failure_code = code
        world.router(ksr).ksr_failure_trunk(None)
        assert ksr.counted(Metric.CALLS_FAILED) == {}, code


def test_redis_down_refuses_a_call_as_store_down_but_not_a_registration(world: World):
    world.directory.down = True
    assert world.request(world.phone_invite("0145678901")).counted(Metric.REFUSALS) == {"store_down": 1}
    register = FakeKSR("REGISTER", "sip:acme.test", auth_user="2001")
    register.credentials_realm = "acme.test"
    assert world.request(register).reply[0] == 503 and register.counted(Metric.REFUSALS) == {}


def test_every_series_exists_at_zero_after_child_init(world: World):
    ksr = FakeKSR()
    world.router(ksr).child_init(1)
    assert len(ksr.counters) == sum(len(labels) for _, labels in Metric.COUNTERS.values())
    assert set(ksr.counters.values()) == {0}


def test_the_page_is_served_on_the_metrics_socket_only_with_the_prepaid_gauge(world: World):
    page = FakeKSR("GET", "/metrics")
    page.request["$Rn"] = Metric.SOCKET
    page.profile_sizes[Profile.PREPAID] = 3
    world.router(page).ksr_xhttp_event(None, "xhttp:request")
    assert page.http_replies == [(200, "metrics")] and page.gauges == {Metric.PREPAID_IN_FLIGHT: 3.0}
    for where, path in ((None, "/metrics"), (Metric.SOCKET, "/")):
        other = FakeKSR("GET", path)
        other.request["$Rn"] = where
        world.router(other).ksr_xhttp_event(None, "xhttp:request")
        assert other.http_replies == [(404, "Not Found")] and other.gauges == {}


def test_sip_on_the_metrics_socket_gets_nothing(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.request["$Rn"] = Metric.SOCKET
    world.request(ksr)
    assert ksr.replies == [] and ksr.relays == [] and ksr.counters == {}
    assert any("metrics socket dropped" in line for line in ksr.logged("notice"))


def test_a_failing_trunk_counts_a_failover_under_its_name(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "+33145678901",
                     Var.TRUNK_NOW: "1 primary (udp:127.0.0.2:5060)"})
    ksr.failure_code = 503
    world.router(ksr).ksr_failure_trunk(None)
    assert ksr.counted(Metric.TRUNK_FAILOVERS) == {"primary": 1}
    assert ksr.counted(Metric.CALLS_FAILED) == {"external": 1}


def test_a_callee_that_does_not_answer_is_no_trunk_failover(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "", Var.DIAL_USER: "+33145678901",
                     Var.TRUNK_NOW: "1 primary (udp:127.0.0.2:5060)"})
    ksr.failure_code = 486
    world.router(ksr).ksr_failure_trunk(None)
    assert ksr.counted(Metric.TRUNK_FAILOVERS) == {}


def test_a_call_out_sets_the_post_dial_delay_start(world: World):
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.relays and ksr.vars.get(Var.PDD_FROM, "").isdigit()
