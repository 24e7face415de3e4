"""The ops provisioning file: YAML in, validated companies out, or every error with its line.

Pure: parsing and validation only. Applying the result to Redis is the store's
job (kemi.store.Directory.apply), done in one transaction so that a file with
an error changes nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

import yaml

from kemi import numbering
from kemi.model import (
    COMPANY_ID_RE,
    MEDIA_ROLES,
    RECEPTIONIST,
    Did,
    MediaServer,
    DEFAULT_RING_TIMEOUT,
    DOMAIN_RE,
    E164_RE,
    EXTENSION_RE,
    EXTENSION_TYPES,
    GREETING_RE,
    LANGUAGES,
    DISPLAY_NAME_RE,
    HA1_RE,
    LOCATION_RE,
    Company,
    Extension,
    IPV4_RE,
    TRANSPORTS,
    Site,
    Trunk,
    digest_ha1,
)


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path}: {self.message}"


class ProvisioningError(Exception):
    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}:{p}" for p in problems))


@dataclass(frozen=True)
class Provisioning:
    companies: tuple[Company, ...]
    trunks: tuple[Trunk, ...] | None = None  # None: the file does not manage trunks
    media_servers: tuple[MediaServer, ...] | None = None  # None: the file does not manage them
    sites: tuple[Site, ...] | None = None  # None: the file does not manage them


class _Doc:
    """YAML node tree with the line of every value, so errors can name it."""

    def __init__(self, node: yaml.Node, path: str):
        self.node = node
        self.path = path

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def mapping(self) -> dict[str, "_Doc"] | None:
        if not isinstance(self.node, yaml.MappingNode):
            return None
        out = {}
        for key, value in self.node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            out[name] = _Doc(value, f"{self.path}.{name}" if self.path else name)
        return out

    def sequence(self) -> list["_Doc"] | None:
        if not isinstance(self.node, yaml.SequenceNode):
            return None
        return [_Doc(item, f"{self.path}[{i}]") for i, item in enumerate(self.node.value)]

    def scalar(self) -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            return _NOT_SCALAR
        return _construct(self.node)


_NOT_SCALAR = object()


def _construct(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except ValueError:
        # A scalar YAML resolves to a type it then cannot build (an int of more than 4,300 digits,
        # the date 2024-02-30): the text as written, which the field's own check then refuses.
        return node.value
    finally:
        loader.dispose()


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, doc: _Doc, message: str) -> None:
        self.problems.append(Problem(doc.path, doc.line, message))

    def fields(self, doc: _Doc, allowed: set[str], required: set[str]) -> dict[str, _Doc] | None:
        mapping = doc.mapping()
        if mapping is None:
            self.fail(doc, "expected a mapping of fields")
            return None
        for name, value in mapping.items():
            if name not in allowed:
                self.fail(value, f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for name in sorted(required - mapping.keys()):
            self.fail(doc, f"missing required field '{name}'")
        return mapping

    def string(self, doc: _Doc | None, pattern=None, hint: str = "", optional=False) -> str | None:
        if doc is None:
            return None
        value = doc.scalar()
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and pattern is not None:
            value = str(value)  # unquoted 2001 in YAML is an int; the digits are what was meant
        if not isinstance(value, str) or not value.strip():
            self.fail(doc, f"expected a non-empty string{': ' + hint if hint else ''}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(doc, f"{value!r} is not {hint}")
            return None
        return value

    def integer(self, doc: _Doc | None, low: int, high: int, default: int) -> int:
        if doc is None:
            return default
        value = doc.scalar()
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(doc, f"expected a whole number from {low} to {high}")
            return default
        return value

    def boolean(self, doc: _Doc | None, default: bool) -> bool:
        if doc is None:
            return default
        value = doc.scalar()
        if not isinstance(value, bool):
            self.fail(doc, "expected true or false")
            return default
        return value


MEDIA_FIELDS = {"name", "host", "port", "transport", "role"}
DID_FIELDS = {"number", "target", "fallback"}
TRUNK_FIELDS = {"name", "host", "port", "transport", "priority", "emergency", "outbound"}
COMPANY_FIELDS = {"id", "name", "domain", "main_number", "location", "allow_special", "receptionist",
                  "extensions", "dids", "language", "greeting", "operator"}
EXTENSION_FIELDS = {"number", "name", "password", "ha1", "did", "type", "forward", "ring_timeout"}
SITE_FIELDS = {"name", "cidrs", "companies"}
# The widest network a site may declare: a building has a few public addresses, a company with
# several buildings a few small blocks; wider than this is a typo (0.0.0.0/0) or a provider's
# whole range, and would exempt strangers from the per-address flood ban (docs/deploying-behind-nat.md).
SITE_MIN_PREFIX = {4: 8, 6: 32}


# A provisioning file's bounds: far above any real one (a company is a few hundred bytes, its
# deepest value companies[i].extensions[j].field is 4 levels down), low enough that a hostile or
# broken file is refused in bounded time and memory. PyYAML composes nodes recursively (a few
# thousand "[" end in RecursionError) and expands no alias itself, but every alias is one more copy
# of a subtree for the checks to walk: 9 nested lists of ten aliases are a billion values
# ("billion laughs"). Nothing in a provisioning file needs one, so aliases are refused outright.
# MAX_NODES bounds composing and checking (a file of a million "1," took 9 minutes and 2 GB
# without it); a real company with 20 extensions is about 150 nodes.
MAX_FILE_BYTES = 2 * 1024 * 1024  # parse() counts characters: a file has no more of them than bytes
MAX_DEPTH = 16
MAX_NODES = 100_000


class _Refused(yaml.MarkedYAMLError):
    """The file is YAML, but not one this parser agrees to compose."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused(problem="aliases (*name) are not allowed: write the value out",
                           problem_mark=self.peek_event().start_mark)
        if self._depth >= MAX_DEPTH:
            raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels",
                           problem_mark=self.peek_event().start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(problem=f"more than {MAX_NODES} values",
                           problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse(text: str, source: str = "<provisioning>") -> Provisioning:
    """Validate a whole provisioning file; raise ProvisioningError listing every problem."""
    if len(text) > MAX_FILE_BYTES:
        raise ProvisioningError(source, [Problem("(file)", 1, f"longer than {MAX_FILE_BYTES} characters")])
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except _Refused as exc:
        raise ProvisioningError(source, [Problem("(file)", exc.problem_mark.line + 1, exc.problem)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ProvisioningError(source, [Problem("(file)", line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise ProvisioningError(source, [Problem("(file)", 1, "the file is empty")])
    check = _Checker()
    top = check.fields(_Doc(root, ""), {"companies", "trunks", "media_servers", "sites"}, set())
    companies: list[Company] = []
    trunks = media = sites = None
    if top and "trunks" in top:
        trunks = _trunks(check, top["trunks"])
    if top and "media_servers" in top:
        media = _media_servers(check, top["media_servers"])
    if top and "sites" in top:
        sites = _sites(check, top["sites"], tuple(trunks or ()) + tuple(media or ()))
    if top and "companies" in top:
        items = top["companies"].sequence()
        if items is None:
            check.fail(top["companies"], "expected a list of companies")
        else:
            parsed = [(_company(check, item), item) for item in items]
            valid = [(c, d) for c, d in parsed if c is not None]
            _unique(check, valid)
            _check_dids(check, valid, media)
            companies = [replace(c, dids=tuple(d for d, _ in c.dids)) for c, _ in valid]
    if check.problems:
        raise ProvisioningError(source, check.problems)
    return Provisioning(tuple(companies), trunks, media, sites)


def _peers(check: _Checker, doc: _Doc, kind: str, allowed: set[str], build) -> tuple:
    """Trunks and media servers: named SIP peers at an IPv4 address."""
    items = doc.sequence()
    if items is None:
        check.fail(doc, f"expected a list of {kind}s")
        return ()
    out = []
    seen: dict[str, int] = {}
    for item in items:
        f = check.fields(item, allowed, {"name", "host"})
        if f is None:
            continue
        before = len(check.problems)
        transport = check.string(f.get("transport"), optional=True) or "udp"
        if transport not in TRANSPORTS:
            check.fail(f["transport"], f"expected one of {', '.join(TRANSPORTS)}")
        peer = build(f, dict(
            name=check.string(f.get("name"), COMPANY_ID_RE, f"a {kind} name (lower-case letters, digits, '-')") or "",
            host=check.string(f.get("host"), IPV4_RE, "an IPv4 address") or "",
            port=check.integer(f.get("port"), 1, 65535, 5060),
            transport=transport))
        if peer.name in seen:
            check.fail(item, f"{kind} {peer.name!r} is already defined at line {seen[peer.name]}")
        seen[peer.name] = item.line
        if len(check.problems) == before:
            out.append(peer)
    return tuple(out)


def _trunks(check: _Checker, doc: _Doc) -> tuple[Trunk, ...]:
    return _peers(check, doc, "trunk", TRUNK_FIELDS, lambda f, common: Trunk(
        **common,
        priority=check.integer(f.get("priority"), 1, 1000, 1),
        emergency=check.boolean(f.get("emergency"), False),
        outbound=check.boolean(f.get("outbound"), True)))


def _media_servers(check: _Checker, doc: _Doc) -> tuple[MediaServer, ...]:
    def build(f, common):
        role = check.string(f.get("role"), optional=True) or "receptionist"
        if role not in MEDIA_ROLES:
            check.fail(f["role"], f"expected one of {', '.join(MEDIA_ROLES)}")
        return MediaServer(**common, role=role)
    return _peers(check, doc, "media server", MEDIA_FIELDS, build)


def _dids(check: _Checker, f: dict[str, _Doc], co: str, numbers: set[str]) -> tuple[Did, ...]:
    if "dids" not in f:
        return ()
    items = f["dids"].sequence()
    if items is None:
        check.fail(f["dids"], "expected a list of DIDs")
        return ()
    out = []
    for item in items:
        d = check.fields(item, DID_FIELDS, {"number", "target"})
        if d is None:
            continue
        before = len(check.problems)
        number = check.string(d.get("number"), E164_RE, "an E.164 number like +33142685301") or ""
        target = check.string(d.get("target"), hint="an extension number 2XXX or 'receptionist'") or ""
        if target and target != RECEPTIONIST and target not in numbers:
            check.fail(d["target"], f"{target!r} is neither an extension of this company nor 'receptionist'")
        fallback = check.string(d.get("fallback"), optional=True)
        if fallback not in (None, RECEPTIONIST):
            check.fail(d["fallback"], "expected 'receptionist' (or leave it out)")
        if len(check.problems) == before:
            out.append((Did(number, co, target, fallback), item))
    return tuple(out)


def _check_dids(check: _Checker, companies: list[tuple[Company, _Doc]], media) -> None:
    """DIDs are unique, a receptionist target needs a receptionist, forwards never loop into our DIDs."""
    first: dict[str, _Doc] = {}
    for company, _ in companies:
        for did, doc in company.dids:
            if did.number in first:
                check.fail(doc, f"DID {did.number} is already used at line {first[did.number].line}")
            first.setdefault(did.number, doc)
            if RECEPTIONIST in (did.target, did.fallback) and not company.receptionist:
                check.fail(doc, "routes to the receptionist, but the company has no 'receptionist' media server")
    for company, doc in companies:
        if company.receptionist and media is not None and not any(
                m.name == company.receptionist and m.role == "receptionist" for m in media):
            check.fail(doc, f"receptionist {company.receptionist!r} is not a media server with role receptionist")
        for ext in company.extensions:
            if ext.forward in first:
                check.fail(doc, f"extension {ext.number} forwards to {ext.forward}, one of our own DIDs: "
                                "that would loop; forward to the extension instead")


def _company(check: _Checker, doc: _Doc) -> Company | None:
    f = check.fields(doc, COMPANY_FIELDS, {"id", "name", "domain"})
    if f is None:
        return None
    before = len(check.problems)
    domain = check.string(f.get("domain"), DOMAIN_RE, "a lower-case SIP domain like acme.example.net")
    allow_special = check.boolean(f.get("allow_special"), False)
    extensions: list[Extension] = []
    ext_docs = f["extensions"].sequence() if "extensions" in f else []
    if ext_docs is None:
        check.fail(f["extensions"], "expected a list of extensions")
        ext_docs = []
    seen: dict[str, int] = {}
    for ext_doc in ext_docs:
        ext = _extension(check, ext_doc, domain or "", allow_special)
        if ext is None:
            continue
        if ext.number in seen:
            check.fail(ext_doc, f"extension {ext.number} is already defined at line {seen[ext.number]}")
        seen[ext.number] = ext_doc.line
        extensions.append(ext)
    co = check.string(f.get("id"), COMPANY_ID_RE, "a company id (lower-case letters, digits, '-')") or ""
    language = check.string(f.get("language"), optional=True) or "fr"
    if language not in LANGUAGES:
        check.fail(f["language"], f"expected one of {', '.join(LANGUAGES)}")
    operator = check.string(f.get("operator"), EXTENSION_RE, "an extension number 2XXX", optional=True)
    if operator is not None and operator not in seen:
        check.fail(f["operator"], f"{operator!r} is not an extension of this company: the receptionist's 0 rings it")
    company = Company(
        id=co,
        name=check.string(f.get("name")) or "",
        domain=domain or "",
        main_number=check.string(f.get("main_number"), E164_RE, "an E.164 number like +33142685300", optional=True),
        location=check.string(f.get("location"), LOCATION_RE, "a one-line address (no control characters)",
                              optional=True) or "",
        allow_special=allow_special,
        receptionist=check.string(f.get("receptionist"), COMPANY_ID_RE, "a media server name", optional=True),
        extensions=tuple(extensions),
        dids=_dids(check, f, co, set(seen)),  # (Did, doc) pairs until _check_dids has used the lines
        language=language,
        greeting=check.string(f.get("greeting"), GREETING_RE,
                              "a one-line greeting of at most 400 characters (no control characters or braces)",
                              optional=True),
        operator=operator,
    )
    return company if len(check.problems) == before else None


def _extension(check: _Checker, doc: _Doc, realm: str, allow_special: bool = False) -> Extension | None:
    f = check.fields(doc, EXTENSION_FIELDS, {"number", "name"})
    if f is None:
        return None
    before = len(check.problems)
    number = check.string(f.get("number"), EXTENSION_RE, "an extension number 2XXX") or ""
    kind = check.string(f.get("type"), optional=True) or "phone"
    if kind not in EXTENSION_TYPES:
        check.fail(f["type"], f"expected one of {', '.join(EXTENSION_TYPES)}")
    ha1 = None
    forward = check.string(f.get("forward"), optional=True)
    if kind == "phone":
        ha1 = _credentials(check, doc, f, number, realm)
        if "forward" in f:
            check.fail(f["forward"], "only a virtual extension has a forwarding number")
    elif kind == "virtual":
        for name in ("password", "ha1"):
            if name in f:
                check.fail(f[name], "a virtual extension does not register: remove its credentials")
        if forward is None:
            check.fail(doc, "a virtual extension needs 'forward', the number calls are forwarded to")
        else:
            forward = _forward_number(check, f["forward"], forward, allow_special)
    ext = Extension(
        number=number,
        name=check.string(f.get("name"), DISPLAY_NAME_RE, "a display name (no quotes, at most 64 characters)") or "",
        ha1=ha1,
        did=check.string(f.get("did"), E164_RE, "an E.164 number like +33142685301", optional=True),
        type=kind,
        forward=forward,
        ring_timeout=check.integer(f.get("ring_timeout"), 5, 300, DEFAULT_RING_TIMEOUT),
    )
    return ext if len(check.problems) == before else None


def _forward_number(check: _Checker, doc: _Doc, dialled: str, allow_special: bool) -> str | None:
    """A forwarding number is refused when provisioned, not at call time, if the country rules block it."""
    decision = numbering.classify(dialled, numbering.Policy(allow_special))
    if decision.category in ("internal", "emergency"):
        check.fail(doc, f"{dialled!r} is {decision.category}: a virtual extension forwards to an external number")
    elif decision.category == "invalid" or decision.billing == "blocked":
        check.fail(doc, f"{dialled!r} cannot be forwarded to: {decision.reason}")
    elif decision.e164 is None:
        check.fail(doc, f"{dialled!r} has no E.164 form: forward to a full number")
    else:
        return decision.e164
    return None


def _credentials(check: _Checker, doc: _Doc, f: dict[str, _Doc], number: str, realm: str) -> str | None:
    if "password" in f and "ha1" in f:
        check.fail(f["ha1"], "give either 'password' or 'ha1', not both")
        return None
    if "ha1" in f:
        return check.string(f["ha1"], HA1_RE, "an MD5 digest HA1 (32 lower-case hex digits)")
    if "password" not in f:
        check.fail(doc, "a phone extension needs 'password' (or its digest 'ha1')")
        return None
    password = check.string(f["password"])
    if password is None:
        return None
    if len(password) < 8:
        check.fail(f["password"], "too short: at least 8 characters")
        return None
    return digest_ha1(number, realm, password)


def _unique(check: _Checker, companies: list[tuple[Company, _Doc]]) -> None:
    for attr in ("id", "domain"):
        first: dict[str, _Doc] = {}
        for company, doc in companies:
            value = getattr(company, attr)
            if value in first:
                check.fail(doc, f"{attr} {value!r} is already used at line {first[value].line}")
            else:
                first[value] = doc


def _sites(check: _Checker, doc: _Doc, peers) -> tuple[Site, ...]:
    """Declared sites: a name, public networks that overlap no other site's, hold no trunk or
    media server of the file (kemi.store.apply checks those already provisioned), and the
    member companies' ids."""
    items = doc.sequence()
    if items is None:
        check.fail(doc, "expected a list of sites")
        return ()
    out = []
    names: dict[str, int] = {}
    taken: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int]] = []
    for item in items:
        f = check.fields(item, SITE_FIELDS, {"name", "cidrs"})
        if f is None:
            continue
        before = len(check.problems)
        name = check.string(f.get("name"), COMPANY_ID_RE, "a site name (lower-case letters, digits, '-')") or ""
        if name in names:
            check.fail(item, f"site {name!r} is already defined at line {names[name]}")
        names.setdefault(name, item.line)
        nets = []
        cidr_docs = f["cidrs"].sequence() if "cidrs" in f else []
        if cidr_docs is None or (not cidr_docs and "cidrs" in f):
            check.fail(f["cidrs"], "expected a non-empty list of networks like 203.0.113.7/32")
            cidr_docs = []
        for cidr_doc in cidr_docs:
            net = _site_network(check, cidr_doc)
            if net is None:
                continue
            for other, owner, line in taken:
                if net.overlaps(other):
                    check.fail(cidr_doc, f"{net} overlaps {other} of site {owner!r} (line {line}): "
                                         "an address belongs to one site")
            for peer in peers:
                if ipaddress.ip_address(peer.host) in net:
                    check.fail(cidr_doc, f"{net} holds {peer.label}: trunks and media servers are never "
                                         "part of a site")
            taken.append((net, name, cidr_doc.line))
            nets.append(str(net))
        members = []
        member_docs = f["companies"].sequence() if "companies" in f else []
        if member_docs is None:
            check.fail(f["companies"], "expected a list of company ids")
            member_docs = []
        for member_doc in member_docs:
            co = check.string(member_doc, COMPANY_ID_RE, "a company id (lower-case letters, digits, '-')")
            if co is not None:
                members.append(co)
        if len(check.problems) == before:
            out.append(Site(name, tuple(nets), tuple(members)))
    return tuple(out)


def _site_network(check: _Checker, doc: _Doc):
    text = check.string(doc, hint="a network like 203.0.113.7/32 or 2001:db8:7::/48")
    if text is None:
        return None
    text = text.strip()
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_interface(text)
        except ValueError:
            check.fail(doc, f"{text!r} is not a network like 203.0.113.7/32 or 2001:db8:7::/48")
            return None
        check.fail(doc, f"{text!r} has bits set after the prefix: write {loose.network} (the network) or "
                        f"{loose.ip}/{loose.max_prefixlen} (the one address)")
        return None
    widest = SITE_MIN_PREFIX[net.version]
    if net.prefixlen < widest:
        check.fail(doc, f"{net} is too wide for a site (no wider than /{widest} for IPv{net.version}): "
                        "declare the building's own public addresses")
        return None
    return net


def site_conflicts(sites, peers, companies: set[str]) -> list[str]:
    """What keeps these sites from being stored with these trunks and media servers (the file's or
    those already provisioned) and these companies: a peer inside a site's networks, a member
    company that is not provisioned. Empty when nothing does."""
    problems = []
    for site in sites:
        nets = [ipaddress.ip_network(cidr) for cidr in site.cidrs]
        for peer in peers:
            held = next((net for net in nets if ipaddress.ip_address(peer.host) in net), None)
            if held is not None:
                problems.append(f"site {site.name}: {held} holds {peer.label}: trunks and media servers "
                                "are never part of a site")
        for co in site.companies:
            if co not in companies:
                problems.append(f"site {site.name}: company {co!r} is not provisioned")
    return problems
