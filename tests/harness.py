"""Real components for the tests: redis-server, Kamailio with the project's config, SIPp.

Everything listens on loopback; each SIP peer role gets its own 127.0.0.x
address so that trust by source address can be tested. Every process started
here is bounded in time and stopped by the fixtures.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kemi.paths import ROOT

SCENARIOS = ROOT / "sipp-scenarios"
PYTHON = sys.executable


def free_port(ip: str = "127.0.0.1", kind=socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on ip."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind((ip, port))
                u.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port on {ip}")


def bound(ip: str, port: int, tcp: bool = False) -> bool:
    """Whether some process listens on ip:port (read from /proc, so it never races the binder)."""
    wanted = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    # thread-self: the namespace of this thread (tests/netns.py run_in), which is the process's otherwise
    with open("/proc/thread-self/net/tcp" if tcp else "/proc/thread-self/net/udp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    # TCP state 0A is LISTEN
    return any(row[1] == wanted and (not tcp or row[3] == "0A") for row in rows)


def run_in_netns(netns: str | None, action):
    """action() with its sockets in that network namespace (tests/netns.py); here when None."""
    if netns is None:
        return action()
    from tests.netns import run_in
    return run_in(netns, action)


def closed_by_peer(socks) -> int:
    """How many of these connected sockets the other end has closed (or reset) by now."""
    closed = 0
    for s in socks:
        s.settimeout(0.05)
        try:
            closed += s.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except OSError:
            pass
    return closed


def connections(src: str, dst: tuple[str, int], count: int, tls: bool = False) -> tuple[list, int]:
    """Open `count` connections from src to dst (TLS: with a handshake); (the open ones, how many were refused):
    what one source meets at the per-source limit (scripts/sip-conn-limit.sh)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opened, refused = [], 0
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((src, 0))
        sock.settimeout(3)
        try:
            sock.connect(dst)
            opened.append(context.wrap_socket(sock) if tls else sock)
        except ConnectionRefusedError:  # the TCP reset of the limit
            sock.close()
            refused += 1
    return opened, refused


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# The test Redis has the product's ACL users (redis-schema/acl/, kemi.store.acl): the admin user for
# the CLI and the tests' own clients, the proxy's user for Kamailio, `default` for topology hiding.
PROXY_PASSWORD = "proxy-test-secret"
ADMIN_PASSWORD = "admin-test-secret"
EXPORTER_PASSWORD = "exporter-test-secret"


