"""Tables commands (every signed command sent, by meter and counter, and the meter's answer), command_queue
(operator commands: what the concentrator is to deliver, and how that went) and audit (append only: every
command's history, for whom, and its outcome)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meterkit.store.api import CONCENTRATOR, QUEUE_PENDING
from meterkit.store.records import AuditRecord, CommandRecord, QueuedCommand
from meterkit.store.rows import (
    COMMAND_COLUMNS,
    I64_MAX,
    I64_MIN,
    QUEUE_SELECT,
    QUEUE_UPDATABLE,
    args_json,
    audit_record,
    audit_row,
    check_queued,
    command_record,
    i64,
    queue_fields,
    queued_record,
)
from meterkit.store.tables.base import Tables
from meterkit.wire.records import CommandResponse

_INSERT_AUDIT = ("INSERT INTO audit (at, device, queue_id, counter, op, args, actor, action, result, reason) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class CommandTables(Tables):
    # -- signed commands and the answers
    def record_command(self, command: CommandRecord) -> None:
        c = command
        self._execute("INSERT INTO commands (device, counter, op, args, sent_at, expires_at, queue_id) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (c.device_id, c.counter, c.op, args_json(c.args), c.sent_at, c.expires_at, c.queue_id))

    def record_response(self, response: CommandResponse, at: float) -> CommandRecord | None:
        if i64(response.counter) is None:
            return None
        got = self._returned(f"UPDATE commands SET answered_at = ?, result = ?, reason = ? WHERE device = ? "
                             f"AND counter = ? RETURNING {COMMAND_COLUMNS}",
                             (at, i64(response.result), response.reason, response.device_id, response.counter))
        return None if got is None else command_record(got)

    def command_attempts(self, queue_id: int) -> list[CommandRecord]:
        return [command_record(r) for r in self._rows(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE queue_id = ? ORDER BY counter", (queue_id,))]

    # -- the operator queue
    def queue_command(self, device_id: bytes, op: int, args: dict | None, created_at: float, expires_at: int,
                      note: str | None = None, by: str = CONCENTRATOR) -> int:
        check_queued(op, args, expires_at, by)
        dev, text = bytes(device_id), args_json(args, sort=True)
        qid: int = self._returned("INSERT INTO command_queue (device, op, args, created_at, expires_at, note, "
                                  "queued_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                  (dev, op, text, created_at, expires_at, note, by))[0]
        self._execute(_INSERT_AUDIT, (created_at, dev, qid, None, op, text, by, "queued", None, note))
        return qid

    def queued_commands(self, device_id: bytes | None = None, states: Iterable[str] | None = None,
                        ids: Iterable[int] | None = None) -> list[QueuedCommand]:
        cond, args = self._where(("q.device = ?", None if device_id is None else bytes(device_id)),
                                 ("q.state IN", states), ("q.id IN", ids))
        return [queued_record(r) for r in self._rows(f"{QUEUE_SELECT}{cond} ORDER BY q.id", args)]

    def claim_queued(self, queue_ids: Iterable[int]) -> list[QueuedCommand]:
        ids = sorted(set(queue_ids))
        if not ids:
            return []
        self._begin(immediate=True)  # SQLite: no other process writes the queue until this transaction ends
        cond, args = self._where(("q.state IN", QUEUE_PENDING), ("q.id IN", ids))
        # PostgreSQL: entries another concentrator holds are passed over, not waited for: it is working on them
        rows = self._rows(f"{QUEUE_SELECT}{cond} ORDER BY q.id{self._row_locks(' FOR UPDATE OF q SKIP LOCKED')}",
                          args)
        return [queued_record(r) for r in rows]

    def update_queued(self, queue_id: int, **fields: Any) -> None:
        self._set("command_queue", "id", queue_id, queue_fields(fields), QUEUE_UPDATABLE, "command queue")

    def queued_for_counter(self, device_id: bytes, counter: int) -> QueuedCommand | None:
        if not I64_MIN <= counter <= I64_MAX:
            return None
        r = self._one("SELECT queue_id FROM commands WHERE device = ? AND counter = ?", (bytes(device_id), counter))
        if r is None or r[0] is None:
            return None
        got = self.queued_commands(ids=[r[0]])
        return got[0] if got else None

    # -- the audit log: appended to, never changed (the schemas' triggers refuse UPDATE and DELETE, and on
    # PostgreSQL TRUNCATE)
    def add_audit(self, record: AuditRecord) -> None:
        self._execute(_INSERT_AUDIT, audit_row(record))

    def audit(self, device_id: bytes | None = None) -> list[AuditRecord]:
        cond, args = self._where(("device = ?", None if device_id is None else bytes(device_id)))
        return [audit_record(r) for r in self._rows(f"SELECT * FROM audit{cond} ORDER BY id", args)]
