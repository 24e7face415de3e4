"""One Redis client per process, opened lazily after Kamailio forks its workers.

Kamailio runs the KEMI script in many processes (SIP workers, timers, RPC);
a socket opened before the fork would be shared by all of them. The client is
therefore keyed by PID, and every failure to reach Redis surfaces as
StoreUnavailable so the SIP layer can answer 503 instead of hanging. Nothing
outside kemi.store sees a redis exception: Connection.call translates them.
"""

from __future__ import annotations

import os
import time

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kemi import metrics
from kemi.settings import SCHEMA_VERSION, Settings
from kemi.store import keys


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


class Connection:
    def __init__(self, settings: Settings, clock=time.monotonic):
        self.settings = settings
        self._clock = clock
        self._pid = -1
        self._client: redis.Redis | None = None
        self._schema_checked_at = float("-inf")
        # Told the kind of every failure (kemi.metrics.REDIS_ERRORS) before it is raised: the
        # proxy counts them (kemi.sip.app); the CLI leaves it unset.
        self.on_error = None

    def _failed(self, kind: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:  # counting must never change what the caller sees
                pass

    def client(self) -> redis.Redis:
        if self._pid != os.getpid() or self._client is None:
            self._client = make_client(self.settings)
            self._pid = os.getpid()
            self._schema_checked_at = float("-inf")
        return self._client

    def ready(self, force_check: bool = False) -> redis.Redis:
        """The client, after making sure (at most every few seconds) that the schema is ours.

        force_check: a lookup that found nothing calls this, so that a store
        restarted empty answers "not provisioned" rather than "no such user".
        """
        client = self.client()
        now = self._clock()
        if force_check or now - self._schema_checked_at >= self.settings.schema_recheck_s:
            found = self.call(client.get, keys.SCHEMA_VERSION)
            version = unpack(found)
            if version != SCHEMA_VERSION:
                self._failed(metrics.SCHEMA)
                raise SchemaMismatch(
                    f"Redis at {self.settings.redis_where} has {keys.SCHEMA_VERSION}={version!r}, "
                    f"this proxy understands {SCHEMA_VERSION}: load the provisioning with "
                    f"'python3 -m kemi.admin load FILE' or migrate the data",
                    version,
                )
            self._schema_checked_at = now
        return client

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), a redis-py command, with its errors as StoreUnavailable or StoreRefused."""
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._schema_checked_at = float("-inf")  # it may come back empty
            timeout = isinstance(exc, (redis.TimeoutError, TimeoutError))
            self._failed(metrics.TIMEOUT if timeout else metrics.UNREACHABLE)
            raise StoreUnavailable(f"Redis at {self.settings.redis_where} unreachable: {exc}") from exc
        except redis.ResponseError as exc:
            if metrics.redis_refusal_is_fault(str(exc)):
                self._failed(metrics.REFUSED)
            raise StoreRefused(str(exc)) from exc

    def ping(self) -> None:
        """StoreUnavailable unless Redis answers now: before a write whose lost answer would be ambiguous."""
        self.call(self.client().ping)
