"""Operator commands to meters through the concentrator: `meterkit command ...`.

    meterkit command calendar      --meter ID|NAME --calendar FILE --activate WHEN [--expires WHEN] [--db PATH]
    meterkit command billing-reset --meter ID|NAME [--expires WHEN] [--db PATH]
    meterkit command profile       --meter ID|NAME --from WHEN --to WHEN [--expires WHEN] [--db PATH]
    meterkit command list          [--meter ID|NAME] [--state STATE] [--json] [--db PATH]

WHEN is UTC: ISO 8601 (2026-12-01T00:00Z; no offset means UTC) or Unix seconds. --db defaults to $METERKIT_DB,
else ./meterkit.db (as `meterkit status` and `meterkit bill`); the database must exist and know the meter.

Nothing here talks to a meter. A command is checked here (a calendar by meter.tou.Calendar, the very module the
meter runs; a past activation refused; the signed payload within what a meter verifies) and written to the
database's command queue (db.Store.queue_command). The concentrator signs it with the head-end key when the
meter is connected, with a fresh command counter, matches the meter's response (kind 6) and records the result;
`meterkit command list` shows it. States: queued -> sent -> answered (result and reason as the meter gave them),
or expired (past --expires before an answer: never sent after that), or failed (could not be sent, or no
answer after the concentrator's attempts).

Operations (docs/concentrator.md, "Operator commands"):

| op | name          | arguments                         | meter's answer                                      |
|---:|---------------|-----------------------------------|-----------------------------------------------------|
|  2 | calendar      | {1: calendar dict, 2: activation} | 0 armed as passive calendar; -3 bad arguments;      |
|    |               |                                   | -4 rejected: <reason>                               |
|  3 | billing-reset | {}                                | 0 (billing snapshot frame, then demand reset)       |
|  4 | profile       | {1: from, 2: to} (UTC s)          | 0 "N rows" (sent again as interval frames); -1 none |
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from typing import Any

import cbor2

from meter import cbor as mcbor
from meter import messages as mmsg
from meterkit.fleet_status import open_store

OP_BACKFILL = mmsg.OP_BACKFILL  # 1: the concentrator's own (frames by sequence number)
OP_CALENDAR = mmsg.OP_CALENDAR  # 2
OP_BILLING_RESET = mmsg.OP_BILLING_RESET  # 3
OP_PROFILE = mmsg.OP_PROFILE  # 4
OP_NAMES = {OP_BACKFILL: "back-fill", OP_CALENDAR: "calendar", OP_BILLING_RESET: "billing-reset",
            OP_PROFILE: "profile"}

MAX_COMMAND_PAYLOAD = mmsg.COMMAND_MAX_PAYLOAD  # the largest command payload (CBOR bytes) a meter verifies
MAX_COMMAND_ITEMS = mmsg.COMMAND_MAX_ITEMS  # ... and the most CBOR data items: meter.messages.verify_host
# its COSE_Sign1: tag, protected header, {4: kid} (17 bytes), payload bstr head (3), payload, signature (66)
MAX_COMMAND_MESSAGE = MAX_COMMAND_PAYLOAD + 17 + 3 + 66
DEFAULT_VALID_S = 7 * 86400  # a queued command is given up after a week unless --expires says otherwise
UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = (1 << 64) - 1

clock = time.time  # what the CLI takes for now (a test sets it)


class CommandError(ValueError):
    """An operator command that cannot be queued; the message says why, for a person."""


def op_name(op: int) -> str:
    return OP_NAMES.get(op, f"op {op}")


def payload_size(cose: bytes) -> int:
    """The payload size (bytes) of a signed COSE_Sign1."""
    return len(cbor2.loads(cose).value[2])


def cbor_items(v: Any) -> int:
    """How many CBOR data items v encodes to (a container counts itself, a map its keys and values)."""
    if isinstance(v, dict):
        return 1 + sum(1 + cbor_items(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return 1 + sum(cbor_items(x) for x in v)
    return 1


def command_items(op: int, args: dict | None) -> int:
    """Data items of a command payload: the map, 6 keys with their values, and key 11 with the arguments."""
    return 1 + 12 + (1 + cbor_items(args) if args else 0)


def check_fits(op: int, args: dict | None) -> None:
    """Raise CommandError unless a meter can decode a command with these arguments (bytes and items)."""
    size = payload_bound(op, args)
    if size > MAX_COMMAND_PAYLOAD:
        raise CommandError(f"the command would be {size} bytes of CBOR; a meter verifies at most "
                           f"{MAX_COMMAND_PAYLOAD}: make the calendar smaller (fewer special days, shorter names)")
    n = command_items(op, args)
    if n > MAX_COMMAND_ITEMS:
        raise CommandError(f"the command would hold {n} CBOR data items; a meter decodes at most "
                           f"{MAX_COMMAND_ITEMS}: make the calendar smaller (fewer special days or switch points)")


def payload_bound(op: int, args: dict | None) -> int:
    """The largest payload a command with these arguments can have (counter and times at their largest).
    Raises CommandError for arguments that CBOR cannot carry deterministically (floats, say)."""
    p: dict = {1: 16, 2: b"\xff" * 8, 3: UINT64_MAX, 4: UINT32_MAX, 9: UINT32_MAX, 10: op}
    if args:
        p[11] = args
    try:
        return len(mcbor.encode(p))
    except (mcbor.EncodeError, ValueError, TypeError) as e:
        raise CommandError(f"the arguments cannot be sent to a meter: {e}") from None


def utc(t: float | None) -> str:
    if t is None:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_when(text: str) -> int:
    """'2026-12-01T00:00Z', '2026-12-01 00:00' (UTC), '2026-12-01T01:00+01:00' or Unix seconds -> Unix seconds."""
    t = text.strip()
    if t.isdigit():
        v = int(t)
    else:
        try:
            dt = _dt.datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in ("Z", "z") else t)
        except ValueError:
            raise CommandError(f"not a UTC time: {text!r} (give ISO 8601, e.g. 2026-12-01T00:00Z, or Unix "
                               "seconds)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=_dt.timezone.utc)
        v = int(dt.timestamp())
        if v != dt.timestamp():
            raise CommandError(f"{text!r}: give whole seconds")
    if not 0 <= v <= UINT32_MAX:
        raise CommandError(f"{text!r} is outside the meter's time range (1970..2106)")
    return v


def _when(text: str) -> int:
    try:
        return parse_when(text)
    except CommandError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --- building commands ----------------------------------------------------------------------------------------


def load_calendar(path: str) -> dict:
    """Read a calendar file (JSON, docs/tariffs.md) and validate it with meter.tou.Calendar."""
    from meter import tou

    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except OSError as e:
        raise CommandError(f"{path}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: not JSON: {e}") from None
    try:
        tou.Calendar(d)
    except ValueError as e:
        raise CommandError(f"{path}: {e}") from None
    return d


def calendar_args(calendar: dict, activation: int, now: float) -> dict:
    """Arguments of op 2: {1: calendar, 2: activation}; the calendar is validated, the activation must be
    in the future."""
    from meter import tou

    try:
        tou.Calendar(calendar)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if type(activation) is not int or not 0 <= activation <= UINT32_MAX:
        raise CommandError(f"activation must be UTC seconds 0..{UINT32_MAX}, not {activation!r}")
    if activation <= now:
        raise CommandError(f"activation {utc(activation)} is not in the future (now {utc(now)}): a meter "
                           "refuses it; give a later --activate")
    return {1: calendar, 2: activation}


def profile_args(frm: int, to: int) -> dict:
    if not 0 <= frm <= to <= UINT32_MAX:
        raise CommandError(f"--from {utc(frm)} is after --to {utc(to)}" if frm > to
                           else "profile times must be UTC seconds 0..2^32-1")
    return {1: frm, 2: to}


def queue(store: Any, device: bytes, op: int, args: dict | None, now: float, expires: int | None = None,
          note: str | None = None) -> int:
    """Check a command and put it into the queue (committed); returns its id. expires: UTC seconds after
    which it is not sent (default: a calendar's activation, else a week; a calendar's is capped at its
    activation: after it the meter would refuse it)."""
    if op == OP_CALENDAR and args:
        expires = args[2] if expires is None else min(expires, args[2])
    elif expires is None:
        expires = int(now) + DEFAULT_VALID_S
    if expires <= now:
        raise CommandError(f"--expires {utc(expires)} is not in the future (now {utc(now)})")
    check_fits(op, args)
    try:
        qid = store.queue_command(device, op, args, now, expires, note)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return qid


# --- the command line -----------------------------------------------------------------------------------------


def _meter(store: Any, text: str, prog: str) -> bytes | None:
    dev = store.lookup_device(text)
    if dev is None:
        print(f"meterkit command {prog}: no meter {text!r} (give its 16-hex-digit id or its name; "
              "meterkit meters list)", file=sys.stderr)
    return dev


def _label(store: Any, dev: bytes) -> str:
    m = store.meter(dev)
    return f"{m.name} ({dev.hex()})" if m is not None and m.name else dev.hex()


def describe(op: int, args: dict | None) -> str:
    """One line for a person: what a command does."""
    if op == OP_CALENDAR and args:
        cal = args.get(1) if isinstance(args.get(1), dict) else {}
        name = cal.get("name") or "unnamed"
        return f"calendar {name!r}, active from {utc(args.get(2))}"
    if op == OP_PROFILE and args:
        return f"profile rows ending {utc(args.get(1))} .. {utc(args.get(2))}"
    if op == OP_BILLING_RESET:
        return "billing reset (snapshot now, demand reset)"
    return op_name(op) + (f" {json.dumps(args, sort_keys=True)}" if args else "")


def _queue_cli(args: argparse.Namespace, prog: str, build: Any) -> int:
    now = clock()
    try:
        op, cargs = build(now)
    except CommandError as e:
        print(f"meterkit command {prog}: {e}", file=sys.stderr)
        return 1
    store = open_store(args.db, f"command {prog}", readonly=False)
    if store is None:
        return 2
    with store:
        dev = _meter(store, args.meter, prog)
        if dev is None:
            return 2
        try:
            qid = queue(store, dev, op, cargs, now, args.expires, note=f"meterkit command {prog}")
        except CommandError as e:
            print(f"meterkit command {prog}: {e}", file=sys.stderr)
            return 1
        q = store.queued_commands(ids=[qid])[0]
        m = store.meter(dev)
        online = m is not None and m.online
        print(f"queued command #{qid} for meter {_label(store, dev)}: {describe(op, cargs)}; "
              f"expires {utc(q.expires_at)}")
        print("the concentrator sends it " + ("now (the meter is online)" if online else
                                              "when the meter connects") + "; see: meterkit command list")
    return 0


def _cmd_calendar(args: argparse.Namespace) -> int:
    def build(now: float) -> tuple[int, dict]:
        cal = load_calendar(args.calendar)
        return OP_CALENDAR, calendar_args(cal, args.activate, now)

    return _queue_cli(args, "calendar", build)


def _cmd_billing_reset(args: argparse.Namespace) -> int:
    return _queue_cli(args, "billing-reset", lambda now: (OP_BILLING_RESET, None))


def _cmd_profile(args: argparse.Namespace) -> int:
    return _queue_cli(args, "profile", lambda now: (OP_PROFILE, profile_args(args.frm, args.to)))


def command_rows(store: Any, device: bytes | None = None, states: list[str] | None = None,
                 now: float | None = None) -> list[dict]:
    """The queue as `meterkit command list` shows it, oldest first."""
    t = clock() if now is None else now
    names = {m.device_id: m.name for m in store.meters()}
    out = []
    for q in store.queued_commands(device, states):
        out.append({
            "id": q.id, "device": q.device_id.hex(), "meter": names.get(q.device_id), "op": q.op,
            "operation": op_name(q.op), "what": describe(q.op, q.args), "state": q.state,
            "overdue": q.state in ("queued", "sent") and t >= q.expires_at,
            "created_at": q.created_at, "created_utc": utc(q.created_at), "expires_at": q.expires_at,
            "expires_utc": utc(q.expires_at), "attempts": q.attempts, "counter": q.counter, "sent_at": q.sent_at,
            "sent_utc": utc(q.sent_at), "answered_at": q.answered_at, "answered_utc": utc(q.answered_at),
            "result": q.result, "reason": q.reason, "note": q.note, "args": _jsonable(q.args),
        })
    return out


def _jsonable(args: dict | None) -> dict | None:
    return None if args is None else {str(k): v for k, v in args.items()}


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "no commands queued"
    head = ("#", "meter", "operation", "state", "tries", "result", "reason", "created (UTC)", "command")
    body = []
    for r in rows:
        state = r["state"] + (" (past expiry)" if r["overdue"] else "")
        body.append((str(r["id"]), r["meter"] or r["device"], r["operation"], state, str(r["attempts"]),
                     "" if r["result"] is None else str(r["result"]), r["reason"] or "", r["created_utc"],
                     r["what"]))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [head, *body])


def _cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args.db, "command list", readonly=False)
    if store is None:
        return 2
    with store:
        dev = None
        if args.meter:
            dev = _meter(store, args.meter, "list")
            if dev is None:
                return 2
        rows = command_rows(store, dev, args.state)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_rows(rows))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit command calendar | billing-reset | profile | list`."""
    from meterkit.db import QUEUE_STATES
    from meterkit.fleet_status import default_db

    c = subparsers.add_parser("command", help="queue operator commands to meters (tariff calendar, billing "
                                              "reset, profile re-read) and see their answers")
    sub = c.add_subparsers(dest="command_op", required=True)

    def common(p: argparse.ArgumentParser, meter_required: bool = True) -> None:
        p.add_argument("--db", default=default_db(), help="head-end database (default $METERKIT_DB or meterkit.db)")
        p.add_argument("--meter", required=meter_required, help="16-hex-digit device id or the meter's name")

    def expires(p: argparse.ArgumentParser) -> None:
        p.add_argument("--expires", type=_when, default=None, metavar="WHEN",
                       help="not sent at or after this UTC time (default: a week from now; a calendar: its "
                            "activation)")

    cal = sub.add_parser("calendar", help="send a TOU calendar, active from a future instant (passive until then)")
    common(cal)
    cal.add_argument("--calendar", required=True, metavar="FILE", help="calendar JSON (docs/tariffs.md)")
    cal.add_argument("--activate", required=True, type=_when, metavar="WHEN",
                     help="when it becomes active: UTC, e.g. 2026-12-01T00:00Z, or Unix seconds")
    expires(cal)
    cal.set_defaults(func=_cmd_calendar)

    br = sub.add_parser("billing-reset", help="close the billing period now (snapshot, then demand reset)")
    common(br)
    expires(br)
    br.set_defaults(func=_cmd_billing_reset)

    pr = sub.add_parser("profile", help="have the meter send its load-profile rows of a time range again")
    common(pr)
    pr.add_argument("--from", dest="frm", required=True, type=_when, metavar="WHEN", help="first row end (UTC)")
    pr.add_argument("--to", required=True, type=_when, metavar="WHEN", help="last row end (UTC)")
    expires(pr)
    pr.set_defaults(func=_cmd_profile)

    ls = sub.add_parser("list", help="queued commands: state, result and reason")
    common(ls, meter_required=False)
    ls.add_argument("--state", action="append", choices=QUEUE_STATES, help="only these states (repeatable)")
    ls.add_argument("--json", action="store_true", help="one JSON list, a dict per command")
    ls.set_defaults(func=_cmd_list)
