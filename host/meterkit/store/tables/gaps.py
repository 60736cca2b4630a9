"""Table gaps: what meters did not deliver (sequence numbers, load-profile end times) and how it was settled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meterkit.store.records import GapRecord
from meterkit.store.rows import GAP_UPDATABLE, gap_record
from meterkit.store.tables.base import Tables


class GapsTable(Tables):
    def add_gap(self, device_id: bytes, kind: str, first: int, last: int, detected_at: float,
                state: str = "open") -> int | None:
        r = self._returned(self._insert_new("INSERT INTO gaps (device, kind, first, last, detected_at, state) "
                                            "VALUES (?, ?, ?, ?, ?, ?)") + " RETURNING id",
                           (device_id, kind, first, last, detected_at, state))
        return None if r is None else r[0]

    def update_gap(self, gap_id: int, **fields: Any) -> None:
        self._set("gaps", "id", gap_id, fields, GAP_UPDATABLE, "gap")

    def gaps(self, device_id: bytes | None = None, kind: str | None = None,
             states: Iterable[str] | None = None) -> list[GapRecord]:
        cond, args = self._where(("device = ?", device_id), ("kind = ?", kind), ("state IN", states))
        return [gap_record(r) for r in self._rows(f"SELECT * FROM gaps{cond} ORDER BY id", args)]
