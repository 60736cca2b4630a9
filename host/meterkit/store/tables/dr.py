"""Tables dr_groups (each meter's demand-response / limiter groups), dr_events (the events the utility called)
and dr_targets (the meters each event was queued for, with their command_queue entry)."""

from __future__ import annotations

from collections.abc import Iterable

from meterkit.store.records import DREventRecord, DRTarget
from meterkit.store.rows import dr_event_record, dr_event_row, group_ids
from meterkit.store.tables.base import Tables

_EVENT_COLUMNS = "id, group_id, start, duration_s, limit_w, shed, created_at, note"


class DRTables(Tables):
    # -- groups
    def set_groups(self, device_id: bytes, groups: Iterable[int]) -> None:
        ids = group_ids(groups)
        self._execute("DELETE FROM dr_groups WHERE device = ?", (bytes(device_id),))
        self._insert_many("INSERT INTO dr_groups (device, group_id) VALUES (?, ?)",
                          [(bytes(device_id), g) for g in ids])

    def groups(self, device_id: bytes) -> list[int]:
        return [r[0] for r in self._rows("SELECT group_id FROM dr_groups WHERE device = ? ORDER BY group_id",
                                         (bytes(device_id),))]

    def group_members(self, group_id: int) -> list[bytes]:
        return [bytes(r[0]) for r in self._rows("SELECT device FROM dr_groups WHERE group_id = ? ORDER BY device",
                                                (group_id,))]

    # -- events and whom they went to
    def add_dr_event(self, event: DREventRecord) -> None:
        # ON CONFLICT rather than catching the error: on PostgreSQL a failed statement spoils the whole transaction
        done = self._execute(f"INSERT INTO dr_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (id) DO NOTHING", dr_event_row(event)).rowcount
        if done != 1:
            raise ValueError(f"demand-response event {event.id} is already recorded")

    def dr_event(self, event_id: int) -> DREventRecord | None:
        r = self._one(f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE id = ?", (event_id,))
        return dr_event_record(r) if r else None

    def dr_events(self, device_id: bytes | None = None) -> list[DREventRecord]:
        if device_id is None:
            rows = self._rows(f"SELECT {_EVENT_COLUMNS} FROM dr_events ORDER BY start, id")
        else:
            rows = self._rows(f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE id IN (SELECT event_id FROM dr_targets "
                              "WHERE device = ?) ORDER BY start, id", (bytes(device_id),))
        return [dr_event_record(r) for r in rows]

    def next_dr_id(self) -> int:
        r = self._one("SELECT max(id) FROM dr_events")
        return (r[0] or 0) + 1

    def add_dr_target(self, event_id: int, device_id: bytes, queue_id: int | None) -> None:
        self._execute("INSERT INTO dr_targets (event_id, device, queue_id) VALUES (?, ?, ?)",
                      (event_id, bytes(device_id), queue_id))

    def dr_targets(self, event_id: int) -> list[DRTarget]:
        return [DRTarget(r[0], bytes(r[1]), r[2]) for r in self._rows(
            "SELECT event_id, device, queue_id FROM dr_targets WHERE event_id = ? ORDER BY device", (event_id,))]
