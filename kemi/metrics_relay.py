"""`python3 -m kemi.metrics_relay --listen ADDR:PORT --upstream 127.0.0.1:PORT`: rtpengine's metrics,
and nothing else of its HTTP interface, on the proxy's private metrics address.

rtpengine's --listen-http serves /metrics, but the same port takes /cli/<command> (`terminate all`
hangs up every call), /ng (offers, deletes) and /admin, with no authentication. So rtpengine listens
there on 127.0.0.1 only, and this relay answers a remote Prometheus: GET /metrics alone, fetched from
upstream at each scrape; any other method or path gets 404 and never reaches rtpengine (SECURITY.md).
One scrape at a time is all it serves (a Prometheus scrapes every 15 s).
"""

from __future__ import annotations

import argparse
import http.client
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_PAGE = 4 * 1024 * 1024  # rtpengine's page is a few kB; a bigger answer is not relayed whole


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDR:PORT")
    return host, int(port)


def handler(upstream: tuple[str, int], timeout: float):
    class Relay(BaseHTTPRequestHandler):
        server_version = "cowork-metrics-relay"
        timeout = 10  # seconds a client may take to send its request: a stalled one frees the relay
        sys_version = ""

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # one line per scrape would only fill the log

        def answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] != "/metrics":
                self.answer(404, b"not found\n")
                return
            conn = http.client.HTTPConnection(*upstream, timeout=timeout)
            try:
                conn.request("GET", "/metrics")
                reply = conn.getresponse()
                body = reply.read(MAX_PAGE)
                status, kind = reply.status, reply.getheader("Content-Type", "text/plain")
            except (OSError, http.client.HTTPException) as exc:
                self.answer(502, f"rtpengine at {upstream[0]}:{upstream[1]} did not answer: {exc}\n".encode())
                return
            finally:
                conn.close()
            self.answer(status, body, kind)

        def refuse(self):
            self.answer(404, b"not found\n")

        do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = refuse

    return Relay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kemi.metrics_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=address, required=True, help="ADDR:PORT to serve GET /metrics on")
    parser.add_argument("--upstream", type=address, default=("127.0.0.1", 9901),
                        help="rtpengine's --listen-http (default 127.0.0.1:9901)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for rtpengine (default 5)")
    args = parser.parse_args(argv)
    try:
        server = HTTPServer(args.listen, handler(args.upstream, args.timeout))
    except OSError as exc:
        print(f"error: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}", file=sys.stderr)
        return 2
    server.timeout = args.timeout
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
