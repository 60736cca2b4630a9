"""The former store interface (rows as tuples in column order), kept for the concentrator until it speaks
meterkit.store.api.Store (issue 9, phase 2); then this module goes.

Every method runs on meterkit.store.sqlite (the same schema, the same SQL): it converts its arguments and
results and nothing else. New code uses meterkit.store.open_store and the api.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from meterkit.store import sqlite as _sqlite
from meterkit.store.api import EXPORT_TABLES, GAP_SETTLED, QUEUE_PENDING, QUEUE_STATES, StoreError
from meterkit.store.records import (
    DEFAULT_PERIOD_S,
    CommandRecord,
    DeliveryState,
    GapRecord,
    MeterRecord,
    NewMeter,
    OutageRecord,
    QueuedCommand,
    RejectRecord,
)
from meterkit.store.sqlite.base import I64_MAX, I64_MIN, i64
from meterkit.store.sqlite.evidence import INSERT_FRAME, INSERT_READING
from meterkit.store.sqlite.logs import INSERT_BILLING, INSERT_EVENT
from meterkit.store.sqlite.profile import INSERT_INTERVAL
from meterkit.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from meterkit.wire.records import CommandResponse

__all__ = ["DEFAULT_PERIOD_S", "EXPORT_TABLES", "GAP_SETTLED", "I64_MAX", "I64_MIN", "MIGRATIONS", "QUEUE_PENDING",
           "QUEUE_STATES", "SCHEMA_VERSION", "GapRecord", "MeterRecord", "OutageRecord", "QueuedCommand",
           "SQLiteStore", "Store", "StoreError", "i64", "migrate", "schema_version"]


_DELIVERY = {"last_seen", "ack_seq", "first_seq", "online", "frames_stored", "last_counter"}


def _neighbour(r: Any) -> tuple | None:
    return None if r is None else (r.end, r.period_s, r.seq, r.status)


class SQLiteStore:
    """The former interface on one SQLite file (see meterkit.store.sqlite.SQLiteStore for the arguments)."""

    def __init__(self, path: str | os.PathLike, create: bool = True, synchronous: str = "FULL",
                 readonly: bool = False, busy_timeout_ms: int = 5000):
        self._s = s = _sqlite.SQLiteStore(path, create, synchronous, readonly, busy_timeout_ms)
        self.path, self.migrated, self.version = s.path, s.migrated, s.version
        # unchanged: these take and give what they always did
        self.register_meter, self.meter, self.meters, self.update_meter = (
            s.register_meter, s.meter, s.meters, s.update_meter)
        self.frame_raw, self.seqs_above, self.max_seq, self.lookup_device = (
            s.frame_raw, s.seqs_above, s.max_seq, s.lookup_device)
        self.queue_command, self.queued_commands, self.update_queued, self.queued_for_counter = (
            s.queue_command, s.queued_commands, s.update_queued, s.queued_for_counter)
        self.open_outage, self.close_outage, self.match_outage, self.outages = (
            s.open_outage, s.close_outage, s.match_outage, s.outages)
        self.add_gap, self.update_gap, self.gaps = s.add_gap, s.update_gap, s.gaps
        self.add_counters, self.counters, self.export = s.add_counters, s.counters, s.export
        self.commit, self.rollback, self.close = s.commit, s.rollback, s.close

    @property
    def connection(self) -> Any:
        return self._s._conn

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows in column order
    def register_meters(self, meters: Iterable[tuple], now: float | None = None) -> list[MeterRecord]:
        return self._s.register_meters([NewMeter(key, name, period) for key, name, period in meters], now)

    def update_meters(self, names: Sequence[str], rows: Iterable[tuple]) -> None:
        if not names:
            raise ValueError("unknown meter fields []")
        if set(names) == _DELIVERY:  # the concentrator's batch: one bulk update
            self._s.save_delivery([DeliveryState(r[-1], **dict(zip(names, r[:-1], strict=True))) for r in rows])
        elif tuple(names) == ("last_counter",):
            self._s.save_counters({r[1]: r[0] for r in rows})
        else:
            for row in rows:
                self._s.update_meter(row[-1], **dict(zip(names, row[:-1], strict=True)))

    def insert_frames(self, rows: Sequence[tuple]) -> int:
        return self._s._insert_many(INSERT_FRAME, rows)

    def insert_frame(self, row: tuple) -> bool:
        return self._s._insert_many(INSERT_FRAME, [row]) == 1

    def insert_readings(self, rows: Sequence[tuple]) -> None:
        self._s._insert_many(INSERT_READING, rows)

    def insert_intervals(self, rows: Sequence[tuple]) -> int:
        return self._s._insert_many(INSERT_INTERVAL, rows)

    def insert_events(self, rows: Sequence[tuple]) -> None:
        self._s._insert_many(INSERT_EVENT, rows)

    def insert_billing(self, rows: Sequence[tuple]) -> None:
        self._s._insert_many(INSERT_BILLING, rows)

    def interval_rows(self, device_id: bytes, from_end: int, to_end: int | None = None) -> list[tuple]:
        return [_neighbour(r) for r in self._s.interval_rows(device_id, from_end, to_end)]  # type: ignore[misc]

    def interval_before(self, device_id: bytes, end: int) -> tuple | None:
        return _neighbour(self._s.interval_before(device_id, end))

    def interval_after(self, device_id: bytes, end: int) -> tuple | None:
        return _neighbour(self._s.interval_after(device_id, end))

    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None, limit: int = 10000,
                     ) -> list[tuple]:
        return [(f.seq, f.kind, f.meter_time, f.status) for f in self._s.frames_after(device_id, seq, received_to,
                                                                                       limit)]

    def events_of(self, device_id: bytes, seqs: Iterable[int]) -> list[tuple]:
        return [(e.seq, e.event_seq, e.code, e.value, e.time) for e in self._s.events(device_id, list(seqs))]

    def record_command(self, device_id: bytes, counter: int, op: int, args: dict | None, sent_at: float,
                       expires_at: int, queue_id: int | None = None) -> None:
        self._s.record_command(CommandRecord(device_id, counter, op, args, sent_at, expires_at, queue_id))

    def record_response(self, device_id: bytes, counter: int, result: int, reason: str | None,
                        at: float) -> tuple | None:
        cmd = self._s.record_response(CommandResponse(device_id, 0, counter, result, reason), at)
        return None if cmd is None else (cmd.op, cmd.args)

    def command_attempts(self, queue_id: int) -> list[tuple]:
        return [(c.counter, c.sent_at, c.expires_at, c.answered_at, c.result, c.reason)
                for c in self._s.command_attempts(queue_id)]

    def add_rejects(self, rows: Iterable[tuple]) -> None:
        self._s.add_rejects([RejectRecord(dev, peer, reason, n, at, at, detail)
                             for dev, peer, reason, n, at, detail in rows])

    def rejects(self) -> list[dict]:
        out = []
        for r in self._s.rejects():
            d = asdict(r)
            d["device"] = d.pop("device_id")
            out.append(d)
        return out

    def fleet(self) -> list[dict]:
        out = []
        for f in self._s.fleet():
            d = {**asdict(f.meter), **{k: v for k, v in asdict(f).items() if k != "meter"}}
            d["device"] = d.pop("device_id").hex()
            d["public_key"] = d["public_key"].hex()
            out.append(d)
        return out


Store = SQLiteStore  # what the concentrator annotates with
