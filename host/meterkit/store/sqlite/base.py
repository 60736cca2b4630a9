"""One SQLite file opened for the store (WAL, synchronous=FULL, or read-only), its transactions, and the
conversions between records and columns that every table shares."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from meterkit import wire
from meterkit.store.api import StoreError
from meterkit.store.sqlite.schema import SCHEMA_VERSION, migrate, schema_version

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def i64(v: Any) -> int | None:
    """v if SQLite can store it as an INTEGER, else None (the raw frame keeps the exact value)."""
    return v if v is not None and I64_MIN <= v <= I64_MAX else None


def where(*conditions: tuple[str, Any]) -> tuple[str, list]:
    """(' WHERE a AND b', parameters) of the (condition, value) pairs whose value is not None or False: a
    condition ending in ' IN' gets one placeholder per item of its value, one with '?' the value, one without
    none (a flag)."""
    parts, args = [], []
    for sql, value in conditions:
        if value is None or value is False:
            continue
        if sql.endswith(" IN"):
            items = list(value)
            parts.append(f"{sql} ({', '.join('?' * len(items))})")
            args.extend(items)
        else:
            parts.append(sql)
            if "?" in sql:
                args.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


# --- JSON columns ---------------------------------------------------------------------------------------------

_OBIS: dict[int, str] = {}  # register key -> 'C.D.E'
_REGS_FMT: dict[tuple, str] = {}  # register key set -> JSON template (a meter sends the same set every time)


def _obis(k: int) -> str:
    s = _OBIS.get(k)
    if s is None:
        s = _OBIS[k] = wire.obis_code(k)
    return s


def registers_json(regs: dict[int, int]) -> str:
    """{10800: 5, 20800: 1} -> '{"1.8.0": 5, "2.8.0": 1}' (what json.dumps gives, at a third of its cost)."""
    keys = tuple(regs)
    fmt = _REGS_FMT.get(keys)
    if fmt is None:
        if len(_REGS_FMT) > 1000:
            _REGS_FMT.clear()
        fmt = _REGS_FMT[keys] = "{" + ", ".join(f'"{_obis(k)}": %d' for k in keys) + "}"
    return fmt % tuple(regs.values())


def registers_of(text: str) -> dict[int, int]:
    """The inverse of registers_json."""
    return {wire.obis_key(k): v for k, v in json.loads(text).items()}


def demand_json(md: dict[int, tuple[int, int]]) -> str | None:
    """Maximum demands {1.6.t key: (W, time)} as JSON by OBIS code; None when there are none."""
    return json.dumps({_obis(k): list(v) for k, v in md.items()}) if md else None


def demand_of(text: str | None) -> dict[int, tuple[int, int]]:
    return {wire.obis_key(k): (v[0], v[1]) for k, v in json.loads(text).items()} if text else {}


def args_json(args: dict | None, sort: bool = False) -> str | None:
    """Command arguments {uint: value} as JSON text (keys become text; values must be JSON types)."""
    if not args:
        return None
    return json.dumps(args, sort_keys=True, ensure_ascii=False) if sort else json.dumps(args)


def args_of(text: str | None) -> dict | None:
    """The inverse of args_json: top-level keys back to ints."""
    if not text:
        return None
    return {int(k): v for k, v in json.loads(text).items()}


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


class Connection:
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
    def _begin(self) -> sqlite3.Connection:
        c = self._conn
        if not c.in_transaction:
            c.execute("BEGIN")
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

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the tables share
    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        """executemany in the open transaction; returns how many rows it changed (INSERT OR IGNORE: the new)."""
        c = self._begin()
        before = c.total_changes
        c.executemany(sql, rows)
        return c.total_changes - before

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, tuple(args)).fetchall()

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self._conn.execute(sql, tuple(args)).fetchone()

    def _set(self, table: str, key: str, key_value: Any, fields: dict[str, Any], allowed: frozenset[str],
             what: str) -> None:
        """UPDATE table SET fields WHERE key = key_value (fields checked against `allowed`)."""
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown {what} fields {sorted(bad)}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self._begin().execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", (*fields.values(), key_value))
