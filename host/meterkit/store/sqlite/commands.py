"""Tables commands (every signed command sent, by meter and counter, and the meter's answer), command_queue
(operator commands: what the concentrator is to deliver, and how that went) and audit (append only: every
command's history, for whom, and its outcome)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from meterkit.store.api import AUDIT_ACTIONS, CONCENTRATOR, QUEUE_STATES
from meterkit.store.records import AuditRecord, CommandRecord, QueuedCommand
from meterkit.store.sqlite.base import I64_MAX, I64_MIN, Connection, args_json, args_of, i64, where
from meterkit.wire.records import CommandResponse

_COMMAND_COLUMNS = "device, counter, op, args, sent_at, expires_at, queue_id, answered_at, result, reason"
_QUEUE_SQL = ("SELECT q.*, c.expires_at AS attempt_expires FROM command_queue q LEFT JOIN commands c "
              "ON c.device = q.device AND c.counter = q.counter")
_INSERT_AUDIT = ("INSERT INTO audit (at, device, queue_id, counter, op, args, actor, action, result, reason) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_QUEUE_UPDATABLE = frozenset({"state", "counter", "attempts", "sent_at", "answered_at", "result", "reason"})


def _command(r: sqlite3.Row) -> CommandRecord:
    return CommandRecord(r["device"], r["counter"], r["op"], args_of(r["args"]), r["sent_at"], r["expires_at"],
                         r["queue_id"], r["answered_at"], r["result"], r["reason"])


def _queued(r: sqlite3.Row) -> QueuedCommand:
    return QueuedCommand(id=r["id"], device_id=r["device"], op=r["op"], args=args_of(r["args"]),
                         created_at=r["created_at"], expires_at=r["expires_at"], state=r["state"],
                         counter=r["counter"], attempts=r["attempts"], sent_at=r["sent_at"],
                         answered_at=r["answered_at"], result=r["result"], reason=r["reason"], note=r["note"],
                         attempt_expires=r["attempt_expires"], by=r["queued_by"])


def _audited(r: sqlite3.Row) -> AuditRecord:
    return AuditRecord(at=r["at"], device_id=r["device"], op=r["op"], actor=r["actor"], action=r["action"],
                       queue_id=r["queue_id"], counter=r["counter"], args=args_of(r["args"]), result=r["result"],
                       reason=r["reason"], id=r["id"])


def _check_queued(op: Any, args: Any, expires_at: Any) -> None:
    if type(op) is not int or not 0 <= op <= I64_MAX:
        raise ValueError(f"operation must be an unsigned integer, got {op!r}")
    if type(expires_at) is not int:
        raise ValueError(f"expires_at must be integer UTC seconds, got {expires_at!r}")
    if args is not None and (type(args) is not dict or any(type(k) is not int or k < 0 for k in args)):
        raise ValueError("command arguments are a dict of unsigned integers to values")


class CommandTables(Connection):
    # -- signed commands and the answers
    def record_command(self, command: CommandRecord) -> None:
        c = command
        self._begin().execute("INSERT INTO commands (device, counter, op, args, sent_at, expires_at, queue_id) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (c.device_id, c.counter, c.op, args_json(c.args), c.sent_at, c.expires_at, c.queue_id))

    def _commands(self, cond: str, args: Iterable[Any]) -> list[CommandRecord]:
        return [_command(r) for r in self._rows(f"SELECT {_COMMAND_COLUMNS} FROM commands {cond}", args)]

    def record_response(self, response: CommandResponse, at: float) -> CommandRecord | None:
        dev, counter = response.device_id, response.counter
        if i64(counter) is None:
            return None
        self._begin().execute("UPDATE commands SET answered_at = ?, result = ?, reason = ? WHERE device = ? "
                              "AND counter = ?", (at, i64(response.result), response.reason, dev, counter))
        got = self._commands("WHERE device = ? AND counter = ?", (dev, counter))
        return got[0] if got else None

    def command_attempts(self, queue_id: int) -> list[CommandRecord]:
        return self._commands("WHERE queue_id = ? ORDER BY counter", (queue_id,))

    # -- the operator queue
    def queue_command(self, device_id: bytes, op: int, args: dict | None, created_at: float, expires_at: int,
                      note: str | None = None, by: str = CONCENTRATOR) -> int:
        _check_queued(op, args, expires_at)
        if type(by) is not str or not by.strip():
            raise ValueError(f"who queues a command must be named, got {by!r}")
        dev, text = bytes(device_id), args_json(args, sort=True)
        cur = self._begin().execute(
            "INSERT INTO command_queue (device, op, args, created_at, expires_at, note, queued_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (dev, op, text, created_at, expires_at, note, by))
        qid: int = cur.lastrowid  # type: ignore[assignment]
        self._begin().execute(_INSERT_AUDIT, (created_at, dev, qid, None, op, text, by, "queued", None, note))
        return qid

    def queued_commands(self, device_id: bytes | None = None, states: Iterable[str] | None = None,
                        ids: Iterable[int] | None = None) -> list[QueuedCommand]:
        cond, args = where(("q.device = ?", None if device_id is None else bytes(device_id)), ("q.state IN", states),
                           ("q.id IN", ids))
        return [_queued(r) for r in self._rows(f"{_QUEUE_SQL}{cond} ORDER BY q.id", args)]

    def update_queued(self, queue_id: int, **fields: Any) -> None:
        if set(fields) <= _QUEUE_UPDATABLE and fields.get("state", QUEUE_STATES[0]) not in QUEUE_STATES:
            raise ValueError(f"state must be one of {', '.join(QUEUE_STATES)}, not {fields['state']!r}")
        if fields.get("result") is not None:
            fields["result"] = i64(fields["result"])  # a meter's answer may be any CBOR integer
        self._set("command_queue", "id", queue_id, fields, _QUEUE_UPDATABLE, "command queue")

    def queued_for_counter(self, device_id: bytes, counter: int) -> QueuedCommand | None:
        if not I64_MIN <= counter <= I64_MAX:
            return None
        r = self._one("SELECT queue_id FROM commands WHERE device = ? AND counter = ?", (bytes(device_id), counter))
        if r is None or r[0] is None:
            return None
        got = self.queued_commands(ids=[r[0]])
        return got[0] if got else None

    # -- the audit log: appended to, never changed (the schema's triggers refuse UPDATE and DELETE)
    def add_audit(self, record: AuditRecord) -> None:
        a = record
        if a.action not in AUDIT_ACTIONS:
            raise ValueError(f"audit action must be one of {', '.join(AUDIT_ACTIONS)}, not {a.action!r}")
        self._begin().execute(_INSERT_AUDIT, (a.at, bytes(a.device_id), a.queue_id, i64(a.counter), a.op,
                                              args_json(a.args, sort=True), a.actor, a.action, i64(a.result),
                                              a.reason))

    def audit(self, device_id: bytes | None = None) -> list[AuditRecord]:
        cond, args = where(("device = ?", None if device_id is None else bytes(device_id)))
        return [_audited(r) for r in self._rows(f"SELECT * FROM audit{cond} ORDER BY id", args)]
