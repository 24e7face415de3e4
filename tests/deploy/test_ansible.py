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
def test_ansible_lint_production_profile_passes():
    proc = run(["ansible-lint", "--offline", "--profile", "production", "--nocolor"], cwd=ANSIBLE,
               env=ansible_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Passed with production profile" in proc.stdout + proc.stderr


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

    def playbook(self) -> subprocess.CompletedProcess:
        started = time.monotonic()
        proc = run(["ip", "netns", "exec", self.netns, "ansible-playbook", "-i", str(INVENTORY), "site.yml",
                    "-e", f"cowork_prefix={self.prefix}", "-e", f"cowork_source_dir={self.src}",
                    "-e", f"kamailio_wheelhouse={self.wheels}"],
                   cwd=ANSIBLE, env=ansible_env(), timeout=900)
        self.runs.append((time.monotonic() - started, proc.stdout))
        (self.work / f"playbook-{len(self.runs)}.log").write_text(proc.stdout + proc.stderr)
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


def recap(output: str) -> dict[str, int]:
    match = re.search(r"ci-host\s*:\s*(.*)", output.split("PLAY RECAP", 1)[1])
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
        as_proxy = run(proxy + ["--no-raw", "EXISTS", "schema:version"], env=proxy_env, timeout=10)
        proxy_flush = run(proxy + ["FLUSHALL"], env=proxy_env, timeout=10)
        wrong = run(proxy + ["PING"], env={**os.environ, "REDISCLI_AUTH": "not-the-password"}, timeout=10)
        # Redis's default user is topology hiding's (ndb_redis 5.6 knows no other): its keys and commands only
        topos = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--no-raw"]
        topos_env = {**os.environ, "REDISCLI_AUTH": secrets["vault_redis_topos_passwords"][0]}
        as_topos = run(topos, input="HMSET d:z:atpsh-deploy-test a_tag x\nEXPIRE d:z:atpsh-deploy-test 5\n"
                       "HGETALL d:z:atpsh-deploy-test\n", env=topos_env, timeout=10)
        denied = [run(topos + command, env=topos_env, timeout=10) for command in
                  (["EXISTS", "schema:version"], ["GET", "schema:version"], ["HGETALL", "company:x"], ["KEYS", "*"],
                   ["FLUSHALL"], ["EVAL", "return 1", "0"], ["DEL", "d:z:atpsh-deploy-test"], ["CONFIG", "GET", "*"],
                   ["ACL", "LIST"])]
        topos_denied = [r.stdout + r.stderr for r in denied]
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    assert as_admin.stdout.split() == ["appendonly", "yes", "appendfsync", "everysec", "bind", "127.0.0.1"]
    assert as_proxy.stdout.strip() == "(integer) 1", as_proxy.stdout + as_proxy.stderr  # provisioned
    assert "NOPERM" in proxy_flush.stdout + proxy_flush.stderr
    assert "WRONGPASS" in wrong.stdout + wrong.stderr
    assert as_topos.stdout.split("\n")[:3] == ["OK", "(integer) 1", '1) "a_tag"'], as_topos.stdout + as_topos.stderr
    assert all("NOPERM" in denied for denied in topos_denied), topos_denied
    assert list((deployed.prefix / "var" / "lib" / "cowork-redis").glob("appendonlydir/*.aof")), "no AOF written"
    # the proxy's REDIS_URL names its ACL user; its settings file is not world-readable
    env_file = deployed.prefix / "etc" / "cowork-proxy" / "proxy.env"
    assert re.search(r"^REDIS_URL=redis://cowork-proxy:[^@]+@127\.0\.0\.1:6379/0$", env_file.read_text(), re.M)
    assert re.search(r"^TOPOS_REDIS_URL=redis://:[^@]+@127\.0\.0\.1:6379/0$", env_file.read_text(), re.M)
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


def test_a_second_run_changes_nothing(deployed):
    proc = deployed.playbook()
    counts = recap(proc.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, proc.stdout[-6000:]


def test_a_change_to_kemi_alone_reloads_without_dropping_a_call(deployed, office):
    proxy = DeployedProxy(deployed)
    alice, bruno = phones_of(office, deployed.work)
    replies = deployed.src / "kemi" / "replies.py"
    replies.write_text(replies.read_text().replace('Reply(405, "Method Not Allowed")',
                                                   'Reply(405, "Method Not Allowed Here")'))
    # the call must outlast the whole re-run: half as long again as the last (idempotent) run, plus 20 s
    hold_s = max(30, int(1.5 * deployed.runs[-1][0]) + 20)
    with inside(deployed.netns):
        pid = proxy.pid()
        # registrations live in the proxy's memory, and a test above restarted it
        register(alice, deployed.work, proxy)
        register(bruno, deployed.work, proxy)
        calling, answering = call(alice, bruno, deployed.work, hold_ms=hold_s * 1000, timeout=hold_s + 60)
        wait_for(lambda: "200 OK" in Path(calling.msg_path).read_text(errors="replace")
                 if Path(calling.msg_path).exists() else False, 20, "the call answered")
        assert metric(http_get(METRICS), "kamailio_dialog_active_dialogs") == 1 if metrics_merged(deployed) else True
        proc = deployed.playbook()
        still_up = calling.proc.poll() is None and answering.proc.poll() is None
        message = ("MESSAGE sip:2001@{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:src_port_placeholder;branch=z9hG4bKr1\r\n"
                   "From: <sip:probe@{d}>;tag=r1\r\nTo: <sip:2001@{d}>\r\nCall-ID: reload-{t}\r\nCSeq: 1 MESSAGE\r\n"
                   "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").format(d=alice.domain, t=time.monotonic_ns())
        answer = send_raw(proxy, message, timeout=3)
        caller, callee = calling.wait(hold_s + 60), answering.wait(30)
        same_pid = proxy.pid() == pid
    assert still_up, f"the call ended during the re-run:\n{caller.log if not still_up else ''}"
    assert "RUNNING HANDLER [kamailio : Reload the routing Python over the control socket]" in proc.stdout
    assert "then restart the proxy]" not in proc.stdout
    assert same_pid, "Kamailio was restarted"
    assert status_line(answer) == (405, "Method Not Allowed Here"), answer  # the new kemi/ runs
    assert caller.final == (200, "OK") and caller.returncode == 0, caller.log + caller.stdout
    assert callee.returncode == 0 and callee.received("BYE"), callee.messages[-2000:]
    assert [m for m in caller.received("SIP/2.0 200") if re.search(r"^CSeq: \d+ BYE", m, re.M)], \
        caller.messages[-3000:]  # the BYE went through the proxy and was answered 200
