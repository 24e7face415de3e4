"""Decisions at the edge (kemi/edge.py, pure): scanners, contacts of a REGISTER, digest uri, ring targets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from kemi import edge, replies
from kemi.edge import Address
from kemi.model import Site
from kemi.paths import ROOT
from kemi.settings import Settings

AGENTS = Settings().scanner_agents
SOURCE = edge.source_address("127.0.0.30", 5071, "UDP")


@pytest.mark.parametrize("agent, found", [
    ("friendly-scanner", "friendly-scanner"),
    ("SIPVicious 0.3.4", "sipvicious"),
    ("sipcli/v1.8", "sipcli"),
    ("VaxSIPUserAgent/3.1", "vaxsipuseragent"),
    ("pplsip", "pplsip"),
    ("Yealink SIP-T46S 66.86.0.15", None),
    ("Linphone/5.2 (belle-sip/5.2)", None),
    ("", None),
    (None, None),
])
def test_scanner_user_agents_are_found_case_insensitively_anywhere(agent, found):
    assert edge.scanner(agent, AGENTS) == found


def test_auth_keys_separate_users_and_name_the_address():
    assert edge.auth_keys("10.0.0.1", 5060, "2001", "acme.test") == ("10.0.0.1|2001@acme.test", "10.0.0.1|*")
    assert edge.auth_keys("10.0.0.1", 5060, "2002", "acme.test")[0] != \
        edge.auth_keys("10.0.0.2", 5060, "2001", "acme.test")[0]
    # another port of an undeclared address is the same sender
    assert edge.auth_keys("10.0.0.1", 5061, "2001", "acme.test") == edge.auth_keys("10.0.0.1", 5060, "2001", "acme.test")


def test_at_a_site_the_any_user_counter_is_per_port_and_the_user_counter_per_address():
    at_5060 = edge.auth_keys("203.0.113.7", 5060, "2001", "acme.test", site=True)
    at_5061 = edge.auth_keys("203.0.113.7", 5061, "2001", "acme.test", site=True)
    assert at_5060 == ("203.0.113.7|2001@acme.test", "203.0.113.7:5060|*")
    assert at_5060[0] == at_5061[0] and at_5060[1] != at_5061[1]
    # no key of a site phone is the undeclared address's key: a site is never blocked as a whole
    assert "203.0.113.7|*" not in at_5060 + at_5061


SITES = (Site("station-f", ("203.0.113.7/32", "198.51.100.0/29", "2001:db8:7::/48")),
         Site("halle", ("192.0.2.0/24",)), Site("loft", ("192.0.2.128/32",)))


@pytest.mark.parametrize("ip, site", [
    ("203.0.113.7", "station-f"), ("203.0.113.8", None), ("203.0.113.6", None),
    ("198.51.100.0", "station-f"), ("198.51.100.7", "station-f"), ("198.51.100.8", None),
    ("2001:db8:7::1", "station-f"), ("2001:db8:7:ffff::2", "station-f"), ("[2001:db8:7::1]", "station-f"),
    ("2001:db8:8::1", None), ("192.0.2.1", "halle"), ("192.0.2.128", "loft"),  # the longest prefix wins
    ("not an address", None), ("", None), ("::ffff:203.0.113.7", None),
])
def test_sites_find_the_site_of_an_address(ip, site):
    assert edge.Sites(SITES).site_of(ip) == site


@given(st.ip_addresses(v=4), st.integers(8, 32))
def test_an_address_is_in_a_site_exactly_when_a_network_of_it_holds_it(ip, length):
    import ipaddress
    net = ipaddress.ip_network(f"{ip}/{length}", strict=False)
    sites = edge.Sites([Site("only", (str(net),))])
    for probe in (ip, net.network_address, net.broadcast_address, net.network_address - 1 if int(net.network_address) else ip,
                  net.broadcast_address + 1 if int(net.broadcast_address) < 2**32 - 1 else ip):
        assert (sites.site_of(str(probe)) == "only") == (probe in net)


def test_no_sites_answer_none_without_parsing():
    assert not edge.Sites() and edge.Sites().site_of("203.0.113.7") is None


@pytest.mark.parametrize("uri, expected", [
    ("sip:2001@127.0.0.30:5071", Address("127.0.0.30", 5071, "udp")),
    ("<sip:2001@127.0.0.30:5071;transport=TCP>;expires=60", Address("127.0.0.30", 5071, "tcp")),
    ('"Alice, desk" <sip:2001@127.0.0.30>', Address("127.0.0.30", 5060, "udp")),
    ("sips:2001@127.0.0.30", Address("127.0.0.30", 5061, "tls")),
    ("sip:127.0.0.30:5071;transport=udp", Address("127.0.0.30", 5071, "udp")),
    ("sip:2001@[::1]:5080", Address("::1", 5080, "udp")),
    ("sip:2001@Phone.Example.test:5071", Address("phone.example.test", 5071, "udp")),
    ("sip:2001@127.0.0.30:99999", None),
    ("tel:+33142685301", None),
    ("garbage", None),
    ("", None),
])
def test_address_of_a_uri(uri, expected):
    assert edge.address(uri) == expected


def saved(socket: str, maddr: str = "", scheme: str = "sip", expires_in: int = 600) -> edge.SavedContact:
    """A contact as the registrar saved it and Kamailio's {uri.*} transformations read it back."""
    return edge.SavedContact(scheme=scheme, socket=socket, maddr=maddr, expires_at=NOW + expires_in)


