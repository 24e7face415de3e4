"""A world for unit tests of the SIP roles: the fake KSR, and a directory and ledger in memory.

The Router is the real one, wired to these; only Kamailio and Redis are stood in for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kemi import money
from kemi.model import Company, Did, Extension, MediaServer, Trunk, digest_ha1
from kemi.settings import Settings
from kemi.sip.app import Router
from kemi.sip.shell import Sip
from kemi.store import StoreUnavailable
from kemi.store.directory import CallContext, Inbound, Source
from kemi.store.prepaid import PrepaidError, Reservation, Settlement
from tests.fake_ksr import FakeKSR

ACME = Company(id="acme", name="Acme", domain="acme.test", main_number="+33142685300",
               location="12 rue de la Paix, Paris", receptionist="reception")
GLOBEX = Company(id="globex", name="Globex", domain="globex.test", main_number="+33142685400")
PASSWORD = "secret-pass"
ALICE = Extension("2001", "Alice Martin", ha1=digest_ha1("2001", "acme.test", PASSWORD), did="+33142685301")
BRUNO = Extension("2002", "Bruno Petit", ha1=digest_ha1("2002", "acme.test", PASSWORD))
NIGHT = Extension("2099", "Night line", type="virtual", forward="+33612345678", did="+33142685399")
GASTON = Extension("2001", "Gaston", ha1=digest_ha1("2001", "globex.test", PASSWORD))
CARRIER_A = Trunk("carrier-a", "127.0.0.2", 5060, "udp", priority=1)
CARRIER_B = Trunk("carrier-b", "127.0.0.4", 5060, "udp", priority=2)
EMERGENCY = Trunk("emergency", "127.0.0.5", 5060, "udp", priority=3, emergency=True, outbound=False)
RECEPTION = MediaServer("reception", "127.0.0.3", 5060, "udp", role="receptionist")
ANNOUNCER = MediaServer("announcer", "127.0.0.7", 5060, "udp", role="announcement")
DIDS = {"+33142685300": Did("+33142685300", "acme", "receptionist"),
        "+33142685301": Did("+33142685301", "acme", "2001", fallback="receptionist"),
        "+33142685302": Did("+33142685302", "acme", "2002"),
        "+33142685399": Did("+33142685399", "acme", "2099")}


class FakeDirectory:
    """The lookups of kemi.store.Directory, answered from the constants above."""

    def __init__(self):
        self.companies = {"acme": ACME, "globex": GLOBEX}
        self.extensions = {"acme": {e.number: e for e in (ALICE, BRUNO, NIGHT)}, "globex": {"2001": GASTON}}
        self.trunk_list = (CARRIER_A, CARRIER_B, EMERGENCY)
        self.media = (ANNOUNCER, RECEPTION)
        self.overrides: dict[str, str] = {}
        self.site_list: tuple = ()  # declared sites (kemi.model.Site)
        self.down = False
        self.peer_reads = 0  # round trips of peer_addresses()
        self.faults: dict[str, Exception] = {}  # lookup name -> what it raises (broken data)

    def _up(self, lookup: str | None = None):
        if self.down:
            raise StoreUnavailable("Redis at redis://test unreachable")
        if lookup in self.faults:
            raise self.faults[lookup]

    def _co(self, domain: str) -> str | None:
        return next((c.id for c in self.companies.values() if c.domain == domain), None)

    def domain_known(self, domain: str) -> bool:
        self._up()
        return self._co(domain) is not None

    def first_look(self, ip, port, domain):
        self._up()
        peers = [("trunk", t) for t in self.trunk_list] + [("media", m) for m in self.media]
        source = next((Source(kind, p.name) for kind, p in peers if (p.host, p.port) == (ip, int(port))), None)
        return source, self._co(domain)

    def call_context(self, domain, user, callee, co=None):
        self._up("call_context")
        co = co or self._co(domain)
        if co is None:
            return CallContext(None, None, None)
        exts = self.extensions[co]
        return CallContext(self.companies[co], exts.get(user), exts.get(callee) if callee else None,
                           self.trunk_list, dict(self.overrides), self.media)

    def company(self, co):
        self._up()
        return self.companies.get(co)

    def company_view(self, co, extension, did=None):
        self._up()
        company = self.companies.get(co)
        if company is None:
            return Inbound(did)
        media = {m.name: m for m in self.media}
        return Inbound(did, company, self.extensions[co].get(extension) if extension else None,
                       media.get(company.receptionist) if company.receptionist else None)

    def inbound(self, e164):
        self._up()
        did = DIDS.get(e164)
        if did is None:
            return Inbound(None)
        return self.company_view(did.co, did.target if did.target != "receptionist" else None, did)

    def routes(self):
        self._up("routes")
        return self.trunk_list, dict(self.overrides)

    def trunks(self):
        self._up("trunks")
        return self.trunk_list

    def peer_addresses(self):
        self._up()
        self.peer_reads += 1
        return frozenset((p.host, p.port) for p in self.trunk_list + self.media)

    def sites(self):
        self._up()
        return self.site_list


@dataclass
class FakeLedger:
    """The Prepaid Account of every company, in memory, with the ledger's answers."""

    rates: dict[str, money.Rate] = field(default_factory=dict)
    active: bool = True
    balance: int = 0
    currency: str = "EUR"
    reservations: dict[str, int] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    renewed: list[tuple[str, int]] = field(default_factory=list)
    settled: list[tuple[str, int]] = field(default_factory=list)
    broken: bool = False  # the ledger's data is damaged (LEDGER_BROKEN)
    unattributed: int = 0  # records written to the stream of no company

    def rate_for(self, e164):
        return money.longest_prefix_rate(e164, self.rates)

    def status(self, co):
        from kemi.store.prepaid import AccountStatus
        return AccountStatus(self.active, self.balance, self.currency, sum(self.reservations.values()))

    def reserve(self, co, call_id, rate, *, cap_secs, ttl_ms, ext="", to="", meta=None):
        if self.broken:
            raise PrepaidError("LEDGER_BROKEN", "balance of acme is not an integer")
        if not self.active:
            raise PrepaidError("NOT_ACTIVE", "")
        available = self.balance - sum(self.reservations.values())
        secs = money.max_duration(rate, available, cap_secs)
        if secs <= 0:
            raise PrepaidError("INSUFFICIENT_FUNDS", f"available={available}", available)
        amount = money.cost(rate, secs)
        self.reservations[call_id] = amount
        return Reservation(call_id, amount, secs, available, self.balance, ttl_ms, False, self.currency)

    def renew(self, co, call_id, ttl_ms):
        self.renewed.append((call_id, ttl_ms))
        return ttl_ms if call_id in self.reservations else None

    def settle(self, co, call_id, secs, record):
        self.reservations.pop(call_id, None)
        self.settled.append((call_id, secs))
        self.records.append(dict(record))
        return Settlement(call_id, 0, secs, self.balance, 0, False)

    def record(self, co, record):
        self.records.append(dict(record))
        return "1-0"

    def record_unattributed(self, record):
        self.records.append(dict(record))
        self.unattributed += 1
        return "1-0"


class FakeConn:
    def ready(self, force_check=False):
        return None

    def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


@dataclass
class World:
    directory: FakeDirectory
    ledger: FakeLedger
    settings: Settings

    def router(self, ksr: FakeKSR) -> Router:
        router = Router(Sip(ksr), self.settings, FakeConn(), self.directory)
        router.ledger = self.ledger
        return router

    def request(self, ksr: FakeKSR) -> FakeKSR:
        """Route one request through the real Router; the fake KSR holds what it did."""
        self.router(ksr).ksr_request_route(None)
        return ksr

    @staticmethod
    def phone_invite(dialled: str, user: str = "2001", domain: str = "acme.test", **kw) -> FakeKSR:
        """An INVITE from a phone with valid credentials."""
        ksr = FakeKSR("INVITE", f"sip:{dialled}@{domain}", from_uri=f"sip:{user}@{domain}", auth_user=user, **kw)
        ksr.credentials_realm = domain
        ksr.good_ha1 = digest_ha1(user, domain, PASSWORD)
        return ksr


@pytest.fixture
def world() -> World:
    return World(FakeDirectory(), FakeLedger(), Settings(emergency_trunks="udp:127.0.0.9:5060"))
