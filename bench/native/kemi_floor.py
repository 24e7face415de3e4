"""The native baseline's routing (bench/native/kamailio-native.cfg) written in KEMI Python instead.

Not a product script: the floor of what any Python route costs for the native config's work. It makes
the same calls into Kamailio as the native script makes, line for line, and nothing else (no gate, no
numbering plan, no money, no records beyond the native XADD). bench/cpu_per_call.py --floor runs it as
a third system (kamailio-native.cfg with -A KEMI_FLOOR); the difference between it and the native
config is the price of entering Python and calling KSR, whatever the route does.

Imports nothing but KSR and the standard library: it runs in Debian's embedded interpreter as is.
"""

from __future__ import annotations

import os
import re

import KSR

EXTENSION = re.compile(r"2[0-9]{3}")
MEDIA_FLAGS = "replace-origin replace-session-connection ICE=remove"


class Floor:
    def __init__(self, trunk_uri: str, trunk_ip: str, media: bool):
        self.trunk_uri = trunk_uri
        self.trunk_ip = trunk_ip
        self.media = media

    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg) -> int:
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check(17895, 7) < 0:
            return 1
        if KSR.siputils.has_totag() > 0:
            self.in_dialog()
            return 1
        if KSR.is_CANCEL() or KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.tm.t_check_trans() == 0:
            return 1  # a retransmission: tm answered it
        if KSR.is_REGISTER():
            self.register()
        elif KSR.is_OPTIONS():
            KSR.sl.sl_send_reply(200, "OK")
        elif not KSR.is_INVITE():
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
        elif KSR.pv.get("$si") == self.trunk_ip:
            self.from_trunk()
        else:
            self.from_phone()
        return 1

    def authenticated(self, header: str) -> bool:
        realm = KSR.pv.get("$fd")
        if KSR.hdr.is_present(header) < 0:
            KSR.auth.auth_challenge(realm, 1)
            return False
        ha1 = ""
        if KSR.ndb_redis.redis_cmd_p2("r", "HGET %s %s", f"native:ha1:{realm}", KSR.pv.get("$fU"), "ha1") >= 0 \
                and KSR.pv.get("$redis(ha1=>type)") == 1:
            ha1 = KSR.pv.get("$redis(ha1=>value)")
        if KSR.auth.pv_auth_check(realm, ha1, 1, 1) < 0:
            KSR.auth.auth_challenge(realm, 1)
            return False
        KSR.auth.consume_credentials()
        return True

    def register(self) -> None:
        if self.authenticated("Authorization") and KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()

    def from_phone(self) -> None:
        if not self.authenticated("Proxy-Authorization"):
            return
        dialled = KSR.pv.get("$rU") or ""
        if EXTENSION.fullmatch(dialled):
            KSR.pv.sets("$ru", f"sip:{dialled}@{KSR.pv.get('$fd')}")
            if KSR.registrar.lookup("location") < 0:
                KSR.sl.sl_send_reply(480, "Temporarily Unavailable")
                return
        else:
            KSR.pv.sets("$du", self.trunk_uri)
        self.relay()

    def from_trunk(self) -> None:
        if KSR.ndb_redis.redis_cmd_p1("r", "HGET native:did %s", KSR.pv.get("$rU") or "", "did") < 0 \
                or KSR.pv.get("$redis(did=>type)") != 1:
            KSR.sl.sl_send_reply(404, "Not Found")
            return
        KSR.pv.sets("$ru", "sip:" + KSR.pv.get("$redis(did=>value)"))
        if KSR.registrar.lookup("location") < 0:
            KSR.sl.sl_send_reply(480, "Temporarily Unavailable")
            return
        self.relay()

    def relay(self) -> None:
        KSR.dialog.dlg_manage()
        KSR.rr.record_route()
        if self.media:
            if KSR.textops.has_body_type("application/sdp") > 0 and KSR.rtpengine.rtpengine_manage(MEDIA_FLAGS) < 0:
                KSR.sl.sl_send_reply(503, "Media Relay Unavailable")
                return
            KSR.tm.t_on_reply("ksr_media_reply")
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def in_dialog(self) -> None:
        if KSR.rr.loose_route() > 0:
            if KSR.is_INVITE():
                KSR.rr.record_route()
            if self.media and KSR.is_BYE():
                KSR.rtpengine.rtpengine_delete0()
            KSR.tm.t_relay()
        elif KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
        else:
            KSR.sl.sl_send_reply(404, "Not Here")

    def ksr_media_reply(self, msg) -> int:
        if KSR.textops.has_body_type("application/sdp") > 0:
            KSR.rtpengine.rtpengine_manage(MEDIA_FLAGS)
        return 1

    def ksr_dialog_event(self, msg, evname: str) -> int:
        if evname == "dialog:end":
            start = int(KSR.pv.get("$dlg(start_ts)") or 0)  # an integer: safe inside the command's format
            KSR.ndb_redis.redis_cmd_p3("r", f"XADD native:cdr MAXLEN ~ 1000000 * ci %s from %s to %s start {start}",
                                       KSR.pv.get("$dlg(callid)") or "", KSR.pv.get("$dlg(from_uri)") or "",
                                       KSR.pv.get("$dlg(to_uri)") or "", "x")
        return 1


def mod_init() -> Floor:
    return Floor(os.environ["TRUNK_URI"], os.environ["TRUNK_IP"], os.environ.get("FLOOR_MEDIA") == "1")
