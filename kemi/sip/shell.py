"""The only module that speaks KSR: what the roles ask of Kamailio, in their words.

Roles (kemi.sip.phones, outbound, ...) never touch KSR; they call a `Sip` wrapped
around the real KSR module inside Kamailio, or around tests.fake_ksr.FakeKSR in unit
tests. Every $avp, $dlg_var, htable and route callback name is defined here, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kemi import routing
from kemi.replies import Reply

MAX_FORWARDS = 70


class Var:
    """Per-transaction AVPs and per-dialog variables: the state that crosses callbacks."""

    # transaction (AVPs follow the transaction into failure and branch routes)
    TRACKED = "$avp(tracked)"          # the call already has its dialog and record-route
    DLG_TIMEOUT = "$avp(dlg_timeout)"  # kamailio.cfg: modparam("dialog", "timeout_avp", ...)
    TRUNKS_LEFT = "$avp(trunks_left)"  # peers still to try (routing.encode_peers)
    DIAL_USER = "$avp(dial_user)"      # the user part sent to the trunks
    MEDIA_HEADERS = "$avp(media_hdrs)"  # headers for the media server's branch only
    FALLBACK = "$avp(fallback)"        # the receptionist an unanswered extension falls back to
    COMPANY = "$avp(co)"               # the company a receptionist call belongs to
    DID = "$avp(did)"                  # the DID that was called
    # dialog (live from set-up to the end of the call)
    RECORD = "$dlg_var(rec)"           # the call record (records.encode)
    ANSWER_MS = "$dlg_var(answer_ms)"  # when the call was answered
    CALLER = "$dlg_var(caller)"        # transport:ip:port the INVITE came from (kemi.sip.in_dialog)
    CALLEE = "$dlg_var(callee)"        # transport:ip:port the answer came from
    DEADLINE_MS = "$dlg_var(deadline_ms)"  # a prepaid call ends by then (answer + max duration)
    FINISHED = "$dlg_var(finished)"    # the event that wrote the record (timeout, end, failed): once
    TIMEOUT_ROUTE = "$dlg_ctx(timeout_route)"  # set: the timeout runs dialog:timeout before any BYE


class Table:
    """htables of kamailio.cfg (shared memory of this node)."""

    EMERGENCY_IDS = "emerg"  # user@domain -> callback \t location (refreshed at each authenticated request)
    ROUTES = "routes"        # "emergency" -> the emergency trunks last seen in Redis
    EMERGENCY_TRUNKS_KEY = "emergency"
    CALL_IDS = "callids"     # Call-ID -> "1" for every call relayed in the last 24 h


class Route:
    """Names of the callbacks Kamailio calls back (methods of kemi.sip.app.Router)."""

    FAILURE_TRUNK = "ksr_failure_trunk"
    FAILURE_ANNOUNCEMENT = "ksr_failure_announcement"
    FAILURE_EXTENSION = "ksr_failure_extension"
    FAILURE_RECEPTIONIST = "ksr_failure_receptionist"
    BRANCH_MEDIA = "ksr_branch_media"


@dataclass(frozen=True)
class Timers:
    """tm timers of a relay, in ms: how long it may ring, how long the peer may stay silent."""

    ring_ms: int
    silent_ms: int


class Sip:
    def __init__(self, ksr):
        self.k = ksr

    # -- the request -------------------------------------------------------------------------
    def pv(self, name: str) -> str | None:
        value = self.k.pv.get(name)
        return None if value is None else str(value)

    @property
    def method(self) -> str:
        return self.pv("$rm") or ""

    @property
    def source(self) -> tuple[str, int]:
        return self.pv("$si") or "", int(self.pv("$sp") or 0)

    @property
    def transport(self) -> str:
        return (self.pv("$pr") or "udp").lower()

    def source_address(self) -> str:
        """transport:ip:port of what is being processed (a request, or a reply in a reply-side event)."""
        ip, port = self.source
        return f"{self.transport}:{ip}:{port}"

    @property
    def call_id(self) -> str:
        return self.pv("$ci") or ""

    def local_hosts(self) -> set[str]:
        """The proxy's own address as a peer names it: ip and ip:port of the receiving socket."""
        ip, port = self.pv("$Ri") or "", self.pv("$Rp") or ""
        return {ip, f"{ip}:{port}"}

    @property
    def local_ip(self) -> str:
        return self.pv("$Ri") or ""

    def header(self, name: str) -> str | None:
        return self.k.hdr.get(name)

    def is_method(self, method: str) -> bool:
        return self.method == method

    # -- variables -------------------------------------------------------------------------
    def get(self, var: str) -> str | None:
        return self.pv(var)

    def set(self, var: str, value: str | int) -> None:
        if isinstance(value, int):
            self.k.pv.seti(var, value)
        else:
            self.k.pv.sets(var, value)

    def unset(self, var: str) -> None:
        self.k.pv.unset(var)

    def set_ruri(self, uri: str) -> None:
        self.k.pv.sets("$ru", uri)

    # -- answers ---------------------------------------------------------------------------
    def log(self, level: str, text: str) -> None:
        getattr(self.k, level)(text.replace("\n", " | ") + "\n")

    def reply(self, answer: Reply, *headers: str) -> None:
        for header in headers:
            self.k.hdr.append_to_reply(header + "\r\n")
        # send_reply answers statefully once a transaction exists, statelessly before.
        self.k.sl.send_reply(answer.code, answer.reason)

    def reply_in_failure(self, answer: Reply) -> None:
        """The final answer of a transaction, from a failure route."""
        self.k.tm.t_reply(answer.code, answer.reason)

    def answer_if_possible(self, answer: Reply, *headers: str) -> None:
        if self.is_ack():
            return  # an ACK is never answered
        try:
            self.reply(answer, *headers)
        except Exception as exc:
            self.log("err", f"could not send {answer.code}: {exc}")

    # -- headers of the forwarded request ---------------------------------------------------
    def append_headers(self, headers) -> None:
        for header in headers:
            self.k.hdr.append(header + "\r\n")

    def remove_headers(self, names) -> None:
        for name in names:
            self.k.hdr.remove(name)

    # -- forwarding ------------------------------------------------------------------------
    def relay(self, uri: str | None = None, failure_route: str | None = None, timers: Timers | None = None,
              branch_route: str | None = None) -> bool:
        """Forward statefully (to uri, else to the current R-URI/destination set); answers
        the error itself when tm cannot send. True when sent."""
        if uri is not None:
            self.set_ruri(uri)
        if failure_route is not None:
            self.k.tm.t_on_failure(failure_route)
        if branch_route is not None:
            self.k.tm.t_on_branch(branch_route)
        if timers is not None:
            self.k.tm.t_set_fr(timers.ring_ms, timers.silent_ms)
        if self.k.tm.t_relay() < 0:
            self.k.sl.sl_reply_error()
            return False
        return True

    def status_code(self) -> int:
        """In a failure route: the winning final answer's code."""
        return int(self.k.tm.t_get_status_code())

    def branch_replied(self) -> bool:
        return self.k.tm.t_branch_replied() > 0

    def canceled(self) -> bool:
        return self.k.tm.t_is_canceled() > 0

    def reply_header(self, name: str) -> str | None:
        """In a failure route: a header of the winning reply."""
        return self.pv(f"$T_rpl($hdr({name}))")

    # -- gatekeeping of every request -------------------------------------------------------
    def sane(self) -> bool:
        """False when sanity already answered 400 with the failed check as reason."""
        return self.k.sanity.sanity_check_defaults() >= 0

    def hops_left(self) -> bool:
        return self.k.maxfwd.process_maxfwd(MAX_FORWARDS) >= 0

    def is_ack(self) -> bool:
        return bool(self.k.is_ACK())

    def is_cancel(self) -> bool:
        return bool(self.k.is_CANCEL())

    def relay_cancel(self) -> None:
        if self.k.tm.t_check_trans() > 0:
            self.k.tm.t_relay()

    def absorbed_retransmission(self) -> bool:
        """A retransmission of a request still being routed or already relayed: tm absorbs it
        and resends the last reply (t_check_trans() == 0 means "done")."""
        if self.k.tmx.t_precheck_trans() > 0:
            self.k.tm.t_check_trans()
            return True
        return self.k.tm.t_check_trans() == 0

    def relay_ack_of_transaction(self) -> bool:
        """An ACK that belongs to a transaction of ours goes on; True when it did."""
        if self.k.tm.t_check_trans() > 0:
            self.k.tm.t_relay()
            return True
        return False

    def in_dialog(self) -> bool:
        return self.k.siputils.has_totag() > 0

    # -- phones: digest auth and registrations ------------------------------------------------
    def has_credentials(self, realm: str) -> bool:
        return self.k.auth.has_credentials(realm) > 0

    def challenge(self, realm: str, stale: bool = False) -> None:
        # 1: qop in the challenge; 16: stale=true (an expired nonce, not a wrong password)
        self.k.auth.auth_challenge(realm, 1 | (16 if stale else 0))

    def check_digest(self, realm: str, ha1: str) -> int:
        """pv_auth_check with the HA1 as password (flags 1), auth user = From/To user (checks 1)."""
        return int(self.k.auth.pv_auth_check(realm, ha1, 1, 1))

    def consume_credentials(self) -> None:
        self.k.auth.consume_credentials()

    def save_contact(self) -> bool:
        return self.k.registrar.save("location", 0) >= 0

    def reply_error(self) -> None:
        """The error of the last failed module function, as that module describes it."""
        self.k.sl.sl_reply_error()

    def lookup(self, aor_uri: str) -> int:
        """Point the request at every registered contact of an AOR; the registrar's code."""
        self.set_ruri(aor_uri)
        return int(self.k.registrar.lookup("location"))

    # -- dialogs -----------------------------------------------------------------------------
    def manage_dialog(self) -> None:
        self.k.dialog.dlg_manage()

    def find_dialog(self) -> bool:
        """Whether this in-dialog request names (Call-ID, tags, either direction) a dialog the module
        tracks. It only looks: $dlg(...)/$dlg_var(...) then read that dialog by the message's own ids,
        and the dialog module acts on the request only at manage_dialog()/loose_route(). (dlg_get()
        would set the dialog context, and a set context makes the module skip the request: a BYE
        would never end the dialog.)"""
        return self.k.dialog.is_known_dlg() > 0

    def dialog(self, field: str) -> str | None:
        """A field of the current dialog: from_tag, to_tag, from_contact, to_contact, state, ..."""
        return self.pv(f"$dlg({field})")

    def routes_beyond_us(self) -> list[str] | None:
        """The request's Route URIs after this proxy's own leading entries (None: the first Route
        is not ours, or there is none)."""
        routes = routing.route_uris(self.pv("$(hdr(Route)[*])"))
        ours = 0
        while ours < len(routes) and self.k.is_myself(routes[ours]) > 0:
            ours += 1
        return routes[ours:] if ours else None

    def set_destination(self, uri: str) -> None:
        self.k.pv.sets("$du", uri)

    def end_call(self) -> None:
        """The proxy hangs up both parties of the current dialog, the callee (the billed leg) first.

        dlg_bye("callee") runs dialog:end inside and leaves no dialog context; the caller's
        BYE then goes through the dialog again, or, when the callee's answer already deleted
        it, as a BYE of tm's own built from what the dialog recorded."""
        d = {name: self.dialog(name) or "" for name in routing.DIALOG_BYE_FIELDS}
        self.k.dialog.dlg_bye("callee")
        if self.k.dialog.dlg_get(d["callid"], d["from_tag"], d["to_tag"]) > 0 and \
                self.k.dialog.dlg_bye("caller") > 0:
            return
        if self.k.tm.t_uac_send("BYE", d["from_contact"], "", d["from_bindaddr"],
                                routing.caller_bye_headers(d, int(time.time())), "") < 0:
            self.log("err", f"call-id {d['callid']} ended by the proxy: no BYE could be sent to the caller")

    def record_route(self) -> None:
        self.k.rr.record_route()

    def loose_route(self) -> bool:
        return self.k.rr.loose_route() > 0

    # -- this node's shared memory -------------------------------------------------------------
    def cache_set(self, table: str, key: str, value: str) -> None:
        self.k.htable.sht_sets(table, key, value)

    def cache_get(self, table: str, key: str) -> str | None:
        value = self.k.htable.sht_get(table, key)
        return None if value is None else str(value)


def kamailio() -> Sip:
    """The Sip of the running Kamailio (app_python3 provides the KSR module)."""
    import KSR  # noqa: PLC0415  (only importable inside Kamailio)

    return Sip(KSR)
