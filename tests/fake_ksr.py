"""A pure-Python stand-in for Kamailio's KSR module, for unit tests of the SIP roles.

In the manner of Sipwise's KSR mock for lua-ngcp-kamailio: it holds one request (its
pseudo-variables and headers) and records what the script did with it: the R-URI and
the functions it armed, the reply it sent, the headers it added or removed, the
variables it set, the relays it made. Functions whose result depends on Kamailio's
state (registrar lookup, digest check, tm status) answer what the test configures.

Only the KSR functions kemi.sip.shell calls exist here: a call to anything else is an
AttributeError, so a new KSR use in the shell needs a deliberate addition here too.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

# a phone's SDP offer, one audio stream ($rb of a request with a body)
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\n"
       "m=audio 49170 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


@dataclass
class Relay:
    """One t_relay() and the state it was made with."""

    ruri: str
    failure_route: str | None
    branch_route: str | None
    timers: tuple[int, int] | None
    headers: list[str]
    dst: str | None = None          # $du: where it really goes (None: to ruri)
    socket: str | None = None       # $fs: the socket it is forced out of
    bflags: frozenset = frozenset()  # branch 0's flags


class _Module:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr


def _decoded(value):
    """What app_python3 hands Python: strings decoded as strict UTF-8 (bytes that are not raise)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _PV(_Module):
    _HDR = re.compile(r"\$hdr\(([^)]+)\)")
    _HDR_ALL = re.compile(r"\$\(hdr\(([^)]+)\)\[\*\]\)")
    _HDRC = re.compile(r"\$hdrc\(([^)]+)\)")
    _BRANCH = re.compile(r"\$\(branch\((uri|dst_uri)\)\[([0-9]+)\]\)")
    _T_RPL = re.compile(r"\$T_rpl\(\$hdr\(([^)]+)\)\)")
    _DLG = re.compile(r"\$dlg\(([a-z_]+)\)")
    _ALL = re.compile(r"\$\(hdr\(([^)]+)\)\[\*\]\)")

    def get(self, name: str):
        return _decoded(self._get(name))

    _ULC = re.compile(r"\$\(ulc\(([a-z]+)=>([a-z]+)\)(?:\[([0-9]+)\])?(\{uri\.[a-z]+\})?\)")
    _URI_TR = re.compile(r"\$\((du|ru|branch\((?:uri|dst_uri)\)\[[0-9]+\])\{uri\.([a-z]+)\}\)")

    def _get(self, name: str):
        ksr = self.ksr
        if name in ksr.vars:  # what the script set, or what a test says Kamailio would answer
            return ksr.vars[name]
        if name == "$ar":  # the realm of the request's credentials, when it has any
            return ksr.credentials_realm if ksr.request.get("$au") is not None else None
        if name == "$rb":  # the body, when there is one
            return ksr.body if ksr.sdp else None
        match = self._ULC.fullmatch(name)
        if match:  # the registrar's $ulc profile of the last reg_fetch_contacts
            _, attr, index, transformation = match.groups()
            if attr == "count":
                return len(ksr.fetched)
            value = ksr.fetched[int(index or 0)][attr]
            return value if transformation is None else uri_transformation(value, transformation[5:-1])
        match = self._URI_TR.fullmatch(name)
        if match:
            inner = match.group(1)
            value = self._get(f"$({inner})" if inner.startswith("branch") else f"${inner}")
            return None if value is None else uri_transformation(value, match.group(2))
        if name == "$msg(hdrs)":  # the received headers, as Kamailio hands them over
            return "".join(f"{n}: {v}\r\n" for n, v in ksr.headers)
        if name == "$branch(count)":
            return len(ksr.branches)
        match = self._BRANCH.fullmatch(name)
        if match:
            index = int(match.group(2))
            return ksr.branches[index].get(match.group(1)) if index < len(ksr.branches) else None
        match = self._HDR_ALL.fullmatch(name)
        if match:  # every header of that name (or its compact form), joined by commas
            found = ksr.hdr.all(match.group(1))
            if not found:
                return None
            if any(isinstance(v, bytes) for v in found):
                return b",".join(v if isinstance(v, bytes) else v.encode() for v in found)
            return ",".join(found)
        match = self._HDRC.fullmatch(name)
        if match:
            return len(ksr.hdr.all(match.group(1)))
        match = self._T_RPL.fullmatch(name)
        if match:
            return ksr.failure_reply_headers.get(match.group(1))
        match = self._ALL.fullmatch(name)
        if match:  # every header of that name, comma-joined
            values = [v for h, v in ksr.headers if h.lower() == match.group(1).lower()]
            return ",".join(values) if values else None
        match = self._DLG.fullmatch(name)
        if match:  # the dialog the message's Call-ID and tags name, as the module looks it up
            current = ksr.message_dialog()
            return None if current is None else current.get(match.group(1))
        match = self._HDR.fullmatch(name)
        if match:
            return ksr.hdr.get(match.group(1))
        return ksr.request.get(name)

    def sets(self, name: str, value: str) -> None:
        assert isinstance(value, str), f"sets({name!r}) with {type(value).__name__}"
        self._set(name, value)

    def seti(self, name: str, value: int) -> None:
        assert isinstance(value, int), f"seti({name!r}) with {type(value).__name__}"
        self._set(name, value)

    def _set(self, name: str, value) -> None:
        if name == "$ru":
            self.ksr.request["$ru"] = value
            match = re.match(r"sips?:(?:([^@;>]+)@)?", value)
            self.ksr.request["$rU"] = match.group(1) if match else None
            return
        if name == "$bf":  # branch 0's flags, as a bit mask
            self.ksr.bflags = {bit for bit in range(32) if value >> bit & 1}
            return
        self.ksr.vars[name] = value

    def unset(self, name: str) -> None:
        match = self._BRANCH.fullmatch(name)
        if match and match.group(1) == "uri":  # a null URI drops the branch (pv_branch.c)
            index = int(match.group(2))
            if index < len(self.ksr.branches):
                self.ksr.dropped_branches.append(self.ksr.branches.pop(index)["uri"])
            return
        self.ksr.vars.pop(name, None)


