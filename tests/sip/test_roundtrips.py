"""Redis round trips per request, through the real Kamailio and a Redis of this module's own.

A round trip is one read the Redis server processes (INFO stats total_reads_processed): a pipeline
sent at once is one. Between the two INFO reads only the proxy talks to this Redis (the second INFO
counts itself). One SIP worker, and a warm-up of the same traffic first: the per-process copies
(kemi.store.cache) are then filled, as in a proxy that has been running, and SCHEMA_RECHECK_S is long
enough that no periodic check falls in the measured window.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import OFFICE
from tests.harness import Phone, Proxy, RedisServer, Sipp, admin, free_port, passwords
from tests.sip.conftest import PRIMARY

DOMAIN = "initech.test"


@pytest.fixture(scope="module")
def lone(workdir):
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    proxy = Proxy(workdir, redis.url, SIP_CHILDREN="1", SCHEMA_RECHECK_S="60").start()
    yield proxy, redis
    proxy.stop()
    redis.stop()


class Reads:
    """Reads processed by the Redis server, through one connection opened beforehand."""

    def __init__(self, redis):
        self.client = redis.client()
        self.client.ping()

    def __call__(self) -> int:
        return int(self.client.info("stats")["total_reads_processed"])

    def around(self, action) -> int:
        """Reads made by others while action() runs (this counter's own INFO excluded)."""
        before = self()
        action()
        return self() - before - 1


def caller(user: str) -> Phone:
    ip = "127.0.0.31"
    return Phone(user, DOMAIN, passwords(OFFICE)[(user, DOMAIN)], ip, free_port(ip))


def included_call(proxy: Proxy, workdir, phone: Phone) -> None:
    carrier = Sipp("answer.xml", ["-set", "ring", "0"], workdir, ip=PRIMARY[0], port=PRIMARY[1]).start(timeout=30)
    call = Sipp("call.xml", [*phone.auth_args(), "-set", "dial", "0612345678", "-d", "100"], workdir,
                ip=phone.ip, port=phone.port).start(f"{proxy.ip}:{proxy.port}").wait()
    carrier.wait()
    assert "BYE 200" in call.log, call.log + call.stdout
    # the record is written at the BYE's end of the dialog; the dialog itself is deleted (from Redis too)
    # at the dialog timer's next tick, a second later (kemi.sip.shell expire_dialog)
    time.sleep(1.5)


def register(proxy: Proxy, workdir, phone: Phone) -> None:
    reg = Sipp("register.xml", [*phone.auth_args(), "-set", "expires", "300"], workdir,
               ip=phone.ip, port=phone.port).start(f"{proxy.ip}:{proxy.port}").wait()
    assert "FINAL 200" in reg.log, reg.log + reg.stdout


class TopologyRecords:
    """The commands topology hiding sends this Redis (kamailio.cfg: topos_redis, keys b:x:* and d:z:*),
    read with MONITOR. topos_redis sends each on its own (ndb_redis, no pipeline): one round trip each."""

    PREFIXES = ("b:x:", "d:z:")

    def __init__(self, redis):
        self.client = redis.client()
        self.commands: list[list[str]] = []
        self.dbs: list[int | None] = []
        self.monitor = self.client.monitor().__enter__()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        try:
            for event in self.monitor.listen():
                self.commands.append(event["command"].split(" "))
                self.dbs.append(event.get("db"))
        except Exception:  # the connection closed: stop()
            return

    def stop(self) -> int:
        time.sleep(0.3)  # MONITOR's copy of the last commands is on its way
        self.monitor.connection.disconnect()
        self.thread.join(2)
        return sum(1 for c in self.commands if len(c) > 1 and c[1].strip('"').startswith(self.PREFIXES))

    def commands_in(self, db: int) -> int:
        return sum(1 for d in self.dbs if d == db)


# Topology hiding's round trips for this call (INVITE, 407, ACK, INVITE, 100, 180, 200, ACK, BYE, 200):
# topos looks up, stores and updates its records of the call (d:z:*) and of each transaction's branch
# (b:x:*) for nearly every message it relays, one command at a time (kamailio.cfg). REGISTERs pay none
# (topos skips them). The target of 2 per call counts the proxy's own; this is the price of hiding.
TOPOLOGY_ROUND_TRIPS = 37
# The dialog module's realtime copy of the call in Redis (kamailio.cfg, dialog db_mode 1 on db_redis;
# the proxy's own database, 15 here): the dialog row and its 8 variables written at the answer and at
# each change (24 commands when it rings, 18 more by the end of the call, the last 6 the 1 s timeout
# of a call whose BYE was accepted: kemi.sip.shell expire_dialog; all from the SIP workers), then
# deleted by the dialog timer a second after the BYE, variable by variable (db_redis's generic DELETE
# reads each key before deleting it and its index entries: 57 commands). 99 commands in 74 round trips
# (db_redis pipelines a few): what a restart that loses no call costs (BENCHMARKS.md, "site").
DIALOG_DB = 15
DIALOG_ROUND_TRIPS = 74
DIALOG_COMMANDS = 99


def test_an_included_call_costs_two_round_trips_over_its_life(lone, workdir):
    """None at the challenge, one at the authenticated set-up, one for the record; and topology hiding's
    and the dialog's copy in Redis."""
    proxy, redis = lone
    included_call(proxy, workdir, caller("2001"))  # warm-up: the worker's copies
    reads = Reads(redis)
    assert reads.around(lambda: None) == 0
    topology = TopologyRecords(redis)
    total = reads.around(lambda: included_call(proxy, workdir, caller("2001")))
    hiding = topology.stop()
    dialogs = topology.commands_in(DIALOG_DB)
    assert (total - hiding, hiding, dialogs) == (2 + DIALOG_ROUND_TRIPS, TOPOLOGY_ROUND_TRIPS, DIALOG_COMMANDS)


def test_a_register_costs_one_round_trip_and_its_challenge_none(lone, workdir):
    proxy, redis = lone
    register(proxy, workdir, caller("2002"))
    reads = Reads(redis)
    assert reads.around(lambda: register(proxy, workdir, caller("2002"))) == 1
