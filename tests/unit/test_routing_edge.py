"""What may leave for a carrier, and who may place an emergency call (pure)."""

from __future__ import annotations

import ctypes
import ctypes.util
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kemi import routing
from kemi.routing import ANONYMOUS, IDENTIFIED, REFUSED, EmergencyIdentity


@pytest.mark.parametrize("name, allowed", [
    # what a call needs to be set up, in long and compact form, whatever the case
    ("Via", True), ("v", True), ("From", True), ("f", True), ("To", True), ("t", True), ("Call-ID", True),
    ("i", True), ("CSeq", True), ("Contact", True), ("m", True), ("Max-Forwards", True), ("Content-Type", True),
    ("c", True), ("Content-Length", True), ("l", True), ("Content-Disposition", True), ("Content-Encoding", True),
    ("e", True), ("Record-Route", True), ("Route", True), ("Allow", True), ("Supported", True), ("k", True),
    ("Require", True), ("Session-Expires", True), ("x", True), ("Min-SE", True), ("User-Agent", True),
    ("Accept", True), ("Allow-Events", True), ("Expires", True), ("Date", True), ("SUPPORTED", True),
    (" via ", True),
    # identity, charging, diversion, priority: the proxy's own or nobody's
    ("P-Asserted-Identity", False), ("P-Preferred-Identity", False), ("Remote-Party-ID", False),
    ("remote-party-id", False), ("P-Charge-Info", False), ("P-Charging-Vector", False), ("History-Info", False),
    ("Diversion", False), ("DIVERSION", False), ("Privacy", False), ("Priority", False),
    ("Resource-Priority", False), ("P-Called-Party-ID", False), ("P-Access-Network-Info", False),
    # credentials, and whatever anybody invents
    ("Proxy-Authorization", False), ("Authorization", False), ("X-Billing-Account", False), ("X-Account", False),
    ("X-Emergency-Callback", False), ("Alert-Info", False), ("Call-Info", False), ("Reason", False),
    ("Proxy-Require", False), ("Organization", False), ("u", False), ("o", False), ("Via2", False),
    ("Content-Lengthx", False), ("", False),
])
def test_allowed_towards_trunk(name, allowed):
    assert routing.allowed_towards_trunk(name) is allowed


def test_the_pattern_matches_exactly_the_allow_list():
    pattern = re.compile(routing.TRUNK_HEADERS_PATTERN, re.IGNORECASE)
    for name in routing.TRUNK_HEADERS:
        assert pattern.search(name) and pattern.search(name.upper()), name
    for name in ("Diversion", "X-Via", "Viaa", "Call-ID2", "vv", "P-Asserted-Identity", "Min-SE-X"):
        assert not pattern.search(name), name


