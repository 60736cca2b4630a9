"""One connection to a PostgreSQL database for the store: opened and migrated, its transactions, and what the
table groups (meterkit.store.tables, shared with SQLite) need of it. Their SQL has `?` placeholders: pg_sql turns
them into psycopg's %s; the fast bulk writes (postgres/bulk.py) write psycopg's SQL (%b) and run it as it is
(_execute_native).

Transactions as in the SQLite store: the connection runs in autocommit mode and the first write opens a
transaction (BEGIN), which commit() or rollback() ends; reads outside one see what is committed. Every statement's
parameters pass pg_text: a text with a NUL character (which PostgreSQL's text cannot hold, and which would spoil
the whole batch) is kept as None, as a number beyond 64 bits is. A statement that
fails inside a transaction spoils all of it in PostgreSQL: commit() then rolls back and raises StoreError, so
nothing is acknowledged that was not stored.

A lost connection (the server stopped, crashed or restarted; the network dropped it) raises StoreUnavailable.
Lost inside a transaction, the transaction is gone: every later statement of it and its commit() raise
StoreUnavailable too, until rollback() (or the failed commit) ends it; nothing of it was stored (a COMMIT whose
answer was lost may have been, which the caller cannot tell: it treats it as failed, and what was stored is
found again by its keys). Outside a transaction the next call reconnects, at most once per backoff delay
(RETRY_FIRST_S doubling to RETRY_MAX_S; a failed attempt raises StoreUnavailable at once until the delay is
over), and a statement that finds the connection dead before any transaction began (the server restarted while
it was idle) is run once more on a new one. docs/concentrator.md, "When PostgreSQL is down".
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.types.json import Jsonb

from meterkit.store.api import StoreError, StoreUnavailable
from meterkit.store.postgres.connect import Row, connect, first_line, params, pg_text, redacted
from meterkit.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from meterkit.store.tables.base import Tables

__all__ = ["Connection", "Row", "pg_sql", "pg_text"]

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.25  # after a failed reconnection, the next is tried no sooner than this, doubling up to ...
RETRY_MAX_S = 5.0
RECONNECT_TIMEOUT_S = 3  # libpq's connect_timeout when reconnecting: the concentrator's event loop waits on it


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """The tables' SQL as psycopg reads it: each ? a %s, a % doubled (no SQL of the tables has a ? inside a
    string literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _any(column: str, items: list) -> tuple[str, list]:
    return f"{column} = ANY(?)", [items]  # one array: one statement text whatever the number of items


