"""RTP through rtpengine from Python sockets: who sends what, and what each socket RECEIVED.

Each sender has its own SSRC, so a receiver can tell whose packets reached it (tests/sip/
test_media_security.py, tests/sip/test_nat.py)."""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import time

PACKETS = 20
SETTLE = 0.4  # after the last packet sent, anything relayed would long be there (userspace relay, no network)


class Rtp:
    """A UDP socket that sends RTP (its own SSRC) and records every datagram it receives."""

    def __init__(self, ip: str, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.ip, self.port = self.sock.getsockname()
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.got: list[tuple[tuple[str, int], int]] = []  # (source, SSRC) of each datagram received

    def send(self, dest: tuple[str, int], count: int = PACKETS) -> None:
        for _ in range(count):
            self.seq = (self.seq + 1) & 0xFFFF
            header = struct.pack("!BBHII", 0x80, 8, self.seq, self.seq * 160, self.ssrc)
            self.sock.sendto(header + bytes([0xD5]) * 160, dest)
            time.sleep(0.005)

    def drain(self, wait: float = SETTLE) -> list[tuple[tuple[str, int], int]]:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data, src = self.sock.recvfrom(65535)
            self.got.append((src, struct.unpack("!I", data[8:12])[0] if len(data) >= 12 else -1))
        return self.got

    def ssrcs(self) -> set[int]:
        return {ssrc for _, ssrc in self.drain()}

    def close(self) -> None:
        self.sock.close()


def sdp(ip: str, port: int, c: str | None = None, streams: int = 1) -> str:
    """An offer or answer whose connection address is c (default: ip) with `streams` audio streams
    (the first with its attributes, the others a bare m= line, as in the issue's 30 KB offer)."""
    c = c or ip
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {c}", "t=0 0",
             f"m=audio {port} RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=sendrecv"]
    lines += [f"m=audio {port + 2 * i} RTP/AVP 8" for i in range(1, streams)]
    return "\r\n".join(lines) + "\r\n"


def relay(body: str) -> tuple[str, int]:
    """Where rtpengine's rewritten SDP tells its reader to send its audio."""
    return re.search(r"c=IN IP4 (\S+)", body).group(1), int(re.search(r"m=audio (\d+)", body).group(1))
