"""The head-end's database: what meters reported, as signed evidence and as decoded rows.

(Named `db`, not `store`, so that nobody mistakes it for the meter's own flash persistence, meter/store.py.)

``Store`` is the interface the concentrator and the fleet commands use; ``SQLiteStore`` implements it on one
SQLite file in WAL mode, so `meterkit status` can read while the concentrator writes. A server database can
implement ``Store`` later without touching the concentrator.

Transactions: every write method joins the transaction in progress (opening one if needed); nothing is durable
until ``commit()``. The concentrator writes one ingested batch per transaction and sends acknowledgements only
after ``commit()`` returned: with ``synchronous=FULL`` (the default) a returned commit has reached the disk.

Schema (versioned: table ``schema_version``; ``MIGRATIONS`` are applied in order when a file is opened):

meters     device (8-byte id, key), public_key (65-byte point), name, provisioned_at, reporting_period_s,
           last_seen (receive time of the newest frame, concentrator clock), last_counter (last command/ack
           counter signed for it), firmware, board, boot_count (latest hello)              -- v1
           ack_seq (cumulative ack watermark), first_seq (first sequence number stored), online,
           frames_stored                                                                    -- v2
frames     device, seq, kind, meter_time, status, received_at, raw (the COSE_Sign1 as received: evidence);
           PRIMARY KEY (device, seq) -- the dedupe authority
readings   device, seq, meter_time, status, import_wh (1.8.0), export_wh (2.8.0), registers (JSON, by OBIS
           code), power_mw, voltage_mv, current_ma, uncovered_ppm
intervals  device, end_time, import_mwh, export_mwh, status, period_s, seq (the frame that carried the row);
           PRIMARY KEY (device, end_time)
events     device, seq, event_seq, code, value, event_time
billing    device, seq, period_end, registers (JSON), max_demand (JSON)
commands   device, counter, op, args (JSON), sent_at, expires_at, answered_at, result, reason
rejects    device (claimed id, or x'' when none could be read), peer, reason, count, first_at, last_at,
           last_detail
outages    id, device, start (last frame before the silence), detected_at, end (first frame after), cause
           ('power', 'communication', 'power+communication', 'unknown'), power_up_at (meter's own time of
           its restart), evidence (JSON)                                                    -- v2
gaps       id, device, kind ('frames': sequence numbers, 'intervals': load-profile end times), first, last,
           detected_at, state ('open', 'requested', 'filled', 'resolved', 'skipped', 'lost', 'not-sent'),
           requested_at, command_counter, attempts, missing, closed_at                       -- v2
counters   name, value: the concentrator's counters, persisted across restarts              -- v2
command_queue  id, device, op, args (JSON, top-level keys as text), created_at, expires_at (UTC s: never sent
           at or after it), state ('queued', 'sent', 'answered', 'expired', 'failed'), counter (of the latest
           attempt), attempts, sent_at (latest attempt), answered_at, result, reason, note (who or what
           queued it)                                                                        -- v3
commands   + queue_id: the command_queue entry an attempt carried (NULL: the concentrator's own back-fill)
                                                                                             -- v3

Integers that SQLite cannot hold (outside signed 64 bits; the protocol allows uint64) are stored as NULL in
the decoded columns; the raw frame keeps the exact value.
"""

from __future__ import annotations

import abc
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meterkit import wire as P

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
DEFAULT_PERIOD_S = 60

# --- schema -------------------------------------------------------------------------------------------------

_V1 = (
    """CREATE TABLE meters (
        device BLOB PRIMARY KEY,
        public_key BLOB NOT NULL,
        name TEXT,
        provisioned_at REAL NOT NULL,
        reporting_period_s INTEGER NOT NULL DEFAULT 60,
        last_seen REAL,
        last_counter INTEGER NOT NULL DEFAULT 0,
        firmware TEXT,
        board TEXT,
        boot_count INTEGER
    )""",
    """CREATE TABLE frames (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        meter_time INTEGER NOT NULL,
        status INTEGER,
        received_at REAL NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE readings (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        meter_time INTEGER NOT NULL,
        status INTEGER,
        import_wh INTEGER,
        export_wh INTEGER,
        registers TEXT NOT NULL,
        power_mw INTEGER,
        voltage_mv INTEGER,
        current_ma INTEGER,
        uncovered_ppm INTEGER,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE intervals (
        device BLOB NOT NULL,
        end_time INTEGER NOT NULL,
        import_mwh INTEGER,
        export_mwh INTEGER,
        status INTEGER,
        period_s INTEGER,
        seq INTEGER NOT NULL,
        PRIMARY KEY (device, end_time)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        event_seq INTEGER,
        code INTEGER,
        value,
        event_time INTEGER,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE commands (
        device BLOB NOT NULL,
        counter INTEGER NOT NULL,
        op INTEGER NOT NULL,
        args TEXT,
        sent_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        answered_at REAL,
        result INTEGER,
        reason TEXT,
        PRIMARY KEY (device, counter)
    )""",
    """CREATE TABLE rejects (
        device BLOB NOT NULL DEFAULT x'',
        peer TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        last_detail TEXT,
        PRIMARY KEY (device, peer, reason)
    )""",
)

