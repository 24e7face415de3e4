"""Every Redis key name the project uses, in one place (documented in redis-schema/SCHEMA.md).

Keys of one company share the hash tag {co:<id>} so that a Redis Cluster keeps
them in one slot and a script or transaction may touch them together.
"""

SCHEMA_VERSION = "schema:version"
# bumped (INCR) with every change of trunks, media servers, sources, domains or overrides
DIRECTORY_VERSION = "directory:version"
COMPANIES = "companies"
TRUNKS = "trunks"
MEDIA_SERVERS = "media_servers"
SOURCES = "sources"
NUMBERING_OVERRIDES = "numbering:overrides"
SITES = "sites"  # declared sites (a building behind one NAT address): name -> {name, cidrs, companies}


def domain(sip_domain: str) -> str:
    return f"domain:{sip_domain}"


def company(co: str) -> str:
    return f"{{co:{co}}}:company"


def extensions(co: str) -> str:
    return f"{{co:{co}}}:exts"


def extension(co: str, number: str) -> str:
    return f"{{co:{co}}}:ext:{number}"


def dids(co: str) -> str:
    return f"{{co:{co}}}:dids"


def did(e164: str) -> str:
    return f"did:{e164}"


SOURCE_PREFIX = "source:"


def source(ip: str, port: int | str) -> str:
    return f"{SOURCE_PREFIX}{ip}:{port}"

# Who changed what through kemi.admin (top-ups, rates, provisioning loads, overrides): a stream capped
# at AUDIT_MAXLEN entries (XADD MAXLEN ~), written after each change succeeded (kemi.admin_audit).
ADMIN_AUDIT = "audit:admin"
ADMIN_AUDIT_MAXLEN = 100_000
