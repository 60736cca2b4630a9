"""The one place where tests reach the head-end database with SQL, for what only SQL can do: a file at an older
schema (migration tests), a decoded row or a stored frame tampered with, a column that must be NULL, a pragma.
Everything else goes through the store's API (meterkit.store.api). sql() also runs a statement on an open
PostgresStore (its placeholders are %s there)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from meterkit.store.sqlite import SQLiteStore
from meterkit.store.sqlite.schema import migrate


def sql(db: str | os.PathLike | SQLiteStore | Any, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement and return its rows: on a database file in a connection of its own (committed at
    once), or on an open SQLiteStore's or PostgresStore's own connection (inside its transaction, if one is
    open)."""
    if isinstance(db, SQLiteStore):
        return [tuple(r) for r in db._conn.execute(statement, params)]
    from meterkit.store.postgres import PostgresStore

    if isinstance(db, PostgresStore):
        cur = db._conn.execute(statement, params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return [tuple(r) for r in conn.execute(statement, params)]
    finally:
        conn.close()


def old_database(path: str | os.PathLike, version: int, *statements: tuple[str, tuple[Any, ...]]) -> list[int]:
    """Bring a database file to schema `version` (the migrations up to it only), then run each (statement,
    params) on it; returns the versions applied."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        applied = migrate(conn, upto=version)
        for statement, params in statements:
            conn.execute(statement, params)
    finally:
        conn.close()
    return applied