class _Hdr(_Module):
    COMPACT = {"contact": "m", "from": "f", "to": "t", "call-id": "i", "via": "v", "expires": "e"}

    def get(self, name: str):
        found = self.all(name)
        return _decoded(found[0]) if found else None

    def all(self, name: str) -> list:
        """Bodies of every header of that name or its compact form, in order (bytes kept as such)."""
        names = {name.lower(), self.COMPACT.get(name.lower(), name.lower())}
        return [value for header, value in self.ksr.headers if header.lower() in names]

    def append(self, text: str) -> int:
        assert text.endswith("\r\n"), f"header without CRLF: {text!r}"
        self.ksr.added_headers.append(text[:-2])
        return 1

    def remove(self, name: str) -> int:
        self.ksr.removed_headers.append(name)
        return 1

    def append_to_reply(self, text: str) -> int:
        assert text.endswith("\r\n"), f"header without CRLF: {text!r}"
        self.ksr.reply_headers.append(text[:-2])
        return 1


class _SL(_Module):
    def send_reply(self, code: int, reason: str) -> int:
        self.ksr._answer(code, reason)
        return 1

    def sl_reply_error(self) -> int:
        self.ksr._answer(500, "Server Internal Error (from the module)")
        return 1


class _TM(_Module):
    def t_on_failure(self, name: str) -> None:
        self.ksr.armed["failure"] = name

    def t_on_reply(self, name: str) -> None:
        self.ksr.armed["on_reply"] = name

    def t_on_branch(self, name: str) -> None:
        self.ksr.armed["branch"] = name

    def t_set_fr(self, ring_ms: int, silent_ms: int) -> int:
        self.ksr.armed["timers"] = (ring_ms, silent_ms)
        return 1

    def t_relay(self) -> int:
        ksr = self.ksr
        if ksr.relay_result < 0:
            return ksr.relay_result
        if ksr.unsendable > 0:  # the first relays find no way to send (the phone's connection is gone)
            ksr.unsendable -= 1
            return -1
        ksr.relays.append(Relay(ksr.request.get("$ru"), ksr.armed.get("failure"), ksr.armed.get("branch"),
                                ksr.armed.get("timers"), list(ksr.added_headers), ksr.pv.get("$du"),
                                ksr.pv.get("$fs"), frozenset(ksr.bflags)))
        return 1

    def t_uac_send(self, method: str, ruri: str, dst: str, socket: str, headers: str, body: str) -> int:
        self.ksr.uac_sent.append((method, ruri, socket, headers))
        self.ksr.uac_next_hops.append(dst)
        return 1

    def t_reply(self, code: int, reason: str) -> int:
        self.ksr._answer(code, reason)
        return 1

    def t_get_status_code(self) -> int:
        return self.ksr.failure_code

    def t_branch_replied(self) -> int:
        return 1 if self.ksr.branch_replied else -1

    def t_is_canceled(self) -> int:
        return 1 if self.ksr.canceled else -1

    def t_check_trans(self) -> int:
        return self.ksr.transaction

    def t_precheck_trans(self) -> int:
        return -1

    def t_set_disable_internal_reply(self, state: int) -> int:
        self.ksr.armed["keep_unsent"] = state
        return 1

    def t_newtran(self) -> int:
        self.ksr.new_transactions += 1
        return self.ksr.newtran_result


