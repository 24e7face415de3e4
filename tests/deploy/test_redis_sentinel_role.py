"""Role redis_sentinel's files, as Ansible renders them for inventories/production, loaded by the real
programs: HAProxy checks its configuration, redis-server loads the ACL block (replication and Sentinel
users) and lets each user do what it needs and nothing else, redis-sentinel starts on its configuration
and answers only its ACL user. (CI deploys one machine with one Redis: the role itself is not run there.)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.deploy.test_ansible import ANSIBLE, ansible_env, run, vault_view
from tests.harness import ROOT, free_port, wait_for

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("ansible-playbook", "haproxy", "redis-sentinel")),
                                reason="needs ansible-playbook, haproxy and redis-sentinel (scripts/setup.sh)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("redis-site-render")
    proc = run(["ansible-playbook", "-i", "inventories/production", str(ROOT / "tests/deploy/render_redis_site.yml"),
                "-e", f"out={out}", "-e", "ansible_become=false", "-e", "ansible_python_interpreter=/usr/bin/python3"],
               env=ansible_env(), cwd=ANSIBLE, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    secrets = vault_view(ANSIBLE / "inventories/production/group_vars/all/redis_site/vault.yml")
    return out, secrets


def redis_cli(port: int, *args: str, user: str | None = None, password: str | None = None) -> str:
    auth = ["--user", user, "--pass", password, "--no-auth-warning"] if user else []
    return subprocess.run(["redis-cli", "-p", str(port), *auth, *args], capture_output=True, text=True,
                          timeout=10).stdout.strip()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_haproxy_accepts_the_proxy_host_s_configuration(rendered):
    out, _ = rendered
    cfg = (out / "proxy1.example.net-cowork-redis-haproxy.cfg").read_text()
    assert "server redis1.example.net 10.0.0.21:6379" in cfg and "server redis2.example.net 10.0.0.22:6379" in cfg
    assert 'setenv REDIS_SITE_SENTINELS "10.0.0.21:26379 10.0.0.22:26379 10.0.0.31:26379 "' in cfg
    assert "bind 127.0.0.1:6379" in cfg  # the one address of every client on the host
    local = out / "haproxy.cfg"
    local.write_text(cfg.replace("lua-load /etc/haproxy/redis-primary.lua",
                                 f"lua-load {ROOT / 'scripts' / 'redis-primary.lua'}"))
    proc = subprocess.run(["haproxy", "-c", "-f", str(local)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_replica_s_files_load_and_each_user_gets_only_what_it_needs(rendered, tmp_path):
    out, secrets = rendered
    replication_pw = secrets["vault_redis_replication_passwords"][0]
    sentinel_pw = secrets["vault_redis_sentinel_passwords"][0]
    repl = (out / "redis2.example.net-cowork-replication.conf").read_text()
    assert "replicaof 10.0.0.21 6379" in repl and "masteruser replication" in repl
    port = free_port(kind=socket.SOCK_STREAM)
    conf = tmp_path / "node.conf"
    # the rendered replication settings, without replicaof (no primary here): the ACL file as rendered
    conf.write_text("\n".join(line for line in repl.splitlines() if not line.startswith("replicaof")) +
                    f"\nbind 127.0.0.1\nport {port}\ndir {tmp_path}\nsave \"\"\n"
                    f"aclfile {out / 'redis2.example.net-cowork-users.acl'}\n")
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 10, "redis-server with the rendered ACL")
        assert redis_cli(port, "ROLE", user="replication", password=replication_pw).startswith("master")
        assert "NOPERM" in redis_cli(port, "GET", "x", user="replication", password=replication_pw)
        assert redis_cli(port, "ROLE", user="sentinel", password=sentinel_pw).startswith("master")
        assert "NOPERM" in redis_cli(port, "SET", "x", "1", user="sentinel", password=sentinel_pw)
        assert "NOPERM" in redis_cli(port, "FLUSHALL", user="sentinel", password=sentinel_pw)
        assert "NOAUTH" in redis_cli(port, "PING", user="sentinel", password=replication_pw)  # wrong password: not in
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_sentinel_starts_on_its_configuration_and_answers_only_its_user(rendered, tmp_path):
    out, secrets = rendered
    sentinel_pw = secrets["vault_redis_sentinel_passwords"][0]
    text = (out / "monitor1.example.net-cowork-sentinel.conf").read_text()
    assert "sentinel monitor cowork 10.0.0.21 6379 2" in text and "sentinel down-after-milliseconds cowork 5000" in text
    port = free_port(kind=socket.SOCK_STREAM)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(text.replace("bind 10.0.0.31", "bind 127.0.0.1").replace("port 26379", f"port {port}")
                    .replace("dir /var/lib/cowork-sentinel", f"dir {tmp_path}"))
    proc = subprocess.Popen(["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 10, "redis-sentinel on the rendered configuration")
        named = redis_cli(port, "SENTINEL", "get-master-addr-by-name", "cowork", user="sentinel", password=sentinel_pw)
        assert named.split() == ["10.0.0.21", "6379"]
        assert "NOAUTH" in redis_cli(port, "SENTINEL", "get-master-addr-by-name", "cowork")
        time.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
