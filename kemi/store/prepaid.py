"""Prepaid Account ledger: a thin typed client of the `prepaid` Redis Functions.

Every money movement is one atomic FCALL of redis-schema/prepaid.lua; this
module only builds keys, packs arguments, unpacks results and maps refusals
to PrepaidError. It never does arithmetic on money itself (kemi.money is the
tested specification the Lua mirrors), so nothing here can race.

Errors: a refusal by the Lua is PrepaidError; Redis out of reach is
kemi.store.StoreUnavailable (for a write: the answer was lost, it may have been
applied); any other error reply is kemi.store.StoreRefused. Callers must fail
closed: any exception means "no prepaid call".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import msgpack

from kemi import metrics, money
from kemi.model import COMPANY_ID_RE
from kemi.paths import PREPAID_LUA
from kemi.store.connection import Connection, StoreRefused

# Global HASH: E.164 prefix ('+44') -> msgpack money.rate_to_dict. Not hash-tagged:
# a rate is read by the caller and passed to prepaid_reserve as an argument, so
# it never has to share a Cluster slot with a company's keys.
RATES = "rates"
# The records of emergency calls that name no company (a caller nobody could identify,
# kemi.sip.emergency): same entries as a company's cdr stream, with company "". Written by
# prepaid_record like any company's: an id with "_" is one no company can have (COMPANY_ID_RE).
UNATTRIBUTED_CDR = "{co:no_company}:cdr"

# Codes the Lua library returns as the first word of an error reply.
CODES = frozenset({
    "NOT_ACTIVE", "INSUFFICIENT_FUNDS", "NO_RATE", "BAD_ARGUMENT", "BAD_RATE", "BAD_KEYS",
    "TOPUP_CONFLICT", "BALANCE_LIMIT", "CURRENCY_MISMATCH", "LEDGER_BROKEN",
})
# What the audit reads of one account in one MULTI (a consistent cut); the ledger LIST is then read
# in pages of this many entries: it only ever grows at its end, so its first n entries cannot change.
LEDGER_PAGE = 1000


class Unreplicated(Exception):
    """A money change that the primary applied but fewer than REDIS_WAIT_REPLICAS replicas confirmed
    within REDIS_WAIT_TIMEOUT_MS: a failover now could lose it. Raised only by a ledger made with
    require_replica=True (the ops CLI, which says so and exits non-zero); the proxy's ledger goes on
    (counted as redis_errors_total{kind="unreplicated"}): refusing paid calls whenever the replica is
    slow or down would turn a replica outage into a calling outage, and what a failover can lose then
    is the reservation of a call set up in that window, never a top-up nor a settled cost twice."""

    def __init__(self, message: str, acknowledged: int):
        super().__init__(message)
        self.acknowledged = acknowledged


class PrepaidError(Exception):
    """A refusal by the ledger; `code` is one of CODES."""

    def __init__(self, code: str, message: str, available: int | None = None):
        super().__init__(f"{code} {message}".strip())
        self.code = code
        self.message = message
        self.available = available  # set for INSUFFICIENT_FUNDS: what the account could spend


@dataclass(frozen=True)
class Keys:
    """Every key of one company; they share the hash tag {co:<co>}."""

    prepaid: str
    resv: str
    calls: str
    topups: str
    settled: str
    outcomes: str
    cdr: str
    ledger: str
    opening: str

    @classmethod
    def of(cls, co: str) -> "Keys":
        if not isinstance(co, str) or not COMPANY_ID_RE.fullmatch(co):
            raise ValueError(f"company id expected, got {co!r}")
        tag = f"{{co:{co}}}"
        return cls(*(f"{tag}:{name}" for name in
                     ("prepaid", "resv", "calls", "topups", "settled", "outcomes", "cdr", "ledger", "opening")))

    @classmethod
    def company_of(cls, prepaid_key: str) -> str | None:
        """The company of a `{co:<co>}:prepaid` key name, None for any other name."""
        if not (prepaid_key.startswith("{co:") and prepaid_key.endswith("}:prepaid")):
            return None
        co = prepaid_key[4:-len("}:prepaid")]
        return co if COMPANY_ID_RE.fullmatch(co) else None


@dataclass(frozen=True)
class AccountState:
    active: bool
    balance: int
    currency: str


@dataclass(frozen=True)
class TopupResult:
    amount: int
    at_ms: int
    balance_after: int  # balance right after this top-up was first applied
    balance: int  # balance now
    duplicate: bool  # True: the reference was already credited, nothing changed


@dataclass(frozen=True)
class Reservation:
    call_id: str
    amount: int  # reserved = money.cost(rate, max_secs)
    max_secs: int  # the call must be cut after this many answered seconds
    available_before: int  # balance minus other live reservations, before this one
    balance: int
    expires_ms: int
    duplicate: bool  # True: this call-id already held this reservation
    currency: str = ""  # of the account, for the balance announcement


@dataclass(frozen=True)
class Settlement:
    call_id: str
    cost: int
    billed_secs: int
    balance: int
    settled_ms: int
    duplicate: bool  # True: already settled; the first outcome, nothing charged now
    note: str = ""  # "no-reservation": expired or never reserved, charged nothing


@dataclass(frozen=True)
class LedgerCut:
    """One account's money history as the audit reads it (kemi.ledger_audit judges it)."""

    company: str
    currency: str
    balance: str | None  # as stored: the audit says when it is not a canonical integer
    topups: tuple[tuple[str, Any], ...]  # (reference, decoded entry or None if unreadable)
    opening_charged: str | None
    charges: tuple[Any, ...]  # decoded ledger entries, None where unreadable, in order


