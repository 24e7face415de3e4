"""Media anchoring: the audio of every call the proxy connects goes through rtpengine.

Phones sit behind NATs; their SDP names private addresses nobody else can reach, and a
carrier must never see them. So every SDP that crosses the proxy is rewritten by rtpengine
to its own public address and ports, and rtpengine relays the RTP. Codecs pass through
untouched: rtpengine forwards, it never transcodes (userspace forwarding, --table=-1).

Each party's media is locked to it (SECURITY.md, class 20: RTP bleed, injection, reflection),
with rtpengine's own per-stream flags (lock_flags): symmetric RTP, `strict-source` (once a
party's address and port are known, packets from anywhere else are dropped, not relayed), and
where its audio goes:
- a phone: to the address its signalling came from (`SIP-source-address`), never to the one its
  SDP names, so an SDP naming somebody else cannot aim a call's audio at them; when its SDP
  holds the truth (no NAT in between), its SDP port too, fixed from the start
  (`endpoint-learning-off`); behind a NAT, whose port mapping nobody can know in advance, the
  port is learned from the first packet (`endpoint-learning-immediate`) and fixed from then on;
- a trunk or a media server (trusted): to the address its SDP names (a carrier's media gateway
  is often not its signalling host), fixed from the start.

rtpengine's relay ports are a shared, finite resource, so what one phone or one company can take
is bounded (offer_refusal): an SDP too big or with too many streams is refused before rtpengine
sees it; every anchored call counts its streams in dialog profiles (node, company, phone), and a
new call over its company's, its phone's or the node's share is refused, except emergency calls,
for which the node keeps a reserve and which are never refused (they go out unanchored instead).
An offer rtpengine may have taken is deleted on every way a call can fail.

When rtpengine does not answer an offer, a new call is refused with 503 "Media Relay
Unavailable" (it would have no audio through a NAT) and recorded as refused; an emergency
call goes out with its SDP as the phone wrote it, because a call that may be heard only one
way is better than none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from kemi import replies
from kemi.replies import Reply
from kemi.sip.shell import Metric, Profile, Route, Sip, Var

# Every SDP names rtpengine in its session and media lines and in its origin (no private
# address is left anywhere in the body); ICE candidates of the phone would name private
# addresses too and are removed (rtpengine is the only candidate either party needs).
REWRITE = "replace-origin replace-session-connection ICE=remove"
# Where the audio of the party whose SDP this is goes, and where it may come from (rtpengine's
# ng flags, per stream of that party; kemi.sip.media module docstring).
LOCK = "strict-source"  # symmetric RTP is rtpengine's default (the "symmetric" flag is unknown to 10.5)
PHONE_LOCKED = f"{REWRITE} {LOCK} SIP-source-address endpoint-learning-off"
PHONE_BEHIND_NAT = f"{REWRITE} {LOCK} SIP-source-address endpoint-learning-immediate"
TRUSTED_PEER = f"{REWRITE} {LOCK} trust-address endpoint-learning-off"
OFFERED = "offer"  # Var.MEDIA: the request carried the offer, its replies carry the answer
HELD = "held"      # Var.MEDIA: the same, and rtpengine relays nothing until the first answer
LATE = "late"      # Var.MEDIA: no SDP in the request: the reply carries the offer, the ACK the answer
PORTS_PER_STREAM = 4  # rtpengine: RTP and RTCP on each side of the call


def lock_flags(trusted_peer: bool, behind_nat: bool) -> str:
    """rtpengine's flags for an SDP from a trusted peer, or from a phone (behind a NAT or not)."""
    if trusted_peer:
        return TRUSTED_PEER
    return PHONE_BEHIND_NAT if behind_nat else PHONE_LOCKED


def media_streams(body: str) -> int:
    """How many media streams rtpengine would make of this body: at most one per line that starts
    with "m=". (rtpengine's sdp_parse reads a line from after a LF, whatever precedes the LF, and
    stops at an empty line; Kamailio hands it the SDP part of the body: so this counts at least
    as many as it will ever see.)"""
    return sum(1 for line in body.split("\n") if line.startswith("m="))


def connection_addresses(body: str) -> set[str]:
    """Every address the body's c= lines name (session and media level, without a TTL or count)."""
    found = set()
    for line in body.split("\n"):
        if line.startswith("c="):
            parts = line[2:].strip().split()
            found.add(parts[2].split("/")[0] if len(parts) >= 3 else "")
    return found


