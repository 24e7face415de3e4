"""Starting the product: whatever python3 comes first on PATH, and with a clear refusal when it cannot.

Kamailio's app_python3 embeds Debian's libpython, which finds its standard library through the first
`python3` on PATH. With a pyenv or conda Python of the same version first on PATH the proxy loaded
that installation's library, `ssl` failed and `redis` died with AttributeError 'VerifyMode', while
run.sh announced "proxy on". scripts/kamailio.sh starts Kamailio with a clean PATH and no PYTHON*
variables; tests/harness.py and scripts/run.sh go through it.

The run.sh tests bind the demo's fixed addresses: run them in a private network namespace,
    unshare -n sh -c 'ip link set lo up && ./scripts/test.sh -q tests/sip/test_startup.py'
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from kemi.settings import Settings

from tests.conftest import OFFICE, SIP_DB
from tests.harness import (ROOT, Proxy, admin, bound, connections, options_request, send_raw, status_line,
                           wait_for)
from tests.sip.product import DEMO_MEDIA, DEMO_PEERS, PROXY, RunSh, demo_addresses_free, foreign_python

TLS = (PROXY[0], 5061)  # scripts/env.sh's TLS_ADDR (SIP_ADDR) and TLS_PORT


def real_foreign_pythons() -> list[Path]:
    """pyenv or conda installations of the embedded interpreter's version on this machine, if any:
    the fake of foreign_python() is checked against the real thing where it exists."""
    import sys
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = sorted(Path.home().glob(f".pyenv/versions/{version}*/bin"))
    found += [p for p in (Path("/opt/conda/bin"), Path.home() / "miniconda3" / "bin", Path.home() / "anaconda3" / "bin")
              if (p / f"python{version}").exists()]
    return [p for p in found if (p / "python3").exists()]


FOREIGN = [pytest.param("fake", id="fake-install")] + [pytest.param(str(p), id=f"real-{p.parent.name}")
                                                        for p in real_foreign_pythons()]


@pytest.fixture(scope="module")
def fake_foreign(tmp_path_factory) -> Path:
    return foreign_python(tmp_path_factory.mktemp("foreign-python"))


@pytest.fixture
def foreign_bin(request, fake_foreign) -> Path:
    return fake_foreign if request.param == "fake" else Path(request.param)


@pytest.fixture(scope="module")
def office_url(redis_server) -> str:
    url = redis_server.url_of(SIP_DB)
    admin(url, "load", str(OFFICE))
    return url


def kamailio_args(workdir: Path, port: int) -> list[str]:
    return ["-f", str(ROOT / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "16",
            "-P", str(workdir / f"kamailio-{port}.pid")]


@pytest.mark.parametrize("foreign_bin", FOREIGN, indirect=True)
def test_a_bare_kamailio_breaks_with_a_foreign_python_first_on_path(workdir, office_url, foreign_bin):
    """The failure this file is about, reproduced: without scripts/kamailio.sh the proxy dies at start.
    (If this ever passes without the error, the other tests here no longer prove anything.)"""
    proxy = Proxy(workdir, office_url, PATH=f"{foreign_bin}:{os.environ['PATH']}")
    # what scripts/kamailio.sh would have computed besides: topology hiding's Redis, in ndb_redis's words,
    # and the dialogs' (in memory here: the failure comes before any of it)
    env = {**proxy.env(), "TOPOS_REDIS": "name=topos;addr=127.0.0.1;port=6379;db=0",
           "DIALOG_DB_MODE": "0", "DIALOG_DB_URL": "none"}
    proc = subprocess.Popen(["kamailio", *kamailio_args(workdir, proxy.port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail("Kamailio started with a foreign python3 first on PATH: the reproduction is gone")
    assert proc.returncode != 0
    assert "AttributeError: 'NoneType' object has no attribute 'VerifyMode'" in out, out[-3000:]


@pytest.mark.parametrize("foreign_bin", FOREIGN, indirect=True)
@pytest.mark.parametrize("how", ["PATH", "PATH+PYTHONHOME+PYTHONPATH"])
def test_the_harness_proxy_starts_with_a_foreign_python_first_on_path(workdir, office_url, foreign_bin, how):
    env = {"PATH": f"{foreign_bin}:{os.environ['PATH']}"}
    if "PYTHONHOME" in how:
        home = foreign_bin.parent
        env.update(PYTHONHOME=str(home), PYTHONPATH=str(next((home / "lib").glob("python3*"))))
    proxy = Proxy(workdir, office_url, **env)
    mark = proxy.log_path.stat().st_size if proxy.log_path.exists() else 0
    try:
        proxy.start()  # waits for the 200 to an OPTIONS
        log = proxy.log_since(mark)
        # the proxy's own Redis user (tests/harness.py RedisUrl), its password masked
        assert f"Redis at {Settings(redis_url=proxy.proxy_redis_url).redis_where} ready" in log, log[-3000:]
        assert "Traceback" not in log and "VerifyMode" not in log
        assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")
    finally:
        proxy.stop()


@pytest.mark.parametrize("cert", ["", "/nonexistent/cert.pem"])
def test_kamailio_sh_refuses_to_start_tls_without_its_certificate(workdir, office_url, cert):
    proxy = Proxy(workdir, office_url, TLS_CERT=cert)
    with pytest.raises(RuntimeError) as refused:
        proxy.start()
    proxy.stop()
    assert f"kamailio.sh: TLS_CERT={cert} is not a readable file: the TLS listener needs its certificate" \
        in str(refused.value)


@pytest.mark.parametrize("url, why", [("redis://cowork-proxy:pw@127.0.0.1:6379/0", "ACL user 'cowork-proxy'"),
                                       ("rediss://127.0.0.1:6380/0", "TLS")])
def test_kamailio_sh_refuses_a_topos_redis_url_ndb_redis_cannot_use(workdir, office_url, url, why):
    """TOPOS_REDIS_URL, as a deployment sets it: a URL topos could never store through stops the start
    (without it, the proxy would send every message unhidden)."""
    proxy = Proxy(workdir, office_url, TOPOS_REDIS_URL=url)
    with pytest.raises(RuntimeError) as refused:
        proxy.start()
    proxy.stop()
    assert f"ERROR: topology hiding cannot use TOPOS_REDIS_URL ({why}" in str(refused.value)


def test_kamailio_sh_refuses_a_venv_of_another_python(workdir, office_url, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /root/.pyenv/versions/3.11.7/bin\nversion = 3.11.7\n")
    proxy = Proxy(workdir, office_url, KEMI_VENV=str(venv))
    with pytest.raises(RuntimeError) as refused:
        proxy.start()
    proxy.stop()
    message = str(refused.value)
    assert f"KEMI_VENV={venv} is not a venv of Debian's /usr/bin/python3" in message
    assert "(pyvenv.cfg home: /root/.pyenv/versions/3.11.7/bin)" in message


# -- scripts/run.sh ------------------------------------------------------------------------------
@pytest.fixture
def run_sh(tmp_path):
    demo_addresses_free()
    made: list[RunSh] = []

    def make(**env: str) -> RunSh:
        made.append(RunSh(tmp_path, **env))
        return made[-1]

    yield make
    for run in made:
        run.kill()


def nothing_left(run: RunSh) -> None:
    """run.sh stopped everything it started: its processes and every address it bound."""
    assert run.group_gone(), "processes of run.sh still running"
    held = [f"{ip}:{port}" for ip, port in [PROXY, *DEMO_PEERS.values()] if bound(ip, port)]
    held += [f"tls {ip}:{port}" for ip, port in [TLS] if bound(ip, port, tcp=True)]
    assert not held and not bound("127.0.0.1", run.redis_port, tcp=True), held
    if shutil.which("nft") and os.geteuid() == 0:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
        assert "cowork_run_" not in tables, tables  # scripts/sip-conn-limit.sh's table of this run


def test_run_sh_under_a_run_dir_too_deep_for_a_socket_path(run_sh, tmp_path):
    # Kamailio's ctl refuses a unix socket path over 104 bytes and the proxy would not start
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "run"
    run = run_sh(RUN_DIR=str(deep), STANDINS="0").start().up()
    probe = SimpleNamespace(ip=PROXY[0], port=PROXY[1])
    assert status_line(send_raw(probe, options_request(probe))) == (200, "OK")
    assert run.stop() == 0
    nothing_left(run)


def test_run_sh_with_a_foreign_python_first_on_path(run_sh, fake_foreign):
    run = run_sh(PATH=f"{fake_foreign}:{os.environ['PATH']}").start().up()
    # "proxy on" only once it answers: it answers right now
    probe = SimpleNamespace(ip=PROXY[0], port=PROXY[1])
    assert status_line(send_raw(probe, options_request(probe))) == (200, "OK")
    for name, (ip, port) in DEMO_PEERS.items():
        assert bound(ip, port), f"no stand-in for {name} on {ip}:{port}"
        # the media servers are the media server's (media/, the venv's Python), the trunks SIPp's
        assert f"run: {'media server' if name in DEMO_MEDIA else 'stand-in'} {name} " in run.output
    log = (run.run_dir / "kamailio-5060.log").read_text(errors="replace")
    assert "Traceback" not in log and "Redis at redis://cowork-proxy:***@127.0.0.1:" in log
    assert run.interrupt() == 0  # Ctrl-C
    assert "run: stopped" in run.output
    nothing_left(run)


def test_run_sh_stops_everything_and_says_so_when_the_proxy_dies(run_sh):
    run = run_sh().start().up()
    kamailio = int((run.run_dir / "kamailio-5060.pid").read_text())
    os.kill(kamailio, signal.SIGTERM)
    assert run.finish() == 1
    assert "run: the proxy exited (status 0)" in run.output
    assert f"run: the end of {run.run_dir}/kamailio-5060.log:" in run.output
    assert "run: stopped" not in run.output
    nothing_left(run)


def test_run_sh_says_why_the_proxy_did_not_come_up(run_sh):
    run = run_sh(SIP_ADDR="192.0.2.1").start()  # TEST-NET-1: not an address of this machine
    assert run.finish() == 1
    out = run.output
    assert "run: proxy on" not in out
    assert "run: the proxy exited while starting (status " in out
    assert f"run: the end of {run.run_dir}/kamailio-5060.log:" in out
    assert "bind(" in out and "on 192.0.2.1: Cannot assign requested address" in out
    nothing_left(run)


def refused_while_taken(run, address, kind: int = socket.SOCK_STREAM):
    """Start run.sh while another socket holds address (a listening one for TCP); run.sh must
    refuse to start (exit 1). The finished run, for its output."""
    with socket.socket(socket.AF_INET, kind) as squatter:
        squatter.bind(address)
        if kind == socket.SOCK_STREAM:
            squatter.listen()
        run.start()
        assert run.finish() == 1
    return run


def test_run_sh_refuses_a_setting_out_of_range_before_starting_anything(run_sh):
    run = run_sh(REDIS_TIMEOUT_MS="0").start()
    assert run.finish() == 2
    assert "REDIS_TIMEOUT_MS=0: expected 1..60000" in run.output
    assert "run: proxy on" not in run.output and "run: stand-in" not in run.output
    nothing_left(run)


def test_run_sh_refuses_a_redis_port_in_use(run_sh):
    """Another server on REDIS_PORT (a system Redis on 6379) must not be taken for ours."""
    run = run_sh()
    refused_while_taken(run, ("127.0.0.1", run.redis_port))
    assert (f"run: 127.0.0.1:{run.redis_port} (Redis) is in use: another Redis? REDIS_PORT=... picks another port"
            in run.output)
    assert "run: proxy on" not in run.output and "Redis is starting" not in run.output
    nothing_left(run)


def test_run_sh_refuses_a_sip_port_in_use(run_sh):
    run = refused_while_taken(run_sh(), PROXY, socket.SOCK_DGRAM)
    assert "run: 127.0.0.1:5060 (SIP) is in use: another proxy? SIP_PORT=... picks another port" in run.output
    assert "run: proxy on" not in run.output
    nothing_left(run)


def test_run_sh_refuses_a_metrics_port_in_use_and_serves_the_metrics_when_free(run_sh):
    metrics = ("127.0.0.1", 9494)  # scripts/env.sh's METRICS_ADDR and METRICS_PORT
    run = refused_while_taken(run_sh(), metrics)
    assert "run: 127.0.0.1:9494 (metrics) is in use: another proxy? METRICS_PORT=... picks another port" in run.output
    assert "run: proxy on" not in run.output
    nothing_left(run)
    up = run_sh().start().up()
    assert "metrics on http://127.0.0.1:9494/metrics" in up.output
    with urllib.request.urlopen("http://127.0.0.1:9494/metrics", timeout=5) as page:
        assert 'kamailio_calls_routed_total{category="internal"}' in page.read().decode()
    assert up.stop() == 0
    nothing_left(up)


def test_a_taken_stand_in_address_stops_run_sh_and_standins_0_starts_none(run_sh):
    ip, port = DEMO_PEERS["carrier-a"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((ip, port))
        run = run_sh().start()
        assert run.finish() == 1
        assert (f"run: udp:{ip}:{port} (stand-in carrier-a) is in use: another run.sh? STANDINS=0 starts no "
                f"stand-ins") in run.output
        assert "run: proxy on" not in run.output
        assert run.group_gone()

        quiet = run_sh(STANDINS="0").start().up()
        assert "run: stand-in" not in quiet.output
        assert not any(bound(*where) for name, where in DEMO_PEERS.items() if name != "carrier-a")
        assert quiet.stop() == 0
    nothing_left(quiet)


# -- TLS: the demo certificate, or the operator's -------------------------------------------------------
def test_run_sh_makes_a_demo_certificate_says_where_and_keeps_it(run_sh):
    run = run_sh().start().up()
    cert, key = run.run_dir / "tls" / "demo-cert.pem", run.run_dir / "tls" / "demo-key.pem"
    assert (f"run: TLS with the self-signed demo certificate {cert} (key {key}); phones must be told to trust it"
            in run.output)
    assert f"run: proxy on 127.0.0.1:5060 (udp+tcp) and {TLS[0]}:{TLS[1]} (tls)" in run.output
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    # a phone that trusts that file (and checks the address) completes a TLS 1.3 handshake
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(TLS, timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=TLS[0]) as tls:
        assert tls.version() == "TLSv1.3"
    first = cert.read_bytes()
    assert run.stop() == 0
    nothing_left(run)
    again = run_sh(RUN_DIR=str(run.run_dir)).start().up()  # a restart keeps the phones' trusted certificate
    assert cert.read_bytes() == first
    assert again.stop() == 0
    nothing_left(again)


@pytest.mark.parametrize("env, words", [
    ({"TLS_CERT": "/nonexistent/cert.pem", "TLS_KEY": "/nonexistent/key.pem"},
     "run: TLS_CERT=/nonexistent/cert.pem: no such readable file"),
    ({"TLS_CERT": "/etc/hostname"}, "run: TLS_KEY is empty: give both TLS_CERT and TLS_KEY, or neither for the "
                                    "demo certificate"),
])
def test_run_sh_refuses_a_tls_setting_it_cannot_use_before_starting_anything(run_sh, env, words):
    run = run_sh(**env).start()
    assert run.finish() == 1
    assert words in run.output, run.output
    assert "run: proxy on" not in run.output and "run: stand-in" not in run.output
    nothing_left(run)


def test_run_sh_refuses_a_tls_port_in_use(run_sh):
    run = refused_while_taken(run_sh(), TLS)
    assert "run: 127.0.0.1:5061 (SIP over TLS) is in use: another proxy? TLS_PORT=... picks another port" in run.output
    nothing_left(run)


# -- SIPp stand-ins: no control socket ------------------------------------------------------------

SIPP_CONTROL_PORTS = range(8888, 8888 + 60)  # SIPp 3.6: 8888, or the next free one of 60


def udp_sockets_of(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every UDP socket process pid holds, IPv4 and IPv6 (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                hexaddr, hexport = fields[1].split(":")
                raw = bytes.fromhex(hexaddr)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(hexport, 16)))
    return found


def sipp_pids_of_group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if comm == "sipp" and int(fields[2]) == pgid:  # fields[2]: the process group
            pids.append(int(stat.parent.name))
    return pids


def send_quit_everywhere(addresses) -> None:
    """The attack: SIPp's quit key "Q" (and a variable change, "cset") to every port its control socket could
    have taken, on each address."""
    for ip in addresses:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as attacker:
            for port in SIPP_CONTROL_PORTS:
                for payload in (b"cset ext 2999", b"Q"):
                    try:
                        attacker.sendto(payload, (ip, port))
                    except OSError:  # no IPv6 in this namespace
                        break


def test_run_sh_stand_ins_have_no_control_socket_and_a_q_datagram_stops_none(run_sh, tmp_path):
    # The attack works on a SIPp with a control socket (what run.sh used to start: -ci on the peer's address):
    # without that, this test could not fail.
    ip, port = DEMO_PEERS["carrier-a"]
    control = subprocess.Popen(["sipp", "-sf", str(ROOT / "sipp-scenarios" / "standin-carrier.xml"), "-i", ip,
                                "-p", str(port), "-ci", ip, "-nostdin", "-timeout", "30s"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(p in SIPP_CONTROL_PORTS for _, p in udp_sockets_of(control.pid)), 10, "SIPp's control socket")
        send_quit_everywhere([ip])
        control.wait(10)
    finally:
        control.kill()
        control.wait()

    run = run_sh().start().up()
    standins = sipp_pids_of_group(run.proc.pid)
    assert len(standins) == len(DEMO_PEERS) - len(DEMO_MEDIA)  # the media servers are not SIPp
    hosts = {host for host, _ in DEMO_PEERS.values()}
    for pid in standins:
        held = udp_sockets_of(pid)
        # its SIP port (a UDP peer) and its two media ports, on its own address; nothing else
        assert held and all(addr in hosts and p not in SIPP_CONTROL_PORTS for addr, p in held), held
    send_quit_everywhere(sorted(hosts) + ["127.0.0.1", "0.0.0.0", "::1"])
    time.sleep(1)
    assert all(Path(f"/proc/{pid}").exists() for pid in standins), "a stand-in stopped"
    assert run.proc.poll() is None and "exited" not in run.output
    for name, (ip, port) in DEMO_PEERS.items():
        assert bound(ip, port) or bound(ip, port, tcp=True), f"stand-in {name} no longer on {ip}:{port}"
    assert run.stop() == 0
    nothing_left(run)


def test_the_harness_sipp_peers_have_no_control_socket_either(tmp_path):
    from tests.harness import Sipp
    peer = Sipp("answer.xml", [], tmp_path, ip="127.0.0.61").start()
    try:
        held = udp_sockets_of(peer.proc.pid)
        assert ("127.0.0.61", peer.port) in held
        assert not [s for s in held if s[1] in SIPP_CONTROL_PORTS], held
        send_quit_everywhere(["127.0.0.61", "127.0.0.1"])
        time.sleep(0.5)
        assert peer.proc.poll() is None and bound("127.0.0.61", peer.port)
    finally:
        peer.stop()


# -- the per-source TCP/TLS connection limit (scripts/sip-conn-limit.sh, nftables) ----------------

def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nftables needs root and nft")
def test_the_limit_installed_again_unchanged_is_unchanged_and_a_change_reinstalls_it():
    """What keeps the Ansible task idempotent (tests/deploy: a second run changes nothing): the same
    settings are "unchanged", every time, also with a connection counted in the table; another limit
    is "installed". In a network namespace of its own (unshare), so no table of this machine is touched."""
    script = f"""
        ip link set lo up
        export SIP_ADDR=127.0.0.1 SIP_PORT=5060 TLS_ADDR=127.0.0.1 TLS_PORT=5061 TCP_PER_SOURCE_MAX=8
        export TCP_PER_SITE_MAX=1024 TCP_SITE_NETS=127.0.0.77 NFT_TABLE=cowork_sip
        limit={ROOT}/scripts/sip-conn-limit.sh
        $limit install; for i in 1 2 3 4 5 6 7 8; do $limit install; done
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 5060)); s.listen(); c = socket.create_connection(("127.0.0.1", 5060)); import subprocess; subprocess.run(["{ROOT}/scripts/sip-conn-limit.sh", "install"])'
        TCP_PER_SOURCE_MAX=9 $limit install
    """
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["installed"] + ["unchanged"] * 9 + ["installed"], proc.stdout + proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nftables needs root and nft")
def test_run_sh_limits_tcp_and_tls_connections_per_source_and_a_site_gets_more(run_sh):
    """One address held all 2,048 TCP/TLS slots (a CRLF every 20 s each) and others' connections were reset.
    run.sh (as root, with nft) installs the limit of scripts/sip-conn-limit.sh and removes it when it stops."""
    from tests.sip.sipua import UA
    hog, site, phone = "127.0.0.66", "127.0.0.77", "127.0.0.88"
    run = run_sh(TCP_PER_SOURCE_MAX="5", TCP_PER_SITE_MAX="12", TCP_SITE_NETS=f"{site}/32,198.51.100.0/24").start().up()
    assert ("run: at most 5 TCP/TLS connections per source address (12 from "
            f"{site}/32,198.51.100.0/24; nftables table inet cowork_run_5060)") in run.output
    held = []
    try:
        # the hog: 5 connections (TCP, then TLS), and every one more refused, on either port
        tcp, refused = connections(hog, PROXY, 3)
        tls, refused_tls = connections(hog, TLS, 2, tls=True)
        held += tcp + tls
        assert (len(tcp), refused, len(tls), refused_tls) == (3, 0, 2, 0)
        more, refused = connections(hog, PROXY, 20)
        more_tls, refused_tls = connections(hog, TLS, 5)
        held += more + more_tls
        assert (len(more), refused, len(more_tls), refused_tls) == (0, 20, 0, 5)
        # while the hog holds its five, a phone elsewhere connects and registers over TCP and over TLS
        for transport in ("tcp", "tls"):
            context = None
            if transport == "tls":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            ua = UA(phone, TLS if context else PROXY, "2001", "acme.cowork.example", "alice-demo-secret",
                    tcp=context is None, tls=context)
            try:
                answer = ua.register()
                assert answer is not None and answer.status == 200, answer and answer.raw
            finally:
                ua.close()
        # a declared site's address: up to TCP_PER_SITE_MAX
        site_conns, refused = connections(site, PROXY, 15)
        held += site_conns
        assert (len(site_conns), refused) == (12, 3)
        # a connection the hog closes frees its place
        held.remove(tcp[0])
        tcp[0].close()
        time.sleep(0.5)
        again, refused = connections(hog, PROXY, 2)
        held += again
        assert (len(again), refused) == (1, 1)
    finally:
        for sock in held:
            sock.close()
    assert "cowork_run_5060" in nft_tables()
    assert run.stop() == 0
    nothing_left(run)
    assert "cowork_run_5060" not in nft_tables(), "run.sh left its nftables table behind"
