"""Table alerts: the security monitor's alerts (meterkit.headend.monitor). A partial unique index keeps at most one
open alert per (rule, device, source); an occurrence of one that is open adds to its count (one row for a flood,
not a row per frame). Acknowledging closes it for new occurrences: the next one opens a new alert."""

from __future__ import annotations

from collections.abc import Iterable

from meterkit.store.api import SEVERITIES
from meterkit.store.records import AlertRecord
from meterkit.store.tables.base import Tables

_COLUMNS = "id, rule, severity, device, source, state, count, first_at, last_at, detail, acked_at, acked_by"
# SQLite and PostgreSQL both take ON CONFLICT with the partial index's predicate (SQLite >= 3.24)
_UPSERT = ("INSERT INTO alerts (rule, severity, device, source, count, first_at, last_at, detail) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, device, source) WHERE state = 'open' DO UPDATE SET "
           "count = alerts.count + excluded.count, severity = excluded.severity, "
           "last_at = CASE WHEN excluded.last_at > alerts.last_at THEN excluded.last_at ELSE alerts.last_at END, "
           f"detail = coalesce(excluded.detail, alerts.detail) RETURNING {_COLUMNS}")


def _record(r: object) -> AlertRecord:
    return AlertRecord(r["rule"], r["severity"], bytes(r["device"]), r["source"], r["count"], r["first_at"],
                       r["last_at"], r["detail"], r["id"], r["state"], r["acked_at"], r["acked_by"])


class AlertsTable(Tables):
    def add_alerts(self, alerts: Iterable[AlertRecord]) -> list[AlertRecord]:
        out = []
        for a in alerts:
            if a.severity not in SEVERITIES:
                raise ValueError(f"alert severity {a.severity!r}: one of {', '.join(SEVERITIES)}")
            if a.count < 1:
                raise ValueError(f"alert count {a.count}: at least 1")
            out.append(_record(self._returned(_UPSERT, (a.rule, a.severity, bytes(a.device_id), a.source, a.count,
                                                        a.first_at, a.last_at, a.detail))))
        return out

    def alerts(self, device_id: bytes | None = None, severities: Iterable[str] | None = None,
               states: Iterable[str] | None = None, ids: Iterable[int] | None = None) -> list[AlertRecord]:
        dev = None if device_id is None else bytes(device_id)
        cond, args = self._where(("device = ?", dev), ("severity IN", severities), ("state IN", states),
                                 ("id IN", ids))
        return [_record(r) for r in self._rows(f"SELECT {_COLUMNS} FROM alerts{cond} ORDER BY id", args)]

    def ack_alert(self, alert_id: int, by: str, at: float) -> bool:
        if not by:
            raise ValueError("who acknowledges an alert must be named")
        return self._execute("UPDATE alerts SET state = 'acknowledged', acked_at = ?, acked_by = ? "
                             "WHERE id = ? AND state = 'open'", (at, by, alert_id)).rowcount == 1