def names_only(body: str, ip: str) -> bool:
    """Whether every connection address of the SDP is ip (the party's signalling source): then its
    RTP comes from there, at the ports its m= lines name, unless a NAT is in between."""
    return connection_addresses(body) == {ip}


@dataclass(frozen=True)
class Limits:
    """What one SDP and the anchored calls may take of rtpengine (kemi.settings: SDP_MAX_*,
    MEDIA_STREAMS_*); streams, each PORTS_PER_STREAM relay ports."""

    sdp_max_bytes: int
    sdp_max_streams: int
    node: int
    emergency_reserve: int
    per_company: int
    per_phone: int


@dataclass(frozen=True)
class InUse:
    """Streams anchored now (dialog profiles): on this node, for the company, for the phone."""

    node: int
    company: int = 0
    phone: int = 0


def media_limits(settings) -> Limits:
    """The Limits of kemi.settings.Settings."""
    return Limits(settings.sdp_max_bytes, settings.sdp_max_streams, settings.media_streams_max,
                  settings.media_emergency_reserve, settings.media_streams_per_company,
                  settings.media_streams_per_phone)


def sdp_refusal(size: int, streams: int, limits: Limits) -> Reply | None:
    """The answer to an SDP too big for rtpengine to be shown, or None."""
    if size > limits.sdp_max_bytes:
        return replies.SDP_TOO_LARGE
    if streams > limits.sdp_max_streams:
        return replies.TOO_MANY_STREAMS
    return None


def share_refusal(streams: int, used: InUse, limits: Limits, emergency: bool) -> Reply | None:
    """The answer to a call whose streams would take more than its share of the relay, or None.
    An ordinary call leaves the node's emergency reserve alone; an emergency call has no company
    or phone limit (and is never refused: its caller routes it unanchored instead)."""
    if emergency:
        return replies.MEDIA_RELAY_FULL if used.node + streams > limits.node else None
    if used.node + streams > limits.node - limits.emergency_reserve:
        return replies.MEDIA_RELAY_FULL
    if used.company + streams > limits.per_company:
        return replies.COMPANY_MEDIA_LIMIT
    if used.phone + streams > limits.per_phone:
        return replies.PHONE_MEDIA_LIMIT
    return None


def phone_key(rec: dict | None) -> str | None:
    """The phone a call's relay ports count against: its company's extension (the caller's, or
    the callee's for a call from outside), None when the call has none."""
    if not rec or not rec.get("company") or not rec.get("extension"):
        return None
    return f"{rec['company']}/{rec['extension']}"


