"""The head-end's database: what meters reported (the signed frames as evidence, and the records decoded from
them), the registry, delivery state, gaps, outages, commands and counts.

    api        the interface: small protocols by what they keep (Registry, Delivery, Evidence, Profile, Events,
               Billing, Outages, Commands, Counting, DemandResponse, ReadOuts, Transactions); Store is their
               union
    records    the store's records (MeterRecord, GapRecord, QueuedCommand, IntervalRecord, ...)
    rows       what both implementations share: conversions between records and rows, checks, WHERE clauses
    tables/    the table groups, one module each, written once in SQL both databases read, over ...
    sqlite/    ... the SQLite connection (and the schema and its migrations)
    postgres/  ... the PostgreSQL one (psycopg 3; its schema, readings partitioned by time, its bulk writes)

open_store(path or postgresql:// URL) opens a store; callers use it through api.Store and never see SQL (tests
too, but for their one helper, meterkit.testing.sqlfile: an older schema, a tampered row, a NULL column, a
pragma).

May import: meterkit.wire and the standard library; sqlite3 and psycopg only inside this package. Nothing else
of meterkit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from meterkit.store.api import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from meterkit.store.api import Store

__all__ = ["StoreError", "StoreUnavailable", "is_url", "open_store"]


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names a PostgreSQL database (a postgresql:// or postgres:// URL) rather than a file."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def open_store(path: str | os.PathLike, *, create: bool = True, readonly: bool = False,
               synchronous: str = "FULL") -> Store:
    """The store in a database file, or (a postgresql:// URL) in a PostgreSQL database: created (a file) and
    migrated as needed (create=False: it must exist and, a database, hold a meterkit schema; readonly: never
    written, and refused unless its schema is current). synchronous is SQLite's (PostgreSQL's commit is durable
    by its own settings). StoreError when it cannot be used."""
    if is_url(path):
        from meterkit.store.postgres import PostgresStore

        return PostgresStore(str(path), create=create, readonly=readonly)
    from meterkit.store.sqlite import SQLiteStore

    return SQLiteStore(path, create=create, readonly=readonly, synchronous=synchronous)
