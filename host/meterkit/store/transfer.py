"""Moving a head-end from its SQLite file to a PostgreSQL database (`meterkit migrate`), and proving nothing was
lost on the way.

    copy_to_postgres(path, url, progress=None) -> Check   copy every table in one transaction, verify, commit
    verify_copy(path, url, progress=None) -> Check        the same verification of an earlier copy, read-only

The source is read in one read transaction (one consistent snapshot, even with a concentrator still writing to
it), read-only; its schema must be current (SQLITE_VERSION). The target is migrated to the current PostgreSQL
schema (its v1 is SQLite's v8, its v2 SQLite's v9) and must hold no row in any table: its tables are locked
(EXCLUSIVE: others may read) while the copy runs. Each table goes in with COPY, in key order, ids kept
(command_queue ids are what commands.queue_id, audit.queue_id and dr_targets.queue_id name); readings
partitions are made first, in the same transaction (meterkit.store.postgres.partitions); identity sequences are
then set past the largest id.

Verification, before the commit (a failed check rolls everything back: the target stays empty):

- every table, row by row in key order, equal on both sides (so the counts are, and the audit log is identical,
  and every frame's bytes are);
- every stored frame's COSE_Sign1 verifies again (meterkit.wire.verify_and_decode, as the concentrator does)
  against its meter's public key read from the copied meters table, and says what its row says (device, seq,
  kind, time).

A text holding a NUL character cannot be kept by PostgreSQL's text type; it is stored as NULL, as the PostgreSQL
store does (meterkit.store.postgres.base.pg_text), and counted in the report (Check.nul_texts). The signed frames
keep every value exactly.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from meterkit import wire
from meterkit.store.api import StoreError
from meterkit.store.postgres.base import pg_text
from meterkit.store.postgres.partitions import ReadingPartitions
from meterkit.store.sqlite.schema import SCHEMA_VERSION as SQLITE_VERSION
from meterkit.store.sqlite.schema import schema_version as sqlite_version

# Every table of SQLite's schema v9 (= PostgreSQL's v2), with the key both databases order it by (byte order on
# both: bytea and BLOB compare as memcmp, the text keys are COLLATE "C" in PostgreSQL). Parents before children.
TABLES: tuple[tuple[str, str], ...] = (
    ("meters", "device"),
    ("meter_keys", "device"),
    ("frames", "device, seq"),
    ("readings", "device, seq"),
    ("intervals", "device, end_time"),
    ("events", "device, seq"),
    ("billing", "device, seq"),
    ("command_queue", "id"),
    ("commands", "device, counter"),
    ("audit", "id"),
    ("gaps", "id"),
    ("outages", "id"),
    ("rejects", "device, peer, reason"),
    ("counters", "name"),
    ("dr_groups", "device, group_id"),
    ("dr_events", "id"),
    ("dr_targets", "event_id, device"),
    ("alerts", "id"),
)
BATCH = 5000  # rows per fetch on either side
EXAMPLES = 3  # differences (and bad signatures) named in the report, per table

Progress = Callable[[str], None]


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class TableCheck:
    """One table compared: rows on each side, rows only in the source (missing) or only in the target (extra),
    rows present on both sides but unequal (differing), and the first few of those in words."""

    table: str
    source: int = 0
    target: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.source == self.target and not (self.missing or self.extra or self.differing)

    def note(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


@dataclass
class Check:
    """What the verification found; ok only when every table is equal and every frame verifies."""

    source: str
    target: str
    tables: list[TableCheck] = field(default_factory=list)
    frames_verified: int = 0
    bad_frames: int = 0
    bad_examples: list[str] = field(default_factory=list)
    nul_texts: int = 0
    copy_s: float | None = None
    verify_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and self.bad_frames == 0

    def format(self) -> str:
        w = max(len(t.table) for t in self.tables) if self.tables else 5
        lines = [f"{'table':<{w}}  {'SQLite':>9}  {'PostgreSQL':>10}  check",
                 f"{'-' * w}  {'-' * 9}  {'-' * 10}  -----"]
        for t in self.tables:
            why = [f"{n} {what}" for n, what in ((t.missing, "missing"), (t.extra, "extra"),
                                                  (t.differing, "differing")) if n]
            lines.append(f"{t.table:<{w}}  {t.source:>9,}  {t.target:>10,}  "
                         f"{'equal' if t.ok else 'MISMATCH: ' + ', '.join(why or ['counts differ'])}")
            lines += [f"{'':<{w}}    {e}" for e in t.examples]
        lines.append(f"signatures: {self.frames_verified:,} frames verified against their meters' keys, "
                     f"{self.bad_frames:,} failed")
        lines += [f"  {e}" for e in self.bad_examples]
        if self.nul_texts:
            lines.append(f"note: {self.nul_texts} text value(s) held a NUL character, which PostgreSQL's text "
                         "cannot: stored as NULL, as the PostgreSQL store does (the signed frames keep them)")
        took = f"copied in {self.copy_s:.1f} s, " if self.copy_s is not None else ""
        lines.append(f"{took}verified in {self.verify_s:.1f} s: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


# --- the source: a SQLite file, read-only, one snapshot -----------------------------------------------------------


def open_source(path: str | Path) -> sqlite3.Connection:
    """The SQLite head-end read-only, inside one read transaction; StoreError when it is missing, not a meterkit
    database, or not at the current schema (with how to upgrade it)."""
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"{p}: no such database file")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"{p}: cannot open: {e}") from None
    try:
        conn.execute("BEGIN")  # one snapshot for the copy and its verification
        version = sqlite_version(conn)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreError(f"{p}: not a meterkit database ({e})") from None
    if version != SQLITE_VERSION:
        conn.close()
        if version == 0:
            raise StoreError(f"{p}: not a meterkit database (no schema_version table)")
        if version > SQLITE_VERSION:
            raise StoreError(f"{p}: schema v{version} is newer than this meterkit (v{SQLITE_VERSION}): upgrade "
                             "meterkit")
        raise StoreError(f"{p}: schema v{version}, meterkit migrate reads v{SQLITE_VERSION}. Upgrade it first: "
                         f"opening it for writing applies the migrations, e.g. `meterkit command list --db {p}` "
                         "(stop its concentrator and keep a copy of the file before)")
    return conn


def _source_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})")]


def _source_rows(src: sqlite3.Connection, table: str, cols: list[str], order: str) -> Iterator[tuple]:
    cur = src.execute(f"SELECT {', '.join(_q(c) for c in cols)} FROM {table} ORDER BY {order}")
    while rows := cur.fetchmany(BATCH):
        yield from rows


def _q(column: str) -> str:
    return f'"{column}"'  # outages."end": END is reserved in PostgreSQL


# --- the target: a PostgreSQL database --------------------------------------------------------------------------


class Target(ReadingPartitions):
    """The PostgreSQL database, opened (and migrated unless readonly) by the store's own connection, with what a
    bulk copy needs beside it."""

    def columns(self, table: str) -> dict[str, str]:
        """{column: PostgreSQL type name} in the table's order."""
        rows = self._rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                          "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))
        return {r[0]: r[1] for r in rows}

    def lock_empty(self, lock_timeout_s: float = 10.0) -> None:
        """Lock every table against writers (EXCLUSIVE, in the open transaction) and refuse unless all are
        empty."""
        c = self._begin()
        c.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
        try:
            c.execute(f"LOCK TABLE {', '.join(t for t, _ in TABLES)} IN EXCLUSIVE MODE")
        except psycopg.errors.LockNotAvailable:
            self.rollback()
            raise StoreError(f"{self.where_name}: its tables are in use (is a concentrator running on it?); "
                             "stop it and try again") from None
        full = [t for t, _ in TABLES if self._one(f"SELECT EXISTS (SELECT 1 FROM {t})")[0]]
        if full:
            self.rollback()
            raise StoreError(f"{self.where_name}: already holds data (in {', '.join(full)}): meterkit migrate "
                             "fills an empty database only; nothing was changed")

    def copy_rows(self, table: str, cols: list[str], types: list[str], rows: Iterable[tuple]) -> int:
        """COPY the rows into the table (in the open transaction); returns how many."""
        conv = [_jsonb if t == "jsonb" else pg_text if t == "text" else None for t in types]
        n = 0
        with self._begin().cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(_q(c) for c in cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row([v if f is None or v is None else f(v) for f, v in zip(conv, row, strict=True)])
                n += 1
        return n

    def make_reading_partitions(self, day_starts: Iterable[int]) -> None:
        """The readings partitions for meter times on these UTC days (a day lies in one month)."""
        self._ensure_partitions(day_starts)

    def reset_sequences(self) -> None:
        """Identity columns continue after the largest id copied (setval is not transactional: harmless)."""
        for table, _ in TABLES:
            seq = self._one("SELECT pg_get_serial_sequence(?, 'id')", (table,)) if "id" in self.columns(table) \
                else None
            if seq is not None and seq[0] is not None:
                self._execute(f"SELECT setval(?, max(id)) FROM {table} HAVING max(id) IS NOT NULL", (seq[0],))

    def rows(self, table: str, cols: list[str], order: str) -> Iterator[tuple]:
        """The table in key order, through a server-side cursor (in the open transaction)."""
        with self._begin().cursor(name=f"transfer_{table}", row_factory=tuple_row) as cur:
            cur.itersize = BATCH
            cur.execute(f"SELECT {', '.join(_q(c) for c in cols)} FROM {table} ORDER BY {order}")
            yield from cur


def _jsonb(v: Any) -> Jsonb:
    return Jsonb(pg_text(v))  # events.value: an integer, or a text (jsonb cannot hold a NUL either)


def _open_target(url: str, readonly: bool) -> Target:
    return Target(url, create=not readonly, readonly=readonly)


def _pg_error(target: Target, e: psycopg.Error) -> StoreError:
    return StoreError(f"{target.where_name}: {str(e).strip()}; rolled back, nothing stored")


# --- copy -------------------------------------------------------------------------------------------------------


def _columns(src: sqlite3.Connection, dst: Target) -> dict[str, tuple[list[str], list[str]]]:
    """{table: (columns, PostgreSQL types)}; StoreError when the two schemas do not hold the same tables and
    columns (nothing may be left behind)."""
    have = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                      "'sqlite_%' AND name != 'schema_version'")}
    unknown = have - {t for t, _ in TABLES}
    if unknown:
        raise StoreError(f"the SQLite file has tables this migration does not know: {', '.join(sorted(unknown))}")
    out = {}
    for table, _ in TABLES:
        cols, pg = _source_columns(src, table), dst.columns(table)
        if set(cols) != set(pg):
            raise StoreError(f"table {table}: the columns differ (only in SQLite: {sorted(set(cols) - set(pg))}, "
                             f"only in PostgreSQL: {sorted(set(pg) - set(cols))})")
        out[table] = (cols, [pg[c] for c in cols])
    return out


