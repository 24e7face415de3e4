"""ansible/ for real: lint, then site.yml run on this machine (inventories/ci, a local connection).

The playbook runs inside a network namespace this module creates (`ip netns exec`), so the Redis,
Kamailio and exporter it deploys listen on that namespace's loopback only and never meet another
test's or anybody's servers; it deploys under a directory of its own (cowork_prefix), not into the
machine's /etc, /opt or /var. Phones (SIPp) and the checks run in the same namespace. Everything the
deployment started is stopped, and the namespace deleted, even when a test fails.

Needs root (namespaces, the services' own users), ansible-playbook, ansible-lint and yamllint
(scripts/setup.sh installs them). The venv's packages come from a wheelhouse filled before the
namespace exists (there is no network inside it).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.harness import ROOT, Phone, Sipp, options_request, send_raw, status_line, wait_for

ANSIBLE = ROOT / "ansible"
VAULT_PASSWORD_FILE = ANSIBLE / "vault-test-password.txt"
INVENTORY = ANSIBLE / "inventories" / "ci"
PROJECT_FILES = ["kamailio.cfg", "kemi", "scripts", "redis-schema", "sipp-scenarios", "requirements.txt", "monitoring"]
SIP = ("127.0.0.1", 5060)        # inventories/ci: kamailio_sip_addr, kamailio_sip_port
METRICS = "http://127.0.0.1:9494/metrics"   # kamailio_metrics_addr, kamailio_metrics_port
EXPORTER = "http://127.0.0.1:9121/metrics"  # monitoring_exporter_listen

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ansible-playbook", "ansible-lint", "yamllint", "ip")),
    reason="needs root, ip(8) and Ansible with ansible-lint and yamllint (scripts/setup.sh installs them)")


def ansible_env() -> dict:
    # Debian's ansible with Debian's Python: nothing of the test's venv or PYTHON* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "ANSIBLE_"))}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(VAULT_PASSWORD_FILE)
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def run(argv: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def vault_view(path: Path) -> dict:
    proc = run(["ansible-vault", "view", str(path)], env=ansible_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


# -- lint -------------------------------------------------------------------------------------
LINT_VENV = ROOT / ".lint-venv" / "bin" / "ansible-lint"  # ansible/requirements-lint.txt (scripts/setup.sh)


@pytest.mark.parametrize("lint", ["debian", "pinned"])
def test_ansible_lint_production_profile_passes(lint):
    """Debian's ansible-lint, and the current one pinned in ansible/requirements-lint.txt."""
    if lint == "pinned" and not LINT_VENV.exists():
        pytest.skip("no .lint-venv (scripts/setup.sh builds it from ansible/requirements-lint.txt)")
    env = ansible_env()
    if lint == "pinned":
        env["PATH"] = f"{LINT_VENV.parent}:{env['PATH']}"  # its own ansible-core, not Debian's
    proc = run(["ansible-lint", "--offline", "--profile", "production", "--nocolor"], cwd=ANSIBLE, env=env,
               timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # 6.13: "Passed with production profile: ..."; 26.x: "Profile 'production' was required, and it passed."
    assert re.search(r"Passed with production profile|Profile 'production' was required, and it passed",
                     proc.stdout + proc.stderr), proc.stdout[-2000:] + proc.stderr[-2000:]


def test_yamllint_passes():
    proc = run(["yamllint", "--strict", "."], cwd=ANSIBLE, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("inventory", ["production", "staging", "ci"])
def test_syntax_check_passes(inventory):
    proc = run(["ansible-playbook", "-i", f"inventories/{inventory}", "--syntax-check", "site.yml"],
               cwd=ANSIBLE, env=ansible_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


SECRET_SOURCES = {"proxy.env.j2", "admin.env.j2", "exporter.env.j2", "cowork-users.acl.j2", "{{ provisioning_file }}"}


def test_no_secret_is_committed_in_clear_nor_printed():
    for vault in sorted(ANSIBLE.glob("inventories/*/group_vars/all/vault.yml")) + sorted(
            ANSIBLE.glob("provisioning/*.yaml")):
        assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256"), f"{vault} is not vault-encrypted"
    handled = 0
    for path in sorted(ANSIBLE.glob("roles/*/tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            module = task.get("ansible.builtin.template") or task.get("ansible.builtin.copy") or {}
            if module.get("src") in SECRET_SOURCES or "passwords" in str(task.get("environment", "")):
                handled += 1
                assert task.get("no_log") is True, f"{path.name}: {task['name']!r} handles a secret without no_log"
    assert handled >= 7


# -- the deployment ---------------------------------------------------------------------------
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000


@contextmanager
def inside(netns: str):
    """This process's sockets and children in the namespace `netns` (setns), then back."""
    with open("/proc/self/ns/net") as home, open(f"/run/netns/{netns}") as there:
        if _libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")


def wheelhouse() -> Path:
    """The venv's wheels, fetched outside the namespace once per requirements.txt."""
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()[:16]
    where = Path(tempfile.gettempdir()) / f"cowork-deploy-wheels-{digest}"
    if not (where / ".complete").exists():
        where.mkdir(exist_ok=True)
        proc = run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "-r", str(ROOT / "requirements.txt"), "-d", str(where)], timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (where / ".complete").write_text("ok\n")
    where.chmod(0o755)
    return where


class Deployment:
    def __init__(self):
        self.netns = f"cowork-deploy-{os.getpid()}"
        self.base = Path(tempfile.mkdtemp(prefix="cowork-deploy-"))
        # the services run as kamailio, redis and prometheus: they must reach their files
        self.base.chmod(0o755)
        self.src = self.base / "src"
        self.prefix = self.base / "root"
        self.work = self.base / "work"
        self.work.mkdir()
        self.runs: list[tuple[float, str]] = []
        for name in PROJECT_FILES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, self.src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif path.exists():
                self.src.mkdir(exist_ok=True)
                shutil.copy2(path, self.src / name)
        self.wheels = wheelhouse()

    def create_namespace(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True, timeout=30)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True, timeout=30)

    def playbook(self, *args: str, extra: dict | None = None, inventories: tuple = (), ok: bool = True,
                 wheels: Path | None = None) -> subprocess.CompletedProcess:
        """site.yml on this machine; `extra`: extra variables (a JSON file, for lists and PEM text), given
        last; `inventories`: more inventory sources beside inventories/ci."""
        started = time.monotonic()
        argv = ["ip", "netns", "exec", self.netns, "ansible-playbook", "-i", str(INVENTORY), "site.yml",
                "-e", f"cowork_prefix={self.prefix}", "-e", f"cowork_source_dir={self.src}",
                "-e", f"kamailio_wheelhouse={wheels or self.wheels}", *args]
        for inventory in inventories:  # after inventories/ci: its hosts come first in their groups
            argv[7:7] = ["-i", str(inventory)]
        if extra:
            path = self.work / f"extra-{len(self.runs) + 1}.json"
            path.write_text(json.dumps(extra))
            argv += ["-e", f"@{path}"]
        proc = run(argv, cwd=ANSIBLE, env=ansible_env(), timeout=900)
        self.runs.append((time.monotonic() - started, proc.stdout))
        (self.work / f"playbook-{len(self.runs)}.log").write_text(proc.stdout + proc.stderr)
        if ok:
            assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        return proc

    def pids(self) -> list[int]:
        proc = run(["ip", "netns", "pids", self.netns], timeout=30)
        return [int(p) for p in proc.stdout.split()]

    def teardown(self) -> None:
        """Stop whatever runs in the namespace (only the deployment's services and our SIPp), delete it."""
        try:
            if Path(f"/run/netns/{self.netns}").exists():
                for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                    for pid in self.pids():
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            pass
                    deadline = time.monotonic() + grace
                    while self.pids() and time.monotonic() < deadline:
                        time.sleep(0.2)
                subprocess.run(["ip", "netns", "del", self.netns], timeout=30)
        finally:
            if os.environ.get("KEEP_DEPLOY_DIR") != "1":
                shutil.rmtree(self.base, ignore_errors=True)

    def log(self, name: str) -> str:
        path = self.prefix / "var" / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""


def recap(output: str, host: str = "ci-host") -> dict[str, int]:
    match = re.search(rf"{host}\s*:\s*(.*)", output.split("PLAY RECAP", 1)[1])
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def deployed():
    deployment = Deployment()
    try:
        deployment.create_namespace()
        deployment.playbook()
        yield deployment
    finally:
        deployment.teardown()
        for seconds, output in deployment.runs:
            tail = output.split("PLAY RECAP", 1)[-1].strip().splitlines()[:2]
            print(f"\nplaybook run: {seconds:.0f} s; {' '.join(tail)}")


@pytest.fixture(scope="module")
def secrets() -> dict:
    return vault_view(INVENTORY / "group_vars" / "all" / "vault.yml")


@pytest.fixture(scope="module")
def office() -> dict:
    return vault_view(ANSIBLE / "provisioning" / "ci.yaml")


class DeployedProxy:
    ip, port = SIP

    def __init__(self, deployment: Deployment):
        self.ctl = f"unix:{deployment.prefix}/run/cowork-proxy/kamailio/kamailio.ctl"
        self.pidfile = deployment.prefix / "run" / "cowork-proxy" / "kamailio" / "kamailio.pid"

    def kamcmd(self, *args: str) -> str:
        proc = run(["kamcmd", "-s", self.ctl, *args], timeout=10)
        return proc.stdout + proc.stderr

    def contacts(self, aor: str) -> list[str]:
        return re.findall(r"Address: (\S+)", self.kamcmd("ul.lookup", "location", aor))

    def pid(self) -> int:
        return int(self.pidfile.read_text().split()[0])


def phones_of(office: dict, workdir: Path) -> tuple[Phone, Phone]:
    company = next(c for c in office["companies"] if c["id"] == "acme")
    exts = {e["number"]: e for e in company["extensions"]}
    return (Phone("2001", company["domain"], exts["2001"]["password"], "127.0.0.10", 5061),
            Phone("2002", company["domain"], exts["2002"]["password"], "127.0.0.11", 5062))


def register(phone: Phone, workdir: Path, proxy: DeployedProxy) -> None:
    reg = Sipp("register.xml", [*phone.auth_args(), "-set", "expires", "600"], workdir, ip=phone.ip,
               port=phone.port)
    result = reg.start(f"{SIP[0]}:{SIP[1]}").wait()
    assert result.final == (200, "OK"), result.log + result.stdout
    wait_for(lambda: any(f"{phone.ip}:{phone.port}" in c for c in proxy.contacts(phone.aor)), 10, phone.aor)


def call(caller: Phone, callee: Phone, workdir: Path, hold_ms: int, timeout: float) -> tuple[Sipp, Sipp]:
    answering = Sipp("answer.xml", ["-set", "ring", "100"], workdir, ip=callee.ip, port=callee.port)
    answering.start(timeout=timeout)
    calling = Sipp("call.xml", [*caller.auth_args(), "-set", "dial", callee.user, "-d", str(hold_ms)], workdir,
                   ip=caller.ip, port=caller.port)
    calling.start(f"{SIP[0]}:{SIP[1]}", timeout=timeout)
    return calling, answering


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        # name{labels} value [timestamp] (xhttp_prom adds the timestamp)
        sample = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if sample and all(f'{k}="{v}"' in (sample.group(1) or "") for k, v in labels.items()):
            return float(sample.group(2))
    raise AssertionError(f"no {name}{labels} in the metrics:\n{text[:3000]}")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def metrics_merged(deployment: Deployment) -> bool:
    return "xhttp_prom" in (deployment.src / "kamailio.cfg").read_text()


def test_the_deployed_proxy_answers_options(deployed):
    with inside(deployed.netns):
        answer = send_raw(DeployedProxy(deployed), options_request(DeployedProxy(deployed)), timeout=3)
    assert status_line(answer) == (200, "OK"), answer


def test_the_deployed_tls_listener_answers_with_the_roles_certificate(deployed):
    import socket
    import ssl

    def handshake(version: ssl.TLSVersion) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the role's self-signed one
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", 5061), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.version()

    with inside(deployed.netns):
        assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"  # which versions are refused: tests/sip/test_tls.py


def test_the_role_limits_tcp_and_tls_connections_per_source_address(deployed, office):
    """inventories/ci: kamailio_tcp_per_source_max 8, kamailio_tcp_site_nets [127.0.0.77] (the default site limit,
    1024). One address gets 8 connections to the SIP ports, TCP and TLS together; a phone elsewhere still
    registers over TCP and TLS; the site's address gets more."""
    import ssl

    from tests.harness import connections
    from tests.sip.sipua import UA
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def connect(src: str, port: int, count: int) -> tuple[list, int]:
        return connections(src, ("127.0.0.1", port), count)

    alice, _ = phones_of(office, deployed.work)
    held = []
    with inside(deployed.netns):
        table = run(["nft", "list", "table", "inet", "cowork_sip"], timeout=10).stdout
        assert "ct count over 8" in table and "127.0.0.77" in table, table
        try:
            tcp, refused = connect("127.0.0.66", 5060, 6)
            tls, refused_tls = connect("127.0.0.66", 5061, 2)
            held += tcp + tls
            assert (len(tcp), refused, len(tls), refused_tls) == (6, 0, 2, 0)
            more, refused = connect("127.0.0.66", 5060, 10)
            more_tls, refused_tls = connect("127.0.0.66", 5061, 3)
            held += more + more_tls
            assert (len(more), refused, len(more_tls), refused_tls) == (0, 10, 0, 3)
            for tls_context in (None, context):
                ua = UA("127.0.0.12", ("127.0.0.1", 5061 if tls_context else 5060), alice.user, alice.domain,
                        alice.password, tcp=tls_context is None, tls=tls_context)
                try:
                    answer = ua.register(expires=60)
                    assert answer is not None and answer.status == 200, answer and answer.raw
                    ua.register(expires=0)  # the other tests' calls ring only their own phones
                finally:
                    ua.close()
            site, refused = connect("127.0.0.77", 5060, 20)
            held += site
            assert (len(site), refused) == (20, 0)
        finally:
            for sock in held:
                sock.close()


def test_a_provisioned_phone_registers_and_calls_another(deployed, office, secrets):
    proxy = DeployedProxy(deployed)
    alice, bruno = phones_of(office, deployed.work)
    with inside(deployed.netns):
        before = http_get(METRICS) if metrics_merged(deployed) else ""
        register(alice, deployed.work, proxy)
        register(bruno, deployed.work, proxy)
        calling, answering = call(alice, bruno, deployed.work, hold_ms=300, timeout=30)
        caller, callee = calling.wait(40), answering.wait(40)
        assert caller.final == (200, "OK"), caller.log + caller.stdout
        assert caller.returncode == 0 and callee.returncode == 0, caller.stdout + callee.stdout
        assert callee.received("BYE"), callee.messages[-2000:]
        # topology hiding works here: the callee was given the proxy's topos Contact, and topos kept
        # its records in Redis as the default user (the only one ndb_redis 5.6 logs in as)
        assert "tpsh-" in callee.messages, callee.messages[-2000:]
        kept = run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--user", "cowork-admin", "--scan",
                    "--pattern", "d:z:*"],
                   env={**os.environ, "REDISCLI_AUTH": secrets["vault_redis_admin_passwords"][0]}, timeout=10)
        assert kept.stdout.split(), kept.stdout + kept.stderr
        if metrics_merged(deployed):
            after = http_get(METRICS)
            routed = "kamailio_calls_routed_total"
            assert metric(after, routed, category="internal") == metric(before, routed, category="internal") + 1
            assert metric(after, "kamailio_usrloc_location_contacts") >= 2


def test_redis_persists_and_only_its_acl_users_get_in(deployed, secrets):
    admin = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--user", "cowork-admin"]
    proxy = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--user", "cowork-proxy"]
    with inside(deployed.netns):
        anonymous = run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "PING"], timeout=10)
        as_admin = run(admin + ["--raw"], input="CONFIG GET appendonly\nCONFIG GET appendfsync\nCONFIG GET bind\n",
                       env={**os.environ, "REDISCLI_AUTH": secrets["vault_redis_admin_passwords"][0]}, timeout=10)
        proxy_env = {**os.environ, "REDISCLI_AUTH": secrets["vault_redis_proxy_passwords"][0]}
        as_proxy = run(proxy + ["--no-raw", "GET", "schema:version"], env=proxy_env, timeout=10)
        proxy_flush = run(proxy + ["FLUSHALL"], env=proxy_env, timeout=10)
        # redis-schema/acl/cowork-proxy.acl as deployed: no money minted, no functions replaced
        proxy_mint = [run(proxy + command, env=proxy_env, timeout=10) for command in
                      (["HSET", "{co:acme}:prepaid", "balance", "99999999"], ["EVAL", "return 1", "0"],
                       ["FUNCTION", "FLUSH"], ["FUNCTION", "DELETE", "prepaid"], ["KEYS", "*"])]
        wrong = run(proxy + ["PING"], env={**os.environ, "REDISCLI_AUTH": "not-the-password"}, timeout=10)
        # Redis's default user is topology hiding's and the dialogs' (ndb_redis and db_redis 5.6 know no
        # other): their keys and commands only
        topos = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--no-raw"]
        topos_env = {**os.environ, "REDISCLI_AUTH": secrets["vault_redis_topos_passwords"][0]}
        as_topos = run(topos, input="HMSET d:z:atpsh-deploy-test a_tag x\nEXPIRE d:z:atpsh-deploy-test 5\n"
                       "HGETALL d:z:atpsh-deploy-test\n", env=topos_env, timeout=10)
        denied = [run(topos + command, env=topos_env, timeout=10) for command in
                  (["EXISTS", "schema:version"], ["GET", "schema:version"], ["HGETALL", "company:x"],
                   ["FLUSHALL"], ["EVAL", "return redis.call('HSET', KEYS[1], 'balance', 1)", "1", "{co:x}:prepaid"],
                   ["DEL", "d:z:atpsh-deploy-test"], ["CONFIG", "GET", "*"], ["ACL", "LIST"], ["SET", "dialog:entry::x", "1"])]
        topos_denied = [r.stdout + r.stderr for r in denied]
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    assert as_admin.stdout.split() == ["appendonly", "yes", "appendfsync", "everysec", "bind", "127.0.0.1"]
    assert as_proxy.stdout.strip() not in ("", "(nil)") and "NOPERM" not in as_proxy.stdout + as_proxy.stderr, \
        as_proxy.stdout + as_proxy.stderr  # provisioned
    assert "NOPERM" in proxy_flush.stdout + proxy_flush.stderr
    assert all("NOPERM" in r.stdout + r.stderr for r in proxy_mint), [r.stdout + r.stderr for r in proxy_mint]
    assert "WRONGPASS" in wrong.stdout + wrong.stderr
    assert as_topos.stdout.split("\n")[:3] == ["OK", "(integer) 1", '1) "a_tag"'], as_topos.stdout + as_topos.stderr
    assert all("NOPERM" in denied for denied in topos_denied), topos_denied
    assert list((deployed.prefix / "var" / "lib" / "cowork-redis").glob("appendonlydir/*.aof")), "no AOF written"
    # the proxy's REDIS_URL names its ACL user; its settings file is not world-readable
    env_file = deployed.prefix / "etc" / "cowork-proxy" / "proxy.env"
    assert re.search(r"^REDIS_URL=redis://cowork-proxy:[^@]+@127\.0\.0\.1:6379/0$", env_file.read_text(), re.M)
    assert re.search(r"^TOPOS_REDIS_URL=redis://:[^@]+@127\.0\.0\.1:6379/0$", env_file.read_text(), re.M)
    # the dialogs: the default user too, in the first proxy's own database (kamailio_dialog_redis_db)
    assert re.search(r"^DIALOG_REDIS_URL=redis://:[^@]+@127\.0\.0\.1:6379/15$", env_file.read_text(), re.M)
    assert "ERROR: db_redis" not in deployed.log("cowork-proxy/kamailio.log")  # the calls' dialogs were written
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    # no secret in what the playbook printed, nor in the proxy's log
    for secret in (secrets["vault_redis_proxy_passwords"][0], secrets["vault_redis_admin_passwords"][0],
                   secrets["vault_redis_topos_passwords"][0]):
        assert all(secret not in output for _, output in deployed.runs)
        assert secret not in deployed.log("cowork-proxy/kamailio.log")


