"""The only module that speaks KSR: what the roles ask of Kamailio, in their words.

Roles (kemi.sip.phones, outbound, ...) never touch KSR; they call a `Sip` wrapped
around the real KSR module inside Kamailio, or around tests.fake_ksr.FakeKSR in unit
tests. Every $avp, $dlg_var, htable and route callback name is defined here, once.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

from kemi import edge, metrics, routing
from kemi.replies import Reply

MAX_FORWARDS = 70
NUL = "NUL byte"  # NotText.reason when the bytes decode but hold a NUL


class NotText(UnicodeDecodeError):
    """A pseudo-variable or header of the request whose bytes are not text the proxy can use:
    not UTF-8 (app_python3 decodes strictly and raises), or holding a NUL (every KSR function
    refuses such a string, and app_python3 5.6 then fails the call it was passed to). Sip.pv()
    raises it, naming the pseudo-variable, so that kemi.sip.app answers 400 with the place; it
    is a UnicodeDecodeError, so code that guards a read against undecodable bytes catches it."""

    def __init__(self, name: str, raw: bytes, start: int, end: int, reason: str):
        super().__init__("utf-8", raw, start, end, reason)
        self.name = name

    @property
    def nul(self) -> bool:
        return self.reason == NUL


def _text(name: str, value):
    """value as app_python3 returned it, unless it holds a NUL (NotText)."""
    if isinstance(value, str) and "\x00" in value:
        raw = value.encode("utf-8")
        at = raw.index(b"\x00")
        raise NotText(name, raw, at, at + 1, NUL)
    return value


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
    TRUNK_NOW = "$avp(trunk_now)"      # "<ms sent> <label>": when the current branch went to which trunk
    PDD_FROM = "$avp(pdd_from)"        # ms the current trunk got the INVITE, until its first 180/183/200
    TRUNKS_TRIED = "$avp(trunks_tried)"  # what each trunk tried did, for the log line of the last failure
    EMERGENCY = "$avp(emergency)"      # "1": an emergency call; its failure is logged at crit
    # kamailio.cfg: the registrar's received_avp (nathelper's too): where a contact is really reached
    RECEIVED = "$avp(nat_received)"
    # dialog (live from set-up to the end of the call)
    RECORD = "$dlg_var(rec)"           # the call record (records.encode)
    ANSWER_MS = "$dlg_var(answer_ms)"  # when the call was answered
    CALLER = "$dlg_var(caller)"        # transport:ip:port the INVITE came from (kemi.sip.in_dialog)
    CALLEE = "$dlg_var(callee)"        # transport:ip:port the answer came from
    DEADLINE_MS = "$dlg_var(deadline_ms)"  # a prepaid call ends by then (answer + max duration)
    FINISHED = "$dlg_var(finished)"    # the event that wrote the record (timeout, end, failed): once
    TRUNKS_FAILED = "$dlg_var(trunks_failed)"  # "1": no trunk took the call (records: trunks-failed)
    TIMEOUT_ROUTE = "$dlg_ctx(timeout_route)"  # set: the timeout runs dialog:timeout before any BYE
    CALLER_CARRIER = "$dlg_var(caller_carrier)"  # "1": the caller is a trunk (in-dialog header allow-list)
    CALLEE_CARRIER = "$dlg_var(callee_carrier)"  # "1": the call was dialled out through the trunks
    MEDIA = "$avp(media)"              # this transaction's SDP goes through rtpengine (kemi.sip.media)
    MEDIA_TAG = "$avp(media_tag)"      # the To-tag of the first answer rtpengine took in this transaction
    DLG_MEDIA = "$dlg_var(media)"      # "1": the call's media is anchored at rtpengine
    DLG_SHARES = "$dlg_var(shares)"    # "streams company phone" the call holds of the relay (kemi.sip.media)
    DLG_EMERGENCY = "$dlg_var(emergency)"  # "1": an emergency call (its requests pass the gate's bans)
    # this node's shared memory (kamailio.cfg: pv shvset): 1 while scripts/drain.sh drains the proxy
    DRAINING = "$shv(draining)"


class Table:
    """htables of kamailio.cfg (shared memory of this node)."""

    EMERGENCY_IDS = "emerg"  # user@domain -> ha1 \t callback \t location (routing.encode_emergency_identity),
    #                          refreshed at each authenticated request
    ROUTES = "routes"        # "emergency" -> the emergency trunks last seen in Redis
    EMERGENCY_TRUNKS_KEY = "emergency"
    CALL_IDS = "callids"     # Call-ID -> "1" for every call relayed that is up or ended < CALL_ID_GRACE_S ago
    # the edge (kemi.sip.gate); every item carries its own expiry (the tables' autoexpire is a cap)
    IP_BAN = "ipban"               # source IP -> 1: dropped unanswered while present (BAN_S); 2: a
    #                                site's address with phones in SITE_BAN (kemi.edge.SITE_MARK)
    AUTH_FAIL = "authfail"         # "ip|user@domain" and "ip|*" -> failures in the current window
    AUTH_BAN = "authban"           # the same keys -> 1: blocked (AUTH_BAN_S)
    REGISTERED = "regsrc"          # "ip:port" -> user@domain of the phone registered there, while it lasts
    EMERGENCY_CALLS = "emcalls"    # emergency calls per phone / source / node (routing.emergency_limits)
    # declared sites (a building behind one NAT address): per phone, never the address (kemi.sip.gate)
    SITE_FLOOD = "siteflood"       # "ip:port" and "ip|user@domain" -> requests in the current window
    SITE_BAN = "siteban"           # the same keys -> 1: dropped unanswered while present (BAN_S)
    PEERS = "peers"                # trunk and media-server host -> 1 (kamailio.cfg onsend_route reads it)


# kamailio.cfg onsend_route: a request whose transaction carries this message flag is going to
# phones, and is not sent where Table.PEERS names the destination's address.
PHONE_FLAG = 8
ULC_PROFILE = "reg"  # the $ulc profile the REGISTER's saved contacts are read back into


class Route:
    """Names of the callbacks Kamailio calls back (methods of kemi.sip.app.Router)."""

    FAILURE_TRUNK = "ksr_failure_trunk"
    FAILURE_ANNOUNCEMENT = "ksr_failure_announcement"
    FAILURE_EXTENSION = "ksr_failure_extension"
    FAILURE_RECEPTIONIST = "ksr_failure_receptionist"
    BRANCH_MEDIA = "ksr_branch_media"
    BRANCH_PHONE = "ksr_branch_phone"  # a branch to a TLS phone: its open connection only
    REPLY_MEDIA = "ksr_reply_media"    # replies of a transaction whose SDP goes through rtpengine
    REPLY_BYE = "ksr_reply_bye"        # replies to a party's BYE: the call ends at the other party's 2xx
    FAILURE_BYE = "ksr_failure_bye"    # a party's BYE the other party refused or never answered


class Metric:
    """The proxy's own Prometheus metrics (xhttp_prom, declared with their label in kamailio.cfg),
    in Kamailio's shared memory: every process adds to the same counter. Label values come from
    kemi.metrics only. Kamailio's own statistics (requests and replies by code, dialogs, contacts)
    are on the same page under kamailio_<group>_<name> (xhttp_prom_stats "all")."""

    CALLS_ROUTED = "calls_routed_total"     # category: metrics.CATEGORIES
    REFUSALS = "call_refusals_total"        # reason: metrics.REASONS
    CALLS_FAILED = "calls_failed_total"     # category: metrics.FAILED_CATEGORIES
    REDIS_ERRORS = "redis_errors_total"     # kind: metrics.REDIS_ERRORS
    PREPAID_IN_FLIGHT = "prepaid_reservations_in_flight"  # gauge: Profile.PREPAID's size at each scrape
    AUTH_FAILURES = "auth_failures_total"   # method: metrics.AUTH_METHODS
    BANS = "bans_total"                     # kind: metrics.BAN_KINDS
    TRUNK_FAILOVERS = "trunk_failovers_total"  # trunk: the trunk's provisioned name (metrics.trunk_label)
    POST_DIAL_DELAY = "post_dial_delay_seconds"  # histogram: trunk relayed -> its first 180/183/200
    REDIS_LATENCY = "redis_latency_seconds"      # histogram: each Redis round trip of the routes
    COUNTERS = {CALLS_ROUTED: ("category", metrics.CATEGORIES), REFUSALS: ("reason", metrics.REASONS),
                CALLS_FAILED: ("category", metrics.FAILED_CATEGORIES),
                REDIS_ERRORS: ("kind", metrics.REDIS_ERRORS),
                AUTH_FAILURES: ("method", metrics.AUTH_METHODS), BANS: ("kind", metrics.BAN_KINDS)}
    # counters whose label values come from the provisioned data: each series appears at its first count
    DATA_LABELLED = {TRUNK_FAILOVERS: "trunk"}
    GAUGES = (PREPAID_IN_FLIGHT,)
    HISTOGRAMS = (POST_DIAL_DELAY, REDIS_LATENCY)
    SOCKET = "metrics"                      # kamailio.cfg: the name of the listen socket that serves them
    PREPAID_SIZE_VAR = "$var(prepaid_calls)"


class Profile:
    """Dialog profiles (kamailio.cfg, profiles_no_value): the dialog module counts their members."""

    PREPAID = "prepaid"  # every prepaid call this node carries, from its reservation to its end
    # rtpengine's relay ports in use, one member per anchored media stream (kemi.sip.media): on this
    # node (profiles_no_value), per company and per phone ("company/extension") (profiles_with_value)
    MEDIA = "media"
    MEDIA_COMPANY = "media_co"
    MEDIA_PHONE = "media_phone"
    SIZE_VAR = "$var(profile_size)"


@dataclass(frozen=True)
class Timers:
    """tm timers of a relay, in ms: how long it may ring, how long the peer may stay silent."""

    ring_ms: int
    silent_ms: int


# What no route changes while a message is processed (the Request-URI, $du and the variables do
# change): kept per callback by _Request.scope.
STABLE = frozenset({"$si", "$sp", "$pr", "$rm", "$ci", "$fU", "$fd", "$tU", "$td", "$au", "$Ri", "$Rp", "$ft",
                    "$msg(hdrs)"})


class _Request:
    """The request being routed and the variables that carry a call across callbacks."""

    def __init__(self, ksr):
        self.k = ksr
        self._memos: list[dict] = []  # one per callback being run (callbacks nest: see scope)

    @contextmanager
    def scope(self):
        """One Kamailio callback: the message's fixed parts (STABLE) are read from Kamailio once in
        it. Callbacks nest (a branch route inside t_relay, dialog events inside dlg_bye), each with
        its own message, hence a stack."""
        self._memos.append({})
        try:
            yield self
        finally:
            self._memos.pop()

    # -- the request -------------------------------------------------------------------------
    def pv(self, name: str) -> str | None:
        """A pseudo-variable as text; NotText when its bytes are not UTF-8 or hold a NUL."""
        if self._memos and name in STABLE:
            memo = self._memos[-1]
            if name not in memo:
                memo[name] = self._read(name)  # NotText is not kept: it is raised at every read
            return memo[name]
        return self._read(name)

    def _read(self, name: str) -> str | None:
        try:
            value = _text(name, self.k.pv.get(name))
        except NotText:
            raise
        except UnicodeDecodeError as exc:
            raise NotText(name, exc.object, exc.start, exc.end, exc.reason) from None
        return None if value is None else str(value)

    def lenient(self, name: str) -> str | None:
        """A pseudo-variable as text, or None when it is not text: for log lines and for the
        paths that must go on whatever the request holds (the error boundary, emergency calls)."""
        try:
            return self.pv(name)
        except NotText:
            return None

    @property
    def method(self) -> str:
        return self.lenient("$rm") or ""

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

    def connection(self) -> str | None:
        """The id of the TCP/TLS connection the message came on (None on UDP, or when it is gone)."""
        return self.pv("$conid")

    def party_address(self, by_address: bool) -> str:
        """What a dialog records of the party this message comes from (routing.party_address): on
        TCP/TLS its connection too, unless by_address. One more read, on TCP/TLS only."""
        ip, port = self.source
        transport = self.transport
        bound = transport in routing.CONNECTED and not by_address
        return routing.party_address(transport, ip, port, self.connection() if bound else None, by_address)

    @property
    def call_id(self) -> str:
        """The Call-ID, "" when it is not text (kemi.sip.gate refuses such initial requests; what
        still gets here, an emergency call or an error being logged, must go on)."""
        return self.lenient("$ci") or ""

    def local_hosts(self) -> set[str]:
        """The proxy's own address as a peer names it: ip and ip:port of the receiving socket."""
        ip, port = self.pv("$Ri") or "", self.pv("$Rp") or ""
        return {ip, f"{ip}:{port}"}

    @property
    def local_ip(self) -> str:
        return self.pv("$Ri") or ""

    def header(self, name: str) -> str | None:
        """The first header of that name; NotText (named $hdr(Name)) when it is not text."""
        where = f"$hdr({name})"
        try:
            return _text(where, self.k.hdr.get(name))
        except NotText:
            raise
        except UnicodeDecodeError as exc:
            raise NotText(where, exc.object, exc.start, exc.end, exc.reason) from None

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

    def draining(self) -> bool:
        """Whether ops drain this proxy (scripts/drain.sh): one shared-memory read, on new calls only."""
        return self.k.pv.get(Var.DRAINING) == 1

    def set_ruri(self, uri: str) -> None:
        self.k.pv.sets("$ru", uri)