def _copy(src: sqlite3.Connection, dst: Target, layout: dict, progress: Progress) -> None:
    days = [r[0] for r in src.execute("SELECT DISTINCT meter_time - ((meter_time % 86400) + 86400) % 86400 "
                                      "FROM readings")]
    dst.make_reading_partitions(days)
    for table, order in TABLES:
        t0 = time.perf_counter()
        cols, types = layout[table]
        n = dst.copy_rows(table, cols, types, _source_rows(src, table, cols, order))
        progress(f"  {table}: {n:,} rows copied in {time.perf_counter() - t0:.1f} s")
    dst.reset_sequences()


def copy_to_postgres(path: str | Path, url: str, progress: Progress | None = None) -> Check:
    """Copy the SQLite head-end at `path` into the empty PostgreSQL database at `url` and verify the copy in the
    same transaction: committed only when the check is ok (else rolled back: the target stays empty). Returns
    the Check; StoreError when the copy cannot start or fails (then nothing is stored)."""
    say = progress or (lambda _: None)
    src = open_source(path)
    try:
        with _open_target(url, readonly=False) as dst:
            try:
                dst.lock_empty()
                layout = _columns(src, dst)
                say(f"copying {path} -> {dst.where_name} (one transaction)")
                t0 = time.perf_counter()
                _copy(src, dst, layout, say)
                copy_s = time.perf_counter() - t0
                say("verifying (rows, frame bytes, signatures, audit log) before the commit")
                check = _verify(src, dst, str(path), layout)
                check.copy_s = copy_s
                if check.ok:
                    dst.commit()
                else:
                    dst.rollback()
            except psycopg.Error as e:
                dst.rollback()
                raise _pg_error(dst, e) from None
            except BaseException:
                dst.rollback()
                raise
        return check
    finally:
        src.close()


