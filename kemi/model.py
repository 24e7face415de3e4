"""What is provisioned: companies and their extensions.

Plain data, no I/O. The store encodes these as msgpack maps (redis-schema/SCHEMA.md)
and the provisioning loader builds them from the ops YAML file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

EXTENSION_RE = re.compile(r"2[0-9]{3}")
# Also the hash tag of the company's Redis keys ({co:<id>}): never a brace or a colon.
COMPANY_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# A SIP domain as phones put it in From/To: lower-case DNS labels.
DOMAIN_RE = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# ITU-T E.164: '+', a country code (never starting with 0) and the national number, 15 digits at most.
E164_MAX_DIGITS = 15
# A complete number (a DID, a main number, a caller ID, a forward): none is shorter than 7 digits.
E164_RE = re.compile(rf"\+[1-9][0-9]{{6,{E164_MAX_DIGITS - 1}}}")
# A prefix of E.164 numbers (rates, numbering overrides): '+' and up to 15 digits; '+' alone is
# every number (the catch-all rate). redis-schema/prepaid.lua checks the same form.
E164_PREFIX_RE = re.compile(rf"\+[0-9]{{0,{E164_MAX_DIGITS}}}")
HA1_RE = re.compile(r"[0-9a-f]{32}")
# Names and locations travel in SIP headers: no control characters, no quotes.
DISPLAY_NAME_RE = re.compile(r'[^\x00-\x1f\x7f"\\]{1,64}')
LOCATION_RE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")

DEFAULT_RING_TIMEOUT = 30
EXTENSION_TYPES = ("phone", "virtual")


class Stored:
    """A dataclass kept in Redis as a msgpack map of its fields."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        # fields a newer version wrote and this one does not know are ignored
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def digest_ha1(user: str, realm: str, password: str) -> str:
    """RFC 2617 HA1 = MD5(user:realm:password); the only form a password is kept in."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


@dataclass(frozen=True)
class Extension(Stored):
    number: str
    name: str
    ha1: str | None = None          # None for a virtual extension: nothing registers as it
    did: str | None = None          # caller ID shown outside (E.164)
    type: str = "phone"
    forward: str | None = None      # virtual extension: the external number it forwards to
    ring_timeout: int = DEFAULT_RING_TIMEOUT



@dataclass(frozen=True)
class Company:
    id: str
    name: str
    domain: str
    main_number: str | None = None  # caller ID when an extension has no DID
    location: str = ""              # civic address sent with emergency calls
    allow_special: bool = False     # premium-rate, shared-cost and 3BPQ numbers (paid from prepaid)
    receptionist: str | None = None  # name of the media server that plays its Virtual Receptionist
    extensions: tuple[Extension, ...] = field(default=(), compare=False)
    dids: tuple["Did", ...] = field(default=(), compare=False)
    # What the media server (media/) says and does for this company; it reads them from the
    # provisioning file itself, so they are not stored in Redis (the proxy never needs them).
    language: str = field(default="fr", compare=False)  # of the greeting and the spoken balance
    greeting: str | None = field(default=None, compare=False)  # None: media/prompts.txt's greeting
    operator: str | None = field(default=None, compare=False)  # the receptionist's 0; None: first extension

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in VOICE_FIELDS + ("extensions", "dids"):  # stored under their own keys, or not at all
            del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Company":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("extensions", "dids")}
        return cls(**known)


RECEPTIONIST = "receptionist"
VOICE_FIELDS = ("language", "greeting", "operator")
LANGUAGES = ("fr", "en")
GREETING_RE = re.compile(r"[^\x00-\x1f\x7f{}]{1,400}")  # one line, spoken; no {placeholders}


@dataclass(frozen=True)
class Did(Stored):
    """A public number of a company and where its calls go."""

    number: str                      # E.164
    co: str
    target: str                      # an extension number 2XXX, or "receptionist"
    fallback: str | None = None      # "receptionist": where an unanswered or unregistered extension's calls go


MEDIA_ROLES = ("receptionist", "announcement")


@dataclass(frozen=True)
class Peer(Stored):
    """A SIP peer the proxy sends to and trusts by source address: a trunk or a media server."""

    name: str
    host: str                 # IPv4 address (no DNS on the call path)
    port: int = 5060
    transport: str = "udp"

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port};transport={self.transport}"

    @property
    def label(self) -> str:
        """The peer as a log line names it: what ops called it, and where it is."""
        return f"{self.name} ({self.transport}:{self.host}:{self.port})"


@dataclass(frozen=True)
class MediaServer(Peer):
    """A media server (docs/media-server-contract.md)."""

    role: str = "receptionist"


TRANSPORTS = ("udp", "tcp")
IPV4_RE = re.compile(r"(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}")


@dataclass(frozen=True)
class Trunk(Peer):
    """A carrier interconnection: where outbound calls go, and a source trusted for inbound calls."""

    priority: int = 1         # 1 is tried first; equal priorities go by name
    emergency: bool = False   # carries emergency calls
    outbound: bool = True     # carries ordinary outbound calls



@dataclass(frozen=True)
class Site(Stored):
    """A building (or a company) whose phones all reach the proxy from a few public addresses, each
    phone from its own port (its router's NAT). The gate limits a declared site per phone, never per
    address (kemi.sip.gate, docs/deploying-behind-nat.md)."""

    name: str
    cidrs: tuple[str, ...]            # canonical networks (ipaddress), IPv4 and IPv6
    companies: tuple[str, ...] = ()   # the member companies (ids), for the operator

    def to_dict(self) -> dict:
        return {"name": self.name, "cidrs": list(self.cidrs), "companies": list(self.companies)}

    @classmethod
    def from_dict(cls, data: dict) -> "Site":
        return cls(data["name"], tuple(data.get("cidrs") or ()), tuple(data.get("companies") or ()))
