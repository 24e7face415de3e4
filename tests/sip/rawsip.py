"""Hand-made SIP for attack tests: a user agent that speaks exact bytes, and a peer that records.

SIPp plays well-behaved phones; an attacker does not behave. `Uac` sends requests
byte for byte as the test writes them (digest auth included, so a test can capture,
replay or break credentials), and `Peer` stands where a trunk, a media server or a
victim listens and keeps every datagram it receives, so a test asserts on what
actually left the proxy rather than on the answer the attacker got.

Raw bytes that are not UTF-8 go in as surrogate escapes: "\\udcff" is the byte 0xff.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

# Addresses no SIPp phone of tests/sip/conftest.py uses (those are 127.0.0.10-59).
_ips = itertools.cycle(f"127.0.1.{n}" for n in range(10, 250))


def fresh_ip() -> str:
    return next(_ips)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def header(message: str, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:\s*([^\r\n]*)", message, re.M | re.I)
    return match.group(1) if match else None


def headers(message: str, name: str) -> list[str]:
    return re.findall(rf"^{re.escape(name)}\s*:\s*([^\r\n]*)", message, re.M | re.I)


def header_names(message: str) -> list[str]:
    head = message.split("\r\n\r\n", 1)[0]
    return [line.split(":", 1)[0].strip() for line in head.split("\r\n")[1:] if ":" in line]


def status(message: str | None) -> tuple[int, str] | None:
    if not message:
        return None
    match = re.match(r"SIP/2.0 (\d{3}) ([^\r\n]*)", message)
    return (int(match.group(1)), match.group(2)) if match else None


def call_id(message: str) -> str | None:
    value = header(message, "Call-ID") or header(message, "i")
    return value.strip() if value else None


def md5(text: str) -> str:
    return hashlib.md5(encode(text)).hexdigest()


def digest_header(challenge: str, user: str, password: str, method: str, uri: str, nc: int = 1,
                  cnonce: str | None = None) -> tuple[str, str]:
    """(header name, value) answering a 401/407: qop=auth when the challenge offers it."""
    name = "Authorization" if challenge.startswith("SIP/2.0 401") else "Proxy-Authorization"
    offer = header(challenge, "WWW-Authenticate" if name == "Authorization" else "Proxy-Authenticate") or ""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', offer))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    if "auth" in params.get("qop", "").split(","):
        cnonce = cnonce or uuid.uuid4().hex[:16]
        ncs = f"{nc:08x}"
        response = md5(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        value = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                 f'response="{response}", algorithm=MD5, qop=auth, nc={ncs}, cnonce="{cnonce}"')
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
        value = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                 f'response="{response}", algorithm=MD5')
    if params.get("opaque"):
        value += f', opaque="{params["opaque"]}"'
    return name, value


@dataclass
class Exchange:
    """One request and what came back: every request sent (challenge round included) and every answer."""

    sent: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def final(self) -> tuple[int, str] | None:
        finals = [a for a in self.answers if not a.startswith("SIP/2.0 1")]
        return status(finals[-1]) if finals else None

    @property
    def last_sent(self) -> str:
        return self.sent[-1]


class Uac:
    """A user agent on its own loopback address (UDP) that sends exactly what it is told."""

    def __init__(self, proxy, ip: str | None = None, port: int = 0):
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip or fresh_ip(), port))
        self.ip, self.port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def target(self) -> tuple[str, int]:
        return self.proxy.ip, self.proxy.port

    def send(self, text: str | bytes) -> None:
        self.sock.sendto(text if isinstance(text, bytes) else encode(text), self.target)

    def collect(self, cid: str, cseq: int | None = None, timeout: float = 2.0) -> list[str]:
        """Answers to Call-ID cid (and CSeq number cseq) until a final one, or the timeout."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except (socket.timeout, ConnectionRefusedError):
                return got
            if not data.startswith("SIP/2.0") or call_id(data) != cid:
                continue
            if cseq is not None and not (header(data, "CSeq") or "").startswith(f"{cseq} "):
                continue
            got.append(data)
            if not data.startswith("SIP/2.0 1"):
                return got

    def build(self, method: str, ruri: str, *, from_uri: str, to_uri: str, cid: str, from_tag: str, cseq: int,
              extra: list[str] = (), contact: str | None = None, body: str = "", to_tag: str | None = None) -> str:
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
                 f"From: <{from_uri}>;tag={from_tag}",
                 f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {cid}", f"CSeq: {cseq} {method}", "Max-Forwards: 70"]
        if contact:
            lines.append(f"Contact: {contact}")
        lines.extend(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(encode(body))}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def request(self, method: str, ruri: str, *, user: str, domain: str, password: str | None = None,
                to_uri: str | None = None, extra: list[str] = (), cid: str | None = None,
                contact: str | None = None, auth_user: str | None = None, timeout: float = 2.0,
                body: str | None = None, from_uri: str | None = None, rounds: int = 2) -> Exchange:
        """Send a request; answer up to `rounds` digest challenges when a password is given."""
        cid = cid or uuid.uuid4().hex
        tag = uuid.uuid4().hex[:10]
        from_uri = from_uri or f"sip:{user}@{domain}"
        to_uri = to_uri or (from_uri if method == "REGISTER" else ruri)
        if contact is None:
            contact = f"<sip:{user}@{self.ip}:{self.port}>"
        if body is None:
            body = sdp(self.ip) if method == "INVITE" else ""
        ex = Exchange()
        cseq, auth = 1, []
        for attempt in range(rounds + 1):
            text = self.build(method, ruri, from_uri=from_uri, to_uri=to_uri, cid=cid, from_tag=tag, cseq=cseq,
                              extra=list(extra) + auth, contact=contact, body=body)
            self.send(text)
            ex.sent.append(text)
            got = self.collect(cid, cseq, timeout)
            ex.answers.extend(got)
            final = status(got[-1]) if got else None
            if final is None:
                return ex
            if method == "INVITE" and final[0] >= 300:
                self.ack(got[-1], ruri, from_uri, to_uri, cid, tag, cseq)
            if final[0] not in (401, 407) or password is None or attempt == rounds:
                return ex
            name, value = digest_header(got[-1], auth_user or user, password, method, ruri)
            auth = [f"{name}: {value}"]
            cseq += 1
        return ex

    def ack(self, answer: str, ruri: str, from_uri: str, to_uri: str, cid: str, tag: str, cseq: int) -> None:
        to = header(answer, "To") or f"<{to_uri}>"
        via = header(answer, "Via")
        self.send("\r\n".join([f"ACK {ruri} SIP/2.0", f"Via: {via}", f"From: <{from_uri}>;tag={tag}", f"To: {to}",
                               f"Call-ID: {cid}", f"CSeq: {cseq} ACK", "Max-Forwards: 70", "Content-Length: 0"])
                  + "\r\n\r\n")

    def register(self, user: str, domain: str, password: str | None, *, contact: str | None = None,
                 expires: int = 300, extra: list[str] = (), **kw) -> Exchange:
        return self.request("REGISTER", f"sip:{domain}", user=user, domain=domain, password=password,
                            contact=contact, extra=[f"Expires: {expires}", *extra], **kw)

    def invite(self, user: str, domain: str, password: str | None, dial: str, **kw) -> Exchange:
        return self.request("INVITE", f"sip:{dial}@{domain}", user=user, domain=domain, password=password, **kw)

    def options(self, ruri: str | None = None, extra: list[str] = (), timeout: float = 1.0) -> Exchange:
        return self.request("OPTIONS", ruri or f"sip:{self.proxy.ip}:{self.proxy.port}", user="probe",
                            domain=self.ip, extra=extra, timeout=timeout, contact="")


