"""Decisions at the edge: which requests are let in, and where a registration may point.

Pure (no KSR, no Redis): kemi.sip.gate and kemi.sip.phones feed these with what a request
says and where it came from, and carry out the answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from kemi import replies
from kemi.replies import Reply
from kemi.routing import split_uri, uri_key, uri_transport

# A (source IP, user) pair is blocked after AUTH_FAIL_MAX failures; a source IP, for every user,
# after this many times that: a guesser who rotates user names (one try each) never reaches the
# per-user limit, while a building behind one address has few phones that fail at once.
IP_FAIL_FACTOR = 10


def scanner(user_agent: str | None, agents: tuple[str, ...]) -> str | None:
    """The SCANNER_USER_AGENTS entry a User-Agent contains (case-insensitively), or None."""
    if not user_agent:
        return None
    lowered = user_agent.lower()
    return next((agent for agent in agents if agent in lowered), None)


def auth_keys(ip: str, port: int, user: str, domain: str, site: bool = False) -> tuple[str, str]:
    """htable keys of the auth-failure counters: (this address and user, this address for any user).

    A declared site's address carries a whole building, each phone on its own port: there the
    counter "for any user" is per address and port (one phone guessing with made-up users blocks
    its own port, not the building); the per-user counter stays per address, as anywhere."""
    return f"{ip}|{user}@{domain}", (f"{ip}:{port}|*" if site else f"{ip}|*")


# -- declared sites (a building behind one NAT address) ------------------------------------------------
# What the ipban table holds for an address (kemi.sip.gate): the address is banned, or it is a
# declared site's address with at least one phone banned (its port or user is in the siteban table).
ADDRESS_BANNED = "1"
SITE_MARK = "2"


def site_phone_key(ip: str, port: int) -> str:
    """The siteflood/siteban key of one phone of a site, by where it sends from."""
    return f"{ip}:{port}"


def site_user_key(ip: str, user: str, domain: str) -> str:
    """The siteflood/siteban key of one authenticated user at a site's address."""
    return f"{ip}|{user}@{domain.lower()}"


class Sites:
    """Which declared site an address belongs to: one dict lookup per prefix length in use, so
    the gate's cost does not grow with the number of sites."""

    def __init__(self, sites=()):
        by_length: dict[tuple[int, int], dict[int, str]] = {}
        for site in sites:
            for cidr in site.cidrs:
                net = ipaddress.ip_network(cidr)
                shift = net.max_prefixlen - net.prefixlen
                by_length.setdefault((net.version, net.prefixlen), {})[int(net.network_address) >> shift] = site.name
        # longest prefix first (provisioning refuses overlaps, so at most one can match anyway)
        self._tables = [(version, length, by_length[(version, length)])
                        for version, length in sorted(by_length, key=lambda k: -k[1])]
        self._memo: dict[str, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self._tables)

    MEMO = 10_000  # addresses remembered (parsing one costs more than the lookup itself)

    def site_of(self, ip: str) -> str | None:
        """The name of the site whose CIDRs hold this address, or None."""
        if not self._tables:
            return None
        if ip in self._memo:
            return self._memo[ip]
        if len(self._memo) >= self.MEMO:
            self._memo.clear()
        self._memo[ip] = found = self._find(ip)
        return found

    def _find(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        value, bits = int(address), address.max_prefixlen
        for version, length, table in self._tables:
            if version == address.version:
                name = table.get(value >> (bits - length))
                if name is not None:
                    return name
        return None


# -- contacts of a REGISTER --------------------------------------------------------------------------
STAR = "*"
# The registrar's default_expires, min_expires and max_expires (kamailio.cfg; a unit test keeps
# them equal): how long a saved contact lasts, for the record of where phones register from.
REGISTRAR_EXPIRES = (600, 60, 3600)
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Address:
    """Where a SIP URI sends to, as the proxy compares it with a request's source."""

    host: str      # an IP address in its canonical form, or the host as written when it is a name
    port: int
    transport: str

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def source_address(ip: str, port: int, transport: str) -> Address:
    """A request's source ($si, $sp, $pr) in the form address() gives a URI."""
    return Address(_ip(ip) or ip, int(port), transport.lower())


def address(uri: str | None) -> Address | None:
    """sip:user@host:port;transport=x (in <> or not) -> Address; None when it is not a SIP URI."""
    parts = split_uri(uri)
    if parts is None:
        return None
    scheme, _, host, port, params = parts
    # maddr overrides the host as the place requests are sent (RFC 3261 19.1.1)
    maddr = re.search(r";\s*maddr=([^;>?\s]+)", params or "", re.I)
    if maddr:
        host = maddr.group(1)
    proto = uri_transport(scheme, params)
    number = int(port) if port else DEFAULT_PORTS.get(proto, 5060)
    if not 0 < number < 65536:
        return None
    return Address(_ip(host) or host.lower(), number, proto)


def split_contacts(text: str) -> list[str]:
    """A Contact header value (several headers joined by commas) -> its contacts, as written.

    Commas inside quotes or <...> do not separate contacts. ValueError on unbalanced quotes or brackets."""
    parts, current, quoted, angled = [], [], False, False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"' and not angled:
            quoted = not quoted
        elif char == "<" and not quoted:
            angled = True
        elif char == ">" and not quoted:
            angled = False
        elif char == "," and not quoted and not angled:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quoted or angled:
        raise ValueError("unbalanced quotes or brackets")
    parts.append("".join(current).strip())
    return [part for part in parts if part]


# What nathelper's nat_uac_test calls private with nat_addr_mode 0 (kamailio.cfg): RFC 1918, RFC 6598
# (carrier-grade NAT) and RFC 7335's 192.0.0.0/29.
PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                       "100.64.0.0/10", "192.0.0.0/29"))


