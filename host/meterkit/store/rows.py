"""What both databases share: the conversions between records and rows (a row is anything indexable by column
name, sqlite3.Row or the PostgreSQL store's Row), the checks on what callers pass, and building WHERE clauses.
The SQL itself lives with the table groups (meterkit.store.tables)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from meterkit import wire
from meterkit.store.api import AUDIT_ACTIONS, EXPORT_TABLES, QUEUE_STATES
from meterkit.store.records import (
    AuditRecord,
    CommandRecord,
    DREventRecord,
    FleetRecord,
    GapRecord,
    MeterRecord,
    OutageRecord,
    QueuedCommand,
)
from meterkit.wire.records import BillingSnapshot, Event, IntervalRow, Reading

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

# the fields callers may set through update_meter / update_gap / update_queued
METER_UPDATABLE = frozenset({"last_seen", "last_counter", "firmware", "board", "boot_count", "ack_seq", "first_seq",
                             "online", "frames_stored", "name", "reporting_period_s", "clock_drift_s",
                             "clock_drift_at"})
GAP_UPDATABLE = frozenset({"last", "state", "requested_at", "command_counter", "attempts", "missing", "closed_at"})
QUEUE_UPDATABLE = frozenset({"state", "counter", "attempts", "sent_at", "answered_at", "result", "reason"})


def i64(v: Any) -> int | None:
    """v if the database can store it as a (signed 64-bit) integer, else None (the raw frame keeps it exactly)."""
    return v if v is not None and I64_MIN <= v <= I64_MAX else None


def in_items(column: str, items: list) -> tuple[str, list]:
    """`column IN (?, ?, ...)`, a placeholder an item (SQLite's in_list; PostgreSQL's takes one array)."""
    return f"{column} IN ({', '.join('?' * len(items))})", items


def where(*conditions: tuple[str, Any], in_list: Callable[[str, list], tuple[str, list]] = in_items
          ) -> tuple[str, list]:
    """(' WHERE a AND b', parameters) of the (condition, value) pairs whose value is not None or False: a
    condition ending in ' IN' gets its items (in_list(column, items) writes it), one with a placeholder `?` the
    value, one without none (a flag)."""
    parts, args = [], []
    for sql, value in conditions:
        if value is None or value is False:
            continue
        if sql.endswith(" IN"):
            part, items = in_list(sql[:-3], list(value))
            parts.append(part)
            args.extend(items)
        else:
            parts.append(sql)
            if "?" in sql:
                args.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


def checked_fields(fields: dict[str, Any], allowed: frozenset[str], what: str) -> dict[str, Any]:
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"unknown {what} fields {sorted(bad)}")
    return fields


# --- JSON columns ---------------------------------------------------------------------------------------------

_OBIS: dict[int, str] = {}  # register key -> 'C.D.E'
_REGS_FMT: dict[tuple, str] = {}  # register key set -> JSON template (a meter sends the same set every time)


def _obis(k: int) -> str:
    s = _OBIS.get(k)
    if s is None:
        s = _OBIS[k] = wire.obis_code(k)
    return s


def registers_json(regs: dict[int, int]) -> str:
    """{10800: 5, 20800: 1} -> '{"1.8.0": 5, "2.8.0": 1}' (what json.dumps gives, at a third of its cost)."""
    keys = tuple(regs)
    fmt = _REGS_FMT.get(keys)
    if fmt is None:
        if len(_REGS_FMT) > 1000:
            _REGS_FMT.clear()
        fmt = _REGS_FMT[keys] = "{" + ", ".join(f'"{_obis(k)}": %d' for k in keys) + "}"
    return fmt % tuple(regs.values())


def registers_of(text: str) -> dict[int, int]:
    """The inverse of registers_json."""
    return {wire.obis_key(k): v for k, v in json.loads(text).items()}


def demand_json(md: dict[int, tuple[int, int]]) -> str | None:
    """Maximum demands {1.6.t key: (W, time)} as JSON by OBIS code; None when there are none."""
    return json.dumps({_obis(k): list(v) for k, v in md.items()}) if md else None


def demand_of(text: str | None) -> dict[int, tuple[int, int]]:
    return {wire.obis_key(k): (v[0], v[1]) for k, v in json.loads(text).items()} if text else {}


def args_json(args: dict | None, sort: bool = False) -> str | None:
    """Command arguments {uint: value} as JSON text (keys become text; values must be JSON types)."""
    if not args:
        return None
    return json.dumps(args, sort_keys=True, ensure_ascii=False) if sort else json.dumps(args)


def args_of(text: str | None) -> dict | None:
    """The inverse of args_json: top-level keys back to ints."""
    if not text:
        return None
    return {int(k): v for k, v in json.loads(text).items()}


# --- rows of what meters send ---------------------------------------------------------------------------------

_IMPORT, _EXPORT = wire.obis_key("1.8.0"), wire.obis_key("2.8.0")
_NO_CONTROL = (None, None, None)  # K_CONTROL left out: [1, 0, 0] (connected, no control, no limit)
READING_COLUMNS = ("device, seq, meter_time, status, import_wh, export_wh, registers, power_mw, voltage_mv, "
                   "current_ma, uncovered_ppm, control_state, control_mode, limit_w")


def reading_row(r: Reading) -> tuple:
    """The readings row (READING_COLUMNS); values beyond signed 64 bits become NULL (the registers JSON keeps them
    exactly). Only the values the wire schema leaves unbounded are checked (the sequence number is at most
    MAX_SEQ, the time 32 bits, uncovered_ppm a million; status and voltage are unsigned): the ingest does this
    per frame."""
    regs = r.registers
    st, imp, exp, mw, mv, ma = r.status, regs[_IMPORT], regs[_EXPORT], r.power_mw, r.voltage_mv, r.current_ma
    row = (r.device_id, r.seq, r.meter_time, st, imp, exp, registers_json(regs), mw, mv, ma, r.uncovered_ppm,
           *(_NO_CONTROL if r.control is None else r.control))
    if not (st <= I64_MAX and I64_MIN <= imp <= I64_MAX and I64_MIN <= exp <= I64_MAX and I64_MIN <= mw <= I64_MAX
            and mv <= I64_MAX and I64_MIN <= ma <= I64_MAX):
        row = tuple(i64(v) if type(v) is int else v for v in row)
    return row


def interval_row(r: IntervalRow) -> tuple:
    """(device, end_time, import_mwh, export_mwh, status, period_s, seq)"""
    return (r.device_id, r.end, i64(r.import_mwh), i64(r.export_mwh), i64(r.status), i64(r.period_s), r.seq)


def event_value(v: int | str) -> int | str:
    """An event's value as stored: an integer beyond signed 64 bits as its decimal text."""
    return str(v) if type(v) is int and i64(v) is None else v