_V2 = (
    "ALTER TABLE meters ADD COLUMN ack_seq INTEGER",
    "ALTER TABLE meters ADD COLUMN first_seq INTEGER",
    "ALTER TABLE meters ADD COLUMN online INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE meters ADD COLUMN frames_stored INTEGER NOT NULL DEFAULT 0",
    # data written under v1 keeps counting: frames stored so far, and the contiguous run from the first one
    "UPDATE meters SET frames_stored = (SELECT count(*) FROM frames f WHERE f.device = meters.device)",
    "UPDATE meters SET first_seq = (SELECT min(seq) FROM frames f WHERE f.device = meters.device)",
    """UPDATE meters SET ack_seq = (
        SELECT min(f.seq) FROM frames f WHERE f.device = meters.device
        AND NOT EXISTS (SELECT 1 FROM frames g WHERE g.device = f.device AND g.seq = f.seq + 1))""",
    """CREATE TABLE billing (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        registers TEXT NOT NULL,
        max_demand TEXT,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE outages (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        start REAL NOT NULL,
        detected_at REAL NOT NULL,
        end REAL,
        cause TEXT,
        power_up_at INTEGER,
        evidence TEXT
    )""",
    "CREATE INDEX outages_device ON outages (device, start)",
    """CREATE TABLE gaps (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        kind TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        detected_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'open',
        requested_at REAL,
        command_counter INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        missing INTEGER,
        closed_at REAL,
        UNIQUE (device, kind, first)
    )""",
    "CREATE INDEX gaps_state ON gaps (state, device)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

_V3 = (
    """CREATE TABLE command_queue (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        op INTEGER NOT NULL,
        args TEXT,
        created_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        counter INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL,
        answered_at REAL,
        result INTEGER,
        reason TEXT,
        note TEXT
    )""",
    "CREATE INDEX command_queue_state ON command_queue (state, device, id)",
    "CREATE INDEX command_queue_device ON command_queue (device, id)",
    "ALTER TABLE commands ADD COLUMN queue_id INTEGER",
    "CREATE INDEX commands_queue ON commands (queue_id)",
)

# (version, what it brings, statements). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "registry, frames as evidence, decoded readings/intervals/events, commands, rejects", _V1),
    (2, "delivery state: ack watermark, outages, gaps, billing snapshots, persisted counters", _V2),
    (3, "operator command queue; each signed command attempt linked to its queue entry", _V3),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

EXPORT_TABLES = ("readings", "intervals", "events", "billing", "outages", "commands", "gaps", "command_queue")
GAP_SETTLED = ("skipped", "lost")  # holes the meter says it cannot fill: the ack may pass them
QUEUE_STATES = ("queued", "sent", "answered", "expired", "failed")
QUEUE_PENDING = ("queued", "sent")  # the concentrator still works on these


class StoreError(Exception):
    """A database that cannot be used: missing, newer schema than this meterkit, not a meterkit file."""


# --- records ------------------------------------------------------------------------------------------------


@dataclass
class MeterRecord:
    device_id: bytes
    public_key: bytes  # 65-byte uncompressed P-256 point
    name: str | None
    provisioned_at: float
    reporting_period_s: int
    last_seen: float | None = None
    last_counter: int = 0
    firmware: str | None = None
    board: str | None = None
    boot_count: int | None = None
    ack_seq: int | None = None
    first_seq: int | None = None
    online: bool = False
    frames_stored: int = 0


@dataclass
class OutageRecord:
    id: int
    device_id: bytes
    start: float
    detected_at: float
    end: float | None
    cause: str | None
    power_up_at: int | None
    evidence: dict | None


@dataclass
class GapRecord:
    id: int
    device_id: bytes
    kind: str
    first: int
    last: int
    detected_at: float
    state: str
    requested_at: float | None
    command_counter: int | None
    attempts: int
    missing: int | None
    closed_at: float | None


@dataclass
class QueuedCommand:
    """An operator command in the queue (table command_queue)."""

    id: int
    device_id: bytes
    op: int
    args: dict | None  # top-level keys are ints again (JSON keeps them as text)
    created_at: float
    expires_at: int
    state: str
    counter: int | None
    attempts: int
    sent_at: float | None
    answered_at: float | None
    result: int | None
    reason: str | None
    note: str | None
    attempt_expires: int | None = None  # signed expiry of the latest attempt (from table commands)


def args_to_json(args: dict | None) -> str | None:
    """Command arguments {uint: value} as JSON text (keys become text; values must be JSON types)."""
    return json.dumps(args, sort_keys=True, ensure_ascii=False) if args else None


def args_from_json(text: str | None) -> dict | None:
    """The inverse of args_to_json: top-level keys back to ints."""
    if not text:
        return None
    return {int(k): v for k, v in json.loads(text).items()}


# Row shapes the ingest methods take (plain tuples: the hot path builds thousands per second)
#   frame    (device, seq, kind, meter_time, status, received_at, raw)
#   reading  (device, seq, meter_time, status, import_wh, export_wh, registers_json, power_mw, voltage_mv,
#             current_ma, uncovered_ppm)
#   interval (device, end_time, import_mwh, export_mwh, status, period_s, seq)
#   event    (device, seq, event_seq, code, value, event_time)
#   billing  (device, seq, period_end, registers_json, max_demand_json)
#   reject   (device, peer, reason, count, at, detail)

_METER_FIELDS = ("last_seen", "last_counter", "firmware", "board", "boot_count", "ack_seq", "first_seq",
                 "online", "frames_stored", "name", "reporting_period_s")


def i64(v: Any) -> int | None:
    """v if SQLite can store it as an INTEGER, else None (the raw frame keeps the exact value)."""
    return v if I64_MIN <= v <= I64_MAX else None


# --- the interface ------------------------------------------------------------------------------------------


class Store(abc.ABC):
    """What the concentrator and the fleet commands need from a database.

    Write methods join the open transaction; ``commit()`` makes everything since the last commit durable,
    ``rollback()`` forgets it. Device ids are 8-byte ``bytes``.
    """

    # registry
    @abc.abstractmethod
    def register_meter(self, device_id: bytes | None, public_key: Any, name: str | None = None,
                       reporting_period_s: int = DEFAULT_PERIOD_S, now: float | None = None) -> MeterRecord:
        """Add a meter (committed at once). device_id may be None: it is derived from the key (and, when
        given, must match it). Registering the same key again updates name and period; another key for a
        registered id raises ValueError."""

    def register_meters(self, meters: Iterable[tuple], now: float | None = None) -> list[MeterRecord]:
        """Register many meters: (public_key, name, reporting_period_s) each, in one transaction."""
        return [self.register_meter(None, key, name, period, now) for key, name, period in meters]

    @abc.abstractmethod
    def meter(self, device_id: bytes) -> MeterRecord | None: ...

    @abc.abstractmethod
    def meters(self) -> list[MeterRecord]: ...

    @abc.abstractmethod
    def update_meter(self, device_id: bytes, **fields: Any) -> None:
        """Set columns of a meter's row (names in _METER_FIELDS)."""

    @abc.abstractmethod
    def update_meters(self, names: Sequence[str], rows: Iterable[tuple]) -> None:
        """Set the same columns of many meters: each row is the values for `names`, then the device id."""

    # frames and decoded rows
    @abc.abstractmethod
    def insert_frames(self, rows: Sequence[tuple]) -> int:
        """Insert frames, skipping any (device, seq) already stored; returns how many were new."""

    @abc.abstractmethod
    def insert_frame(self, row: tuple) -> bool:
        """One frame; False when (device, seq) was already stored."""

    @abc.abstractmethod
    def frame_raw(self, device_id: bytes, seq: int) -> bytes | None:
        """The stored COSE bytes of a frame, or None."""

    @abc.abstractmethod
    def seqs_above(self, device_id: bytes, seq: int) -> list[int]:
        """Stored sequence numbers > seq, ascending."""

    @abc.abstractmethod
    def max_seq(self, device_id: bytes, received_to: float | None = None) -> int | None:
        """The newest sequence number stored (of frames received at or before received_to)."""

    @abc.abstractmethod
    def insert_readings(self, rows: Sequence[tuple]) -> None: ...

    @abc.abstractmethod
    def insert_intervals(self, rows: Sequence[tuple]) -> int:
        """Interval rows, skipping (device, end_time) already stored; returns how many were new."""

    @abc.abstractmethod
    def insert_events(self, rows: Sequence[tuple]) -> None: ...

    @abc.abstractmethod
    def insert_billing(self, rows: Sequence[tuple]) -> None: ...

    @abc.abstractmethod
    def interval_rows(self, device_id: bytes, from_end: int, to_end: int | None = None) -> list[tuple]:
        """(end_time, period_s, seq, status) of stored rows with from_end <= end_time (<= to_end), ascending."""

    @abc.abstractmethod
    def interval_before(self, device_id: bytes, end: int) -> tuple | None:
        """(end_time, period_s, seq, status) of the newest row ending before `end`, or None."""

    @abc.abstractmethod
    def interval_after(self, device_id: bytes, end: int) -> tuple | None:
        """(end_time, period_s, seq, status) of the oldest row ending after `end`, or None."""

    @abc.abstractmethod
    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None, limit: int = 10000,
                     ) -> list[tuple]:
        """(seq, kind, meter_time, status) of frames with sequence numbers above seq (received at or before
        received_to), ascending, at most `limit`."""

    @abc.abstractmethod
    def events_of(self, device_id: bytes, seqs: Iterable[int]) -> list[tuple]:
        """(seq, event_seq, code, value, event_time) of the events stored under these frame seqs."""

    # commands
    @abc.abstractmethod
    def record_command(self, device_id: bytes, counter: int, op: int, args: dict | None, sent_at: float,
                       expires_at: int, queue_id: int | None = None) -> None:
        """A signed command sent (counter used once); queue_id: the operator command it carries."""

    @abc.abstractmethod
    def record_response(self, device_id: bytes, counter: int, result: int, reason: str | None,
                        at: float) -> tuple | None:
        """Note a meter's answer to command `counter`; returns that command's (op, args) or None."""

    # the operator command queue
    @abc.abstractmethod
    def queue_command(self, device_id: bytes, op: int, args: dict | None, created_at: float, expires_at: int,
                      note: str | None = None) -> int:
        """Queue an operator command (joins the transaction: commit to publish it); returns its id."""

    @abc.abstractmethod
    def queued_commands(self, device_id: bytes | None = None, states: Iterable[str] | None = None,
                        ids: Iterable[int] | None = None) -> list[QueuedCommand]:
        """Queue entries (of a device, in these states, with these ids), oldest first."""

    @abc.abstractmethod
    def update_queued(self, queue_id: int, **fields: Any) -> None:
        """Set columns of a queue entry: state, counter, attempts, sent_at, answered_at, result, reason."""

    @abc.abstractmethod
    def queued_for_counter(self, device_id: bytes, counter: int) -> QueuedCommand | None:
        """The queue entry whose attempt used this command counter, or None (a back-fill, or never sent)."""

    @abc.abstractmethod
    def command_attempts(self, queue_id: int) -> list[tuple]:
        """(counter, sent_at, expires_at, answered_at, result, reason) of every attempt of a queue entry."""

    # outages and gaps
    @abc.abstractmethod
    def open_outage(self, device_id: bytes, start: float, detected_at: float) -> int: ...

    @abc.abstractmethod
    def close_outage(self, outage_id: int, end: float) -> None: ...

    @abc.abstractmethod
    def match_outage(self, outage_id: int, cause: str, power_up_at: int | None, evidence: dict) -> None: ...

    @abc.abstractmethod
    def outages(self, device_id: bytes | None = None, open_only: bool = False,
                closed_since: float | None = None) -> list[OutageRecord]: ...

    @abc.abstractmethod
    def add_gap(self, device_id: bytes, kind: str, first: int, last: int, detected_at: float,
                state: str = "open") -> int | None:
        """Record a gap (None if one with this device, kind and first is already recorded)."""

    @abc.abstractmethod
    def update_gap(self, gap_id: int, **fields: Any) -> None: ...

    @abc.abstractmethod
    def gaps(self, device_id: bytes | None = None, kind: str | None = None,
             states: Iterable[str] | None = None) -> list[GapRecord]: ...

    # counting
    @abc.abstractmethod
    def add_rejects(self, rows: Iterable[tuple]) -> None:
        """Add to the reject counts: rows of (device, peer, reason, count, at, detail)."""

    @abc.abstractmethod
    def rejects(self) -> list[dict]: ...

    @abc.abstractmethod
    def add_counters(self, deltas: dict[str, int]) -> None: ...

    @abc.abstractmethod
    def counters(self) -> dict[str, int]: ...

    # transactions
    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    # reading out
    @abc.abstractmethod
    def fleet(self) -> list[dict]:
        """One dict per meter: the registry row plus latest registers, counts of gaps and outages."""

    @abc.abstractmethod
    def export(self, table: str, device_id: bytes | None = None) -> tuple[list[str], Iterator[tuple]]:
        """(column names, rows) of one of EXPORT_TABLES, oldest first, device ids as hex."""

    def lookup_device(self, text: str) -> bytes | None:
        """A meter by 16-hex-digit id or by name."""
        t = text.strip().lower()
        if len(t) == 16 and all(c in "0123456789abcdef" for c in t):
            dev = bytes.fromhex(t)
            if self.meter(dev) is not None:
                return dev
        for m in self.meters():
            if m.name == text:
                return m.device_id
        return None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- SQLite -------------------------------------------------------------------------------------------------


