"""A site: several proxies that share one location (kamailio.cfg "Site", SITE_PROXIES).

Behind a NAT a phone is reached only from the proxy it registered through: its router lets in only
the address the phone spoke to. So that proxy saves the phone's contacts with a Path of its own
(RFC 3327, Phones.register: <sip:this-proxy;lr;received=sip:NAT-address:port>), and the lookup of
any other proxy of the site sends the call there, the Path as its Route. This role is that owner's
side: an initial request from a sibling is relayed to the phone its Route names, and nothing else.

Siblings are the addresses the operator declares in SITE_PROXIES, never something a message says.
A sibling has already authenticated, routed, recorded and billed the call (its dialog holds the money
and the maximum duration); this proxy runs none of that again. It anchors the phone's media at its
own relay (the phone's NAT lets only this proxy's addresses in, RTP as SIP), follows the dialog so
that the phone's in-dialog requests are served (kemi.sip.in_dialog: the sibling is the caller, known
by its address), and sends the INVITE as any phone branch: kamailio.cfg's onsend_route drops it
if the Route's received names a trunk or a media server.
"""

from __future__ import annotations

from kemi import edge, replies
from kemi.settings import Settings
from kemi.sip.calls import Calls
from kemi.sip.gate import TrustedPeers
from kemi.sip.shell import Route, Sip


class Site:
    def __init__(self, sip: Sip, settings: Settings, calls: Calls, peers: TrustedPeers):
        self.sip = sip
        self.siblings = settings.siblings
        self.calls = calls
        self.peers = peers

    @property
    def shared(self) -> bool:
        """Whether this proxy has siblings (and saves its phones' contacts with its Path)."""
        return bool(self.siblings)

    def is_sibling(self, ip: str) -> bool:
        return ip in self.siblings

    def from_sibling(self) -> None:
        """An initial request from a sibling proxy: a keepalive, or a call for a phone of ours."""
        sip = self.sip
        if sip.method == "OPTIONS" and not sip.pv("$rU"):
            sip.reply(replies.OK)
        elif sip.is_method("INVITE"):
            self.relay_to_phone()
        else:
            self.refuse(replies.SIBLING_SENDS_CALLS_ONLY, f"a sibling proxy sends no {sip.method}")

    def relay_to_phone(self) -> None:
        sip = self.sip
        split = sip.routes_beyond_us()
        why = "not routed through this proxy" if split is None else edge.sibling_route_refusal(*split)
        if why is not None:
            self.refuse(replies.NOT_ROUTED_BY_OUR_PATH, why)
            return
        # loose_route() takes our Route off; the path module then sets the destination from its
        # received parameter (kamailio.cfg, use_received): Kamailio's reading of it, not ours
        if not sip.follow_preloaded_route() or not sip.pv("$du"):
            self.refuse(replies.NOT_ROUTED_BY_OUR_PATH, "its Route of ours gave no destination")
            return
        # as before ringing any phone: never a trunk's or a media server's host, never this proxy
        # (the peers' copy read here is also what kamailio.cfg's onsend_route checks)
        (socket,) = sip.target_sockets()
        where = edge.parse_socket(socket)
        why = edge.unsafe_target(socket, self.peers.addresses()) or \
            ("this proxy" if where is None or sip.is_myself(edge.uri_of(where)) else None) or \
            ("another proxy of the site" if where.host in self.siblings else None)
        if why is not None:
            self.refuse(replies.NOT_ROUTED_BY_OUR_PATH, f"its Route of ours sends to {why} ({socket or '?'})")
            return
        if not self.calls.track_for_sibling():
            return
        sip.relay(to_phones=True, unsent=replies.EXTENSION_UNREACHABLE,
                  branch_route=Route.BRANCH_PHONE if where is not None and where.transport == "tls" else None)

    def refuse(self, answer: replies.Reply, why: str) -> None:
        sip = self.sip
        ip, port = sip.source
        sip.log("notice", f"{sip.method} from sibling proxy {ip}:{port} to {sip.lenient('$ru')} refused "
                          f"({answer.code} {answer.reason}): {why}")
        sip.reply(answer)
