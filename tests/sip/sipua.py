"""A small SIP user agent in Python for attack tests: exact headers, exact Call-IDs, exact Routes.

SIPp plays scripted peers well, but an attack test needs to forge a BYE in the middle of a
call, reuse a Call-ID, or prove that a peer received *nothing*. Here:

- `Peer` is a trunk, media server or any other listener on its own loopback address: it
  records every message it receives (UDP, optionally TCP) and answers like a carrier
  (INVITE: 100, 200 with SDP; other requests: 200; or a chosen refusal).
- `UA` is a phone or an attacker (on UDP, TCP or TLS): it registers and calls with digest authentication, keeps
  the dialog (tags, route set, remote target) and can send any in-dialog request with any
  Request-URI and Route set. Requests the proxy sends to it (a BYE at the maximum duration)
  are answered 200 and recorded.

Everything is bounded in time; close() stops the threads and frees the sockets.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject"}
SDP = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio 49170 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


def token() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Msg:
    raw: str
    src: tuple[str, int]
    at: float
    first: str
    headers: list[tuple[str, str]]
    body: str
    conn: object = None  # the TCP connection it came on, to answer on it

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0] if self.is_request else self.cseq[1]

    @property
    def ruri(self) -> str:
        return self.first.split(" ")[1]

    @property
    def status(self) -> int:
        return int(self.first.split(" ")[1]) if not self.is_request else 0

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.header("cseq").split()
        return int(number), method

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def uris(self, name: str) -> list[str]:
        """Every <uri> of a header that may be comma-separated (Route, Record-Route, Contact)."""
        return [u for value in self.all(name) for u in re.findall(r"<([^>]+)>", value)]

    def tag(self, name: str) -> str | None:
        match = re.search(r";\s*tag=([^;>\s]+)", self.header(name) or "")
        return match.group(1) if match else None

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    def __str__(self) -> str:
        return self.first


def parse(raw: str, src, conn=None) -> Msg | None:
    head, _, body = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or not lines[0]:
        return None
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    return Msg(raw, tuple(src), time.monotonic(), lines[0], headers, body, conn)


def digest(user: str, password: str, realm: str, nonce: str, method: str, uri: str, qop: str | None) -> dict:
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    if qop:
        cnonce, nc = token(), "00000001"
        return {"response": md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"), "cnonce": cnonce, "nc": nc,
                "qop": "auth"}
    return {"response": md5(f"{ha1}:{nonce}:{ha2}")}


class Endpoint:
    """A socket (UDP, a TCP or TLS client connection, or a TCP listener) with a receiver thread.

    tls: the client context of a TLS connection to tcp_to (its handshake is done here)."""

    def __init__(self, ip: str, port: int = 0, tcp_to: tuple[str, int] | None = None, tcp_listen: bool = False,
                 tls: ssl.SSLContext | None = None):
        self.ip = ip
        self.inbox: list[Msg] = []
        self.cond = threading.Condition()
        self.closed = False
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.tcp_server = None
        # one OpenSSL connection must not be read and written by two threads at once
        self.stream_lock = threading.Lock()
        self.transport = ("TLS" if tls else "TCP") if tcp_to else "UDP"
        if tcp_to:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind((ip, port))
            self.sock.settimeout(3)
            self.sock.connect(tcp_to)
            if tls is not None:
                self.sock = tls.wrap_socket(self.sock, server_hostname=tcp_to[0])
            self.conns.append(self.sock)
            self._spawn(self._read_stream, self.sock, tcp_to)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((ip, port))
            self.sock.settimeout(0.2)
            self._spawn(self._read_udp)
        self.port = self.sock.getsockname()[1]
        if tcp_listen:
            self.tcp_server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp_server.bind((ip, self.port))
            self.tcp_server.listen(8)
            self.tcp_server.settimeout(0.2)
            self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _read_udp(self) -> None:
        while not self.closed:
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self._deliver(data.decode(errors="replace"), src, None)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, src = self.tcp_server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(conn)
            self._spawn(self._read_stream, conn, src)

    def _read_stream(self, conn: socket.socket, src) -> None:
        conn.settimeout(0.2)
        buf = b""
        while not self.closed:
            try:
                if isinstance(conn, ssl.SSLSocket):
                    # wait outside the lock, so that a send is never held up by an idle read
                    if not conn.pending() and not select.select([conn], [], [], 0.2)[0]:
                        continue
                    with self.stream_lock:
                        chunk = conn.recv(65535)
                else:
                    chunk = conn.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                match = re.search(rb"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
                size = int(match.group(1)) if match else 0
                if len(rest) < size:
                    break
                self._deliver((head + b"\r\n\r\n" + rest[:size]).decode(errors="replace"), src, conn)
                buf = rest[size:]

    def _deliver(self, text: str, src, conn) -> None:
        if not text.strip():
            return  # keepalive CRLF
        msg = parse(text, src, conn)
        if msg is None:
            return
        with self.cond:
            self.inbox.append(msg)
            self.cond.notify_all()
        try:
            self.on_message(msg)
        except Exception:  # a peer must keep listening whatever one message does
            pass

    def on_message(self, msg: Msg) -> None:
        pass

    def send(self, text: str, dest: tuple[str, int] | None = None, conn=None) -> None:
        data = text.encode()
        if conn is not None or self.transport != "UDP":
            with self.stream_lock:
                (conn or self.sock).sendall(data)
        else:
            self.sock.sendto(data, dest)

    def wait(self, predicate, timeout: float) -> Msg | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for msg in self.inbox:
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def requests(self, method: str | None = None) -> list[Msg]:
        with self.cond:
            return [m for m in self.inbox if m.is_request and (method is None or m.method == method)]

    def close(self) -> None:
        self.closed = True
        for s in [self.sock, self.tcp_server, *self.conns]:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for thread in self.threads:
            thread.join(1)


def response(req: Msg, code: int, reason: str, to_tag: str | None = None, contact: str | None = None,
             body: str = "", extra: list[str] = (), record_route: str | None = None) -> str:
    """An answer to req: Via, From, Call-ID, CSeq and Record-Route copied (RFC 3261 8.2.6, 12.1.1)."""
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.all("via")]
    lines.append(f"From: {req.header('from')}")
    to = req.header("to") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines += [f"Call-ID: {req.call_id}", f"CSeq: {req.header('cseq')}"]
    if 100 < code < 300:
        if record_route:  # as a record-routing SBC in front of this UA would have added it
            lines.append(f"Record-Route: <{record_route}>")
        lines += [f"Record-Route: {rr}" for rr in req.all("record-route")]
    if contact:
        lines.append(f"Contact: <{contact}>")
    return finish(lines, extra, body)


def finish(lines: list[str], extra, body: str) -> str:
    """A message from its first lines, extra headers and an SDP body (or none)."""
    lines = lines + list(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


class Peer(Endpoint):
    """A trunk, media server or victim host: records everything, answers like a carrier.

    invite: 'answer' (100, 200 + SDP), a (code, reason) refusal, or 'silent'.
    record_route: a URI the peer record-routes with, like a carrier's SBC.
    bye_delay: a carrier is a network round trip away; a phone under the attacker's control
    (a UA) answers at once, and who answers first matters to the dialog module.
    bye_answers: how the first BYEs (one per transaction) are answered, in order: a (code, reason)
    or 'silent'; the later ones get 200."""

    def __init__(self, ip: str, port: int, invite="answer", tcp_listen: bool = False, record_route: str | None = None,
                 bye_delay: float = 0.02, bye_answers: list = ()):
        super().__init__(ip, port, tcp_listen=tcp_listen)
        self.invite_policy = invite
        self.record_route = record_route
        self.bye_delay = bye_delay
        self.bye_answers = list(bye_answers)
        self.silent: set[str] = set()  # transactions left unanswered
        self.sent: dict[str, str] = {}  # Via branch -> last answer, for retransmissions
        self.to_tag = token()
        self.sdp: str | None = None  # the SDP it answers with (default: SDP at its own address)

    def on_message(self, msg: Msg) -> None:
        if not msg.is_request or msg.method == "ACK":
            return
        branch = (msg.header("via") or "") + msg.header("cseq")
        if branch in self.silent:
            return
        if branch in self.sent:
            self.send(self.sent[branch], msg.src, msg.conn)
            return
        if msg.method == "BYE" and self.bye_answers:
            policy = self.bye_answers.pop(0)
            if policy == "silent":
                self.silent.add(branch)
                return
            self.sent[branch] = response(msg, policy[0], policy[1])
            self.send(self.sent[branch], msg.src, msg.conn)
            return
        contact = f"sip:peer@{self.ip}:{self.port}"
        if msg.method == "INVITE" and not msg.tag("to"):
            if self.invite_policy == "silent":
                return
            self.send(response(msg, 100, "Trying"), msg.src, msg.conn)
            if self.invite_policy == "answer":
                answer = response(msg, 200, "OK", self.to_tag, contact, self.sdp or SDP.format(ip=self.ip),
                                  record_route=self.record_route)
            else:
                answer = response(msg, self.invite_policy[0], self.invite_policy[1], self.to_tag)
        elif msg.method == "INVITE":
            answer = response(msg, 200, "OK", None, contact, SDP.format(ip=self.ip))
        else:
            answer = response(msg, 200, "OK", None, contact if msg.method != "BYE" else None)
        if msg.method == "BYE" and self.bye_delay:
            self.silent.add(branch)  # retransmissions meanwhile get nothing: the answer is on its way
            timer = threading.Timer(self.bye_delay, self._send_quietly, (answer, msg.src, msg.conn, branch))
            timer.daemon = True
            timer.start()
            return
        self.sent[branch] = answer
        self.send(answer, msg.src, msg.conn)

    def _send_quietly(self, text: str, dest, conn, branch: str | None = None) -> None:
        if branch is not None:
            self.sent[branch] = text
            self.silent.discard(branch)
        try:
            self.send(text, dest, conn)
        except OSError:
            pass  # closed meanwhile: the test is over

    def invites(self) -> list[Msg]:
        """Initial INVITEs (no To-tag) only."""
        return [m for m in self.requests("INVITE") if not m.tag("to")]


@dataclass
class Call:
    """One dialog as the calling UA sees it."""

    ua: "UA"
    call_id: str
    from_tag: str
    to_uri: str
    ruri: str
    cseq: int
    final: Msg | None = None
    to_tag: str | None = None
    route: list[str] = field(default_factory=list)  # route set, reverse of the 200's Record-Route
    target: str | None = None  # remote target: the 200's Contact
    answered_at: float | None = None
    pending_ack: str | None = None  # the ACK of the 2xx, until sent

    def ack(self) -> None:
        if self.pending_ack:
            self.ua.send(self.pending_ack, self.ua.proxy)
            self.pending_ack = None

    @property
    def code(self) -> int | None:
        return self.final.status if self.final else None

    def request(self, method: str, ruri: str | None = None, route: list[str] | None = None,
                extra: list[str] = (), body: str = "", wait: float = 4.0, dest=None) -> Msg | None:
        """An in-dialog request; ruri and route default to the dialog's remote target and route set."""
        self.cseq += 1
        ruri = ruri or self.target
        route = self.route if route is None else route
        text = self.ua.build(method, ruri, self.call_id, self.from_tag, self.to_uri, self.to_tag, self.cseq,
                             [f"Route: <{r}>" for r in route] + list(extra), body)
        if method == "ACK":
            self.ua.send(text, dest or self.ua.proxy)
            return None
        answer = self.ua.transact(text, self.call_id, self.cseq, method, wait, dest)
        if method == "INVITE" and answer is not None and 200 <= answer.status < 300:
            ack = self.ua.build("ACK", ruri, self.call_id, self.from_tag, self.to_uri, self.to_tag, self.cseq,
                                [f"Route: <{r}>" for r in route])
            self.ua.send(ack, dest or self.ua.proxy)
        return answer

    def bye(self, **kw) -> Msg | None:
        return self.request("BYE", **kw)

    def ended_by_peer(self) -> Msg | None:
        """The BYE the proxy sent this UA for this call, if any."""
        return next((m for m in self.ua.requests("BYE") if m.call_id == self.call_id), None)


