"""Tables frames (the signed evidence, PRIMARY KEY device + seq: the dedupe authority) and readings. PostgreSQL
stores a batch of either its own faster way (meterkit.store.postgres.bulk)."""

from __future__ import annotations

from collections.abc import Sequence

from meterkit.store.records import FrameRecord
from meterkit.store.rows import I64_MAX, READING_COLUMNS, reading_row
from meterkit.store.tables.base import Tables
from meterkit.wire.records import Frame, Reading

_INSERT_FRAME = ("INSERT INTO frames (device, seq, kind, meter_time, status, received_at, raw) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_READING = f"INSERT INTO readings ({READING_COLUMNS}) VALUES ({', '.join('?' * 14)})"


class EvidenceTables(Tables):
    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        # built inline, not by a function per frame: this is the ingest's hot path
        return self._insert_many(self._insert_new(_INSERT_FRAME), [
            (f.device_id, f.seq, f.kind, f.meter_time, f.status if f.status <= I64_MAX else None, received_at, f.raw)
            for f in frames])

    def add_frame(self, frame: Frame, received_at: float) -> bool:
        return self.add_frames([frame], received_at) == 1

    def frame_raw(self, device_id: bytes, seq: int) -> bytes | None:
        r = self._one("SELECT raw FROM frames WHERE device = ? AND seq = ?", (device_id, seq))
        return r[0] if r else None

    def seqs_above(self, device_id: bytes, seq: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT seq FROM frames WHERE device = ? AND seq > ? ORDER BY seq",
                                         (device_id, seq))]

    def max_seq(self, device_id: bytes, received_to: float | None = None) -> int | None:
        cond, args = ("AND received_at <= ?", (received_to,)) if received_to is not None else ("", ())
        return self._one(f"SELECT max(seq) FROM frames WHERE device = ? {cond}", (device_id, *args))[0]

    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None,
                     limit: int | None = 10000) -> list[FrameRecord]:
        cond, args = ("AND received_at <= ? ", [received_to]) if received_to is not None else ("", [])
        if limit is not None:
            args.append(limit)
        rows = self._rows(f"SELECT seq, kind, meter_time, status, received_at FROM frames WHERE device = ? "
                          f"AND seq > ? {cond}ORDER BY seq{'' if limit is None else ' LIMIT ?'}",
                          (device_id, seq, *args))
        return [FrameRecord(device_id, r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def add_readings(self, readings: Sequence[Reading]) -> None:
        self._insert_many(self._insert_new(_INSERT_READING), [reading_row(r) for r in readings])
