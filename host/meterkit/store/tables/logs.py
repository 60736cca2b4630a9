"""Tables events (the meters' event logs, 99.98.x; the value an integer or a text: a JSON column) and billing
(billing snapshots), one entry per frame."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from meterkit.store.records import EventRecord
from meterkit.store.rows import billing_of, billing_row, event_row
from meterkit.store.tables.base import Tables
from meterkit.wire.records import BillingSnapshot, Event

_INSERT_EVENT = "INSERT INTO events (device, seq, event_seq, code, value, event_time) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_BILLING = "INSERT INTO billing (device, seq, period_end, registers, max_demand) VALUES (?, ?, ?, ?, ?)"


class LogTables(Tables):
    def add_events(self, events: Sequence[Event]) -> None:
        value = self._json_value
        rows = [(*r[:4], value(r[4]), r[5]) for r in map(event_row, events)]
        self._insert_many(self._insert_new(_INSERT_EVENT), rows)

    def events(self, device_id: bytes, seqs: Iterable[int] | None = None,
               codes: Iterable[int] | None = None) -> list[EventRecord]:
        cond, args = self._where(("device = ?", device_id), ("seq IN", seqs), ("code IN", codes))
        return [EventRecord(bytes(r[0]), *r[1:]) for r in self._rows(
            f"SELECT device, seq, event_seq, code, value, event_time FROM events{cond} ORDER BY seq", args)]

    def add_billing_snapshots(self, snapshots: Sequence[BillingSnapshot]) -> None:
        self._insert_many(self._insert_new(_INSERT_BILLING), [billing_row(b) for b in snapshots])

    def billing_snapshots(self, device_id: bytes) -> list[BillingSnapshot]:
        rows = self._rows("SELECT seq, period_end, registers, max_demand FROM billing WHERE device = ? ORDER BY seq",
                          (device_id,))
        return [billing_of(device_id, r) for r in rows]