def test_the_redis_exporter_reports_redis_up(deployed):
    with inside(deployed.netns):
        text = http_get(EXPORTER)
    assert metric(text, "redis_up") == 1
    assert metric(text, "redis_aof_enabled") == 1


def test_the_metrics_endpoint_answers(deployed):
    if not metrics_merged(deployed):
        pytest.skip("kamailio.cfg has no xhttp_prom yet (the metrics endpoint is not merged)")
    with inside(deployed.netns):
        text = http_get(METRICS)
    assert "kamailio_calls_routed_total" in text and "kamailio_dialog_active_dialogs" in text


def test_the_proxy_hosts_gauges_and_rtpengine_s_metrics_are_served(deployed):
    """node_exporter with kemi.admin metrics' textfile, and rtpengine's page through kemi.metrics_relay
    (GET /metrics alone: rtpengine's own HTTP port also takes /cli commands)."""
    import urllib.error

    with inside(deployed.netns):
        node = wait_for(lambda: _get_or_none("http://127.0.0.1:9100/metrics"), 30, "node_exporter")
        relayed = wait_for(lambda: _get_or_none("http://127.0.0.1:9902/metrics"), 30, "the rtpengine relay")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen("http://127.0.0.1:9902/cli/list%20numsessions", timeout=5)
    assert "cowork_certificate_expiry_timestamp_seconds{" in node and "node_cpu_seconds_total" in node
    assert "rtpengine_sessions" in relayed and refused.value.code == 404


