"""Table outages: a meter silent for longer than its reporting period x offline_after, and the cause found."""

from __future__ import annotations

from meterkit.store.records import OutageRecord
from meterkit.store.rows import evidence_json, outage_record
from meterkit.store.tables.base import Tables


class OutagesTable(Tables):
    def open_outage(self, device_id: bytes, start: float, detected_at: float) -> int:
        return self._returned("INSERT INTO outages (device, start, detected_at) VALUES (?, ?, ?) RETURNING id",
                              (device_id, start, detected_at))[0]

    def close_outage(self, outage_id: int, end: float) -> None:
        self._execute('UPDATE outages SET "end" = ? WHERE id = ?', (end, outage_id))

    def match_outage(self, outage_id: int, cause: str, power_up_at: int | None, evidence: dict) -> None:
        self._execute("UPDATE outages SET cause = ?, power_up_at = ?, evidence = ? WHERE id = ?",
                      (cause, power_up_at, evidence_json(evidence), outage_id))

    def outages(self, device_id: bytes | None = None, open_only: bool = False,
                closed_since: float | None = None) -> list[OutageRecord]:
        cond, args = self._where(("device = ?", device_id), ('"end" IS NULL', open_only), ('"end" >= ?', closed_since))
        return [outage_record(r) for r in self._rows(f"SELECT * FROM outages{cond} ORDER BY id", args)]
