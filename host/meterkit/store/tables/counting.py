"""Tables rejects (rejected frames by claimed device, peer and reason) and counters (the concentrator's, kept
across restarts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meterkit.store.records import RejectRecord
from meterkit.store.tables.base import Tables


class CountingTables(Tables):
    def add_rejects(self, rejects: Iterable[RejectRecord]) -> None:
        self._insert_many(
            "INSERT INTO rejects (device, peer, reason, count, first_at, last_at, last_detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, peer, reason) DO UPDATE SET "
            "count = rejects.count + excluded.count, last_at = excluded.last_at, "
            "last_detail = coalesce(excluded.last_detail, rejects.last_detail)",
            [(r.device_id, r.peer, r.reason, r.count, r.first_at, r.last_at, r.last_detail) for r in rejects])

    def rejects(self) -> list[RejectRecord]:
        return [RejectRecord(bytes(r[0]), *r[1:]) for r in self._rows(
            "SELECT device, peer, reason, count, first_at, last_at, last_detail FROM rejects "
            "ORDER BY reason, device, peer")]

    def add_counters(self, deltas: Mapping[str, int]) -> None:
        self._insert_many("INSERT INTO counters (name, value) VALUES (?, ?) "
                          "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                          [(k, v) for k, v in deltas.items() if v])

    def counters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._rows("SELECT name, value FROM counters ORDER BY name")}
