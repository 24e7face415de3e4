"""The Redis ACL users of the product, with their rules from redis-schema/acl/*.acl.

One source for every place that starts a Redis: the Ansible template (roles/redis reads the same
files), scripts/run.sh and tests/harness.py (through this module):

    python -m kemi.store.acl FILE   writes an ACL file (mode 0600) for the users named by the
                                    environment: REDIS_PROXY_PASSWORD, REDIS_ADMIN_PASSWORD,
                                    REDIS_TOPOS_PASSWORD (empty: the default user has no password) and
                                    REDIS_EXPORTER_PASSWORD (empty: no exporter user)
"""

from __future__ import annotations

import hashlib
import os
import sys

from kemi.paths import ACL_DIR

PROXY_USER = "cowork-proxy"
ADMIN_USER = "cowork-admin"
EXPORTER_USER = "cowork-exporter"


def rules(name: str) -> str:
    """The rules of redis-schema/acl/NAME.acl on one line (comments and blank lines dropped)."""
    text = (ACL_DIR / f"{name}.acl").read_text(encoding="utf-8")
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _secret(password: str | None) -> str:
    # ACL files keep only the SHA-256 (#hex), as the Ansible template does
    return f"#{hashlib.sha256(password.encode()).hexdigest()}" if password else "nopass"


def acl_file(proxy_password: str, admin_password: str, topos_password: str | None = None,
             default_extra: str = "", exporter_password: str | None = None) -> str:
    """default_extra: rules added to `default` (the benches' native baseline reads its own keys with
    ndb_redis, which logs in as `default` only); never in a deployment."""
    if not proxy_password or not admin_password:
        raise ValueError("the proxy and admin users need a password")
    return "\n".join([
        f"user default on {_secret(topos_password)} {rules('default')} {default_extra}".rstrip(),
        f"user {PROXY_USER} on {_secret(proxy_password)} {rules(PROXY_USER)}",
        f"user {ADMIN_USER} on {_secret(admin_password)} ~* &* +@all",
    ] + ([f"user {EXPORTER_USER} on {_secret(exporter_password)} {rules(EXPORTER_USER)}"] if exporter_password else [])
    ) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        text = acl_file(os.environ.get("REDIS_PROXY_PASSWORD", ""), os.environ.get("REDIS_ADMIN_PASSWORD", ""),
                        os.environ.get("REDIS_TOPOS_PASSWORD") or None,
                        exporter_password=os.environ.get("REDIS_EXPORTER_PASSWORD") or None)
    except ValueError as exc:
        print(f"kemi.store.acl: {exc}", file=sys.stderr)
        return 2
    fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
