"""Every final answer the proxy gives by itself, with its precise reason phrase.

One table so that tests, docs and the SIP layer agree on the words a phone shows.
"""

from __future__ import annotations

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
TOO_MANY_HOPS = Reply(483, "Too Many Hops")
INTERNAL_ERROR = Reply(500, "Internal Server Error")
STORE_DOWN = Reply(503, "Subscriber Data Unavailable")
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

# -- incoming calls -------------------------------------------------------------------------------
UNKNOWN_NUMBER = Reply(404, "Number Not Assigned")
REDIRECT_REFUSED = Reply(403, "Redirect Outside Company Refused")
NO_RECEPTIONIST = Reply(503, "Receptionist Unavailable")
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
