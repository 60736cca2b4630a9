"""What the store keeps about meters and their delivery, as typed records.

What meters send is a wire record (meterkit.wire.records: Frame, Hello, Reading, IntervalRow, Event,
BillingSnapshot, CommandResponse): the store takes those as they are. The records here are the store's own: the
registry, delivery state, gaps, outages, commands and counts, and the read-backs of what the store decoded
from frames. In a read-back a number that the store could not keep (beyond signed 64 bits: the protocol allows
uint64) is None; the stored frame (``frame_raw``) keeps the exact value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

DEFAULT_PERIOD_S = 60


@dataclass
class MeterRecord:
    """A registered meter (its key, name and reporting period) and what the head-end keeps about it."""

    device_id: bytes
    public_key: bytes  # 65-byte uncompressed P-256 point
    name: str | None
    provisioned_at: float
    reporting_period_s: int
    last_seen: float | None = None  # receive time of its newest frame (concentrator clock)
    last_counter: int = 0  # the last command/ack counter signed for it
    firmware: str | None = None  # from its latest hello
    board: str | None = None
    boot_count: int | None = None
    ack_seq: int | None = None  # cumulative acknowledgement watermark
    first_seq: int | None = None  # first sequence number stored
    online: bool = False
    frames_stored: int = 0
    clock_drift_s: float | None = None  # its clock minus the concentrator's, as last measured (None: never)
    clock_drift_at: float | None = None  # ... when (concentrator clock)


@dataclass(frozen=True)
class NewMeter:
    """A meter to register: its public key (point, PEM, key object), a name, its reporting period."""

    public_key: Any
    name: str | None = None
    reporting_period_s: int = DEFAULT_PERIOD_S


class HeldMeter(NamedTuple):
    """A meter's delivery state as committed, read with its row held for the open transaction (Store.lock_meters):
    what another concentrator may have moved on since this process read it."""

    last_counter: int
    ack_seq: int | None
    frames_stored: int


@dataclass(frozen=True)
class DeliveryState:
    """What the concentrator keeps per meter after a batch: when it was heard, the ack watermark, the first
    sequence number stored, how many frames are stored, the last command counter signed for it; and its clock
    drift when the batch measured it (None: unchanged)."""

    device_id: bytes
    last_seen: float
    ack_seq: int | None
    first_seq: int | None
    frames_stored: int
    last_counter: int
    online: bool = True
    clock_drift_s: float | None = None
    clock_drift_at: float | None = None


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """A stored frame without its bytes (frame_raw gives those)."""

    device_id: bytes
    seq: int
    kind: int
    meter_time: int
    status: int | None
    received_at: float


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    """A stored load-profile row (99.1.0), one per meter and end time."""

    device_id: bytes
    end: int
    import_mwh: int | None
    export_mwh: int | None
    status: int | None
    period_s: int | None
    seq: int  # the frame that carried it


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event; a value beyond signed 64 bits is kept as its decimal text."""

    device_id: bytes
    seq: int
    event_seq: int | None
    code: int | None
    value: int | str | None
    time: int


@dataclass(frozen=True)
class CommandRecord:
    """A signed command sent to a meter (every attempt, by its counter), and the meter's answer once it came."""

    device_id: bytes
    counter: int
    op: int
    args: dict | None  # {uint: value}
    sent_at: float
    expires_at: int
    queue_id: int | None = None  # the operator command it carried (None: the concentrator's own back-fill)
    answered_at: float | None = None
    result: int | None = None
    reason: str | None = None


