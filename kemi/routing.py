"""Routing decisions for outgoing calls: pure functions from what is known to what to do.

No KSR, no Redis: kemi.sip feeds these with the numbering decision, the
company, the extension and the trunks, and carries out the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from kemi import replies
from kemi.model import EXTENSION_RE, HA1_RE, IPV4_RE, TRANSPORTS, Company, Extension, Peer, Trunk
from kemi.numbering import Decision
from kemi.replies import Reply

# Trunk answers that mean "try the next trunk": the trunk (not the callee) failed.
FAILOVER_CODES = frozenset({408, 500, 502, 503, 504})


def trunk_failed(code: int, replied: bool) -> bool:
    """Whether a trunk's final answer means the trunk failed, so the next one is tried.

    A 408 is the trunk's silence only when it sent nothing at all; after a 100/180
    it is the callee who did not answer, and ringing elsewhere would be wrong.
    """
    if code == 408:
        return not replied
    return code in FAILOVER_CODES


def trunk_outcome(trunk: str, code: int, replied: bool, waited_ms: int) -> str:
    """What a trunk did with a call, for the log: a 408 that tm made up because the trunk sent
    nothing is the trunk's silence, not its answer."""
    if code == 408 and not replied:
        return f"no reply from {trunk} in {waited_ms} ms"
    return f"{trunk} answered {code}"


def refusal(decision: Decision) -> Reply | None:
    """The answer for a call the numbering plan does not let through, or None to route it."""
    if decision.category == "invalid":
        return replies.ADDRESS_INCOMPLETE if decision.refuse_code == 484 else Reply(404, decision.reason)
    if decision.billing == "blocked":
        return Reply(403, decision.reason)
    return None


def prepaid_refusal(code: str) -> Reply:
    """The answer when the Prepaid Account does not pay for a call (kemi.store.prepaid error codes)."""
    if code == "INSUFFICIENT_FUNDS":
        return replies.INSUFFICIENT_FUNDS
    if code == "NO_RATE":
        return replies.NO_RATE
    return replies.PREPAID_NOT_AVAILABLE  # NOT_ACTIVE, and anything unexpected: never connect unpaid


def rating_number(decision: Decision) -> str:
    """The number a prepaid call is rated by: its E.164 form, or for a French short
    number without one (118XYZ directory, 3BPQ) '+33' and the digits, so ops set
    rates such as '+33118' for every directory service."""
    return decision.e164 or f"+33{decision.dialled}"


def balance_headers(available: int, currency: str) -> list[str]:
    """What the announcement server speaks (docs/media-server-contract.md)."""
    return [f"X-Balance: {available}", f"X-Currency: {currency}"]


def trunks_for(trunks: tuple[Trunk, ...], emergency: bool) -> list[Trunk]:
    """Trunks in the order to try them (they come sorted by priority)."""
    return [t for t in trunks if (t.emergency if emergency else t.outbound)]


def caller_number(company: Company | None, ext: Extension | None) -> str | None:
    """The number shown to the called party: the extension's DID, else the company's main number."""
    if ext is not None and ext.did:
        return ext.did
    return company.main_number if company is not None else None


def pai_header(number: str | None, name: str | None, host: str) -> str | None:
    if not number:
        return None
    display = f'"{name}" ' if name else ""
    return f"P-Asserted-Identity: {display}<sip:{number}@{host};user=phone>"


def emergency_headers(callback: str | None, location: str | None) -> list[str]:
    """What the emergency trunk reads: a callable-back number and the company's civic address."""
    headers = ["Priority: emergency"]
    if callback:
        headers.append(f"X-Emergency-Callback: {callback}")
    if location:
        headers.append(f"X-Emergency-Location: {_one_line(location)}")
    return headers


# -- what leaves for a carrier ------------------------------------------------------------------
# An allow-list: a carrier bills and shows caller ID from whatever identity, charging, diversion
# or priority header reaches it, and new such headers keep being invented (Remote-Party-ID,
# P-Charge-Info, History-Info, X-anything...), so only what SIP needs to set up the call passes;
# the proxy then adds its own P-Asserted-Identity, Diversion, Priority and X-Emergency-*.
# Lower-case names, with the compact forms of those that have one (RFC 3261 7.3.3, RFC 4028).
TRUNK_HEADERS = frozenset({
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m", "max-forwards",
    "content-type", "c", "content-length", "l", "content-disposition", "content-encoding", "e",
    "record-route", "route", "allow", "supported", "k", "require", "session-expires", "x", "min-se",
    "user-agent", "accept", "allow-events", "expires", "date",
})


