"""One connection to a PostgreSQL database for the store: opened and migrated, its transactions, and what every
table does with it (the conversions between records and rows are meterkit.store.rows, shared with SQLite).

Transactions as in the SQLite store: the connection runs in autocommit mode and the first write opens a
transaction (BEGIN), which commit() or rollback() ends; reads outside one see what is committed. Every statement's
parameters pass pg_text: a text with a NUL character (which PostgreSQL's text cannot hold, and which would spoil
the whole batch) is kept as None, as a number beyond 64 bits is. A statement that
fails inside a transaction spoils all of it in PostgreSQL: commit() then rolls back and raises StoreError, so
nothing is acknowledged that was not stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq

from meterkit.store.api import StoreError
from meterkit.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from meterkit.store.rows import checked_fields


def pg_text(v: Any) -> Any:
    """v, but None for a text PostgreSQL cannot hold (one with a NUL character; SQLite can): as for integers
    beyond 64 bits, the stored frame keeps the exact value."""
    return None if type(v) is str and "\x00" in v else v


def params(args: Iterable[Any]) -> tuple:
    return tuple(pg_text(a) for a in args)


class Row(tuple):
    """A result row by position and by column name, like sqlite3.Row."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def row_factory(cursor: Any) -> Any:
    desc = cursor.description or ()
    index = {d.name: i for i, d in enumerate(desc)}
    return lambda values: Row(values, index)


def _redacted(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"


def connect(url: str, connect_timeout_s: int = 10) -> psycopg.Connection:
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=row_factory, connect_timeout=connect_timeout_s)
    except psycopg.Error as e:
        raise StoreError(f"{_redacted(url)}: cannot connect: {str(e).strip()}") from None
    return conn


class Connection:
    """The database, opened (and migrated unless readonly; a readonly store refuses an old schema). create=False
    refuses a database without a meterkit schema."""

    placeholder = "%s"

    def __init__(self, url: str, create: bool = True, readonly: bool = False, connect_timeout_s: int = 10):
        self.url = url
        self._partitions: set[tuple[int, int]] = set()  # readings partitions known to exist (committed)
        self._new_partitions: set[tuple[int, int]] = set()  # ... made in the open transaction
        self.where_name = _redacted(url)
        self._conn = conn = connect(url, connect_timeout_s)
        try:
            self.version = schema_version(conn)
            if not create and self.version == 0:
                raise StoreError(f"{self.where_name}: no meterkit database there")
            self.migrated = [] if readonly else migrate(conn)
            self.version = schema_version(conn)
            if self.version != SCHEMA_VERSION:
                raise StoreError(f"{self.where_name}: schema v{self.version}, this meterkit reads "
                                 f"v{SCHEMA_VERSION} (open it once for writing to migrate)")
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as e:
            conn.close()
            raise StoreError(f"{self.where_name}: not a usable meterkit database ({str(e).strip()})") from None
        except BaseException:
            conn.close()
            raise

    # -- transactions
    def _status(self) -> pq.TransactionStatus:
        return self._conn.info.transaction_status

    def _begin(self) -> psycopg.Connection:
        if self._status() == pq.TransactionStatus.IDLE:
            self._conn.execute("BEGIN")
        return self._conn

    def commit(self) -> None:
        status = self._status()
        if status == pq.TransactionStatus.INERROR:
            self.rollback()
            raise StoreError(f"{self.where_name}: a statement of this transaction failed: rolled back, nothing "
                             "of it stored")
        if status != pq.TransactionStatus.IDLE:
            self._conn.execute("COMMIT")
        self._partitions |= self._new_partitions
        self._new_partitions.clear()

    def rollback(self) -> None:
        self._new_partitions.clear()
        if self._status() in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        try:
            if not self._conn.closed:
                self.rollback()
        finally:
            self._conn.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the tables share
    def _execute(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        """One statement in the open transaction (opening one)."""
        return self._begin().execute(sql, params(args))  # type: ignore[arg-type]

    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        """executemany in the open transaction; returns how many rows it changed (ON CONFLICT DO NOTHING: the new)."""
        if not rows:
            return 0
        with self._begin().cursor() as cur:
            cur.executemany(sql, [params(r) for r in rows])  # type: ignore[arg-type]
            return cur.rowcount

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params(args)).fetchall()  # type: ignore[arg-type,return-value]

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        return self._conn.execute(sql, params(args)).fetchone()  # type: ignore[arg-type,return-value]

    def _set(self, table: str, key: str, key_value: Any, fields: dict[str, Any], allowed: frozenset[str],
             what: str) -> None:
        """UPDATE table SET fields WHERE key = key_value (fields checked against `allowed`; flags as 0/1)."""
        if checked_fields(fields, allowed, what):
            sets = ", ".join(f"{k} = %s" for k in fields)
            values = [int(v) if type(v) is bool else v for v in fields.values()]
            self._execute(f"UPDATE {table} SET {sets} WHERE {key} = %s", (*values, key_value))