def _get_or_none(url: str) -> str | None:
    try:
        return http_get(url)
    except OSError:
        return None


def test_a_crashed_proxy_is_restarted_by_its_supervisor(deployed):
    # Restart=on-failure, as cowork-supervise does it where systemd is not PID 1: a worker that dies
    # makes Kamailio's main process exit with an error, and the supervisor starts it again.
    proxy = DeployedProxy(deployed)
    before = proxy.pid()
    workers = run(["pgrep", "-P", str(before)], timeout=10).stdout.split()
    assert workers, "Kamailio has no worker processes"
    os.kill(int(workers[-1]), signal.SIGKILL)

    def back() -> bool:
        try:
            if proxy.pid() == before:
                return False
        except (OSError, ValueError):
            return False
        with inside(deployed.netns):
            answer = send_raw(proxy, options_request(proxy), timeout=0.5)
        return status_line(answer) == (200, "OK")

    wait_for(back, 60, "the proxy restarted by cowork-supervise", interval=0.5)
    assert "cowork-proxy exited with status" in deployed.log("cowork-proxy/kamailio.log")


# -- changes, as ops make them; each must reach the running services ---------------------------------
# The runs are batched (a playbook run takes a minute or more): kemi/ and the certificate together (no
# restart), then the --check of a kamailio.cfg change, then everything that restarts the proxy together
# with the first step of a password rotation, its second step, a bad release rolled back, and a last run
# that changes nothing.
ROTATION: dict = {}  # the Redis password lists the later runs keep giving (extra variables)