class _Answers:
    """Answers, headers and forwarding, and the checks every request gets first."""

    # -- answers ---------------------------------------------------------------------------
    def log(self, level: str, text: str) -> None:
        # one line, and no NUL: app_python3 refuses a string that holds one
        getattr(self.k, level)(text.replace("\n", " | ").replace("\x00", "\\x00") + "\n")

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
        """Remove every header of these names the request was received with (any case). Only the
        names present cost a call into Kamailio: the received header block is read once per
        callback anyway (STABLE). A block that is not text: every name is removed, unseen."""
        block = self.lenient("$msg(hdrs)")
        for name in names if block is None else routing.headers_named(block, names):
            self.k.hdr.remove(name)

    # -- forwarding ------------------------------------------------------------------------
    def relay(self, uri: str | None = None, failure_route: str | None = None, timers: Timers | None = None,
              branch_route: str | None = None, unsent: Reply | None = None, answer_unsent: bool = True,
              to_phones: bool | None = None) -> bool:
        """Forward statefully (to uri, else to the current R-URI/destination set); answers
        the error itself when tm cannot send (unsent: with that answer, else tm's own; answer_unsent
        False: not at all, the caller goes on, see keep_transaction_when_unsent). True when sent.
        A relay to uri goes there, whatever a lookup earlier in the transaction set (forget_lookup).

        to_phones True: the branches go to phones found by lookup(), and kamailio.cfg's onsend_route
        drops any of them whose real destination is a trusted peer (PHONE_FLAG); False: to a trunk
        or media server on purpose, in a transaction that may have rung phones before (a failure
        route inherits the flag); None: a request of its own (in-dialog), whose flag is clear."""
        if to_phones:
            self.k.setflag(PHONE_FLAG)
        elif to_phones is False:
            self.k.resetflag(PHONE_FLAG)
        if uri is not None:
            self.set_ruri(uri)
            self.forget_lookup()
        if failure_route is not None:
            self.k.tm.t_on_failure(failure_route)
        if branch_route is not None:
            self.k.tm.t_on_branch(branch_route)
        if timers is not None:
            self.k.tm.t_set_fr(timers.ring_ms, timers.silent_ms)
        if self.k.tm.t_relay() < 0:
            if not answer_unsent:
                return False
            if unsent is not None:
                self.reply(unsent)
            else:
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


