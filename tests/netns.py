"""A realistic small internet in Linux network namespaces, for the NAT tests (root only).

    office (192.168.50.0/24)          router                       core (public, 198.51.100.0/24)
    phone A 192.168.50.10  --lan--  192.168.50.1 | 198.51.100.2 --+-- br0 198.51.100.10  proxy + rtpengine
    phone B 192.168.50.11           nftables: masquerade          |
                                    + stateful forward filter     +-- carrier 198.51.100.30  trunk
                                                                  +-- carrier 198.51.100.31  media server

The router hides the whole office behind 198.51.100.2 and maps its ports into 20000-29999, so a
phone's address and port as the proxy sees them are never the ones it writes in its Contact or
SDP; nothing from outside reaches the office unless the office spoke first (conntrack), as with a
real home or office router.

One Network per test module: every namespace has this process's id in its name, every process
run in one is killed, every namespace deleted (which takes its veths and nftables with it), on
the way out of the `with` block whatever happened inside it, and at interpreter exit as a last
resort.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import subprocess
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
OFFICE_NET = "192.168.50.0/24"
ROUTER_LAN, ROUTER_WAN = "192.168.50.1", "198.51.100.2"
PHONE_A, PHONE_B = "192.168.50.10", "192.168.50.11"
CORE = "198.51.100.10"          # the proxy and rtpengine
TRUNK, MEDIA = "198.51.100.30", "198.51.100.31"
NAT_PORTS = (20000, 29999)


def available() -> str | None:
    """Why the NAT tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces and nftables need root (CI runs as root)"
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    return None


def run_in(netns: str, action):
    """action() in a thread whose network namespace is `netns`: its sockets live there. (setns
    changes only the calling thread's namespace, so the test process itself stays where it is.)"""
    result: dict = {}

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{netns}") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), f"setns {netns}")
                return
        try:
            result["value"] = action()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(60)
    if "error" in result:
        raise result["error"]
    return result.get("value")


@dataclass
class Counter:
    """Packets an nftables rule in a namespace's input hook has counted: what really arrived."""

    network: "Network"
    netns: str
    name: str

    def packets(self) -> int:
        out = self.network.ns(self.netns, "nft", "-j", "list", "counter", "inet", "rtpcount", self.name)
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(f"no counter {self.name} in {self.netns}")


class Network:
    ROLES = ("office", "router", "core", "carrier")

    def __init__(self, tag: str = "nat"):
        prefix = f"t{os.getpid()}{tag}"[:10]
        self.names = {role: f"{prefix}-{role}" for role in self.ROLES}
        self.procs: list[subprocess.Popen] = []
        self.counters = 0

    # -- names -------------------------------------------------------------------------------
    @property
    def office(self) -> str:
        return self.names["office"]

    @property
    def router(self) -> str:
        return self.names["router"]

    @property
    def core(self) -> str:
        return self.names["core"]

    @property
    def carrier(self) -> str:
        return self.names["carrier"]

    # -- commands ----------------------------------------------------------------------------
    @staticmethod
    def ns(netns: str, *cmd: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["ip", "netns", "exec", netns, *cmd], input=stdin, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{netns}: {' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    @staticmethod
    def ip(*args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    # -- building and tearing down ------------------------------------------------------------
    def __enter__(self) -> "Network":
        atexit.register(self.close)
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self) -> None:
        for name in self.names.values():
            self.ip("netns", "add", name)
            self.ns(name, "ip", "link", "set", "lo", "up")
        n = self.names
        # veth pairs are made inside a namespace and their far end moved: nothing ever sits in ours
        self.ns(n["router"], "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", n["office"])
        self.ns(n["core"], "ip", "link", "add", "br0", "type", "bridge")
        self.ns(n["core"], "ip", "link", "add", "p-router", "type", "veth", "peer", "name", "wan0", "netns", n["router"])
        self.ns(n["core"], "ip", "link", "add", "p-carrier", "type", "veth", "peer", "name", "eth0", "netns", n["carrier"])
        for port in ("p-router", "p-carrier"):
            self.ns(n["core"], "ip", "link", "set", port, "master", "br0")
            self.ns(n["core"], "ip", "link", "set", port, "up")
        self.address(n["core"], "br0", CORE)
        self.address(n["router"], "wan0", ROUTER_WAN)
        self.address(n["router"], "lan0", ROUTER_LAN)
        self.address(n["office"], "eth0", PHONE_A, PHONE_B)
        self.address(n["carrier"], "eth0", TRUNK, MEDIA)
        self.ns(n["office"], "ip", "route", "add", "default", "via", ROUTER_LAN)
        self.ns(n["router"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns(n["router"], "nft", "-f", "-", stdin=f"""
table inet officenat {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    iifname "lan0" oifname "wan0" accept
    ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100;
    oifname "wan0" ip saddr {OFFICE_NET} meta l4proto {{ tcp, udp }} masquerade to :{NAT_PORTS[0]}-{NAT_PORTS[1]}
    oifname "wan0" ip saddr {OFFICE_NET} masquerade
  }}
}}
""")
        for name in (n["office"], n["carrier"]):
            self.ns(name, "nft", "add", "table", "inet", "rtpcount")
            self.ns(name, "nft", "add chain inet rtpcount input { type filter hook input priority 0; policy accept; }")

    def address(self, netns: str, dev: str, *ips: str) -> None:
        for ip in ips:
            self.ns(netns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
        self.ns(netns, "ip", "link", "set", dev, "up")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for name in self.names.values():
            if name not in existing:
                continue
            # anything still running in a namespace of ours was started by this test
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    # -- what the tests use -------------------------------------------------------------------
    def popen(self, netns: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], **kwargs)
        self.procs.append(proc)
        return proc

    def count_udp(self, netns: str, src: str, dst: str, dport: int) -> Counter:
        """Count the UDP packets from src that arrive at dst:dport in netns (after the router's NAT)."""
        self.counters += 1
        name = f"c{self.counters}"
        self.ns(netns, "nft", "add", "counter", "inet", "rtpcount", name)
        self.ns(netns, "nft", f"add rule inet rtpcount input ip saddr {src} ip daddr {dst} udp dport {dport} "
                              f"counter name {name}")
        return Counter(self, netns, name)