@dataclass(frozen=True)
class LiveReservation:
    call_id: str
    amount: int
    max_secs: int
    expires_ms: int
    setup_ms: int
    ext: str
    to: str


@dataclass(frozen=True)
class AccountStatus:
    active: bool
    balance: int
    currency: str
    reserved: int
    reservations: tuple[LiveReservation, ...] = field(default_factory=tuple)

    @property
    def available(self) -> int:
        return self.balance - self.reserved


def _pack(value: Mapping[str, Any]) -> bytes:
    if not isinstance(value, Mapping):
        raise PrepaidError("BAD_ARGUMENT", f"expected a map, got {type(value).__name__}")
    return msgpack.packb(dict(value), use_bin_type=True)


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


def _error(exc: StoreRefused) -> Exception:
    """Map 'CODE message script: ...' to PrepaidError; anything else stays as is."""
    text = str(exc).split(" script: ", 1)[0]
    code, _, message = text.partition(" ")
    if code not in CODES:
        return exc
    available = None
    if code == "INSUFFICIENT_FUNDS" and message.startswith("available="):
        available = int(message.split("=", 1)[1].split()[0])
    return PrepaidError(code, message, available)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def _maybe_unpack(blob: bytes) -> Any:
    try:
        return _unpack(blob)
    except Exception:  # not msgpack: the audit names it as damage
        return None


def _decode_rate(prefix: str, blob: bytes) -> money.Rate:
    """A stored rate; ValueError naming the prefix when the stored value is unusable."""
    try:
        rate = money.rate_from_dict(_unpack(blob))
    except Exception as exc:  # msgpack errors, TypeError on unknown fields, ValueError
        raise ValueError(f"stored rate {prefix!r} is unreadable: {exc}") from None
    if rate.prefix != prefix:
        raise ValueError(f"stored rate {prefix!r} holds prefix {rate.prefix!r}")
    return rate


