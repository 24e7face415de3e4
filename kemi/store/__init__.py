"""The one place that speaks Redis. Key names: kemi.store.keys; layout: redis-schema/SCHEMA.md."""

from kemi.store.connection import Connection, SchemaMismatch, StoreRefused, StoreUnavailable, pack, unpack
from kemi.store.directory import Directory

__all__ = ["Connection", "Directory", "SchemaMismatch", "StoreRefused", "StoreUnavailable", "pack", "unpack"]
