"""What the playbook needs to know from Redis, and the provisioning it applies.

  schema [--require]   the store's schema:version against the code's (kemi.settings.SCHEMA_VERSION):
                       exit 1 when Redis holds another version (or none, with --require)
  functions            the `prepaid` Redis Functions library: loaded when Redis lacks it or holds
                       other code; prints `loaded` or `unchanged`
  apply FILE [--prune] `kemi.admin load --dry-run FILE`, then `kemi.admin load FILE`; prints
                       `CHANGED` only when the directory keys or the functions really differ after
                       the load (`load` rewrites every key of the file, so its exit status cannot say)

REDIS_URL comes from the environment (the wrapper's env file). Runs from the deployed checkout
(cwd), so that `kemi` is the code the proxies run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import msgpack
import redis

from kemi.paths import PREPAID_LUA
from kemi.settings import SCHEMA_VERSION

# The keys `kemi.admin load` writes (redis-schema/SCHEMA.md, Directory keys). Money keys are left
# out on purpose: calls change them all the time and a load never does.
DIRECTORY = ["schema:version", "companies", "trunks", "media_servers", "sources", "domain:*", "did:*",
             "source:*", "{co:*}:company", "{co:*}:exts", "{co:*}:ext:*", "{co:*}:dids"]


def client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=10, socket_connect_timeout=10)


def library_code(r: redis.Redis) -> bytes | None:
    for lib in r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "prepaid", "WITHCODE"):
        # redis-py answers with a dict or a flat [name, value, ...] list depending on its parser
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2]))
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        if fields.get("library_name") in (b"prepaid", "prepaid"):
            code = fields.get("library_code")
            return code.encode() if isinstance(code, str) else code
    return None


def value(r: redis.Redis, key: bytes):
    kind = r.type(key)
    if kind == b"string":
        return r.get(key)
    if kind == b"set":
        return sorted(r.smembers(key))
    if kind == b"hash":
        return sorted(r.hgetall(key).items())
    return kind


def digest(r: redis.Redis) -> str:
    keys = set()
    for pattern in DIRECTORY:
        keys.update(r.scan_iter(match=pattern.replace("[", "\\["), count=1000) if "*" in pattern
                    else [pattern.encode()] if r.exists(pattern) else [])
    state = [(key, value(r, key)) for key in sorted(keys)]
    state.append((b"function:prepaid", library_code(r)))
    return hashlib.sha256(msgpack.packb(state, use_bin_type=True)).hexdigest()


def schema(r: redis.Redis, require: bool) -> int:
    raw = r.get("schema:version")
    found = None if raw is None else msgpack.unpackb(raw, raw=False)
    if found == SCHEMA_VERSION or (found is None and not require):
        print(f"schema:version {found!r}, this release understands {SCHEMA_VERSION}")
        return 0
    print(f"Redis holds schema:version {found!r}, this release understands {SCHEMA_VERSION}: "
          f"{'provision it' if found is None else 'migrate the data before deploying this release'}",
          file=sys.stderr)
    return 1


def functions(r: redis.Redis) -> int:
    code = PREPAID_LUA.read_bytes()
    if library_code(r) == code:
        print("unchanged")
    else:
        r.execute_command("FUNCTION", "LOAD", "REPLACE", code)
        print("loaded")
    return 0


def apply(r: redis.Redis, args: list[str]) -> int:
    admin = [sys.executable, "-m", "kemi.admin", "load"]
    dry = subprocess.run(admin + ["--dry-run", *args], capture_output=True, text=True)
    sys.stdout.write(dry.stdout)
    if dry.returncode != 0:
        sys.stderr.write(dry.stderr)
        return dry.returncode
    before = digest(r)
    load = subprocess.run(admin + args, capture_output=True, text=True)
    sys.stdout.write(load.stdout)
    if load.returncode != 0:
        sys.stderr.write(load.stderr)
        return load.returncode
    print("CHANGED" if digest(r) != before else "UNCHANGED")
    return 0


def main(argv: list[str]) -> int:
    r = client()
    if argv[:1] == ["schema"]:
        return schema(r, "--require" in argv)
    if argv == ["functions"]:
        return functions(r)
    if argv[:1] == ["apply"] and len(argv) >= 2:
        return apply(r, argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
