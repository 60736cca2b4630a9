"""The ingest's bulk writes the way PostgreSQL takes them fastest, in place of the portable ones of
meterkit.store.tables (executemany: a statement per row): one statement per batch whatever its size, the rows as
one array per column (INSERT/UPDATE ... FROM unnest), sent binary (%b: no text escaping of the device ids and
frames). docs/performance.md, "After issue 13"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from meterkit.store.postgres.partitions import ReadingPartitions
from meterkit.store.records import DeliveryState
from meterkit.store.rows import I64_MAX, READING_COLUMNS, interval_row, reading_row
from meterkit.wire.records import Frame, IntervalRow, Reading

_INSERT_FRAMES = ("INSERT INTO frames (device, seq, kind, meter_time, status, received_at, raw) "
                  "SELECT d, s, k, t, st, %s::float8, r FROM unnest(%b::bytea[], %b::int8[], %b::int8[], %b::int8[], "
                  "%b::int8[], %b::bytea[]) AS u(d, s, k, t, st, r) ON CONFLICT DO NOTHING")
_READING_TYPES = ("bytea", "int8", "int8", "int8", "int8", "int8", "text", "int8", "int8", "int8", "int8", "int8",
                  "int8", "int8")
# a reading is stored once per (device, seq) -- the primary key also holds meter_time, the partition key -- and
# the first of a batch wins, as in SQLite
_INSERT_READINGS = (
    f"INSERT INTO readings ({READING_COLUMNS}) SELECT DISTINCT ON (u.device, u.seq) {READING_COLUMNS} "
    f"FROM unnest({', '.join(f'%b::{t}[]' for t in _READING_TYPES)}) WITH ORDINALITY AS u({READING_COLUMNS}, n) "
    "WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.device = u.device AND r.seq = u.seq) "
    "ORDER BY u.device, u.seq, u.n ON CONFLICT DO NOTHING")
_INSERT_INTERVALS = ("INSERT INTO intervals (device, end_time, import_mwh, export_mwh, status, period_s, seq) "
                     "SELECT * FROM unnest(%s::bytea[], %s::int8[], %s::int8[], %s::int8[], %s::int8[], %s::int8[], "
                     "%s::int8[]) ON CONFLICT DO NOTHING")
_SAVE_DELIVERY = ("UPDATE meters AS m SET last_seen = u.ls, ack_seq = u.a, first_seq = u.f, online = u.o, "
                  "frames_stored = u.n, last_counter = u.c, clock_drift_s = coalesce(u.dr, m.clock_drift_s), "
                  "clock_drift_at = coalesce(u.da, m.clock_drift_at) FROM unnest(%b::float8[], %b::int8[], "
                  "%b::int8[], %b::int4[], %b::int8[], %b::int8[], %b::float8[], %b::float8[], %b::bytea[]) "
                  "AS u(ls, a, f, o, n, c, dr, da, d) WHERE m.device = u.d")
_SAVE_COUNTERS = ("UPDATE meters AS m SET last_counter = u.c FROM unnest(%b::bytea[], %b::int8[]) AS u(d, c) "
                  "WHERE m.device = u.d")


def columns(rows: Sequence[tuple], width: int) -> list[list]:
    """Rows as one list per column (the arrays unnest takes)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class BulkWrites(ReadingPartitions):
    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        if not frames:
            return 0
        rows = [(f.device_id, f.seq, f.kind, f.meter_time, f.status if f.status <= I64_MAX else None, f.raw)
                for f in frames]
        return self._execute_native(_INSERT_FRAMES, (received_at, *columns(rows, 6))).rowcount

    def add_readings(self, readings: Sequence[Reading]) -> None:
        if readings:
            rows = [reading_row(r) for r in readings]
            self._ensure_partitions(r[2] for r in rows)
            self._execute_native(_INSERT_READINGS, columns(rows, len(_READING_TYPES)))

    def add_interval_rows(self, rows: Sequence[IntervalRow]) -> int:
        if not rows:
            return 0
        return self._execute_native(_INSERT_INTERVALS, columns([interval_row(r) for r in rows], 7)).rowcount

    def save_delivery(self, states: Iterable[DeliveryState]) -> None:
        # a statement per meter cost more than the frames' inserts; the last state given for a meter wins, as it
        # did statement by statement
        last = {bytes(s.device_id): s for s in states}
        if last:
            rows = [(s.last_seen, s.ack_seq, s.first_seq, int(s.online), s.frames_stored, s.last_counter,
                     s.clock_drift_s, s.clock_drift_at, dev)
                    for dev, s in sorted(last.items())]  # rows locked in one order by every concentrator
            self._execute_native(_SAVE_DELIVERY, columns(rows, 9))

    def save_counters(self, counters: Mapping[bytes, int]) -> None:
        if counters:
            rows = sorted((bytes(dev), c) for dev, c in counters.items())
            self._execute_native(_SAVE_COUNTERS, columns(rows, 2))
