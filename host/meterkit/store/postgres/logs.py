"""Tables events (the meters' event logs, 99.98.x; value as jsonb: an integer or a text) and billing (billing
snapshots), one entry per frame."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg.types.json import Jsonb

from meterkit.store.postgres.base import Connection, pg_text
from meterkit.store.records import EventRecord
from meterkit.store.rows import billing_of, billing_row, event_row, where
from meterkit.wire.records import BillingSnapshot, Event

_INSERT_EVENT = ("INSERT INTO events (device, seq, event_seq, code, value, event_time) "
                 "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
_INSERT_BILLING = ("INSERT INTO billing (device, seq, period_end, registers, max_demand) "
                   "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")


def _event_row(e: Event) -> tuple:
    row = event_row(e)
    return (*row[:4], Jsonb(pg_text(row[4])), row[5])  # jsonb cannot hold a NUL either


class LogTables(Connection):
    def add_events(self, events: Sequence[Event]) -> None:
        self._insert_many(_INSERT_EVENT, [_event_row(e) for e in events])

    def events(self, device_id: bytes, seqs: Iterable[int] | None = None,
               codes: Iterable[int] | None = None) -> list[EventRecord]:
        cond, args = where(("device = %s", device_id), ("seq IN", seqs), ("code IN", codes), placeholder="%s")
        return [EventRecord(bytes(r[0]), *r[1:]) for r in self._rows(
            f"SELECT device, seq, event_seq, code, value, event_time FROM events{cond} ORDER BY seq", args)]

    def add_billing_snapshots(self, snapshots: Sequence[BillingSnapshot]) -> None:
        self._insert_many(_INSERT_BILLING, [billing_row(b) for b in snapshots])

    def billing_snapshots(self, device_id: bytes) -> list[BillingSnapshot]:
        rows = self._rows("SELECT seq, period_end, registers, max_demand FROM billing WHERE device = %s "
                          "ORDER BY seq", (device_id,))
        return [billing_of(device_id, r) for r in rows]