def event_row(e: Event) -> tuple:
    """(device, seq, event_seq, code, value, event_time)"""
    return (e.device_id, e.seq, i64(e.event_seq), i64(e.code), event_value(e.value), e.time)


def billing_row(b: BillingSnapshot) -> tuple:
    """(device, seq, period_end, registers, max_demand)"""
    return (b.device_id, b.seq, b.period_end, registers_json(b.registers), demand_json(b.max_demand))


def billing_of(device_id: bytes, r: Sequence[Any]) -> BillingSnapshot:
    """The snapshot of a (seq, period_end, registers, max_demand) row."""
    return BillingSnapshot(device_id, r[0], r[1], registers_of(r[2]), demand_of(r[3]))


# --- the store's own records ----------------------------------------------------------------------------------


def meter_record(r: Any) -> MeterRecord:
    return MeterRecord(device_id=bytes(r["device"]), public_key=bytes(r["public_key"]), name=r["name"],
                       provisioned_at=r["provisioned_at"], reporting_period_s=r["reporting_period_s"],
                       last_seen=r["last_seen"], last_counter=r["last_counter"], firmware=r["firmware"],
                       board=r["board"], boot_count=r["boot_count"], ack_seq=r["ack_seq"],
                       first_seq=r["first_seq"], online=bool(r["online"]), frames_stored=r["frames_stored"],
                       clock_drift_s=r["clock_drift_s"], clock_drift_at=r["clock_drift_at"])


def period(p: Any) -> int:
    if type(p) is not int or p <= 0:
        raise ValueError("the reporting period is a positive number of seconds")
    return p


COMMAND_COLUMNS = "device, counter, op, args, sent_at, expires_at, queue_id, answered_at, result, reason"
# queue entries with the signed expiry of their latest attempt (queued_record's columns)
QUEUE_SELECT = ("SELECT q.*, c.expires_at AS attempt_expires FROM command_queue q LEFT JOIN commands c "
                "ON c.device = q.device AND c.counter = q.counter")


def command_record(r: Any) -> CommandRecord:
    return CommandRecord(bytes(r["device"]), r["counter"], r["op"], args_of(r["args"]), r["sent_at"],
                         r["expires_at"], r["queue_id"], r["answered_at"], r["result"], r["reason"])