@dataclass
class QueuedCommand:
    """An operator command in the queue."""

    id: int
    device_id: bytes
    op: int
    args: dict | None  # {uint: value}
    created_at: float
    expires_at: int
    state: str
    counter: int | None
    attempts: int
    sent_at: float | None
    answered_at: float | None
    result: int | None
    reason: str | None
    note: str | None
    attempt_expires: int | None = None  # signed expiry of the latest attempt
    by: str | None = None  # who queued it: an operator, or 'concentrator' (None: queued before the audit log)


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the command audit log (append only): what happened to a command, when, for whom."""

    at: float  # concentrator clock (queued: the time of queueing)
    device_id: bytes
    op: int
    actor: str  # who the command is for: the operator who queued it, or 'concentrator'
    action: str  # meterkit.store.api.AUDIT_ACTIONS
    queue_id: int | None = None  # None: the concentrator's own back-fill
    counter: int | None = None  # the attempt's command counter
    args: dict | None = None  # as queued, or as signed (an attempt)
    result: int | None = None  # the meter's answer
    reason: str | None = None  # the meter's reason, or why the head-end gave up
    id: int | None = None  # its place in the log (set when read back)


@dataclass
class OutageRecord:
    id: int
    device_id: bytes
    start: float
    detected_at: float
    end: float | None
    cause: str | None
    power_up_at: int | None
    evidence: dict | None


@dataclass
class GapRecord:
    id: int
    device_id: bytes
    kind: str
    first: int
    last: int
    detected_at: float
    state: str
    requested_at: float | None
    command_counter: int | None
    attempts: int
    missing: int | None
    closed_at: float | None


@dataclass(frozen=True)
class RejectRecord:
    """Rejected frames counted by claimed device (b"" when none could be read), peer and reason. Added to the
    store, `count` more were seen between first_at and last_at; read back, the totals."""

    device_id: bytes
    peer: str
    reason: str
    count: int
    first_at: float
    last_at: float
    last_detail: str | None = None


@dataclass(frozen=True)
class FleetRecord:
    """One meter in the fleet view: its registry entry, its latest reading, counts of its gaps and outages."""

    meter: MeterRecord
    import_wh: int | None
    export_wh: int | None
    reading_time: int | None
    gaps_backfilled: int  # frame gaps filled after a back-fill command
    gaps_open: int  # frame gaps open or requested
    gaps_settled: int  # frame gaps the meter said it cannot fill
    interval_gaps: int
    outages: int
    outage_open: int
    last_status: int | None = None  # status bits of its newest frame (ST_CLOCK_NOT_SET: its clock is not set)
    last_seq: int | None = None  # ... and its sequence number
    control: tuple[int, int, int] | None = None  # K_CONTROL of its newest reading (state, mode, limit W); None:
    control_seq: int | None = None  # no reading yet; the sequence number of that reading


@dataclass(frozen=True)
class DREventRecord:
    """A demand-response event the utility called: for group_id's meters, from start for duration_s, import
    limited to limit_w, or (shed) the load-control output opened."""

    id: int  # sent to the meters as A_DR_ID; their DR_* events carry it as value
    group_id: int
    start: int  # UTC s
    duration_s: int
    limit_w: int | None  # None: a shed
    shed: bool
    created_at: float
    note: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.duration_s


@dataclass(frozen=True)
class DRTarget:
    """A meter an event was queued for, and the command_queue entry that carries it (None: not queued)."""

    event_id: int
    device_id: bytes
    queue_id: int | None


@dataclass(frozen=True)
class AlertRecord:
    """A security alert (table alerts; meterkit.headend.monitor raises them). Added to the store, `count` more
    occurrences between first_at and last_at, folded into the open alert of the same rule, meter and source if
    there is one; read back, the totals. device_id b"": about a source address only; source "": about a meter
    only."""

    rule: str  # meterkit.headend.alertrules.RULES
    severity: str  # meterkit.store.api.SEVERITIES
    device_id: bytes
    source: str
    count: int
    first_at: float  # concentrator clock
    last_at: float
    detail: str | None = None  # the latest occurrence in words
    id: int | None = None  # set when read back (or returned by add_alerts)
    state: str = "open"  # meterkit.store.api.ALERT_STATES
    acked_at: float | None = None
    acked_by: str | None = None
