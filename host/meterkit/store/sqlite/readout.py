"""What people look at: the fleet view (one record per meter) and whole tables for export."""

from __future__ import annotations

from collections.abc import Iterator

from meterkit.store.api import EXPORT_TABLES, Export
from meterkit.store.records import FleetRecord
from meterkit.store.rows import fleet_record
from meterkit.store.sqlite.base import Connection

_FLEET_SQL = """SELECT m.*,
     (SELECT import_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS import_wh,
     (SELECT export_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS export_wh,
     (SELECT meter_time FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS reading_time,
     (SELECT status FROM frames f WHERE f.device = m.device ORDER BY seq DESC LIMIT 1) AS last_status,
     (SELECT max(seq) FROM frames f WHERE f.device = m.device) AS last_seq,
     (SELECT seq FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS control_seq,
     (SELECT coalesce(control_state, 1) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1)
       AS control_state,
     (SELECT coalesce(control_mode, 0) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1)
       AS control_mode,
     (SELECT coalesce(limit_w, 0) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS limit_w,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state = 'filled' AND g.attempts > 0) AS gaps_backfilled,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state IN ('open', 'requested')) AS gaps_open,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state IN ('skipped', 'lost')) AS gaps_settled,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'intervals') AS interval_gaps,
     (SELECT count(*) FROM outages o WHERE o.device = m.device) AS outages,
     (SELECT count(*) FROM outages o WHERE o.device = m.device AND o.end IS NULL) AS outage_open
   FROM meters m {where} ORDER BY m.name, m.device"""

_EXPORT_SQL = {
    "readings": ("SELECT device, seq, meter_time, status, import_wh, export_wh, power_mw, voltage_mv, "
                 "current_ma, uncovered_ppm, registers FROM readings", "device, seq"),
    "intervals": ("SELECT device, end_time, import_mwh, export_mwh, status, period_s, seq FROM intervals",
                  "device, end_time"),
    "events": ("SELECT device, seq, event_seq, code, value, event_time FROM events", "device, seq"),
    "billing": ("SELECT device, seq, period_end, registers, max_demand FROM billing", "device, seq"),
    "outages": ("SELECT device, start, end, detected_at, cause, power_up_at, evidence FROM outages",
                "device, start"),
    "commands": ("SELECT device, counter, op, args, sent_at, expires_at, answered_at, result, reason "
                 "FROM commands", "device, counter"),
    "gaps": ("SELECT device, kind, first, last, state, detected_at, requested_at, command_counter, "
             "attempts, missing, closed_at FROM gaps", "device, kind, first"),
    "command_queue": ("SELECT device, id, op, args, created_at, expires_at, state, counter, attempts, "
                      "sent_at, answered_at, result, reason, note, queued_by FROM command_queue", "device, id"),
    "audit": ("SELECT device, id, at, queue_id, counter, op, args, actor, action, result, reason FROM audit", "id"),
}
assert tuple(_EXPORT_SQL) == EXPORT_TABLES


class ReadOutQueries(Connection):
    def fleet(self, device_id: bytes | None = None) -> list[FleetRecord]:
        sql, args = _FLEET_SQL.format(where=""), ()
        if device_id is not None:
            sql, args = _FLEET_SQL.format(where="WHERE m.device = ?"), (bytes(device_id),)
        return [fleet_record(r) for r in self._rows(sql, args)]

    def export(self, table: str, device_id: bytes | None = None) -> Export:
        if table not in _EXPORT_SQL:
            raise ValueError(f"cannot export {table!r}: one of {', '.join(EXPORT_TABLES)}")
        sql, order = _EXPORT_SQL[table]
        args: tuple = ()
        if device_id is not None:
            sql += " WHERE device = ?"
            args = (device_id,)
        cur = self._conn.execute(f"{sql} ORDER BY {order}", args)
        names = [d[0] for d in cur.description]

        def rows() -> Iterator[tuple]:
            for r in cur:
                yield (r[0].hex(),) + tuple(r[1:])

        return names, rows()
