"""The ingest's storage step: what one batch writes, through the store's bulk methods (meterkit.store.api:
one executemany per table per batch). The ingest hands over typed records (meterkit.wire.records), by kind;
the store turns them into its rows (register JSON, values beyond what it can hold)."""

from __future__ import annotations

from collections.abc import Iterable

from meterkit.headend.devices import Device
from meterkit.store.api import Store
from meterkit.store.records import DeliveryState
from meterkit.wire.records import BillingSnapshot, Event, Frame, Hello, IntervalRow, Reading


def write_batch(store: Store, received_at: float, frames: list[Frame], readings: list[Reading],
                intervals: list[IntervalRow], events: list[Event], billing: list[BillingSnapshot],
                hellos: Iterable[Hello]) -> bool:
    """Store a batch's frames and records in the open transaction, and what the meters' hellos said (firmware,
    board, boot count). False (and nothing else written) when the database already held some of the frames:
    another process wrote them."""
    if not frames:
        return True
    if store.add_frames(frames, received_at) != len(frames):
        return False
    if readings:
        store.add_readings(readings)
    if intervals:
        store.add_interval_rows(intervals)
    if events:
        store.add_events(events)
    if billing:
        store.add_billing_snapshots(billing)
    store.add_hellos(hellos)
    return True


def save_delivery(store: Store, stored: Iterable[Device], acked_only: Iterable[Device], now: float) -> None:
    """Each meter's delivery state after a batch: for meters with frames stored, when they were last heard, the
    watermark, frame count and the clock drift the batch measured; for every meter acknowledged, its command
    counter."""
    states = []
    for d in stored:
        measured = d.drift_at is not None
        states.append(DeliveryState(d.id, now, d.seqs.ack, d.seqs.first_seq, d.frames_stored, d.counter, True,
                                    d.drift if measured else None, d.drift_at))
        d.drift_at = None
    store.save_delivery(states)
    store.save_counters({d.id: d.counter for d in acked_only})
