"""RTP bleed, injection, reflection and relay-port exhaustion, through the real Kamailio and rtpengine.

Each call here is set up by tests/sip/sipua.py phones through the proxy, with SDPs naming real
UDP sockets of the test; RTP (12-byte header, a marker SSRC per sender) is sent through
rtpengine's relay ports from Python sockets, and the tests assert on what every socket RECEIVED:
the callee, the caller and a third party that knows the relay ports (rtpengine's ports are
close to sequential: an attacker learns them from a call of its own). SECURITY.md classes 20
(media open to anyone) and 21 (relay ports exhausted). The NAT variant: tests/sip/test_nat.py.

The module runs its own Redis and proxy (office of tests/sip/office.yaml moved to 127.<n>.0.x)
with small relay shares, so that the limits show with a few calls.
"""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from tests.conftest import OFFICE
from tests.harness import Proxy, RedisServer, admin, wait_for
from tests.sip.rtp import Rtp, relay, sdp
from tests.sip.sipua import UA, Peer, response

NET = f"127.{random.randint(100, 199)}.0."
PRIMARY = (NET + "2", 5060)
THIRD, VICTIM = "127.0.0.97", "127.0.0.98"  # nobody's phone
PASSWORDS = {("2001", "acme.test"): "alice-secret-1", ("2002", "acme.test"): "bruno-secret-2",
             ("2001", "globex.test"): "gaston-secret-1", ("2002", "globex.test"): "helene-secret-2"}
PER_PHONE = 3  # MEDIA_STREAMS_PER_PHONE of this module's proxy
PER_COMPANY = 4


@pytest.fixture(scope="module")
def env(workdir):
    office = workdir / f"office-media-{NET.split('.')[1]}.yaml"
    text = OFFICE.read_text().replace("host: 127.0.0.", f"host: {NET}")
    office.write_text("\n".join(line for line in text.splitlines() if "name: announcer" not in line) + "\n")
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(office))
    proxy = Proxy(workdir, redis.url, MEDIA_STREAMS_PER_PHONE=str(PER_PHONE),
                  MEDIA_STREAMS_PER_COMPANY=str(PER_COMPANY), MEDIA_STREAMS_MAX="12", MEDIA_EMERGENCY_RESERVE="2",
                  SDP_MAX_STREAMS="4", SDP_MAX_BYTES="8192").start()
    yield proxy
    proxy.stop()
    redis.stop()


def relay_shares_in_use(proxy: Proxy) -> int:
    """Media streams this node's relay shares count now (the `media` dialog profile, over RPC)."""
    answer = proxy.kamcmd("dlg.profile_get_size", "media").strip()
    assert answer.isdigit(), f"dlg.profile_get_size answered {answer!r}"
    return int(answer)


_phone_ips = itertools.cycle(f"127.0.0.{n}" for n in range(60, 90))


class Net:
    def __init__(self, proxy: Proxy):
        self.proxy = proxy
        self.opened: list = []
        self.aors: set[str] = set()
        self.calls: list = []  # hung up at the end: the relay shares are free for the next test

    def phone(self, user: str, domain: str = "acme.test") -> UA:
        ua = UA(next(_phone_ips), (self.proxy.ip, self.proxy.port), user, domain, PASSWORDS[(user, domain)])
        self.opened.append(ua)
        self.aors.add(f"{user}@{domain}")
        answer = ua.register()
        assert answer is not None and answer.status == 200, answer
        return ua

    def rtp(self, ip: str, port: int = 0) -> Rtp:
        made = Rtp(ip, port)
        self.opened.append(made)
        return made

    def peer(self, where) -> Peer:
        peer = Peer(*where)
        self.opened.append(peer)
        return peer

    def close(self) -> None:
        for call in self.calls:
            if call.code == 200 and not getattr(call, "hung_up", False):
                call.bye()
        # a call's relay shares are left when its BYE's 200 passes the proxy (kemi.sip.media.free_shares),
        # which the phone may see first: the next test starts from none
        wait_for(lambda: relay_shares_in_use(self.proxy) == 0, 10, "the relay shares freed")
        for item in self.opened:
            item.close()
        for aor in self.aors:
            self.proxy.unregister(aor)


@pytest.fixture
def net(env):
    made = Net(env)
    yield made
    made.close()


