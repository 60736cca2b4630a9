"""What people look at: the fleet view (one record per meter) and whole tables for export."""

from __future__ import annotations

from meterkit.store.api import Export
from meterkit.store.records import FleetRecord
from meterkit.store.rows import FLEET_SQL, export_query, fleet_record, hexed
from meterkit.store.tables.base import Tables


class ReadOutQueries(Tables):
    def fleet(self, device_id: bytes | None = None) -> list[FleetRecord]:
        sql, args = FLEET_SQL.format(where=""), ()
        if device_id is not None:
            sql, args = FLEET_SQL.format(where="WHERE m.device = ?"), (bytes(device_id),)
        return [fleet_record(r) for r in self._rows(sql, args)]

    def export(self, table: str, device_id: bytes | None = None) -> Export:
        names, rows = self._query(*export_query(table, device_id))
        return names, hexed(rows)