def sdp(ip: str) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


class Peer:
    """A SIP peer on ip:port (UDP) that records every datagram; answers INVITE with `answer`
    (None: never answers, like an unreachable victim), OPTIONS/BYE/CANCEL with 200."""

    def __init__(self, ip: str, port: int, answer: tuple[int, str] | None = (486, "Busy Here"),
                 contact: bool = False):
        self.answer = answer
        self.contact = contact  # a 2xx to INVITE names the peer as the dialog's target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # The trunk addresses are fixed (office.yaml), and other test sessions on this
        # machine play them too: wait for the address rather than fail on a neighbour.
        deadline = time.monotonic() + 90
        while True:
            try:
                self.sock.bind((ip, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.2)
        self.ip, self.port = ip, port
        self.received: list[tuple[tuple[str, int], str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            with self._lock:
                self.received.append((addr, text))
            method = text.split(" ", 1)[0]
            if text.startswith("SIP/2.0") or method == "ACK":
                continue
            if method == "INVITE":
                self._reply(text, addr, 100, "Trying")
                if self.answer is not None:
                    self._reply(text, addr, *self.answer)
            else:
                self._reply(text, addr, 200, "OK")

    def _reply(self, request: str, addr, code: int, reason: str) -> None:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [line for line in head[1:] if re.match(r"(Via|v|From|f|Call-ID|i|CSeq)\s*:", line, re.I)]
        to = next((line for line in head[1:] if re.match(r"(To|t)\s*:", line, re.I)), "To: <sip:x@x>")
        if code > 100 and ";tag=" not in to:
            to += ";tag=peer" + uuid.uuid4().hex[:8]
        if self.contact and 200 <= code < 300 and request.startswith("INVITE "):
            keep += [line for line in head[1:] if re.match(r"Record-Route\s*:", line, re.I)]
            keep.append(f"Contact: <sip:peer@{self.ip}:{self.port}>")
        text = "\r\n".join([f"SIP/2.0 {code} {reason}", *keep, to, "Content-Length: 0"]) + "\r\n\r\n"
        try:
            self.sock.sendto(text.encode(errors="replace"), addr)
        except OSError:
            pass

    def requests(self, method: str | None = None, cid: str | None = None) -> list[str]:
        with self._lock:
            texts = [t for _, t in self.received]
        return [t for t in texts if not t.startswith("SIP/2.0")
                and (method is None or t.startswith(method + " ")) and (cid is None or call_id(t) == cid)]

    def wait_for(self, method: str, cid: str | None = None, timeout: float = 3.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests(method, cid)
            if got:
                return got
            time.sleep(0.05)
        return self.requests(method, cid)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tcp_options(proxy, src_ip: str, timeout: float = 2.0) -> tuple[int, str] | None:
    """One OPTIONS keepalive over a new TCP connection from src_ip; the answer's status, or None."""
    try:
        with socket.create_connection((proxy.ip, proxy.port), timeout=timeout, source_address=(src_ip, 0)) as s:
            port = s.getsockname()[1]
            cid = uuid.uuid4().hex
            s.sendall(encode(
                f"OPTIONS sip:{proxy.ip}:{proxy.port};transport=tcp SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {src_ip}:{port};branch=z9hG4bK{cid[:12]};rport\r\n"
                f"From: <sip:probe@{src_ip}>;tag={cid[:8]}\r\nTo: <sip:{proxy.ip}:{proxy.port}>\r\n"
                f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"))
            data = b""
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = s.recv(65535)
                if not chunk:
                    break
                data += chunk
            return status(data.decode(errors="replace"))
    except OSError:
        return None
