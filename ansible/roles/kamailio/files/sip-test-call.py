"""sip-test-call.py ADDR PORT DOMAIN CALLER CALLEE [TIMEOUT_S]: the post-deploy health check.

A real call through the proxy at ADDR:PORT (UDP), as a phone makes one: the test extension CALLEE
registers from here (the test peer), CALLER calls it with digest authentication, the peer answers
200 with SDP, the caller ACKs and hangs up, the BYE is answered 200, the peer unregisters. The
passwords come from the environment (CHECK_CALLER_PASSWORD, CHECK_CALLEE_PASSWORD), never argv.

What this proves that OPTIONS does not: the routes run (Python loaded, Redis reachable with the
proxy's credentials, the directory provisioned), the media relay answers its offer and answer,
and the proxy relays an INVITE out and its answer back. The call is extension to extension inside
the test company (no trunk, no money); both extensions exist only for this (ansible/README.md,
Post-deploy check). Exit 0 and one line on success; exit 1 and what went wrong otherwise.
"""

import hashlib
import os
import re
import socket
import sys
import time
import uuid

addr, port, domain, caller, callee = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
deadline = time.monotonic() + float(sys.argv[6] if len(sys.argv) > 6 else 20)
passwords = {caller: os.environ["CHECK_CALLER_PASSWORD"], callee: os.environ["CHECK_CALLEE_PASSWORD"]}
proxy = (addr, port)


def fail(why: str) -> None:
    print(f"test call {caller} -> {callee} through {addr}:{port} failed: {why}", file=sys.stderr)
    sys.exit(1)


def token() -> str:
    return uuid.uuid4().hex[:16]


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # from the address the proxy reaches this host on (loopback for a loopback proxy)
    s.connect(proxy)
    local = s.getsockname()[0]
    s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local, 0))
    return s


class Msg:
    def __init__(self, raw: str):
        head, _, self.body = raw.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers: list[tuple[str, str]] = []
        compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers.append((compact.get(name, name), value.strip()))

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if self.first.startswith("SIP/2.0 ") else 0

    @property
    def method(self) -> str:
        return self.first.split()[0] if not self.status else self.get("cseq").split()[-1]


class Phone:
    def __init__(self, user: str):
        self.user, self.s = user, sock()
        self.ip, self.port = self.s.getsockname()
        self.contact = f"sip:{user}@{self.ip}:{self.port}"

    def send(self, text: str, dest=proxy) -> None:
        self.s.sendto(text.encode(), dest)

    def recv(self, until: float):
        """The next message before `until` (monotonic), or None."""
        while True:
            left = min(until, deadline) - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data, src = self.s.recvfrom(65535)
            except OSError:
                return None
            msg = Msg(data.decode(errors="replace"))
            if msg.first:
                return msg, src

    def request(self, method: str, ruri: str, call_id: str, tag: str, to: str, cseq: int,
                extra: list[str] = (), body: str = "") -> str:
        lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{token()};rport",
                 "Max-Forwards: 70", f"From: <sip:{self.user}@{domain}>;tag={tag}", f"To: {to}",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <{self.contact}>", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        return "\r\n".join(lines + [f"Content-Length: {len(body.encode())}", "", body])

    def transact(self, text: str, call_id: str, cseq: int, method: str, wait_s: float = 8,
                 dest=proxy, on_other=None) -> Msg:
        """Send (retransmitted while unanswered), return the final answer; other messages go to on_other."""
        self.send(text, dest)
        until, resend, interval = time.monotonic() + wait_s, time.monotonic() + 0.5, 0.5
        provisional = False
        while time.monotonic() < until:
            got = self.recv(min(until, resend))
            if got is None:
                if not provisional and time.monotonic() >= resend:
                    self.send(text, dest)
                    interval = min(interval * 2, 4)
                resend = time.monotonic() + interval
                continue
            msg, src = got
            if msg.status and msg.get("call-id") == call_id and msg.get("cseq") == f"{cseq} {method}":
                if msg.status >= 200:
                    return msg
                provisional = True
            elif on_other:
                on_other(msg, src)
        fail(f"no final answer to {method} within {wait_s:.0f} s")

    def with_auth(self, method: str, ruri: str, to: str, extra: list[str] = (), body: str = "", on_other=None):
        call_id, tag = f"deploy-check-{token()}", token()
        answer = self.transact(self.request(method, ruri, call_id, tag, to, 1, extra, body), call_id, 1, method,
                               on_other=on_other)
        if answer.status in (401, 407):
            if method == "INVITE":
                self.send("\r\n".join([f"ACK {ruri} SIP/2.0", f"Via: {answer.get('via')}", "Max-Forwards: 70",
                                       f"From: {answer.get('from')}", f"To: {answer.get('to')}",
                                       f"Call-ID: {call_id}", "CSeq: 1 ACK", "Content-Length: 0", "", ""]))
            name = "www-authenticate" if answer.status == 401 else "proxy-authenticate"
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', answer.get(name)))
            md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
            ha1 = md5(f"{self.user}:{params['realm']}:{passwords[self.user]}")
            ha2 = md5(f"{method}:{ruri}")
            realm, nonce = params["realm"], params["nonce"]
            auth = f'Digest username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{ruri}"'
            if params.get("qop"):
                cnonce = token()
                response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
                auth += f', response="{response}", cnonce="{cnonce}", nc=00000001, qop=auth, algorithm=MD5'
            else:
                auth += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}", algorithm=MD5'
            header = "Authorization" if answer.status == 401 else "Proxy-Authorization"
            answer = self.transact(self.request(method, ruri, call_id, tag, to, 2, [*extra, f"{header}: {auth}"],
                                                body), call_id, 2, method, on_other=on_other)
        return answer, call_id, tag


