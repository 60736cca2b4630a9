"""One connection to a PostgreSQL database for the store: opened and migrated, its transactions, and what every
table does with it (the conversions between records and rows are meterkit.store.rows, shared with SQLite).

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

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq

from meterkit.store.api import StoreError, StoreUnavailable
from meterkit.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from meterkit.store.rows import checked_fields

log = logging.getLogger(__name__)


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


RETRY_FIRST_S = 0.25  # after a failed reconnection, the next is tried no sooner than this, doubling up to ...
RETRY_MAX_S = 5.0
RECONNECT_TIMEOUT_S = 3  # libpq's connect_timeout when reconnecting: the concentrator's event loop waits on it
# libpq's TCP settings unless the URL gives its own: a server whose host vanished without a reset (power, network)
# is noticed within about half a minute, not after the kernel's retransmissions (~15 min)
TCP_DEFAULTS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                "tcp_user_timeout": 30000}
# what a failed connection attempt says when trying again later may help: the server did not answer (refused,
# timed out, no route, its socket missing, its name not resolved now), or it answered that it is starting,
# stopping or full. Anything else is final (no such database or role, authentication, a URL that cannot be read).
_TRANSIENT = ("Connection refused", "timeout expired", "timed out", "No such file or directory", "No route to host",
              "Network is unreachable", "Host is unreachable", "Connection reset", "closed the connection",
              "could not translate host name", "could not receive data", "starting up", "shutting down",
              "recovery mode", "too many clients", "connection slots are reserved", "not yet accepting connections")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def unreachable(e: psycopg.Error) -> bool:
    """Whether a failed connection attempt may succeed later (_TRANSIENT)."""
    text = str(e)
    return isinstance(e, psycopg.OperationalError) and any(t in text for t in _TRANSIENT)


def connect(url: str, connect_timeout_s: int = 10) -> psycopg.Connection:
    """A connection in autocommit mode; StoreUnavailable when the server cannot be reached (now), StoreError
    when it refuses us."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
        tcp = {k: v for k, v in TCP_DEFAULTS.items() if k not in info}
        conn = psycopg.connect(url, autocommit=True, row_factory=row_factory, connect_timeout=connect_timeout_s,
                               **tcp)
    except psycopg.Error as e:
        if unreachable(e):
            raise StoreUnavailable(f"{_redacted(url)}: server unreachable: {_first_line(e)}") from None
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
                raise StoreUnavailable(f"{self.where_name}: connection lost: {_first_line(e)}") from None
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
            raise StoreUnavailable(f"{self.where_name}: {_first_line(e)}") from None
        log.warning("%s: connected again, %.1f s after the connection was lost", self.where_name,
                    now - (self._lost_at or now))
        self._conn, self._lost_at, self._retry_at, self._retry_s = conn, None, 0.0, RETRY_FIRST_S
        return conn

    def _note_lost(self, e: psycopg.Error) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("%s: connection lost (%s)%s", self.where_name, _first_line(e),
                        ": the open transaction is rolled back" if self._tx else "")

    def _check_lost(self, e: psycopg.Error) -> None:
        """After a failed statement: StoreUnavailable (from e) when the connection is gone with it."""
        if not self._conn.broken:
            return
        self._note_lost(e)
        lost = ": rolled back, nothing of this transaction stored" if self._tx else ""
        raise StoreUnavailable(f"{self.where_name}: connection lost ({_first_line(e)}){lost}") from e

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

    def _begin(self) -> psycopg.Connection:
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
                    raise StoreUnavailable(f"{self.where_name}: connection lost at the commit ({_first_line(e)}): "
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

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the tables share
    def _execute(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        """One statement in the open transaction (opening one)."""
        try:
            return self._begin().execute(sql, params(args))  # type: ignore[arg-type]
        except psycopg.OperationalError as e:
            self._check_lost(e)
            raise

    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        """executemany in the open transaction; returns how many rows it changed (ON CONFLICT DO NOTHING: the new)."""
        if not rows:
            return 0
        try:
            with self._begin().cursor() as cur:
                cur.executemany(sql, [params(r) for r in rows])  # type: ignore[arg-type]
                return cur.rowcount
        except psycopg.OperationalError as e:
            self._check_lost(e)
            raise

    def _read(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        """A query, in the open transaction if there is one (else on its own)."""
        p = params(args)
        return self._retried(lambda c: c.execute(sql, p))  # type: ignore[arg-type]

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return self._read(sql, args).fetchall()  # type: ignore[return-value]

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        return self._read(sql, args).fetchone()  # type: ignore[return-value]

    def _set(self, table: str, key: str, key_value: Any, fields: dict[str, Any], allowed: frozenset[str],
             what: str) -> None:
        """UPDATE table SET fields WHERE key = key_value (fields checked against `allowed`; flags as 0/1)."""
        if checked_fields(fields, allowed, what):
            sets = ", ".join(f"{k} = %s" for k in fields)
            values = [int(v) if type(v) is bool else v for v in fields.values()]
            self._execute(f"UPDATE {table} SET {sets} WHERE {key} = %s", (*values, key_value))
