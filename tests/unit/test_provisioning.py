"""The provisioning file: every error named by path and line, nothing half-accepted."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from kemi.model import digest_ha1
from kemi.provisioning import ProvisioningError, parse

GOOD = textwrap.dedent("""\
    companies:
      - id: acme
        name: Acme
        domain: acme.test
        main_number: "+33142685300"
        extensions:
          - number: "2001"
            name: Alice
            password: alice-secret-1
            did: "+33142685301"
          - number: 2002
            name: Bruno
            ha1: 0123456789abcdef0123456789abcdef
          - number: "2099"
            name: Night line
            type: virtual
            forward: "+33612345678"
    """)


def problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ProvisioningError) as err:
        parse(text, "f.yaml")
    return [(p.line, p.path, p.message) for p in err.value.problems]


def test_good_file_parses_and_passwords_become_ha1():
    prov = parse(GOOD)
    (acme,) = prov.companies
    alice, bruno, night = acme.extensions
    assert alice.ha1 == digest_ha1("2001", "acme.test", "alice-secret-1")
    assert "alice-secret-1" not in repr(prov)
    assert bruno.number == "2002" and bruno.ha1 == "0123456789abcdef0123456789abcdef"
    assert night.type == "virtual" and night.ha1 is None and night.forward == "+33612345678"
    assert alice.ring_timeout == 30


@pytest.mark.parametrize("old, new, line, path, words", [
    ('number: "2001"', 'number: "3001"', 7, "companies[0].extensions[0].number", "not an extension number 2XXX"),
    ("domain: acme.test", "domain: Acme Test", 4, "companies[0].domain", "SIP domain"),
    ('did: "+33142685301"', 'did: "0142685301"', 10, "companies[0].extensions[0].did", "E.164"),
    ("password: alice-secret-1", "password: short", 9, "companies[0].extensions[0].password", "too short"),
    ("name: Alice", "nmae: Alice", 8, "companies[0].extensions[0].nmae", "unknown field"),
    ("ha1: 0123456789abcdef0123456789abcdef", "ha1: xyz", 13, "companies[0].extensions[1].ha1", "HA1"),
    ("type: virtual", "type: fax", 16, "companies[0].extensions[2].type", "expected one of"),
])
def test_each_bad_field_is_named_with_its_line(old, new, line, path, words):
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(l == line and p == path and words in m for l, p, m in found), found


def test_every_problem_is_reported_at_once():
    text = GOOD.replace('number: "2001"', 'number: "3001"').replace("domain: acme.test", "domain: x")
    assert len(problems(text)) == 2


def test_duplicates_are_refused_with_the_first_line():
    text = GOOD.replace("number: 2002", 'number: "2001"')
    assert any("already defined at line 7" in m for _, _, m in problems(text))
    twice = GOOD + GOOD.split("\n", 1)[1]
    assert any("already used at line 2" in m for _, _, m in problems(twice))


def test_virtual_extension_needs_forward_and_no_credentials():
    text = GOOD.replace('forward: "+33612345678"', "password: abcdefghij")
    msgs = [m for _, _, m in problems(text)]
    assert any("does not register" in m for m in msgs) and any("needs 'forward'" in m for m in msgs)


@pytest.mark.parametrize("text, words", [
    ("", "empty"), ("companies: [", "not valid YAML"), ("companies: 3", "list of companies"),
    ("things: []", "unknown field"),
])
def test_broken_files(text, words):
    assert any(words in m for _, _, m in problems(text))


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "companies: *i\n"


@pytest.mark.parametrize("text, line, words", [
    ("companies: " + "[" * 5000 + "]" * 5000, 1, "nested deeper than 16 levels"),
    ("companies:\n" + "".join(" " * i + "-\n" for i in range(1, 2000)), 17, "nested deeper than 16 levels"),
    ("companies: " + "{a: " * 5000 + "1" + "}" * 5000, 1, "nested deeper than 16 levels"),
    (LAUGHS, 2, "aliases (*name) are not allowed"),
    ("companies:\n  - &c {id: acme, name: A, domain: a.test}\n  - *c\n", 3, "aliases (*name) are not allowed"),
    ("companies: [" + ", ".join(["1"] * 100_001) + "]", 1, "more than 100000 values"),
    ("#" * (2 * 1024 * 1024 + 1), 1, "longer than 2097152 characters"),
    ("companies:\n- id: acme\n  name: A\n  domain: a.test\n  main_number: " + "1" * 5000, 5, "is not an E.164"),
    ("companies:\n- id: acme\n  name: A\n  domain: a.test\n  main_number: 2024-02-30", 5, "is not an E.164"),
])
def test_pathological_yaml_is_one_problem_with_its_line(text, line, words):
    """Deep nesting (PyYAML composes recursively), alias bombs, too many values, a huge file and scalars YAML
    types but cannot build (an int past Python's 4,300 digits, a date that does not exist): a problem with its
    line, never RecursionError or ValueError."""
    found = problems(text)
    assert any(ln == line and words in m for ln, _, m in found), found[:3]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_fails_cleanly(text):
    try:
        parse(text)
    except ProvisioningError as err:
        assert err.problems and all(p.line >= 1 for p in err.problems)


ROUTED = textwrap.dedent("""\
    companies:
      - id: acme
        name: Acme
        domain: acme.test
        receptionist: reception
        extensions:
          - {number: "2001", name: Alice, password: alice-secret-1}
          - {number: "2090", name: Night, type: virtual, forward: "06 98 76 54 32"}
        dids:
          - {number: "+33142685300", target: receptionist}
          - {number: "+33142685301", target: "2001", fallback: receptionist}
    trunks:
      - {name: primary, host: 127.0.0.2, priority: 1}
      - {name: sos, host: 127.0.0.5, port: 5070, transport: tcp, emergency: true, outbound: false}
    media_servers:
      - {name: reception, host: 127.0.0.3}
      - {name: announcer, host: 127.0.0.7, role: announcement}
    """)


def test_dids_trunks_media_servers_and_forward_in_e164():
    prov = parse(ROUTED)
    (acme,) = prov.companies
    assert [(d.number, d.target, d.fallback) for d in acme.dids] == [
        ("+33142685300", "receptionist", None), ("+33142685301", "2001", "receptionist")]
    assert acme.extensions[1].forward == "+33698765432"
    assert [(t.name, t.port, t.transport, t.emergency) for t in prov.trunks] == [
        ("primary", 5060, "udp", False), ("sos", 5070, "tcp", True)]
    assert [m.role for m in prov.media_servers] == ["receptionist", "announcement"]


@pytest.mark.parametrize("old, new, words", [
    ('forward: "06 98 76 54 32"', 'forward: "0899123456"', "cannot be forwarded to: Premium-rate"),
    ('forward: "06 98 76 54 32"', 'forward: "112"', "is emergency"),
    ('forward: "06 98 76 54 32"', 'forward: "2001"', "is internal"),
    ('forward: "06 98 76 54 32"', 'forward: "+33142685301"', "one of our own DIDs"),
    ('target: "2001"', 'target: "2999"', "neither an extension of this company nor 'receptionist'"),
    ("    receptionist: reception\n", "", "no 'receptionist' media server"),
    ("{name: reception, host: 127.0.0.3}", "{name: reception, host: 127.0.0.3, role: announcement}",
     "not a media server with role receptionist"),
    ("host: 127.0.0.2", "host: carrier.example", "not an IPv4 address"),
    ("transport: tcp", "transport: sctp", "expected one of udp, tcp"),
    ('{number: "+33142685300", target: receptionist}', '{number: "+33142685301", target: receptionist}',
     "already used at line"),
])
def test_routing_mistakes_are_refused_at_provisioning(old, new, words):
    assert old in ROUTED
    assert any(words in m for _, _, m in problems(ROUTED.replace(old, new))), problems(ROUTED.replace(old, new))


# -- sites: a building behind one NAT address ------------------------------------------------------------
SITES = textwrap.dedent("""\
    trunks:
      - {name: primary, host: 192.0.2.10}
    media_servers:
      - {name: announcer, host: 192.0.2.20, role: announcement}
    sites:
      - name: station-f
        cidrs: ["203.0.113.7/32", "2001:db8:7::/48"]
        companies: [acme, globex]
      - name: halle-2
        cidrs: [198.51.100.0/29, "203.0.113.9"]
    """)


def test_sites_parse_with_canonical_networks():
    prov = parse(SITES)
    assert [(s.name, s.cidrs, s.companies) for s in prov.sites] == [
        ("station-f", ("203.0.113.7/32", "2001:db8:7::/48"), ("acme", "globex")),
        ("halle-2", ("198.51.100.0/29", "203.0.113.9/32"), ())]
    assert parse(GOOD).sites is None  # no section: the stored sites stay as they are
    assert parse("sites: []\n").sites == ()  # an empty section removes them all


@pytest.mark.parametrize("old, new, line, path, words", [
    ("name: station-f", "name: Station F", 6, "sites[0].name", "not a site name"),
    ('"203.0.113.7/32"', '"203.0.113.7/24"', 7, "sites[0].cidrs[0]",
     "bits set after the prefix: write 203.0.113.0/24 (the network) or 203.0.113.7/32"),
    ('"203.0.113.7/32"', '"0.0.0.0/0"', 7, "sites[0].cidrs[0]", "too wide for a site (no wider than /8"),
    ('"203.0.113.7/32"', '"64.0.0.0/2"', 7, "sites[0].cidrs[0]", "too wide"),
    ('"2001:db8:7::/48"', '"2000::/3"', 7, "sites[0].cidrs[1]", "no wider than /32 for IPv6"),
    ('"203.0.113.7/32"', '"station-f.example"', 7, "sites[0].cidrs[0]", "is not a network"),
    ('"203.0.113.7/32"', '"203.0.113.0/28"', 10, "sites[1].cidrs[1]",
     "203.0.113.9/32 overlaps 203.0.113.0/28 of site 'station-f' (line 7)"),
    ('"203.0.113.7/32"', '"192.0.2.0/24"', 7, "sites[0].cidrs[0]", "holds primary (udp:192.0.2.10:5060)"),
    ('"203.0.113.7/32"', '"192.0.2.16/28"', 7, "sites[0].cidrs[0]", "holds announcer"),
    ("name: halle-2", "name: station-f", 9, "sites[1]", "site 'station-f' is already defined at line 6"),
    ("companies: [acme, globex]", "companies: [Acme]", 8, "sites[0].companies[0]", "not a company id"),
    ("companies: [acme, globex]", "compagnies: [acme]", 8, "sites[0].compagnies", "unknown field"),
    ('cidrs: [198.51.100.0/29, "203.0.113.9"]', "cidrs: []", 10, "sites[1].cidrs", "non-empty list"),
    ('cidrs: [198.51.100.0/29, "203.0.113.9"]', "cidrs: 198.51.100.0/29", 10, "sites[1].cidrs", "non-empty list"),
    ('    cidrs: [198.51.100.0/29, "203.0.113.9"]\n', "", 9, "sites[1]", "missing required field 'cidrs'"),
])
def test_each_bad_site_field_is_named_with_its_line(old, new, line, path, words):
    assert old in SITES
    found = problems(SITES.replace(old, new))
    assert any((ln, pa) == (line, path) and words in m for ln, pa, m in found), found


def test_a_site_cannot_hold_a_trunk_or_name_a_company_that_is_not_provisioned():
    from kemi.model import Trunk
    from kemi.provisioning import site_conflicts
    (station, halle) = parse(SITES).sites
    assert site_conflicts([station, halle], [Trunk("primary", "192.0.2.10")], {"acme", "globex"}) == []
    assert site_conflicts([halle], [Trunk("old", "198.51.100.3")], set()) == [
        "site halle-2: 198.51.100.0/29 holds old (udp:198.51.100.3:5060): trunks and media servers are never "
        "part of a site"]
    assert site_conflicts([station], [], {"acme"}) == ["site station-f: company 'globex' is not provisioned"]
