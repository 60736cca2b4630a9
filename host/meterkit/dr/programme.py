"""The programme as the head-end runs it: a meter's groups (kept in the registry, told to the meter by OP_CONFIG
A_GROUPS) and demand-response events called on a group: recorded, and OP_DR_EVENT queued for every meter of the
group through the persisted command queue, expiring at the event's end. All or nothing: an event that cannot
be queued for one meter is not recorded, and nothing is queued for any."""

from __future__ import annotations

from dataclasses import dataclass

from meterkit.headend import commands as C
from meterkit.store.api import Store
from meterkit.store.records import DREventRecord, DRTarget


def parse_groups(text: str) -> list[int]:
    """'1,2' -> [1, 2]; 'none' -> []; CommandError for ids outside 0..65535 or text that is not a list."""
    if text.strip().lower() == "none":
        return []
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise C.CommandError(f"groups are comma-separated ids, e.g. 1,2 (or none), not {text!r}") from None
    if not all(0 <= g <= 0xFFFF for g in ids):
        raise C.CommandError(f"group ids are 0..65535, not {text!r}")
    return sorted(set(ids))


def set_groups(store: Store, device: bytes, groups: list[int], now: float, send: bool = True,
               by: str = "unknown operator") -> int | None:
    """Keep a meter's groups in the registry and (send) queue OP_CONFIG A_GROUPS so the meter learns them; the
    queue id, or None when nothing was queued (send off, or no groups: a meter takes 1..16, so clearing them
    is the registry's only). by: who, for the audit log. Committed together; nothing changes on an error."""
    try:
        args = C.groups_args(groups) if send and groups else None
        store.set_groups(device, groups)
        qid = C.queue_in(store, device, C.OP_CONFIG, args, now, note="meterkit dr groups", by=by) if args else None
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return qid


@dataclass(frozen=True)
class Called:
    """An event as recorded, and the meters it was queued for."""

    event: DREventRecord
    targets: list[DRTarget]


def call_event(store: Store, group: int, start: int, duration_s: int, limit_w: int | None, shed: bool,
               now: float, dr_id: int | None = None, note: str | None = None, by: str = "unknown operator") -> Called:
    """Record a DR event on `group` and queue it for each member (one transaction), for `by` (the audit log's
    who). CommandError for bad arguments, an id already used or a group without meters: then nothing is
    recorded or queued."""
    if type(group) is not int or not 0 <= group <= 0xFFFF:
        raise C.CommandError(f"--group must be a group id 0..65535, not {group!r}")
    try:
        ident = store.next_dr_id() if dr_id is None else dr_id
        args = C.dr_event_args(ident, start, duration_s, limit_w, shed, now)
        members = store.group_members(group)
        if not members:
            raise C.CommandError(f"group {group} has no meters (meterkit dr groups METER {group})")
        if store.dr_event(ident) is not None:
            raise C.CommandError(f"event id {ident} is already used (meterkit dr list); leave --id out for a new "
                                 "one")
        event = DREventRecord(ident, group, start, duration_s, limit_w, shed, now, note)
        targets = _record(store, event, members, args, by)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return Called(event, targets)


def _record(store: Store, event: DREventRecord, members: list[bytes], args: dict, by: str) -> list[DRTarget]:
    """The event recorded and queued for each member (in the caller's transaction)."""
    store.add_dr_event(event)
    targets = []
    for dev in members:
        qid = C.queue_in(store, dev, C.OP_DR_EVENT, args, event.created_at, note=f"meterkit dr event {event.id}",
                         by=by)
        store.add_dr_target(event.id, dev, qid)
        targets.append(DRTarget(event.id, dev, qid))
    return targets


ONE_METER_GROUP = 0  # the group recorded for an event called on one meter (its target names the meter)


def call_meter_event(store: Store, device: bytes, start: int, duration_s: int, limit_w: int | None, shed: bool,
                     now: float, note: str | None = None, by: str = "unknown operator") -> Called:
    """A DR event for one meter (Home Assistant's shed button, integrations.mqtt): recorded like a group's (its id
    from the same sequence, so the meter's DR_* events name it unambiguously; group ONE_METER_GROUP, the meter as
    its one target) and queued, in one transaction; CommandError and nothing recorded for bad arguments."""
    try:
        ident = store.next_dr_id()
        args = C.dr_event_args(ident, start, duration_s, limit_w, shed, now)
        event = DREventRecord(ident, ONE_METER_GROUP, start, duration_s, limit_w, shed, now, note)
        called = Called(event, _record(store, event, [device], args, by))
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return called