def allowed_towards_trunk(name: str) -> bool:
    """Whether a header of a phone's (or a carrier's) request may go on to a carrier."""
    return name.strip().lower() in TRUNK_HEADERS


def header_names_pattern(names: Iterable[str]) -> str:
    """A POSIX extended regex that matches exactly these header names (Kamailio compiles it
    case-insensitively: textopsx keep_hf_re). Plain names only: nothing to escape, nothing to
    read differently between Python's re and regcomp()."""
    names = sorted(names)
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", n)]
    if bad or not names:
        raise ValueError(f"header names must be lower-case tokens: {bad or 'none given'}")
    return "^(" + "|".join(names) + ")$"


TRUNK_HEADERS_PATTERN = header_names_pattern(TRUNK_HEADERS)
_HEADER_NAME = re.compile(r"([A-Za-z0-9!%*_+`'~.-]+)[ \t]*:")


def headers_outside(block: str, names: frozenset[str]) -> list[str]:
    """The header names of a message's header block ($msg(hdrs)) that are not in names, each once,
    as written: what a carrier must not get. Folded lines and the start line name no header."""
    found: dict[str, None] = {}
    for line in block.split("\n"):
        match = _HEADER_NAME.match(line)
        if match and match.group(1).lower() not in names:
            found.setdefault(match.group(1))
    return list(found)


def headers_named(block: str, names) -> list[str]:
    """The names (as given) of which the header block ($msg(hdrs)) holds at least one header, any case."""
    lowered = block.lower()
    names = [name for name in names if name.lower() in lowered]  # most requests carry none of them
    if not names:
        return []
    present = set()
    for line in block.split("\n"):
        match = _HEADER_NAME.match(line)
        if match:
            present.add(match.group(1).lower())
    return [name for name in names if name.lower() in present]


# Topology hiding (kamailio.cfg, topos): topos marks every in-dialog request it restored with this
# header, naming its own record of the dialog, and reads it again (then removes it) when the request
# leaves, to put the proxy's Via and Contact in place of the sender's. It never reaches a peer; it
# must survive the allow-list in between. topos reads the first one a request holds and removes only
# that one: a request that arrives with one of its own would choose topos's record and leak the rest
# (kemi.sip.in_dialog refuses it: topos_marker_forged).
TOPOS_DIALOG_HEADER = "P-SR-XUID"


def topos_marker_forged(count: int) -> bool:
    """Whether an in-dialog request carries more topos markers than topos adds (one, or none when it
    knows no record of the dialog): the sender wrote one."""
    return count > 1


# Inside a dialog a carrier also gets what mid-call requests carry: PRACK's RAck, BYE's Reason,
# NOTIFY's Event and Subscription-State, INFO's packages. Never Refer-To/Referred-By/Replaces: a
# REFER would have the carrier place a new call, on our account, wherever the phone says.
IN_DIALOG_TRUNK_HEADERS = TRUNK_HEADERS | frozenset({
    "rack", "reason", "event", "o", "subscription-state", "info-package", "recv-info",
    TOPOS_DIALOG_HEADER.lower(),
})
IN_DIALOG_TRUNK_HEADERS_PATTERN = header_names_pattern(IN_DIALOG_TRUNK_HEADERS)


# -- emergency calls ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmergencyIdentity:
    """What an emergency call says about its caller, kept with the HA1 that must prove it is theirs:
    a cached identity is used only after a digest check against this HA1 passes, or for the phone
    registered at the call's very source address (kemi.sip.gate.registered_phone). The company is
    what the call record is written for."""

    ha1: str
    callback: str | None
    location: str | None
    company: str | None = None


def encode_emergency_identity(identity: EmergencyIdentity) -> str:
    # a location has no control characters (kemi.provisioning), a company id none either
    return f"{identity.ha1}\t{identity.callback or ''}\t{identity.location or ''}\t{identity.company or ''}"


def decode_emergency_identity(text: str | None) -> EmergencyIdentity | None:
    """None for anything that does not start with an HA1: an entry an older version cached
    (callback and location only) proves nothing and is never used. An entry without a company
    (three fields, an older version's) is an identity all the same."""
    parts = (text or "").split("\t")
    if len(parts) not in (3, 4) or not HA1_RE.fullmatch(parts[0]):
        return None
    company = parts[3] if len(parts) == 4 else ""
    return EmergencyIdentity(parts[0], parts[1] or None, parts[2] or None, company or None)


