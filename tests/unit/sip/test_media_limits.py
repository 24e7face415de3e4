"""What each party's media is locked to, and what one SDP, phone or company may take of
rtpengine's relay ports (kemi.sip.media; fake KSR. The real thing: tests/sip/test_media_security.py)."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kemi import replies
from kemi.settings import Settings
from kemi.sip import media
from kemi.sip.media import InUse, Limits, lock_flags, media_streams, phone_key, sdp_refusal, share_refusal
from kemi.sip.shell import MEDIA_NAT_TEST, MEDIA_NAT_TEST_REPLY, Profile, Var
from tests.fake_ksr import SDP, FakeKSR
from tests.unit.sip.test_in_dialog_and_app import in_dialog
from tests.unit.sip.conftest import World

LIMITS = Limits(sdp_max_bytes=8192, sdp_max_streams=4, node=100, emergency_reserve=10, per_company=20, per_phone=6)


def sdp(streams: int, pad: int = 0) -> str:
    return SDP.split("m=")[0] + "".join(f"m=audio {40000 + 2 * i} RTP/AVP 8\r\n" for i in range(streams)) + "a=x" * pad


# -- the lock: rtpengine's flags, by who sent the SDP --------------------------------------------------
@pytest.mark.parametrize("trusted, nated, flags", [
    (False, False, "SIP-source-address endpoint-learning-off"),
    (False, True, "SIP-source-address endpoint-learning-immediate"),
    (True, False, "trust-address endpoint-learning-off"),
    (True, True, "trust-address endpoint-learning-off"),
])
def test_every_sdp_is_locked_to_its_party(trusted, nated, flags):
    got = lock_flags(trusted, nated)
    assert got.endswith(flags) and "strict-source" in got and "asymmetric" not in got
    assert "media-handover" not in got and "replace-origin replace-session-connection ICE=remove" in got


def test_a_phone_behind_a_nat_has_its_port_learned_and_others_are_fixed_from_the_start(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.nated = True
    world.request(ksr)
    assert ksr.media_ops == [("offer", media.PHONE_BEHIND_NAT), ("block", "")] and ksr.nat_tests == [MEDIA_NAT_TEST]
    ksr = world.request(world.phone_invite("0145678901", call_id="call-2"))
    assert ksr.media_ops == [("offer", media.PHONE_LOCKED), ("block", "")]


def test_a_trunks_answer_is_locked_to_the_address_its_sdp_names(world: World):
    ksr = FakeKSR("INVITE", "sip:0145678901@acme.test", src="127.0.0.2", sport=5099)  # a trunk, another port
    ksr.vars.update({"$rs": 200, Var.MEDIA: media.OFFERED})
    world.router(ksr).ksr_reply_media(None)
    assert ksr.media_ops == [("answer", media.TRUSTED_PEER)] and ksr.nat_tests == []
    ksr = FakeKSR("INVITE", "sip:2002@acme.test", src="127.0.0.44")  # a phone answering, its NAT seen in SIP
    ksr.vars.update({"$rs": 200, Var.MEDIA: media.OFFERED})
    ksr.body = SDP.replace("127.0.0.10", "127.0.0.44")
    ksr.nated = True
    world.router(ksr).ksr_reply_media(None)
    assert ksr.media_ops == [("answer", media.PHONE_BEHIND_NAT)] and ksr.nat_tests == [MEDIA_NAT_TEST_REPLY]


@pytest.mark.parametrize("body, at_source", [
    (SDP, True),                                                    # c= 127.0.0.10, the source
    (SDP.replace("c=IN IP4 127.0.0.10", "c=IN IP4 192.168.1.20"), False),  # behind a NAT
    (SDP.replace("c=IN IP4 127.0.0.10", "c=IN IP4 127.0.0.10/127"), True),
    (SDP + "c=IN IP4 203.0.113.9\r\n", False),                      # a media-level c= elsewhere
    (SDP.replace("c=IN IP4 127.0.0.10\r\n", ""), False),             # none
])
def test_a_phones_ports_are_fixed_only_when_its_sdp_names_just_its_source(world: World, body, at_source):
    ksr = world.phone_invite("0145678901")
    ksr.body = body
    world.request(ksr)
    assert ksr.media_ops[0] == ("offer", media.PHONE_LOCKED if at_source else media.PHONE_BEHIND_NAT)


# -- one SDP: its size and its streams, judged before rtpengine sees it -------------------------------
@pytest.mark.parametrize("body, count", [
    ("", 0), (SDP, 1), (sdp(4), 4), (sdp(1240), 1240),
    ("v=0\nm=audio 1 RTP/AVP 0\nm=video 2 RTP/AVP 96\n", 2),   # bare LF, as rtpengine reads it
    ("v=0\r\n m=audio 1 RTP/AVP 0\r\n", 0),                     # not a line rtpengine makes a stream of
    ("v=0\r\nM=audio 1 RTP/AVP 0\r\n", 0),
    ("v=0\r\na=m=audio\r\n", 0),
])
def test_streams_are_counted_as_rtpengine_reads_lines(body, count):
    assert media_streams(body) == count


@given(st.lists(st.sampled_from(["v=0", "m=audio 1 RTP/AVP 0", "a=sendrecv", "c=IN IP4 1.2.3.4", "m=", ""]),
                max_size=40), st.sampled_from(["\n", "\r\n"]))
def test_no_stream_rtpengine_would_make_goes_uncounted(lines, eol):
    # rtpengine's sdp_parse: one stream per line that starts with "m=" (it stops at an empty line)
    body = eol.join(lines)
    parsed = 0
    for line in body.split("\n"):
        if line in ("", "\r"):
            break
        parsed += line.startswith("m=")
    assert media_streams(body) >= parsed


def test_sdp_caps():
    assert sdp_refusal(8192, 4, LIMITS) is None
    assert sdp_refusal(8193, 1, LIMITS) == replies.SDP_TOO_LARGE
    assert sdp_refusal(100, 5, LIMITS) == replies.TOO_MANY_STREAMS


def test_an_invite_with_too_many_streams_is_refused_before_rtpengine_sees_it(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.body = sdp(5)
    world.request(ksr)
    assert ksr.replies == [(488, "Too Many Media Streams")] and ksr.media_ops == [] and ksr.relays == []
    assert [r["disposition"] for r in world.ledger.records] == ["refused-488"]
    assert ksr.counted("call_refusals_total") == {"too_many_streams": 1}


@pytest.mark.parametrize("body", [sdp(1, pad=3000), sdp(1240)])  # 1,240 m= lines: the 30 KB offer
def test_an_invite_with_a_huge_sdp_is_refused_before_rtpengine_sees_it(world: World, body):
    ksr = world.phone_invite("0145678901")
    ksr.body = body
    world.request(ksr)
    assert ksr.replies == [(413, "SDP Body Too Large")] and ksr.media_ops == [] and ksr.relays == []


def test_an_sdp_that_is_not_text_is_refused(world: World):
    ksr = world.phone_invite("0145678901")
    ksr.body = SDP.encode() + b"a=\xff\r\n"
    world.request(ksr)
    assert ksr.replies == [(488, "SDP Is Not Text")] and ksr.media_ops == []


def test_an_emergency_call_with_a_hostile_sdp_goes_out_unanchored(world: World):
    ksr = world.phone_invite("112")
    ksr.body = sdp(1240)
    world.request(ksr)
    assert ksr.replies == [] and ksr.relay.ruri.startswith("sip:112@") and ksr.media_ops == []
    assert any("without media anchoring" in line for line in ksr.logged("crit"))


def test_a_reinvite_with_too_many_streams_is_refused_and_the_call_goes_on(world: World):
    ksr = in_dialog("INVITE")
    ksr.vars[Var.DLG_MEDIA] = "1"
    ksr.body = sdp(5)
    world.request(ksr)
    assert ksr.replies == [(488, "Too Many Media Streams")] and ksr.relays == [] and ksr.media_ops == []
    ksr = in_dialog("INVITE")
    ksr.vars[Var.DLG_MEDIA] = "1"
    ksr.body = SDP.replace("127.0.0.10", "127.0.0.30")  # the caller's re-INVITE, from its own address
    world.request(ksr)
    assert ksr.relays and ksr.media_ops == [("offer", media.PHONE_LOCKED)]  # a re-offer is not held back


def test_an_answer_with_too_many_streams_never_reaches_rtpengine(world: World):
    ksr = FakeKSR("INVITE", "sip:2002@acme.test", src="127.0.0.44")
    ksr.vars.update({"$rs": 200, Var.MEDIA: media.OFFERED})
    ksr.body = sdp(1240)
    world.router(ksr).ksr_reply_media(None)
    assert ksr.media_ops == [] and any("not handed to rtpengine" in line for line in ksr.logged("err"))


# -- the shares of the relay: node, company, phone, and the emergency reserve -------------------------
@pytest.mark.parametrize("streams, used, emergency, answer", [
    (1, InUse(89, 19, 5), False, None),
    (1, InUse(90, 0, 0), False, replies.MEDIA_RELAY_FULL),     # the last 10 are the emergency reserve
    (1, InUse(90, 0, 0), True, None),
    (1, InUse(100, 0, 0), True, replies.MEDIA_RELAY_FULL),     # its caller then routes it unanchored
    (1, InUse(0, 20, 0), False, replies.COMPANY_MEDIA_LIMIT),
    (1, InUse(0, 20, 6), True, None),                         # no company or phone limit for an emergency
    (2, InUse(0, 0, 5), False, replies.PHONE_MEDIA_LIMIT),
    (4, InUse(0, 16, 0), False, None),
    (4, InUse(0, 17, 0), False, replies.COMPANY_MEDIA_LIMIT),  # streams count, not calls
])
def test_shares(streams, used, emergency, answer):
    assert share_refusal(streams, used, LIMITS, emergency) == answer


def test_phone_key():
    assert phone_key({"company": "acme", "extension": "2001"}) == "acme/2001"
    assert phone_key({"company": "acme", "extension": ""}) is None and phone_key(None) is None


def limited(**kw) -> Settings:
    return Settings(emergency_trunks="udp:127.0.0.9:5060", media_streams_max=100, media_emergency_reserve=10,
                    media_streams_per_company=20, media_streams_per_phone=6, **kw)


def test_an_anchored_call_counts_each_of_its_streams_for_the_node_the_company_and_the_phone(world: World):
    world.settings = limited()
    ksr = world.phone_invite("0145678901")
    ksr.body = sdp(3)
    world.request(ksr)
    assert ksr.relays and [p for p in ksr.profiles if p.startswith("media")] == \
        [Profile.MEDIA, "media_co=acme", "media_phone=acme/2001"] * 3


@pytest.mark.parametrize("sizes, answer", [
    ({Profile.MEDIA: 90}, (503, "Media Relay Full")),
    ({"media_co=acme": 20}, (503, "Too Many Calls For This Company")),
    ({"media_phone=acme/2001": 6}, (486, "Too Many Calls On This Phone")),
])
def test_a_call_over_its_share_is_refused_before_rtpengine_sees_it(world: World, sizes, answer):
    world.settings = limited()
    ksr = world.phone_invite("0145678901")
    ksr.profile_sizes.update(sizes)
    world.request(ksr)
    assert ksr.replies == [answer] and ksr.media_ops == [] and ksr.relays == []
    assert ("Retry-After: 10" in ksr.reply_headers) == (answer[0] == 503)


def test_an_emergency_call_takes_the_reserve_and_goes_out_unanchored_when_the_relay_is_full(world: World):
    world.settings = limited()
    ksr = world.phone_invite("112")
    ksr.profile_sizes.update({Profile.MEDIA: 95, "media_phone=acme/2001": 6, "media_co=acme": 20})
    world.request(ksr)
    assert ksr.replies == [] and ksr.media_ops == [("offer", media.PHONE_LOCKED)] and ksr.relays  # not held back
    ksr = world.phone_invite("112", call_id="call-2")
    ksr.profile_sizes.update({Profile.MEDIA: 100})
    world.request(ksr)
    assert ksr.replies == [] and ksr.media_ops == [] and ksr.relays
    assert any("Media Relay Full" in line and "without media anchoring" in line for line in ksr.logged("crit"))


def test_every_dialog_profile_is_declared_once_in_kamailio_cfg():
    from kemi.paths import ROOT
    cfg = (ROOT / "kamailio.cfg").read_text()
    lines = re.findall(r'^modparam\("dialog", "(profiles_(?:no|with)_value)", "([^"]+)"\)', cfg, re.MULTILINE)
    kinds = [kind for kind, _ in lines]
    assert len(kinds) == len(set(kinds)), "a second modparam line replaces the first: one line per kind"
    declared = {name: kind for kind, names in lines for name in names.split(";")}
    assert declared == {Profile.PREPAID: "profiles_no_value", Profile.MEDIA: "profiles_no_value",
                        Profile.MEDIA_COMPANY: "profiles_with_value", Profile.MEDIA_PHONE: "profiles_with_value"}


def test_a_profile_that_cannot_be_read_fails_no_call(world: World, monkeypatch):
    from tests import fake_ksr
    monkeypatch.setattr(fake_ksr._Dialog, "get_profile_size_static", lambda self, profile, spv: -1)
    world.settings = limited()
    ksr = world.request(world.phone_invite("112"))
    assert ksr.replies == [] and ksr.relays and ksr.media_ops[0] == ("offer", media.PHONE_LOCKED)
    assert any("relay shares not checked" in line for line in ksr.logged("crit"))


def test_peers_that_cannot_be_read_lock_the_media_as_a_phones_and_fail_no_call(world: World, monkeypatch):
    def broken():
        raise ValueError("undecodable trunk")
    monkeypatch.setattr(world.directory, "peer_addresses", broken)
    ksr = world.request(world.phone_invite("112"))
    assert ksr.replies == [] and ksr.relays and ksr.media_ops[0] == ("offer", media.PHONE_LOCKED)
    assert any("trusted peers unknown" in line for line in ksr.logged("err"))
