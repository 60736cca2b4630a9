"""Tables frames (the signed evidence, PRIMARY KEY device + seq: the dedupe authority) and readings."""

from __future__ import annotations

from collections.abc import Sequence

from meterkit import wire
from meterkit.store.records import FrameRecord
from meterkit.store.sqlite.base import I64_MAX, I64_MIN, Connection, i64, registers_json
from meterkit.wire.records import Frame, Reading

_IMPORT, _EXPORT = wire.obis_key("1.8.0"), wire.obis_key("2.8.0")
_INSERT_FRAME = ("INSERT OR IGNORE INTO frames (device, seq, kind, meter_time, status, received_at, raw) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_READING = ("INSERT OR IGNORE INTO readings (device, seq, meter_time, status, import_wh, export_wh, registers, "
                   "power_mw, voltage_mv, current_ma, uncovered_ppm, control_state, control_mode, limit_w) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_NO_CONTROL = (None, None, None)  # K_CONTROL left out: [1, 0, 0] (connected, no control, no limit)


def _reading_row(r: Reading) -> tuple:
    """The readings row; values beyond signed 64 bits become NULL (the registers JSON keeps them exactly).
    Only the values the wire schema leaves unbounded are checked (the sequence number is at most MAX_SEQ, the
    time 32 bits, uncovered_ppm a million; status and voltage are unsigned): the ingest does this per frame."""
    regs = r.registers
    st, imp, exp, mw, mv, ma = r.status, regs[_IMPORT], regs[_EXPORT], r.power_mw, r.voltage_mv, r.current_ma
    row = (r.device_id, r.seq, r.meter_time, st, imp, exp, registers_json(regs), mw, mv, ma, r.uncovered_ppm,
           *(_NO_CONTROL if r.control is None else r.control))
    if not (st <= I64_MAX and I64_MIN <= imp <= I64_MAX and I64_MIN <= exp <= I64_MAX and I64_MIN <= mw <= I64_MAX
            and mv <= I64_MAX and I64_MIN <= ma <= I64_MAX):
        row = tuple(i64(v) if type(v) is int else v for v in row)
    return row


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
        self._insert_many(_INSERT_READING, [_reading_row(r) for r in readings])