def is_private(host: str) -> bool:
    """An address a phone behind a NAT writes in its Contact, one of PRIVATE_NETS."""
    ip = _ip(host)
    return ip is not None and any(ipaddress.ip_address(ip) in net for net in PRIVATE_NETS)


def contact_refusal(contacts: str | None, expires: str | None, source: Address,
                    behind_nat: bool = False) -> Reply | None:
    """Why a REGISTER's Contacts may not be saved, or None.

    A contact must be where the phone really is: the REGISTER's own source address, port and
    transport. Anything else would let a stolen or replayed registration point an extension's
    calls at a victim or a carrier. `*` (remove every contact) only with Expires: 0 (RFC 3261
    10.3). No Contact at all is a query of the bindings, which changes nothing.

    behind_nat: nathelper found the REGISTER came through a NAT. Then a contact may name a private
    address on the same transport: the proxy saves the source address as that contact's
    "received" (fix_nated_register) and sends every request for it there, so calls still go
    where the phone really is; a private address reaches nobody from the proxy's side. A public
    address other than the source stays refused: that would be somebody else."""
    named = contact_addresses(contacts, expires)
    if isinstance(named, Reply):
        return named
    for where in named:
        if where != source and not (behind_nat and is_private(where.host) and where.transport == source.transport):
            return replies.CONTACT_NOT_SOURCE
    return None


def tls_contact_refusal(contacts: str | None, expires: str | None) -> Reply | None:
    """Why the Contacts of a REGISTER that came over TLS may not be saved, or None.

    A phone on TLS is reached only through its TLS connection: the registrar saves the
    connection's source as each contact's "received" and every request for the phone goes
    there. Phones write their listening address in the Contact (an address behind a NAT, a port
    nobody can connect to from outside), not the connection's source port, and the Contact is
    the Request-URI they expect back: it is kept as written, and its host and port never decide
    where anything is sent. It must ask for TLS (sips: or ;transport=tls), so that nobody takes
    the phone's answer for a plain-text registration. `*` and a query as in contact_refusal."""
    named = contact_addresses(contacts, expires)
    if isinstance(named, Reply):
        return named
    return replies.CONTACT_NOT_TLS if any(where.transport != "tls" for where in named) else None