NOW = 1_700_000_000


@pytest.mark.parametrize("socket, expected", [
    ("udp:127.0.0.30:5071", Address("127.0.0.30", 5071, "udp")),
    ("TCP:127.0.0.30:5060", Address("127.0.0.30", 5060, "tcp")),
    ("udp:[0:0::1]:5080", Address("::1", 5080, "udp")),
    ("udp:Phone.Example.test:5071", Address("phone.example.test", 5071, "udp")),
    ("udp:2130706434:5060", Address("2130706434", 5060, "udp")),  # a number is no IP literal here
    ("", None), (None, None), ("udp:5060", None), ("udp:host:x", None),
])
def test_a_socket_kamailio_parsed(socket, expected):
    assert edge.parse_socket(socket) == expected


# What Kamailio's registrar saves for the spellings of issue 18 (each sent through Kamailio 5.6 by
# tests/sip/test_security_calls.py, test_contact_spellings_of_issue_18_...): the URI in <> after the
# display name, the user part up to the @, the host as written, maddr as a parameter that Kamailio's
# forwarding ignores.
@pytest.mark.parametrize("contacts, refusal", [
    ([], None),                                                       # nothing saved: a removal
    ([saved("udp:127.0.0.30:5071")], None),
    ([saved("udp:127.0.0.30:5071"), saved("udp:127.0.0.30:5071", expires_in=60)], None),
    ([saved("udp:127.0.1.99:5099")], replies.CONTACT_NOT_SOURCE),     # a victim
    ([saved("udp:127.0.0.30:5071"), saved("udp:127.0.1.99:5099")], replies.CONTACT_NOT_SOURCE),
    ([saved("udp:127.0.0.30:5072")], replies.CONTACT_NOT_SOURCE),     # another port
    ([saved("udp:127.0.0.30:5060")], replies.CONTACT_NOT_SOURCE),     # no port: 5060 is not the source's
    ([saved("tcp:127.0.0.30:5071")], replies.CONTACT_NOT_SOURCE),     # another transport
    ([saved("udp:127.0.0.30:5071", scheme="sips")], replies.CONTACT_NOT_SOURCE),  # sips: asks for TLS
    ([saved("udp:127.0.0.2:5060")], replies.CONTACT_NOT_SOURCE),      # a trunk (display-name spelling)
    ([saved("udp:2130706434:5060")], replies.CONTACT_NOT_SOURCE),     # the trunk as a number
    ([saved("udp:trunk.example.test:5060")], replies.CONTACT_NOT_SOURCE),  # a host name
    ([saved("udp:127.0.0.30:5071", maddr="127.0.0.2")], replies.CONTACT_NOT_SOURCE),  # maddr elsewhere
    ([saved("udp:127.0.0.2:5060", maddr="127.0.0.30")], replies.CONTACT_NOT_SOURCE),  # maddr at itself
    ([saved("udp:127.0.0.30:5071", maddr="127.0.0.30")], replies.CONTACT_NOT_SOURCE),  # maddr at all
    ([saved("udp:127.0.0.30:5071", scheme="tel")], replies.UNREADABLE_CONTACT),
    ([saved("")], replies.UNREADABLE_CONTACT),                        # Kamailio could not parse it
])
def test_a_saved_contact_must_be_the_registering_address(contacts, refusal):
    assert edge.saved_contact_refusal(contacts, SOURCE) == refusal


@given(st.lists(st.sampled_from([saved("udp:127.0.0.30:5071"), saved("udp:127.0.0.30:5071", expires_in=60)]),
                min_size=1, max_size=6),
       st.sampled_from([None, saved("udp:127.0.1.9:5099"), saved("udp:127.0.0.30:5060"),
                        saved("udp:127.0.0.31:5071"), saved("udp:127.0.0.30:5071", maddr="127.0.0.2")]),
       st.randoms())
def test_any_contact_elsewhere_among_own_ones_refuses_the_whole_register(own, stranger, rnd):
    contacts = list(own) + ([stranger] if stranger else [])
    rnd.shuffle(contacts)
    expected = replies.CONTACT_NOT_SOURCE if stranger else None
    assert edge.saved_contact_refusal(contacts, SOURCE) == expected


TLS_SOURCE = edge.source_address("203.0.113.7", 40312, "tls")


