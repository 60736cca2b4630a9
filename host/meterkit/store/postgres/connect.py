"""Talking to the PostgreSQL server: connecting (libpq's TCP keepalives, which failures are worth another try),
and the values going in (pg_text) and rows coming out (Row, like sqlite3.Row)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from meterkit.store.api import StoreError, StoreUnavailable


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


def redacted(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"


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


def first_line(e: BaseException) -> str:
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
            raise StoreUnavailable(f"{redacted(url)}: server unreachable: {first_line(e)}") from None
        raise StoreError(f"{redacted(url)}: cannot connect: {str(e).strip()}") from None
    return conn