class RedisUrl(str):
    """An admin URL of a RedisServer (what the CLI and the tests use) that knows the URLs of the same
    database for the proxy's Python (`proxy`) and for topology hiding (`topos`, the default user):
    Proxy takes those, so a test that hands a proxy `redis.url` runs it with the production rights."""

    proxy: str
    topos: str

    def __new__(cls, admin: str, proxy: str, topos: str) -> "RedisUrl":
        url = super().__new__(cls, admin)
        url.proxy, url.topos = proxy, topos
        return url


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, unix_socket: bool = False, netns: str | None = None,
                 default_extra: str = ""):
        self.netns = netns  # run in that network namespace (tests/netns.py): the tests reach it by its socket
        self.port = port or free_port(kind=socket.SOCK_STREAM)
        self.default_extra = default_extra  # kemi.store.acl.acl_file: the benches' native baseline only
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # a proxy in another network namespace reaches Redis through the file system (tests/netns.py)
        self.socket = self.dir / "redis.sock" if unix_socket or netns else None
        self.proc: subprocess.Popen | None = None

    def socket_url(self, db: int = 0) -> RedisUrl:
        from kemi.store.acl import ADMIN_USER, PROXY_USER
        return RedisUrl(f"unix://{ADMIN_USER}:{ADMIN_PASSWORD}@{self.socket}?db={db}",
                        f"unix://{PROXY_USER}:{PROXY_PASSWORD}@{self.socket}?db={db}", f"unix://{self.socket}?db={db}")

    @property
    def url(self) -> RedisUrl:
        return self.url_of(0)

    def url_of(self, db: int) -> RedisUrl:
        from kemi.store.acl import ADMIN_USER, PROXY_USER
        where = f"127.0.0.1:{self.port}/{db}"
        return RedisUrl(f"redis://{ADMIN_USER}:{ADMIN_PASSWORD}@{where}",
                        f"redis://{PROXY_USER}:{PROXY_PASSWORD}@{where}", f"redis://{where}")

    def start(self) -> "RedisServer":
        from kemi.store.acl import acl_file
        acl = self.dir / "users.acl"
        acl.write_text(acl_file(PROXY_PASSWORD, ADMIN_PASSWORD, default_extra=self.default_extra,
                                exporter_password=EXPORTER_PASSWORD))
        self.proc = subprocess.Popen(
            in_netns(self.netns) + ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--loglevel", "warning", "--aclfile", str(acl)]
            + (["--unixsocket", str(self.socket), "--unixsocketperm", "700"] if self.socket else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, f"redis-server on {self.port}")
        return self

    def ping(self) -> bool:
        def ping() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        return run_in_netns(self.netns, ping)

    def client(self, db: int = 0, as_proxy: bool = False):
        """A raw client (the admin user), for tests that inspect or break what kemi.store wrote; as_proxy:
        the proxy's user, for tests of what it may not do."""
        import redis
        from kemi.store.acl import ADMIN_USER, PROXY_USER
        user, password = (PROXY_USER, PROXY_PASSWORD) if as_proxy else (ADMIN_USER, ADMIN_PASSWORD)
        if self.netns:
            return redis.Redis(unix_socket_path=str(self.socket), db=db, socket_timeout=10,
                               username=user, password=password)
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10,
                           username=user, password=password)

    def store(self, db: int = 0, as_proxy: bool = False):
        """kemi.store's own Connection to one database, as the CLI (admin) or the proxy makes it."""
        from kemi.settings import Settings
        from kemi.store import Connection
        url = self.url_of(db)
        # a loaded test machine may be slower than the proxy's 250 ms
        return Connection(Settings(redis_url=url.proxy if as_proxy else url, redis_timeout_ms=10_000))

    def refusals(self, user: str) -> list[dict]:
        """ACL LOG entries of `user` (what Redis refused it, latest first), each as a dict of str."""
        entries = self.client().acl_log(count=128)
        return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in e.items()}
                for e in entries if (e.get("username") or e.get(b"username")) in (user, user.encode())]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def office_file(path: Path) -> dict:
    """A provisioning file as data: tests and benches take passwords and addresses from it, not copies."""
    import yaml
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def passwords(path: Path) -> dict[tuple[str, str], str]:
    """(extension, domain) -> password of every phone the provisioning file gives a password."""
    return {(ext["number"], co["domain"]): ext["password"]
            for co in office_file(path).get("companies") or () for ext in co.get("extensions") or ()
            if "password" in ext}


