"""Settings of the routing core (the proxy's Python and the ops CLI), read from the environment.

This dataclass is the one source of their defaults and ranges: scripts/env.sh leaves
these variables unset, and the README's Settings table is checked against it
(tests/unit/test_settings.py). Parsing validates everything, so that a typo in an
operator's environment stops the proxy at start with the variable's name instead of
misbehaving later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

SCHEMA_VERSION = 1  # the Redis layout this code understands; see redis-schema/SCHEMA.md


class SettingsError(ValueError):
    pass


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


def redacted_url(url: str) -> str:
    """The URL without its password (REDIS_URL carries the ACL user's): what logs and errors show."""
    try:
        parsed = urlparse(url)
        password = parsed.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    user, _, host = parsed.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return parsed._replace(netloc=f"{name}:***@{host}").geturl()


def _redis_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    try:
        parsed = urlparse(raw)
        ok = parsed.scheme in ("redis", "rediss", "unix") and bool(parsed.hostname or parsed.path)
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(f"{name}={redacted_url(raw)!r}: expected redis://host:port/db")
    return raw


def _emergency_trunks(env: Mapping[str, str], name: str, default: str) -> str:
    from kemi.routing import parse_static_trunks  # validated here so a typo stops the start

    raw = env.get(name) or default
    try:
        parse_static_trunks(raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return raw


def _agents(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    items = [item.strip() for item in raw.split(",")]
    if not all(re.fullmatch(r"[\x21-\x7e][\x20-\x7e]{0,63}", item) for item in items):
        raise SettingsError(f"{name}={raw!r}: expected comma-separated User-Agent fragments "
                            f"(printable ASCII, 1..64 characters each)")
    return raw


def _addresses(env: Mapping[str, str], name: str, default: str) -> str:
    import ipaddress

    raw = env.get(name) or default
    for item in (i.strip() for i in raw.split(",") if i.strip()):
        try:
            ipaddress.IPv4Address(item)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected comma-separated IPv4 addresses") from None
    return raw


def _setting(env: str, default: Any, parse: Callable, *limits: int) -> Any:
    """A field read from the environment variable `env` by parse(environ, env, default, *limits)."""
    return field(default=default, metadata={"env": env, "parse": parse, "limits": limits})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _setting("REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url)
    redis_timeout_ms: int = _setting("REDIS_TIMEOUT_MS", 250, _int, 1, 60_000)
    # Money changes (kemi.store.prepaid: every FCALL that writes) are followed, in the same round trip,
    # by WAIT REDIS_WAIT_REPLICAS REDIS_WAIT_TIMEOUT_MS: answered once that many replicas have them, so a
    # failover cannot lose them. 0: no WAIT (a single Redis, the demo). What happens when no replica
    # confirms in time: kemi.store.prepaid.Unreplicated.
    redis_wait_replicas: int = _setting("REDIS_WAIT_REPLICAS", 0, _int, 0, 5)
    redis_wait_timeout_ms: int = _setting("REDIS_WAIT_TIMEOUT_MS", 100, _int, 1, 10_000)
    # How often a process re-reads schema:version, so that a store that was
    # flushed or replaced is noticed without a restart.
    schema_recheck_s: int = _setting("SCHEMA_RECHECK_S", 5, _int, 1, 3600)
    # How long a trunk may stay silent (no provisional reply) before the next one is tried.
    trunk_timeout_ms: int = _setting("TRUNK_TIMEOUT_MS", 3000, _int, 500, 60_000)
    # Last-resort emergency routes, used when Redis is down and nothing is cached:
    # "udp:IP:PORT,tcp:IP:PORT" (kemi.routing.parse_static_trunks).
    emergency_trunks: str = _setting("EMERGENCY_TRUNKS", "", _emergency_trunks)
    # Prepaid calls: the longest call one reservation pays for, how long set-up
    # (announcement + ringing) may take, and the slack on the reservation's
    # expiry, which frees the money if the proxy dies mid-call.
    prepaid_max_call_s: int = _setting("PREPAID_MAX_CALL_S", 7200, _int, 1, 86_400)
    prepaid_setup_s: int = _setting("PREPAID_SETUP_S", 120, _int, 1, 3600)
    prepaid_ttl_margin_s: int = _setting("PREPAID_TTL_MARGIN_S", 60, _int, 1, 3600)
    # A new call may not reuse the Call-ID of a call this node relayed while that call is up, nor for
    # CALL_ID_GRACE_S after it ended (kamailio.cfg: htable callids): long enough for a late
    # retransmission of its INVITE (64*T1 = 32 s) and for rtpengine's delete-delay (30 s), which still
    # keys the old media by that Call-ID; short enough that the table holds minutes of calls, not a day.
    call_id_grace_s: int = _setting("CALL_ID_GRACE_S", 300, _int, 60, 86_400)
    # Abuse at the edge (kemi.sip.gate). A source address that pike finds flooding (kamailio.cfg:
    # PIKE_REQS per PIKE_WINDOW_S) is dropped, unanswered, for BAN_S seconds.
    ban_s: int = _setting("BAN_S", 300, _int, 1, 86_400)
    # AUTH_FAIL_MAX failed digest checks of one user from one source address within
    # AUTH_FAIL_WINDOW_S (counted from the first) block that pair for AUTH_BAN_S seconds.
    auth_fail_max: int = _setting("AUTH_FAIL_MAX", 10, _int, 1, 1_000_000)
    auth_fail_window_s: int = _setting("AUTH_FAIL_WINDOW_S", 600, _int, 1, 86_400)
    auth_ban_s: int = _setting("AUTH_BAN_S", 900, _int, 1, 86_400)
    # Emergency calls (kemi.sip.emergency): at most EMERGENCY_CALLS_MAX routed per phone (the authenticated
    # user@domain, else the source ip:port) per EMERGENCY_WINDOW_S, counted from the first; and at most
    # EMERGENCY_UNIDENTIFIED_MAX unauthenticated ones per window on this node, whatever their source
    # (a forged UDP source can be any ip:port). Over either: 503 with its own reason, never silence.
    emergency_calls_max: int = _setting("EMERGENCY_CALLS_MAX", 5, _int, 1, 1000)
    emergency_window_s: int = _setting("EMERGENCY_WINDOW_S", 60, _int, 1, 3600)
    emergency_unidentified_max: int = _setting("EMERGENCY_UNIDENTIFIED_MAX", 20, _int, 1, 100_000)
    # A declared site's address (a building behind one NAT) is never banned: once pike finds it
    # flooding, each phone (address and port; authenticated user) may send SITE_PHONE_REQS
    # requests per SITE_PHONE_WINDOW_S, and the one that sends more is banned for BAN_S.
    site_phone_reqs: int = _setting("SITE_PHONE_REQS", 30, _int, 1, 100_000)
    site_phone_window_s: int = _setting("SITE_PHONE_WINDOW_S", 2, _int, 1, 3600)
    # rtpengine's relay ports (kemi.sip.media): an SDP bigger than SDP_MAX_BYTES or with more
    # than SDP_MAX_STREAMS media streams (m= lines) is refused before rtpengine sees it. Every
    # anchored media stream takes 4 relay ports (RTP and RTCP on each side): a node relays at most
    # MEDIA_STREAMS_MAX streams at once (at most a quarter of RTP_PORT_MIN..RTP_PORT_MAX), of which
    # MEDIA_EMERGENCY_RESERVE only for emergency calls; one company at most
    # MEDIA_STREAMS_PER_COMPANY, one phone at most MEDIA_STREAMS_PER_PHONE.
    sdp_max_bytes: int = _setting("SDP_MAX_BYTES", 8192, _int, 512, 65_535)
    sdp_max_streams: int = _setting("SDP_MAX_STREAMS", 4, _int, 1, 64)
    media_streams_max: int = _setting("MEDIA_STREAMS_MAX", 2400, _int, 1, 1_000_000)
    media_emergency_reserve: int = _setting("MEDIA_EMERGENCY_RESERVE", 100, _int, 0, 1_000_000)
    media_streams_per_company: int = _setting("MEDIA_STREAMS_PER_COMPANY", 200, _int, 1, 1_000_000)
    media_streams_per_phone: int = _setting("MEDIA_STREAMS_PER_PHONE", 8, _int, 1, 1_000_000)
    # The other proxies of this site (kemi.sip.site): the addresses they send SIP from, declared by the
    # operator, never learnt from a message. A call one of them sends here for a phone registered through
    # this proxy (its Path) is relayed to that phone; nothing else is taken from them. Empty: a lone proxy.
    site_proxies: str = _setting("SITE_PROXIES", "", _addresses)
    # Requests whose User-Agent contains one of these (case-insensitively) are dropped unanswered.
    scanner_user_agents: str = _setting(
        "SCANNER_USER_AGENTS",
        "friendly-scanner,friendly-request,sipcli,sipvicious,sip-scan,VaxSIPUserAgent,pplsip,iWar,SIVuS,smap",
        _agents)

    @property
    def redis_where(self) -> str:
        """REDIS_URL without its password, for logs and error messages."""
        return redacted_url(self.redis_url)

    @property
    def scanner_agents(self) -> tuple[str, ...]:
        return tuple(item.strip().lower() for item in self.scanner_user_agents.split(","))

    @property
    def siblings(self) -> frozenset[str]:
        """SITE_PROXIES as a set of addresses."""
        return frozenset(i.strip() for i in self.site_proxies.split(",") if i.strip())

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        settings = cls(**{f.name: f.metadata["parse"](env, f.metadata["env"], f.default, *f.metadata["limits"])
                          for f in fields(cls)})
        if settings.redis_wait_replicas and settings.redis_wait_timeout_ms >= settings.redis_timeout_ms:
            # the socket would give up first, and a money change already applied would look lost
            raise SettingsError(f"REDIS_WAIT_TIMEOUT_MS={settings.redis_wait_timeout_ms}: expected less than "
                                f"REDIS_TIMEOUT_MS={settings.redis_timeout_ms} (WAIT rides in the same round trip)")
        return settings
