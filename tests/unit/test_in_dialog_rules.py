"""The rules for requests inside a dialog (kemi.routing), by table and property."""

from hypothesis import given
from hypothesis import strategies as st

from kemi import replies
from kemi.routing import DialogParties, in_dialog_verdict, peer_uri, same_peer, uri_key

PARTIES = DialogParties(caller_tag="a", caller="udp:127.0.0.30:5071", callee="udp:127.0.0.2:5060",
                        caller_target="sip:2001@127.0.0.30:5071", callee_target="sip:+33145678901@127.0.0.2:5060")


def test_uri_key_ignores_brackets_case_and_other_params_but_not_transport():
    assert uri_key("<sip:+331@EXAMPLE.test:5060;user=phone>") == ("sip", "+331", "example.test", 5060, "udp")
    assert uri_key("sip:+331@example.test:5060;lr") == uri_key("sip:+331@example.test:5060")
    assert uri_key("sip:h:5060;transport=tcp") != uri_key("sip:h:5060")
    assert uri_key("sip:h") != uri_key("sip:h:5060")  # a missing port is not assumed
    assert uri_key("") is None and uri_key("tel:+331") is None


def test_same_peer_table():
    assert same_peer("udp:1.2.3.4:5060", "udp:1.2.3.4:5060")
    assert not same_peer("udp:1.2.3.4:5060", "udp:1.2.3.4:5061")
    assert same_peer("tcp:1.2.3.4:40000", "tcp:1.2.3.4:40001")  # a new connection
    assert not same_peer("tcp:1.2.3.4:40000", "udp:1.2.3.4:40000")
    assert not same_peer("udp:1.2.3.4:5060", "udp:1.2.3.5:5060")
    assert not same_peer("garbage", "udp:1.2.3.4:5060")


def test_verdict_table():
    cases = [
        ("a", "udp:127.0.0.30:5071", "sip:+33145678901@127.0.0.2:5060", (None, "sip:127.0.0.2:5060;transport=udp")),
        ("b", "udp:127.0.0.2:5060", "sip:2001@127.0.0.30:5071", (None, "sip:127.0.0.30:5071;transport=udp")),
        ("a", "udp:127.0.0.99:5071", "sip:+33145678901@127.0.0.2:5060", (replies.NOT_A_PARTY, None)),
        ("b", "udp:127.0.0.30:5071", "sip:2001@127.0.0.30:5071", (replies.NOT_A_PARTY, None)),  # caller posing as callee
        ("a", "udp:127.0.0.30:5071", "sip:void@127.0.0.99:9", (replies.NOT_THE_DIALOG_TARGET, None)),
        ("a", "udp:127.0.0.30:5071", "sip:2001@127.0.0.30:5071", (replies.NOT_THE_DIALOG_TARGET, None)),
    ]
    for from_tag, source, ruri, expected in cases:
        assert in_dialog_verdict(PARTIES, from_tag, source, ruri) == expected, (from_tag, source, ruri)


def test_before_the_answer_nothing_is_relayed():
    early = DialogParties("a", "udp:127.0.0.30:5071", None, "sip:2001@127.0.0.30:5071", None)
    assert in_dialog_verdict(early, "a", "udp:127.0.0.30:5071", "sip:x@127.0.0.2") == (replies.DIALOG_NOT_ANSWERED, None)


addresses = st.builds(lambda t, ip, port: f"{t}:127.0.0.{ip}:{port}", st.sampled_from(["udp", "tcp"]),
                      st.integers(1, 254), st.integers(1, 65535))


@given(source=addresses, ruri=st.text(max_size=40), tag=st.sampled_from(["a", "b", "x"]))
def test_a_request_is_only_ever_sent_to_the_other_party(source, ruri, tag):
    refused, hop = in_dialog_verdict(PARTIES, tag, source, ruri)
    assert (refused is None) == (hop is not None)
    if hop is not None:
        assert hop in (peer_uri(PARTIES.caller), peer_uri(PARTIES.callee))
        sender = PARTIES.caller if hop == peer_uri(PARTIES.callee) else PARTIES.callee
        assert same_peer(sender, source)  # and only from the one party that is not its target


def test_the_route_set_beyond_us_must_be_the_one_the_dialog_recorded():
    sbc = DialogParties(**{**PARTIES.__dict__, "callee_routes": "<sip:sbc@127.0.0.2:5060;lr>"})
    ok = ("a", "udp:127.0.0.30:5071", "sip:+33145678901@127.0.0.2:5060")
    assert in_dialog_verdict(sbc, *ok, ["sip:sbc@127.0.0.2:5060;lr"])[0] is None
    assert in_dialog_verdict(sbc, *ok, [])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(sbc, *ok, ["sip:127.0.0.4:5060;lr"])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(PARTIES, *ok, ["sip:127.0.0.4:5060;lr"])[0] == replies.NOT_THE_DIALOG_ROUTE
    assert in_dialog_verdict(PARTIES, *ok, [])[0] is None
