"""The gate every request passes before a role sees it: scanners, floods, bans, unreadable bytes;
and the counters that block password guessing.

All of it lives in this node's shared memory (htables of kamailio.cfg) and pike, so a flood
costs no Redis round trip: the store is asked only when pike fires (is the flooding address a
trusted peer? a declared site?), and then at most once per PEERS_TTL_S per process. Emergency calls
are never dropped, whatever their address did: they have limits of their own (kemi.sip.emergency).

A declared site (a building behind one NAT address, `sites:` in provisioning) is limited per
phone, never as a whole: once pike finds its address over the limit, each (address, port) is
counted, and each authenticated user; only the one over SITE_PHONE_REQS is banned (siteban), and
the address is only marked (ipban = edge.SITE_MARK) so that its requests look up that table.
"""

from __future__ import annotations

import time
from typing import Callable

from kemi import edge, metrics, numbering
from kemi.model import Site
from kemi.settings import Settings
from kemi.sip.shell import Metric, Sip, Table, Var
from kemi.store import Directory, StoreRefused, StoreUnavailable

PEERS_TTL_S = 10.0  # how long a process trusts its copy of the trunk and media-server addresses and sites


class TrustedPeers:
    """Where trunks and media servers send from (Redis `sources`), and the declared sites, as this
    process last read them.

    Read when needed (pike fired, an extension is about to ring, a digest check failed), at most
    every PEERS_TTL_S; while Redis is down the last copy stays in use. None: never read (Redis
    down since start). publish(before, now) is told each copy read (kemi.sip.shell.Sip.publish_peers:
    the hosts kamailio.cfg's onsend_route keeps phones' calls away from)."""

    def __init__(self, directory: Directory, clock: Callable[[], float] = time.monotonic,
                 publish: Callable[[frozenset | None, frozenset], None] | None = None):
        self.directory = directory
        self.clock = clock
        self.publish = publish
        self._known: frozenset[tuple[str, int]] | None = None
        self._site_list: tuple[Site, ...] = ()
        self._sites = edge.Sites()
        self._read_at = float("-inf")
        self._hosts_of: frozenset | None = None  # the addresses() _hosts was made of
        self._hosts: frozenset[str] = frozenset()

    def _refresh(self) -> None:
        now = self.clock()
        if self._known is None or now - self._read_at >= PEERS_TTL_S:
            try:
                known = self.directory.peer_addresses()
                sites = self.directory.sites()
            except (StoreUnavailable, StoreRefused):
                pass  # keep the last copy; try again at the next need
            else:
                before, self._known = self._known, known
                if self.publish is not None:
                    self.publish(before, known)
                if sites != self._site_list:
                    self._site_list, self._sites = sites, edge.Sites(sites)
            self._read_at = now

    def addresses(self) -> frozenset[tuple[str, int]] | None:
        self._refresh()
        return self._known

    def site(self, ip: str) -> str | None:
        """The declared site this address belongs to, or None (also when never read). Asked at
        every failed or checked digest: with the store down since start it is tried again only
        every PEERS_TTL_S, not at each of them."""
        if self._known is None and self.clock() - self._read_at < PEERS_TTL_S:
            return None
        self._refresh()
        return self._sites.site_of(ip)

    def is_peer_host(self, source: tuple[str, int]) -> bool:
        """Whether a trunk or media server is at this source's IP address (any port: a carrier's
        replies and media do not always come from its provisioned SIP port)."""
        known = self.addresses()
        if not known:
            return False
        if self._hosts_of is not known:
            self._hosts_of, self._hosts = known, frozenset(ip for ip, _ in known)
        return source[0] in self._hosts


