"""Tables frames (the signed evidence, PRIMARY KEY device + seq: the dedupe authority) and readings."""

from __future__ import annotations

from collections.abc import Sequence

from meterkit.store.records import FrameRecord
from meterkit.store.rows import I64_MAX, READING_COLUMNS, reading_row
from meterkit.store.sqlite.base import Connection
from meterkit.wire.records import Frame, Reading

_INSERT_FRAME = ("INSERT OR IGNORE INTO frames (device, seq, kind, meter_time, status, received_at, raw) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_READING = f"INSERT OR IGNORE INTO readings ({READING_COLUMNS}) VALUES ({', '.join('?' * 14)})"


class EvidenceTables(Connection):
    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        # built inline, not by a function per frame: this is the ingest's hot path
        return self._insert_many(_INSERT_FRAME, [
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
        hi = float("inf") if received_to is None else received_to
        rows = self._rows("SELECT seq, kind, meter_time, status, received_at FROM frames WHERE device = ? "
                          "AND seq > ? AND received_at <= ? ORDER BY seq LIMIT ?",
                          (device_id, seq, hi, -1 if limit is None else limit))
        return [FrameRecord(device_id, r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def add_readings(self, readings: Sequence[Reading]) -> None:
        self._insert_many(_INSERT_READING, [reading_row(r) for r in readings])
