"""The rules for requests inside a dialog (kemi.routing), by table and property."""

from hypothesis import given
from hypothesis import strategies as st

from kemi import replies
from kemi.routing import (DialogParties, in_dialog_verdict, own_routes_fit, party_address, peer_uri, same_peer,
                          uri_key)

CALLER, CALLEE = "udp:127.0.0.30:5071", "udp:127.0.0.2:5060"
CALLER_TARGET, CALLEE_TARGET = "sip:2001@127.0.0.30:5071", "sip:+33145678901@127.0.0.2:5060"


def parties(from_tag: str, caller=CALLER, callee=CALLEE, callee_routes=None) -> DialogParties:
    """The direction of a request with this From tag ('a': the caller's) as kemi.sip.in_dialog reads it."""
    if from_tag == "a":
        return DialogParties(caller, callee, CALLEE_TARGET if callee else None, callee_routes)
    return DialogParties(callee, caller, CALLER_TARGET, None)


def test_uri_key_ignores_brackets_case_and_other_params_but_not_transport():
    assert uri_key("<sip:+331@EXAMPLE.test:5060;user=phone>") == ("sip", "+331", "example.test", 5060, "udp")
    assert uri_key("sip:+331@example.test:5060;lr") == uri_key("sip:+331@example.test:5060")
    assert uri_key("sip:h:5060;transport=tcp") != uri_key("sip:h:5060")
    assert uri_key("sip:h") != uri_key("sip:h:5060")  # a missing port is not assumed
    assert uri_key("") is None and uri_key("tel:+331") is None


def test_same_peer_table():
    assert same_peer("udp:1.2.3.4:5060", "udp:1.2.3.4:5060")
    assert not same_peer("udp:1.2.3.4:5060", "udp:1.2.3.4:5061")  # a neighbour behind the same NAT
    assert same_peer("tcp:1.2.3.4:5060", "tcp:1.2.3.4:40001")  # a trunk, known by its address
    assert not same_peer("tcp:1.2.3.4:40000", "udp:1.2.3.4:40000")
    assert not same_peer("udp:1.2.3.4:5060", "udp:1.2.3.5:5060")
    assert not same_peer("garbage", "udp:1.2.3.4:5060")


def test_a_phone_on_tcp_or_tls_is_its_connection():
    for transport in ("tcp", "tls"):
        phone = party_address(transport, "1.2.3.4", 40000, "17", by_address=False)
        assert phone == f"{transport}:1.2.3.4:40000#17"
        assert same_peer(phone, f"{transport}:1.2.3.4:40000", "17")
        assert not same_peer(phone, f"{transport}:1.2.3.4:40001", "18")  # another connection, same NAT address
        assert not same_peer(phone, f"{transport}:1.2.3.4:40000", "18")  # the port reused by a new connection
        assert not same_peer(phone, f"{transport}:1.2.3.4:40000", None)
        gone = party_address(transport, "1.2.3.4", 40000, None, by_address=False)
        assert not same_peer(gone, f"{transport}:1.2.3.4:40000", None)  # no connection id: nobody
        assert peer_uri(phone) == f"sip:1.2.3.4:40000;transport={transport}"
    trunk = party_address("tcp", "127.0.0.2", 5060, "9", by_address=True)
    assert trunk == "tcp:127.0.0.2:5060" and same_peer(trunk, "tcp:127.0.0.2:41234", "12")
    assert party_address("udp", "1.2.3.4", 5060, None, by_address=False) == "udp:1.2.3.4:5060"