@pytest.mark.parametrize("contacts, refusal", [
    ([], None),
    # where a TLS phone listens (baresip: its TLS port; behind a NAT: a private address): kept as
    # written, reached through the connection
    ([saved("tls:192.168.1.20:5061")], None),
    ([saved("udp:192.168.1.20:5061", scheme="sips")], None),
    ([saved("tls:phone.acme.test:5060"), saved("udp:10.0.0.7:5060", scheme="sips")], None),
    ([saved("udp:192.168.1.20:5061")], replies.CONTACT_NOT_TLS),   # UDP: not over the connection
    ([saved("tcp:192.168.1.20:5061")], replies.CONTACT_NOT_TLS),
    ([saved("tls:192.168.1.20:5061"), saved("udp:192.168.1.20:5060")], replies.CONTACT_NOT_TLS),
    ([saved("udp:192.168.1.20:5061", scheme="tel")], replies.UNREADABLE_CONTACT),
])
def test_a_tls_contact_must_ask_for_tls(contacts, refusal):
    assert edge.saved_contact_refusal(contacts, TLS_SOURCE) == refusal


def test_behind_a_nat_a_private_contact_on_the_same_transport_is_kept():
    nat = edge.source_address("198.51.100.2", 24012, "udp")
    assert edge.saved_contact_refusal([saved("udp:192.168.50.10:5060")], nat, behind_nat=True) is None
    assert edge.saved_contact_refusal([saved("tcp:192.168.50.10:5060")], nat, behind_nat=True) == \
        replies.CONTACT_NOT_SOURCE
    assert edge.saved_contact_refusal([saved("udp:198.51.100.9:5060")], nat, behind_nat=True) == \
        replies.CONTACT_NOT_SOURCE


def test_source_address_is_canonical():
    assert edge.source_address("127.0.0.30", "5071", "TCP") == Address("127.0.0.30", 5071, "tcp")
    assert edge.saved_contact_refusal([saved("udp:[0:0::1]:5071")], edge.source_address("::1", 5071, "udp")) is None


@pytest.mark.parametrize("expires_in, seconds", [([600], 600), ([120, 900], 900), ([], 0), ([-5], 0), ([3595], 3595)])
def test_registration_seconds_are_the_registrars_own(expires_in, seconds):
    contacts = [saved("udp:127.0.0.30:5071", expires_in=e) for e in expires_in]
    assert edge.registration_seconds(contacts, NOW) == seconds


@pytest.mark.parametrize("digest_uri, ruri, matches", [
    ("sip:acme.test", "sip:acme.test", True),
    ("sip:0612345678@acme.test", "sip:0612345678@acme.test;user=phone", True),
    ("sip:0612345678@ACME.test:5060", "sip:0612345678@acme.test", True),
    ("sip:0612345678@acme.test", "sip:00442079460000@acme.test", False),  # another number
    ("sip:0612345678@acme.test", "sip:0612345678@globex.test", False),
    ("sips:0612345678@acme.test", "sip:0612345678@acme.test", False),
    ("sip:acme.test", "sip:2001@acme.test", False),
    (None, "sip:acme.test", False),
    ("nonsense", "sip:acme.test", False),
])
def test_digest_uri_must_name_the_request_uri(digest_uri, ruri, matches):
    assert edge.digest_uri_matches(digest_uri, ruri) is matches


@pytest.mark.parametrize("uri, host_only", [
    ("sip:127.0.0.1:5060", True), ("sip:acme.test", True), ("sip:2001@127.0.0.1:5060", False),
    (None, False), ("nonsense", False),
])
def test_names_a_host_only(uri, host_only):
    assert edge.names_a_host_only(uri) is host_only


PEERS = frozenset({("127.0.0.2", 5060), ("127.0.0.3", 5060)})


@pytest.mark.parametrize("socket, peers, why", [
    ("udp:127.0.0.30:5071", PEERS, None),
    ("udp:127.0.0.2:5060", PEERS, "a trusted peer's address"),
    ("tcp:127.0.0.3:5060", PEERS, "a trusted peer's address"),
    ("udp:127.0.0.3:5070", PEERS, "a trusted peer's address"),   # another port of that host
    ("udp:2130706434:5060", PEERS, None),                        # resolved only at sending: onsend_route
    ("udp:127.0.0.2:5060", None, None),                          # peers unknown: not checked
    ("", PEERS, "an unreadable address"),
    (None, None, "an unreadable address"),
])
def test_unsafe_ring_targets(socket, peers, why):
    assert edge.unsafe_target(socket, peers) == why


def test_the_next_hop_of_a_party_is_its_contact_unless_a_nat_stands_between():
    assert edge.next_hop("sip:2001@127.0.0.30:5071", "udp:127.0.0.30:5071") == ""
    assert edge.next_hop("<sip:2001@192.168.50.10:5060>", "udp:198.51.100.2:24012") == \
        "sip:198.51.100.2:24012;transport=udp"
    assert edge.next_hop("sip:2001@192.168.50.10:5060;transport=tcp", "tcp:198.51.100.2:40001") == \
        "sip:198.51.100.2:40001;transport=tcp"
    assert edge.next_hop("sip:2001@192.168.50.10", None) == "" and edge.next_hop("sip:x@h", "bogus") == ""
