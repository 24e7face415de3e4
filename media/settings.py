"""The media server's settings, from the environment (MEDIA_*), validated at start: a typo stops it
with the variable's name. One process plays one role on one SIP address."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("announcement", "receptionist")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    role: str
    sip_addr: str
    sip_port: int
    transport: str
    rtp_port_min: int
    rtp_port_max: int
    proxies: tuple[str, ...]      # the only sources whose INVITEs are served (the proxy's addresses)
    provision_file: Path
    prompts_file: Path
    recordings_dir: Path
    cache_dir: Path
    http_addr: str
    http_port: int                # /metrics and /health; 0: none
    max_calls: int
    clock_rate: int
    silence_s: int                # the receptionist's wait for a first digit before the operator
    digit_gap_s: int              # between the digits of one extension
    tries: int                    # wrong extensions before the operator
    default_language: str         # a company unknown to the provisioning file (announcement)
    log_level: int                # pjsip's own log level (0..5)


def _int(env, name, default, low, high) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value}: expected {low}..{high}")
    return value


def _ip(env, name, default) -> str:
    raw = env.get(name, "") or default
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an IPv4 address") from None


def _choice(env, name, default, choices) -> str:
    raw = env.get(name, "") or default
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    role = _choice(env, "MEDIA_ROLE", "", ROLES) if env.get("MEDIA_ROLE") else None
    if role is None:
        raise SettingsError(f"MEDIA_ROLE is not set: expected one of {', '.join(ROLES)}")
    proxies_raw = env.get("MEDIA_PROXIES", "") or "127.0.0.1"
    proxies = []
    for item in proxies_raw.split(","):
        try:
            proxies.append(str(ipaddress.IPv4Address(item.strip())))
        except ValueError:
            raise SettingsError(f"MEDIA_PROXIES={proxies_raw!r}: expected comma-separated IPv4 addresses") from None
    low = _int(env, "MEDIA_RTP_PORT_MIN", 40000, 1024, 65000)
    high = _int(env, "MEDIA_RTP_PORT_MAX", 40999, 1024, 65535)
    if high - low < 4:
        raise SettingsError(f"MEDIA_RTP_PORT_MIN..MEDIA_RTP_PORT_MAX={low}..{high}: expected a range of at least 4 ports")
    files = {}
    for name, default in (("MEDIA_PROVISION_FILE", env.get("PROVISION_FILE") or ROOT / "redis-schema" / "demo-office.yaml"),
                          ("MEDIA_PROMPTS_FILE", ROOT / "media" / "prompts.txt")):
        path = Path(env.get(name, "") or default)
        if not path.is_file():
            raise SettingsError(f"{name}={str(path)!r}: no such file")
        files[name] = path
    rate = _int(env, "MEDIA_CLOCK_RATE", 8000, 8000, 16000)
    if rate not in (8000, 16000):
        raise SettingsError(f"MEDIA_CLOCK_RATE={rate}: expected 8000 or 16000")
    return Settings(
        role=role,
        sip_addr=_ip(env, "MEDIA_SIP_ADDR", "127.0.0.1"),
        sip_port=_int(env, "MEDIA_SIP_PORT", 5060, 1, 65535),
        transport=_choice(env, "MEDIA_TRANSPORT", "udp", ("udp", "tcp")),
        rtp_port_min=low, rtp_port_max=high,
        proxies=tuple(proxies),
        provision_file=files["MEDIA_PROVISION_FILE"],
        prompts_file=files["MEDIA_PROMPTS_FILE"],
        recordings_dir=Path(env.get("MEDIA_RECORDINGS_DIR", "") or ROOT / "media" / "recordings"),
        cache_dir=Path(env.get("MEDIA_CACHE_DIR", "") or Path(env.get("RUN_DIR", "/tmp")) / "media-cache"),
        http_addr=_ip(env, "MEDIA_HTTP_ADDR", "127.0.0.1"),
        http_port=_int(env, "MEDIA_HTTP_PORT", 0, 0, 65535),
        # at most 4: the pjsua2-python wheel's PJSUA_MAX_CALLS (media/server.py)
        max_calls=_int(env, "MEDIA_MAX_CALLS", 4, 1, 4),
        clock_rate=rate,
        silence_s=_int(env, "MEDIA_SILENCE_S", 10, 2, 120),
        digit_gap_s=_int(env, "MEDIA_DIGIT_GAP_S", 3, 1, 30),
        tries=_int(env, "MEDIA_TRIES", 3, 1, 10),
        default_language=_choice(env, "MEDIA_DEFAULT_LANGUAGE", "fr", ("fr", "en")),
        log_level=_int(env, "MEDIA_PJSIP_LOG_LEVEL", 1, 0, 5),
    )
