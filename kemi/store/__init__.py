"""The one place that speaks Redis. Key names: kemi.store.keys; layout: redis-schema/SCHEMA.md."""

from kemi.store.connection import Connection, SchemaMismatch, StoreUnavailable, pack, unpack
from kemi.store.directory import Directory, Party

__all__ = ["Connection", "Directory", "Party", "SchemaMismatch", "StoreUnavailable", "pack", "unpack"]
