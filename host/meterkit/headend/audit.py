"""The command audit log (table audit, append only): who a command was for, what it was, when it was queued,
sent (every attempt) and answered, and how it ended: the meter's result and reason, or why the head-end gave up.

Written in the same transaction as the change it records: the store logs 'queued' with the queue entry
(store.queue_command), the dispatch logs 'sent' with each signed attempt (dispatch.issue_command, back-fills
too), 'answered' / 'refused' / 'answered-again' with the meter's answer, 'expired' / 'failed' when it gives
up. A retry adds rows; none is ever changed or deleted (the schema's triggers refuse it). `meterkit audit`
shows it, oldest first.
"""

from __future__ import annotations

from meter import messages as M
from meterkit.headend.commands import describe, jsonable
from meterkit.headend.texttable import text_table
from meterkit.store.api import CONCENTRATOR, Store
from meterkit.store.records import AuditRecord, CommandRecord, QueuedCommand
from meterkit.timefmt import utc_text
from meterkit.wire.names import op_name
from meterkit.wire.records import CommandResponse

UNKNOWN_ACTOR = "unknown (before the audit log)"  # a command queued before schema v6


def actor(q: QueuedCommand | None) -> str:
    """Who a command is for: its queue entry's `by`; the concentrator's own back-fills have none."""
    if q is None:
        return CONCENTRATOR
    return q.by or UNKNOWN_ACTOR


def answer_action(result: int) -> str:
    """'refused' when the meter said no (a negative result other than RESULT_GONE, which only says that part
    of a range is not held), else 'answered'."""
    return "refused" if result < 0 and result != M.RESULT_GONE else "answered"


def sent(store: Store, cmd: CommandRecord, by: str) -> None:
    store.add_audit(AuditRecord(cmd.sent_at, cmd.device_id, cmd.op, by, "sent", cmd.queue_id, cmd.counter, cmd.args,
                                reason=f"signed expiry {utc_text(cmd.expires_at)}"))


def answered(store: Store, cmd: CommandRecord, q: QueuedCommand | None, r: CommandResponse, now: float,
             again: bool = False) -> None:
    action = "answered-again" if again else answer_action(r.result)
    store.add_audit(AuditRecord(now, cmd.device_id, cmd.op, actor(q), action, cmd.queue_id, r.counter,
                                result=r.result, reason=r.reason))


def ended(store: Store, q: QueuedCommand, state: str, why: str, now: float) -> None:
    store.add_audit(AuditRecord(now, q.device_id, q.op, actor(q), state, q.id, q.counter, reason=why))


# --- read-outs ------------------------------------------------------------------------------------------------


def audit_rows(store: Store, device: bytes | None = None) -> list[dict]:
    """The audit log as `meterkit audit` shows it, oldest first."""
    names = {m.device_id: m.name for m in store.meters()}
    return [{"id": a.id, "at": a.at, "at_utc": utc_text(a.at), "device": a.device_id.hex(),
             "meter": names.get(a.device_id), "command": a.queue_id, "counter": a.counter, "op": a.op,
             "operation": op_name(a.op), "what": describe(a.op, a.args) if a.action in ("queued", "sent") else "",
             "by": a.actor, "action": a.action, "result": a.result, "reason": a.reason, "args": jsonable(a.args)}
            for a in store.audit(device)]


def format_audit(rows: list[dict]) -> str:
    if not rows:
        return "the audit log is empty"
    head = ("when (UTC)", "meter", "#", "operation", "by", "action", "counter", "result", "reason / command")
    body = [(r["at_utc"], r["meter"] or r["device"], "" if r["command"] is None else str(r["command"]),
             r["operation"], r["by"], r["action"], "" if r["counter"] is None else str(r["counter"]),
             "" if r["result"] is None else str(r["result"]),
             "; ".join(x for x in (r["what"], r["reason"] or "") if x)) for r in rows]
    return text_table(head, body)