class Call:
    """A call whose two parties each have an RTP socket, and where each of them must send to."""

    def __init__(self, net: Net, external: bool = False, caller_c: str | None = None,
                 callee_c: str | None = None):
        self.caller = net.phone("2001")
        self.caller_rtp = net.rtp(self.caller.ip)
        self.caller.sdp = sdp(self.caller.ip, self.caller_rtp.port, caller_c)
        if external:
            self.callee = net.peer(PRIMARY)
            self.callee_rtp = net.rtp(PRIMARY[0])
        else:
            self.callee = net.phone("2002")
            self.callee_rtp = net.rtp(self.callee.ip)
        self.callee.sdp = sdp(self.callee.ip, self.callee_rtp.port, callee_c)
        self.call = self.caller.invite("0145678901" if external else "2002")
        assert self.call.code == 200, self.call.final
        invites = self.callee.invites() if external else self.callee.callee_invites()
        self.to_callee_relay = relay(invites[-1].body)   # where the callee sends
        self.to_caller_relay = relay(self.call.final.body)  # where the caller sends
        net.calls.append(self.call)

    def talk(self) -> None:
        self.caller_rtp.send(self.to_caller_relay)
        self.callee_rtp.send(self.to_callee_relay)

    def hang_up(self) -> None:
        self.call.bye()
        self.call.hung_up = True


def relayed_only_between_the_parties(call: Call, third: Rtp | None = None) -> None:
    heard_by_callee, heard_by_caller = call.callee_rtp.ssrcs(), call.caller_rtp.ssrcs()
    assert heard_by_callee == {call.caller_rtp.ssrc}, "the callee heard someone else (or nobody)"
    assert heard_by_caller == {call.callee_rtp.ssrc}, "the caller heard someone else (or nobody)"
    if third is not None:
        assert third.drain() == [], "the third party got media"


# -- class 20: media open to anyone ---------------------------------------------------------------
@pytest.mark.parametrize("external", [False, True], ids=["phone-to-phone", "phone-to-trunk"])
def test_a_third_party_that_sends_first_gets_nothing_and_is_not_relayed(net, external):
    call = Call(net, external)
    third = net.rtp(THIRD)
    third.send(call.to_caller_relay)   # both relay ports, before either party said a word
    third.send(call.to_callee_relay)
    call.talk()
    third.send(call.to_caller_relay)
    third.send(call.to_callee_relay)
    relayed_only_between_the_parties(call, third)
    call.hang_up()


@pytest.mark.parametrize("external", [False, True], ids=["phone-to-phone", "phone-to-trunk"])
def test_injection_after_both_parties_talk_reaches_neither(net, external):
    call = Call(net, external)
    call.talk()
    time.sleep(0.2)
    third = net.rtp(THIRD)
    third.send(call.to_caller_relay)
    third.send(call.to_callee_relay)
    # a third party on a party's own address but another port (another phone behind the same host)
    neighbour = net.rtp(call.caller.ip)
    neighbour.send(call.to_caller_relay)
    call.talk()
    relayed_only_between_the_parties(call, third)
    assert neighbour.drain() == []


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_an_sdp_naming_a_third_party_never_sends_it_the_call(net, side):
    """Reflection: the caller's offer (or a phone callee's answer) names the victim's address and
    port; the audio goes to the phone's own address, never to the victim."""
    victim = net.rtp(VICTIM)
    call = Call(net, caller_c=VICTIM if side == "caller" else None, callee_c=VICTIM if side == "callee" else None)
    reflector = call.caller_rtp if side == "caller" else call.callee_rtp
    # the victim's port on the phone's own address: where a phone that meant it would be
    assert reflector.port != victim.port
    other = call.callee_rtp if side == "caller" else call.caller_rtp
    other.send(call.to_callee_relay if side == "caller" else call.to_caller_relay)
    assert victim.drain() == []
    # and the reflecting phone, talking from where its signalling came from, still has its call
    call.talk()
    assert other.ssrc in reflector.ssrcs() and victim.drain() == []


# -- class 21: the relay's ports ------------------------------------------------------------------
def invite_with(net: Net, ua: UA, body: str, dial: str = "2002"):
    ua.sdp = body
    call = ua.invite(dial)
    net.calls.append(call)
    return call