class Gate:
    def __init__(self, sip: Sip, settings: Settings, peers: TrustedPeers):
        self.sip = sip
        self.settings = settings
        self.peers = peers
        self.agents = settings.scanner_agents
        # this request came from a declared site's address while pike found it flooding: its
        # user is counted once authenticated (phone_within_limit). Set by admit(), per request.
        self.site_flooding = False

    # -- every request ------------------------------------------------------------------------
    def admit(self) -> bool:
        """False when the request is dropped without an answer: from a banned address, part of a
        flood, or from a scanner. The only log lines are one per ban and one per scanner request
        (a scanner that also floods is banned, and then silent)."""
        sip = self.sip
        ip, port = sip.source
        self.site_flooding = False
        mark = sip.cache_get(Table.IP_BAN, ip)  # the one lookup every request pays, as before sites
        if mark is not None and (mark != edge.SITE_MARK or self.site_phone_banned(ip, port)):
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
        if (ip, port) in peers or ip in self.settings.siblings:
            return True  # trunks, media servers, the site's other proxies carry everyone's calls: never limited
        site = self.peers.site(ip)
        if site is not None:
            return self.site_flood(site, ip, port)
        if ip in {host for host, _ in peers}:
            # Another port of a trusted peer's host (or a forged source): drop the excess, but a
            # ban of the address would silence the peer itself.
            if verdict == -2:
                sip.log("warn", f"flood from {ip}:{port}, a trusted peer's address: excess dropped, not banned")
            return self.exempt()
        sip.cache_set_for(Table.IP_BAN, ip, int(edge.ADDRESS_BANNED), self.settings.ban_s)
        sip.count(Metric.BANS, metrics.FLOOD)
        sip.log("warn", f"flood from {ip}:{port}: {ip} banned for {self.settings.ban_s}s")
        return self.exempt()

    # -- declared sites: per phone, never the address ---------------------------------------------
    def site_flood(self, site: str, ip: str, port: int) -> bool:
        """pike found a declared site's address over its limit: count this phone (address and
        port); ban that port alone past SITE_PHONE_REQS per SITE_PHONE_WINDOW_S. Whether this
        request goes on."""
        self.site_flooding = True
        key = edge.site_phone_key(ip, port)
        cfg = self.settings
        count = self.sip.count_in_window(Table.SITE_FLOOD, key, cfg.site_phone_window_s)
        if count <= cfg.site_phone_reqs:
            return True
        self.ban_site_phone(key, f"flood from {ip}:{port} (site {site}): that port")
        return self.exempt()

    def phone_within_limit(self, user: str, domain: str) -> bool:
        """After a passed digest check: False when this user, counted at its site's address while
        that address floods, went over SITE_PHONE_REQS (it is banned there from now on). A phone
        that changes ports is still one phone; and only a user who proves its password is counted,
        so nobody can get another member banned by sending in its name."""
        if not self.site_flooding:
            return True
        ip = self.sip.source[0]
        key = edge.site_user_key(ip, user, domain)
        cfg = self.settings
        if self.sip.count_in_window(Table.SITE_FLOOD, key, cfg.site_phone_window_s) <= cfg.site_phone_reqs:
            return True
        self.ban_site_phone(key, f"flood of {user}@{domain} from {ip} (site {self.peers.site(ip)}): that user")
        return False

    def ban_site_phone(self, key: str, what: str) -> None:
        sip, ban_s = self.sip, self.settings.ban_s
        ip = sip.source[0]
        sip.cache_set_for(Table.SITE_BAN, key, 1, ban_s)
        sip.count(Metric.BANS, metrics.SITE_PHONE)
        sip.cache_remove(Table.SITE_FLOOD, key)  # after the ban, counting starts again
        # the address's mark lasts as long as its latest ban: until then its requests look in siteban
        sip.cache_set_for(Table.IP_BAN, ip, int(edge.SITE_MARK), ban_s)
        sip.log("warn", f"{what} banned for {ban_s}s; the site's other phones are not")

    def site_phone_banned(self, ip: str, port: int) -> bool:
        """Whether this request's phone (its port, or the user its credentials name) is banned at
        its site's address. The user is as the request claims it: whoever claims a banned user is
        that user flooding or someone pretending to be it, and neither is let in."""
        sip = self.sip
        if sip.cache_has(Table.SITE_BAN, edge.site_phone_key(ip, port)):
            return True
        user = sip.lenient("$au")
        return bool(user) and sip.cache_has(Table.SITE_BAN, edge.site_user_key(ip, user, sip.lenient("$ar") or ""))

    def exempt(self) -> bool:
        """Whether a request from a banned or flooding address goes on all the same: an emergency
        INVITE from anywhere (a phone that is new at that address, whose NAT gave it a new port or
        whose registration lapsed during the ban, needs it as much: kemi.sip.emergency limits them),
        a CANCEL (tm matches it to a transaction of ours: it can only stop a call), what follows an
        emergency call in its dialog, and from an address with a current registration everything in
        a transaction or dialog (ACK, BYE, ...). Only banned or flooding requests get here: these
        checks cost nothing to anyone else."""
        sip = self.sip
        if sip.in_dialog():
            return self.registered_source() or self.emergency_dialog()
        if sip.is_cancel():
            return True
        if sip.is_ack():
            return self.registered_source()
        return sip.is_method("INVITE") and numbering.is_emergency(sip.lenient("$rU") or "")

    def emergency_dialog(self) -> bool:
        """Whether this in-dialog request belongs to an emergency call this proxy routed (its ACK,
        BYE, re-INVITE): dropped, the emergency trunk would end the call for want of its ACK."""
        sip = self.sip
        return sip.find_dialog() and sip.get(Var.DLG_EMERGENCY) == "1"

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
    def auth_keys(self, user: str, domain: str) -> tuple[str, str]:
        ip, port = self.sip.source
        return edge.auth_keys(ip, port, user, domain, self.peers.site(ip) is not None)

    def auth_blocked(self, user: str, domain: str) -> bool:
        """Whether this source address may not try this user's credentials now."""
        pair, address = self.auth_keys(user, domain)
        return self.sip.cache_has(Table.AUTH_BAN, pair) or self.sip.cache_has(Table.AUTH_BAN, address)

    def auth_failed(self, user: str, domain: str) -> None:
        """Count a failed digest check (wrong password, unknown user, ...); block at the limit."""
        sip, cfg = self.sip, self.settings
        ip = sip.source[0]
        pair, address = self.auth_keys(user, domain)
        sip.count(Metric.AUTH_FAILURES, metrics.auth_method(sip.method))
        anyone = address.split("|", 1)[0]  # the address, or at a site the address and port
        for key, limit, what in ((pair, cfg.auth_fail_max, f"auth for {user}@{domain} from {ip}"),
                                 (address, cfg.auth_fail_max * edge.IP_FAIL_FACTOR, f"auth from {anyone} for any user")):
            count = sip.count_in_window(Table.AUTH_FAIL, key, cfg.auth_fail_window_s)
            if count >= limit:
                sip.cache_set_for(Table.AUTH_BAN, key, 1, cfg.auth_ban_s)
                sip.count(Metric.BANS, metrics.AUTH)
                sip.cache_remove(Table.AUTH_FAIL, key)  # after the block, counting starts again
                sip.log("warn", f"{what} blocked for {cfg.auth_ban_s}s after {count} failures "
                                f"within {cfg.auth_fail_window_s}s")

    # -- registrations ------------------------------------------------------------------------
    def registered_source(self) -> bool:
        """Whether a registration saved from this request's source address (ip:port) still lasts:
        a phone of ours is there (no Redis lookup: works with the store down)."""
        ip, port = self.sip.source
        return self.sip.cache_has(Table.REGISTERED, f"{ip}:{port}")

    def registered_phone(self) -> str | None:
        """Which phone (user@domain) holds a current registration saved from this request's source
        address; "" for an entry that names none (an older version wrote 1); None: nobody's."""
        ip, port = self.sip.source
        value = self.sip.cache_get(Table.REGISTERED, f"{ip}:{port}")
        if value is None:
            return None
        return value if "@" in value else ""

    def registered(self, seconds: int, phone: str) -> None:
        """A REGISTER of phone (user@domain) from the source address was saved for `seconds` (0:
        removed). The entry names the phone that registered there last; a de-registration removes
        it only when it names that phone (another line of the same device stays registered)."""
        ip, port = self.sip.source
        key = f"{ip}:{port}"
        if seconds > 0:
            self.sip.cache_set_text_for(Table.REGISTERED, key, phone, seconds)
            return
        held = self.sip.cache_get(Table.REGISTERED, key)
        if held is not None and (held == phone or "@" not in held):
            self.sip.cache_remove(Table.REGISTERED, key)

    # -- HTTP on a SIP socket -----------------------------------------------------------------
    def admit_http(self) -> bool:
        """False when an HTTP request that reached a SIP socket is dropped unanswered: from a banned
        address, or one pike finds flooding, which is banned as for SIP (kamailio.cfg hands every
        HTTP request on any socket to the routes, xhttp; no phone speaks HTTP, so no exemption)."""
        sip = self.sip
        ip, port = sip.source
        if sip.cache_has(Table.IP_BAN, ip):
            return False
        verdict = sip.flood_check()
        if verdict < 0:
            self.flooding(ip, port, verdict)  # the ban and its log line, as for SIP
            return False
        return True
