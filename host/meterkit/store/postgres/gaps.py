"""Table gaps: what meters did not deliver (sequence numbers, load-profile end times) and how it was settled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meterkit.store.postgres.base import Connection
from meterkit.store.records import GapRecord
from meterkit.store.rows import GAP_UPDATABLE, gap_record, where


class GapsTable(Connection):
    def add_gap(self, device_id: bytes, kind: str, first: int, last: int, detected_at: float,
                state: str = "open") -> int | None:
        r = self._execute("INSERT INTO gaps (device, kind, first, last, detected_at, state) "
                          "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                          (device_id, kind, first, last, detected_at, state)).fetchone()
        return None if r is None else r[0]

    def update_gap(self, gap_id: int, **fields: Any) -> None:
        self._set("gaps", "id", gap_id, fields, GAP_UPDATABLE, "gap")

    def gaps(self, device_id: bytes | None = None, kind: str | None = None,
             states: Iterable[str] | None = None) -> list[GapRecord]:
        cond, args = where(("device = %s", device_id), ("kind = %s", kind), ("state IN", states), placeholder="%s")
        return [gap_record(r) for r in self._rows(f"SELECT * FROM gaps{cond} ORDER BY id", args)]
