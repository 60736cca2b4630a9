"""One SQLite file opened for the store (WAL, synchronous=FULL, or read-only), its transactions, and what the table
groups (meterkit.store.tables, shared with PostgreSQL) need of it."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from meterkit.store.api import StoreError
from meterkit.store.rows import i64, in_items, registers_json
from meterkit.store.sqlite.schema import SCHEMA_VERSION, migrate, schema_version
from meterkit.store.tables.base import Tables

__all__ = ["Connection", "i64", "registers_json"]  # i64, registers_json: meterkit.store.rows's, as before

# --- the connection -------------------------------------------------------------------------------------------


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open: {e}") from None
    conn.row_factory = sqlite3.Row
    return conn


class Connection(Tables):
    """The file, opened: create=False refuses a path that does not exist (the read-only commands use that);
    readonly opens it without write access (no migration then: an old schema is refused)."""

    def __init__(self, path: str | os.PathLike, create: bool = True, synchronous: str = "FULL",
                 readonly: bool = False, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if (readonly or not create) and not self.path.exists():
            raise StoreError(f"{self.path}: no such database")
        self._conn = conn = _connect(self.path, readonly)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.migrated = [] if readonly else self._prepare(synchronous.upper())
            self.version = schema_version(conn)
            if readonly and self.version != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema v{self.version}, this meterkit reads v{SCHEMA_VERSION} "
                                 "(open it once for writing to migrate)")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{self.path}: not a meterkit database ({e})") from None
        except BaseException:
            conn.close()
            raise

    def _prepare(self, synchronous: str) -> list[int]:
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        self._conn.execute(f"PRAGMA synchronous = {synchronous}")
        return migrate(self._conn)

    # -- transactions
    def _begin(self, immediate: bool = False) -> sqlite3.Connection:
        """The open write transaction, begun if none is. immediate: take the write lock now (before the reads
        that decide what to write), so that no other process writes between them; an open transaction has
        written already, so it holds the lock."""
        c = self._conn
        if not c.in_transaction:
            c.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        return c

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def integrity_check(self) -> str:
        """PRAGMA integrity_check: 'ok', or its first complaints."""
        return "; ".join(r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall()[:5])

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._conn.close()

    # -- what the tables need (meterkit.store.tables.base.Tables)
    def _execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._begin().execute(sql, tuple(args))

    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        if not rows:
            return 0
        c = self._begin()
        before = c.total_changes
        c.executemany(sql, rows)
        return c.total_changes - before

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, tuple(args)).fetchall()

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self._conn.execute(sql, tuple(args)).fetchone()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> tuple[list[str], Iterable[Sequence[Any]]]:
        cur = self._conn.execute(sql, tuple(args))  # read as handed out
        return [d[0] for d in cur.description], cur

    in_list = staticmethod(in_items)

    def _insert_new(self, sql: str) -> str:
        return _or_ignore(sql)

    def _row_locks(self, clause: str) -> str:
        return ""  # BEGIN IMMEDIATE holds the whole database

    def _json_value(self, value: Any) -> Any:
        return value


@functools.lru_cache(maxsize=64)
def _or_ignore(sql: str) -> str:
    """INSERT OR IGNORE: skips a row that any constraint refuses (not only a duplicate key), as the store always
    has on SQLite."""
    assert sql.startswith("INSERT INTO "), sql
    return "INSERT OR IGNORE INTO " + sql[len("INSERT INTO "):]
