"""The admin audit stream (keys.ADMIN_AUDIT): one entry per change made through kemi.admin."""

from __future__ import annotations

from kemi.store import keys
from kemi.store.connection import Connection


def append(conn: Connection, fields: dict[str, str]) -> str:
    """Add one record; the stream keeps about the last ADMIN_AUDIT_MAXLEN (approximate trimming
    costs nothing per write). Returns the entry id (the Redis time of the write)."""
    client = conn.ready()
    entry = conn.call(client.xadd, keys.ADMIN_AUDIT, fields, maxlen=keys.ADMIN_AUDIT_MAXLEN, approximate=True)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def last(conn: Connection, count: int) -> list[tuple[str, dict[str, str]]]:
    """The `count` most recent records, oldest first."""
    client = conn.ready()
    rows = conn.call(client.xrevrange, keys.ADMIN_AUDIT, count=count)

    def text(value) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return [(text(entry), {text(k): text(v) for k, v in fields.items()}) for entry, fields in reversed(rows)]
