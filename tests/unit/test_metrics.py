"""The metrics' label values (kemi.metrics), kamailio.cfg's declarations against kemi.sip.shell.Metric,
and the Redis failures kemi.store.Connection reports (against real sockets: nothing listening, and
a listener that never answers)."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import given, strategies as st

from kemi import metrics, numbering, replies
from kemi.paths import ROOT
from kemi.replies import Reply
from kemi.settings import Settings
from kemi.sip.shell import Metric
from kemi.store import Connection, StoreRefused, StoreUnavailable
from kemi.store.prepaid import CODES

CFG = (ROOT / "kamailio.cfg").read_text(encoding="utf-8")


def declared(kind: str) -> dict[str, str | None]:
    """name -> label of every xhttp_prom metric of that kind kamailio.cfg declares."""
    found = {}
    for spec in re.findall(rf'^modparam\("xhttp_prom", "prom_{kind}", "([^"]+)"\)', CFG, re.M):
        attrs = dict(part.strip().split("=", 1) for part in spec.split(";") if part.strip())
        found[attrs["name"]] = attrs.get("label")
    return found


def test_kamailio_cfg_declares_exactly_the_shells_metrics_with_their_labels():
    assert declared("counter") == {**{name: label for name, (label, _) in Metric.COUNTERS.items()},
                                   **Metric.DATA_LABELLED}
    assert declared("gauge") == {name: None for name in Metric.GAUGES}
    assert declared("histogram") == {name: None for name in Metric.HISTOGRAMS}
    for spec in re.findall(r'^modparam\("xhttp_prom", "prom_histogram", "([^"]+)"\)', CFG, re.M):
        buckets = [float(b) for b in re.search(r"buckets=([0-9.:]+)", spec).group(1).split(":")]
        assert buckets == sorted(set(buckets)), spec
    assert f'name "{Metric.SOCKET}"' in CFG
    assert re.search(r'modparam\("dialog", "profiles_no_value", "prepaid;media"\)', CFG)


def test_label_values_are_prometheus_label_values_and_few():
    for _, values in Metric.COUNTERS.values():
        assert len(values) == len(set(values)) <= 40
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", v) for v in values), values


@pytest.mark.parametrize("answer, label", [
    (replies.ADDRESS_INCOMPLETE, "number_incomplete"),
    (Reply(403, numbering.R_SURCHARGED_BLOCKED), "premium_blocked"),
    (Reply(403, numbering.R_SHORT_BLOCKED), "short_number_blocked"),
    (Reply(403, numbering.R_SATELLITE_BLOCKED), "satellite_blocked"),
    (Reply(403, numbering.R_CARRIER_SELECTION), "carrier_selection"),
    (Reply(403, "Ops override +3361: blocked"), "override_blocked"),
    (Reply(404, numbering.R_UNALLOCATED), "number_invalid"),
    (Reply(404, numbering.R_UNKNOWN_COUNTRY), "number_invalid"),
    (replies.PREPAID_NOT_AVAILABLE, "prepaid_not_active"),
    (replies.INSUFFICIENT_FUNDS, "prepaid_insufficient_funds"),
    (replies.NO_RATE, "prepaid_no_rate"),
    (replies.NOT_REGISTERED, "not_registered"),
    (replies.EXTENSION_NOT_FOUND, "extension_not_found"),
    (replies.NO_TRUNK, "no_route"),
    (replies.MEDIA_RELAY_DOWN, "media_relay_down"),
    (replies.EMERGENCY_NEEDS_REGISTRATION, "emergency_unregistered"),
    (replies.STORE_DOWN, "store_down"),
    (Reply(486, "Busy Here"), "other"),
    (Reply(403, "Forbidden"), "other"),
])
def test_refusal_reasons(answer, label):
    assert metrics.refusal_reason(answer) == label


@given(st.integers(300, 699), st.text(max_size=80))
def test_any_answer_maps_to_one_of_the_declared_reasons(code, phrase):
    assert metrics.refusal_reason(Reply(code, phrase)) in metrics.REASONS


def test_the_prepaid_refusals_are_the_ones_an_alert_watches():
    assert set(metrics.PREPAID_REASONS) == {"prepaid_not_active", "prepaid_insufficient_funds", "prepaid_no_rate"}


@pytest.mark.parametrize("rec, category", [
    (None, "emergency"),
    ({"category": "emergency", "billing": "included", "direction": "outbound"}, "emergency"),
    ({"category": "internal", "billing": "included", "direction": "internal"}, "internal"),
    ({"category": "domestic", "billing": "included", "direction": "outbound"}, "included"),
    ({"category": "international", "billing": "prepaid", "direction": "outbound", "prepaid": True}, "prepaid"),
    ({"category": "incoming", "billing": "included", "direction": "inbound"}, "inbound"),
    # a virtual extension's forward: paid from the account wins over where the call came from
    ({"category": "international", "billing": "prepaid", "direction": "inbound"}, "prepaid"),
    ({"category": "domestic", "billing": "included", "direction": "inbound"}, "inbound"),
    ({"category": "domestic", "billing": "included", "direction": "internal"}, "included"),
])
def test_call_categories(rec, category):
    assert metrics.category(rec) == category


def test_the_ledgers_own_answers_are_not_redis_faults():
    assert metrics.LEDGER_DECISIONS <= CODES
    assert not metrics.redis_refusal_is_fault("INSUFFICIENT_FUNDS available=12")
    for fault in ("LEDGER_BROKEN {co:acme}:prepaid balance", "WRONGTYPE Operation against a key",
                  "OOM command not allowed", "BUSY Redis is busy", "ERR Function not found"):
        assert metrics.redis_refusal_is_fault(fault), fault


def test_decision_line():
    assert metrics.decision_line("abc@h", "refused", "no_route", "503 No Route To Destination") == \
        "call abc@h refused no_route: 503 No Route To Destination"
    assert metrics.decision_line("", "routed", "emergency", "x").startswith("call - routed emergency")


# -- kemi.store.Connection tells the proxy what failed ---------------------------------------------
def connection(port: int, timeout_ms: int = 200) -> tuple[Connection, list[str]]:
    seen: list[str] = []
    conn = Connection(Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_ms=timeout_ms))
    conn.on_error = seen.append
    return conn, seen


def test_nothing_listening_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        conn, seen = connection(port)
        with pytest.raises(StoreUnavailable):
            conn.ping()
    assert seen == ["unreachable"]


def test_a_redis_that_never_answers_is_a_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)  # the kernel accepts the connection, nobody ever answers
        conn, seen = connection(s.getsockname()[1])
        with pytest.raises(StoreUnavailable):
            conn.ping()
    assert seen == ["timeout"]


def test_the_hot_paths_own_socket_counts_its_failures_too():
    # Connection.run (kemi.store.wire) carries the call set-up's lookups: its failures count as well
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        conn, seen = connection(port)
        with pytest.raises(StoreUnavailable):
            conn.run([("GET", "x")])
        assert seen == ["unreachable"]
        s.listen(4)
        conn, seen = connection(port)
        with pytest.raises(StoreUnavailable):
            conn.run([("GET", "x")])
        assert seen == ["timeout"]


def test_a_failing_counter_never_changes_what_the_caller_sees():
    conn, _ = connection(1)

    def broken(kind):
        raise RuntimeError("KSR gone")
    conn.on_error = broken
    with pytest.raises(StoreUnavailable):
        conn.ping()


def test_error_replies_count_as_refused_unless_the_ledger_decided():
    conn, seen = connection(1)

    def reply(message):
        import redis
        raise redis.ResponseError(message)
    for message in ("WRONGTYPE Operation against a key", "NOT_ACTIVE prepaid account not active"):
        with pytest.raises(StoreRefused):
            conn.call(reply, message)
    assert seen == ["refused"]


@pytest.mark.parametrize("label, value", [
    ("primary (udp:127.0.0.2:5060)", "primary"), ("carrier-in (tcp:10.0.0.1:5060)", "carrier-in"),
    ("?", "other"), ("", "other"), ('x"} 1\nfake{a="', "other"), ("a" * 65 + " (udp:1.2.3.4:5)", "other"),
])
def test_a_trunk_label_is_its_provisioned_name_or_other(label, value):
    assert metrics.trunk_label(label) == value


@given(st.text(max_size=100))
def test_a_trunk_label_is_always_a_safe_label_value(label):
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", metrics.trunk_label(label))


@pytest.mark.parametrize("method, label", [("REGISTER", "register"), ("INVITE", "invite"), ("BYE", "other"),
                                           ("register", "other")])
def test_auth_failures_are_counted_by_method(method, label):
    assert metrics.auth_method(method) == label in metrics.AUTH_METHODS