class Caller:
    """Two provisioned phones (tests/sip/sipua.UA) that register and hold a call as long as a test
    needs, through the deployed proxy: the call is set up before a run and hung up after it."""

    def __init__(self, office: dict, tag: str):
        from tests.sip.sipua import UA
        alice, bruno = phones_of(office, Path("."))
        self.alice = UA("127.0.0.10", SIP, alice.user, alice.domain, alice.password)
        self.bruno = UA("127.0.0.11", SIP, bruno.user, bruno.domain, bruno.password)
        for ua in (self.alice, self.bruno):
            answer = ua.register(expires=300)
            assert answer is not None and answer.status == 200, f"{tag}: {ua.user} REGISTER: {answer and answer.raw}"
        self.tag = tag

    def call(self):
        call = self.alice.invite(self.bruno.user)
        assert call.code == 200, f"{self.tag}: the call was answered {call.final and call.final.first}"
        return call

    def hang_up(self, call) -> None:
        answer = call.bye()
        assert answer is not None and answer.status == 200, f"{self.tag}: BYE: {answer and answer.raw}"
        wait_for(lambda: any(m.call_id == call.call_id for m in self.bruno.requests("BYE")), 5,
                 f"{self.tag}: the BYE at the callee")

    def close(self) -> None:
        for ua in (self.alice, self.bruno):
            ua.register(expires=0)
            ua.close()