def contact_addresses(contacts: str | None, expires: str | None) -> list[Address] | Reply:
    """The addresses a REGISTER's Contacts name, for the rules above to judge; [] when there is
    nothing to judge (a query of the bindings, `*` with Expires: 0); the answer when the Contacts
    cannot be saved whatever they name (unreadable, `*` without Expires: 0, RFC 3261 10.3)."""
    if contacts is None or not contacts.strip():
        return []
    try:
        items = split_contacts(contacts)
    except ValueError:
        return replies.UNREADABLE_CONTACT
    if STAR in items:
        return replies.STAR_NEEDS_EXPIRES_0 if items != [STAR] or (expires or "").strip() != "0" else []
    named = [address(item) for item in items]
    return replies.UNREADABLE_CONTACT if None in named else named


def registration_seconds(contacts: str | None, expires: str | None, default: int, low: int, high: int) -> int:
    """How long a REGISTER keeps its contacts, as the registrar computes it: each contact's
    ;expires, else the Expires header, else `default`; kept within low..high; 0 removes. The
    longest of the contacts counts (they all name the same address)."""
    header = _seconds(expires)
    longest = None
    for item in split_contacts(contacts or "") if contacts and contacts.strip() != STAR else []:
        param = re.search(r";\s*expires\s*=\s*([0-9]+)", item.rsplit(">", 1)[-1], re.I)
        value = int(param.group(1)) if param else header
        value = default if value is None else value
        longest = value if longest is None else max(longest, value)
    if longest is None:
        longest = default if header is None else header
    return 0 if longest == 0 else min(max(longest, low), high)


def _seconds(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def next_hop(contact: str | None, source: str | None) -> str:
    """Where a request the proxy itself sends to a dialog party must go: "" (its Contact, as
    usual) when the Contact is where that party's messages came from (source: transport:ip:port,
    kemi.sip.shell.Var.CALLER), else that source. A phone behind a NAT has a private Contact only
    its own router can reach; its NAT binding is where it sent from."""
    if not source or source.count(":") < 2:
        return ""
    transport, rest = source.split(":", 1)
    ip, port = rest.rsplit(":", 1)
    if not port.isdigit() or address(contact) == source_address(ip, int(port), transport):
        return ""
    return f"sip:{ip}:{port};transport={transport}"


# -- digest ------------------------------------------------------------------------------------------
def digest_uri_matches(digest_uri: str | None, ruri: str | None) -> bool:
    """Whether credentials were computed for this request's target: scheme, user and host of the
    digest `uri` equal the Request-URI's (port and parameters may differ: phones drop ;user=phone).
    A captured answer replayed for another number fails here even when the nonce checks pass."""
    want, got = uri_key(digest_uri), uri_key(ruri)
    return want is not None and got is not None and want[:3] == got[:3]


def names_a_host_only(uri: str | None) -> bool:
    """A SIP URI without a user part (sip:host[:port]). SIPp, and a few phones, put the proxy's
    own address in the digest `uri` instead of the Request-URI; such credentials name no number,
    so there is nothing to compare, and kemi.sip.phones accepts them when the host is this proxy."""
    key = uri_key(uri)
    return key is not None and key[1] == ""


# -- where an extension may ring ---------------------------------------------------------------------
def unsafe_target(uri: str | None, peers: frozenset[tuple[str, int]] | None) -> str | None:
    """Why the proxy must not send a call to this registered contact, or None.

    A contact that names a trunk or a media server would make that trusted peer receive calls it
    never asked for (a carrier dialling out for the attacker); the check at REGISTER already
    refuses them, this is the check at the moment of ringing, for entries saved before a peer was
    provisioned at that address. peers None: not known (the store is down), not checked."""
    where = address(uri)
    if where is None:
        return "an unreadable address"
    if peers is not None and (where.host, where.port) in peers:
        return "a trusted peer's address"
    return None
