"""Routing decisions for outgoing calls (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from kemi import money, numbering, replies, routing
from kemi.model import Company, Extension, MediaServer, Peer, Trunk

ACME = Company("acme", "Acme", "acme.test", main_number="+33142685300", location="12 rue X")
WITH_DID = Extension("2001", "Alice", ha1="0" * 32, did="+33142685301")
NO_DID = Extension("2003", "Chloe", ha1="0" * 32)


@pytest.mark.parametrize("dialled, expected", [
    ("06123", (484, "Address Incomplete")),
    ("0712345678", (404, "Unallocated number")),
    ("0899123456", (403, "Premium-rate or shared-cost number blocked")),
    ("0612345678", None),
    ("004915112345678", None),  # prepaid: refused later by the prepaid step, not here
])
def test_refusal(dialled, expected):
    answer = routing.refusal(numbering.classify(dialled))
    assert (answer.code, answer.reason) == expected if expected else answer is None


def test_trunks_for_keeps_order_and_role():
    a = Trunk("a", "127.0.0.2", priority=1)
    e = Trunk("e", "127.0.0.5", priority=1, emergency=True, outbound=False)
    b = Trunk("b", "127.0.0.4", priority=2, emergency=True)
    assert routing.trunks_for((a, e, b), emergency=False) == [a, b]
    assert routing.trunks_for((a, e, b), emergency=True) == [e, b]


def test_caller_number_prefers_did_then_main_number():
    assert routing.caller_number(ACME, WITH_DID) == "+33142685301"
    assert routing.caller_number(ACME, NO_DID) == "+33142685300"
    assert routing.caller_number(None, None) is None


def test_pai_and_emergency_headers():
    assert routing.pai_header("+33142685301", "Alice", "127.0.0.1") == \
        'P-Asserted-Identity: "Alice" <sip:+33142685301@127.0.0.1;user=phone>'
    assert routing.pai_header(None, "Alice", "h") is None
    assert routing.emergency_headers("+331", "a\r\nInjected: x") == [
        "Priority: emergency", "X-Emergency-Callback: +331", "X-Emergency-Location: a  Injected: x"]


def test_static_trunks_and_errors():
    trunks = routing.parse_static_trunks("udp:127.0.0.5:5060, tcp:127.0.0.6:5070")
    assert [t.uri for t in trunks] == ["sip:127.0.0.5:5060;transport=udp", "sip:127.0.0.6:5070;transport=tcp"]
    assert all(t.emergency and not t.outbound for t in trunks) and [t.priority for t in trunks] == [1, 2]
    assert routing.parse_static_trunks("") == ()
    for bad in ("127.0.0.5:5060", "sctp:127.0.0.5:5060", "udp:host:5060", "udp:127.0.0.5:0"):
        with pytest.raises(ValueError, match="EMERGENCY_TRUNKS"):
            routing.parse_static_trunks(bad)


def test_peers_travel_as_name_and_address_only():
    primary = Trunk("primary", "127.0.0.2", priority=1)
    backup = Trunk("backup", "127.0.0.4", 5070, "tcp", priority=2, emergency=True)
    reception = MediaServer("reception", "127.0.0.3", role="receptionist")
    text = routing.encode_peers([primary, backup, reception])
    assert text == "primary@udp:127.0.0.2:5060,backup@tcp:127.0.0.4:5070,reception@udp:127.0.0.3:5060"
    decoded = routing.decode_peers(text)
    # neutral addresses: a media server is not made a trunk, a trunk keeps no claim to carry emergencies
    assert decoded == [Peer("primary", "127.0.0.2"), Peer("backup", "127.0.0.4", 5070, "tcp"),
                       Peer("reception", "127.0.0.3")]
    assert all(type(p) is Peer for p in decoded) and [p.uri for p in decoded][0] == primary.uri
    assert routing.decode_peers("") == routing.decode_peers(None) == []
    # what an older version cached in shared memory: bare addresses
    assert routing.decode_peers("udp:127.0.0.5:5060") == [Peer("udp:127.0.0.5:5060", "127.0.0.5")]
    with pytest.raises(ValueError, match="peer 'udp:127.0.0.5'"):
        routing.decode_peers("x@udp:127.0.0.5")


@given(st.text(max_size=40))
def test_every_decision_is_refused_or_routable(dialled):
    decision = numbering.classify(dialled)
    answer = routing.refusal(decision)
    if answer is None:
        assert decision.category != "invalid" and decision.billing in ("included", "prepaid")
    else:
        assert answer.code in (403, 404, 484) and "\n" not in answer.reason


@pytest.mark.parametrize("contact, expected", [
    ("<sip:2002@acme.test>", "2002"),
    ("<sip:2002@127.0.0.1:5060;transport=udp>", "2002"),
    ("sip:2002@ACME.test", "2002"),
    ("<sip:2002@globex.test>", None),            # another company
    ("<sip:+33612345678@acme.test>", None),      # an external number
    ("<sip:0612345678@127.0.0.1>", None),
    ("<sip:2002@198.51.100.7>", None),           # elsewhere
    ("<sip:acme.test>", None),
    ("<tel:+33612345678>", None),
    ("", None), (None, None),
])
def test_redirect_target_only_follows_extensions_of_the_company(contact, expected):
    assert routing.redirect_target(contact, "acme.test", {"127.0.0.1", "127.0.0.1:5060"}) == expected


@given(st.text(max_size=80))
def test_redirect_target_never_raises_and_only_returns_extensions(contact):
    target = routing.redirect_target(contact, "acme.test", {"127.0.0.1"})
    assert target is None or (len(target) == 4 and target.startswith("2") and target.isdigit())


def test_prepaid_answers_and_rating_numbers():
    assert routing.prepaid_refusal("INSUFFICIENT_FUNDS") == replies.INSUFFICIENT_FUNDS
    assert routing.prepaid_refusal("NO_RATE") == replies.NO_RATE
    for code in ("NOT_ACTIVE", "SOMETHING_NEW"):
        assert routing.prepaid_refusal(code) == replies.PREPAID_NOT_AVAILABLE  # fail closed
    assert routing.rating_number(numbering.classify("118712")) == "+33118712"
    assert routing.rating_number(numbering.classify("004915112345678")) == "+4915112345678"
    assert routing.balance_headers(1234, "EUR") == ["X-Balance: 1234", "X-Currency: EUR"]


@pytest.mark.parametrize("dialled", ["3631", "118712", "004915112345678", "0899123456"])
def test_every_prepaid_number_has_prefixes_to_rate_it_by(dialled):
    """The rating number of a short code ('+333631') is no complete E.164 number; the ledger still rates it."""
    decision = numbering.classify(dialled, numbering.Policy(allow_special=True))
    assert decision.billing == "prepaid"
    number = routing.rating_number(decision)
    assert money.candidate_prefixes(number)[0] == number


def test_forwarding_headers():
    assert routing.diversion_header("+33142685390", "127.0.0.1") == \
        "Diversion: <sip:+33142685390@127.0.0.1;user=phone>;reason=unconditional;counter=1"
    assert routing.media_headers("acme", "+33142685300") == ["X-Company: acme", "X-DID: +33142685300"]
    assert routing.media_headers("acme", None) == ["X-Company: acme"]
    assert [routing.external_caller(u) for u in ("+33698000001", "0698000001", "anonymous", None, "12")] == \
        ["+33698000001", "0698000001", None, None, None]


@pytest.mark.parametrize("code, replied, failover", [
    (503, False, True), (500, True, True), (502, True, True), (504, False, True),
    (408, False, True),    # the trunk never answered at all
    (408, True, False),    # it rang: the callee did not pick up, do not ring elsewhere
    (486, True, False), (404, True, False), (603, True, False),
])
def test_trunk_failed(code, replied, failover):
    assert routing.trunk_failed(code, replied) is failover


@pytest.mark.parametrize("code, replied, said", [
    (408, False, "no reply from t@udp:1.2.3.4:5060 in 6000 ms"),
    (408, True, "t@udp:1.2.3.4:5060 answered 408"),      # it rang: the callee did not answer
    (503, False, "t@udp:1.2.3.4:5060 answered 503"),
    (486, True, "t@udp:1.2.3.4:5060 answered 486"),
])
def test_trunk_outcome_says_silence_when_the_trunk_said_nothing(code, replied, said):
    assert routing.trunk_outcome("t@udp:1.2.3.4:5060", code, replied, 6000) == said