class _Auth(_Module):
    def has_credentials(self, realm: str) -> int:
        return 1 if self.ksr.credentials_realm == realm else -1

    def auth_challenge(self, realm: str, flags: int) -> int:
        self.ksr.challenges.append((realm, flags))
        self.ksr._answer(407 if self.ksr.request.get("$rm") != "REGISTER" else 401, "Unauthorized")
        return 1

    def pv_auth_check(self, realm: str, ha1: str, flags: int, checks: int) -> int:
        ksr = self.ksr
        ksr.digest_checks.append((realm, ha1, flags, checks))
        if ksr.auth_result is not None:
            return ksr.auth_result
        return 1 if ksr.good_ha1 == ha1 else -2

    def consume_credentials(self) -> int:
        self.ksr.consumed = True
        return 1


class _Registrar(_Module):
    def save(self, table: str, flags: int) -> int:
        ksr = self.ksr
        aor = ksr.request.get("$tu")
        ksr.saved.append((table, ksr.request.get("$ru") or aor))
        ksr.save_flags = flags
        if ksr.save_result > 0 and ksr.hdr.all("Contact"):
            # the registrar's contacts, keyed by URI as its matching_mode 0 does; `*` or 0 s removes
            location = ksr.location.setdefault(_aor(aor), {})
            header = _seconds(ksr.hdr.get("Expires"))
            for item in ",".join(ksr.hdr.all("Contact")).split(","):
                item = item.strip()
                if item == "*":
                    location.clear()
                    continue
                uri = item[item.index("<") + 1:item.index(">")] if "<" in item else item.split(";")[0]
                param = re.search(r">.*;expires=([0-9]+)", item)
                secs = int(param.group(1)) if param else header if header is not None else 600
                if secs == 0:
                    location.pop(uri, None)
                    continue
                location[uri] = {"addr": uri, "callid": ksr.request["$ci"], "cseq": int(ksr.request["$cs"]),
                                 "expires": int(time.time()) + min(max(secs, 60), 3600), "ruid": f"uloc-{uri}"}
        return ksr.save_result

    def reg_fetch_contacts(self, table: str, uri: str, profile: str) -> int:
        self.ksr.fetched = list(self.ksr.location.get(_aor(uri), {}).values())
        return 1 if self.ksr.fetched else -1

    def unregister_ruid(self, table: str, uri: str, ruid: str) -> int:
        location = self.ksr.location.get(_aor(uri), {})
        for key, contact in list(location.items()):
            if contact["ruid"] == ruid:
                del location[key]
                self.ksr.unregistered.append(key)
        return 1

    def reg_send_reply(self) -> int:
        """The registrar's answer; what the htables held when it went out is kept with it."""
        self.ksr.register_answers.append({table: dict(items) for table, items in self.ksr.htables.items()})
        return 1

    def lookup(self, table: str) -> int:
        """The registered result of the AOR; its bindings (if the test gave some) become the
        Request-URI (the first) and appended branches (the others), as append_branches=1 does."""
        ksr = self.ksr
        aor = ksr.request.get("$ru")
        ksr.lookups.append(aor)
        rc = ksr.registered.get(aor, -1)
        bindings = ksr.bindings.get(aor) or []
        if rc > 0 and bindings:
            ksr.pv.sets("$ru", bindings[0])
            ksr.branches = [{"uri": uri, "dst_uri": None} for uri in bindings[1:]]
        return rc