def test_verdict_table():
    cases = [
        ("a", "udp:127.0.0.30:5071", CALLEE_TARGET, (None, "sip:127.0.0.2:5060;transport=udp")),
        ("b", "udp:127.0.0.2:5060", CALLER_TARGET, (None, "sip:127.0.0.30:5071;transport=udp")),
        ("a", "udp:127.0.0.99:5071", CALLEE_TARGET, (replies.NOT_A_PARTY, None)),
        ("b", "udp:127.0.0.30:5071", CALLER_TARGET, (replies.NOT_A_PARTY, None)),  # caller posing as callee
        ("a", "udp:127.0.0.30:5071", "sip:void@127.0.0.99:9", (replies.NOT_THE_DIALOG_TARGET, None)),
        ("a", "udp:127.0.0.30:5071", CALLER_TARGET, (replies.NOT_THE_DIALOG_TARGET, None)),
    ]
    for from_tag, source, ruri, expected in cases:
        assert in_dialog_verdict(parties(from_tag), source, ruri) == expected, (from_tag, source, ruri)


def test_before_the_answer_nothing_is_relayed():
    early = parties("a", callee=None)
    assert in_dialog_verdict(early, "udp:127.0.0.30:5071", "sip:x@127.0.0.2") == (replies.DIALOG_NOT_ANSWERED, None)
    assert in_dialog_verdict(parties("b", callee=None), CALLEE, CALLER_TARGET)[0] == replies.NOT_A_PARTY


addresses = st.builds(lambda t, ip, port: f"{t}:127.0.0.{ip}:{port}", st.sampled_from(["udp", "tcp"]),
                      st.integers(1, 254), st.integers(1, 65535))


@given(source=addresses, ruri=st.text(max_size=40), tag=st.sampled_from(["a", "b", "x"]))
def test_a_request_is_only_ever_sent_to_the_other_party(source, ruri, tag):
    direction = parties(tag)
    refused, hop = in_dialog_verdict(direction, source, ruri)
    assert (refused is None) == (hop is not None)
    if hop is not None:
        assert hop == peer_uri(direction.receiver)
        assert same_peer(direction.sender, source)  # and only from the one party that is not its target


@given(port=st.integers(1, 65535), conn=st.one_of(st.none(), st.integers(0, 99).map(str)),
       transport=st.sampled_from(["tcp", "tls"]))
def test_a_phone_on_a_connection_is_only_ever_that_connection(port, conn, transport):
    phone = DialogParties(f"{transport}:127.0.0.30:40000#7", CALLEE, CALLEE_TARGET)
    refused, hop = in_dialog_verdict(phone, f"{transport}:127.0.0.30:{port}", CALLEE_TARGET, [], conn)
    assert (hop is not None) == (port == 40000 and conn == "7")


def test_the_route_set_beyond_us_must_be_the_one_the_dialog_recorded():
    sbc = parties("a", callee_routes="<sip:sbc@127.0.0.2:5060;lr>")
    ok = ("udp:127.0.0.30:5071", CALLEE_TARGET)
    assert in_dialog_verdict(sbc, *ok, ["sip:sbc@127.0.0.2:5060;lr"])[0] is None
    assert in_dialog_verdict(sbc, *ok, [])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(sbc, *ok, ["sip:127.0.0.4:5060;lr"])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(parties("a"), *ok, ["sip:127.0.0.4:5060;lr"])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(parties("a"), *ok, ["sip:127.0.0.20"])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(parties("a"), *ok, [])[0] is None


def test_our_own_route_entries_must_be_the_ones_we_record_routed():
    ours = "sip:127.0.0.1:5060;lr;ftag=a;did=1.2"
    double = ["sip:127.0.0.1:5060;r2=on;lr;ftag=a;did=1.2", "sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=a"]
    assert own_routes_fit([ours]) and own_routes_fit(double)
    assert not own_routes_fit([ours, ours])           # ours twice: loose_route would relay the second
    assert not own_routes_fit([double[0], ours])
    assert not own_routes_fit(double + [double[0]])
    assert not own_routes_fit([])
    ok = ("udp:127.0.0.30:5071", CALLEE_TARGET)
    assert in_dialog_verdict(parties("a"), *ok, [], own=[ours, ours])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(parties("a"), *ok, [], own=double)[0] is None
