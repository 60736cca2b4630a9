"""The store interface: small protocols grouped by what they keep; ``Store`` is the union the concentrator needs.

Device ids are 8-byte ``bytes``. Methods take and return typed records (meterkit.wire.records for what meters
send, meterkit.store.records for the rest), never rows in column order and never a database's own types.

Transactions: every write method joins the transaction in progress (opening one if needed); nothing is durable
until ``commit()``, ``rollback()`` forgets it. Only ``register_meter(s)`` commit on their own. The concentrator
writes one ingested batch per transaction with the bulk ``add_*`` methods and acknowledges only after
``commit()`` returned.

Numbers: the protocol allows uint64; a store keeps decoded values it cannot hold (SQLite and PostgreSQL: beyond
signed 64 bits) as None, the stored frame keeps them exactly. Sequence numbers and command counters above
MAX_SEQ are not stored at all: the concentrator refuses such frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from meterkit.store.records import (
    DEFAULT_PERIOD_S,
    AlertRecord,
    AuditRecord,
    CommandRecord,
    DeliveryState,
    DREventRecord,
    DRTarget,
    EventRecord,
    FleetRecord,
    FrameRecord,
    GapRecord,
    HeldMeter,
    IntervalRecord,
    MeterRecord,
    NewMeter,
    OutageRecord,
    QueuedCommand,
    RejectRecord,
)
from meterkit.wire.records import BillingSnapshot, CommandResponse, Event, Frame, Hello, IntervalRow, Reading

MAX_SEQ = (1 << 63) - 1  # the largest sequence number and command counter a store keeps
GAP_KINDS = ("frames", "intervals")  # sequence numbers; load-profile end times
GAP_STATES = ("open", "requested", "filled", "resolved", "skipped", "lost", "not-sent")
GAP_SETTLED = ("skipped", "lost")  # holes the meter says it cannot fill: the ack may pass them
QUEUE_STATES = ("queued", "sent", "answered", "expired", "failed")
QUEUE_PENDING = ("queued", "sent")  # the concentrator still works on these
EXPORT_TABLES = ("readings", "intervals", "events", "billing", "outages", "commands", "gaps", "command_queue", "audit",
                 "alerts")
# the command audit log: what can happen to a command (refused: the meter answered no; answered-again: a repeated
# answer to an answered command, the first one kept)
AUDIT_ACTIONS = ("queued", "sent", "answered", "refused", "answered-again", "expired", "failed")
CONCENTRATOR = "concentrator"  # who the concentrator's own commands are for (set-time, back-fill, profile)
OUTAGE_CAUSES = ("power", "communication", "power+communication", "unknown")
SEVERITIES = ("info", "warning", "critical")  # of a security alert, lowest first
ALERT_STATES = ("open", "acknowledged")  # an open alert takes further occurrences; an acknowledged one is history

Export = tuple[list[str], Iterator[tuple]]

__all__ = ["ALERT_STATES", "AUDIT_ACTIONS", "CONCENTRATOR", "DEFAULT_PERIOD_S", "EXPORT_TABLES", "GAP_KINDS",
           "GAP_SETTLED", "GAP_STATES", "SEVERITIES", "MAX_SEQ", "OUTAGE_CAUSES", "QUEUE_PENDING", "QUEUE_STATES",
           "Alerts", "Billing", "Commands", "Counting", "Delivery", "DemandResponse", "Events", "Evidence", "Export",
           "HeadEndKeys", "Outages", "Profile", "ReadOuts", "Registry", "Store", "StoreError", "StoreUnavailable",
           "Transactions"]


class StoreError(Exception):
    """A database that cannot be used: missing, newer schema than this meterkit, not a meterkit database."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached now (refused, timed out, starting up or shutting down) or the
    connection to it was lost: the open transaction, if any, is gone (nothing of it stored). Worth trying again
    later; the store reconnects by itself on a later call (a PostgreSQL store; SQLite never raises it)."""


@runtime_checkable
class Transactions(Protocol):
    def commit(self) -> None:
        """Make everything written since the last commit durable."""

    def rollback(self) -> None:
        """Forget everything written since the last commit."""

    def close(self) -> None:
        """Roll back what is uncommitted and let go of the database."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Registry(Protocol):
    """The meters the head-end accepts, and what it keeps about each (meterkit.store.records.MeterRecord)."""

    def register_meter(self, device_id: bytes | None, public_key: Any, name: str | None = None,
                       reporting_period_s: int = DEFAULT_PERIOD_S, now: float | None = None) -> MeterRecord:
        """Add a meter (committed at once). device_id may be None: it is derived from the key (and, when given,
        must match it). Registering the same key again updates name (when given) and period; ValueError for a
        bad key or period."""

    def register_meters(self, meters: Iterable[NewMeter], now: float | None = None) -> list[MeterRecord]:
        """Register many meters in one transaction (committed; nothing of it when one is refused)."""

    def meter(self, device_id: bytes) -> MeterRecord | None: ...

    def meters(self) -> list[MeterRecord]:
        """Every registered meter, by name then device id."""

    def lookup_device(self, text: str) -> bytes | None:
        """A meter by its 16-hex-digit id or by its name."""

    def update_meter(self, device_id: bytes, **fields: Any) -> None:
        """Set fields of a meter's record (any MeterRecord field but device_id, public_key, provisioned_at;
        ValueError for others)."""

    def add_hellos(self, hellos: Iterable[Hello]) -> None:
        """Keep firmware, board and boot count of each meter's hello (the last one given per meter wins)."""


