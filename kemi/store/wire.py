"""The proxy's hot-path Redis commands, sent as one write and read back with hiredis's parser.

redis-py's pipeline and command layers cost more Python work per call set-up than the rest of the
routing (profile of issue 13: pool checkout, retry wrapper, per-command packing and response
callbacks). The proxy's per-request commands are few and simple (GET, MGET, HGETALL, FCALL), so this
sends them itself on one TCP socket per process and parses the replies with hiredis (a dependency
redis-py already uses). Every failure closes the socket (a late answer must never be read as the
next command's) and surfaces as OSError or WireError for kemi.store.Connection to translate.
"""

from __future__ import annotations

import select
import socket

import hiredis

RECV_BYTES = 65536


class WireError(Exception):
    """Redis sent something that is not RESP."""


def encode(arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise TypeError(f"a Redis argument must be bytes, str or a number, got {type(arg).__name__}")
    return (str(arg) if isinstance(arg, int) else repr(arg)).encode()


def pack(commands) -> bytes:
    """RESP arrays of bulk strings, one per command, ready to send in one write."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = encode(arg)
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Wire:
    """One TCP connection to Redis (host, port, optional AUTH and SELECT), opened on first use."""

    def __init__(self, host: str, port: int, db: int = 0, password: str | None = None,
                 username: str | None = None, timeout_s: float = 0.25):
        self.address = (host, port)
        self.setup = ([("AUTH", username, password) if username else ("AUTH", password)] if password else []) + \
            ([("SELECT", db)] if db else [])
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.reader: hiredis.Reader | None = None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None

    def _open(self) -> None:
        sock = socket.create_connection(self.address, timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.reader = sock, hiredis.Reader()
        if self.setup:
            for reply in self._exchange(self.setup):
                if isinstance(reply, hiredis.ReplyError):
                    raise WireError(f"connection set-up refused: {reply}")

    def run(self, commands) -> list:
        """The replies of the commands, in order; an error reply is a hiredis.ReplyError in its place."""
        try:
            if self.sock is not None and self._stale():
                self.close()
            if self.sock is None:
                self._open()
            return self._exchange(commands)
        except BaseException:
            self.close()
            raise

    def _stale(self) -> bool:
        """Whether the idle socket has something to read before anything was asked: Redis closed it
        (restarted, timeout, CLIENT KILL) or a late answer arrived. Either way it is not usable
        (redis-py checks the same before each command)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def _exchange(self, commands) -> list:
        self.sock.sendall(pack(commands))
        replies = []
        reader = self.reader
        while len(replies) < len(commands):
            reply = reader.gets()
            if reply is False:
                data = self.sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                reader.feed(data)
                continue
            replies.append(reply)
        return replies
