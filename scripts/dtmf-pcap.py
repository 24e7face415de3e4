#!/usr/bin/env python3
"""One pcap that dials DIGITS in RFC 4733 events, for SIPp's play_pcap_audio, made of SIPp's own
per-digit pcaps (/usr/share/sip-tester/dtmf_2833_<digit>.pcap, package sip-tester).

Each of those pcaps carries the same RTP sequence numbers and timestamp: played one after the other,
a receiver takes a digit repeated (the two 0s of 2001) for one event (RFC 4733 2.5.1.3: same event,
same timestamp). Here digit i is moved GAP_S later in time, 10 packets on in sequence and GAP_S of
samples on in RTP time, as a phone would send it; the UDP checksums are zeroed (optional over IPv4),
as the payload changed.
    scripts/dtmf-pcap.py 2001 OUT.pcap
"""

import struct
import sys
from pathlib import Path

SOURCE = Path("/usr/share/sip-tester")
GAP_S = 0.4
NAMES = {"*": "star", "#": "pound"}


def build(digits: str) -> bytes:
    out = b""
    for i, digit in enumerate(digits):
        data = (SOURCE / f"dtmf_2833_{NAMES.get(digit, digit)}.pcap").read_bytes()
        if not out:
            out = data[:24]  # the global header (link type Ethernet)
        off = 24
        while off < len(data):
            sec, usec, incl, orig = struct.unpack("<IIII", data[off:off + 16])
            pkt = bytearray(data[off + 16:off + 16 + incl])
            off += 16 + incl
            when = sec * 1_000_000 + usec + int(i * GAP_S * 1_000_000)
            ip = 14
            udp = ip + (pkt[ip] & 0x0F) * 4
            rtp = udp + 8
            seq, ts = struct.unpack("!HI", pkt[rtp + 2:rtp + 8])
            struct.pack_into("!HI", pkt, rtp + 2, (seq + 10 * i) & 0xFFFF, (ts + int(i * GAP_S * 8000)) & 0xFFFFFFFF)
            struct.pack_into("!H", pkt, udp + 6, 0)
            out += struct.pack("<IIII", when // 1_000_000, when % 1_000_000, len(pkt), len(pkt)) + bytes(pkt)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1] or any(d not in "0123456789*#" for d in sys.argv[1]):
        sys.exit("usage: scripts/dtmf-pcap.py DIGITS OUT.pcap   (DIGITS: 0-9, * and #)")
    Path(sys.argv[2]).write_bytes(build(sys.argv[1]))
