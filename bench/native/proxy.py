"""The native baseline (bench/native/kamailio-native.cfg) started like the product's Proxy.

    from bench.native.proxy import NativeProxy
    native = NativeProxy(workdir, redis_url, trunk=("127.0.0.2", 5060)).start()

Same harness as the product (tests.harness.Proxy: free port on 127.0.0.1, its own log, process group,
kamcmd socket), another config. Call bench.native.provision.provision(redis_url) after loading the
office so that the native:* keys exist.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

from tests.harness import ROOT, Proxy, wait_for

CONFIG = ROOT / "bench" / "native" / "kamailio-native.cfg"
FLOOR_SCRIPT = ROOT / "bench" / "native" / "kemi_floor.py"


# What the native baseline's ndb_redis needs of Redis's default user (the only one it can log in as):
# its own keys (bench/native/provision.py). Give it to the bench's RedisServer(default_extra=...).
NATIVE_DEFAULT_RULES = "~native:* +hget +xadd"


class NativeProxy(Proxy):
    def __init__(self, workdir: Path, redis_url: str, trunk: tuple[str, int] = ("127.0.0.2", 5060),
                 ip: str = "127.0.0.1", media: bool = True, kemi_floor: bool = False, **env: str):
        """media: anchor calls in an rtpengine of its own, as the product does (-A WITH_MEDIA).
        kemi_floor: the same routing in KEMI Python (bench/native/kemi_floor.py, -A KEMI_FLOOR)."""
        self.with_media = media
        self.kemi_floor = kemi_floor
        if kemi_floor:
            env.setdefault("KEMI_FLOOR_SCRIPT", str(FLOOR_SCRIPT))
            env.setdefault("FLOOR_MEDIA", "1" if media else "0")
        url = urlparse(redis_url)
        db = (url.path or "/0").lstrip("/") or "0"
        env.setdefault("NATIVE_REDIS", f"name=r;addr={url.hostname};port={url.port or 6379};db={db}")
        env.setdefault("TRUNK_URI", f"sip:{trunk[0]}:{trunk[1]}")
        env.setdefault("TRUNK_IP", trunk[0])
        super().__init__(workdir, redis_url, ip, **env)
        self.log_path = workdir / f"kamailio-{'floor' if kemi_floor else 'native'}-{self.port}.log"

    def start(self, wait: bool = True) -> "NativeProxy":
        if self.with_media and self.media is not None and self.media.proc is None:
            self.media.start()
        self.log = open(self.log_path, "ab")
        env = self.env()
        if self.kemi_floor:  # Debian's embedded Python, as scripts/kamailio.sh gives the product
            env = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
            env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", PYTHONNOUSERSITE="1")
        self.proc = subprocess.Popen(
            # the product's allocator (scripts/kamailio.sh): the two differ in their routing only
            ["/usr/sbin/kamailio", "-x", "tlsf", "-X", "tlsf", "-f", str(CONFIG), "-DD", "-E"] +
            (["-A", "WITH_MEDIA"] if self.with_media else []) + (["-A", "KEMI_FLOOR"] if self.kemi_floor else []) +
            ["-m", env.get("KAMAILIO_SHM_MB", "128"),
             "-M", env.get("KAMAILIO_PKG_MB", "16"), "-P", str(self.workdir / f"kamailio-{self.port}.pid")],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        if wait:
            wait_for(self.answers_options, 20, f"native Kamailio on {self.ip}:{self.port} (log: {self.log_path})")
        return self