IDENTIFIED, ANONYMOUS, REFUSED = "identified", "anonymous", "refused"


def emergency_admission(verified: bool, registered_source: bool, checkable: bool, blocked: bool = False) -> str:
    """Who may place an emergency call, and with which identity.

    IDENTIFIED: the digest check passed (against Redis, or against the HA1 this node cached with
    the identity): the call carries the caller's callback number and location.
    ANONYMOUS: routed without a verified identity, when the request comes from an ip:port with a
    current registration (a phone of ours is there, whatever its credentials say now: the call
    carries that phone's identity), or when the credentials could not be checked at all (Redis did
    not answer or its data is broken, and this node holds no digest for that user): an outage never
    blocks an emergency call; or when they may not be checked (blocked: this address failed too many
    checks of them, kemi.sip.gate). A blocked caller's credentials are never checked, so a right
    and a wrong password get the same answer and the same call: no password oracle, no refusal.
    REFUSED: everyone else, i.e. a stranger whose credentials were checked and failed, or who
    sent none that fit: the proxy is not an open relay to the emergency services.
    Whatever is admitted is then limited (emergency_limits).
    """
    if verified and not blocked:
        return IDENTIFIED
    if registered_source or not checkable or blocked:
        return ANONYMOUS
    return REFUSED


@dataclass(frozen=True)
class EmergencyLimit:
    """One counter an admitted emergency call counts in (htable emcalls, EMERGENCY_WINDOW_S)."""

    key: str
    limit: int
    answer: Reply
    what: str  # for the log line


def emergency_limits(admission: str, phone: str, source: str, per_phone: int,
                     unidentified: int) -> tuple[EmergencyLimit, ...]:
    """The counters of an admitted emergency call, in order; the first over its limit refuses it.

    Per phone: the authenticated user@domain (phone), else the source ip:port (source): a caller
    who proved nothing is only where it sends from. Calls nobody authenticated also count in one
    counter for the whole node: a forged UDP source can be any ip:port (a registered one too), so
    limits per source alone never bound what reaches the emergency trunk. Authenticated calls never
    count there: they cannot be forged, and a fire in a building makes many of them at once."""
    if admission == IDENTIFIED:
        return (EmergencyLimit(f"phone:{phone}", per_phone, replies.EMERGENCY_PHONE_LIMIT, f"phone {phone}"),)
    return (EmergencyLimit(f"source:{source}", per_phone, replies.EMERGENCY_PHONE_LIMIT, f"source {source}"),
            EmergencyLimit("unauthenticated", unidentified, replies.EMERGENCY_UNIDENTIFIED_LIMIT,
                           "unauthenticated callers on this node"))


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", text)[:200]


def _address(item: str, what: str) -> tuple[str, str, int]:
    """'udp:127.0.0.2:5060' -> ('udp', '127.0.0.2', 5060); ValueError naming `what` otherwise."""
    parts = item.split(":")
    if len(parts) != 3 or parts[0] not in TRANSPORTS or not IPV4_RE.fullmatch(parts[1]) \
            or not parts[2].isdigit() or not 0 < int(parts[2]) < 65536:
        raise ValueError(f"{what} {item!r}: expected transport:IPv4:port, e.g. udp:127.0.0.2:5060")
    return parts[0], parts[1], int(parts[2])


def parse_static_trunks(spec: str) -> tuple[Trunk, ...]:
    """EMERGENCY_TRUNKS: 'udp:127.0.0.2:5060,tcp:127.0.0.4:5060' -> emergency trunks, in that order.

    The last resort for emergency calls when Redis is down and nothing is cached.
    """
    trunks = []
    for i, item in enumerate(x.strip() for x in spec.split(",") if x.strip()):
        transport, host, port = _address(item, "EMERGENCY_TRUNKS item")
        trunks.append(Trunk(name=f"static-{i + 1}", host=host, port=port, transport=transport,
                            priority=i + 1, emergency=True, outbound=False))
    return tuple(trunks)


def encode_peers(peers: Iterable[Peer]) -> str:
    """Where a call may still go (trunks in order, or a fallback media server), as text for a
    transaction AVP or the emergency cache: 'name@transport:host:port,...'. Only the address and
    the name travel: what a peer is for was decided before it was put here."""
    return ",".join(f"{p.name}@{p.transport}:{p.host}:{p.port}" for p in peers)


