"""Table intervals: load-profile rows (99.1.0), PRIMARY KEY device + end time (the first frame carrying a row wins).
PostgreSQL stores a batch its own faster way (meterkit.store.postgres.bulk)."""

from __future__ import annotations

from collections.abc import Sequence

from meterkit.store.records import IntervalRecord
from meterkit.store.rows import interval_row
from meterkit.store.tables.base import Tables
from meterkit.wire.records import IntervalRow

_INSERT_INTERVAL = ("INSERT INTO intervals (device, end_time, import_mwh, export_mwh, status, period_s, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)")
_SELECT = "SELECT device, end_time, import_mwh, export_mwh, status, period_s, seq FROM intervals"


class ProfileTable(Tables):
    def add_interval_rows(self, rows: Sequence[IntervalRow]) -> int:
        return self._insert_many(self._insert_new(_INSERT_INTERVAL), [interval_row(r) for r in rows])

    def _intervals(self, sql: str, args: list) -> list[IntervalRecord]:
        return [IntervalRecord(bytes(r[0]), *r[1:]) for r in self._rows(sql, args)]

    def interval_rows(self, device_id: bytes, from_end: int | None = None,
                      to_end: int | None = None) -> list[IntervalRecord]:
        cond, args = self._where(("device = ?", device_id), ("end_time >= ?", from_end), ("end_time <= ?", to_end))
        return self._intervals(f"{_SELECT}{cond} ORDER BY end_time", args)

    def interval_before(self, device_id: bytes, end: int) -> IntervalRecord | None:
        got = self._intervals(f"{_SELECT} WHERE device = ? AND end_time < ? ORDER BY end_time DESC LIMIT 1",
                              [device_id, end])
        return got[0] if got else None

    def interval_after(self, device_id: bytes, end: int) -> IntervalRecord | None:
        got = self._intervals(f"{_SELECT} WHERE device = ? AND end_time > ? ORDER BY end_time LIMIT 1",
                              [device_id, end])
        return got[0] if got else None
