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
                  "power_mw, voltage_mv, current_ma, uncovered_ppm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _frame_row(f: Frame, received_at: float) -> tuple:
    status = f.status
    return (f.device_id, f.seq, f.kind, f.meter_time, status if status <= I64_MAX else None, received_at, f.raw)


def _reading_row(r: Reading) -> tuple:
    """The readings row; values beyond signed 64 bits become NULL (the registers JSON keeps them exactly)."""
    regs = r.registers
    seq, t, st, imp, exp = r.seq, r.meter_time, r.status, regs[_IMPORT], regs[_EXPORT]
    mw, mv, ma, unc = r.power_mw, r.voltage_mv, r.current_ma, r.uncovered_ppm
    # chained comparisons: a third of min()/max() over a tuple, and the ingest does this once per frame
    if not (I64_MIN <= seq <= I64_MAX and I64_MIN <= t <= I64_MAX and I64_MIN <= st <= I64_MAX
            and I64_MIN <= imp <= I64_MAX and I64_MIN <= exp <= I64_MAX and I64_MIN <= mw <= I64_MAX
            and I64_MIN <= mv <= I64_MAX and I64_MIN <= ma <= I64_MAX and I64_MIN <= unc <= I64_MAX):
        seq, t, st, imp, exp, mw, mv, ma, unc = (i64(v) for v in (seq, t, st, imp, exp, mw, mv, ma, unc))
    return (r.device_id, seq, t, st, imp, exp, registers_json(regs), mw, mv, ma, unc)


class EvidenceTables(Connection):
    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        return self._insert_many(_INSERT_FRAME, [_frame_row(f, received_at) for f in frames])

    def add_frame(self, frame: Frame, received_at: float) -> bool:
        return self._begin().execute(_INSERT_FRAME, _frame_row(frame, received_at)).rowcount == 1

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
