"""Media anchoring: the audio of every call the proxy connects goes through rtpengine.

Phones sit behind NATs; their SDP names private addresses nobody else can reach, and a
carrier must never see them. So every SDP that crosses the proxy is rewritten by rtpengine
to its own public address and ports, and rtpengine relays the RTP. It learns where each
party really is from the first packets that party sends (symmetric RTP, "latching"), which
is what gets media through a NAT. Codecs pass through untouched: rtpengine forwards, it
never transcodes (userspace forwarding, --table=-1).

When rtpengine does not answer an offer, a new call is refused with 503 "Media Relay
Unavailable" (it would have no audio through a NAT) and recorded as refused; an emergency
call goes out with its SDP as the phone wrote it, because a call that may be heard only one
way is better than none.
"""

from __future__ import annotations

from kemi.sip.shell import Route, Sip, Var

# Every SDP names rtpengine in its session and media lines and in its origin (no private
# address is left anywhere in the body); ICE candidates of the phone would name private
# addresses too and are removed (rtpengine is the only candidate either party needs).
FLAGS = "replace-origin replace-session-connection ICE=remove"
OFFERED = "offer"  # Var.MEDIA: the request carried the offer, its replies carry the answer
LATE = "late"      # Var.MEDIA: no SDP in the request: the reply carries the offer, the ACK the answer


class Media:
    def __init__(self, sip: Sip):
        self.sip = sip

    def anchor(self, emergency: bool = False) -> bool:
        """Before an initial INVITE is relayed: its SDP offer to rtpengine, and its replies' SDP
        through rtpengine too. False when the call was refused (answered 503)."""
        sip = self.sip
        if sip.get(Var.MEDIA):
            return True  # the same call on its next branch (a receptionist's redirect)
        if not self.offer():
            ip, port = sip.source
            if emergency:
                sip.log("crit", f"emergency call-id {sip.call_id} from {ip}:{port}: rtpengine did not answer, "
                                f"routed without media anchoring")
                return True
            sip.log("err", f"call-id {sip.call_id} from {ip}:{port} refused: rtpengine did not answer "
                           f"the SDP offer (is it running? RTPENGINE_SOCK)")
            return False
        sip.set(Var.DLG_MEDIA, "1")
        return True

    def offer(self) -> bool:
        """The request's SDP (if any) offered to rtpengine, and its replies handed to reply()."""
        sip = self.sip
        if sip.has_sdp():
            if not sip.media_offer(FLAGS):
                return False
            sip.set(Var.MEDIA, OFFERED)
        else:
            sip.set(Var.MEDIA, LATE)
        sip.on_reply(Route.REPLY_MEDIA)
        return True

    def in_dialog(self) -> None:
        """A request inside an anchored call: a re-INVITE's new offer, an ACK's late answer."""
        sip = self.sip
        if sip.get(Var.DLG_MEDIA) != "1":
            return
        if sip.is_method("INVITE"):
            if not self.offer():
                sip.log("err", f"re-INVITE of call-id {sip.call_id}: rtpengine did not answer, SDP passed on as is")
        elif sip.is_ack() and sip.has_sdp() and not sip.media_answer(FLAGS):
            sip.log("err", f"ACK of call-id {sip.call_id}: rtpengine did not take the answer")

    def reply(self) -> None:
        """A reply (provisional or final) of a transaction whose SDP goes through rtpengine: early
        media (183 from the announcement server, a carrier's ringback) and the answer alike."""
        sip = self.sip
        code = sip.reply_code()
        if not (100 < code < 300 and sip.has_sdp()):
            return
        late = sip.get(Var.MEDIA) == LATE
        done = sip.media_offer(FLAGS) if late else sip.media_answer(FLAGS)
        if not done:
            sip.log("err", f"{code} of call-id {sip.call_id}: rtpengine did not take its SDP, passed on as is")

    def release(self) -> None:
        """The call is over: rtpengine frees its ports now rather than at its own timeout."""
        sip = self.sip
        try:
            if sip.get(Var.DLG_MEDIA) == "1" and not sip.media_delete():
                sip.log("info", f"call-id {sip.call_id}: rtpengine had nothing to delete (it times calls out itself)")
        except Exception as exc:  # the call's record matters more: rtpengine times the call out
            sip.log("err", f"call-id {sip.call_id}: rtpengine delete failed: {type(exc).__name__}: {exc}")