class _Htable(_Module):
    """Tables of items with their own expiry (ksr.now is the clock); expired items read as absent,
    and sht_inc restarts them at 1 (the tables that count have initval=0 in kamailio.cfg)."""

    def _live(self, table: str, key: str) -> bool:
        ksr = self.ksr
        expires = ksr.expiries.get(table, {}).get(key)
        if expires is not None and ksr.now >= expires:
            ksr.htables.get(table, {}).pop(key, None)
            ksr.expiries[table].pop(key, None)
        return key in ksr.htables.get(table, {})

    def sht_sets(self, table: str, key: str, value: str) -> int:
        self.ksr.htables.setdefault(table, {})[key] = value
        return 1

    def sht_get(self, table: str, key: str):
        return self.ksr.htables[table][key] if self._live(table, key) else None

    def sht_seti(self, table: str, key: str, value: int) -> int:
        assert isinstance(value, int)
        self.ksr.htables.setdefault(table, {})[key] = value
        return 1

    def sht_setxi(self, table: str, key: str, value: int, expire_s: int) -> int:
        assert isinstance(value, int) and isinstance(expire_s, int) and expire_s > 0
        self.ksr.htables.setdefault(table, {})[key] = value
        self.ksr.expiries.setdefault(table, {})[key] = self.ksr.now + expire_s
        return 1

    def sht_setxs(self, table: str, key: str, value: str, expire_s: int) -> int:
        assert isinstance(value, str) and isinstance(expire_s, int) and expire_s > 0
        self.ksr.htables.setdefault(table, {})[key] = value
        self.ksr.expiries.setdefault(table, {})[key] = self.ksr.now + expire_s
        return 1

    def sht_setex(self, table: str, key: str, expire_s: int) -> int:
        if not self._live(table, key):
            return -1
        self.ksr.expiries.setdefault(table, {})[key] = self.ksr.now + expire_s
        return 1

    def sht_inc(self, table: str, key: str) -> int:
        """The new value; an absent or expired item starts at initval (0) + 1, without an expiry."""
        if not self._live(table, key):
            self.ksr.expiries.get(table, {}).pop(key, None)
            self.ksr.htables.setdefault(table, {})[key] = 0
        self.ksr.htables[table][key] += 1
        return self.ksr.htables[table][key]

    def sht_rm(self, table: str, key: str) -> int:
        self.ksr.htables.get(table, {}).pop(key, None)
        self.ksr.expiries.get(table, {}).pop(key, None)
        return 1


class _Textopsx(_Module):
    # header types keep_hf never removes (textopsx.c keep_hf_helper), with their compact forms
    ALWAYS_KEPT = {"from", "f", "to", "t", "call-id", "i", "cseq", "via", "v", "contact", "m", "content-length",
                   "l", "content-type", "c", "route", "record-route", "max-forwards"}

    def keep_hf_re(self, pattern: str) -> int:
        ksr = self.ksr
        ksr.header_filters.append(pattern)
        regex = re.compile(pattern, re.IGNORECASE)
        for name, _ in ksr.headers:
            if name.lower() not in self.ALWAYS_KEPT and not regex.search(name):
                ksr.removed_headers.append(name)
        return -1  # 5.6 returns -1 whatever happened


