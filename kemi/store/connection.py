"""One Redis client per process, opened lazily after Kamailio forks its workers.

Kamailio runs the KEMI script in many processes (SIP workers, timers, RPC);
a socket opened before the fork would be shared by all of them. The client is
therefore keyed by PID, and every failure to reach Redis surfaces as
StoreUnavailable so the SIP layer can answer 503 instead of hanging. Nothing
outside kemi.store sees a redis exception: Connection.call translates them.
"""

from __future__ import annotations

import os
import threading
import time

import hiredis
import msgpack
import redis
from redis.connection import parse_url
from redis.backoff import NoBackoff
from redis.retry import Retry

from kemi import metrics
from kemi.settings import SCHEMA_VERSION, Settings
from kemi.store import keys
from kemi.store.wire import Wire, WireError


class StoreUnavailable(Exception):
    """Redis could not be reached or answered too slowly."""


class StoreRefused(Exception):
    """Redis answered a command with an error (WRONGTYPE, OOM, BUSY, a script's error reply)."""


class SchemaMismatch(StoreUnavailable):
    """Redis holds data in a layout this code does not understand (or none at all)."""

    def __init__(self, message: str, version=None):
        super().__init__(message)
        self.version = version  # what schema:version held; None when the store is empty


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes | None):
    return None if raw is None else msgpack.unpackb(raw, raw=False)


def make_client(settings: Settings) -> redis.Redis:
    timeout = settings.redis_timeout_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # Retrying inside a SIP worker multiplies the wait the caller sees;
        # the phone retransmits and the next request tries again.
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def make_wire(settings: Settings) -> Wire | None:
    """The hot path's own connection (kemi.store.wire), for a redis:// URL; None otherwise (unix
    sockets, TLS: those go through redis-py)."""
    if not settings.redis_url.startswith("redis://"):
        return None
    where = parse_url(settings.redis_url)
    return Wire(where.get("host", "localhost"), int(where.get("port", 6379)), int(where.get("db") or 0),
                where.get("password"), where.get("username"), settings.redis_timeout_ms / 1000)


class Connection:
    def __init__(self, settings: Settings, clock=time.monotonic):
        self.settings = settings
        self._clock = clock
        self._pid = -1
        self._client: redis.Redis | None = None
        self._wires = threading.local()  # one socket per process and thread (the CLI and tests use threads)
        self._schema_checked_at = float("-inf")
        # Told the kind of every failure (kemi.metrics.REDIS_ERRORS) before it is raised: the
        # proxy counts them (kemi.sip.app); the CLI leaves it unset.
        self.on_error = None
        # Told the seconds of every round trip that got an answer (the proxy's redis_latency_seconds);
        # the CLI leaves it unset.
        self.on_latency = None

    def failed(self, kind: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:  # counting must never change what the caller sees
                pass

    def _took(self, started: float) -> None:
        if self.on_latency is not None:
            try:
                self.on_latency(time.perf_counter() - started)
            except Exception:  # measuring must never change what the caller sees
                pass

    def client(self) -> redis.Redis:
        if self._pid != os.getpid() or self._client is None:
            self._client = make_client(self.settings)
            self._pid = os.getpid()
            self._schema_checked_at = float("-inf")
        return self._client

    def run(self, commands: list[tuple]) -> list:
        """Several commands in one round trip; their replies, in order. StoreUnavailable when Redis
        cannot be reached, StoreRefused for the first command Redis refused."""
        mine = self._wires
        if getattr(mine, "pid", None) != os.getpid():
            if getattr(mine, "wire", None) is not None:
                mine.wire.sock = None  # the parent's socket: never read nor closed here
            mine.wire, mine.pid = make_wire(self.settings), os.getpid()
        wire = mine.wire
        if wire is None:
            pipe = self.client().pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = self.call(pipe.execute, raise_on_error=False)
        else:
            started = time.perf_counter()
            try:
                replies = wire.run(commands)
                self._took(started)
            except (OSError, WireError, hiredis.ProtocolError) as exc:
                self._schema_checked_at = float("-inf")  # it may come back empty
                self.failed(metrics.TIMEOUT if isinstance(exc, TimeoutError) else metrics.UNREACHABLE)
                raise StoreUnavailable(f"Redis at {self.settings.redis_where} unreachable: {exc}") from exc
        for reply in replies:
            if isinstance(reply, (hiredis.ReplyError, redis.ResponseError)):
                if metrics.redis_refusal_is_fault(str(reply)):
                    self.failed(metrics.REFUSED)
                raise StoreRefused(str(reply))
        return replies

    def now(self) -> float:
        return self._clock()

    def schema_read(self, found) -> None:
        """schema:version as a lookup's own round trip read it: SchemaMismatch unless ours; counts as
        the periodic check."""
        version = unpack(found)
        if version != SCHEMA_VERSION:
            self.failed(metrics.SCHEMA)
            raise SchemaMismatch(
                f"Redis at {self.settings.redis_where} has {keys.SCHEMA_VERSION}={version!r}, "
                f"this proxy understands {SCHEMA_VERSION}: load the provisioning with "
                f"'python3 -m kemi.admin load FILE' or migrate the data",
                version,
            )
        self._schema_checked_at = self._clock()

    def ready(self, force_check: bool = False) -> redis.Redis:
        """The client, after making sure (at most every few seconds) that the schema is ours.

        force_check: a lookup that found nothing calls this, so that a store
        restarted empty answers "not provisioned" rather than "no such user".
        """
        client = self.client()
        now = self._clock()
        if force_check or now - self._schema_checked_at >= self.settings.schema_recheck_s:
            self.schema_read(self.call(client.get, keys.SCHEMA_VERSION))
        return client

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), a redis-py command, with its errors as StoreUnavailable or StoreRefused."""
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            self._took(started)
            return result
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._schema_checked_at = float("-inf")  # it may come back empty
            timeout = isinstance(exc, (redis.TimeoutError, TimeoutError))
            self.failed(metrics.TIMEOUT if timeout else metrics.UNREACHABLE)
            raise StoreUnavailable(f"Redis at {self.settings.redis_where} unreachable: {exc}") from exc
        except redis.ResponseError as exc:
            if metrics.redis_refusal_is_fault(str(exc)):
                self.failed(metrics.REFUSED)
            raise StoreRefused(str(exc)) from exc

    def ping(self) -> None:
        """StoreUnavailable unless Redis answers now: before a write whose lost answer would be ambiguous."""
        self.call(self.client().ping)
