"""The store on one SQLite file: WAL mode, so `meterkit status` reads while the concentrator writes; with
synchronous=FULL (the default) a returned commit has reached the disk.

    schema     the tables, MIGRATIONS (ordered, append only), migrate(), schema_version()
    base       opening (WAL, synchronous, read-only), transactions, what the table groups need (BEGIN IMMEDIATE,
               INSERT OR IGNORE, IN lists)

``SQLiteStore`` is the table groups (meterkit.store.tables, shared with PostgreSQL) over that connection: it
implements meterkit.store.api.Store.
"""

from __future__ import annotations

from meterkit.store.sqlite.base import Connection
from meterkit.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from meterkit.store.tables import TableGroups

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]


class SQLiteStore(TableGroups, Connection):
    """The head-end store on one SQLite file.

    SQLiteStore(path, create=True, synchronous="FULL", readonly=False, busy_timeout_ms=5000): create=False
    refuses a path that does not exist, readonly opens without write access (and refuses an old schema).
    """
