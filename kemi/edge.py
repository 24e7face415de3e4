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


# What nathelper's nat_uac_test calls private with nat_addr_mode 0 (kamailio.cfg): RFC 1918, RFC 6598
# (carrier-grade NAT) and RFC 7335's 192.0.0.0/29.
PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                       "100.64.0.0/10", "192.0.0.0/29"))


def is_private(host: str) -> bool:
    """An address a phone behind a NAT writes in its Contact, one of PRIVATE_NETS."""
    ip = _ip(host)
    return ip is not None and any(ipaddress.ip_address(ip) in net for net in PRIVATE_NETS)


def parse_socket(socket: str | None) -> Address | None:
    """Kamailio's proto:host:port (the {uri.tosocket} transformation of a URI Kamailio parsed, its
    port 5060 when the URI names none) -> Address; None when Kamailio could not parse the URI.
    Kamailio's own format, not a SIP header: the host is everything between the first and the
    last colon (an IPv6 reference keeps its brackets and colons)."""
    proto, _, rest = (socket or "").partition(":")
    host, _, port = rest.rpartition(":")
    if not proto or not host or not port.isdigit():
        return None
    return Address(_ip(host) or host.lower(), int(port), proto.lower())


def uri_of(where: Address) -> str:
    """A SIP URI naming that address (for is_myself, which parses URIs)."""
    host = f"[{where.host}]" if ":" in where.host else where.host
    return f"sip:{host}:{where.port};transport={where.transport}"


@dataclass(frozen=True)
class SavedContact:
    """One contact of a REGISTER as the registrar saved it, read back through Kamailio's own parser
    ($ulc after save: kemi.sip.shell.saved_contacts), never from the header text: what is judged
    is what lookup() will send to. index: its place in the $ulc profile (to remove it again)."""

    scheme: str        # {uri.scheme}: sip, sips (which asks for TLS whatever its transport says)
    socket: str        # {uri.tosocket} of the saved contact URI: proto:host:port
    maddr: str         # {uri.maddr}: "" when it has none
    expires_at: int    # the registrar's absolute expiry (unix seconds)
    index: int = 0


def saved_contact_refusal(saved: list[SavedContact], source: Address, behind_nat: bool = False) -> Reply | None:
    """Why the contacts a REGISTER just saved must be removed again (and the REGISTER refused), or None.

    A contact must be where the phone really is: the REGISTER's own source address, port and
    transport, as a literal IP address (a host name or a decimal number is resolved only when a
    call is sent: it could be anybody). Anything else would let a stolen or replayed registration
    point an extension's calls at a victim or a carrier. A contact with maddr is refused
    whatever it says: Kamailio sends to the URI's host and ignores maddr, other devices do not.

    behind_nat: nathelper found the REGISTER came through a NAT. Then a contact may name a private
    address on the same transport: the proxy saved the source address as that contact's
    "received" (fix_nated_register) and sends every request for it there; a private address
    reaches nobody from the proxy's side. A public address other than the source stays refused.

    Over TLS (source.transport "tls") a contact must ask for TLS (sips: or ;transport=tls): the
    phone is reached only through its connection (its "received"), whatever the contact names,
    and must not take the phone's answer for a plain-text registration."""
    for contact in saved:
        where = parse_socket(contact.socket)
        if where is None or contact.scheme not in ("sip", "sips"):
            return replies.UNREADABLE_CONTACT
        if contact.scheme == "sips":
            where = Address(where.host, where.port, "tls")
        if source.transport == "tls":
            if where.transport != "tls":
                return replies.CONTACT_NOT_TLS
            continue
        if contact.maddr:
            return replies.CONTACT_NOT_SOURCE
        if where != source and not (behind_nat and is_private(where.host) and where.transport == source.transport):
            return replies.CONTACT_NOT_SOURCE
    return None


def registration_seconds(saved: list[SavedContact], now: int) -> int:
    """How long the REGISTER's contacts stay saved, as the registrar itself computed it (its
    ;expires, Expires header, default and bounds): the longest of them; 0 when it saved none (a
    removal: Expires 0, `*`)."""
    return max((max(contact.expires_at - now, 0) for contact in saved), default=0)


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
def unsafe_target(socket: str | None, peers: frozenset[tuple[str, int]] | None) -> str | None:
    """Why the proxy must not send a call to this registered contact, or None. socket: where
    Kamailio's lookup points the branch ({uri.tosocket} of its destination, else its URI).

    A contact on a trunk's or a media server's host (any port: another service of that host
    trusts the proxy's address too) would make that trusted peer receive calls it never asked
    for. The check at REGISTER already refuses them; this one, at the moment of ringing, catches
    entries saved before a peer was provisioned at that address. It compares what Kamailio
    parsed; a host name or a number that resolves to a peer is stopped where it is really sent
    (kamailio.cfg, onsend_route). peers None: not known (the store is down), not checked."""
    where = parse_socket(socket)
    if where is None:
        return "an unreadable address"
    if peers is not None and where.host in {host for host, _ in peers}:
        return "a trusted peer's address"
    return None


# -- a site of several proxies (kemi.sip.site) ----------------------------------------------------
def own_path(socket: Address, source: Address) -> str:
    """The Path header value this proxy saves with a phone's contacts (RFC 3327): the socket the phone
    reached, loose-routing, and where the phone really is, in the path module's `received` format
    (a SIP URI whose ;transport is escaped), which its use_received reads back at loose_route."""
    transport = "" if socket.transport == "udp" else f";transport={socket.transport}"
    received = f"sip:{uri_host(source.host)}:{source.port}" + \
        ("" if source.transport == "udp" else f"%3Btransport%3D{source.transport}")
    return f"<sip:{uri_host(socket.host)}:{socket.port}{transport};lr;received={received}>"


def uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def sibling_route_refusal(own: list[str], beyond: list[str]) -> str | None:
    """Why an initial request from a sibling proxy is not one this proxy relays: it must be routed by one
    Path entry of ours carrying where the phone is (received), and nothing beyond it. None: relay it."""
    if len(own) != 1 or beyond:
        return f"routed by {len(own)} entries of ours and {len(beyond)} beyond"
    if not re.search(r";\s*received=", own[0], re.IGNORECASE):
        return "its Route of ours names no phone (no received parameter)"
    return None