def _decode_record(fields: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    try:
        record = _unpack(fields[b"r"])
    except Exception:  # missing field, not msgpack
        return None
    return record if isinstance(record, dict) else None


def _int_arg(name: str, value: Any, low: int) -> int:
    """Refuse bools and floats here: redis-py would send 1.5 as '1.5' and True fails late."""
    if not money.is_int(value) or value < low:
        raise PrepaidError("BAD_ARGUMENT", f"{name} must be an int >= {low}, got {value!r}")
    return value


class PrepaidLedger:
    def __init__(self, conn: Connection, *, require_replica: bool = False, loads_functions: bool = False):
        self.conn = conn  # its client has decode_responses=False: results are msgpack bytes
        self.require_replica = require_replica  # see Unreplicated
        # Only the admin user may FUNCTION LOAD (redis-schema/acl/): the proxy's ledger reports a
        # missing library instead of loading it (its Redis user would be refused anyway).
        self.loads_functions = loads_functions

    def _redis(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One redis-py command on this process's client, errors translated by Connection.call."""
        return self.conn.call(getattr(self.conn.client(), command), *args, **kwargs)

    def load_functions(self) -> None:
        """Install (or replace) the `prepaid` library; FCALL survives restarts and failover."""
        self._redis("function_load", PREPAID_LUA.read_text(encoding="utf-8"), replace=True)

    def _fcall(self, name: str, keys: list[str], *args: Any, read_only: bool = False) -> Any:
        command = ("FCALL_RO" if read_only else "FCALL", name, len(keys), *keys, *args)
        replicas = 0 if read_only else self.conn.settings.redis_wait_replicas
        # WAIT in the same round trip: the answer comes once the replicas have the change
        commands = [command, ("WAIT", replicas, self.conn.settings.redis_wait_timeout_ms)] if replicas else [command]
        try:
            replies = self.conn.run(commands)
        except StoreRefused as exc:
            # A fresh or restarted Redis without the library: nothing ran, so loading it
            # and calling once more cannot apply anything twice.
            if "function not found" not in str(exc).lower():
                raise _error(exc) from exc
            if not self.loads_functions:
                raise StoreRefused(f"the prepaid Redis Functions are not loaded ({exc}): the admin user loads "
                                   f"them (kemi.admin load, or cowork-redis-state functions)") from exc
            self.load_functions()
            try:
                replies = self.conn.run(commands)
            except StoreRefused as exc:
                raise _error(exc) from exc
        if replicas and replies[1] < replicas:
            self.conn.failed(metrics.UNREPLICATED)
            if self.require_replica:
                raise Unreplicated(f"{name} was applied on the primary at {self.conn.settings.redis_where} but "
                                   f"{replies[1]} of {replicas} replica(s) confirmed it within "
                                   f"{self.conn.settings.redis_wait_timeout_ms} ms", replies[1])
        return replies[0]

    def _state(self, name: str, co: str, *args: Any) -> AccountState:
        d = _unpack(self._fcall(name, [Keys.of(co).prepaid], *args))
        return AccountState(d["active"], d["balance"], d["currency"])

    def activate(self, co: str, currency: str = "EUR") -> AccountState:
        """Allow reservations; the balance is kept across deactivation."""
        return self._state("prepaid_activate", co, currency)

    def deactivate(self, co: str) -> AccountState:
        """Refuse new reservations; calls already reserved still settle."""
        return self._state("prepaid_deactivate", co)

    def topup(self, co: str, reference: str, amount: int) -> TopupResult:
        """Credit `amount` once per `reference` (a payment id): retries are safe."""
        k = Keys.of(co)
        d = _unpack(self._fcall("prepaid_topup", [k.prepaid, k.topups], reference,
                                _int_arg("amount", amount, 1)))
        return TopupResult(d["amount"], d["at_ms"], d["balance_after"], d["balance"], d["duplicate"])

    def reserve(self, co: str, call_id: str, rate: money.Rate | None, *, cap_secs: int, ttl_ms: int,
                ext: str = "", to: str = "", meta: Mapping[str, Any] | None = None) -> Reservation:
        """Reserve the price of the longest call the account can pay, up to cap_secs.

        ttl_ms must cover ringing plus max_secs (or the call must renew()): a
        reservation that expires frees its funds and its call is then free.
        """
        if rate is None:
            raise PrepaidError("NO_RATE", f"no rate for {to or 'this destination'}")
        k = Keys.of(co)
        info = {**(meta or {}), "ext": ext, "to": to}
        args = (call_id, _int_arg("ttl_ms", ttl_ms, 1), _int_arg("cap_secs", cap_secs, 1),
                _pack(money.rate_to_dict(rate)), _pack(info))
        d = _unpack(self._fcall("prepaid_reserve", [k.prepaid, k.resv, k.calls, k.cdr], *args))
        return Reservation(call_id, d["amount"], d["max_secs"], d["available_before"], d["balance"],
                           d["expires_ms"], d["duplicate"], d.get("currency", ""))

    def renew(self, co: str, call_id: str, ttl_ms: int) -> int | None:
        """Push a live reservation's expiry to now + ttl_ms; None when it is gone."""
        expires = self._fcall("prepaid_renew", [Keys.of(co).resv], call_id, _int_arg("ttl_ms", ttl_ms, 1))
        return int(expires) or None

    def settle(self, co: str, call_id: str, answered_secs: int,
               record: Mapping[str, Any] | None = None) -> Settlement:
        """Charge the call (0 if unanswered) and write its CDR; idempotent per call-id."""
        secs = max(_int_arg("answered_secs", answered_secs, -(2**63)), 0)  # negative: not answered
        k = Keys.of(co)
        d = _unpack(self._fcall("prepaid_settle", [k.prepaid, k.resv, k.calls, k.settled, k.cdr, k.outcomes, k.ledger],
                                call_id, secs, _pack(record or {})))
        return Settlement(call_id, d["cost"], d["billed_secs"], d["balance"], d.get("settled_ms", 0),
                          d["duplicate"], d.get("note", ""))

    def record(self, co: str, record: Mapping[str, Any]) -> str:
        """Append the CDR of a call the Prepaid Account does not pay; returns the stream id."""
        entry_id = self._fcall("prepaid_record", [Keys.of(co).cdr], _pack(record))
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def record_unattributed(self, record: Mapping[str, Any]) -> str:
        """Append the CDR of an emergency call that names no company (UNATTRIBUTED_CDR)."""
        entry_id = self._fcall("prepaid_record", [UNATTRIBUTED_CDR], _pack(record))
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def unattributed_cdrs(self, count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """The oldest `count` records of UNATTRIBUTED_CDR as (stream id, record); for ops and tests."""
        rows = self._redis("xrange", UNATTRIBUTED_CDR, count=count)
        return [(entry_id.decode(), _unpack(fields[b"r"])) for entry_id, fields in rows]

    def status(self, co: str) -> AccountStatus:
        """Balance, currency and live reservations (read-only; FCALL_RO works on replicas)."""
        k = Keys.of(co)
        d = _unpack(self._fcall("prepaid_status", [k.prepaid, k.resv, k.calls], read_only=True))
        live = tuple(LiveReservation(e["call_id"], e["amount"], e["max_secs"], e["expires_ms"],
                                     e.get("setup_ms", 0), e.get("ext", ""), e.get("to", ""))
                     for e in d["reservations"])
        return AccountStatus(d["active"], d["balance"], d["currency"], d["reserved"], live)

    def ledger_open(self, co: str) -> dict[str, Any]:
        """Admin: accept the balance of an account that predates its ledger as its opening (once)."""
        k = Keys.of(co)
        return _unpack(self._fcall("prepaid_ledger_open", [k.prepaid, k.topups, k.ledger, k.opening]))

    def accounts(self) -> list[str]:
        """Every company with a Prepaid Account hash, provisioned or not (admin: SCAN)."""
        names = self.conn.call(lambda: list(self.conn.client().scan_iter(match="{co:*}:prepaid", count=1000)))
        return sorted({co for name in names if (co := Keys.company_of(name.decode(errors="replace")))})

    def ledger_cut(self, co: str) -> LedgerCut:
        """Balance, top-ups, opening and ledger length read in one MULTI, then the ledger's entries up to
        that length: a cut that settles running meanwhile cannot tear (they only append)."""
        k = Keys.of(co)
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hmget(k.prepaid, "balance", "currency")
        pipe.hgetall(k.topups)
        pipe.hget(k.opening, "charged")
        pipe.llen(k.ledger)
        (balance, currency), topups, opening, length = self.conn.call(pipe.execute)
        charges: list[Any] = []
        while len(charges) < length:
            page = self._redis("lrange", k.ledger, len(charges), min(len(charges) + LEDGER_PAGE, length) - 1)
            if not page:
                break
            charges.extend(_maybe_unpack(blob) for blob in page)
        return LedgerCut(co, _text(currency) or "", _text(balance),
                         tuple(sorted((ref.decode(errors="replace"), _maybe_unpack(blob))
                                      for ref, blob in topups.items())),
                         _text(opening), tuple(charges))

    def has_data(self, co: str) -> bool:
        """Whether a company has a Prepaid Account or call records (kept when it leaves the provisioning)."""
        k = Keys.of(co)
        return bool(self._redis("exists", k.prepaid, k.cdr))

    def now_ms(self) -> int:
        """Redis's clock, the one reservations expire by."""
        secs, micros = self._redis("time")
        return secs * 1000 + micros // 1000

    def cdrs(self, co: str, count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """The oldest `count` CDRs of a company as (stream id, record); for ops and tests."""
        rows = self._redis("xrange", Keys.of(co).cdr, count=count)
        return [(entry_id.decode(), _unpack(fields[b"r"])) for entry_id, fields in rows]

    def last_cdrs(self, co: str, count: int, page: int = 1000) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """The newest `count` CDRs of a company, oldest first, as (stream id, record).

        Read in pages of `page` entries, so an export of a long stream needs
        bounded memory and no single command outlasts the Redis timeout. A
        record that cannot be decoded is yielded as None (its id still counts).
        """
        _int_arg("count", count, 0)
        _int_arg("page", page, 1)
        key = Keys.of(co).cdr
        if count == 0:
            return
        if count <= page:  # the common case (show): one round trip
            rows = self._redis("xrevrange", key, count=count)
            for entry_id, fields in reversed(rows):
                yield entry_id.decode(), _decode_record(fields)
            return
        start: bytes | str = "-"
        if count < self._redis("xlen", key):
            # walk back to the oldest entry of the window, then read it forward
            end: bytes | str = "+"
            remaining = count
            while remaining > 0:
                rows = self._redis("xrevrange", key, max=end, min="-", count=min(page, remaining))
                if not rows:
                    break
                start = rows[-1][0]
                remaining -= len(rows)
                end = b"(" + start
        sent = 0
        while sent < count:
            rows = self._redis("xrange", key, min=start, max="+", count=min(page, count - sent))
            if not rows:
                return
            for entry_id, fields in rows:
                yield entry_id.decode(), _decode_record(fields)
            sent += len(rows)
            start = b"(" + rows[-1][0]

    # -- rates: global, shared by every company --------------------------------------------
    def set_rate(self, rate: money.Rate) -> money.Rate | None:
        """Add or replace the rate of rate.prefix (validated first: a bad rate writes nothing).

        Returns the rate it replaced (None if there was none or it was unreadable),
        read and written in one MULTI/EXEC.
        """
        blob = _pack(money.rate_to_dict(rate))  # rate_to_dict validates
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hget(RATES, rate.prefix)
        pipe.hset(RATES, rate.prefix, blob)
        old, _ = self.conn.call(pipe.execute)
        if old is None:
            return None
        try:
            return _decode_rate(rate.prefix, old)
        except ValueError:
            return None

    def remove_rate(self, prefix: str) -> bool:
        """Remove the rate of `prefix`; False if there was none."""
        _check_prefix(prefix)
        return bool(self._redis("hdel", RATES, prefix))

    def rates(self) -> list[money.Rate]:
        """Every rate, sorted by prefix; ValueError naming the first unreadable one."""
        stored = self._redis("hgetall", RATES)
        return sorted((_decode_rate(p.decode(), blob) for p, blob in stored.items()), key=lambda r: r.prefix)

    def rate_for(self, e164: str) -> money.Rate | None:
        """The rate of the longest prefix of `e164`, None if no prefix has one.

        One round trip (HMGET of every prefix). ValueError for a number that is
        not E.164 or a stored rate that cannot be read: callers fail closed.
        """
        prefixes = money.candidate_prefixes(e164)
        for prefix, blob in zip(prefixes, self.conn.run([("HMGET", RATES, *prefixes)])[0]):
            if blob is not None:
                return _decode_rate(prefix, blob)
        return None


def _check_prefix(prefix: Any) -> None:
    """The prefix rules of money.Rate.validate, for a prefix without a rate."""
    money.Rate(prefix, 0).validate()