class _Phones:
    """Digest auth, registrations and the edge's floods, bans and counters (kemi.sip.gate)."""

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
        """Save the REGISTER's contacts, not answering yet (0x02): answer_register() sends the
        registrar's answer once the proxy has done what must precede it."""
        return self.k.registrar.save("location", 0x02) >= 0

    def answer_register(self) -> None:
        """The registrar's answer to the REGISTER save_contact() processed: 200 with the bindings,
        or its error (e.g. 503 Too many registered contacts)."""
        self.k.registrar.reg_send_reply()

    def reach_through_source(self) -> None:
        """The contacts save_contact() saves next are reached at this request's source (transport,
        address, port: its connection), whatever host they name (registrar received_avp)."""
        ip, port = self.source
        self.set(Var.RECEIVED, f"sip:{ip}:{port};transport={self.transport}")

    def keep_transaction_when_unsent(self) -> None:
        """A relay() that can send on no branch leaves the transaction open, unanswered, for
        another relay() (tm: t_set_disable_internal_reply)."""
        self.k.tm.t_set_disable_internal_reply(1)

    def forget_lookup(self) -> None:
        """Forget where the registrar's lookup pointed the request, so that the next relay() goes to
        its own Request-URI: the destination ($du: a NATed or TLS phone's "received"), the socket it
        forced ($fs: the one the contact registered on) and the contact's branch flags (NAT,
        keepalive). A failure route starts from the request as tm cloned it when it relayed to the
        phones (tm fake_req), all three included: without this, the receptionist's INVITE goes to
        the phone's connection or NAT binding with only its Request-URI changed."""
        self.k.resetdsturi()
        self.k.pv.unset("$fs")   # pv_set_force_sock with a null value: reset_force_socket()
        self.k.pv.seti("$bf", 0)

    def connections_only(self) -> None:
        """Requests forwarded from here on go over TCP/TLS only through a connection that is
        already open (UDP is unaffected). In a branch route (Route.BRANCH_PHONE) it holds for that
        branch only: tm restores the request's send flags after each branch route (t_fwd.c
        add_uac), so neither a later branch nor a failure route's relay inherits it."""
        self.k.set_forward_no_connect()

    def lookup(self, aor_uri: str) -> int:
        """Point the request at every registered contact of an AOR; the registrar's code."""
        self.set_ruri(aor_uri)
        return int(self.k.registrar.lookup("location"))

    # -- the edge: floods, bans, counters, registrations (kemi.sip.gate) --------------------------
    def user_agent(self) -> str | None:
        """The User-Agent, or None (also when it is not text: it only ever names a scanner)."""
        try:
            return self.header("User-Agent")
        except NotText:
            return None

    def flood_check(self) -> int:
        """pike's verdict on the source address: 1 within the limit, -2 flooding from now on,
        -1 still flooding (kamailio.cfg: PIKE_REQS per PIKE_WINDOW_S)."""
        return int(self.k.pike.pike_check_req())

    def cache_has(self, table: str, key: str) -> bool:
        # sht_get answers None for an item past its own expiry, even before the purge timer runs
        return self.k.htable.sht_get(table, key) is not None

    def cache_set_for(self, table: str, key: str, value: int, seconds: int) -> None:
        """An integer item that expires by itself after `seconds` (the table's autoexpire must be > 0)."""
        self.k.htable.sht_setxi(table, key, value, seconds)

    def cache_set_text_for(self, table: str, key: str, value: str, seconds: int) -> None:
        """A text item that expires by itself after `seconds` (the table's autoexpire must be > 0)."""
        self.k.htable.sht_setxs(table, key, value, seconds)

    def cache_remove(self, table: str, key: str) -> None:
        self.k.htable.sht_rm(table, key)

    def count_in_window(self, table: str, key: str, window_s: int) -> int:
        """Add one to a counter that starts at its first count and lasts window_s, fixed (the
        table has updateexpire=0 and initval=0, so an expired counter starts again at 1)."""
        count = int(self.k.htable.sht_inc(table, key))
        if count < 1:  # no initval on the table: never let a broken counter count forever
            self.k.htable.sht_setxi(table, key, 1, window_s)
            return 1
        if count == 1:
            self.k.htable.sht_setex(table, key, window_s)
        return count

    def is_myself(self, uri: str) -> bool:
        """Whether a URI names this proxy (one of its listening addresses and ports, or an alias)."""
        return self.k.is_myself(uri) > 0

    def new_transaction(self) -> int:
        """Handle this request statefully from now on: 1 done, 0 it was a retransmission (tm
        resent the answer), < 0 tm could not (the request is then answered statelessly)."""
        return int(self.k.tm.t_newtran())

    def contacts(self) -> str | None:
        """Every Contact of the request as written (all Contact headers, compact m: too),
        comma-separated: for log lines only; what is judged is saved_contacts()."""
        return self.lenient("$(hdr(Contact)[*])")

    def contact_headers(self) -> int:
        return int(self.pv("$hdrc(Contact)") or 0)

    def saved_contacts(self, aor: str) -> list[edge.SavedContact]:
        """The contacts of the AOR that this very REGISTER saved (its Call-ID and CSeq), as the
        registrar saved them and lookup() will use them, read back through Kamailio's parser
        ($ulc and the {uri.*} transformations). 2 + 8 calls into Kamailio per contact this
        REGISTER saved (3 per other contact of the AOR). The profile stays loaded until the next
        REGISTER fetches (registrar: a fetch frees the previous one), for forget_saved()."""
        if self.k.registrar.reg_fetch_contacts("location", aor, ULC_PROFILE) < 0:
            return []
        count = int(self.k.pv.get(f"$(ulc({ULC_PROFILE}=>count))") or 0)
        call_id, cseq = self.call_id, str(self.pv("$cs") or "")
        saved = []
        for i in range(count):
            field = f"$(ulc({ULC_PROFILE}=>{{}})[{i}]{{}})"
            if self.lenient(field.format("callid", "")) != call_id or \
                    str(self.k.pv.get(field.format("cseq", ""))) != cseq:
                continue
            scheme, socket = self._place(field.format("addr", "{{uri.{}}}"))
            saved.append(edge.SavedContact(scheme=scheme, socket=socket,
                                           maddr=self.lenient(field.format("addr", "{uri.maddr}")) or "",
                                           expires_at=int(self.k.pv.get(field.format("expires", "")) or 0),
                                           index=i))
        return saved

    def _place(self, uri_pv: str) -> tuple[str, str]:
        """(scheme, proto:host:port) of the URI in a pseudo-variable, as Kamailio parses it (uri_pv has
        one {} for the transformation's name: {uri.scheme}, {uri.host}, {uri.port},
        {uri.transport}); a URI without port or transport gets the defaults Kamailio sends with
        (5060/udp, 5061/tls for sips). ("", "") when Kamailio cannot parse it. 4 calls."""
        scheme = (self.lenient(uri_pv.format("scheme")) or "").lower()
        host = self.lenient(uri_pv.format("host")) or ""
        if not scheme or not host:
            return scheme, ""
        proto = (self.lenient(uri_pv.format("transport")) or ("tls" if scheme == "sips" else "udp")).lower()
        port = int(self.k.pv.get(uri_pv.format("port")) or 0) or (5061 if proto == "tls" else 5060)
        return scheme, f"{proto}:{host}:{port}"

    def forget_saved(self, aor: str, saved: list[edge.SavedContact]) -> None:
        """Remove again contacts saved_contacts() returned (the registrar's unregister by ruid)."""
        for contact in saved:
            ruid = self.lenient(f"$(ulc({ULC_PROFILE}=>ruid)[{contact.index}])")
            if ruid:
                self.k.registrar.unregister_ruid("location", aor, ruid)

    def digest_uri(self) -> str | None:
        """The `uri` of the credentials the digest check just accepted."""
        return self.pv("$adu")

    def target_sockets(self) -> list[str]:
        """After a lookup: where each branch is going to be sent, as Kamailio parses it
        (proto:host:port of its destination URI, else of its URI: _place), the Request-URI's
        first, then each appended branch in order ("" when it cannot be parsed). 6 calls for
        one phone, 5 more per other one."""
        count = int(self.k.pv.get("$branch(count)") or 0)
        first = "$(du{{uri.{}}})" if self.pv("$du") else "$(ru{{uri.{}}})"
        places = [self._place(first)[1]]
        for i in range(count):
            which = "dst_uri" if self.pv(f"$(branch(dst_uri)[{i}])") else "uri"
            places.append(self._place(f"$(branch({which})[{i}]{{{{uri.{{}}}}}})")[1])
        return places

    def target_uri(self, index: int) -> str:
        """The URI of a target of target_sockets() (its destination URI, else its URI), for a log line."""
        if index == 0:
            return self.lenient("$du") or self.lenient("$ru") or ""
        i = index - 1
        return self.lenient(f"$(branch(dst_uri)[{i}])") or self.lenient(f"$(branch(uri)[{i}])") or ""

    def publish_peers(self, before: frozenset[tuple[str, int]] | None, now: frozenset[tuple[str, int]]) -> None:
        """Put the trusted peers' hosts this process just read where kamailio.cfg's onsend_route
        looks (Table.PEERS), and take out the ones this process had and that are gone. One call
        per host on a process's first read, then one per change."""
        had = {host for host, _ in before or ()}
        hosts = {host for host, _ in now}
        for host in hosts - had if before is not None else hosts:
            self.k.htable.sht_seti(Table.PEERS, host, 1)
        for host in had - hosts:
            self.k.htable.sht_rm(Table.PEERS, host)

    def keep_targets(self, keep: list[bool]) -> bool:
        """Drop the targets (in targets() order) that keep marks False; False when none is left.
        A refused Request-URI target is replaced by the first branch left."""
        for i in reversed(range(len(keep) - 1)):
            if not keep[i + 1]:
                self.k.pv.unset(f"$(branch(uri)[{i}])")  # a null URI drops the branch
        if keep[0]:
            return True
        if int(self.k.pv.get("$branch(count)") or 0) == 0:
            return False
        uri, dst = self.pv("$(branch(uri)[0])"), self.pv("$(branch(dst_uri)[0])")
        self.set_ruri(uri or "")
        if dst:
            self.set_destination(dst)
        else:
            self.k.pv.unset("$du")
        self.k.pv.unset("$(branch(uri)[0])")
        return True


