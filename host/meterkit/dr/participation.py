"""Who took part in a demand-response event, per meter it was queued for, from what the concentrator stored:
the queue entry (the meter's signed answer: accepted, or refused and why; or expired / failed: never reached)
and the meter's events carrying the event id (DR_ACCEPTED, DR_START, DR_END, DR_OPT_OUT).

States, strongest evidence first:
    opted out    a DR_OPT_OUT event (the customer's button overrode it): when
    accepted     answer 0, or a DR_ACCEPTED event (the answer may have been lost with a link)
    refused      a non-zero answer: the meter's reason
    pending      still queued or sent, before its expiry (the event's end)
    not reached  expired before the meter was back, failed, or never queued
"""

from __future__ import annotations

from dataclasses import dataclass

from meter.events import DR_ACCEPTED, DR_END, DR_OPT_OUT, DR_START
from meterkit.store.api import QUEUE_PENDING, Store
from meterkit.store.records import DREventRecord, DRTarget, EventRecord, QueuedCommand

DR_CODES = (DR_ACCEPTED, DR_START, DR_END, DR_OPT_OUT)
STATES = ("accepted", "opted out", "refused", "pending", "not reached")


@dataclass(frozen=True)
class Participation:
    device_id: bytes
    name: str | None
    state: str  # one of STATES
    reason: str | None = None  # refused: the meter's reason; not reached: what became of the command
    accepted_at: int | None = None  # meter time of DR_ACCEPTED (or the answer's receipt)
    started_at: int | None = None  # DR_START
    ended_at: int | None = None  # DR_END
    opted_out_at: int | None = None  # DR_OPT_OUT


def _first(events: list[EventRecord], code: int) -> int | None:
    times = [e.time for e in events if e.code == code]
    return min(times) if times else None


def judge(target: DRTarget, name: str | None, q: QueuedCommand | None, events: list[EventRecord],
          now: float) -> Participation:
    """One meter's participation from its queue entry and its DR_* events about this event."""
    at = {c: _first(events, c) for c in DR_CODES}
    answered_ok = q is not None and q.state == "answered" and q.result == 0
    accepted_at = at[DR_ACCEPTED]
    if accepted_at is None and answered_ok and q is not None and q.answered_at is not None:
        accepted_at = int(q.answered_at)
    times = {"accepted_at": accepted_at, "started_at": at[DR_START], "ended_at": at[DR_END],
             "opted_out_at": at[DR_OPT_OUT]}
    if at[DR_OPT_OUT] is not None:
        return Participation(target.device_id, name, "opted out", **times)
    if answered_ok or at[DR_ACCEPTED] is not None:
        return Participation(target.device_id, name, "accepted", **times)
    if q is not None and q.state == "answered":
        return Participation(target.device_id, name, "refused", q.reason or f"result {q.result}", **times)
    if q is not None and q.state in QUEUE_PENDING and now < q.expires_at:
        return Participation(target.device_id, name, "pending", f"{q.state}, {q.attempts} attempt(s)", **times)
    if q is None:
        why = "never queued"
    elif q.state in QUEUE_PENDING:
        why = f"{q.state}: not delivered before the event's end"
    else:
        why = q.reason or q.state  # the concentrator's: expired before the meter could be reached, ...
    return Participation(target.device_id, name, "not reached", why, **times)


def participation(store: Store, event: DREventRecord, now: float) -> list[Participation]:
    """Every meter the event was queued for, by name then device id."""
    out = []
    for t in store.dr_targets(event.id):
        q = store.queued_commands(ids=[t.queue_id])[0] if t.queue_id is not None else None
        evs = [e for e in store.events(t.device_id, codes=DR_CODES) if str(e.value) == str(event.id)]
        m = store.meter(t.device_id)
        out.append(judge(t, m.name if m else None, q, evs, now))
    return sorted(out, key=lambda p: (p.name is None, p.name or "", p.device_id))


def tally(parts: list[Participation]) -> dict[str, int]:
    """How many meters are in each state (every state, zeros too)."""
    return {s: sum(p.state == s for p in parts) for s in STATES}
