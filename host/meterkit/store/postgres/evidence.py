"""Tables frames (the signed evidence, PRIMARY KEY device + seq: the dedupe authority) and readings (partitioned
by meter time). Each batch is one INSERT ... SELECT FROM unnest(one array per column): one round trip whatever
its size."""

from __future__ import annotations

from collections.abc import Sequence

from meterkit.store.postgres.partitions import ReadingPartitions
from meterkit.store.records import FrameRecord
from meterkit.store.rows import I64_MAX, READING_COLUMNS, reading_row
from meterkit.wire.records import Frame, Reading

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


def columns(rows: Sequence[tuple], width: int) -> list[list]:
    """Rows as one list per column (the arrays unnest takes)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class EvidenceTables(ReadingPartitions):
    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        if not frames:
            return 0
        rows = [(f.device_id, f.seq, f.kind, f.meter_time, f.status if f.status <= I64_MAX else None, f.raw)
                for f in frames]
        return self._execute(_INSERT_FRAMES, (received_at, *columns(rows, 6))).rowcount

    def add_frame(self, frame: Frame, received_at: float) -> bool:
        return self.add_frames([frame], received_at) == 1

    def frame_raw(self, device_id: bytes, seq: int) -> bytes | None:
        r = self._one("SELECT raw FROM frames WHERE device = %s AND seq = %s", (device_id, seq))
        return r[0] if r else None

    def seqs_above(self, device_id: bytes, seq: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT seq FROM frames WHERE device = %s AND seq > %s ORDER BY seq",
                                         (device_id, seq))]

    def max_seq(self, device_id: bytes, received_to: float | None = None) -> int | None:
        cond, args = ("AND received_at <= %s", (received_to,)) if received_to is not None else ("", ())
        return self._one(f"SELECT max(seq) FROM frames WHERE device = %s {cond}", (device_id, *args))[0]

    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None,
                     limit: int | None = 10000) -> list[FrameRecord]:
        cond, args = ("AND received_at <= %s", (received_to,)) if received_to is not None else ("", ())
        rows = self._rows(f"SELECT seq, kind, meter_time, status, received_at FROM frames WHERE device = %s "
                          f"AND seq > %s {cond} ORDER BY seq LIMIT %s", (device_id, seq, *args, limit))
        return [FrameRecord(device_id, r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def add_readings(self, readings: Sequence[Reading]) -> None:
        if readings:
            rows = [reading_row(r) for r in readings]
            self._ensure_partitions(r[2] for r in rows)
            self._execute(_INSERT_READINGS, columns(rows, len(_READING_TYPES)))