def _meter_from_row(r: sqlite3.Row) -> MeterRecord:
    return MeterRecord(device_id=r["device"], public_key=r["public_key"], name=r["name"],
                       provisioned_at=r["provisioned_at"], reporting_period_s=r["reporting_period_s"],
                       last_seen=r["last_seen"], last_counter=r["last_counter"], firmware=r["firmware"],
                       board=r["board"], boot_count=r["boot_count"], ack_seq=r["ack_seq"],
                       first_seq=r["first_seq"], online=bool(r["online"]), frames_stored=r["frames_stored"])


def _outage_from_row(r: sqlite3.Row) -> OutageRecord:
    return OutageRecord(id=r["id"], device_id=r["device"], start=r["start"], detected_at=r["detected_at"],
                        end=r["end"], cause=r["cause"], power_up_at=r["power_up_at"],
                        evidence=json.loads(r["evidence"]) if r["evidence"] else None)


def _gap_from_row(r: sqlite3.Row) -> GapRecord:
    return GapRecord(id=r["id"], device_id=r["device"], kind=r["kind"], first=r["first"], last=r["last"],
                     detected_at=r["detected_at"], state=r["state"], requested_at=r["requested_at"],
                     command_counter=r["command_counter"], attempts=r["attempts"], missing=r["missing"],
                     closed_at=r["closed_at"])