def test_huge_offers_and_too_many_streams_are_refused_before_rtpengine_sees_them(net, env):
    alice, bruno = net.phone("2001"), net.phone("2002")
    before = env.media.log_text().count("Creating new call")
    big = sdp(alice.ip, 40000, streams=1240)  # the offer: 1,240 m= lines, about 30 KB
    assert len(big) > 30_000
    for body, answer in ((big, (413, "SDP Body Too Large")), (sdp(alice.ip, 40000, streams=5),
                                                               (488, "Too Many Media Streams"))):
        call = invite_with(net, alice, body)
        assert (call.code, call.final.first.split(" ", 2)[2]) == answer
    assert bruno.callee_invites() == []
    assert env.media.log_text().count("Creating new call") == before  # rtpengine never saw them
    # four streams are fine
    call = invite_with(net, alice, sdp(alice.ip, 40000, streams=2))
    assert call.code == 200


def test_one_phone_cannot_take_more_than_its_share_and_others_still_call(net, env):
    alice, bruno = net.phone("2001"), net.phone("2002")
    bruno.answer_invites = "answer"
    calls = [invite_with(net, alice, sdp(alice.ip, 40000 + 10 * i)) for i in range(PER_PHONE)]
    assert [c.code for c in calls] == [200] * PER_PHONE
    over = invite_with(net, alice, sdp(alice.ip, 41000))
    assert (over.code, over.final.first.split(" ", 2)[2]) == (486, "Too Many Calls On This Phone")
    assert len(bruno.callee_invites()) == PER_PHONE
    # bruno, of the same company, still calls (the company has 1 stream left)
    other = invite_with(net, bruno, sdp(bruno.ip, 42000), dial="2001")
    assert other.code == 200
    # the company's share is now used up: bruno's next call is refused too, another company's goes on
    full = invite_with(net, bruno, sdp(bruno.ip, 42010), dial="2001")
    assert (full.code, full.final.first.split(" ", 2)[2]) == (503, "Too Many Calls For This Company")
    gaston, helene = net.phone("2001", "globex.test"), net.phone("2002", "globex.test")
    elsewhere = invite_with(net, gaston, sdp(gaston.ip, 43000))
    assert elsewhere.code == 200 and len(helene.callee_invites()) == 1, (elsewhere.final, env.kamcmd(
        "dlg.profile_get_size", "media"))

    for c in calls + [other]:
        c.bye()
        c.hung_up = True
    # hung up: the shares are free again
    again = invite_with(net, alice, sdp(alice.ip, 44000))
    assert again.code == 200


def test_while_the_callee_rings_a_third_party_reaches_nobody(net):
    """Before the answer rtpengine knows no address for the callee's side: what a third party
    sends to the port offered to the callee (guessable: ports are close to sequential) must not
    reach the ringing caller, and nothing of the caller's reaches it. After the answer the call
    has its media both ways."""
    caller, callee = net.phone("2001"), net.phone("2002")
    caller_rtp, callee_rtp = net.rtp(caller.ip), net.rtp(callee.ip)
    caller.sdp, callee.sdp = sdp(caller.ip, caller_rtp.port), sdp(callee.ip, callee_rtp.port)
    callee.answer_invites = "ring"
    done: dict = {}
    thread = threading.Thread(target=lambda: done.setdefault("call", caller.invite("2002", timeout=8)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 4
    while not callee.callee_invites() and time.monotonic() < deadline:
        time.sleep(0.05)
    invite = callee.callee_invites()[-1]
    to_callee_relay = relay(invite.body)
    third = net.rtp(THIRD)
    third.send(to_callee_relay)
    caller_rtp.send((to_callee_relay[0], to_callee_relay[1] + 20))  # wherever the caller's relay port may be
    assert caller_rtp.drain() == [] and third.drain() == []
    # the callee answers: from now on the two of them hear each other
    ringing, tag = callee.ringing.pop(invite.call_id)
    callee.send(response(ringing, 200, "OK", tag, callee.contact, callee.sdp), ringing.src)
    thread.join(8)
    call = done["call"]
    net.calls.append(call)
    assert call.code == 200
    caller_rtp.send(relay(call.final.body))
    callee_rtp.send(to_callee_relay)
    assert caller_rtp.ssrcs() == {callee_rtp.ssrc} and callee_rtp.ssrcs() == {caller_rtp.ssrc}
    assert third.drain() == []