def sdp(phone: Phone) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {phone.ip}\r\ns=deploy-check\r\nc=IN IP4 {phone.ip}\r\nt=0 0\r\n"
            f"m=audio {phone.port + 2} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


def reply(msg: Msg, code: int, reason: str, to_tag: str, phone: Phone, body: str = "") -> str:
    to = msg.get("to") + ("" if ";tag=" in msg.get("to") else f";tag={to_tag}")
    lines = [f"SIP/2.0 {code} {reason}", *[f"Via: {v}" for v in msg.all("via")],
             *[f"Record-Route: {r}" for r in msg.all("record-route")], f"From: {msg.get('from')}", f"To: {to}",
             f"Call-ID: {msg.get('call-id')}", f"CSeq: {msg.get('cseq')}", f"Contact: <{phone.contact}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join(lines + [f"Content-Length: {len(body.encode())}", "", body])


peer, phone = Phone(callee), Phone(caller)
aor = f"sip:{callee}@{domain}"
registered, _, _ = peer.with_auth("REGISTER", f"sip:{domain}", f"<{aor}>", ["Expires: 60"])
if registered.status != 200:
    fail(f"the test peer {callee} could not register: {registered.first}")
try:
    # the peer answers from its own socket while the caller waits: one thread of control, so the
    # caller's socket is polled between the peer's
    peer_tag, got_invite, got_bye = token(), [], []
    peer.s.setblocking(False)

    def peer_serves() -> None:
        try:
            data, src = peer.s.recvfrom(65535)
        except OSError:
            return
        msg = Msg(data.decode(errors="replace"))
        if msg.method == "INVITE" and not msg.status:
            got_invite.append(msg)
            peer.send(reply(msg, 200, "OK", peer_tag, peer, sdp(peer)), src)
        elif msg.method == "BYE" and not msg.status:
            got_bye.append(msg)
            peer.send(reply(msg, 200, "OK", peer_tag, peer), src)
        elif not msg.status and msg.method not in ("ACK",):
            peer.send(reply(msg, 200, "OK", peer_tag, peer), src)

    class Polled(Phone):
        def recv(self, until: float):
            while time.monotonic() < min(until, deadline):
                peer_serves()
                self.s.settimeout(0.05)
                try:
                    data, src = self.s.recvfrom(65535)
                except OSError:
                    continue
                return Msg(data.decode(errors="replace")), src
            return None

    phone.__class__ = Polled
    answer, call_id, tag = phone.with_auth("INVITE", aor, f"<{aor}>", body=sdp(phone))
    if answer.status != 200:
        fail(f"the call was answered {answer.first} (the peer {'got' if got_invite else 'never got'} the INVITE)")
    if not got_invite:
        fail("200 OK without the INVITE reaching the test peer")
    # in-dialog requests: to the answer's Contact, through its Record-Routes (none under topology hiding)
    target = re.search(r"<([^>]+)>", answer.get("contact")) or re.search(r"(\S+)", answer.get("contact"))
    routes = [r for v in reversed(answer.all("record-route")) for r in v.split(",")]
    to = answer.get("to")
    cseq = int(answer.get("cseq").split()[0])
    extra = [f"Route: {r.strip()}" for r in routes]
    ack = phone.request("ACK", target.group(1), call_id, tag, to, cseq, extra)
    phone.send(ack)
    bye = phone.request("BYE", target.group(1), call_id, tag, to, cseq + 1, extra)
    ended = phone.transact(bye, call_id, cseq + 1, "BYE")
    if ended.status != 200:
        fail(f"the BYE was answered {ended.first}")
    if not got_bye:
        fail("the BYE was answered 200 without reaching the test peer")
finally:
    peer.s.setblocking(True)
    peer.__class__ = Phone
    peer.with_auth("REGISTER", f"sip:{domain}", f"<{aor}>", ["Expires: 0"])
print(f"test call {caller} -> {callee} through {addr}:{port}: answered 200, BYE answered 200")