class Media:
    def __init__(self, sip: Sip, limits: Limits | None = None,
                 trusted: Callable[[tuple[str, int]], bool] | None = None):
        self.sip = sip
        self.limits = limits
        self.trusted = trusted or (lambda source: False)
        self.refusal: Reply | None = None  # why the last anchor() refused the call
        self._held: tuple[int, str, str] | None = None  # (streams, company, phone) anchor() let through
        self._at_source = False  # the SDP judge_sdp() read names only its sender's source address

    def flags(self, reply: bool = False) -> str:
        """The flags for the SDP of the message being processed (judge_sdp() read it), by who sent
        it: a phone's ports are learned when its SDP does not name exactly its signalling address
        (a NAT, a host with several addresses) or a NAT shows in its signalling."""
        sip = self.sip
        try:
            trusted = self.trusted(sip.source)
        except Exception as exc:  # the peers could not be read (broken data): locked as a phone's, the stricter
            sip.log("err", f"call-id {sip.call_id}: trusted peers unknown ({type(exc).__name__}: {exc}); "
                           f"media locked as a phone's")
            trusted = False
        if trusted:
            return TRUSTED_PEER
        return lock_flags(False, not self._at_source or sip.media_behind_nat(reply))

    def anchor(self, emergency: bool = False, rec: dict | None = None) -> bool:
        """Before an initial INVITE is relayed: its SDP offer to rtpengine, and its replies' SDP
        through rtpengine too. False when the call was refused (self.refusal says with what)."""
        sip = self.sip
        self.refusal, self._held = None, None
        if sip.get(Var.MEDIA):
            return True  # the same call on its next branch (a receptionist's redirect)
        streams = 1  # an offer still to come (in the answer) is counted as one stream
        if sip.has_sdp():
            refused, streams = self.judge_sdp()
            if refused is not None:
                return self.unanchored(emergency, refused, f"its SDP: {refused.reason}")
            streams = max(1, streams)
        co, phone = (rec or {}).get("company") or "", phone_key(rec) or ""
        if self.limits is not None:
            try:
                used = InUse(sip.profile_size(Profile.MEDIA),
                             sip.profile_size(Profile.MEDIA_COMPANY, co) if co else 0,
                             sip.profile_size(Profile.MEDIA_PHONE, phone) if phone else 0)
            except RuntimeError as exc:  # a configuration fault: no call (an emergency one least) fails for it
                sip.log("crit", f"call-id {sip.call_id}: relay shares not checked: {exc}")
                used = InUse(0)
            refused = share_refusal(streams, used, self.limits, emergency)
            if refused is not None:
                return self.unanchored(emergency, refused,
                                       f"{streams} more stream(s) over its share of the relay (in use: "
                                       f"node {used.node}, company {co or '-'} {used.company}, "
                                       f"phone {phone or '-'} {used.phone})")
        # an emergency call is not held back: if the release at its answer failed it would have no audio
        if not self.offer(initial=not emergency):
            # rtpengine may still take the offer after the proxy stopped waiting: its ports are
            # freed now, not at its offer timeout (rtpengine_allow_op reaches a relay marked down)
            sip.media_delete()
            return self.unanchored(emergency, replies.MEDIA_RELAY_DOWN,
                                   "rtpengine did not answer the SDP offer (is it running? RTPENGINE_SOCK)")
        sip.set(Var.DLG_MEDIA, "1")
        self._held = (streams, co, phone)
        return True

    def unanchored(self, emergency: bool, refused: Reply, why: str) -> bool:
        """An emergency call goes on without rtpengine (True); any other call is refused (False)."""
        sip = self.sip
        ip, port = sip.source
        if emergency:
            sip.log("crit", f"emergency call-id {sip.call_id} from {ip}:{port}: {why} ({refused.code} "
                            f"{refused.reason}); routed without media anchoring")
            return True
        sip.log("err" if refused is replies.MEDIA_RELAY_DOWN else "notice",
                f"call-id {sip.call_id} from {ip}:{port} refused ({refused.code} {refused.reason}): {why}")
        self.refusal = refused
        return False

    def judge_sdp(self) -> tuple[Reply | None, int]:
        """(refusal or None, streams) of the message's SDP, judged before rtpengine sees it, on
        the body as Kamailio holds it ($rb: what rtpengine is handed the SDP part of)."""
        sip = self.sip
        body = sip.lenient("$rb")
        self._at_source = False
        if body is None:
            return replies.SDP_UNREADABLE, 0
        self._at_source = names_only(body, sip.source[0])
        streams = media_streams(body)
        if self.limits is None:
            return None, streams
        return sdp_refusal(len(body.encode("utf-8", "surrogateescape")), streams, self.limits), streams

    def count_streams(self) -> None:
        """Once the call's dialog is managed: the streams anchor() let through join the profiles
        the shares are judged on (the dialog leaves them when it is gone)."""
        held, self._held = self._held, None
        if held is None:
            return
        streams, co, phone = held
        sip = self.sip
        for _ in range(streams):
            sip.join_profile(Profile.MEDIA)
            if co:
                sip.join_profile(Profile.MEDIA_COMPANY, co)
            if phone:
                sip.join_profile(Profile.MEDIA_PHONE, phone)
        if streams:
            sip.set(Var.DLG_SHARES, f"{streams} {co or '-'} {phone or '-'}")

    def free_shares(self) -> None:
        """The call is over and rtpengine has freed its ports (release): its shares are free now,
        not when its dialog is gone (a party's accepted BYE leaves the dialog a second more,
        kemi.sip.calls.bye_answered). From a reply route: the dialog module refuses it in a request's."""
        sip = self.sip
        held = sip.get(Var.DLG_SHARES)
        if not held:
            return
        sip.set(Var.DLG_SHARES, "")
        streams, co, phone = held.split(" ")
        for _ in range(int(streams)):
            sip.leave_profile(Profile.MEDIA)
            if co != "-":
                sip.leave_profile(Profile.MEDIA_COMPANY, co)
            if phone != "-":
                sip.leave_profile(Profile.MEDIA_PHONE, phone)

    def offer(self, initial: bool = False) -> bool:
        """The request's SDP (if any) offered to rtpengine, and its replies handed to reply().
        initial: a new call, whose media rtpengine holds back until the answer: until then it
        knows no address for the callee's side, and (rtpengine 10.5) would relay whatever anybody
        sends to the port offered to the callee on to the caller."""
        sip = self.sip
        if sip.has_sdp():
            if not sip.media_offer(self.flags()):
                return False
            held = initial and sip.media_block()
            sip.set(Var.MEDIA, HELD if held else OFFERED)
        else:
            sip.set(Var.MEDIA, LATE)
        sip.on_reply(Route.REPLY_MEDIA)
        return True

    def in_dialog(self) -> bool:
        """A request inside an anchored call: a re-INVITE's new offer, an ACK's late answer. False
        when a re-INVITE was refused (answered) for an SDP rtpengine must not see."""
        sip = self.sip
        if sip.get(Var.DLG_MEDIA) != "1":
            return True
        invite = sip.is_method("INVITE")
        if not (invite or sip.is_ack()):
            return True
        if sip.has_sdp():
            refused, _ = self.judge_sdp()
            if refused is not None:
                ip, port = sip.source
                sip.log("notice", f"{sip.method} of call-id {sip.call_id} from {ip}:{port}: its SDP not handed "
                                  f"to rtpengine: {refused.reason}")
                if invite:  # the call goes on with the media it has
                    sip.reply(refused)
                    return False
                return True  # an ACK still ends its transaction, its SDP untaken
        if invite:
            if not self.offer():
                sip.log("err", f"re-INVITE of call-id {sip.call_id}: rtpengine did not answer, SDP passed on as is")
        elif sip.has_sdp() and not sip.media_answer(self.flags()):
            sip.log("err", f"ACK of call-id {sip.call_id}: rtpengine did not take the answer")
        return True

    def reply(self) -> None:
        """A reply (provisional or final) of a transaction whose SDP goes through rtpengine: early
        media (183 from the announcement server, a carrier's ringback) and the answer alike."""
        sip = self.sip
        code = sip.reply_code()
        if code in (180, 183, 200):
            self.post_dial_delay()
        if not (100 < code < 300 and sip.has_sdp()):
            return
        refused, _ = self.judge_sdp()
        if refused is not None:
            # the caller gets this SDP as it is rather than rtpengine allocating ports for it
            sip.log("err", f"{code} of call-id {sip.call_id}: its SDP not handed to rtpengine: {refused.reason}")
            return
        mode = sip.get(Var.MEDIA)
        flags = self.flags(reply=True)
        if mode != LATE:
            flags += self.same_callee_side()
        done = sip.media_offer(flags) if mode == LATE else sip.media_answer(flags)
        if not done:
            sip.log("err", f"{code} of call-id {sip.call_id}: rtpengine did not take its SDP, passed on as is")
        if mode == HELD:  # both sides known now: strict-source judges every packet
            if sip.media_unblock():
                sip.set(Var.MEDIA, OFFERED)
            else:
                sip.log("err", f"{code} of call-id {sip.call_id}: rtpengine did not release the call's media")

    def post_dial_delay(self) -> None:
        """A trunk's first ringing or answer: the time since it got the INVITE (kemi.sip.trunks sets
        Var.PDD_FROM at each relay to a trunk, failover included), once per trunk."""
        sip = self.sip
        sent = sip.get(Var.PDD_FROM)
        if sent and sent.isdigit():
            sip.set(Var.PDD_FROM, "")
            sip.observe(Metric.POST_DIAL_DELAY, max(time.time() * 1000 - int(sent), 0) / 1000)

    def same_callee_side(self) -> str:
        """Flags that put a later answerer's SDP on the callee side of the first one's. A call's
        offer gives the callee side one set of relay ports; when another party answers after the
        first one with SDP (the balance announcement's 183, then the carrier's 200; a second phone
        of a ringing extension), rtpengine would keep that side locked to the first (strict-source:
        the carrier's audio dropped, the caller's sent to the announcement server)."""
        sip = self.sip
        tag = sip.lenient("$tt") or ""
        first = sip.get(Var.MEDIA_TAG)
        if not first:
            if tag:
                sip.set(Var.MEDIA_TAG, tag)
            return ""
        return f" to-tag={first}" if tag and tag != first else ""

    def release(self) -> None:
        """The call is over: rtpengine frees its ports now rather than at its own timeout."""
        sip = self.sip
        try:
            if sip.get(Var.DLG_MEDIA) == "1" and not sip.media_delete():
                sip.log("info", f"call-id {sip.call_id}: rtpengine had nothing to delete (it times calls out itself)")
        except Exception as exc:  # the call's record matters more: rtpengine times the call out
            sip.log("err", f"call-id {sip.call_id}: rtpengine delete failed: {type(exc).__name__}: {exc}")