class _Dialogs:
    """Dialogs, this node's shared memory, and what leaves for a carrier."""

    # -- dialogs -----------------------------------------------------------------------------
    def manage_dialog(self) -> None:
        self.k.dialog.dlg_manage()

    def find_dialog(self) -> bool:
        """Whether this in-dialog request names (Call-ID, tags, either direction) a dialog the module
        tracks. It only looks: $dlg(...)/$dlg_var(...) then read that dialog by the message's own ids,
        and the dialog module acts on the request only at manage_dialog()/loose_route(). (dlg_get()
        would set the dialog context, and a set context makes the module skip the request: what
        hold_dialog() does on purpose for a BYE.)"""
        return self.k.dialog.is_known_dlg() > 0

    def dialog(self, field: str) -> str | None:
        """A field of the current dialog: from_tag, to_tag, from_contact, to_contact, state, ..."""
        return self.pv(f"$dlg({field})")

    def topos_markers(self) -> int:
        """How many topology-hiding markers (routing.TOPOS_DIALOG_HEADER) the request holds, the one
        topos added on receipt included."""
        return int(self.pv(f"$hdrc({routing.TOPOS_DIALOG_HEADER})") or 0)

    def routes_beyond_us(self) -> tuple[list[str], list[str]] | None:
        """The request's Route URIs split into this proxy's own leading entries and the rest (None:
        the first Route is not ours, or there is none)."""
        routes = routing.route_uris(self.pv("$(hdr(Route)[*])"))
        ours = 0
        while ours < len(routes) and self.k.is_myself(routes[ours]) > 0:
            ours += 1
        return (routes[:ours], routes[ours:]) if ours else None

    def hold_dialog(self) -> bool:
        """Make the dialog this request names (Call-ID, tags) the current one. The dialog module then
        leaves the request alone (dlg_onroute returns at once when a dialog context is set, in
        loose_route() and dlg_manage() alike): a BYE passes without ending the dialog. Also what
        dlg_bye() needs (end_call) outside the dialog's own events. False: no such dialog."""
        return self.k.dialog.dlg_get(self.pv("$ci") or "", self.pv("$ft") or "", self.pv("$tt") or "") > 0

    def expire_dialog(self) -> None:
        """The dialog of this message ends at the dialog timer's next tick (within about a second),
        without a BYE (send_bye is off): for a call whose BYE the other party already accepted. The
        timer runs dialog:timeout and dialog:end, which find the call finished.

        The new timeout reaches the dialog's copy in Redis (kamailio.cfg, dialog db_mode) only with the
        next write of the dialog: a variable is written again for it. Without that, a restart within
        that second would bring the ended call back with its old timeout, alive for up to 12 h."""
        self.k.dialog.dlg_set_timeout(1)
        self.k.pv.sets(Var.FINISHED, self.pv(Var.FINISHED) or "dialog:end")

    def set_destination(self, uri: str) -> None:
        self.k.pv.sets("$du", uri)

    def end_call(self) -> None:
        """The proxy hangs up both parties of the current dialog, the callee (the billed leg) first.

        dlg_bye("callee") runs dialog:end inside and leaves no dialog context; the caller's
        BYE then goes through the dialog again, or, when the callee's answer already deleted
        it, as a BYE of tm's own built from what the dialog recorded."""
        d = {name: self.dialog(name) or "" for name in routing.DIALOG_BYE_FIELDS}
        # dlg_bye sends to the Contact: a caller behind a NAT gets tm's BYE, through its binding
        nat_hop = edge.next_hop(d["from_contact"], (self.get(Var.CALLER) or "").partition("#")[0])
        self.k.dialog.dlg_bye("callee")
        if not nat_hop and self.k.dialog.dlg_get(d["callid"], d["from_tag"], d["to_tag"]) > 0 and \
                self.k.dialog.dlg_bye("caller") > 0:
            return
        if self.k.tm.t_uac_send("BYE", d["from_contact"], nat_hop, d["from_bindaddr"],
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

    # -- what leaves for a carrier ------------------------------------------------------------
    def keep_only_headers(self, names: frozenset[str]) -> None:
        """Remove every header of the request whose name (any case) is not in names. Via, From,
        To, Call-ID, CSeq, Contact, Content-Type/-Length, Route, Record-Route and Max-Forwards must
        be in names; headers appended afterwards are not touched. The names come from the received
        header block, and each is removed by name: textopsx keep_hf_re does the same from a regex,
        but 5.6 compiles that regex at every call (regcomp of the whole allow-list was the largest
        single CPU cost of an outbound call). A header block that is not text falls back to it
        (5.6 returns -1 whatever happens there, so there is no result to check)."""
        block = self.lenient("$msg(hdrs)")
        if block is None:
            self.k.textopsx.keep_hf_re(routing.header_names_pattern(names))
            return
        for name in routing.headers_outside(block, names):
            self.k.hdr.remove(name)

    # -- emergency calls ------------------------------------------------------------------------
    def remove_credentials(self) -> None:
        """Every Authorization and Proxy-Authorization header, whether or not it authorised anything."""
        self.remove_headers(["Proxy-Authorization", "Authorization"])


# nat_uac_test flags (nathelper): 1 the Contact names a private address, 2 the top Via's address
# is not the source address, 16 its port is not the source port.
NAT_TEST = 1 | 2 | 16
MEDIA_NAT_TEST = NAT_TEST | 8  # 8: the SDP names a private address
MEDIA_NAT_TEST_REPLY = 1 | 8
NAT_BFLAG = 6      # kamailio.cfg: usrloc nat_bflag, the contact is behind a NAT
SIPPING_BFLAG = 7  # kamailio.cfg: nathelper sipping_bflag, the proxy pings it with OPTIONS


class _Media:
    """NAT traversal (nathelper, rport) and the media relay (rtpengine)."""

    def reply_to_source_port(self) -> None:
        """Answers go back to the address and port the request came from (a NAT's binding), not
        to the Via's private address (force_rport: as if the Via carried ;rport)."""
        self.k.force_rport()

    def behind_nat(self) -> bool:
        return self.k.nathelper.nat_uac_test(NAT_TEST) > 0

    def save_behind_nat(self) -> None:
        """The next save_contact() stores the source address as the contact's "received" (where
        lookup() sends), marks it behind a NAT and has nathelper ping it."""
        self.k.nathelper.fix_nated_register()
        self.k.setbflag(NAT_BFLAG)
        self.k.setbflag(SIPPING_BFLAG)

    def has_sdp(self) -> bool:
        return self.k.textops.has_body_type("application/sdp") > 0

    def media_behind_nat(self, reply: bool = False) -> bool:
        """Whether the party whose SDP this message carries is behind a NAT (its RTP will not come
        from the address and port its SDP names): nathelper finds a private address in its Contact
        or SDP, or (a request) its top Via is not where it came from. (A reply's top Via is the
        proxy's own, so it is not asked about.)"""
        return self.k.nathelper.nat_uac_test(MEDIA_NAT_TEST_REPLY if reply else MEDIA_NAT_TEST) > 0

    def reply_code(self) -> int:
        """In a reply route: the reply's status code."""
        return int(self.pv("$rs") or 0)

    def media_offer(self, flags: str) -> bool:
        """rtpengine rewrites the SDP offer to its own address and ports; False when it failed or
        did not answer (then the message is unchanged)."""
        return self.k.rtpengine.rtpengine_offer(flags) > 0

    def media_answer(self, flags: str) -> bool:
        return self.k.rtpengine.rtpengine_answer(flags) > 0

    def media_block(self) -> bool:
        """rtpengine relays nothing of this call (its Call-ID) until media_unblock()."""
        return self.k.rtpengine.block_media0() > 0

    def media_unblock(self) -> bool:
        return self.k.rtpengine.unblock_media0() > 0

    def media_delete(self) -> bool:
        """rtpengine frees the ports of the call this message belongs to (its Call-ID)."""
        return self.k.rtpengine.rtpengine_delete0() > 0

    def on_reply(self, route: str) -> None:
        self.k.tm.t_on_reply(route)


class _Metrics:
    """Counting what the proxy decides (one KSR call per count), and the page Prometheus scrapes."""

    def count(self, metric: str, label: str) -> None:
        """One more in a counter of Metric, for a label value of kemi.metrics."""
        self.k.xhttp_prom.counter_inc_l1(metric, 1, label)

    def observe(self, metric: str, seconds: float) -> None:
        """One observation of a histogram of Metric.HISTOGRAMS."""
        self.k.xhttp_prom.histogram_observe_l0(metric, f"{seconds:.6f}")

    def metrics_ready(self) -> None:
        """Every series of every counter exists from the start, at 0 (adding 0 never resets one):
        a counter's first increase after a restart then shows in rate() and increase()."""
        for metric, (_, labels) in Metric.COUNTERS.items():
            for label in labels:
                self.k.xhttp_prom.counter_inc_l1(metric, 0, label)

    def join_profile(self, profile: str, value: str | None = None) -> None:
        """The current call counts in a dialog profile (under that value) until its dialog is gone;
        once more at each call (a call with three media streams joins three times)."""
        if value is None:
            self.k.dialog.set_dlg_profile_static(profile)
        else:
            self.k.dialog.set_dlg_profile(profile, value)

    def leave_profile(self, profile: str, value: str | None = None) -> bool:
        """The message's dialog counts once less in a dialog profile (one join_profile undone).
        Not in a request route (the dialog module refuses it there): a reply's, or a timer's."""
        if value is None:
            return self.k.dialog.unset_dlg_profile_static(profile) > 0
        return self.k.dialog.unset_dlg_profile(profile, value) > 0

    def profile_size(self, profile: str, value: str | None = None) -> int:
        """Members of a dialog profile (under that value), in this node's shared memory."""
        if value is None:
            rc = self.k.dialog.get_profile_size_static(profile, Profile.SIZE_VAR)
        else:
            rc = self.k.dialog.get_profile_size(profile, value, Profile.SIZE_VAR)
        if rc < 0:  # the variable still holds the last size read: never judge on it
            raise RuntimeError(f"dialog profile {profile!r} could not be read (is it in kamailio.cfg?)")
        return int(self.k.pv.get(Profile.SIZE_VAR) or 0)

    def on_metrics_socket(self) -> bool:
        return self.lenient("$Rn") == Metric.SOCKET

    def serve_metrics(self) -> None:
        """Answer an HTTP request (xhttp): the metrics, for GET /metrics on the metrics socket only;
        404 for anything else, and anything on the SIP sockets."""
        if not self.on_metrics_socket() or self.k.xhttp_prom.check_uri() <= 0:
            self.k.xhttp.xhttp_reply(404, "Not Found", "text/plain", "")
            return
        self.k.dialog.get_profile_size_static(Profile.PREPAID, Metric.PREPAID_SIZE_VAR)
        size = self.k.pv.get(Metric.PREPAID_SIZE_VAR) or 0
        self.k.xhttp_prom.gauge_set_l0(Metric.PREPAID_IN_FLIGHT, str(size))
        self.k.xhttp_prom.dispatch()


class _Site:
    """A site of several proxies sharing one location (kemi.sip.site, kamailio.cfg "Site")."""

    def save_with_own_path(self) -> None:
        """The contacts the next save_contact() saves carry this proxy's Path, and no Path the phone
        sent (edge.own_path): any Path header is removed, ours appended, and the message re-parsed so
        that the registrar reads only ours (textopsx msg_apply_changes: the registrar reads parsed
        headers, not pending changes). Four KSR calls, per REGISTER of a site's proxy only.

        The Path names this proxy's UDP socket whatever the phone registered on (kamailio.cfg listens
        on udp:SIP_ADDR:SIP_PORT, from the same environment): a sibling sends there, and this proxy
        reaches a TCP or TLS phone through its own connection (the received parameter's transport). A
        sibling must never have to open a TLS connection, which the branch route of TLS phones forbids."""
        ip, port = self.source
        if self.transport == "udp" or not os.environ.get("SIP_ADDR"):
            here = edge.source_address(self.pv("$Ri") or "", int(self.pv("$Rp") or 0), "udp")
        else:
            here = edge.source_address(os.environ["SIP_ADDR"], int(os.environ.get("SIP_PORT") or 5060), "udp")
        self.k.hdr.remove("Path")
        self.k.hdr.append(f"Path: {edge.own_path(here, edge.source_address(ip, port, self.transport))}\r\n")
        self.k.textopsx.msg_apply_changes()

    def follow_preloaded_route(self) -> bool:
        """loose_route() on an initial request whose Route names this proxy (a sibling's, kemi.sip.site):
        True when rr took our entry off. rr answers RR_PRELOADED (-3) for a route set on an initial
        request, and runs its callbacks all the same (path's use_received sets the destination)."""
        return int(self.k.rr.loose_route()) in (1, -3)


class Sip(_Request, _Answers, _Phones, _Dialogs, _Media, _Metrics, _Site):
    """Kamailio as the roles see it: one object, its parts grouped by subject above."""


def kamailio() -> Sip:
    """The Sip of the running Kamailio (app_python3 provides the KSR module)."""
    import KSR  # noqa: PLC0415  (only importable inside Kamailio)

    return Sip(KSR)