def decode_peers(text: str | None) -> list[Peer]:
    peers = []
    for item in (text or "").split(","):
        if item:
            name, _, address = item.rpartition("@")
            transport, host, port = _address(address, "peer")
            # an emergency cache written by an older version of this code holds bare addresses
            peers.append(Peer(name=name or address, host=host, port=port, transport=transport))
    return peers


# -- incoming calls -----------------------------------------------------------------------------
# An extension that does not pick up (ring timeout), is unreachable or busy
# goes to the DID's fallback when there is one.
FALLBACK_CODES = frozenset({408, 480, 486})
# Headers only the proxy (or a trusted media server) may set; stripped from what phones and trunks send.
PRIVATE_HEADERS = ("X-Company", "X-DID", "X-Emergency-Callback", "X-Emergency-Location", "X-Balance",
                   "X-Currency", "P-Asserted-Identity", "P-Preferred-Identity")

_SIP_URI = re.compile(r"<?\s*sips?:(?:([^@;>]+)@)?([^;>?]+)")


def redirect_target(contact: str | None, company_domain: str, proxy_hosts: set[str]) -> str | None:
    """The extension a receptionist's 3xx names, or None if it names anything else.

    Only `sip:2XXX@<the company's domain or this proxy>` is followed: an external
    number, another company's domain or another host is never dialled.
    """
    if not contact:
        return None
    match = _SIP_URI.search(contact.split(",")[0])
    if not match or not match.group(1):
        return None
    user, host = match.group(1), match.group(2).strip().lower()
    if host != company_domain and host not in proxy_hosts:
        return None
    return user if EXTENSION_RE.fullmatch(user) else None


def diversion_header(number: str, host: str) -> str:
    """RFC 5806: which of our numbers forwarded the call."""
    return f"Diversion: <sip:{number}@{host};user=phone>;reason=unconditional;counter=1"


def media_headers(co: str, did: str | None) -> list[str]:
    """What a media server is told about the call (docs/media-server-contract.md)."""
    return [f"X-Company: {co}"] + ([f"X-DID: {did}"] if did else [])


def external_caller(user: str | None) -> str | None:
    """An external caller's number as the trunk sent it in From, kept as caller ID when forwarding."""
    if user and re.fullmatch(r"\+?[0-9]{3,15}", user):
        return user
    return None


# -- in-dialog requests ---------------------------------------------------------------------------
_URI_PARTS = re.compile(r"(sips?):(?:([^@;>?]*)@)?(\[[0-9a-fA-F:.]+\]|[^;>?:\s]+)(?::([0-9]{1,5}))?([^>?]*)",
                        re.IGNORECASE)


def split_uri(uri: str | None) -> tuple[str, str, str, str | None, str] | None:
    """A SIP URI (in <> or not, after a display name or not) -> scheme, user, host, port, params;
    None when it is not one. The one parser of URIs the proxy compares (kemi.edge too)."""
    if not uri:
        return None
    inner = uri[uri.index("<") + 1:] if "<" in uri else uri
    match = _URI_PARTS.match(inner.strip())
    if not match:
        return None
    scheme, user, host, port, params = match.groups()
    return scheme, user or "", host, port, params or ""


def uri_transport(scheme: str, params: str) -> str:
    """The transport a URI names: its transport parameter, else tls for sips, else udp."""
    transport = re.search(r";\s*transport=([a-z]+)", params, re.IGNORECASE)
    return transport.group(1).lower() if transport else ("tls" if scheme.lower() == "sips" else "udp")


def uri_key(uri: str | None) -> tuple | None:
    """What identifies a SIP URI as a target: scheme, user, host, port, transport (None if unparsable)."""
    parts = split_uri(uri)
    if parts is None:
        return None
    scheme, user, host, port, params = parts
    return scheme.lower(), user, host.lower(), int(port) if port else None, uri_transport(scheme, params)


CONNECTED = ("tcp", "tls", "ws", "wss")  # transports where a party is its connection


def party_address(transport: str, ip: str, port: int, connection: str | None, by_address: bool) -> str:
    """What the dialog records of a party, for same_peer: transport:ip:port, and on a
    connection-oriented transport '#' and the connection id, unless by_address (a trunk or a
    media server: the proxy connects to them, and RFC 3261 lets them send their in-dialog
    requests over a connection of their own; only they can open one from their address)."""
    address = f"{transport}:{ip}:{port}"
    if transport in CONNECTED and not by_address:
        return f"{address}#{connection or 'gone'}"  # no connection id: no request will match it
    return address


