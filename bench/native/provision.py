"""Write the keys bench/native/kamailio-native.cfg reads, from the product's directory keys.

    .venv/bin/python bench/native/provision.py redis://127.0.0.1:6379/0

The product keeps an extension's digest HA1 inside a msgpack map ({co:<id>}:ext:<2XXX>), which
Kamailio's native script cannot decode. The native config does the same one lookup per request on
a plain hash instead:
- `native:ha1:<sip-domain>`: hash, extension number -> HA1 (phones only);
- `native:did`: hash, national number as a trunk sends it (0XXXXXXXXX) and the E.164 form ->
  `<ext>@<sip-domain>` (DIDs that target an extension).
Run it after every `kemi.admin load` the benchmark makes; it only adds the `native:*` keys.
"""

from __future__ import annotations

import sys

import msgpack
import redis


def national(e164: str) -> str:
    return "0" + e164[3:] if e164.startswith("+33") else e164


def provision(url: str) -> int:
    """Write native:ha1:* and native:did from the product's keys; the number of phones written."""
    client = redis.Redis.from_url(url)
    phones = 0
    pipe = client.pipeline(transaction=False)
    for co in sorted(m.decode() for m in client.smembers("companies")):
        company = msgpack.unpackb(client.get(f"{{co:{co}}}:company"))
        domain = company["domain"]
        numbers = sorted(m.decode() for m in client.smembers(f"{{co:{co}}}:exts"))
        exts = client.mget([f"{{co:{co}}}:ext:{n}" for n in numbers]) if numbers else []
        ha1 = {}
        for raw in exts:
            ext = msgpack.unpackb(raw) if raw else {}
            if ext.get("ha1"):
                ha1[ext["number"]] = ext["ha1"]
        if ha1:
            pipe.delete(f"native:ha1:{domain}")
            pipe.hset(f"native:ha1:{domain}", mapping=ha1)
            phones += len(ha1)
        for did in sorted(m.decode() for m in client.smembers(f"{{co:{co}}}:dids")):
            raw = client.get(f"did:{did}")
            target = msgpack.unpackb(raw).get("target") if raw else None
            if target and target.startswith("2"):
                pipe.hset("native:did", mapping={did: f"{target}@{domain}", national(did): f"{target}@{domain}"})
    pipe.execute()
    return phones


if __name__ == "__main__":
    print(f"native keys written for {provision(sys.argv[1])} phones")