def verify_copy(path: str | Path, url: str, progress: Progress | None = None) -> Check:
    """Verify an earlier copy of `path` at `url` without writing either."""
    src = open_source(path)
    try:
        with _open_target(url, readonly=True) as dst:
            try:
                layout = _columns(src, dst)
                (progress or (lambda _: None))(f"verifying {dst.where_name} against {path}")
                return _verify(src, dst, str(path), layout)
            except psycopg.Error as e:
                raise _pg_error(dst, e) from None
    finally:
        src.close()


# --- verify -----------------------------------------------------------------------------------------------------


def _verify(src: sqlite3.Connection, dst: Target, source_name: str, layout: dict) -> Check:
    t0 = time.perf_counter()
    check = Check(source_name, dst.where_name)
    keys = _meter_keys(dst)
    for table, order in TABLES:
        cols, types = layout[table]
        key_at = [cols.index(k) for k in order.split(", ")]
        text_at = [i for i, t in enumerate(types) if t in ("text", "jsonb")]
        frames = _FrameVerifier(check, keys, cols) if table == "frames" else None
        source = _source_side(src, table, cols, order, text_at, check)
        check.tables.append(_compare(table, key_at, source, dst.rows(table, cols, order), frames))
    check.verify_s = time.perf_counter() - t0
    return check


