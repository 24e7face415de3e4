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


def test_split_contacts_keeps_commas_inside_quotes_and_brackets():
    text = '"Desk, 1" <sip:a@127.0.0.30:5071;x=a,b>;q=0.5, sip:b@127.0.0.30:5071,<sip:c@127.0.0.30:5071>'
    assert edge.split_contacts(text) == ['"Desk, 1" <sip:a@127.0.0.30:5071;x=a,b>;q=0.5', "sip:b@127.0.0.30:5071",
                                         "<sip:c@127.0.0.30:5071>"]
    with pytest.raises(ValueError):
        edge.split_contacts('"unterminated <sip:a@127.0.0.30>')
    with pytest.raises(ValueError):
        edge.split_contacts("<sip:a@127.0.0.30")


@pytest.mark.parametrize("contacts, expires, refusal", [
    (None, None, None),  # a query of the bindings
    ("<sip:2001@127.0.0.30:5071>", None, None),
    ("<sip:2001@127.0.0.30:5071;transport=udp>;expires=300, <sip:x@127.0.0.30:5071>", "300", None),
    ("<sip:2001@127.0.0.30:5071>", "0", None),  # removing its own contact
    ("*", "0", None),
    (" * ", " 0 ", None),
    ("*", "300", replies.STAR_NEEDS_EXPIRES_0),
    ("*", None, replies.STAR_NEEDS_EXPIRES_0),
    ("*, <sip:2001@127.0.0.30:5071>", "0", replies.STAR_NEEDS_EXPIRES_0),
    ("<sip:v0@127.0.1.99:5099>", None, replies.CONTACT_NOT_SOURCE),  # a victim
    ("<sip:2001@127.0.0.30:5071>, <sip:v1@127.0.1.99:5099>", None, replies.CONTACT_NOT_SOURCE),
    ("<sip:2001@127.0.0.30:5072>", None, replies.CONTACT_NOT_SOURCE),  # another port
    ("<sip:2001@127.0.0.30>", None, replies.CONTACT_NOT_SOURCE),  # 5060 is not where it sent from
    ("<sip:2001@127.0.0.30:5071;transport=tcp>", None, replies.CONTACT_NOT_SOURCE),  # another transport
    ("<sip:+33612345678@127.0.0.2:5060>", None, replies.CONTACT_NOT_SOURCE),  # a trunk
    ("<sip:2001@phone.acme.test:5071>", None, replies.CONTACT_NOT_SOURCE),  # a name, not where it is
    ("<sip:2001@127.0.0.30:5071;maddr=127.0.0.2>", None, replies.CONTACT_NOT_SOURCE),  # maddr: sent elsewhere
    ("<sip:2001@127.0.0.30:5071;maddr=127.0.0.30>", None, None),
    ("<tel:+33142685301>", None, replies.UNREADABLE_CONTACT),
    ('"open <sip:2001@127.0.0.30:5071>', None, replies.UNREADABLE_CONTACT),
])
def test_a_contact_must_be_the_registering_address(contacts, expires, refusal):
    assert edge.contact_refusal(contacts, expires, SOURCE) == refusal


@given(st.lists(st.sampled_from(["<sip:a@127.0.0.30:5071>", "sip:b@127.0.0.30:5071;transport=udp",
                                 '"x" <sip:c@127.0.0.30:5071>;expires=60']), min_size=1, max_size=6),
       st.sampled_from([None, "<sip:v@127.0.1.9:5099>", "<sip:d@127.0.0.30:5060>", "sip:e@127.0.0.31:5071"]),
       st.randoms())
def test_any_contact_elsewhere_among_own_ones_refuses_the_whole_register(own, stranger, rnd):
    contacts = list(own) + ([stranger] if stranger else [])
    rnd.shuffle(contacts)
    expected = replies.CONTACT_NOT_SOURCE if stranger else None
    assert edge.contact_refusal(", ".join(contacts), "60", SOURCE) == expected


