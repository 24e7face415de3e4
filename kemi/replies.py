"""Every final answer the proxy gives by itself, with its precise reason phrase.

One table so that tests, docs and the SIP layer agree on the words a phone shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    reason: str


OK = Reply(200, "OK")
# One phrase for unknown user, wrong password, wrong company: no user enumeration.
FORBIDDEN = Reply(403, "Forbidden")
EXTENSION_NOT_FOUND = Reply(404, "Extension Not Found")
NOT_HERE = Reply(404, "Not Here")
METHOD_NOT_ALLOWED = Reply(405, "Method Not Allowed")
NOT_REGISTERED = Reply(480, "Extension Not Registered")
# Registered over TLS, but the phone's connection is gone: the proxy reaches such a phone
# only through the connection it registered on (kemi.sip.phones.ring)
PHONE_NOT_CONNECTED = Reply(480, "Extension Not Connected")
# Registered, but every place its phones registered turned out, at sending, to be a trusted peer's
# address (kamailio.cfg onsend_route): nothing was sent
EXTENSION_UNREACHABLE = Reply(480, "Extension Not Reachable")
TOO_MANY_HOPS = Reply(483, "Too Many Hops")
INTERNAL_ERROR = Reply(500, "Internal Server Error")
STORE_DOWN = Reply(503, "Subscriber Data Unavailable")
# A proxy being drained before its restart (scripts/drain.sh): a new call goes to the site's other
# proxy. With Retry-After the phone or carrier tries its next server rather than this one again
# (RFC 3261 21.5.4, RFC 3263 4.3); calls in progress, REGISTERs and emergency calls go on.
DRAINING = Reply(503, "Proxy Draining For Restart")
DRAINING_RETRY_AFTER_S = 60
SCHEMA_UNKNOWN = Reply(503, "Subscriber Data Not Provisioned")

# -- dialling out (kemi.routing decides which) ----------------------------------------------------
# A number cut short; other numbering refusals carry the numbering plan's own reason.
ADDRESS_INCOMPLETE = Reply(484, "Address Incomplete")
PREPAID_NOT_AVAILABLE = Reply(403, "Prepaid Account Not Activated")
INSUFFICIENT_FUNDS = Reply(402, "Insufficient Prepaid Balance")
NO_RATE = Reply(403, "No Rate For Destination")
NO_TRUNK = Reply(503, "No Route To Destination")
# What the caller gets instead of a 503 from the last trunk (RFC 3261 16.7)
TRUNKS_UNAVAILABLE = Reply(500, "Trunks Unavailable")
# An emergency call from a stranger: credentials checked and wrong (or none that fit), and no
# registration from its address (kemi.routing.emergency_admission)
EMERGENCY_NEEDS_REGISTRATION = Reply(403, "Emergency Calls Need A Registered Phone")
# Emergency calls over their limits (kemi.routing.emergency_limits), with Retry-After: the phone's own
# (authenticated user, else source address), and this node's for callers nobody authenticated
EMERGENCY_PHONE_LIMIT = Reply(503, "Too Many Emergency Calls From This Phone")
EMERGENCY_UNIDENTIFIED_LIMIT = Reply(503, "Too Many Unauthenticated Emergency Calls")

# -- incoming calls -------------------------------------------------------------------------------
UNKNOWN_NUMBER = Reply(404, "Number Not Assigned")
REDIRECT_REFUSED = Reply(403, "Redirect Outside Company Refused")
NO_RECEPTIONIST = Reply(503, "Receptionist Unavailable")
# rtpengine did not answer the SDP offer: the call would have no audio through a NAT, so it is not
# set up at all (kemi.sip.media; emergency calls go out unanchored instead).
MEDIA_RELAY_DOWN = Reply(503, "Media Relay Unavailable")
# What one SDP and one tenant may take of rtpengine's relay ports (kemi.sip.media, SDP_MAX_* and
# MEDIA_STREAMS_* settings): refused before rtpengine sees the SDP.
SDP_TOO_LARGE = Reply(413, "SDP Body Too Large")
TOO_MANY_STREAMS = Reply(488, "Too Many Media Streams")
SDP_UNREADABLE = Reply(488, "SDP Is Not Text")
MEDIA_RELAY_FULL = Reply(503, "Media Relay Full")
COMPANY_MEDIA_LIMIT = Reply(503, "Too Many Calls For This Company")
PHONE_MEDIA_LIMIT = Reply(486, "Too Many Calls On This Phone")
FORWARD_LOOP = Reply(482, "Forward Loops Back To Our Number")

ALLOWED_METHODS = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, UPDATE, INFO, REFER, NOTIFY"


def auth_failure(rc: int) -> tuple[str, Reply | None]:
    """What to do with a pv_auth_check() result that is not success.

    Returns ("challenge", None), ("challenge-stale", None) or ("reply", reply).
    Codes from the auth module's README: -4 nonce expired, -5 no credentials
    for this realm, -6 nonce reused; -2 wrong password, -3 unknown user,
    -8 auth user differs from From/To user, -1 generic error.
    """
    if rc == -4:
        return "challenge-stale", None
    if rc in (-5, -6):
        return "challenge", None
    return "reply", FORBIDDEN

# In-dialog requests (kemi.sip.in_dialog): only the two parties of a dialog this proxy set up,
# and only towards each other.
CALL_ID_REUSED = Reply(400, "Call-ID Already Used")
NO_SUCH_DIALOG = Reply(481, "Call/Transaction Does Not Exist")
NOT_A_PARTY = Reply(403, "Not A Party To This Dialog")
DIALOG_NOT_ANSWERED = Reply(403, "Dialog Not Answered Yet")
NOT_THE_DIALOG_TARGET = Reply(403, "Request-URI Is Not The Dialog Target")
NOT_THE_DIALOG_ROUTE = Reply(403, "Route Is Not The Dialog Route Set")
# topology hiding (kamailio.cfg topos; kemi.routing.TOPOS_DIALOG_HEADER): a header only the proxy writes
TOPOS_HEADER_FORGED = Reply(400, "Topology Header Not Allowed")

# -- the edge (kemi.edge, kemi.sip.gate): abuse, registrations, bytes that are not text ------------
# A (source address, user) pair that failed the digest check AUTH_FAIL_MAX times: even the right
# password is refused until AUTH_BAN_S has passed (the rest of that address and that user elsewhere
# keep working). Unknown users are counted too, so this says nothing about who exists.
TOO_MANY_FAILURES = Reply(403, "Too Many Failed Attempts")
# a phone of a declared site that floods with its valid credentials (kemi.sip.gate): once, then dropped
PHONE_FLOODING = Reply(503, "Too Many Requests From This Phone")
DIGEST_URI_MISMATCH = Reply(403, "Digest URI Does Not Match Request")
CONTACT_NOT_SOURCE = Reply(403, "Contact Must Be The Registering Address")
CONTACT_IS_TRUSTED_PEER = Reply(403, "Contact Names A Trusted Peer")
CONTACT_IS_PROXY = Reply(403, "Contact Names This Proxy")
# A REGISTER over TLS whose Contact does not ask for TLS: the proxy would reach the phone over its
# TLS connection, never at the address the Contact gives (kemi.edge.tls_contact_refusal)
CONTACT_NOT_TLS = Reply(403, "Contact Must Use TLS")
UNREADABLE_CONTACT = Reply(400, "Unreadable Contact")
# A site of several proxies (kemi.sip.site): a sibling proxy only ever sends this one a call for a phone
# registered through it (routed by the Path it saved): no REGISTER, no call of its own
NOT_ROUTED_BY_OUR_PATH = Reply(403, "Not Routed By A Path Of Ours")
SIBLING_SENDS_CALLS_ONLY = Reply(405, "A Sibling Proxy Sends Calls Only")

# Where an unreadable pseudo-variable lives, in the words of a reason phrase.
_PLACES = {"$rU": "Request-URI", "$ru": "Request-URI", "$rd": "Request-URI", "$rm": "Method",
           "$fU": "From", "$fu": "From", "$fd": "From", "$fn": "From", "$ft": "From Tag",
           "$tU": "To", "$tu": "To", "$td": "To", "$tn": "To", "$tt": "To Tag",
           "$au": "Username", "$ar": "Realm", "$adu": "Digest URI", "$ci": "Call-ID", "$ct": "Contact"}


def unreadable(pv: str, nul: bool) -> Reply:
    """400 for a request whose `pv` (a pseudo-variable, or $hdr(Name)) is not UTF-8 or holds a NUL:
    the reason names the place, so the phone's owner can see what to fix."""
    header = re.fullmatch(r"\$\(?hdrc?\(([A-Za-z0-9-]{1,40})\)(\[[^]]*\]\))?", pv)
    place = _PLACES.get(pv) or (header.group(1) if header else "Request")
    return Reply(400, f"{'NUL Byte' if nul else 'Invalid UTF-8'} In {place}")
