"""The gate every request passes before a role sees it: scanners, floods, bans, unreadable bytes;
and the counters that block password guessing.

All of it lives in this node's shared memory (htables of kamailio.cfg) and pike, so a flood
costs no Redis round trip: the store is asked only when pike fires (is the flooding address a
trusted peer?), and then at most once per PEERS_TTL_S per process. Emergency calls from an
address with a current registration are never dropped, whatever that address did.
"""

from __future__ import annotations

import time
from typing import Callable

from kemi import edge, numbering
from kemi.settings import Settings
from kemi.sip.shell import Sip, Table
from kemi.store import Directory, StoreRefused, StoreUnavailable

PEERS_TTL_S = 10.0  # how long a process trusts its copy of the trunk and media-server addresses


class TrustedPeers:
    """Where trunks and media servers send from (Redis `sources`), as this process last read it.

    Read when needed (pike fired, or an extension is about to ring), at most every PEERS_TTL_S;
    while Redis is down the last copy stays in use. None: never read (Redis down since start).
    publish(before, now) is told each copy read (kemi.sip.shell.Sip.publish_peers: the hosts
    kamailio.cfg's onsend_route keeps phones' calls away from)."""

    def __init__(self, directory: Directory, clock: Callable[[], float] = time.monotonic,
                 publish: Callable[[frozenset | None, frozenset], None] | None = None):
        self.directory = directory
        self.clock = clock
        self.publish = publish
        self._known: frozenset[tuple[str, int]] | None = None
        self._read_at = float("-inf")

    def addresses(self) -> frozenset[tuple[str, int]] | None:
        now = self.clock()
        if self._known is None or now - self._read_at >= PEERS_TTL_S:
            try:
                before, self._known = self._known, self.directory.peer_addresses()
                if self.publish is not None:
                    self.publish(before, self._known)
            except (StoreUnavailable, StoreRefused):
                pass  # keep the last copy; try again at the next need
            self._read_at = now
        return self._known


class Gate:
    def __init__(self, sip: Sip, settings: Settings, peers: TrustedPeers):
        self.sip = sip
        self.settings = settings
        self.peers = peers
        self.agents = settings.scanner_agents

    # -- every request ------------------------------------------------------------------------
    def admit(self) -> bool:
        """False when the request is dropped without an answer: from a banned address, part of a
        flood, or from a scanner. The only log lines are one per ban and one per scanner request
        (a scanner that also floods is banned, and then silent)."""
        sip = self.sip
        ip, port = sip.source
        if sip.cache_has(Table.IP_BAN, ip):
            return self.exempt()
        verdict = sip.flood_check()
        if verdict < 0 and not self.flooding(ip, port, verdict):
            return False
        user_agent = sip.user_agent()
        agent = edge.scanner(user_agent, self.agents)
        if agent is not None:
            sip.log("notice", f"scanner {agent!r} ({user_agent!r}) from {ip}:{port}: dropped")
            return False
        return True

    def flooding(self, ip: str, port: int, verdict: int) -> bool:
        """pike found the address over its limit: ban it, unless it is a trusted peer's. Whether
        this request goes on all the same."""
        sip = self.sip
        peers = self.peers.addresses()
        if peers is None:
            return True  # the store never answered: a trunk cannot be told from a stranger, ban no one
        if (ip, port) in peers:
            return True  # trunks and media servers carry everyone's calls: never limited
        if ip in {host for host, _ in peers}:
            # Another port of a trusted peer's host (or a forged source): drop the excess, but a
            # ban of the address would silence the peer itself.
            if verdict == -2:
                sip.log("warn", f"flood from {ip}:{port}, a trusted peer's address: excess dropped, not banned")
            return self.exempt()
        sip.cache_set_for(Table.IP_BAN, ip, 1, self.settings.ban_s)
        sip.log("warn", f"flood from {ip}:{port}: {ip} banned for {self.settings.ban_s}s")
        return self.exempt()

    def exempt(self) -> bool:
        """Whether a request from a banned or flooding address goes on all the same: from an
        address with a current registration, an emergency INVITE, and what follows it in its
        transaction or dialog (ACK, CANCEL, BYE, ...)."""
        sip = self.sip
        if not self.registered_source():
            return False
        if sip.in_dialog() or sip.is_ack() or sip.is_cancel():
            return True
        return sip.is_method("INVITE") and numbering.is_emergency(sip.lenient("$rU") or "")

    def require_text(self) -> None:
        """Read what the routes read of an initial request, so that bytes that are not text are
        refused (shell.NotText, answered 400 by the facade) before any lookup. An emergency
        INVITE is only refused for its Request-URI: the rest falls back (kemi.sip.emergency)."""
        sip = self.sip
        dialled = sip.pv("$rU") or ""
        if sip.is_method("INVITE") and numbering.is_emergency(dialled):
            return
        for name in ("$fU", "$fd", "$tU", "$td", "$au", "$ci"):
            sip.pv(name)

    # -- password guessing --------------------------------------------------------------------
    def auth_blocked(self, user: str, domain: str) -> bool:
        """Whether this source address may not try this user's credentials now."""
        ip = self.sip.source[0]
        pair, address = edge.auth_keys(ip, user, domain)
        return self.sip.cache_has(Table.AUTH_BAN, pair) or self.sip.cache_has(Table.AUTH_BAN, address)

    def auth_failed(self, user: str, domain: str) -> None:
        """Count a failed digest check (wrong password, unknown user, ...); block at the limit."""
        sip, cfg = self.sip, self.settings
        ip = sip.source[0]
        pair, address = edge.auth_keys(ip, user, domain)
        for key, limit, what in ((pair, cfg.auth_fail_max, f"auth for {user}@{domain} from {ip}"),
                                 (address, cfg.auth_fail_max * edge.IP_FAIL_FACTOR, f"auth from {ip} for any user")):
            count = sip.count_in_window(Table.AUTH_FAIL, key, cfg.auth_fail_window_s)
            if count >= limit:
                sip.cache_set_for(Table.AUTH_BAN, key, 1, cfg.auth_ban_s)
                sip.cache_remove(Table.AUTH_FAIL, key)  # after the block, counting starts again
                sip.log("warn", f"{what} blocked for {cfg.auth_ban_s}s after {count} failures "
                                f"within {cfg.auth_fail_window_s}s")

    # -- registrations ------------------------------------------------------------------------
    def registered_source(self) -> bool:
        """Whether a registration saved from this request's source address (ip:port) still lasts:
        a phone of ours is there (no Redis lookup: works with the store down)."""
        ip, port = self.sip.source
        return self.sip.cache_has(Table.REGISTERED, f"{ip}:{port}")

    def registered(self, seconds: int) -> None:
        """A REGISTER from the source address was saved for `seconds` (0: removed)."""
        ip, port = self.sip.source
        if seconds > 0:
            self.sip.cache_set_for(Table.REGISTERED, f"{ip}:{port}", 1, seconds)
        else:
            self.sip.cache_remove(Table.REGISTERED, f"{ip}:{port}")