def _posix_matcher(pattern: str):
    """regcomp/regexec of the C library, with the flags textopsx keep_hf_re uses."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    regex = ctypes.create_string_buffer(1024)  # larger than any regex_t
    reg_extended, reg_icase, reg_newline = 1, 2, 4  # glibc's values
    assert libc.regcomp(regex, pattern.encode(), reg_extended | reg_icase | reg_newline) == 0, pattern
    return lambda name: libc.regexec(regex, name.encode(), 0, None, 0) == 0


def test_kamailio_reads_the_pattern_as_python_does():
    matches = _posix_matcher(routing.TRUNK_HEADERS_PATTERN)
    for name in sorted(routing.TRUNK_HEADERS) + ["Diversion", "X-Via", "Viaa", "vv", "History-Info", "CALL-ID"]:
        assert matches(name) is routing.allowed_towards_trunk(name), name


@pytest.mark.parametrize("names", [["Via", "x"], ["a|b"], ["x-.*"], [], ["-x"]])
def test_a_pattern_only_of_plain_lower_case_names(names):
    with pytest.raises(ValueError):
        routing.header_names_pattern(names)


# -- emergency calls ---------------------------------------------------------------------------------
HA1 = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("identity", [
    EmergencyIdentity(HA1, "+33142685301", "12 rue de la Paix, 75002 Paris"),
    EmergencyIdentity(HA1, None, None), EmergencyIdentity(HA1, "+33142685300", None),
    EmergencyIdentity(HA1, "+33142685301", "Floor 3", "acme"), EmergencyIdentity(HA1, None, None, "acme"),
])
def test_emergency_identity_round_trip(identity):
    assert routing.decode_emergency_identity(routing.encode_emergency_identity(identity)) == identity


def test_an_entry_of_the_previous_version_is_an_identity_without_a_company():
    assert routing.decode_emergency_identity(f"{HA1}\t+331\tFloor 3") == EmergencyIdentity(HA1, "+331", "Floor 3")


@pytest.mark.parametrize("text", [None, "", "+33142685301\t12 rue X", f"{HA1}\t+331", "nothex" * 5 + "ab\t\t",
                                  f"{HA1.upper()}\t+331\tX", f"{HA1}\t+331\tX\tacme\tmore"])
def test_an_entry_without_an_ha1_is_no_identity(text):
    assert routing.decode_emergency_identity(text) is None


@pytest.mark.parametrize("verified, registered, checkable, admission", [
    (True, True, True, IDENTIFIED), (True, False, True, IDENTIFIED),
    (False, True, True, ANONYMOUS),     # a phone of ours is at that address
    (False, True, False, ANONYMOUS),
    (False, False, False, ANONYMOUS),   # nothing could check the credentials: an outage blocks no call
    (False, False, True, REFUSED),      # checked, failed, from an address nobody registered from
])
def test_emergency_admission(verified, registered, checkable, admission):
    assert routing.emergency_admission(verified, registered, checkable) == admission


@pytest.mark.parametrize("verified", [True, False])
@pytest.mark.parametrize("registered", [True, False])
def test_a_blocked_caller_is_admitted_unidentified_whatever_its_password(verified, registered):
    # never checked, so `verified` cannot be True in practice; were it, the block still wins
    assert routing.emergency_admission(verified, registered, True, blocked=True) == ANONYMOUS


def test_emergency_limits():
    identified = routing.emergency_limits(IDENTIFIED, "2001@acme.test", "192.0.2.1:5060", 5, 20)
    assert [(lim.key, lim.limit, lim.answer.reason) for lim in identified] == [
        ("phone:2001@acme.test", 5, "Too Many Emergency Calls From This Phone")]
    anonymous = routing.emergency_limits(ANONYMOUS, "2001@acme.test", "192.0.2.1:5060", 5, 20)
    assert [(lim.key, lim.limit, lim.answer.code) for lim in anonymous] == [
        ("source:192.0.2.1:5060", 5, 503), ("unauthenticated", 20, 503)]


@pytest.mark.parametrize("name, allowed", [
    ("RAck", True), ("Reason", True), ("Event", True), ("o", True), ("Subscription-State", True),
    ("Info-Package", True), ("Recv-Info", True), ("Via", True), ("CSeq", True),
    ("Refer-To", False), ("r", False), ("Referred-By", False), ("b", False), ("Replaces", False),
    ("P-Asserted-Identity", False), ("P-Charge-Info", False), ("Diversion", False), ("X-Account", False),
])
def test_in_dialog_allow_list(name, allowed):
    assert (name.lower() in routing.IN_DIALOG_TRUNK_HEADERS) is allowed
    assert _posix_matcher(routing.IN_DIALOG_TRUNK_HEADERS_PATTERN)(name) is allowed
    assert routing.TRUNK_HEADERS <= routing.IN_DIALOG_TRUNK_HEADERS


def test_headers_outside_the_allow_list_are_named_once_as_written():
    block = ("Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:2001@acme.test>;tag=1\r\n"
             "P-Asserted-Identity: <sip:+33144556677@acme.test>\r\n  ;continued=1\r\nk: 100rel\r\n"
             "DIVERSION: <sip:a@b>\r\nDiversion : <sip:c@d>\r\nX-Billing-Account:9\r\np-asserted-identity: x\r\n")
    assert routing.headers_outside(block, routing.TRUNK_HEADERS) == \
        ["P-Asserted-Identity", "DIVERSION", "Diversion", "X-Billing-Account", "p-asserted-identity"]
    assert routing.headers_outside("INVITE sip:1@a SIP/2.0\r\nTo: <sip:1@a>\r\n", routing.TRUNK_HEADERS) == []


def test_headers_named_finds_the_private_headers_a_request_carries_in_any_case_and_spacing():
    block = ("INVITE sip:0145678901@acme.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.20;branch=z9hG4bK1\r\n"
             "x-company : initech\r\nP-ASSERTED-IDENTITY:<sip:1@evil>\r\nSubject: X-DID: no\r\n"
             "X-Note: a\r\n X-Balance: folded into X-Note\r\n")
    assert routing.headers_named(block, routing.PRIVATE_HEADERS) == ["X-Company", "P-Asserted-Identity"]
    assert routing.headers_named(block, ["Route"]) == []
    assert routing.headers_named("", routing.PRIVATE_HEADERS) == []


@given(st.lists(st.sampled_from(routing.PRIVATE_HEADERS + ("Via", "To", "Route", "Subject")), max_size=8),
       st.lists(st.sampled_from(["", " ", "\t"]), min_size=8, max_size=8), st.booleans())
def test_every_private_header_a_block_holds_is_named_for_removal(names, spaces, upper):
    block = "".join(f"{n.upper() if upper else n}{spaces[i]}: v{i}\r\n" for i, n in enumerate(names))
    assert set(routing.headers_named(block, routing.PRIVATE_HEADERS)) == set(names) & set(routing.PRIVATE_HEADERS)
