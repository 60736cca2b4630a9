"""Table outages: a meter silent for longer than its reporting period x offline_after, and the cause found."""

from __future__ import annotations

from meterkit.store.postgres.base import Connection
from meterkit.store.records import OutageRecord
from meterkit.store.rows import evidence_json, outage_record, where


class OutagesTable(Connection):
    def open_outage(self, device_id: bytes, start: float, detected_at: float) -> int:
        return self._execute("INSERT INTO outages (device, start, detected_at) VALUES (%s, %s, %s) RETURNING id",
                             (device_id, start, detected_at)).fetchone()[0]

    def close_outage(self, outage_id: int, end: float) -> None:
        self._execute('UPDATE outages SET "end" = %s WHERE id = %s', (end, outage_id))

    def match_outage(self, outage_id: int, cause: str, power_up_at: int | None, evidence: dict) -> None:
        self._execute("UPDATE outages SET cause = %s, power_up_at = %s, evidence = %s WHERE id = %s",
                      (cause, power_up_at, evidence_json(evidence), outage_id))

    def outages(self, device_id: bytes | None = None, open_only: bool = False,
                closed_since: float | None = None) -> list[OutageRecord]:
        cond, args = where(("device = %s", device_id), ('"end" IS NULL', open_only), ('"end" >= %s', closed_since),
                           placeholder="%s")
        return [outage_record(r) for r in self._rows(f"SELECT * FROM outages{cond} ORDER BY id", args)]