class _Dialog(_Module):
    def dlg_manage(self) -> int:
        self.ksr.dialog_managed += 1
        return 1

    def is_known_dlg(self) -> int:
        return 1 if self.ksr.message_dialog() is not None else -1

    def dlg_bye(self, side: str) -> int:
        self.ksr.dialog_byes.append(side)
        return self.ksr.dlg_bye_result

    def set_dlg_profile_static(self, profile: str) -> int:
        self.ksr.profiles.append(profile)
        return 1

    def get_profile_size_static(self, profile: str, spv: str) -> int:
        self.ksr.vars[spv] = self.ksr.profile_sizes.get(profile, 0)
        return 1

    def set_dlg_profile(self, profile: str, value: str) -> int:
        self.ksr.profiles.append(f"{profile}={value}")
        return 1

    def unset_dlg_profile_static(self, profile: str) -> int:
        if profile not in self.ksr.profiles:
            return -1
        self.ksr.profiles.remove(profile)
        return 1

    def unset_dlg_profile(self, profile: str, value: str) -> int:
        return self.unset_dlg_profile_static(f"{profile}={value}")

    def get_profile_size(self, profile: str, value: str, spv: str) -> int:
        self.ksr.vars[spv] = self.ksr.profile_sizes.get(f"{profile}={value}", 0)
        return 1

    def dlg_get(self, call_id: str, from_tag: str, to_tag: str) -> int:
        """Either direction, as get_dlg() matches; the dialog becomes the context (held)."""
        known = self.ksr.known_dialog
        found = known is not None and call_id == known["callid"] and \
            {from_tag, to_tag} == {known["from_tag"], known["to_tag"]}
        self.ksr.dialog_held += found
        return 1 if found else -1

    def dlg_set_timeout(self, seconds: int) -> int:
        self.ksr.dialog_timeouts.append(seconds)
        return 1 if self.ksr.message_dialog() is not None else -1


class _XhttpProm(_Module):
    """Counters and gauges as xhttp_prom keeps them: by (name, label values); a page is served by dispatch()."""

    def counter_inc_l1(self, name: str, number: int, label: str) -> int:
        assert isinstance(number, int) and number >= 0 and label, (name, number, label)
        key = (name, label)
        self.ksr.counters[key] = self.ksr.counters.get(key, 0) + number
        return 1

    def histogram_observe_l0(self, name: str, value: str) -> int:
        assert isinstance(value, str) and float(value) >= 0, (name, value)
        self.ksr.observations.setdefault(name, []).append(float(value))
        return 1

    def gauge_set_l0(self, name: str, value: str) -> int:
        assert isinstance(value, str)
        self.ksr.gauges[name] = float(value)
        return 1

    def check_uri(self) -> int:
        return 1 if self.ksr.request.get("$ru") == "/metrics" else 0

    def dispatch(self) -> int:
        self.ksr.http_replies.append((200, "metrics"))
        return 1


class _Xhttp(_Module):
    def xhttp_reply(self, code: int, reason: str, ctype: str, body: str) -> int:
        self.ksr.http_replies.append((code, reason))
        return 1


class _RR(_Module):
    def record_route(self) -> int:
        self.ksr.record_routed += 1
        return 1

    def loose_route(self) -> int:
        return self.ksr.loose_route_result


def _aor(uri: str | None) -> str:
    return re.sub(r"^sips?:", "", uri or "").split(";")[0].lower()


def _seconds(text) -> int | None:
    return int(text) if isinstance(text, str) and text.strip().isdigit() else None


def uri_transformation(uri: str, name: str):
    """A stand-in for Kamailio's {uri.scheme}, {uri.host}, {uri.port}, {uri.transport}, {uri.maddr}
    on the URIs tests give (None where Kamailio fails to parse: it logs and gives no value)."""
    match = re.fullmatch(r"(sips?):(?:[^@]*@)?(\[[^\]]+\]|[^:;?>]+)(?::([0-9]+))?([^?>]*)", uri.strip())
    if match is None:
        return None
    scheme, host, port, params = match.groups()
    found = dict(p.partition("=")[::2] for p in params.lower().split(";") if p)
    values = {"scheme": scheme, "host": host, "port": int(port or 0), "transport": found.get("transport", ""),
              "maddr": found.get("maddr", "")}
    if name not in values:
        raise AssertionError(f"no fake for {{uri.{name}}}")
    return values[name]