def admin(redis_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The ops CLI, exactly as an operator runs it."""
    proc = subprocess.run([PYTHON, "-m", "kemi.admin", "--redis-url", redis_url, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"kemi.admin {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def demo_cert(workdir: Path, ip: str) -> tuple[str, str]:
    """(certificate, key) of the self-signed demo pair scripts/run.sh makes, for a proxy on ip."""
    out = subprocess.run([str(ROOT / "scripts" / "demo-cert.sh"), str(workdir / f"tls-{ip}"), ip],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split()
    return out[0], out[1]


def in_netns(netns: str | None) -> list[str]:
    """The command prefix that runs a program in a network namespace (none: here)."""
    return ["ip", "netns", "exec", netns] if netns else []


# kemi.settings MEDIA_STREAMS_*: a load run or a test of something else (money, latency) places many
# calls at once from one phone of one company, which the relay's shares would refuse; then only the
# relay's own port range bounds what it holds (the shares: tests/sip/test_media_security.py)
LOAD_MEDIA_SHARES = {"MEDIA_STREAMS_MAX": "1000000", "MEDIA_STREAMS_PER_COMPANY": "1000000",
                     "MEDIA_STREAMS_PER_PHONE": "1000000"}


class MediaRelay:
    """rtpengine as scripts/run.sh starts it: userspace forwarding only (--table=-1, no kernel
    module), RTP on `ip` in a port range, its NG control protocol on ip:ng_port."""

    def __init__(self, workdir: Path, ip: str = "127.0.0.1", netns: str | None = None, ng_port: int | None = None,
                 ports: tuple[int, int] = (30000, 30999)):
        self.ip = ip
        self.netns = netns
        self.ng_port = ng_port or free_port(ip)
        self.ports = ports
        self.log_path = workdir / f"rtpengine-{self.ng_port}.log"
        self.proc: subprocess.Popen | None = None
        # its Prometheus page (--listen-http, on loopback as in production: the port takes /cli commands)
        self.http_port = free_port(ip, socket.SOCK_STREAM) if netns is None and ip.startswith("127.") else None

    @property
    def sock(self) -> str:
        """kamailio.cfg's RTPENGINE_SOCK."""
        return f"udp:{self.ip}:{self.ng_port}"

    def command(self) -> list[str]:
        return in_netns(self.netns) + [
            "rtpengine", "--config-file=none", "--foreground", "--table=-1", f"--interface={self.ip}",
            f"--listen-ng={self.ip}:{self.ng_port}", f"--port-min={self.ports[0]}", f"--port-max={self.ports[1]}",
            "--timeout=60", "--silent-timeout=3600", "--final-timeout=14400", "--offer-timeout=600",
            "--log-stderr", "--log-level=6"] + ([f"--listen-http={self.ip}:{self.http_port}"] if self.http_port else [])

    def start(self) -> "MediaRelay":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.started, 10, f"rtpengine on {self.ip}:{self.ng_port} (log: {self.log_path})")
        return self

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"rtpengine exited with {self.proc.returncode}:\n{self.log_text()[-2000:]}")
        return "Startup complete" in self.log_text()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