@runtime_checkable
class Delivery(Protocol):
    """Acknowledgement and command-counter state per meter, and the gaps in what meters delivered."""

    def save_delivery(self, states: Iterable[DeliveryState]) -> None:
        """Keep the delivery state of these meters (one bulk update)."""

    def save_counters(self, counters: Mapping[bytes, int]) -> None:
        """Keep the last command counter signed for these meters (device id -> counter)."""

    def lock_meters(self, device_ids: Iterable[bytes]) -> dict[bytes, HeldMeter]:
        """Open the write transaction (unless one is open) and hold these meters' rows until it ends, so that
        another process's transaction writing them waits for this one (PostgreSQL: SELECT ... FOR UPDATE, in
        device order; SQLite: BEGIN IMMEDIATE holds the whole database). Their delivery state as committed,
        by device (registered meters only): what this process must take up before it signs with a counter or
        acknowledges with a watermark."""

    def add_gap(self, device_id: bytes, kind: str, first: int, last: int, detected_at: float,
                state: str = "open") -> int | None:
        """Record a gap (kind 'frames': sequence numbers, 'intervals': row end times); its id, or None if one
        with this device, kind and first is already recorded."""

    def update_gap(self, gap_id: int, **fields: Any) -> None:
        """Set last, state, requested_at, command_counter, attempts, missing, closed_at (ValueError for others)."""

    def gaps(self, device_id: bytes | None = None, kind: str | None = None,
             states: Iterable[str] | None = None) -> list[GapRecord]:
        """Gaps (of a device, of a kind, in these states), oldest first."""


@runtime_checkable
class Evidence(Protocol):
    """The signed frames as received (PRIMARY KEY device + seq: the dedupe authority) and the readings in them."""

    def add_frames(self, frames: Sequence[Frame], received_at: float) -> int:
        """Store frames, skipping any (device, seq) already stored; returns how many were new."""

    def add_frame(self, frame: Frame, received_at: float) -> bool:
        """One frame; False when (device, seq) was already stored."""

    def frame_raw(self, device_id: bytes, seq: int) -> bytes | None:
        """The stored COSE bytes of a frame, or None."""

    def seqs_above(self, device_id: bytes, seq: int) -> list[int]:
        """Stored sequence numbers > seq, ascending."""

    def max_seq(self, device_id: bytes, received_to: float | None = None) -> int | None:
        """The newest sequence number stored (of frames received at or before received_to)."""

    def frames_after(self, device_id: bytes, seq: int, received_to: float | None = None,
                     limit: int | None = 10000) -> list[FrameRecord]:
        """Frames with sequence numbers above seq (received at or before received_to), ascending, at most
        `limit` (None: all)."""

    def add_readings(self, readings: Sequence[Reading]) -> None:
        """Store readings (one per frame; a frame's reading already stored is kept)."""