def queued_record(r: Any) -> QueuedCommand:
    return QueuedCommand(id=r["id"], device_id=bytes(r["device"]), op=r["op"], args=args_of(r["args"]),
                         created_at=r["created_at"], expires_at=r["expires_at"], state=r["state"],
                         counter=r["counter"], attempts=r["attempts"], sent_at=r["sent_at"],
                         answered_at=r["answered_at"], result=r["result"], reason=r["reason"], note=r["note"],
                         attempt_expires=r["attempt_expires"], by=r["queued_by"])


def audit_record(r: Any) -> AuditRecord:
    return AuditRecord(at=r["at"], device_id=bytes(r["device"]), op=r["op"], actor=r["actor"], action=r["action"],
                       queue_id=r["queue_id"], counter=r["counter"], args=args_of(r["args"]), result=r["result"],
                       reason=r["reason"], id=r["id"])


def audit_row(a: AuditRecord) -> tuple:
    """(at, device, queue_id, counter, op, args, actor, action, result, reason); ValueError for an unknown
    action."""
    if a.action not in AUDIT_ACTIONS:
        raise ValueError(f"audit action must be one of {', '.join(AUDIT_ACTIONS)}, not {a.action!r}")
    return (a.at, bytes(a.device_id), a.queue_id, i64(a.counter), a.op, args_json(a.args, sort=True), a.actor,
            a.action, i64(a.result), a.reason)


def check_queued(op: Any, args: Any, expires_at: Any, by: Any) -> None:
    if type(op) is not int or not 0 <= op <= I64_MAX:
        raise ValueError(f"operation must be an unsigned integer, got {op!r}")
    if type(expires_at) is not int:
        raise ValueError(f"expires_at must be integer UTC seconds, got {expires_at!r}")
    if args is not None and (type(args) is not dict or any(type(k) is not int or k < 0 for k in args)):
        raise ValueError("command arguments are a dict of unsigned integers to values")
    if type(by) is not str or not by.strip():
        raise ValueError(f"who queues a command must be named, got {by!r}")


def queue_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """update_queued's fields, checked; a result the store cannot hold becomes None."""
    checked_fields(fields, QUEUE_UPDATABLE, "command queue")
    if fields.get("state", QUEUE_STATES[0]) not in QUEUE_STATES:
        raise ValueError(f"state must be one of {', '.join(QUEUE_STATES)}, not {fields['state']!r}")
    if fields.get("result") is not None:
        fields["result"] = i64(fields["result"])  # a meter's answer may be any CBOR integer
    return fields


def gap_record(r: Any) -> GapRecord:
    return GapRecord(id=r["id"], device_id=bytes(r["device"]), kind=r["kind"], first=r["first"], last=r["last"],
                     detected_at=r["detected_at"], state=r["state"], requested_at=r["requested_at"],
                     command_counter=r["command_counter"], attempts=r["attempts"], missing=r["missing"],
                     closed_at=r["closed_at"])


def outage_record(r: Any) -> OutageRecord:
    ev = r["evidence"]
    return OutageRecord(id=r["id"], device_id=bytes(r["device"]), start=r["start"], detected_at=r["detected_at"],
                        end=r["end"], cause=r["cause"], power_up_at=r["power_up_at"],
                        evidence=json.loads(ev) if ev else None)


def evidence_json(evidence: dict) -> str:
    return json.dumps(evidence, sort_keys=True)


def dr_event_record(r: Any) -> DREventRecord:
    return DREventRecord(id=r["id"], group_id=r["group_id"], start=r["start"], duration_s=r["duration_s"],
                         limit_w=r["limit_w"], shed=bool(r["shed"]), created_at=r["created_at"], note=r["note"])


def dr_event_row(e: DREventRecord) -> tuple:
    """(id, group_id, start, duration_s, limit_w, shed, created_at, note)"""
    return (e.id, e.group_id, e.start, e.duration_s, e.limit_w, int(e.shed), e.created_at, e.note)


def group_ids(groups: Any) -> list[int]:
    out = sorted(set(groups))
    if any(type(g) is not int or not 0 <= g <= 0xFFFF for g in out):
        raise ValueError("group ids are integers 0..65535")
    return out


def kid_bytes(kid: Any) -> bytes:
    if not isinstance(kid, (bytes, bytearray)) or len(kid) != 8:
        raise ValueError(f"a head-end key id is 8 bytes, not {kid!r}")
    return bytes(kid)


def lookup_hex(text: str) -> bytes | None:
    """A 16-hex-digit device id typed by a person, as bytes (None: not one)."""
    t = text.strip().lower()
    if len(t) == 16 and all(c in "0123456789abcdef" for c in t):
        return bytes.fromhex(t)
    return None


