"""The one place that speaks Redis. Key names: kemi.store.keys; layout: redis-schema/SCHEMA.md."""

from kemi.store.connection import Connection, SchemaMismatch, StoreRefused, StoreUnavailable, pack, unpack
from kemi.store.directory import Directory, Party

__all__ = ["Connection", "Directory", "Party", "SchemaMismatch", "StoreRefused", "StoreUnavailable", "pack", "unpack"]