def served_certificate() -> str:
    """The subject of the certificate the TLS port serves (openssl s_client, a new handshake)."""
    proc = run(["openssl", "s_client", "-connect", "127.0.0.1:5061", "-servername", "deploy.test"],
               input="", timeout=15)
    match = re.search(r"^subject=(.*)$", proc.stdout, re.M)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    return match.group(1)


def certificate(work: Path, cn: str, ca: tuple[Path, Path] | None = None) -> tuple[str, str]:
    """A certificate and key (PEM) for cn: self-signed, or issued by ca (its cert and key files)."""
    key, cert = work / f"{cn}.key", work / f"{cn}.pem"
    if ca is None:
        argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/O=cowork-test/CN={cn}"]
        proc = run(argv, timeout=30)
    else:
        csr = work / f"{cn}.csr"
        proc = run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", f"/O=cowork-test/CN={cn}"], timeout=30)
        assert proc.returncode == 0, proc.stderr
        proc = run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-days", "30", "-out", str(cert)], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return cert.read_text(), key.read_text()


def handlers_run(output: str) -> list[str]:
    return re.findall(r"RUNNING HANDLER \[\w+ : ([^\]]+)\]", output)


def test_kemi_and_a_renewed_certificate_are_reloaded_without_a_restart_or_a_dropped_call(deployed, office):
    """kemi/ changed: app_python.reload. The certificate renewed (kamailio_tls_cert_pem / _key_pem): tls.reload,
    and the TLS port serves the new one. The same Kamailio process, and a call set up before the run is
    still up after it and ends with a BYE answered 200."""
    proxy = DeployedProxy(deployed)
    replies = deployed.src / "kemi" / "replies.py"
    replies.write_text(replies.read_text().replace('Reply(405, "Method Not Allowed")',
                                                   'Reply(405, "Method Not Allowed Here")'))
    cert, key = certificate(deployed.work, "renewed.deploy.test")
    with inside(deployed.netns):
        before_cert = served_certificate()
        pid = proxy.pid()
        phones = Caller(office, "kemi and certificate reload")
        try:
            held = phones.call()
            proc = deployed.playbook(extra={"kamailio_tls_cert_pem": cert, "kamailio_tls_key_pem": key})
            phones.hang_up(held)
            after_cert = served_certificate()
            message = ("MESSAGE sip:2001@{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:src_port_placeholder;"
                       "branch=z9hG4bKr1\r\nFrom: <sip:probe@{d}>;tag=r1\r\nTo: <sip:2001@{d}>\r\n"
                       "Call-ID: reload-{t}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                       ).format(d=phones.alice.domain, t=time.monotonic_ns())
            answer = send_raw(proxy, message, timeout=3)
        finally:
            phones.close()
        same_pid = proxy.pid() == pid
    ran = handlers_run(proc.stdout)
    assert "Reload the routing Python over the control socket" in ran, ran
    assert "Reload the TLS certificate and key (tls.reload, no restart)" in ran, ran
    assert "Restart the proxy" not in ran, ran
    assert same_pid, "Kamailio was restarted"
    assert status_line(answer) == (405, "Method Not Allowed Here"), answer  # the new kemi/ runs
    assert "renewed.deploy.test" not in before_cert and "CN = renewed.deploy.test" in after_cert, after_cert


def test_check_diff_runs_to_the_end_and_changes_nothing(deployed):
    """--check --diff with a kamailio.cfg change pending: the run ends, shows the change, applies nothing."""
    cfg = deployed.src / "kamailio.cfg"
    cfg.write_text(cfg.read_text().replace("\nlatency_log=3\n", "\nlatency_log=4\n"))
    installed = (deployed.prefix / "opt" / "cowork-proxy" / "kamailio.cfg").read_text()
    proc = deployed.playbook("--check", "--diff")
    assert recap(proc.stdout)["failed"] == 0
    assert "+latency_log=4" in proc.stdout, proc.stdout[-4000:]
    assert (deployed.prefix / "opt" / "cowork-proxy" / "kamailio.cfg").read_text() == installed


def probe_wheel(where: Path) -> None:
    """A one-module wheel, cowork-deploy-probe 1.0 (a requirement the venv did not have)."""
    import base64
    import zipfile
    files = {"cowork_deploy_probe.py": "VERSION = '1.0'\n",
             "cowork_deploy_probe-1.0.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: cowork-deploy-probe\nVersion: 1.0\n",
             "cowork_deploy_probe-1.0.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip('=')},"
                     f"{len(text.encode())}\n" for name, text in files.items())
    files["cowork_deploy_probe-1.0.dist-info/RECORD"] = record + "cowork_deploy_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(where / "cowork_deploy_probe-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def redis_cli(user: str, password: str, *command: str) -> str:
    proc = run(["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", "6379", "--user", user, *command],
               env={**os.environ, "REDISCLI_AUTH": password}, timeout=10)
    return proc.stdout + proc.stderr


def started_at(pid: int) -> float:
    """When a process started (epoch seconds): boot time plus its start time in clock ticks."""
    boot = int(re.search(r"^btime (\d+)", Path("/proc/stat").read_text(), re.M).group(1))
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def redis_run_id(secrets: dict) -> str:
    """Redis's run_id: a new one at every start of the server."""
    info = redis_cli("cowork-admin", secrets["vault_redis_admin_passwords"][0], "INFO", "server")
    return re.search(r"run_id:(\w+)", info).group(1)


def scanner_probe(proxy: "DeployedProxy") -> tuple[int, str] | None:
    """OPTIONS with the User-Agent deploy-probe-ua, from an address no other test uses."""
    return status_line(send_raw(proxy, options_request(proxy, src="127.0.0.99", extra="User-Agent: deploy-probe-ua\r\n"),
                                src="127.0.0.99", timeout=2))


def test_settings_config_venv_and_the_proxys_new_redis_password_restart_the_proxy(deployed, office, secrets):
    """One run with what restarts the proxy: a routing setting (SCANNER_USER_AGENTS gains deploy-probe-ua:
    its OPTIONS go unanswered), kamailio.cfg (latency_log, read back over RPC), a new requirement
    (the venv has it), and the first step of a password rotation (the proxy's list becomes [NEW, OLD]):
    Redis loads the ACL in place (same process) and accepts both, the proxy restarts with NEW. Calls
    before and after; the post-deploy test call ran after the restart."""
    proxy = DeployedProxy(deployed)
    old = secrets["vault_redis_proxy_passwords"][0]
    new = "a1" + hashlib.sha256(os.urandom(16)).hexdigest()[:30]
    ROTATION.update(old=old, new=new)
    requirements = deployed.src / "requirements.txt"
    requirements.write_text(requirements.read_text() + "cowork-deploy-probe==1.0\n")
    wheels = deployed.work / "wheels"
    shutil.copytree(deployed.wheels, wheels)
    probe_wheel(wheels)
    wheels.chmod(0o755)
    deployed.wheels = wheels
    settings = {"SCHEMA_RECHECK_S": 1, "SCANNER_USER_AGENTS": "friendly-scanner,sipvicious,deploy-probe-ua"}
    with inside(deployed.netns):
        assert scanner_probe(proxy) == (200, "OK")
        redis_before, proxy_before = redis_run_id(secrets), proxy.pid()
        phones = Caller(office, "before the rotation")
        try:
            phones.hang_up(phones.call())
        finally:
            phones.close()
        proc = deployed.playbook(extra={"vault_redis_proxy_passwords": [new, old], "kamailio_settings": settings})
        redis_after = redis_run_id(secrets)
        latency_log = proxy.kamcmd("cfg.get", "core", "latency_log").strip()
        probe = scanner_probe(proxy)
        both = [redis_cli("cowork-proxy", p, "PING").strip() for p in (new, old)]
        phones = Caller(office, "after the first step")
        try:
            phones.hang_up(phones.call())
        finally:
            phones.close()
    ROTATION["extra"] = {"vault_redis_proxy_passwords": [new], "kamailio_settings": settings}
    ran = handlers_run(proc.stdout)
    assert "Restart the proxy" in ran and "Load the new ACL users into the running Redis (no restart)" in ran, ran
    assert "Restart Redis with its new configuration" not in ran, ran
    assert redis_after == redis_before, "Redis was restarted for an ACL change"
    assert proxy.pid() != proxy_before, "the proxy was not restarted"
    assert latency_log == "4", latency_log  # the changed line of kamailio.cfg is the running one
    assert probe is None, probe  # the setting: its User-Agent is now dropped unanswered
    assert both == ["PONG", "PONG"], both
    env_file = (deployed.prefix / "etc" / "cowork-proxy" / "proxy.env").read_text()
    assert f"REDIS_URL=redis://cowork-proxy:{new}@" in env_file
    assert "SCANNER_USER_AGENTS=friendly-scanner,sipvicious,deploy-probe-ua" in env_file
    site = deployed.prefix / "opt" / "cowork-proxy" / "venv" / "lib"
    assert list(site.glob("python3*/site-packages/cowork_deploy_probe.py")), "the venv lacks the new requirement"
    # the proxy's Python was started after the venv got it (its modules are imported at start)
    installed = next(site.glob("python3*/site-packages/cowork_deploy_probe.py")).stat().st_mtime
    assert started_at(proxy.pid()) >= installed - 1
    assert re.search(r"Report the test call\] \*+\nok: \[ci-host\] => \{\n.*\n.*answered 200, BYE answered 200",
                     proc.stdout), "no post-deploy test call after the restart"
    assert all(new not in output and old not in output for _, output in deployed.runs)


def test_the_second_step_of_the_rotation_drops_the_old_password_without_a_restart(deployed, office):
    """The old password removed ([NEW]): Redis loads the ACL in place and refuses OLD; the proxy is not
    restarted (its settings did not change) and its calls keep working on connections it re-opens."""
    proxy = DeployedProxy(deployed)
    new, old = ROTATION["new"], ROTATION["old"]
    with inside(deployed.netns):
        pid = proxy.pid()
        proc = deployed.playbook(extra=ROTATION.get("extra"))
        refused = redis_cli("cowork-proxy", old, "PING")
        accepted = redis_cli("cowork-proxy", new, "PING").strip()
        phones = Caller(office, "after the second step")
        try:
            for _ in range(3):  # each worker's connection was closed by ACL LOAD
                phones.hang_up(phones.call())
        finally:
            phones.close()
        same = proxy.pid() == pid
    ran = handlers_run(proc.stdout)
    assert ran == ["Load the new ACL users into the running Redis (no restart)"], ran
    assert "WRONGPASS" in refused and accepted == "PONG", (refused, accepted)
    assert same, "the proxy was restarted"


def test_a_release_that_fails_its_test_call_is_rolled_back_and_stops_the_rolling_deploy(deployed, office):
    """A release whose routes answer 500 to every call to a phone (OPTIONS still 200): its test call fails,
    the proxy gets the previous release back, the play fails, and the next proxy (ci-untouched, a second
    host of the group proxies) is not touched."""
    proxy = DeployedProxy(deployed)
    phones_py = deployed.src / "kemi" / "sip" / "phones.py"
    good = phones_py.read_text()
    bad = re.sub(r"(    def relay_to_phones\(.*?\) -> None:\n)", r'\1        raise RuntimeError("a bad release")\n',
                 good, count=1, flags=re.S)
    assert bad != good
    phones_py.write_text(bad)
    second = deployed.work / "second-proxy.yml"
    second.write_text(yaml.safe_dump({"all": {"children": {"proxies": {"hosts": {"ci-untouched": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}}}}}))
    try:
        with inside(deployed.netns):
            proc = deployed.playbook(extra=ROTATION.get("extra"), inventories=(second,), ok=False)
            options = status_line(send_raw(proxy, options_request(proxy), timeout=3))
            phones = Caller(office, "after the rollback")
            try:
                phones.hang_up(phones.call())
            finally:
                phones.close()
    finally:
        phones_py.write_text(good)
    assert proc.returncode != 0
    out = proc.stdout
    assert re.search(r"the call was answered SIP/2.0 500 ", out), out[-5000:]
    assert "TASK [kamailio : Put the kept release back]" in out and "Rolled back to the previous release" in out
    proxies_play = out.split("PLAY [SIP proxies]", 1)[1].split("PLAY RECAP", 1)[0]
    assert "ci-untouched" not in proxies_play, "the next proxy was touched"
    assert recap(out, "ci-untouched")["changed"] == 0
    assert (deployed.prefix / "opt" / "cowork-proxy" / "kemi" / "sip" / "phones.py").read_text() == good
    assert options == (200, "OK")


def test_a_last_run_changes_nothing(deployed):
    """After all of the above (and the rollback), the same settings again: nothing changes."""
    proc = deployed.playbook(extra=ROTATION.get("extra"))
    counts = recap(proc.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, proc.stdout[-6000:]


# -- production refuses ------------------------------------------------------------------------
def preflight(*args: str, inventory: str = "ci", prefix: Path | None = None,
              extra: dict | None = None, work: Path | None = None) -> subprocess.CompletedProcess:
    argv = ["ansible-playbook", "-i", f"inventories/{inventory}", "site.yml", "--tags", "preflight", *args]
    if prefix:
        argv += ["-e", f"cowork_prefix={prefix}"]
    if extra:
        path = work / f"preflight-{len(list(work.glob('preflight-*')))}.json"
        path.write_text(json.dumps(extra))
        argv += ["-e", f"@{path}"]
    return run(argv, cwd=ANSIBLE, env=ansible_env(), timeout=120)


def test_production_refuses_the_test_vault_password():
    proc = preflight(inventory="production")
    assert proc.returncode != 0
    assert re.search(r"vault.yml, production.yaml still open with the TEST vault password", proc.stdout), \
        proc.stdout[-3000:]
    assert "PLAY [Redis host]" not in proc.stdout


def test_metrics_or_redis_on_a_public_address_are_refused(tmp_path):
    proc = preflight(inventory="production", extra={"kamailio_metrics_addr": "198.51.100.11"}, work=tmp_path)
    assert proc.returncode != 0 and "kamailio_metrics_addr=198.51.100.11 on proxy1.example.net is a public address" \
        in proc.stdout, proc.stdout[-3000:]
    proc = preflight(inventory="production", extra={"redis_bind": "203.0.113.5"}, work=tmp_path)
    assert proc.returncode != 0 and "redis_bind=203.0.113.5 on redis1.example.net is a public address" \
        in proc.stdout, proc.stdout[-3000:]


def test_a_self_signed_certificate_is_refused_unless_allowed(tmp_path):
    """No certificate (the role would make a self-signed one), or a self-signed one given: refused, naming
    kamailio_tls_self_signed_allowed. A CA-issued one passes; so does a self-signed one when allowed."""
    prefix = tmp_path / "root"
    refuse = {"kamailio_tls_self_signed_allowed": False}
    proc = preflight(prefix=prefix, extra=refuse, work=tmp_path)
    assert proc.returncode != 0 and f"ci-host has no TLS certificate at {prefix}/etc/cowork-proxy/tls/proxy-cert.pem" \
        in proc.stdout and "kamailio_tls_self_signed_allowed: true" in proc.stdout, proc.stdout[-3000:]
    cert, key = certificate(tmp_path, "self.deploy.test")
    proc = preflight(prefix=prefix, extra={**refuse, "kamailio_tls_cert_pem": cert, "kamailio_tls_key_pem": key},
                     work=tmp_path)
    assert proc.returncode != 0 and "or it is self-signed" in proc.stdout, proc.stdout[-3000:]
    ca = certificate(tmp_path, "ca.deploy.test")
    cert, key = certificate(tmp_path, "issued.deploy.test", ca=(tmp_path / "ca.deploy.test.pem",
                                                                 tmp_path / "ca.deploy.test.key"))
    proc = preflight(prefix=prefix, extra={**refuse, "kamailio_tls_cert_pem": cert, "kamailio_tls_key_pem": key},
                     work=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc = preflight(prefix=prefix, work=tmp_path)  # inventories/ci allows the self-signed one
    assert proc.returncode == 0, proc.stdout[-3000:]
