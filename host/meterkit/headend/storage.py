"""The ingest's storage step: what one batch writes, as the current store takes it (store/db.py: positional
tuples, one insert call per table). The ingest hands over typed records (meterkit.wire.records), by kind;
nothing else of the head-end builds these rows.

The raw signed frame is stored beside the decoded rows as evidence. Integers that SQLite cannot hold (outside
signed 64 bits; the protocol allows uint64) go in as NULL (an event value as text); the raw frame keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from meter import messages as M
from meterkit.headend.devices import Device
from meterkit.store.db import I64_MAX, I64_MIN, Store, i64
from meterkit.wire.records import BillingSnapshot, Event, Frame, Hello, IntervalRow, Reading

_OBIS: dict[int, str] = {}  # register key -> 'C.D.E'
_REGS_FMT: dict[tuple, str] = {}  # register key set -> JSON template (a meter sends the same set every time)


def _obis(k: int) -> str:
    s = _OBIS.get(k)
    if s is None:
        s = _OBIS[k] = M.obis_code(k)
    return s


def regs_json(regs: dict[int, int]) -> str:
    """{10800: 5, 20800: 1} -> '{"1.8.0": 5, "2.8.0": 1}' (what json.dumps gives, at a third of its cost)."""
    keys = tuple(regs)
    fmt = _REGS_FMT.get(keys)
    if fmt is None:
        if len(_REGS_FMT) > 1000:
            _REGS_FMT.clear()
        fmt = _REGS_FMT[keys] = "{" + ", ".join(f'"{_obis(k)}": %d' for k in keys) + "}"
    return fmt % tuple(regs.values())


def _reading(r: Reading) -> tuple:
    regs = r.registers
    imp, exp = regs[M.OBIS_IMPORT], regs[M.OBIS_EXPORT]
    row = (r.device_id, r.seq, r.meter_time, r.status, imp, exp, regs_json(regs), r.power_mw, r.voltage_mv,
           r.current_ma, r.uncovered_ppm)
    if not (r.status <= I64_MAX and I64_MIN <= imp <= I64_MAX and I64_MIN <= exp <= I64_MAX
            and I64_MIN <= r.power_mw <= I64_MAX and r.voltage_mv <= I64_MAX and I64_MIN <= r.current_ma <= I64_MAX):
        row = tuple(i64(v) if type(v) is int else v for v in row)
    return row


def _interval(r: IntervalRow) -> tuple:
    return (r.device_id, r.end, i64(r.import_mwh), i64(r.export_mwh), i64(r.status), i64(r.period_s), r.seq)


def _event(r: Event) -> tuple:
    v = r.value
    if type(v) is int and i64(v) is None:
        v = str(v)
    return (r.device_id, r.seq, i64(r.event_seq), i64(r.code), v, r.time)


def _billing(r: BillingSnapshot) -> tuple:
    md = json.dumps({_obis(k): list(v) for k, v in r.max_demand.items()}) if r.max_demand else None
    return (r.device_id, r.seq, r.period_end, regs_json(r.registers), md)


def write_batch(store: Store, received_at: float, frames: list[Frame], readings: list[Reading],
                intervals: list[IntervalRow], events: list[Event], billing: list[BillingSnapshot]) -> bool:
    """Insert a batch's frames and records into the open transaction. False (and nothing else written) when
    the database already held some of the frames: another process wrote them."""
    if not frames:
        return True
    rows = [(f.device_id, f.seq, f.kind, f.meter_time, f.status if f.status <= I64_MAX else None, received_at,
             f.raw) for f in frames]
    if store.insert_frames(rows) != len(rows):
        return False
    if readings:
        store.insert_readings([_reading(r) for r in readings])
    if intervals:
        store.insert_intervals([_interval(r) for r in intervals])
    if events:
        store.insert_events([_event(r) for r in events])
    if billing:
        store.insert_billing([_billing(r) for r in billing])
    return True


def save_hellos(store: Store, hellos: Iterable[Hello]) -> None:
    """What a meter said at boot: its firmware, board and boot count."""
    for h in hellos:
        store.update_meter(h.device_id, firmware=h.firmware, board=h.board, boot_count=i64(h.boot_count))


def save_delivery(store: Store, stored: Iterable[Device], acked_only: Iterable[Device], now: float) -> None:
    """Each meter's delivery state after a batch: for meters with frames stored, when they were last heard, the
    watermark and frame count; for every meter acknowledged, its command counter."""
    store.update_meters(("last_seen", "ack_seq", "first_seq", "online", "frames_stored", "last_counter"),
                        [(now, d.seqs.ack, d.seqs.first_seq, 1, d.frames_stored, d.counter, d.id) for d in stored])
    store.update_meters(("last_counter",), [(d.counter, d.id) for d in acked_only])
