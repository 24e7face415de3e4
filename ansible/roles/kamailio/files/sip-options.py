"""sip-options.py ADDR PORT [TIMEOUT_S]: exit 0 once the proxy answers an OPTIONS with 200."""

import socket
import sys
import time
import uuid

addr, port = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3] if len(sys.argv) > 3 else 30)
last = "no answer"
while time.monotonic() < deadline:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr if addr.startswith("127.") else "0.0.0.0", 0))
        s.settimeout(0.5)
        me, mine = s.getsockname()
        tag = uuid.uuid4().hex
        s.sendto((f"OPTIONS sip:{addr}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{mine};branch=z9hG4bK{tag}\r\n"
                  f"From: <sip:check@{addr}>;tag={tag[:8]}\r\nTo: <sip:{addr}>\r\nCall-ID: {tag}\r\n"
                  f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (addr, port))
        try:
            last = s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
            if last.startswith("SIP/2.0 200"):
                print(last)
                sys.exit(0)
        except OSError:
            pass
    time.sleep(0.5)
print(f"no 200 to OPTIONS from {addr}:{port}: {last}", file=sys.stderr)
sys.exit(1)