@runtime_checkable
class Profile(Protocol):
    """Load-profile rows (99.1.0), one per meter and end time, whichever frame carried them first."""

    def add_interval_rows(self, rows: Sequence[IntervalRow]) -> int:
        """Store rows, skipping (device, end) already stored; returns how many were new."""

    def interval_rows(self, device_id: bytes, from_end: int | None = None,
                      to_end: int | None = None) -> list[IntervalRecord]:
        """Stored rows with from_end <= end <= to_end (either bound open when None), ascending."""

    def interval_before(self, device_id: bytes, end: int) -> IntervalRecord | None:
        """The newest row ending before `end`."""

    def interval_after(self, device_id: bytes, end: int) -> IntervalRecord | None:
        """The oldest row ending after `end`."""


@runtime_checkable
class Events(Protocol):
    """The meters' event logs (99.98.x), one event per frame."""

    def add_events(self, events: Sequence[Event]) -> None: ...

    def events(self, device_id: bytes, seqs: Iterable[int] | None = None,
               codes: Iterable[int] | None = None) -> list[EventRecord]:
        """A meter's events (carried by these frames, with these codes), by frame sequence number."""


@runtime_checkable
class Billing(Protocol):
    """Billing snapshots: the registers and maximum demands a meter froze at the end of a billing period."""

    def add_billing_snapshots(self, snapshots: Sequence[BillingSnapshot]) -> None: ...

    def billing_snapshots(self, device_id: bytes) -> list[BillingSnapshot]:
        """A meter's snapshots, by frame sequence number."""


@runtime_checkable
class Outages(Protocol):
    """Silences longer than a meter's reporting period x offline_after, and their cause."""

    def open_outage(self, device_id: bytes, start: float, detected_at: float) -> int: ...

    def close_outage(self, outage_id: int, end: float) -> None: ...

    def match_outage(self, outage_id: int, cause: str, power_up_at: int | None, evidence: dict) -> None: ...

    def outages(self, device_id: bytes | None = None, open_only: bool = False,
                closed_since: float | None = None) -> list[OutageRecord]: ...


@runtime_checkable
class Commands(Protocol):
    """Signed commands sent (each attempt by its counter), the meters' answers, and the operator queue."""

    def record_command(self, command: CommandRecord) -> None:
        """A signed command sent (its counter is used once)."""

    def record_response(self, response: CommandResponse, at: float) -> CommandRecord | None:
        """Note a meter's answer to the command with its counter; returns that command as answered, or None
        when no such command was sent to that meter."""

    def command_attempts(self, queue_id: int) -> list[CommandRecord]:
        """Every signed attempt of a queued command, by counter."""

    def queue_command(self, device_id: bytes, op: int, args: dict | None, created_at: float, expires_at: int,
                      note: str | None = None, by: str = CONCENTRATOR) -> int:
        """Queue a command for `by` (an operator; the concentrator's own by default) and log it in the audit log
        (action 'queued'), in the transaction (commit to publish it); returns its id. ValueError for an op that
        is not an unsigned integer, a non-integer expiry, args not {uint: value}, or an empty `by`."""

    def queued_commands(self, device_id: bytes | None = None, states: Iterable[str] | None = None,
                        ids: Iterable[int] | None = None) -> list[QueuedCommand]:
        """Queue entries (of a device, in these states, with these ids), oldest first."""

    def claim_queued(self, queue_ids: Iterable[int]) -> list[QueuedCommand]:
        """Of these queue entries, those still pending that no other process holds, read afresh and held for the
        open write transaction (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE), oldest first:
        exactly one concentrator works on an entry at a time."""

    def update_queued(self, queue_id: int, **fields: Any) -> None:
        """Set state, counter, attempts, sent_at, answered_at, result, reason (ValueError for others); a result
        the store cannot hold is kept as None."""

    def queued_for_counter(self, device_id: bytes, counter: int) -> QueuedCommand | None:
        """The queue entry whose attempt used this counter, or None (a back-fill, or never sent)."""

    def add_audit(self, record: AuditRecord) -> None:
        """Append to the command audit log (in the transaction); ValueError for an action not in AUDIT_ACTIONS.
        Nothing in the log is ever changed or deleted."""

    def audit(self, device_id: bytes | None = None) -> list[AuditRecord]:
        """The audit log (of one meter), oldest first."""


