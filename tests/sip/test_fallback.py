"""A DID with a receptionist fallback, whatever transport its phone is on.

+33142685304 rings extension 2004 (ring_timeout 5 s, the provisioning's minimum) and falls back
to the receptionist (tests/sip/office.yaml). Whether the phone registered over UDP, TCP or TLS,
a busy phone (486), a phone that rings until the ring timeout, and no phone at all must each
end at the receptionist: the receptionist stand-in receives the INVITE (with its R-URI, not the
phone's), the carrier's caller is answered by it, and a phone left ringing receives the CANCEL
on its own transport. (Phones behind a NAT: tests/sip/test_nat.py.)
"""

from __future__ import annotations

import itertools
import time

import pytest

from tests.sip.conftest import CARRIER_IN, PASSWORDS, RECEPTION
from tests.sip.sipua import UA, Msg, Peer
from tests.sip.test_tls import came_over, client_context

DID, EXT = "+33142685304", "2004"
RING_TIMEOUT_S = 5  # 2004's ring_timeout in tests/sip/office.yaml
_ips = itertools.cycle(f"127.0.0.{n}" for n in range(160, 190))


class Scene:
    """The carrier calling in, the receptionist stand-in, and the phone of one test; all closed after it."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.reception = Peer(*RECEPTION)
        self.carrier = UA(CARRIER_IN[0], (proxy.ip, proxy.port), "+33698000001", "carrier.example",
                          port=CARRIER_IN[1])
        self.made: list = [self.reception, self.carrier]

    def phone(self, transport: str, behaviour) -> UA:
        proxy = self.proxy
        where = (proxy.ip, proxy.tls_port if transport == "tls" else proxy.port)
        ua = UA(next(_ips), where, EXT, "acme.test", PASSWORDS[(EXT, "acme.test")], tcp=transport == "tcp",
                tls=client_context(proxy) if transport == "tls" else None, answer_invites=behaviour)
        self.made.append(ua)
        answer = ua.register()
        assert answer is not None and answer.status == 200, answer and answer.raw
        return ua

    def call(self, timeout: float = 8.0):
        return self.carrier.invite(f"sip:{DID}@{self.proxy.ip}:{self.proxy.port}", timeout=timeout)

    def close(self) -> None:
        time.sleep(0.1)
        for item in self.made:
            item.close()
        self.proxy.unregister(f"{EXT}@acme.test")


@pytest.fixture
def scene(proxy):
    made = Scene(proxy)
    yield made
    made.close()


def received_by_reception(scene: Scene) -> Msg:
    (invite,) = scene.reception.invites()
    assert invite.ruri.startswith(f"sip:{DID}@{RECEPTION[0]}:{RECEPTION[1]}"), invite.raw
    assert invite.header("x-did") == DID and invite.header("x-company") == "acme", invite.raw
    assert invite.conn is None  # the receptionist's own transport (UDP), not the phone's connection
    return invite


def phone_invites(ua: UA) -> list[Msg]:
    return ua.callee_invites()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_a_busy_phone_falls_back_to_the_receptionist(scene, transport):
    phone = scene.phone(transport, (486, "Busy Here"))
    call = scene.call()
    assert call.code == 200, call.final and call.final.raw
    received_by_reception(scene)
    (invite,) = phone_invites(phone)
    assert came_over(phone, invite) == transport
    # the receptionist's answer (its To tag), behind the proxy's Contact (topology hiding), and its BYE
    assert call.to_tag == scene.reception.to_tag and "tpsh-" in call.final.header("contact"), call.final.raw
    assert call.bye().status == 200
    assert [m.call_id for m in scene.reception.requests("BYE")] == [call.call_id]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_a_phone_ringing_past_its_ring_timeout_is_cancelled_and_the_receptionist_answers(scene, transport):
    phone = scene.phone(transport, "ring")
    started = time.monotonic()
    call = scene.call(timeout=RING_TIMEOUT_S + 8)
    assert call.code == 200, call.final and call.final.raw
    assert time.monotonic() - started >= RING_TIMEOUT_S - 0.25  # tm's timer wheel ticks in 1/16 s
    received_by_reception(scene)
    (invite,) = phone_invites(phone)  # one INVITE: the receptionist's never went to the phone
    assert came_over(phone, invite) == transport
    cancel = phone.wait(lambda m: m.is_request and m.method == "CANCEL", 3)
    assert cancel is not None and came_over(phone, cancel) == transport, phone.inbox
    assert call.bye().status == 200


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_a_phone_that_unregistered_leaves_the_call_to_the_receptionist(scene, transport):
    phone = scene.phone(transport, "answer")
    assert phone.register(expires=0).status == 200
    call = scene.call()
    assert call.code == 200, call.final and call.final.raw
    received_by_reception(scene)
    assert phone_invites(phone) == []
    assert call.bye().status == 200


def test_no_phone_registered_goes_to_the_receptionist_at_once(scene):
    call = scene.call()
    assert call.code == 200, call.final and call.final.raw
    received_by_reception(scene)
    assert call.bye().status == 200