class Proxy:
    """Kamailio with the project's kamailio.cfg and kemi/, on a free port of 127.0.0.1 (UDP and TCP)
    and another one for TLS (tls_port, with the demo certificate tls_cert), with an rtpengine of
    its own (unless RTPENGINE_SOCK names one). netns: both run in that network namespace
    (tests/netns.py), on `ip` and `port` there (TLS on port + 2: port + 1 is rtpengine's)."""

    def __init__(self, workdir: Path, redis_url: str, ip: str = "127.0.0.1", netns: str | None = None,
                 port: int | None = None, **env: str):
        self.ip = ip
        self.netns = netns
        self.port = port or free_port(ip)
        self.tls_port = self.port + 2 if netns else free_port(ip)
        while self.tls_port == self.port:
            self.tls_port = free_port(ip)
        self.tls_cert, self.tls_key = demo_cert(workdir, ip)
        # TCP; in a namespace of its own, beside the SIP port, rtpengine's (port + 1) and TLS's (port + 2)
        self.metrics_port = self.port + 3 if netns else free_port(ip, socket.SOCK_STREAM)
        self.workdir = workdir
        self.redis_url = redis_url  # what the tests use (a RedisServer's: its admin user)
        # a RedisServer's URL: Kamailio gets its users (the proxy's for the routes, default for topos)
        self.proxy_redis_url = getattr(redis_url, "proxy", redis_url)
        self.topos_url = getattr(redis_url, "topos", None)
        self.log_path = workdir / f"kamailio-{self.port}.log"
        self.ctl = f"unix:{workdir}/kamailio-{self.port}.ctl"
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.media = None if "RTPENGINE_SOCK" in env else \
            MediaRelay(workdir, ip, netns, ng_port=self.port + 1 if netns else None)

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "SIP_ADDR": self.ip, "SIP_PORT": str(self.port), "SIP_CHILDREN": "2", "LOG_LEVEL": "2",
            "REDIS_URL": self.proxy_redis_url, "KEMI_SCRIPT": str(ROOT / "kemi" / "kamailio_entry.py"),
            # the venv running the tests is the one the proxy must import from
            "KEMI_VENV": sys.prefix if sys.prefix != sys.base_prefix else str(ROOT / ".venv"),
            "KAMAILIO_CTL": self.ctl, "SCHEMA_RECHECK_S": "1",
            "NATPING_S": "20", "NAT_KEEPALIVE_TIMEOUT_S": "120",
            "TLS_ADDR": self.ip, "TLS_PORT": str(self.tls_port), "TLS_CERT": self.tls_cert, "TLS_KEY": self.tls_key,
            "METRICS_ADDR": self.ip, "METRICS_PORT": str(self.metrics_port),
        })
        if self.media is not None:
            env["RTPENGINE_SOCK"] = self.media.sock
        if self.topos_url:
            env["TOPOS_REDIS_URL"] = self.topos_url
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> "Proxy":
        if self.media is not None and self.media.proc is None:
            self.media.start()
        self.log = open(self.log_path, "ab")
        # scripts/kamailio.sh, as scripts/run.sh: Debian's embedded Python and the venv, whatever PATH says
        self.proc = subprocess.Popen(
            in_netns(self.netns) + [str(ROOT / "scripts" / "kamailio.sh"), "-f", str(ROOT / "kamailio.cfg"), "-DD", "-E",
             "-m", self.env().get("KAMAILIO_SHM_MB", "128"), "-M", self.env().get("KAMAILIO_PKG_MB", "16"),
             "-P", str(self.workdir / f"kamailio-{self.port}.pid")],
            env=self.env(), stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        if wait:
            wait_for(self.answers_options, 20, f"Kamailio on {self.ip}:{self.port} (log: {self.log_path})")
            # Kamailio forks its TCP receivers and its modules' timer processes after the UDP receivers
            # answer: a test that stops Redis at once would otherwise do it while they start, and with the
            # dialogs in Redis (kamailio.cfg, dialog db_mode) a process that cannot reach it at its start
            # stops Kamailio (a deployment's supervisor starts it again, in memory: scripts/kamailio.sh).
            wait_for(self.answers_options_on_tcp, 20, f"Kamailio on tcp:{self.ip}:{self.port} (log: {self.log_path})")
            self._forked = []
            wait_for(self.all_forked, 20, f"every Kamailio process started (log: {self.log_path})", interval=0.1)
        return self

    def answers_options(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Kamailio exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            answer = run_in_netns(self.netns, lambda: send_raw(self, options_request(self), timeout=0.3))
        except (OSError, TimeoutError):
            return False
        return answer is not None and answer.startswith("SIP/2.0 200")

    def all_forked(self) -> bool:
        """Kamailio's process table (core.psx) the same size three reads in a row: the forks are over."""
        count = self.kamcmd("core.psx").count("IDX:")
        self._forked = [*self._forked, count][-3:]
        return count > 0 and self._forked == [count] * 3

    def answers_options_on_tcp(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Kamailio exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")

        def ask() -> bool:
            with socket.create_connection((self.ip, self.port), timeout=0.5) as s:
                local_ip, local_port = s.getsockname()
                request = options_request(self, src=local_ip, src_port=local_port).replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                s.sendall(request.encode())
                return s.recv(65535).startswith(b"SIP/2.0 200")
        try:
            return run_in_netns(self.netns, ask)
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def mark(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace")

    def kamcmd(self, *args: str) -> str:
        proc = subprocess.run(["kamcmd", "-s", self.ctl, *args], capture_output=True, text=True, timeout=10)
        return proc.stdout + proc.stderr

    def contacts(self, aor: str) -> list[str]:
        return re.findall(r"Address: (\S+)", self.kamcmd("ul.lookup", "location", aor))

    def http_get(self, path: str = "/metrics", port: int | None = None, timeout: float = 5) -> tuple[int, str]:
        """(status, body) of an HTTP GET as Prometheus sends it (no Content-Length), to the metrics
        socket or another port of the proxy."""
        import http.client

        def get() -> tuple[int, str]:
            conn = http.client.HTTPConnection(self.ip, port or self.metrics_port, timeout=timeout)
            try:
                conn.request("GET", path)
                answer = conn.getresponse()
                return answer.status, answer.read().decode(errors="replace")
            finally:
                conn.close()
        return run_in_netns(self.netns, get)

    def metrics(self) -> dict[str, float]:
        """The metrics page as {series: value}, e.g. 'kamailio_calls_routed_total{category="internal"}'."""
        status, body = self.http_get()
        assert status == 200, body
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                series, value = re.match(r"(\S+(?:\s*\{[^}]*\})?)\s+(\S+)", line).groups()
                values[re.sub(r"\s+", "", series)] = float(value)
        return values

    def unregister(self, aor: str) -> None:
        self.kamcmd("ul.rm", "location", aor)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self.media is not None:
            self.media.stop()


# -- raw SIP, for what SIPp cannot send (malformed requests, exact headers) ---------------------
def options_request(proxy: Proxy, ruri: str | None = None, max_forwards: int = 70, src: str = "127.0.0.1",
                    src_port: int = 0, extra: str = "") -> str:
    call_id = uuid.uuid4().hex
    return (f"OPTIONS {ruri or f'sip:{proxy.ip}:{proxy.port}'} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{src_port or 9};branch=z9hG4bK{call_id[:12]};rport\r\n"
            f"From: <sip:probe@{src}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{proxy.ip}:{proxy.port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: {max_forwards}\r\n{extra}"
            f"Content-Length: 0\r\n\r\n")


def send_raw(proxy: Proxy, text: str, src: str = "127.0.0.1", timeout: float = 2.0) -> str | None:
    """Send one datagram, return the first final answer's text (or the first answer if none is final)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        port = s.getsockname()[1]
        s.settimeout(timeout)
        s.sendto(text.replace("src_port_placeholder", str(port)).encode(), (proxy.ip, proxy.port))
        first = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535).decode(errors="replace")
            except socket.timeout:
                break
            first = first or data
            if not data.startswith("SIP/2.0 1"):
                return data
        return first


def status_line(answer: str | None) -> tuple[int, str] | None:
    if not answer:
        return None
    match = re.match(r"SIP/2.0 (\d{3}) ([^\r\n]*)", answer)
    return (int(match.group(1)), match.group(2)) if match else None


# -- SIPp ---------------------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    log: str
    messages: str
    stdout: str

    @property
    def final(self) -> tuple[int, str] | None:
        match = re.search(r"FINAL (\d{3}) ([^\r\n]*)", self.log)
        return (int(match.group(1)), match.group(2).strip()) if match else None

    def received(self, start: str) -> list[str]:
        """Every message SIPp received whose first line starts with `start` (e.g. 'INVITE')."""
        blocks = re.split(r"-{10,} [^\n]*\n", self.messages)
        out = []
        for block in blocks:
            if "message received" not in block:
                continue
            body = block.split("\n", 1)[1] if "\n" in block else ""
            text = body.lstrip("\n")
            if text.startswith(start):
                out.append(text)
        return out


# SIPp's options for "no control socket". SIPp 3.6 always opens one (UDP 8888 or the next free port up to
# 8947, on -ci or every address) and obeys any datagram there: a single "Q" from anyone on the host stops
# it, and "cset ..." changes its variables. No option turns it off; but it binds that socket as IPv4
# whatever -ci says (src/socket.cpp setup_ctrl_socket), so an IPv6 -ci makes each of its 60 binds fail
# (EAFNOSUPPORT) and it runs without one, after a warning. 100::1 is in the IPv6 discard prefix (RFC
# 6666), never a local address: a SIPp that bound IPv6 correctly would fail there too.
# tests/sip/test_standins.py checks that no control socket is open and that "Q" stops nothing.
NO_CONTROL_SOCKET = ["-ci", "100::1"]


@dataclass
class Sipp:
    """One SIPp process; started in the background by start(), collected by wait()."""

    scenario: str
    args: list[str]
    workdir: Path
    ip: str = "127.0.0.20"
    port: int = 0
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    proc: subprocess.Popen | None = None
    reject: tuple[int, str] | None = None  # reject.xml with another status line
    edits: tuple = ()                       # (old, new) text replacements: a variant of the scenario
    calls: int = 1                          # -m: calls before SIPp stops
    rate: int = 10                          # -r: new calls per second (UAC side)
    netns: str | None = None                # run in that network namespace (tests/netns.py)

    def __post_init__(self):
        self.port = self.port or free_port(self.ip)
        self.log_path = self.workdir / f"sipp-{self.name}.log"
        self.msg_path = self.workdir / f"sipp-{self.name}.msg"

    def scenario_file(self) -> str:
        """The scenario, or a variant of it (SIPp reads status codes and header sets at load time)."""
        path = SCENARIOS / self.scenario
        edits = list(self.edits)
        if self.reject is not None:
            edits.append(("SIP/2.0 503 Service Unavailable", f"SIP/2.0 {self.reject[0]} {self.reject[1]}"))
        if not edits:
            return str(path)
        text = path.read_text()
        for old, new in edits:
            assert old in text, f"{self.scenario} has no {old!r}"
            text = text.replace(old, new)
        variant = self.workdir / f"{path.stem}-{self.name}.xml"
        variant.write_text(text)
        return str(variant)

    def command(self, target: str | None) -> list[str]:
        cmd = in_netns(self.netns) + ["sipp"] + ([target] if target else []) + [
            *NO_CONTROL_SOCKET,
            "-sf", self.scenario_file(), "-i", self.ip, "-p", str(self.port), "-m", str(self.calls),
            "-r", str(self.rate), "-l", str(max(self.calls, 1)),
            "-nostdin", "-trace_logs", "-log_file", str(self.log_path),
            "-trace_msg", "-message_file", str(self.msg_path), "-timeout_error"]
        return cmd + self.args

    def start(self, target: str | None = None, timeout: float = 30) -> "Sipp":
        self.proc = subprocess.Popen(self.command(target) + ["-timeout", f"{int(timeout)}s"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if target is None:  # a listening peer: ready once its socket is bound
            wait_for(self.listening, 10, f"SIPp {self.scenario} on {self.ip}:{self.port}")
        return self

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"SIPp {self.scenario} exited: {self.proc.stdout.read()[-1500:]}")
        tcp = "-t" in self.args and self.args[self.args.index("-t") + 1].startswith("t")
        return run_in_netns(self.netns, lambda: bound(self.ip, self.port, tcp))

    def wait(self, timeout: float = 40) -> SippResult:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return SippResult(self.proc.returncode,
                          self.log_path.read_text(errors="replace") if self.log_path.exists() else "",
                          self.msg_path.read_text(errors="replace") if self.msg_path.exists() else "",
                          out[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Phone:
    user: str
    domain: str
    password: str
    ip: str
    port: int

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"

    def auth_args(self) -> list[str]:
        return ["-s", self.user, "-au", self.user, "-ap", self.password, "-set", "domain", self.domain]


class MediaServer:
    """The media server (python -m media, media/) playing one role on ip:port: the receptionist and
    announcement roles' default in the tests, as in scripts/run.sh and the Ansible role (SIPp stays
    for carriers and load). Its log is collected; stop() ends it."""

    def __init__(self, role: str, ip: str, port: int, workdir: Path, provision: Path, **env: str):
        self.role, self.ip, self.port = role, ip, port
        self.log_path = workdir / f"media-{role}-{ip}-{port}-{uuid.uuid4().hex[:6]}.log"
        self.http_port = free_port(ip, socket.SOCK_STREAM)
        self.env = {**os.environ, "MEDIA_ROLE": role, "MEDIA_SIP_ADDR": ip, "MEDIA_SIP_PORT": str(port),
                    "MEDIA_PROVISION_FILE": str(provision), "MEDIA_CACHE_DIR": str(workdir / "media-cache"),
                    "MEDIA_HTTP_ADDR": ip, "MEDIA_HTTP_PORT": str(self.http_port), **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MediaServer":
        self._out = open(self.log_path, "w")
        self.proc = subprocess.Popen([PYTHON, "-m", "media"], cwd=ROOT, env=self.env, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or "started sip=" in self.log, 20,
                 f"media server {self.role} on {self.ip}:{self.port}")
        assert self.proc.poll() is None, f"media server exited:\n{self.log[-3000:]}"
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self, callid: str | None = None) -> list[str]:
        return [line for line in self.log.splitlines()
                if line.startswith("media[") and (callid is None or f" call={callid} " in line + " ")]

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.http_port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._out.close()
class RedisSite:
    """scripts/redis-site.sh, as scripts/run.sh starts it with REDIS_SITE=1: a primary, a replica, three
    Sentinels, and HAProxy on 127.0.0.1:port routing to the primary. Sentinel timings come from
    env (REDIS_SENTINEL_DOWN_AFTER_MS, REDIS_SITE_CHECK_MS; scripts/env.sh)."""

    def __init__(self, workdir: Path, **env: str):
        self.port = free_port(kind=socket.SOCK_STREAM)
        self.node_ports = [free_port(kind=socket.SOCK_STREAM) for _ in range(2)]
        self.sentinel_ports = [free_port(kind=socket.SOCK_STREAM) for _ in range(3)]
        self.dir = workdir / f"redis-site-{self.port}"
        self.env = {**os.environ, "REDIS_PORT": str(self.port), "REDIS_SITE_DIR": str(self.dir),
                    "RUN_DIR": str(workdir), "REDIS_SITE_NODE_PORTS": " ".join(map(str, self.node_ports)),
                    "REDIS_SITE_SENTINEL_PORTS": " ".join(map(str, self.sentinel_ports)),
                    # the product's ACL users on every node (redis-site.sh writes them, kemi.store.acl)
                    "REDIS_PROXY_PASSWORD": PROXY_PASSWORD, "REDIS_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
        self.proc: subprocess.Popen | None = None
        self.out = workdir / f"redis-site-{self.port}.out"
        self.acl_file = self.dir / "users.acl"

    def start(self) -> "RedisSite":
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "redis-site.sh")], env=self.env, cwd=ROOT,
                                     stdout=open(self.out, "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is None and b"redis-site: ready" in self.out.read_bytes()
                 or self.proc.poll() is not None, 30, "scripts/redis-site.sh")
        assert self.proc.poll() is None, self.out.read_text()
        return self

    def url_of(self, db: int) -> RedisUrl:
        from kemi.store.acl import ADMIN_USER, PROXY_USER
        where = f"127.0.0.1:{self.port}/{db}"
        return RedisUrl(f"redis://{ADMIN_USER}:{ADMIN_PASSWORD}@{where}",
                        f"redis://{PROXY_USER}:{PROXY_PASSWORD}@{where}", f"redis://{where}")

    def client(self, db: int = 0, port: int | None = None):
        """The admin user on a node (or the site's address); a Sentinel's port: no user (Sentinels
        here have no ACL of their own)."""
        import redis
        from kemi.store.acl import ADMIN_USER
        if port in self.sentinel_ports:
            return redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=10)
        return redis.Redis(host="127.0.0.1", port=port or self.port, db=db, socket_timeout=10,
                           username=ADMIN_USER, password=ADMIN_PASSWORD)

    def store(self, db: int = 0):
        from kemi.settings import Settings
        from kemi.store import Connection
        return Connection(Settings(redis_url=self.url_of(db), redis_timeout_ms=10_000))

    def primary(self) -> int:
        """The port the Sentinels name as the primary's (the first that answers)."""
        for port in self.sentinel_ports:
            try:
                return int(self.client(port=port).execute_command(
                    "SENTINEL", "get-master-addr-by-name", self.env.get("REDIS_SITE_MASTER", "cowork"))[1])
            except Exception:
                continue
        raise RuntimeError("no Sentinel answered")

    def pid_of(self, port: int) -> int:
        return int((self.dir / f"node-{port}.pid").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None
