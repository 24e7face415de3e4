"""What the proxy's own metrics count, as label values from bounded sets, and its decision log
lines. Pure: kemi.sip.shell (Metric) makes the one KSR call per count, the roles decide what to count.

Prometheus keeps one series per label value, so a label never carries a number, a Call-ID or a
reason phrase that a peer or the data chose: every value comes from the tuples below, and what
does not map to one is "other".
"""

from __future__ import annotations

import re

from kemi import numbering, replies
from kemi.replies import Reply

# -- calls routed, by category (calls_routed_total) ------------------------------------------------
INTERNAL, INCLUDED, PREPAID, EMERGENCY, INBOUND = "internal", "included", "prepaid", "emergency", "inbound"
CATEGORIES = (INTERNAL, INCLUDED, PREPAID, EMERGENCY, INBOUND)


def category(rec: dict | None) -> str:
    """The category of a call the proxy routes, from its record (kemi.records): emergency first, then
    who pays (a prepaid forward of an incoming call is prepaid), then extension to extension, then
    calls that came in; everything else went out to the trunks as included. No record: an emergency
    call from a caller nobody could identify (kemi.sip.emergency), the only call routed without one."""
    if rec is None or rec.get("category") == "emergency":
        return EMERGENCY
    if rec.get("billing") == "prepaid" or rec.get("prepaid"):
        return PREPAID
    if rec.get("category") == "internal":
        return INTERNAL
    if rec.get("direction") == "inbound":
        return INBOUND
    return INCLUDED


# -- calls the proxy could not place: every trunk failed, or none (calls_failed_total) -------------
# An emergency call that reached nobody, whatever the reason; another call whose last trunk failed.
EXTERNAL = "external"
FAILED_CATEGORIES = (EMERGENCY, EXTERNAL)


# -- refusals, by reason (call_refusals_total) --------------------------------------------------------
OTHER = "other"
NUMBER_INVALID = "number_invalid"
OVERRIDE_BLOCKED = "override_blocked"
_BY_REPLY = {
    replies.ADDRESS_INCOMPLETE: "number_incomplete",
    Reply(403, numbering.R_SURCHARGED_BLOCKED): "premium_blocked",
    Reply(403, numbering.R_SHORT_BLOCKED): "short_number_blocked",
    Reply(403, numbering.R_SATELLITE_BLOCKED): "satellite_blocked",
    Reply(403, numbering.R_CARRIER_SELECTION): "carrier_selection",
    replies.PREPAID_NOT_AVAILABLE: "prepaid_not_active",
    replies.INSUFFICIENT_FUNDS: "prepaid_insufficient_funds",
    replies.NO_RATE: "prepaid_no_rate",
    replies.NOT_REGISTERED: "not_registered",
    replies.EXTENSION_NOT_FOUND: "extension_not_found",
    replies.UNKNOWN_NUMBER: "unknown_number",
    replies.FORWARD_LOOP: "forward_loop",
    replies.REDIRECT_REFUSED: "redirect_refused",
    replies.NO_RECEPTIONIST: "no_receptionist",
    replies.NO_TRUNK: "no_route",
    replies.MEDIA_RELAY_DOWN: "media_relay_down",
    replies.SDP_TOO_LARGE: "sdp_too_large",
    replies.TOO_MANY_STREAMS: "too_many_streams",
    replies.SDP_UNREADABLE: "sdp_unreadable",
    replies.MEDIA_RELAY_FULL: "media_relay_full",
    replies.COMPANY_MEDIA_LIMIT: "company_media_limit",
    replies.PHONE_MEDIA_LIMIT: "phone_media_limit",
    replies.CALL_ID_REUSED: "call_id_reused",
    replies.EMERGENCY_NEEDS_REGISTRATION: "emergency_unregistered",
    replies.EMERGENCY_PHONE_LIMIT: "emergency_phone_limit",
    replies.EMERGENCY_UNIDENTIFIED_LIMIT: "emergency_unidentified_limit",
    replies.STORE_DOWN: "store_down",
    replies.DRAINING: "draining",
    replies.SCHEMA_UNKNOWN: "store_not_provisioned",
    replies.INTERNAL_ERROR: "internal_error",
}
REASONS = tuple(sorted(set(_BY_REPLY.values()) | {NUMBER_INVALID, OVERRIDE_BLOCKED, OTHER}))
PREPAID_REASONS = tuple(r for r in REASONS if r.startswith("prepaid_"))


def refusal_reason(answer: Reply) -> str:
    """The label of a refusal: its own for every answer of kemi.replies and of the numbering plan;
    the plan's 404s (their phrases name why a number is not one) and ops overrides (their phrase
    names the prefix) each as one label."""
    known = _BY_REPLY.get(answer)
    if known is not None:
        return known
    if answer.code == 403 and answer.reason.startswith("Ops override "):
        return OVERRIDE_BLOCKED
    if answer.code == 404:
        return NUMBER_INVALID
    return OTHER


# -- failed digest authentications, by method (auth_failures_total) ---------------------------------
REGISTER, INVITE = "register", "invite"
AUTH_METHODS = (REGISTER, INVITE, OTHER)


def auth_method(method: str) -> str:
    return {"REGISTER": REGISTER, "INVITE": INVITE}.get(method, OTHER)


# -- bans, by kind (bans_total) ----------------------------------------------------------------------
# an address flooding (pike), one phone of a declared site flooding, credentials guessed too often
FLOOD, SITE_PHONE, AUTH = "flood", "site_phone", "auth"
BAN_KINDS = (FLOOD, SITE_PHONE, AUTH)


def trunk_label(label: str) -> str:
    """A trunk's name as a label value (trunk_failovers_total), from the label a log line gives it
    ("primary (udp:192.0.2.1:5060)", kemi.model): provisioned names only, bounded by the trunks ops
    provision; anything else is "other"."""
    name = (label or "").split(" ", 1)[0]
    return name if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) else OTHER


# -- Redis failures, by kind (redis_errors_total; kemi.store.Connection reports them) -------------
TIMEOUT, UNREACHABLE, REFUSED, SCHEMA = "timeout", "unreachable", "refused", "schema"
# a money change that no replica confirmed within REDIS_WAIT_TIMEOUT_MS (kemi.store.prepaid.Unreplicated)
UNREPLICATED = "unreplicated"
REDIS_ERRORS = (TIMEOUT, UNREACHABLE, REFUSED, SCHEMA, UNREPLICATED)
# Error replies of the prepaid Functions that are the ledger's answer to a request, not a fault
# (kemi.store.prepaid.CODES minus the ones that mean damaged data or a bug).
LEDGER_DECISIONS = frozenset({"NOT_ACTIVE", "INSUFFICIENT_FUNDS", "TOPUP_CONFLICT", "BALANCE_LIMIT",
                              "CURRENCY_MISMATCH"})


def redis_refusal_is_fault(message: str) -> bool:
    """Whether an error reply is a fault (WRONGTYPE, OOM, BUSY, LEDGER_BROKEN ...) rather than the
    ledger refusing a call or a top-up."""
    return message.split(" ", 1)[0] not in LEDGER_DECISIONS


# -- the decision lines of the log ------------------------------------------------------------------
def decision_line(call_id: str, decision: str, label: str, text: str) -> str:
    """One log line per call decision, `call <Call-ID> <decision> <label>: <what>`: grep the Call-ID
    for a call's story, or `call .* refused prepaid_` for every prepaid refusal."""
    return f"call {call_id or '-'} {decision} {label}: {text}"