def same_peer(expected: str, source: str, connection: str | None = None) -> bool:
    """Whether a request's source (transport:ip:port, and its connection id on TCP/TLS) is the
    party recorded at set-up (party_address). UDP: the same ip:port (a phone behind a NAT keeps its
    binding). A party recorded with its connection: that connection only, so a neighbour behind
    the same NAT address, on a connection of its own, is nobody's party. A party recorded without
    one (a trunk, a media server): any connection from its address."""
    address, _, bound = expected.partition("#")
    want, got = address.split(":"), source.split(":")
    if len(want) != 3 or len(got) != 3 or want[0] != got[0] or want[1] != got[1]:
        return False
    if bound:
        return connection == bound and want[2] == got[2]
    return want[0] in CONNECTED or want[2] == got[2]


def peer_uri(address: str) -> str:
    """transport:ip:port (party_address) -> the SIP URI that sends there."""
    transport, ip, port = address.partition("#")[0].split(":")
    return f"sip:{ip}:{port};transport={transport}"


@dataclass(frozen=True)
class DialogParties:
    """What the proxy recorded about a dialog it set up, as seen by one request: the party it comes
    from and the one it goes to (kemi.sip.in_dialog reads only that direction's fields)."""

    sender: str | None            # party_address of who may send it (None: not answered yet)
    receiver: str | None          # party_address of the other party
    target: str | None            # the other party's Contact: the only Request-URI allowed
    routes: str | None = None     # the Record-Route set towards the other party, beyond this proxy


def route_uris(headers: str | None) -> list[str]:
    """Every URI of Route (or Record-Route) header values, in order."""
    return re.findall(r"<([^>]+)>", headers or "")


def own_routes_fit(own: list[str]) -> bool:
    """Whether the request's leading Route entries naming this proxy are what it record-routed:
    one, or two when it switched transport or socket (rr enable_double_rr: both carry r2=on, and
    loose_route() strips both). Anything else would leave an entry of ours in the relayed request."""
    if len(own) == 1:
        return True
    return len(own) == 2 and all(re.search(r";\s*r2=on\b", uri, re.IGNORECASE) for uri in own)


def in_dialog_verdict(parties: DialogParties, source: str, ruri: str, routes: list[str] = (),
                      connection: str | None = None, own: list[str] = ("ours",)) -> tuple[Reply | None, str | None]:
    """(refusal, None) or (None, where to send): a request inside a dialog may come only from one of
    its two parties (on TCP/TLS through its connection), only name the other party's Contact, carry
    our own Route entries as we record-routed them, and beyond them only the route set the dialog
    recorded; it goes only to where the other party is. routes: the request's Route URIs after this
    proxy's own (own)."""
    if parties.sender is None or not same_peer(parties.sender, source, connection):
        return replies.NOT_A_PARTY, None
    if parties.receiver is None or not parties.target:
        return replies.DIALOG_NOT_ANSWERED, None
    if uri_key(ruri) is None or uri_key(ruri) != uri_key(parties.target):
        return replies.NOT_THE_DIALOG_TARGET, None
    if not own_routes_fit(list(own)) or \
            [uri_key(r) for r in routes] != [uri_key(r) for r in route_uris(parties.routes)]:
        return replies.NOT_THE_DIALOG_ROUTE, None
    return None, peer_uri(parties.receiver)


# What a BYE of the proxy's own needs from the dialog (kemi.sip.shell.Sip.end_call).
DIALOG_BYE_FIELDS = ("callid", "from_tag", "to_tag", "from_uri", "to_uri", "from_contact", "from_rs", "from_bindaddr")


def caller_bye_headers(dialog: dict[str, str], cseq: int) -> str:
    """The headers of a BYE towards the caller, as from the callee: its tags swapped, the caller's
    route set. cseq must exceed what the callee used: a clock in seconds does."""
    routes = "".join(f"Route: <{uri}>\r\n" for uri in route_uris(dialog["from_rs"]))
    return (f"From: <{dialog['to_uri']}>;tag={dialog['to_tag']}\r\n"
            f"To: <{dialog['from_uri']}>;tag={dialog['from_tag']}\r\n"
            f"Call-ID: {dialog['callid']}\r\nCSeq: {cseq} BYE\r\n{routes}")
