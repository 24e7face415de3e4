"""Settings of the routing core, read from the environment.

Every setting has a documented default in scripts/env.sh; this module only
parses and validates, so that a typo in an operator's environment stops the
proxy at start with the variable's name instead of misbehaving later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlparse

SCHEMA_VERSION = 1  # the Redis layout this code understands; see redis-schema/SCHEMA.md


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: int = 250
    # How often a process re-reads schema:version, so that a store that was
    # flushed or replaced is noticed without a restart.
    schema_recheck_s: int = 5
    # How long a trunk may stay silent (no provisional reply) before the next one is tried.
    trunk_timeout_ms: int = 3000
    # Last-resort emergency routes, used when Redis is down and nothing is cached:
    # "udp:IP:PORT,tcp:IP:PORT" (kemi.routing.parse_static_trunks).
    emergency_trunks: str = ""
    # Prepaid calls: the longest call one reservation pays for, how long set-up
    # (announcement + ringing) may take, and the slack on the reservation's
    # expiry, which frees the money if the proxy dies mid-call.
    prepaid_max_call_s: int = 7200
    prepaid_setup_s: int = 120
    prepaid_ttl_margin_s: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        return cls(
            redis_url=_redis_url(env, "REDIS_URL", cls.redis_url),
            redis_timeout_ms=_int(env, "REDIS_TIMEOUT_MS", cls.redis_timeout_ms, 1, 60_000),
            schema_recheck_s=_int(env, "SCHEMA_RECHECK_S", cls.schema_recheck_s, 1, 3600),
            trunk_timeout_ms=_int(env, "TRUNK_TIMEOUT_MS", cls.trunk_timeout_ms, 500, 60_000),
            emergency_trunks=_emergency_trunks(env.get("EMERGENCY_TRUNKS", "")),
            prepaid_max_call_s=_int(env, "PREPAID_MAX_CALL_S", cls.prepaid_max_call_s, 1, 86_400),
            prepaid_setup_s=_int(env, "PREPAID_SETUP_S", cls.prepaid_setup_s, 1, 3600),
            prepaid_ttl_margin_s=_int(env, "PREPAID_TTL_MARGIN_S", cls.prepaid_ttl_margin_s, 1, 3600),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value}: expected {low}..{high}")
    return value


def _redis_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    parsed = urlparse(raw)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
        raise SettingsError(f"{name}={raw!r}: expected redis://host:port/db")
    return raw


def _emergency_trunks(raw: str) -> str:
    from kemi.routing import parse_static_trunks  # validated here so a typo stops the start

    try:
        parse_static_trunks(raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return raw