@runtime_checkable
class Counting(Protocol):
    """Rejected frames by device, peer and reason; the concentrator's counters, kept across restarts."""

    def add_rejects(self, rejects: Iterable[RejectRecord]) -> None:
        """Add to the counts (first_at kept from the first, last_at and a given last_detail from the latest)."""

    def rejects(self) -> list[RejectRecord]:
        """The counts, by reason, device, peer."""

    def add_counters(self, deltas: Mapping[str, int]) -> None: ...

    def counters(self) -> dict[str, int]: ...


@runtime_checkable
class DemandResponse(Protocol):
    """Demand-response groups (the registry's copy of each meter's group ids), the events called, and the meters
    each event was queued for. Writes join the transaction in progress."""

    def set_groups(self, device_id: bytes, groups: Iterable[int]) -> None:
        """Replace a meter's groups (ids 0..65535; an empty list: none)."""

    def groups(self, device_id: bytes) -> list[int]:
        """A meter's group ids, ascending."""

    def group_members(self, group_id: int) -> list[bytes]:
        """The meters of a group, by device id."""

    def add_dr_event(self, event: DREventRecord) -> None:
        """Record an event; ValueError when its id is taken."""

    def dr_event(self, event_id: int) -> DREventRecord | None: ...

    def dr_events(self, device_id: bytes | None = None) -> list[DREventRecord]:
        """Every event (or those queued for this meter), by start."""

    def next_dr_id(self) -> int:
        """One more than the largest event id recorded (1 for the first)."""

    def add_dr_target(self, event_id: int, device_id: bytes, queue_id: int | None) -> None: ...

    def dr_targets(self, event_id: int) -> list[DRTarget]:
        """The meters an event was queued for, by device id."""


@runtime_checkable
class ReadOuts(Protocol):
    """What people look at: the fleet, and whole tables for files."""

    def fleet(self, device_id: bytes | None = None) -> list[FleetRecord]:
        """One record per meter (or of that one meter only), by name then device id."""

    def export(self, table: str, device_id: bytes | None = None) -> Export:
        """(column names, rows) of one of EXPORT_TABLES, oldest first: device ids as hex, nested values
        (registers, max demand, args, evidence) as JSON text; ValueError for another table."""


class HeadEndKeys(Protocol):
    """Which head-end key each meter holds (key rotation, docs/security.md). A meter with no entry holds the
    concentrator's first key (--key)."""

    def meter_key(self, device_id: bytes) -> bytes | None:
        """The kid (8 bytes) of the head-end key the meter holds, None when none was recorded."""

    def meter_keys(self) -> dict[bytes, tuple[bytes, float]]:
        """device id -> (kid, since) for every meter with an entry."""

    def set_meter_key(self, device_id: bytes, kid: bytes, since: float) -> None:
        """Record (in the transaction) that the meter holds head-end key `kid` from `since` on."""


@runtime_checkable
class Alerts(Protocol):
    """Security alerts (meterkit.headend.monitor): at most one open alert per rule, meter and source, which takes
    every further occurrence as a count; acknowledged alerts are history."""

    def add_alerts(self, alerts: Iterable[AlertRecord]) -> list[AlertRecord]:
        """Fold each into the open alert of its rule, device and source (count added, last_at and severity and a
        given detail from it), or open one, in the transaction; the alerts as they stand now (ids set).
        ValueError for a severity not in SEVERITIES or a count below 1."""

    def alerts(self, device_id: bytes | None = None, severities: Iterable[str] | None = None,
               states: Iterable[str] | None = None, ids: Iterable[int] | None = None) -> list[AlertRecord]:
        """Alerts (of a meter, with these severities, in these states, with these ids), oldest first."""

    def ack_alert(self, alert_id: int, by: str, at: float) -> bool:
        """Acknowledge an open alert (in the transaction); False when there is no open alert with that id."""


@runtime_checkable
class Store(Registry, Delivery, Evidence, Profile, Events, Billing, Outages, Commands, Counting, DemandResponse,
            ReadOuts, HeadEndKeys, Alerts, Transactions, Protocol):
    """Everything the concentrator and the fleet commands need from a database."""
