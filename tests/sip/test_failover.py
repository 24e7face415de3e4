"""Redis fails over under a prepaid call load, money survives, and a backup taken from the replica
restores into a fresh redis-server that the proxy then serves calls from.

Real processes: scripts/redis-site.sh (primary, replica, three Sentinels, HAProxy at the one address
the proxy and the CLI use), Kamailio with REDIS_WAIT_REPLICAS=1, SIPp phones and peers. Sentinel
timings are the test ones (down-after 1 s); production's are in the Ansible role redis.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from kemi.store.prepaid import PrepaidLedger
from tests.conftest import OFFICE
from tests.harness import ADMIN_PASSWORD, LOAD_MEDIA_SHARES, Proxy, RedisSite, Sipp, admin, wait_for
from tests.sip.conftest import ANNOUNCER, EMERGENCY, PRIMARY, Phones

GERMAN_MOBILE = "004915112345678"
CALLS, RATE, HOLD_MS = 36, 4, 1500


@pytest.fixture(scope="module")
def site(workdir):
    made = RedisSite(workdir, REDIS_SENTINEL_DOWN_AFTER_MS="1000", REDIS_SITE_CHECK_MS="250").start()
    yield made
    made.stop()


@pytest.fixture(scope="module")
def site_proxy(workdir, site):
    url = site.url_of(0)
    admin(url, "load", str(OFFICE))
    kam = Proxy(workdir, url, REDIS_WAIT_REPLICAS="1", REDIS_WAIT_TIMEOUT_MS="200",
                # one phone places the whole load: pike would take it for a flood
                # short reservations: the load is many calls in parallel on one account
                PIKE_REQS="10000", PREPAID_MAX_CALL_S="120", EMERGENCY_CALLS_MAX="1000", **LOAD_MEDIA_SHARES).start()
    yield kam
    kam.stop()


def peer(phones, where, scenario: str, calls: int, *args: str) -> Sipp:
    ip, port = where
    sipp = Sipp(scenario, list(args), phones.workdir, ip=ip, port=port, calls=calls)
    phones.running.append(sipp)
    return sipp.start(timeout=90)


def finals(log: str) -> list[int]:
    return [int(code) for code in re.findall(r"FINAL (\d{3})", log)]


def test_primary_sigkilled_under_prepaid_load_loses_no_money(site, site_proxy, workdir):
    url = site.url_of(0)
    admin(url, "prepaid", "activate", "initech")
    # exit 0: the replica confirmed the top-up (WAIT), so the failover below cannot lose it
    admin(url, "prepaid", "topup", "initech", "1000.00", "--ref", uuid.uuid4().hex)
    admin(url, "rate", "set", "+4915", "60c", "--increments", "60/60", "--fee", "0c")
    old = site.primary()
    replica = next(p for p in site.node_ports if p != old)
    # Redis replicates the Lua library itself (FUNCTION LOAD is propagated): the replica has it
    # before it is promoted, so the new primary never runs a money change without it
    assert b"prepaid" in repr(site.client(port=replica).function_list()).encode()

    phones = Phones(site_proxy, workdir)
    try:
        ines = phones.phone("2001", domain="initech.test")
        carrier = peer(phones, PRIMARY, "answer.xml", CALLS + 2, "-set", "ring", "100")
        speaker = peer(phones, ANNOUNCER, "announce.xml", CALLS + 2)
        emergency = peer(phones, EMERGENCY, "answer.xml", 2, "-set", "ring", "100")
        load = phones.sipp("call.xml", ines, *ines.auth_args(), "-set", "dial", GERMAN_MOBILE, "-d", str(HOLD_MS))
        load.calls, load.rate = CALLS, RATE
        load.start(phones.target, timeout=90)
        time.sleep(CALLS / RATE / 3)

        killed_at = time.monotonic()
        os.kill(site.pid_of(old), signal.SIGKILL)
        # an emergency call in the failover window: before any Redis lookup, it must get through
        sos = Sipp("call.xml", [*ines.auth_args(), "-set", "dial", "112", "-d", "200"], workdir, ip=ines.ip)
        phones.running.append(sos)
        sos_result = sos.start(phones.target, timeout=20).wait(30)

        def writable():
            try:
                return site.client().set("failover:probe", "1", px=60_000) and site.primary() != old
            except Exception:
                return False
        wait_for(writable, 30, "a new primary behind the site's address")
        failover_s = time.monotonic() - killed_at

        result = load.wait(120)
        codes = finals(result.log)
        assert len(codes) == CALLS, result.log[-3000:] + result.stdout
        failed = [c for c in codes if c != 200]
        print(f"\nfailover: {failover_s:.1f} s from SIGKILL to writes through the site address; "
              f"{len(failed)} of {CALLS} prepaid calls failed ({ {c: failed.count(c) for c in set(failed)} }), emergency call: "
              f"{sos_result.final}")
        assert sos_result.final == (200, "OK"), sos_result.log + sos_result.stdout
        # only the calls set up while no primary was reachable may fail, and with a 503, never silence
        assert set(failed) <= {503}, codes
        assert len(failed) < CALLS / 2, codes
    finally:
        phones.cleanup()
        for sipp in (carrier, speaker, emergency):
            sipp.stop()

    # money: balance == top-ups - settled costs, each settled call counted once
    ledger = PrepaidLedger(site.store(0))
    time.sleep(1)  # the last BYEs settle
    status = ledger.status("initech")
    records = [r for _, r in ledger.cdrs("initech")]
    costs = [r.get("cost", 0) for r in records]
    settled_ids = [r.get("call_id") for r in records if r.get("call_id")]
    assert len(settled_ids) == len(set(settled_ids)), "a call settled twice"
    assert status.balance == 100_000 - sum(costs), (status, costs)
    answered = codes.count(200)
    charged = sum(1 for c in costs if c)
    print(f"money: balance {status.balance} = 100000 - {sum(costs)} settled ({charged} charged calls of "
          f"{answered} answered); {len(status.reservations)} reservation(s) still held")
    assert charged <= answered
    # Redis's own replication carried the library: FCALL_RO works on the new primary
    assert b"prepaid" in repr(site.client().function_list()).encode()


def test_backup_from_the_replica_restores_into_a_fresh_server_the_proxy_calls_from(site, site_proxy, workdir):
    url = site.url_of(0)
    primary = site.primary()
    replica = next(p for p in site.node_ports if p != primary)
    # the old primary, SIGKILLed above, comes back still configured as a primary (as systemd would
    # restart it): the Sentinels make it a replica, and HAProxy never routes to it meanwhile
    subprocess.run(["redis-server", str(site.dir / f"node-{replica}.conf"), "--daemonize", "yes"], check=True)

    def synced():
        info = site.client(port=replica).info("replication")
        assert site.client().info("server")["tcp_port"] == primary  # writes still go to the new primary
        return info["role"] == "slave" and info.get("master_link_status") == "up"
    wait_for(synced, 30, f"127.0.0.1:{replica} back as a replica of 127.0.0.1:{primary}")
    admin(url, "prepaid", "topup", "initech", "1.23", "--ref", uuid.uuid4().hex)
    balance = PrepaidLedger(site.store(0)).status("initech").balance
    backup = workdir / "backup.rdb"
    # the primary keeps serving: the dump is the replica's (redis-cli --rdb asks it for a full sync)
    as_admin = {**os.environ, "REDISCLI_AUTH": ADMIN_PASSWORD}
    proc = subprocess.run(["scripts/redis-backup.sh", f"127.0.0.1:{replica}", str(backup)],
                          env={**as_admin, "REDIS_BACKUP_USER": "cowork-admin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site.stop()  # the whole site is lost

    restored = workdir / "restored"
    # an RDB holds no users: the restored server starts with the site's ACL file
    proc = subprocess.run(["scripts/redis-restore.sh", str(backup), str(restored), str(site.port)],
                          env={**as_admin, "REDIS_RESTORE_USER": "cowork-admin", "REDIS_ACL_FILE": str(site.acl_file)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        assert PrepaidLedger(site.store(0)).status("initech").balance == balance
        phones = Phones(site_proxy, workdir)
        try:
            ines, igor = phones.phone("2001", domain="initech.test"), phones.phone("2002", domain="initech.test")
            phones.registered(igor)
            answering = phones.answer(igor)
            call = phones.call(ines, "2002").wait()
            assert call.final == (200, "OK"), call.log + call.stdout
            answering.wait()
        finally:
            phones.cleanup()
    finally:
        pid = (restored / "redis.pid").read_text().strip()
        os.kill(int(pid), signal.SIGTERM)