def _queued_from_row(r: sqlite3.Row) -> QueuedCommand:
    return QueuedCommand(id=r["id"], device_id=r["device"], op=r["op"], args=args_from_json(r["args"]),
                         created_at=r["created_at"], expires_at=r["expires_at"], state=r["state"],
                         counter=r["counter"], attempts=r["attempts"], sent_at=r["sent_at"],
                         answered_at=r["answered_at"], result=r["result"], reason=r["reason"], note=r["note"],
                         attempt_expires=r["attempt_expires"])


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in a database (0: no meterkit schema yet)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations after the database's version, up to `upto`, each in its own transaction.
    Returns the versions applied. Raises StoreError for a database newer than this meterkit."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(f"database schema v{current} is newer than this meterkit understands "
                         f"(v{SCHEMA_VERSION}): upgrade meterkit")
    applied = []
    for version, what, statements in MIGRATIONS:
        if version <= current or version > upto:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                             "applied_at REAL NOT NULL, description TEXT)")
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, time.time(), what))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


class SQLiteStore(Store):
    """Store on one SQLite file (WAL mode, synchronous=FULL unless told otherwise).

    create=False refuses a path that does not exist (the read-only commands use that), readonly opens the
    file without write access (no migration then: an old schema is refused).
    """

    def __init__(self, path: str | os.PathLike, create: bool = True, synchronous: str = "FULL",
                 readonly: bool = False, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if (readonly or not create) and not self.path.exists():
            raise StoreError(f"{self.path}: no such database")
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open: {e}") from None
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                self.migrated = migrate(conn)
            else:
                self.migrated = []
                v = schema_version(conn)
                if v != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema v{v}, this meterkit reads v{SCHEMA_VERSION} "
                                     "(open it once for writing to migrate)")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{self.path}: not a meterkit database ({e})") from None
        except BaseException:
            conn.close()
            raise
        self.version = schema_version(conn)

    # -- plumbing
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

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    # -- registry
    def register_meter(self, device_id: bytes | None, public_key: Any, name: str | None = None,
                       reporting_period_s: int = DEFAULT_PERIOD_S, now: float | None = None) -> MeterRecord:
        point = P.point_of(public_key)
        derived = P.key_id(point)
        if device_id is not None and bytes(device_id) != derived:
            raise ValueError(f"device id {bytes(device_id).hex()} does not belong to that key "
                             f"(its id is {derived.hex()})")
        if type(reporting_period_s) is not int or reporting_period_s <= 0:
            raise ValueError("the reporting period is a positive number of seconds")
        old = self.meter(derived)
        c = self._begin()
        try:
            if old is None:
                c.execute("INSERT INTO meters (device, public_key, name, provisioned_at, reporting_period_s) "
                          "VALUES (?, ?, ?, ?, ?)",
                          (derived, point, name, time.time() if now is None else now, reporting_period_s))
            elif old.public_key != point:  # pragma: no cover - ids are hashes of keys: a collision
                raise ValueError(f"device {derived.hex()} is registered with another key")
            else:
                c.execute("UPDATE meters SET name = coalesce(?, name), reporting_period_s = ? WHERE device = ?",
                          (name, reporting_period_s, derived))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        rec = self.meter(derived)
        assert rec is not None
        return rec

    def register_meters(self, meters: Iterable[tuple], now: float | None = None) -> list[MeterRecord]:
        t = time.time() if now is None else now
        rows = []
        for key, name, period in meters:
            point = P.point_of(key)
            if type(period) is not int or period <= 0:
                raise ValueError("the reporting period is a positive number of seconds")
            rows.append((P.key_id(point), point, name, t, period))
        c = self._begin()
        try:
            c.executemany("INSERT INTO meters (device, public_key, name, provisioned_at, reporting_period_s) "
                          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
                          "name = coalesce(excluded.name, name), reporting_period_s = excluded.reporting_period_s",
                          rows)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return [m for m in (self.meter(r[0]) for r in rows) if m is not None]

    def meter(self, device_id: bytes) -> MeterRecord | None:
        r = self._conn.execute("SELECT * FROM meters WHERE device = ?", (bytes(device_id),)).fetchone()
        return _meter_from_row(r) if r else None

    def meters(self) -> list[MeterRecord]:
        return [_meter_from_row(r) for r in self._conn.execute("SELECT * FROM meters ORDER BY name, device")]

    def update_meter(self, device_id: bytes, **fields: Any) -> None:
        bad = set(fields) - set(_METER_FIELDS)
        if bad:
            raise ValueError(f"unknown meter fields {sorted(bad)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._begin().execute(f"UPDATE meters SET {sets} WHERE device = ?", (*fields.values(), device_id))

    def update_meters(self, names: Sequence[str], rows: Iterable[tuple]) -> None:
        bad = set(names) - set(_METER_FIELDS)
        if bad or not names:
            raise ValueError(f"unknown meter fields {sorted(bad)}")
        rows = list(rows)
        if rows:
            sets = ", ".join(f"{k} = ?" for k in names)
            self._begin().executemany(f"UPDATE meters SET {sets} WHERE device = ?", rows)

    # -- frames and rows
    def insert_frames(self, rows: Sequence[tuple]) -> int:
        c = self._begin()
        before = c.total_changes
        c.executemany("INSERT OR IGNORE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return c.total_changes - before

    def insert_frame(self, row: tuple) -> bool:
        return self._begin().execute("INSERT OR IGNORE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     row).rowcount == 1

    def frame_raw(self, device_id: bytes, seq: int) -> bytes | None:
        r = self._conn.execute("SELECT raw FROM frames WHERE device = ? AND seq = ?",
                               (device_id, seq)).fetchone()
        return r[0] if r else None

    def seqs_above(self, device_id: bytes, seq: int) -> list[int]:
        return [r[0] for r in self._conn.execute(
            "SELECT seq FROM frames WHERE device = ? AND seq > ? ORDER BY seq", (device_id, seq))]

    def max_seq(self, device_id: bytes, received_to: float | None = None) -> int | None:
        if received_to is None:
            return self._conn.execute("SELECT max(seq) FROM frames WHERE device = ?", (device_id,)).fetchone()[0]
        return self._conn.execute("SELECT max(seq) FROM frames WHERE device = ? AND received_at <= ?",
                                  (device_id, received_to)).fetchone()[0]

    def insert_readings(self, rows: Sequence[tuple]) -> None:
        self._begin().executemany("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  rows)

    def insert_intervals(self, rows: Sequence[tuple]) -> int:
        c = self._begin()
        before = c.total_changes
        c.executemany("INSERT OR IGNORE INTO intervals VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return c.total_changes - before

    def insert_events(self, rows: Sequence[tuple]) -> None:
        self._begin().executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)

    def insert_billing(self, rows: Sequence[tuple]) -> None:
        self._begin().executemany("INSERT OR IGNORE INTO billing VALUES (?, ?, ?, ?, ?)", rows)

    def interval_rows(self, device_id: bytes, from_end: int, to_end: int | None = None) -> list[tuple]:
        hi = I64_MAX if to_end is None else to_end
        return [tuple(r) for r in self._conn.execute(
            "SELECT end_time, period_s, seq, status FROM intervals WHERE device = ? AND end_time >= ? "
            "AND end_time <= ? ORDER BY end_time", (device_id, from_end, hi))]

    def interval_before(self, device_id: bytes, end: int) -> tuple | None:
        r = self._conn.execute("SELECT end_time, period_s, seq, status FROM intervals WHERE device = ? AND "
                               "end_time < ? ORDER BY end_time DESC LIMIT 1", (device_id, end)).fetchone()
        return tuple(r) if r else None

    def interval_after(self, device_id: bytes, end: int) -> tuple | None:
        r = self._conn.execute("SELECT end_time, period_s, seq, status FROM intervals WHERE device = ? AND "
                               "end_time > ? ORDER BY end_time LIMIT 1", (device_id, end)).fetchone()
        return tuple(r) if r else None

    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None, limit: int = 10000,
                     ) -> list[tuple]:
        hi = float("inf") if received_to is None else received_to
        return [tuple(r) for r in self._conn.execute(
            "SELECT seq, kind, meter_time, status FROM frames WHERE device = ? AND seq > ? AND received_at <= ? "
            "ORDER BY seq LIMIT ?", (device_id, seq, hi, limit))]

    def events_of(self, device_id: bytes, seqs: Iterable[int]) -> list[tuple]:
        out = []
        for s in seqs:
            r = self._conn.execute("SELECT seq, event_seq, code, value, event_time FROM events WHERE device = ? "
                                   "AND seq = ?", (device_id, s)).fetchone()
            if r:
                out.append(tuple(r))
        return out

    # -- commands
    def record_command(self, device_id: bytes, counter: int, op: int, args: dict | None, sent_at: float,
                       expires_at: int, queue_id: int | None = None) -> None:
        self._begin().execute("INSERT INTO commands (device, counter, op, args, sent_at, expires_at, queue_id) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (device_id, counter, op, json.dumps(args) if args else None, sent_at, expires_at,
                               queue_id))

    def record_response(self, device_id: bytes, counter: int, result: int, reason: str | None,
                        at: float) -> tuple | None:
        if counter > I64_MAX:
            return None
        c = self._begin()
        r = c.execute("SELECT op, args FROM commands WHERE device = ? AND counter = ?",
                      (device_id, counter)).fetchone()
        if r is None:
            return None
        c.execute("UPDATE commands SET answered_at = ?, result = ?, reason = ? WHERE device = ? AND counter = ?",
                  (at, i64(result), reason, device_id, counter))
        args = json.loads(r[1]) if r[1] else None
        return r[0], args

    # -- the operator command queue
    def queue_command(self, device_id: bytes, op: int, args: dict | None, created_at: float, expires_at: int,
                      note: str | None = None) -> int:
        if type(op) is not int or not 0 <= op <= I64_MAX:
            raise ValueError(f"operation must be an unsigned integer, got {op!r}")
        if type(expires_at) is not int:
            raise ValueError(f"expires_at must be integer UTC seconds, got {expires_at!r}")
        if args is not None and (type(args) is not dict or any(type(k) is not int or k < 0 for k in args)):
            raise ValueError("command arguments are a dict of unsigned integers to values")
        cur = self._begin().execute(
            "INSERT INTO command_queue (device, op, args, created_at, expires_at, note) VALUES (?, ?, ?, ?, ?, ?)",
            (bytes(device_id), op, args_to_json(args), created_at, expires_at, note))
        return cur.lastrowid  # type: ignore[return-value]

    _QUEUE_SQL = ("SELECT q.*, c.expires_at AS attempt_expires FROM command_queue q LEFT JOIN commands c "
                  "ON c.device = q.device AND c.counter = q.counter")

    def queued_commands(self, device_id: bytes | None = None, states: Iterable[str] | None = None,
                        ids: Iterable[int] | None = None) -> list[QueuedCommand]:
        where, args = [], []
        if device_id is not None:
            where.append("q.device = ?")
            args.append(bytes(device_id))
        if states is not None:
            st = list(states)
            where.append(f"q.state IN ({', '.join('?' * len(st))})")
            args.extend(st)
        if ids is not None:
            il = list(ids)
            where.append(f"q.id IN ({', '.join('?' * len(il))})")
            args.extend(il)
        sql = self._QUEUE_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY q.id"
        return [_queued_from_row(r) for r in self._conn.execute(sql, args)]

    _QUEUE_FIELDS = frozenset({"state", "counter", "attempts", "sent_at", "answered_at", "result", "reason"})

    def update_queued(self, queue_id: int, **fields: Any) -> None:
        bad = set(fields) - self._QUEUE_FIELDS
        if bad:
            raise ValueError(f"unknown command queue fields {sorted(bad)}")
        if "state" in fields and fields["state"] not in QUEUE_STATES:
            raise ValueError(f"state must be one of {', '.join(QUEUE_STATES)}, not {fields['state']!r}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self._begin().execute(f"UPDATE command_queue SET {sets} WHERE id = ?", (*fields.values(), queue_id))

    def queued_for_counter(self, device_id: bytes, counter: int) -> QueuedCommand | None:
        if not I64_MIN <= counter <= I64_MAX:
            return None
        r = self._conn.execute("SELECT queue_id FROM commands WHERE device = ? AND counter = ?",
                               (bytes(device_id), counter)).fetchone()
        if r is None or r[0] is None:
            return None
        got = self.queued_commands(ids=[r[0]])
        return got[0] if got else None

    def command_attempts(self, queue_id: int) -> list[tuple]:
        return [tuple(r) for r in self._conn.execute(
            "SELECT counter, sent_at, expires_at, answered_at, result, reason FROM commands WHERE queue_id = ? "
            "ORDER BY counter", (queue_id,))]

    # -- outages
    def open_outage(self, device_id: bytes, start: float, detected_at: float) -> int:
        cur = self._begin().execute("INSERT INTO outages (device, start, detected_at) VALUES (?, ?, ?)",
                                    (device_id, start, detected_at))
        return cur.lastrowid  # type: ignore[return-value]

    def close_outage(self, outage_id: int, end: float) -> None:
        self._begin().execute("UPDATE outages SET end = ? WHERE id = ?", (end, outage_id))

    def match_outage(self, outage_id: int, cause: str, power_up_at: int | None, evidence: dict) -> None:
        self._begin().execute("UPDATE outages SET cause = ?, power_up_at = ?, evidence = ? WHERE id = ?",
                              (cause, power_up_at, json.dumps(evidence, sort_keys=True), outage_id))

    def outages(self, device_id: bytes | None = None, open_only: bool = False,
                closed_since: float | None = None) -> list[OutageRecord]:
        where, args = [], []
        if device_id is not None:
            where.append("device = ?")
            args.append(device_id)
        if open_only:
            where.append("end IS NULL")
        if closed_since is not None:
            where.append("end >= ?")
            args.append(closed_since)
        sql = "SELECT * FROM outages" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_outage_from_row(r) for r in self._conn.execute(sql, args)]

    # -- gaps
    def add_gap(self, device_id: bytes, kind: str, first: int, last: int, detected_at: float,
                state: str = "open") -> int | None:
        cur = self._begin().execute("INSERT OR IGNORE INTO gaps (device, kind, first, last, detected_at, state) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", (device_id, kind, first, last, detected_at, state))
        return cur.lastrowid if cur.rowcount == 1 else None

    _GAP_FIELDS = frozenset({"last", "state", "requested_at", "command_counter", "attempts", "missing",
                             "closed_at"})

    def update_gap(self, gap_id: int, **fields: Any) -> None:
        bad = set(fields) - self._GAP_FIELDS
        if bad:
            raise ValueError(f"unknown gap fields {sorted(bad)}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self._begin().execute(f"UPDATE gaps SET {sets} WHERE id = ?", (*fields.values(), gap_id))

    def gaps(self, device_id: bytes | None = None, kind: str | None = None,
             states: Iterable[str] | None = None) -> list[GapRecord]:
        where, args = [], []
        if device_id is not None:
            where.append("device = ?")
            args.append(device_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if states is not None:
            st = list(states)
            where.append(f"state IN ({', '.join('?' * len(st))})")
            args.extend(st)
        sql = "SELECT * FROM gaps" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_gap_from_row(r) for r in self._conn.execute(sql, args)]

    # -- counting
    def add_rejects(self, rows: Iterable[tuple]) -> None:
        self._begin().executemany(
            "INSERT INTO rejects (device, peer, reason, count, first_at, last_at, last_detail) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) ON CONFLICT (device, peer, reason) DO UPDATE SET "
            "count = count + excluded.count, last_at = excluded.last_at, "
            "last_detail = coalesce(excluded.last_detail, last_detail)", rows)

    def rejects(self) -> list[dict]:
        return [dict(r) for r in self._conn.execute(
            "SELECT * FROM rejects ORDER BY reason, device, peer")]

    def add_counters(self, deltas: dict[str, int]) -> None:
        if deltas:
            self._begin().executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                [(k, v) for k, v in deltas.items() if v])

    def counters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._conn.execute("SELECT name, value FROM counters ORDER BY name")}

    # -- reading out
    def fleet(self) -> list[dict]:
        rows = self._conn.execute(
            """SELECT m.*,
                 (SELECT import_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS import_wh,
                 (SELECT export_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS export_wh,
                 (SELECT meter_time FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1)
                   AS reading_time,
                 (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
                   AND g.state = 'filled' AND g.attempts > 0) AS gaps_backfilled,
                 (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
                   AND g.state IN ('open', 'requested')) AS gaps_open,
                 (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
                   AND g.state IN ('skipped', 'lost')) AS gaps_settled,
                 (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'intervals') AS interval_gaps,
                 (SELECT count(*) FROM outages o WHERE o.device = m.device) AS outages,
                 (SELECT count(*) FROM outages o WHERE o.device = m.device AND o.end IS NULL) AS outage_open
               FROM meters m ORDER BY m.name, m.device""")
        out = []
        for r in rows:
            d = dict(r)
            d["device"] = d["device"].hex()
            d["public_key"] = d["public_key"].hex()
            d["online"] = bool(d["online"])
            out.append(d)
        return out

    _EXPORT_SQL = {
        "readings": ("SELECT device, seq, meter_time, status, import_wh, export_wh, power_mw, voltage_mv, "
                     "current_ma, uncovered_ppm, registers FROM readings", "device, seq"),
        "intervals": ("SELECT device, end_time, import_mwh, export_mwh, status, period_s, seq FROM intervals",
                      "device, end_time"),
        "events": ("SELECT device, seq, event_seq, code, value, event_time FROM events", "device, seq"),
        "billing": ("SELECT device, seq, period_end, registers, max_demand FROM billing", "device, seq"),
        "outages": ("SELECT device, start, end, detected_at, cause, power_up_at, evidence FROM outages",
                    "device, start"),
        "commands": ("SELECT device, counter, op, args, sent_at, expires_at, answered_at, result, reason "
                     "FROM commands", "device, counter"),
        "gaps": ("SELECT device, kind, first, last, state, detected_at, requested_at, command_counter, "
                 "attempts, missing, closed_at FROM gaps", "device, kind, first"),
        "command_queue": ("SELECT device, id, op, args, created_at, expires_at, state, counter, attempts, "
                          "sent_at, answered_at, result, reason, note FROM command_queue", "device, id"),
    }

    def export(self, table: str, device_id: bytes | None = None) -> tuple[list[str], Iterator[tuple]]:
        if table not in self._EXPORT_SQL:
            raise ValueError(f"cannot export {table!r}: one of {', '.join(EXPORT_TABLES)}")
        sql, order = self._EXPORT_SQL[table]
        args: tuple = ()
        if device_id is not None:
            sql += " WHERE device = ?"
            args = (device_id,)
        cur = self._conn.execute(f"{sql} ORDER BY {order}", args)
        names = [d[0] for d in cur.description]

        def rows() -> Iterator[tuple]:
            for r in cur:
                yield (r[0].hex(),) + tuple(r[1:])

        return names, rows()
