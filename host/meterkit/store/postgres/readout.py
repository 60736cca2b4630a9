"""What people look at: the fleet view (one record per meter) and whole tables for export."""

from __future__ import annotations

from meterkit.store.api import Export
from meterkit.store.postgres.base import Connection
from meterkit.store.records import FleetRecord
from meterkit.store.rows import FLEET_SQL, export_query, fleet_record, hexed


class ReadOutQueries(Connection):
    def fleet(self, device_id: bytes | None = None) -> list[FleetRecord]:
        sql, args = FLEET_SQL.format(where=""), ()
        if device_id is not None:
            sql, args = FLEET_SQL.format(where="WHERE m.device = %s"), (bytes(device_id),)
        return [fleet_record(r) for r in self._rows(sql, args)]

    def export(self, table: str, device_id: bytes | None = None) -> Export:
        """As SQLite's; the rows are read at once (a client-side cursor), then handed out one by one."""
        cur = self._read(*export_query(table, device_id, "%s"))
        return [d.name for d in cur.description or ()], hexed(cur.fetchall())