def control_of(r: Any) -> tuple[int, int, int] | None:
    """K_CONTROL of the newest reading: (IC70 state, control mode, limit W); a reading without it is [1, 0, 0]."""
    return None if r["control_seq"] is None else (r["control_state"], r["control_mode"], r["limit_w"])


# the fleet view: each meter with its newest reading and frame, and counts of its gaps and outages (SQL both
# databases read alike; {where}: '' or 'WHERE m.device = ?')
FLEET_SQL = """SELECT m.*,
     (SELECT import_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS import_wh,
     (SELECT export_wh FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS export_wh,
     (SELECT meter_time FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS reading_time,
     (SELECT status FROM frames f WHERE f.device = m.device ORDER BY seq DESC LIMIT 1) AS last_status,
     (SELECT max(seq) FROM frames f WHERE f.device = m.device) AS last_seq,
     (SELECT seq FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS control_seq,
     (SELECT coalesce(control_state, 1) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1)
       AS control_state,
     (SELECT coalesce(control_mode, 0) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1)
       AS control_mode,
     (SELECT coalesce(limit_w, 0) FROM readings r WHERE r.device = m.device ORDER BY seq DESC LIMIT 1) AS limit_w,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state = 'filled' AND g.attempts > 0) AS gaps_backfilled,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state IN ('open', 'requested')) AS gaps_open,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'frames'
       AND g.state IN ('skipped', 'lost')) AS gaps_settled,
     (SELECT count(*) FROM gaps g WHERE g.device = m.device AND g.kind = 'intervals') AS interval_gaps,
     (SELECT count(*) FROM outages o WHERE o.device = m.device) AS outages,
     (SELECT count(*) FROM outages o WHERE o.device = m.device AND o."end" IS NULL) AS outage_open
   FROM meters m {where} ORDER BY m.name NULLS FIRST, m.device"""


def fleet_record(r: Any) -> FleetRecord:
    """A fleet view row: the meter's columns and the counts the fleet query adds."""
    return FleetRecord(meter_record(r), r["import_wh"], r["export_wh"], r["reading_time"], r["gaps_backfilled"],
                       r["gaps_open"], r["gaps_settled"], r["interval_gaps"], r["outages"], r["outage_open"],
                       r["last_status"], r["last_seq"], control_of(r), r["control_seq"])


# --- export: the columns and order of each table (SQL both databases read alike: "end" is quoted for PostgreSQL)

EXPORT_SQL = {
    "readings": ("SELECT device, seq, meter_time, status, import_wh, export_wh, power_mw, voltage_mv, "
                 "current_ma, uncovered_ppm, registers FROM readings", "device, seq"),
    "intervals": ("SELECT device, end_time, import_mwh, export_mwh, status, period_s, seq FROM intervals",
                  "device, end_time"),
    "events": ("SELECT device, seq, event_seq, code, value, event_time FROM events", "device, seq"),
    "billing": ("SELECT device, seq, period_end, registers, max_demand FROM billing", "device, seq"),
    "outages": ('SELECT device, start, "end", detected_at, cause, power_up_at, evidence FROM outages',
                "device, start"),
    "commands": ("SELECT device, counter, op, args, sent_at, expires_at, answered_at, result, reason "
                 "FROM commands", "device, counter"),
    "gaps": ("SELECT device, kind, first, last, state, detected_at, requested_at, command_counter, "
             "attempts, missing, closed_at FROM gaps", "device, kind, first"),
    "command_queue": ("SELECT device, id, op, args, created_at, expires_at, state, counter, attempts, "
                      "sent_at, answered_at, result, reason, note, queued_by FROM command_queue", "device, id"),
    "audit": ("SELECT device, id, at, queue_id, counter, op, args, actor, action, result, reason FROM audit", "id"),
    "alerts": ("SELECT device, id, rule, severity, source, state, count, first_at, last_at, detail, acked_at, "
               "acked_by FROM alerts", "id"),
}
assert tuple(EXPORT_SQL) == EXPORT_TABLES


def export_query(table: str, device_id: bytes | None) -> tuple[str, tuple]:
    """(SQL, parameters) of an export (ValueError for a table not in EXPORT_TABLES)."""
    if table not in EXPORT_SQL:
        raise ValueError(f"cannot export {table!r}: one of {', '.join(EXPORT_TABLES)}")
    sql, order = EXPORT_SQL[table]
    if device_id is None:
        return f"{sql} ORDER BY {order}", ()
    return f"{sql} WHERE device = ? ORDER BY {order}", (bytes(device_id),)


def hexed(rows: Iterable[Sequence[Any]]) -> Iterator[tuple]:
    """Export rows with the device id (the first column) as hex."""
    for r in rows:
        yield (bytes(r[0]).hex(),) + tuple(r[1:])
