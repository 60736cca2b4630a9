"""Table meters: the registry (keys, names, reporting periods), what the latest hello said, and the delivery
state the concentrator keeps per meter (last seen, ack watermark, command counter). PostgreSQL writes the
delivery state and counters its own faster way (meterkit.store.postgres.bulk)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from meterkit import wire
from meterkit.store.records import DEFAULT_PERIOD_S, DeliveryState, HeldMeter, MeterRecord, NewMeter
from meterkit.store.rows import METER_UPDATABLE, i64, lookup_hex, meter_record, period
from meterkit.store.tables.base import Tables
from meterkit.wire.records import Hello

_UPSERT = ("INSERT INTO meters (device, public_key, name, provisioned_at, reporting_period_s) VALUES (?, ?, ?, ?, ?) "
           "ON CONFLICT (device) DO UPDATE SET name = coalesce(excluded.name, meters.name), "
           "reporting_period_s = excluded.reporting_period_s")


class RegistryTable(Tables):
    def register_meter(self, device_id: bytes | None, public_key: Any, name: str | None = None,
                       reporting_period_s: int = DEFAULT_PERIOD_S, now: float | None = None) -> MeterRecord:
        point = wire.point_of(public_key)
        derived = wire.key_id(point)
        if device_id is not None and bytes(device_id) != derived:
            raise ValueError(f"device id {bytes(device_id).hex()} does not belong to that key "
                             f"(its id is {derived.hex()})")
        period(reporting_period_s)
        old = self.meter(derived)
        if old is not None and old.public_key != point:  # pragma: no cover - ids are hashes of keys: a collision
            raise ValueError(f"device {derived.hex()} is registered with another key")
        self._write_meters([(derived, point, name, time.time() if now is None else now, reporting_period_s)])
        rec = self.meter(derived)
        assert rec is not None
        return rec

    def register_meters(self, meters: Iterable[NewMeter], now: float | None = None) -> list[MeterRecord]:
        t = time.time() if now is None else now
        rows = []
        for m in meters:
            point = wire.point_of(m.public_key)
            rows.append((wire.key_id(point), point, m.name, t, period(m.reporting_period_s)))
        self._write_meters(rows)
        return [m for m in (self.meter(r[0]) for r in rows) if m is not None]

    def _write_meters(self, rows: list[tuple]) -> None:
        """Insert or update these meters and commit (all of them or, on an error, none)."""
        try:
            self._insert_many(_UPSERT, rows)
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def meter(self, device_id: bytes) -> MeterRecord | None:
        r = self._one("SELECT * FROM meters WHERE device = ?", (bytes(device_id),))
        return meter_record(r) if r else None

    def meters(self) -> list[MeterRecord]:
        return [meter_record(r) for r in self._rows("SELECT * FROM meters ORDER BY name NULLS FIRST, device")]

    def lookup_device(self, text: str) -> bytes | None:
        dev = lookup_hex(text)
        if dev is not None and self.meter(dev) is not None:
            return dev
        r = self._one("SELECT device FROM meters WHERE name = ? ORDER BY device LIMIT 1", (text,))
        return bytes(r[0]) if r else None

    def update_meter(self, device_id: bytes, **fields: Any) -> None:
        self._set("meters", "device", bytes(device_id), fields, METER_UPDATABLE, "meter")

    def add_hellos(self, hellos: Iterable[Hello]) -> None:
        rows = [(h.firmware, h.board, i64(h.boot_count), h.device_id) for h in hellos]
        self._insert_many("UPDATE meters SET firmware = ?, board = ?, boot_count = ? WHERE device = ?", rows)

    # -- delivery state
    def save_delivery(self, states: Iterable[DeliveryState]) -> None:
        rows = [(s.last_seen, s.ack_seq, s.first_seq, int(s.online), s.frames_stored, s.last_counter,
                 s.clock_drift_s, s.clock_drift_at, s.device_id) for s in states]
        self._insert_many("UPDATE meters SET last_seen = ?, ack_seq = ?, first_seq = ?, online = ?, frames_stored = ?, "
                          "last_counter = ?, clock_drift_s = coalesce(?, clock_drift_s), "
                          "clock_drift_at = coalesce(?, clock_drift_at) WHERE device = ?", rows)

    def lock_meters(self, device_ids: Iterable[bytes]) -> dict[bytes, HeldMeter]:
        devs = sorted({bytes(d) for d in device_ids})  # one order for every process: no deadlock between them
        if not devs:
            return {}
        self._begin(immediate=True)  # SQLite: the database's write lock is every row's
        cond, args = self._where(("device IN", devs))
        rows = self._rows(f"SELECT device, last_counter, ack_seq, frames_stored FROM meters{cond} ORDER BY device"
                          f"{self._row_locks(' FOR UPDATE')}", args)
        return {bytes(r[0]): HeldMeter(r[1], r[2], r[3]) for r in rows}

    def save_counters(self, counters: Mapping[bytes, int]) -> None:
        self._insert_many("UPDATE meters SET last_counter = ? WHERE device = ?",
                          [(c, dev) for dev, c in counters.items()])
