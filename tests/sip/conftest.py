"""Helpers of the SIP tests: phones, the peers of tests/sip/office.yaml, reading what SIPp received."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.conftest import OFFICE
from tests.harness import Phone, Sipp, free_port, office_file, passwords, wait_for

# Passwords and peer addresses are written in the office file only.
PASSWORDS = passwords(OFFICE)
_office = office_file(OFFICE)
ADDRESSES = {peer["name"]: (peer["host"], peer.get("port", 5060))
             for peer in (_office.get("trunks") or []) + (_office.get("media_servers") or [])}
PRIMARY, BACKUP, EMERGENCY = ADDRESSES["primary"], ADDRESSES["backup"], ADDRESSES["emergency"]
CARRIER_IN, RECEPTION, ANNOUNCER = ADDRESSES["carrier-in"], ADDRESSES["reception"], ADDRESSES["announcer"]
_ips = itertools.cycle(f"127.0.0.{n}" for n in range(10, 60))


def trunk(phones: "Phones", where, reject: tuple[int, str] | None = None) -> Sipp:
    """A carrier on `where`: answers the call, or refuses it with `reject`."""
    ip, port = where
    sipp = Sipp("reject.xml" if reject else "answer.xml", [] if reject else ["-set", "ring", "100"],
                phones.workdir, ip=ip, port=port, reject=reject)
    phones.running.append(sipp)
    return sipp.start(timeout=20)


def ruri(invite: str) -> str:
    return invite.split(" ", 2)[1]


def header(invite: str, name: str) -> str | None:
    match = re.search(rf"^{name}: ([^\r\n]*)", invite, re.M | re.I)
    return match.group(1) if match else None


class Phones:
    """Makes phones on their own loopback addresses, registers them, and cleans up after a test."""

    def __init__(self, proxy, workdir):
        self.proxy = proxy
        self.workdir = workdir
        self.made: list[Phone] = []
        self.running: list[Sipp] = []

    def phone(self, user: str, domain: str = "acme.test", password: str | None = None) -> Phone:
        ip = next(_ips)
        phone = Phone(user, domain, password or PASSWORDS[(user, domain)], ip, free_port(ip))
        self.made.append(phone)
        return phone

    def sipp(self, scenario: str, phone: Phone | None, *args: str, ip: str | None = None) -> Sipp:
        sipp = Sipp(scenario, list(args), self.workdir, ip=phone.ip if phone else (ip or next(_ips)),
                    port=phone.port if phone else 0)
        self.running.append(sipp)
        return sipp

    def register(self, phone: Phone, expires: int = 300):
        result = self.sipp("register.xml", phone, *phone.auth_args(), "-set", "expires", str(expires)) \
            .start(self.target).wait()
        return result

    def registered(self, phone: Phone) -> Phone:
        result = self.register(phone)
        assert result.final == (200, "OK"), result.log + result.stdout
        wait_for(lambda: any(f"{phone.ip}:{phone.port}" in c for c in self.proxy.contacts(phone.aor)), 5,
                 f"contact of {phone.aor}")
        return phone

    def call(self, caller: Phone, dial: str, hold_ms: int = 300, timeout: float = 30):
        return self.sipp("call.xml", caller, *caller.auth_args(), "-set", "dial", dial,
                         "-d", str(hold_ms)).start(self.target, timeout=timeout)

    def answer(self, phone: Phone, ring_ms: int = 200, timeout: float = 30) -> Sipp:
        return self.sipp("answer.xml", phone, "-set", "ring", str(ring_ms)).start(timeout=timeout)

    def ring(self, phone: Phone, timeout: float = 30) -> Sipp:
        return self.sipp("ring.xml", phone).start(timeout=timeout)

    @property
    def target(self) -> str:
        return f"{self.proxy.ip}:{self.proxy.port}"

    def cleanup(self) -> None:
        for sipp in self.running:
            sipp.stop()
        for aor in {p.aor for p in self.made}:
            self.proxy.unregister(aor)


@pytest.fixture
def phones(proxy, workdir):
    made = Phones(proxy, workdir)
    yield made
    made.cleanup()