def _source_side(src: sqlite3.Connection, table: str, cols: list[str], order: str, text_at: list[int],
                 check: Check) -> Iterator[tuple]:
    """The source rows as PostgreSQL keeps them: a text with a NUL as None (counted)."""
    for row in _source_rows(src, table, cols, order):
        for i in text_at:
            v = row[i]
            if type(v) is str and "\x00" in v:
                check.nul_texts += 1
                row = (*row[:i], None, *row[i + 1:])
        yield row


def _compare(table: str, key_at: list[int], source: Iterator[tuple], target: Iterator[tuple],
             on_target: _FrameVerifier | None) -> TableCheck:
    """Both sides walked together in key order."""
    t = TableCheck(table)
    s, d = next(source, None), next(target, None)
    while s is not None or d is not None:
        ks = None if s is None else tuple(s[i] for i in key_at)
        kd = None if d is None else tuple(d[i] for i in key_at)
        if d is None or (ks is not None and ks < kd):
            t.source += 1
            t.missing += 1
            t.note(f"only in SQLite: {_key_text(ks)}")
            s = next(source, None)
            continue
        t.target += 1
        if on_target is not None:
            on_target(d)
        if s is None or kd < ks:
            t.extra += 1
            t.note(f"only in PostgreSQL: {_key_text(kd)}")
        else:
            t.source += 1
            if s != d and not all(_same(a, b) for a, b in zip(s, d, strict=True)):
                t.differing += 1
                t.note(f"differs: {_key_text(ks)}")
            s = next(source, None)
        d = next(target, None)
    return t


def _same(a: Any, b: Any) -> bool:
    return a == b or (type(a) is float and type(b) is float and math.isnan(a) and math.isnan(b))


def _key_text(key: tuple | None) -> str:
    return ", ".join(k.hex() if isinstance(k, bytes) else repr(k) for k in key or ())


def _meter_keys(dst: Target) -> dict[bytes, Any]:
    """{device: public key} of the copied meters table (a key that is no P-256 point, or is not the device's,
    is left out: its frames then fail)."""
    keys = {}
    for dev, point in dst._rows("SELECT device, public_key FROM meters"):
        try:
            pub = wire.public_from_bytes(bytes(point))
        except ValueError:
            continue
        if wire.key_id(bytes(point)) == bytes(dev):
            keys[bytes(dev)] = pub
    return keys


class _FrameVerifier:
    """Each copied frame's signature checked as the concentrator checks it, and its decoded header against its
    row."""

    def __init__(self, check: Check, keys: dict[bytes, Any], cols: list[str]):
        self.check, self.lookup = check, keys.get
        self.at = [cols.index(c) for c in ("device", "seq", "kind", "meter_time", "raw")]

    def __call__(self, row: tuple) -> None:
        dev, seq, kind, t, raw = (row[i] for i in self.at)
        try:
            m = wire.verify_and_decode(bytes(raw), self.lookup)
            why = None if (m.device_id, m.seq, m.kind, m.time) == (bytes(dev), seq, kind, t) else \
                f"signed as device {m.device_id.hex()} seq {m.seq} kind {m.kind} time {m.time}, stored otherwise"
        except wire.ProtocolError as e:
            why = f"{e.reason}: {e}"
        if why is None:
            self.check.frames_verified += 1
            return
        self.check.bad_frames += 1
        if len(self.check.bad_examples) < EXAMPLES:
            self.check.bad_examples.append(f"frame {bytes(dev).hex()} seq {seq}: {why}")