class UA(Endpoint):
    """A phone (or an attacker) talking to the proxy."""

    def __init__(self, ip: str, proxy: tuple[str, int], user: str = "mallory", domain: str = "example.net",
                 password: str = "", tcp: bool = False, answer_invites="answer", port: int = 0,
                 tls: ssl.SSLContext | None = None):
        """tcp or tls (a client context): a connection to proxy, which then must be its TCP or TLS port."""
        super().__init__(ip, port, tcp_to=proxy if tcp or tls else None, tls=tls)
        self.proxy = proxy
        self.user, self.domain, self.password = user, domain, password
        self.answer_invites = answer_invites
        self.ring_first = False  # answer an INVITE with 180 Ringing before the 200
        self.own_contact: str | None = None  # a Contact of its choosing (default: where it sends from)
        self.sent_answers: dict[str, str] = {}
        self.answered: dict[str, tuple[Msg, str]] = {}  # Call-ID -> (INVITE answered 200, our To tag)
        self.ringing: dict[str, tuple[Msg, str]] = {}   # Call-ID -> (INVITE left ringing, our To tag)
        self.sdp: str | None = None  # the SDP it offers and answers with (default: SDP at its own address)

    # -- building ------------------------------------------------------------------------------------
    @property
    def contact(self) -> str:
        if self.own_contact:
            return self.own_contact
        # on TCP and TLS this is the connection's own source port: where the proxy reaches the phone
        transport = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"sip:{self.user}@{self.ip}:{self.port}{transport}"

    def build(self, method: str, ruri: str, call_id: str, from_tag: str, to_uri: str, to_tag: str | None,
              cseq: int, extra: list[str] = (), body: str = "", branch: str | None = None,
              from_uri: str | None = None, own_contact: bool = True) -> str:
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/{self.transport} {self.ip}:{self.port};branch=z9hG4bK{branch or token()};rport",
                 "Max-Forwards: 70",
                 f"From: <{from_uri or f'sip:{self.user}@{self.domain}'}>;tag={from_tag}",
                 f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
        if own_contact and method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER", "UPDATE"):
            lines.append(f"Contact: <{self.contact}>")
        return finish(lines, extra, body)

    # -- transactions --------------------------------------------------------------------------------
    def transact(self, text: str, call_id: str, cseq: int, method: str, timeout: float = 4.0,
                 dest=None) -> Msg | None:
        """Send a request (retransmitted on UDP until answered) and return its final answer
        (or the last provisional one, or None)."""
        dest = dest or self.proxy
        # answers carry the request's From tag: an older call that reused this Call-ID (and its
        # CSeq numbers) must not lend this request its answers
        sent_tag = re.search(r"^From:[^\r\n]*;\s*tag=([^;>\s]+)", text, re.MULTILINE | re.IGNORECASE)

        def answers(m: Msg) -> bool:
            return not m.is_request and m.call_id == call_id and m.cseq == (cseq, method) and \
                (sent_tag is None or m.tag("from") == sent_tag.group(1))

        self.send(text, dest)
        deadline = time.monotonic() + timeout
        interval, resend_at = 0.5, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            final = self.wait(lambda m: answers(m) and m.status >= 200, min(deadline, resend_at) - time.monotonic())
            if final is not None:
                return final
            if self.transport == "UDP" and time.monotonic() >= resend_at and \
                    self.wait(answers, 0) is None:
                self.send(text, dest)
                interval = min(interval * 2, 4)
            resend_at = time.monotonic() + interval
        got = [m for m in self.inbox if answers(m)]
        return got[-1] if got else None

    def _with_auth(self, method: str, ruri: str, call_id: str, from_tag: str, to_uri: str, extra: list[str],
                   body: str, timeout: float, challenge_codes=(401, 407),
                   own_contact: bool = True) -> tuple[Msg | None, int]:
        cseq = 1
        text = self.build(method, ruri, call_id, from_tag, to_uri, None, cseq, extra, body, own_contact=own_contact)
        answer = self.transact(text, call_id, cseq, method, timeout)
        if answer is not None and answer.status in challenge_codes and self.password:
            if method == "INVITE":
                self._ack_failure(answer, ruri, from_tag, to_uri)
            name = "www-authenticate" if answer.status == 401 else "proxy-authenticate"
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', answer.header(name) or ""))
            d = digest(self.user, self.password, params["realm"], params["nonce"], method, ruri, params.get("qop"))
            auth = (f'Digest username="{self.user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
                    f'uri="{ruri}", response="{d["response"]}", algorithm=MD5')
            if "qop" in d:
                auth += f', cnonce="{d["cnonce"]}", nc={d["nc"]}, qop={d["qop"]}'
            header = "Authorization" if answer.status == 401 else "Proxy-Authorization"
            cseq = 2
            text = self.build(method, ruri, call_id, from_tag, to_uri, None, cseq,
                              list(extra) + [f"{header}: {auth}"], body, own_contact=own_contact)
            answer = self.transact(text, call_id, cseq, method, timeout)
        return answer, cseq

    def _ack_failure(self, answer: Msg, ruri: str, from_tag: str, to_uri: str) -> None:
        """The hop-by-hop ACK of a negative answer: the INVITE's Via branch, the answer's To."""
        lines = [f"ACK {ruri} SIP/2.0", f"Via: {answer.header('via')}", "Max-Forwards: 70",
                 f"From: {answer.header('from')}", f"To: {answer.header('to')}", f"Call-ID: {answer.call_id}",
                 f"CSeq: {answer.cseq[0]} ACK", "Content-Length: 0"]
        self.send("\r\n".join(lines) + "\r\n\r\n", self.proxy)

    # -- what a phone does ---------------------------------------------------------------------------
    def register(self, contacts: list[str] | None = None, expires: int = 300, timeout: float = 4.0) -> Msg | None:
        """REGISTER the given Contact header values (default: the UA's own address); the final answer."""
        contacts = [f"<{self.contact}>"] if contacts is None else contacts
        extra = [f"Contact: {c}" for c in contacts] + [f"Expires: {expires}"]
        aor = f"sip:{self.user}@{self.domain}"
        answer, _ = self._with_auth("REGISTER", f"sip:{self.domain}", token(), token(), aor, extra, "", timeout,
                                    own_contact=False)
        return answer

    def invite(self, dial: str, call_id: str | None = None, from_tag: str | None = None, extra: list[str] = (),
               timeout: float = 8.0, ack: bool = True) -> Call:
        """Call `dial` (user part at the UA's domain); on 2xx the dialog is kept and the ACK sent
        (ack=False: kept in call.pending_ack for call.ack())."""
        call_id = call_id or f"{token()}@{self.ip}"
        from_tag = from_tag or token()
        ruri = dial if dial.startswith("sip:") else f"sip:{dial}@{self.domain}"
        answer, cseq = self._with_auth("INVITE", ruri, call_id, from_tag, ruri, list(extra),
                                       self.sdp or SDP.format(ip=self.ip), timeout, challenge_codes=(407,))
        call = Call(self, call_id, from_tag, ruri, ruri, cseq, answer)
        if answer is None or answer.status < 200:
            return call
        if answer.status >= 300:
            self._ack_failure(answer, ruri, from_tag, ruri)
            return call
        call.answered_at = answer.at
        call.to_tag = answer.tag("to")
        call.route = list(reversed(answer.uris("record-route")))
        contacts = answer.uris("contact")
        call.target = contacts[0] if contacts else ruri
        call.pending_ack = self.build("ACK", call.target, call_id, from_tag, ruri, call.to_tag, cseq,
                                      [f"Route: <{r}>" for r in call.route])
        if ack:
            call.ack()
        return call

    def on_message(self, msg: Msg) -> None:
        """Requests the proxy sends this UA: BYE/INFO/OPTIONS get 200; a new INVITE is answered
        per answer_invites ('answer', a (code, reason) refusal, 'ring': 180 until a CANCEL, which
        gets 200 and the INVITE 487, or 'silent')."""
        if not msg.is_request or msg.method == "ACK":
            return
        key = (msg.header("via") or "") + msg.header("cseq")
        if key in self.sent_answers:
            self.send(self.sent_answers[key], msg.src, msg.conn)
            return
        contact = self.contact
        if msg.method == "CANCEL" and msg.call_id in self.ringing:
            invite, tag = self.ringing.pop(msg.call_id)
            self.send(response(msg, 200, "OK", tag), msg.src, msg.conn)
            self.send(response(invite, 487, "Request Terminated", tag), invite.src, invite.conn)
            return
        if msg.method == "INVITE" and not msg.tag("to"):
            if self.answer_invites == "silent":
                return
            if self.answer_invites == "ring":
                tag = token()
                self.ringing[msg.call_id] = (msg, tag)
                answer = response(msg, 180, "Ringing", tag, contact)
            elif self.answer_invites == "answer":
                tag = token()
                if self.ring_first:
                    self.send(response(msg, 180, "Ringing", tag, contact), msg.src, msg.conn)
                    # two proxy workers may take the 180 and the 200 at once: a 180 handled after
                    # the 200 is dropped (the transaction is over), as it would be from a real phone
                    time.sleep(0.05)
                answer = response(msg, 200, "OK", tag, contact, self.sdp or SDP.format(ip=self.ip))
                self.answered[msg.call_id] = (msg, tag)
            else:
                answer = response(msg, self.answer_invites[0], self.answer_invites[1], token())
        elif msg.method == "INVITE":
            answer = response(msg, 200, "OK", None, contact, SDP.format(ip=self.ip))
        else:
            answer = response(msg, 200, "OK")
        self.sent_answers[key] = answer
        self.send(answer, msg.src, msg.conn)

    def bye_as_callee(self, call_id: str, wait: float = 4.0) -> Msg | None:
        """Hang up a call this UA answered: a BYE to the caller's Contact along the INVITE's
        Record-Route (RFC 3261 12.1.1: the callee's route set is the Record-Route in order)."""
        invite, tag = self.answered[call_id]
        caller = invite.uris("contact")[0]
        to_uri = re.search(r"<([^>]+)>", invite.header("to") or "").group(1)
        from_uri = re.search(r"<([^>]+)>", invite.header("from") or "").group(1)
        cseq = 1000
        text = self.build("BYE", caller, call_id, tag, from_uri, invite.tag("from"), cseq,
                          [f"Route: <{r}>" for r in invite.uris("record-route")], from_uri=to_uri)
        return self.transact(text, call_id, cseq, "BYE", wait)

    def callee_invites(self) -> list[Msg]:
        """Initial INVITEs the proxy sent this UA."""
        return [m for m in self.requests("INVITE") if not m.tag("to")]


def raw_request(method: str, ruri: str, *, via_host: str, call_id: str | None = None, from_uri: str,
                from_tag: str | None = None, to_uri: str, to_tag: str | None = None, cseq: int = 1,
                extra: list[str] = (), transport: str = "UDP", body: str = "") -> str:
    """A request from nobody in particular: for strangers who never set up a dialog."""
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {via_host};branch=z9hG4bK{token()};rport",
             "Max-Forwards: 70",
             f"From: <{from_uri}>;tag={from_tag or token()}",
             f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id or token()}", f"CSeq: {cseq} {method}", *extra]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body