@pytest.mark.parametrize("contacts, expires, refusal", [
    (None, None, None),
    # where a TLS phone listens (baresip: its TLS port; behind a NAT: a private address): kept as
    # written, reached through the connection
    ("<sip:2001-0x55d1@192.168.1.20:5061;transport=tls>;expires=3600", None, None),
    ("<sips:2001@192.168.1.20:5061>", None, None),
    ("<sip:2001@phone.acme.test;transport=TLS>, <sips:2001@10.0.0.7>", "300", None),
    ("*", "0", None),
    ("*", "300", replies.STAR_NEEDS_EXPIRES_0),
    ("<sip:2001@192.168.1.20:5061>", None, replies.CONTACT_NOT_TLS),  # UDP: not over the connection
    ("<sip:2001@192.168.1.20:5061;transport=tcp>", None, replies.CONTACT_NOT_TLS),
    ("<sips:2001@192.168.1.20:5061>, <sip:2001@192.168.1.20:5060>", None, replies.CONTACT_NOT_TLS),
    ("<tel:+33142685301>", None, replies.UNREADABLE_CONTACT),
    ('"open <sips:2001@192.168.1.20:5061>', None, replies.UNREADABLE_CONTACT),
])
def test_a_tls_contact_must_ask_for_tls(contacts, expires, refusal):
    assert edge.tls_contact_refusal(contacts, expires) == refusal


def test_source_address_is_canonical():
    assert edge.source_address("127.0.0.30", "5071", "TCP") == Address("127.0.0.30", 5071, "tcp")
    assert edge.contact_refusal("<sip:a@[0:0::1]:5071>", None, edge.source_address("::1", 5071, "udp")) is None


@pytest.mark.parametrize("contacts, expires, seconds", [
    ("<sip:a@127.0.0.30:5071>", None, 600),           # the registrar's default
    ("<sip:a@127.0.0.30:5071>", "300", 300),
    ("<sip:a@127.0.0.30:5071>;expires=120", "300", 120),  # the contact's own wins
    ("<sip:a@127.0.0.30:5071>;expires=120, <sip:b@127.0.0.30:5071>", "900", 900),  # the longest
    ("<sip:a@127.0.0.30:5071>", "10", 60),            # min_expires
    ("<sip:a@127.0.0.30:5071>", "86400", 3600),       # max_expires
    ("<sip:a@127.0.0.30:5071>", "0", 0),
    ("<sip:a@127.0.0.30:5071;expires=999>", "0", 0),  # a URI parameter is not the contact's expires
    ("*", "0", 0),
    ("<sip:a@127.0.0.30:5071>", "soon", 600),
])
def test_registration_seconds(contacts, expires, seconds):
    assert edge.registration_seconds(contacts, expires, *edge.REGISTRAR_EXPIRES) == seconds


def test_registrar_expiry_bounds_are_kamailio_cfgs():
    cfg = (ROOT / "kamailio.cfg").read_text(encoding="utf-8")
    values = {name: int(value) for name, value in
              re.findall(r'modparam\("registrar", "(\w+_expires)", (\d+)\)', cfg)}
    assert (values["default_expires"], values["min_expires"], values["max_expires"]) == edge.REGISTRAR_EXPIRES


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


@pytest.mark.parametrize("uri, peers, why", [
    ("sip:2001@127.0.0.30:5071", PEERS, None),
    ("sip:2001@127.0.0.2:5060;transport=udp", PEERS, "a trusted peer's address"),
    ("sip:x@127.0.0.3", PEERS, "a trusted peer's address"),      # 5060 by default
    ("sip:x@127.0.0.3:5070", PEERS, None),                      # another port of that host
    ("sip:2001@127.0.0.2:5060", None, None),                    # peers unknown: not checked
    ("garbage", PEERS, "an unreadable address"),
    (None, None, "an unreadable address"),
])
def test_unsafe_ring_targets(uri, peers, why):
    assert edge.unsafe_target(uri, peers) == why


def test_the_next_hop_of_a_party_is_its_contact_unless_a_nat_stands_between():
    assert edge.next_hop("sip:2001@127.0.0.30:5071", "udp:127.0.0.30:5071") == ""
    assert edge.next_hop("<sip:2001@192.168.50.10:5060>", "udp:198.51.100.2:24012") == \
        "sip:198.51.100.2:24012;transport=udp"
    assert edge.next_hop("sip:2001@192.168.50.10:5060;transport=tcp", "tcp:198.51.100.2:40001") == \
        "sip:198.51.100.2:40001;transport=tcp"
    assert edge.next_hop("sip:2001@192.168.50.10", None) == "" and edge.next_hop("sip:x@h", "bogus") == ""