class FakeKSR:
    """One request through the script. Configure what Kamailio would answer, then read what was done."""

    def __init__(self, method: str = "INVITE", ruri: str = "sip:2002@acme.test", *, src: str = "127.0.0.10",
                 sport: int = 5060, from_uri: str = "sip:2001@acme.test", to_uri: str | None = None,
                 call_id: str = "call-1", auth_user: str | None = None, headers: list[tuple[str, str]] = (),
                 local: tuple[str, int] = ("127.0.0.1", 5060), transport: str = "udp",
                 from_tag: str | None = "ftag-1", to_tag: str | None = None):
        to_uri = to_uri or from_uri if method == "REGISTER" else (to_uri or ruri)
        # what phones put in the digest: the Request-URI they sent the request to
        digest_uri = ruri if auth_user is not None else None
        self.request: dict[str, object] = {
            "$rm": method, "$ru": ruri, "$rU": _user(ruri), "$si": src, "$sp": sport, "$ci": call_id,
            "$fu": from_uri, "$fU": _user(from_uri), "$fd": _host(from_uri),
            "$tu": to_uri, "$tU": _user(to_uri), "$td": _host(to_uri), "$au": auth_user,
            "$Ri": local[0], "$Rp": local[1], "$pr": transport, "$ft": from_tag, "$tt": to_tag,
            "$adu": digest_uri, "$cs": "1",
        }
        self.headers = list(headers)
        # what Kamailio would answer
        self.credentials_realm: str | None = None  # the realm of the request's credentials
        self.good_ha1: str | None = None            # pv_auth_check succeeds with this HA1
        self.auth_result: int | None = None         # or always returns this
        self.registered: dict[str, int] = {}        # AOR -> lookup() result (absent: -1)
        self.bindings: dict[str, list[str]] = {}    # AOR -> its contacts, for lookup() to point at
        self.pike = _Simple(pike_check_req=lambda: self.pike_verdict)
        self.pike_verdict = 1                       # 1 within the limit, -2 newly flooding, -1 flooding
        self.newtran_result = 1                     # t_newtran(): 0 a retransmission, < 0 failed
        self.now = 0.0                              # the htables' clock (seconds)
        self.save_result = 1
        self.location: dict[str, dict[str, dict]] = {}  # AOR -> contact URI -> $ulc fields (save())
        self.fetched: list[dict] = []                    # the $ulc profile (reg_fetch_contacts)
        self.unregistered: list[str] = []                # contacts unregister_ruid() removed
        self.flags: set[int] = set()                     # message flags (setflag)
        self.relay_result = 1
        self.failure_code = 0
        self.failure_reply_headers: dict[str, str] = {}
        self.branch_replied = False
        self.canceled = False
        self.transaction = -1                       # t_check_trans()
        self.loose_route_result = -1
        self.in_dialog = to_tag is not None         # has_totag()
        self.sane = True
        self.hops = True
        self.nated = False                          # nat_uac_test() finds a NAT
        self.sdp = method == "INVITE"               # the message carries an SDP body
        self.body: str | bytes = SDP                  # $rb, when sdp
        self.nat_tests: list[int] = []               # nat_uac_test() flags asked
        self.media_up = True                        # rtpengine answers
        self.reply_status = 0                       # $rs, in a reply route
        # what the script did
        self.vars: dict[str, object] = {}
        self.added_headers: list[str] = []
        self.removed_headers: list[str] = []
        self.reply_headers: list[str] = []
        self.replies: list[tuple[int, str]] = []
        self.relays: list[Relay] = []
        self.armed: dict[str, object] = {}
        self.challenges: list[tuple[str, int]] = []
        self.digest_checks: list[tuple] = []
        self.consumed = False
        self.saved: list[tuple] = []
        self.save_flags: int | None = None
        self.register_answers: list[dict] = []  # the htables as each registrar answer went out
        self.lookups: list[str] = []
        self.htables: dict[str, dict[str, str]] = {}
        self.expiries: dict[str, dict[str, float]] = {}  # table -> key -> when the item expires
        self.branches: list[dict] = []              # appended branches: {"uri", "dst_uri"}
        self.dropped_branches: list[str] = []
        self.new_transactions = 0
        self.header_filters: list[str] = []              # keep_hf_re patterns
        self.dialog_managed = 0
        self.known_dialog: dict | None = None    # the dialog the module tracks ($dlg(...) fields)
        self.dialog_byes: list[str] = []
        self.dlg_bye_result = 1
        self.dialog_held = 0                     # dlg_get() that found the dialog (its context set)
        self.dialog_timeouts: list[int] = []     # dlg_set_timeout() calls
        self.uac_sent: list[tuple] = []
        self.uac_next_hops: list[str] = []      # t_uac_send's next hop ("" : the R-URI)
        self.record_routed = 0
        self.no_connect = False                  # set_forward_no_connect()
        self.unsendable = 0                      # so many t_relay() calls fail to send first
        self.logs: list[tuple[str, str]] = []
        self.rport_forced = False
        self.bflags: set[int] = set()
        self.nat_registered = 0                     # fix_nated_register() calls
        self.media_ops: list[tuple[str, str]] = []  # (offer|answer|delete, flags) sent to rtpengine
        self.counters: dict[tuple[str, str], int] = {}  # (metric, label) -> value (xhttp_prom)
        self.observations: dict[str, list[float]] = {}  # histogram -> values observed (xhttp_prom)
        self.gauges: dict[str, float] = {}
        self.profiles: list[str] = []                   # dialog profiles the call joined
        self.profile_sizes: dict[str, int] = {}         # what get_profile_size answers
        self.http_replies: list[tuple[int, str]] = []
        # the modules
        self.pv, self.hdr, self.sl, self.tm = _PV(self), _Hdr(self), _SL(self), _TM(self)
        self.auth, self.registrar, self.htable = _Auth(self), _Registrar(self), _Htable(self)
        self.dialog, self.rr = _Dialog(self), _RR(self)
        self.textopsx = _Textopsx(self)
        self.xhttp_prom, self.xhttp = _XhttpProm(self), _Xhttp(self)
        self.tmx = _TM(self)
        self.siputils = _Simple(has_totag=lambda: 1 if self.in_dialog else -1)
        self.sanity = _Simple(sanity_check_defaults=lambda: 1 if self.sane else -1)
        self.maxfwd = _Simple(process_maxfwd=lambda limit: 1 if self.hops else -1)
        self.nathelper = _Simple(nat_uac_test=self._nat_uac_test,
                                 fix_nated_register=self._fix_nated_register)
        self.textops = _Simple(has_body_type=lambda kind: 1 if self.sdp and kind == "application/sdp" else -1)
        self.rtpengine = _Simple(rtpengine_offer=lambda flags: self._media("offer", flags),
                                 rtpengine_answer=lambda flags: self._media("answer", flags),
                                 rtpengine_delete0=lambda: self._media("delete", ""),
                                 block_media0=lambda: self._media("block", ""),
                                 unblock_media0=lambda: self._media("unblock", ""))

    def _nat_uac_test(self, flags: int) -> int:
        self.nat_tests.append(flags)
        return 1 if self.nated else -1

    def _fix_nated_register(self) -> int:
        self.nat_registered += 1
        return 1

    def _media(self, op: str, flags: str) -> int:
        self.media_ops.append((op, flags))
        return 1 if self.media_up else -1

    def force_rport(self) -> bool:
        self.rport_forced = True
        return True

    def setflag(self, flag: int) -> bool:
        self.flags.add(flag)
        return True

    def resetflag(self, flag: int) -> bool:
        self.flags.discard(flag)
        return True

    def isflagset(self, flag: int) -> bool:
        return flag in self.flags

    def setbflag(self, flag: int) -> bool:
        self.bflags.add(flag)
        return True

    def message_dialog(self) -> dict | None:
        """known_dialog when the request's Call-ID and both tags name it, in either direction."""
        known, req = self.known_dialog, self.request
        if known is None or req["$ci"] != known["callid"] or \
                {req["$ft"], req["$tt"]} != {known["from_tag"], known["to_tag"]}:
            return None
        return known

    # -- core --------------------------------------------------------------------------------
    def resetdsturi(self) -> None:
        self.request.pop("$du", None)
        self.vars.pop("$du", None)

    def set_forward_no_connect(self) -> bool:
        self.no_connect = True
        return True

    def is_myself(self, uri: str) -> int:
        """Whether the URI names the receiving socket ($Ri:$Rp; no port means 5060)."""
        match = re.match(r"<?sips?:(?:[^@;>]+@)?([^;>:]+)(?::([0-9]+))?", uri or "")
        if not match:
            return -1
        port = int(match.group(2) or 5060)
        return 1 if (match.group(1), port) == (self.request["$Ri"], int(self.request["$Rp"])) else -1

    # -- request kind -------------------------------------------------------------------------
    def is_myself(self, uri: str) -> int:
        """A URI naming this proxy's socket ($Ri:$Rp)."""
        match = re.match(r"sips?:(?:[^@]+@)?([^;:>]+)(?::([0-9]+))?", uri)
        if not match:
            return -1
        return 1 if (match.group(1), int(match.group(2) or 5060)) == \
            (self.request["$Ri"], int(self.request["$Rp"])) else -1

    def is_ACK(self) -> bool:
        return self.request["$rm"] == "ACK"

    def is_CANCEL(self) -> bool:
        return self.request["$rm"] == "CANCEL"

    # -- logging ------------------------------------------------------------------------------
    def _log(self, level: str, text: str) -> None:
        assert text.endswith("\n")
        self.logs.append((level, text[:-1]))

    def info(self, text: str) -> None:
        self._log("info", text)

    def notice(self, text: str) -> None:
        self._log("notice", text)

    def warn(self, text: str) -> None:
        self._log("warn", text)

    def err(self, text: str) -> None:
        self._log("err", text)

    def crit(self, text: str) -> None:
        self._log("crit", text)

    def dbg(self, text: str) -> None:
        self._log("dbg", text)

    def _answer(self, code: int, reason: str) -> None:
        self.replies.append((code, reason))

    # -- reading what happened -----------------------------------------------------------------
    def counted(self, metric: str) -> dict[str, int]:
        """label -> value of a counter, the series that moved only."""
        return {label: n for (name, label), n in self.counters.items() if name == metric and n}

    @property
    def reply(self) -> tuple[int, str] | None:
        """The one answer sent (an AssertionError if there were several)."""
        assert len(self.replies) <= 1, f"several answers: {self.replies}"
        return self.replies[0] if self.replies else None

    @property
    def relay(self) -> Relay | None:
        assert len(self.relays) <= 1, f"several relays: {self.relays}"
        return self.relays[0] if self.relays else None

    def leaving_headers(self) -> list[tuple[str, str]]:
        """The headers of the request as relayed: the received ones not removed, then the added ones."""
        removed = {name.lower() for name in self.removed_headers}
        kept = [(name, value) for name, value in self.headers if name.lower() not in removed]
        return kept + [tuple(part.strip() for part in h.split(":", 1)) for h in self.added_headers]

    def filtered_to(self, names: frozenset[str]) -> bool:
        """Whether every received header outside names was removed, and every one inside leaves."""
        outside = {n for n, _ in self.headers if n.lower() not in names}
        inside = [(n, v) for n, v in self.headers if n.lower() in names]
        leaving = self.leaving_headers()
        return outside <= set(self.removed_headers) and all(h in leaving for h in inside)

    def logged(self, level: str) -> list[str]:
        return [text for lvl, text in self.logs if lvl == level]


class _Simple:
    def __init__(self, **functions):
        self.__dict__.update(functions)


def _user(uri: str | None) -> str | None:
    match = re.match(r"<?sips?:([^@;>]+)@", uri or "")
    return match.group(1) if match else None


def _host(uri: str | None) -> str | None:
    match = re.match(r"<?sips?:(?:[^@;>]+@)?([^;>:]+)", uri or "")
    return match.group(1) if match else None