class Connection(Tables):
    """The database, opened (and migrated unless readonly; a readonly store refuses an old schema). create=False
    refuses a database without a meterkit schema."""

    def __init__(self, url: str, create: bool = True, readonly: bool = False, connect_timeout_s: int = 10):
        self.url = url
        self._partitions: set[tuple[int, int]] = set()  # readings partitions known to exist (committed)
        self._new_partitions: set[tuple[int, int]] = set()  # ... made in the open transaction
        self.where_name = redacted(url)
        self._readonly = readonly
        self._connect_timeout_s = connect_timeout_s
        self._tx = False  # a transaction was begun and not yet ended (it may have been lost with the connection)
        self._lost_at: float | None = None  # when the connection was lost (monotonic), until it is back
        self._retry_at = 0.0  # no reconnection attempt before this (monotonic)
        self._retry_s = RETRY_FIRST_S
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
            if conn.broken:  # lost while opening (the server is shutting down): try again later
                raise StoreUnavailable(f"{self.where_name}: connection lost: {first_line(e)}") from None
            raise StoreError(f"{self.where_name}: not a usable meterkit database ({str(e).strip()})") from None
        except BaseException:
            conn.close()
            raise

    # -- the connection, lost and found
    def _live(self) -> psycopg.Connection:
        """The connection; reopened if it was lost, unless a transaction was lost with it (StoreUnavailable until
        it is ended)."""
        conn = self._conn
        if not conn.broken:
            return conn
        if self._tx:
            raise StoreUnavailable(f"{self.where_name}: connection lost in the middle of a transaction: rolled "
                                   "back, nothing of it stored")
        return self._reconnect()

    def _reconnect(self) -> psycopg.Connection:
        now = time.monotonic()
        if now < self._retry_at:
            raise StoreUnavailable(f"{self.where_name}: server unreachable since {now - (self._lost_at or now):.1f} "
                                   f"s; next attempt in {self._retry_at - now:.1f} s")
        try:
            conn = connect(self.url, min(self._connect_timeout_s, RECONNECT_TIMEOUT_S))
            if self._readonly:
                conn.execute("SET default_transaction_read_only = on")
        except (StoreError, psycopg.Error) as e:
            self._retry_at = now + self._retry_s
            log.warning("%s; next attempt in %.1f s", e, self._retry_s)
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            if isinstance(e, StoreError):
                raise
            raise StoreUnavailable(f"{self.where_name}: {first_line(e)}") from None
        log.warning("%s: connected again, %.1f s after the connection was lost", self.where_name,
                    now - (self._lost_at or now))
        self._conn, self._lost_at, self._retry_at, self._retry_s = conn, None, 0.0, RETRY_FIRST_S
        return conn

    def _note_lost(self, e: psycopg.Error) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("%s: connection lost (%s)%s", self.where_name, first_line(e),
                        ": the open transaction is rolled back" if self._tx else "")

    def _check_lost(self, e: psycopg.Error) -> None:
        """After a failed statement: StoreUnavailable (from e) when the connection is gone with it."""
        if not self._conn.broken:
            return
        self._note_lost(e)
        lost = ": rolled back, nothing of this transaction stored" if self._tx else ""
        raise StoreUnavailable(f"{self.where_name}: connection lost ({first_line(e)}){lost}") from e

    def _retried(self, run: Any) -> Any:
        """run(connection), once more on a new connection if the old one is found dead before any transaction
        began (a server restarted while this one was idle): nothing was done on it."""
        conn = self._live()
        try:
            return run(conn)
        except psycopg.OperationalError as e:
            if self._tx or not conn.broken:
                self._check_lost(e)
                raise
            self._note_lost(e)
        try:
            return run(self._reconnect())
        except psycopg.OperationalError as e:
            self._check_lost(e)
            raise

    # -- transactions
    def _status(self) -> pq.TransactionStatus:
        return self._conn.info.transaction_status

    def _begin(self, immediate: bool = False) -> psycopg.Connection:
        """The open transaction, begun if none is (immediate is SQLite's: the rows a transaction writes are locked
        by the statements themselves, FOR UPDATE where it must be before)."""
        if self._tx and not self._conn.broken:
            return self._conn
        conn = self._live()  # refuses a lost transaction
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            conn = self._retried(lambda c: c.execute("BEGIN").connection)
        self._tx = True
        return conn

    def _ended(self) -> None:
        self._tx = False
        self._new_partitions.clear()

    def commit(self) -> None:
        if self._conn.broken:
            lost = self._tx
            self._ended()
            if lost:
                raise StoreUnavailable(f"{self.where_name}: connection lost before the commit: rolled back, "
                                       "nothing of it stored")
            return
        status = self._status()
        if status == pq.TransactionStatus.INERROR:
            self.rollback()
            raise StoreError(f"{self.where_name}: a statement of this transaction failed: rolled back, nothing "
                             "of it stored")
        if status != pq.TransactionStatus.IDLE:
            try:
                self._conn.execute("COMMIT")
            except psycopg.Error as e:
                self._ended()
                if self._conn.broken:
                    self._note_lost(e)
                    raise StoreUnavailable(f"{self.where_name}: connection lost at the commit ({first_line(e)}): "
                                           "its outcome is unknown, taken as failed (what it stored, if anything, "
                                           "is found again by its keys)") from e
                raise
        self._tx = False
        self._partitions |= self._new_partitions
        self._new_partitions.clear()

    def rollback(self) -> None:
        self._ended()
        if self._conn.broken:
            return  # the server rolled it back (or never saw it)
        if self._status() in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            try:
                self._conn.execute("ROLLBACK")
            except psycopg.OperationalError as e:
                if not self._conn.broken:
                    raise
                self._note_lost(e)

    def close(self) -> None:
        try:
            if not self._conn.closed:
                self.rollback()
        finally:
            self._conn.close()

    # -- what the tables need (meterkit.store.tables.base.Tables)
    def _execute_native(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        """One statement in psycopg's SQL (%s, %b) in the open transaction (opening one)."""
        try:
            return self._begin().execute(sql, params(args))  # type: ignore[arg-type]
        except psycopg.OperationalError as e:
            self._check_lost(e)
            raise

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        return self._execute_native(pg_sql(sql), args)

    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        """executemany (psycopg pipelines it)."""
        if not rows:
            return 0
        try:
            with self._begin().cursor() as cur:
                cur.executemany(pg_sql(sql), [params(r) for r in rows])  # type: ignore[arg-type]
                return cur.rowcount
        except psycopg.OperationalError as e:
            self._check_lost(e)
            raise

    def _read(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        """A query, in the open transaction if there is one (else on its own)."""
        sql, p = pg_sql(sql), params(args)
        return self._retried(lambda c: c.execute(sql, p))  # type: ignore[arg-type]

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return self._read(sql, args).fetchall()  # type: ignore[return-value]

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        return self._read(sql, args).fetchone()  # type: ignore[return-value]

    def _query(self, sql: str, args: Iterable[Any] = ()) -> tuple[list[str], Iterable[Sequence[Any]]]:
        cur = self._read(sql, args)  # a client-side cursor: the rows are read at once
        return [d.name for d in cur.description or ()], cur.fetchall()

    in_list = staticmethod(_any)

    def _insert_new(self, sql: str) -> str:
        return sql + " ON CONFLICT DO NOTHING"

    def _row_locks(self, clause: str) -> str:
        return clause

    def _json_value(self, value: Any) -> Any:
        return Jsonb(pg_text(value))  # jsonb cannot hold a NUL either
