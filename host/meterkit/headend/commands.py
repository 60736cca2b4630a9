"""Operator commands, checked and queued (`meterkit command ...` is their command line, meterkit.cli.command).

Nothing here talks to a meter. A command is checked here (a calendar by meter.tou.Calendar, the very module the
meter runs; a past activation refused; the signed payload within what a meter verifies) and written to the
database's command queue (store.queue_command). The concentrator signs it with the head-end key when the
meter is connected, with a fresh command counter, matches the meter's response (kind 6) and records the result;
`meterkit command list` shows it. States: queued -> sent -> answered (result and reason as the meter gave them),
or expired (past --expires before an answer: never sent after that), or failed (could not be sent, or no
answer after the concentrator's attempts).

Operations (docs/concentrator.md, "Operator commands"):

| op               | arguments (meter.messages.A_*)     | meter's answer                                      |
|------------------|------------------------------------|-----------------------------------------------------|
| OP_CALENDAR      | A_CALENDAR dict, A_ACTIVATION UTC  | 0 armed as passive calendar; -3 bad arguments;      |
|                  |                                    | -4 rejected: <reason>                               |
| OP_BILLING_RESET | none                               | 0 (billing snapshot frame, then demand reset)       |
| OP_PROFILE       | A_FROM, A_TO (UTC s)               | 0 "N rows" (sent again as interval frames); -1 none |
| OP_SET_TIME      | A_FORCE (A_UTC: added at signing)  | 0 set (event 14); -4 rejected: a shift beyond 900 s |
|                  |                                    | without force                                       |
| OP_DISCONNECT    | none                               | 0 relay opened (event 20); refused: not allowed in  |
| OP_RECONNECT     | none                               | its control mode (meter's reason)                   |
| OP_LIMITER       | A_THRESHOLD_* .. A_AUTO_RECONNECT  | 0 applied (event 23); at least one must be given    |
| OP_DR_EVENT      | A_DR_ID, A_START, A_DURATION_S,    | 0 accepted (event 24); refused with a reason        |
|                  | A_LIMIT_W or A_SHED true           | (queued by meterkit.dr: expires at the event's end) |
| OP_CONFIG        | A_DEMAND_PERIOD_S .. A_GROUPS, any | 0 applied (event 28; a period later: the reason     |
|                  | (at least one)                     | says when); -3 a value it cannot honour; -4 a key   |
|                  |                                    | nothing applies on that meter                       |
| OP_REBOOT        | none                               | 0 (event 30), then it restarts once the answer is   |
|                  |                                    | acknowledged (30 s at most)                         |
| OP_KEY_ROTATE    | A_KEY (queued as hex: JSON has no  | 0 rotated (event 29); -3 not a P-256 point          |
|                  | bytes; bytes at signing)           |                                                     |

Every command is queued for somebody (`by`: the operator, by default the OS user; 'concentrator' for its own
set-time and profile commands): the store logs it in the append-only audit log, and the dispatch logs every
attempt, answer, expiry and failure there too (meterkit.headend.audit).

Arguments are checked against meter.cmdschema (check_args), the table a meter refuses commands by (-2/-3/-5 and
event 18): at queueing and again before every signature, so nothing a meter would refuse is ever signed.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

import cbor2

from meter import cbor as mcbor
from meter import cmdschema
from meter import messages as mmsg
from meter.messages import (  # noqa: F401 - the operations
    OP_BACKFILL,
    OP_BILLING_RESET,
    OP_CALENDAR,
    OP_CONFIG,
    OP_DISCONNECT,
    OP_DR_EVENT,
    OP_KEY_ROTATE,
    OP_LIMITER,
    OP_PROFILE,
    OP_REBOOT,
    OP_RECONNECT,
    OP_SET_TIME,
)
from meterkit.headend.texttable import text_table
from meterkit.store.api import CONCENTRATOR, QUEUE_PENDING, Registry, Store
from meterkit.timefmt import parse_utc, utc_text
from meterkit.wire.names import OP_NAMES, op_name  # noqa: F401 - names of the operations

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


def check_args(op: int, args: dict | None) -> None:
    """Raise CommandError unless `args` are exactly what a meter takes for operation `op`: meter.cmdschema, the
    table the meter checks every command against (a meter refuses anything else, -2/-3 and event 18)."""
    bad = cmdschema.check(op, args)
    if bad is not None:
        raise CommandError(f"{op_name(op)}: {bad[1]}: a meter would refuse it")


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
    p: dict = {mmsg.K_KIND: mmsg.COMMAND, mmsg.K_DEVICE: b"\xff" * 8, mmsg.K_COUNTER: UINT64_MAX,
               mmsg.K_ISSUED: UINT32_MAX, mmsg.K_EXPIRES: UINT32_MAX, mmsg.K_OP: op}
    if args:
        p[mmsg.K_ARGS] = args
    try:
        return len(mcbor.encode(p))
    except (mcbor.EncodeError, ValueError, TypeError) as e:
        raise CommandError(f"the arguments cannot be sent to a meter: {e}") from None


def parse_when(text: str) -> int:
    """A UTC instant as the operator types it (meterkit.timefmt.parse_utc); CommandError if it is not one."""
    try:
        return parse_utc(text)
    except ValueError as e:
        raise CommandError(str(e)) from None


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
    """Arguments of op 2 (calendar): the calendar, validated, and its activation instant, in the future."""
    from meter import tou

    try:
        tou.Calendar(calendar)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if type(activation) is not int or not 0 <= activation <= UINT32_MAX:
        raise CommandError(f"activation must be UTC seconds 0..{UINT32_MAX}, not {activation!r}")
    if activation <= now:
        raise CommandError(f"activation {utc_text(activation)} is not in the future (now {utc_text(now)}): a meter "
                           "refuses it; give a later --activate")
    return {mmsg.A_CALENDAR: calendar, mmsg.A_ACTIVATION: activation}


def profile_args(frm: int, to: int) -> dict:
    if not 0 <= frm <= to <= UINT32_MAX:
        raise CommandError(f"--from {utc_text(frm)} is after --to {utc_text(to)}" if frm > to
                           else "profile times must be UTC seconds 0..2^32-1")
    return {mmsg.A_FROM: frm, mmsg.A_TO: to}


def set_time_args(force: bool) -> dict:
    """Arguments of OP_SET_TIME as queued: the force flag only. The time (A_UTC) is the concentrator's clock when
    it signs an attempt (signed_args): a command that waited in the queue must not carry the time it was queued."""
    if type(force) is not bool:
        raise CommandError(f"force must be true or false, not {force!r}")
    return {mmsg.A_FORCE: force}


def limiter_args(watts: int | None = None, emergency_watts: int | None = None, min_over_s: int | None = None,
                 min_under_s: int | None = None, auto_reconnect: bool | None = None,
                 emergency: tuple[int, int, int, list[int]] | None = None, now: float = 0) -> dict:
    """Arguments of OP_LIMITER (IC71): only what is given (the meter keeps the rest); at least one. emergency:
    the emergency profile (id, start UTC, duration s, group ids), all four together, its window not over by
    `now`. Values are watts and seconds, 0..2^32-1 (a threshold of 0: no limit)."""
    out: dict = {}
    for key, name, v in ((mmsg.A_THRESHOLD_NORMAL, "--watts", watts),
                         (mmsg.A_THRESHOLD_EMERGENCY, "--emergency-watts", emergency_watts),
                         (mmsg.A_MIN_OVER_S, "--min-over", min_over_s),
                         (mmsg.A_MIN_UNDER_S, "--min-under", min_under_s)):
        if v is not None:
            out[key] = _uint(name, v)
    if auto_reconnect is not None:
        if type(auto_reconnect) is not bool:
            raise CommandError(f"--auto-reconnect must be true or false, not {auto_reconnect!r}")
        out[mmsg.A_AUTO_RECONNECT] = auto_reconnect
    if emergency is not None:
        out.update(_emergency_profile(*emergency, now=now))
    if not out:
        raise CommandError("a limiter command must set something: give --watts, --emergency-watts, --min-over, "
                           "--min-under, --auto-reconnect or an emergency profile")
    return out


def _uint(name: str, v: Any) -> int:
    if type(v) is not int or not 0 <= v <= UINT32_MAX:
        raise CommandError(f"{name} must be a whole number 0..{UINT32_MAX}, not {v!r}")
    return v


def _emergency_profile(ident: int, start: int, duration: int, groups: list[int], now: float) -> dict:
    if not _uint("--emergency-duration", duration):
        raise CommandError("--emergency-duration must be more than 0 s")
    _uint("--emergency-start", start)
    if start + duration <= now:
        raise CommandError(f"the emergency window {utc_text(start)} + {duration} s is over (now {utc_text(now)})")
    return {mmsg.A_EMERGENCY_ID: _uint("--emergency-id", ident), mmsg.A_EMERGENCY_START: start,
            mmsg.A_EMERGENCY_DURATION_S: duration, mmsg.A_EMERGENCY_GROUPS: group_list(groups)}


def group_list(groups: Any) -> list[int]:
    """Group ids as a meter takes them (1..GROUPS_MAX distinct ids 0..65535), or CommandError."""
    if type(groups) is not list or not 0 < len(groups) <= mmsg.GROUPS_MAX:
        raise CommandError(f"give 1..{mmsg.GROUPS_MAX} group ids, not {groups!r}")
    for g in groups:
        if type(g) is not int or not 0 <= g <= 0xFFFF:
            raise CommandError(f"a group id is 0..65535, not {g!r}")
    if len(set(groups)) != len(groups):
        raise CommandError(f"group ids repeat: {groups}")
    return list(groups)


def operator() -> str:
    """Who is at the keyboard: the OS user (what `--by` defaults to)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER: a container, say
        return "unknown operator"


DR_DURATION_MAX_S = 86400  # an event lasts at most a day (its baseline compares the same clock times of other days)


def dr_event_args(dr_id: int, start: int, duration_s: int, limit_w: int | None, shed: bool, now: float) -> dict:
    """Arguments of OP_DR_EVENT: event dr_id from start for duration_s, import limited to limit_w W, or shed
    (exactly one of the two); the event must not have started (meters get it before; its commands expire at
    its end)."""
    if _uint("the event id", dr_id) == 0:
        raise CommandError("the event id must be 1 or more")
    _uint("--start", start)
    if not 60 <= _uint("--duration", duration_s) <= DR_DURATION_MAX_S:
        raise CommandError(f"--duration must be 60 s .. {DR_DURATION_MAX_S // 3600} h, not {duration_s} s")
    if start < now:
        raise CommandError(f"--start {utc_text(start)} is in the past (now {utc_text(now)}): meters get an event "
                           "before it starts; give a later --start")
    if start + duration_s > UINT32_MAX:
        raise CommandError("the event would end after 2106")
    if (limit_w is None) == (not shed):
        raise CommandError("give exactly one of --limit-w W (limit import to W watts) and --shed (open the "
                           "load-control output)")
    args = {mmsg.A_DR_ID: dr_id, mmsg.A_START: start, mmsg.A_DURATION_S: duration_s}
    if shed:
        args[mmsg.A_SHED] = True
    else:
        if _uint("--limit-w", limit_w) == 0:  # a meter refuses it: no import at all is a shed
            raise CommandError("--limit-w must be 1 W or more (for no import at all, --shed)")
        args[mmsg.A_LIMIT_W] = limit_w
    return args


def groups_args(groups: list[int]) -> dict:
    """Arguments of OP_CONFIG that tell a meter its groups (1..GROUPS_MAX ids 0..65535, ascending)."""
    return {mmsg.A_GROUPS: group_list(sorted(set(groups)))}


def signed_args(op: int, args: dict | None, now: float) -> dict | None:
    """The arguments an attempt is signed with: a set-time command gets the time of signing; a key rotation's
    key, queued as hex text (the queue's JSON has no bytes), is signed as its bytes."""
    if op == OP_KEY_ROTATE and args and isinstance(args.get(mmsg.A_KEY), str):
        try:
            return {**args, mmsg.A_KEY: bytes.fromhex(args[mmsg.A_KEY])}
        except ValueError:
            raise CommandError(f"key-rotate: the key {args[mmsg.A_KEY][:20]!r}... is not hex") from None
    if op in (mmsg.OP_FW_MANIFEST, mmsg.OP_FW_CHUNK) and args:  # manifest and payload bytes, queued as hex
        k = mmsg.A_MANIFEST if op == mmsg.OP_FW_MANIFEST else mmsg.A_DATA
        if isinstance(args.get(k), str):
            try:
                return {**args, k: bytes.fromhex(args[k])}
            except ValueError:
                raise CommandError(f"{op_name(op)}: argument {k} is not hex") from None
    if op != OP_SET_TIME:
        return args
    return {**(args or {}), mmsg.A_UTC: round(now)}


# the configuration a meter takes (op 10): option name -> argument key; meter.board.SETTING_VALUES says what
# values a meter honours (checked here too: nothing a meter refuses is queued)
CONFIG_KEYS = {"demand_period_s": mmsg.A_DEMAND_PERIOD_S, "capture_period_s": mmsg.A_CAPTURE_PERIOD_S,
               "reading_s": mmsg.A_READING_S, "over_current_ma": mmsg.A_OVER_CURRENT_MA,
               "over_voltage_mv": mmsg.A_OVER_VOLTAGE_MV, "control_mode": mmsg.A_CONTROL_MODE,
               "groups": mmsg.A_GROUPS}


def config_args(**values: Any) -> dict:
    """Arguments of op 10 from the settings given (None: left alone); CommandError for a value no meter
    honours (meter.board.setting_problem, the table the meter checks with) or for nothing to set."""
    from meter.board import SETTING_VALUES, setting_problem

    out: dict = {}
    for name, v in values.items():
        if v is None:
            continue
        if name not in CONFIG_KEYS:
            raise CommandError(f"config: unknown setting {name!r}")
        off = v == 0 and name in ("over_current_ma", "over_voltage_mv")  # 0 turns the alarm off
        if name in SETTING_VALUES and not off:
            why = setting_problem(name, v)
            if why:
                raise CommandError(f"config: {name} {why}")
        out[CONFIG_KEYS[name]] = v
    if not out:
        raise CommandError("config: nothing to set: give at least one setting")
    check_args(OP_CONFIG, out)
    return dict(sorted(out.items()))


def key_rotate_args(public_point: bytes) -> dict:
    """Arguments of op 12 as queued: the new head-end public key (65-byte point) as hex text."""
    if not isinstance(public_point, bytes) or len(public_point) != 65 or public_point[0] != 4:
        raise CommandError("key-rotate: the key must be a 65-byte uncompressed P-256 point")
    return {mmsg.A_KEY: public_point.hex()}


def queue(store: Store, device: bytes, op: int, args: dict | None, now: float, expires: int | None = None,
          note: str | None = None, by: str | None = None) -> int:
    """Check a command and put it into the queue (committed) for `by` (default: the OS user); returns its id.
    expires: UTC seconds after which it is not sent (default: a calendar's activation, else a week; a
    calendar's is capped at its activation: after it the meter would refuse it)."""
    try:
        qid = queue_in(store, device, op, args, now, expires, note, operator() if by is None else by)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return qid


def queue_in(store: Store, device: bytes, op: int, args: dict | None, now: float, expires: int | None = None,
             note: str | None = None, by: str = CONCENTRATOR) -> int:
    """queue() inside the caller's transaction: nothing is committed (the concentrator's own set-time commands)."""
    if type(by) is not str or not by.strip():
        raise CommandError(f"--by must name who queues the command, not {by!r}")
    if op == OP_CALENDAR and args:
        at = args[mmsg.A_ACTIVATION]
        expires = at if expires is None else min(expires, at)
    elif op == OP_DR_EVENT and args and mmsg.is_uint(args.get(mmsg.A_START), UINT32_MAX) \
            and mmsg.is_uint(args.get(mmsg.A_DURATION_S), UINT32_MAX):
        end = args[mmsg.A_START] + args[mmsg.A_DURATION_S]  # a meter back after the event's end must not get it
        expires = end if expires is None else min(expires, end)
    elif expires is None:
        expires = int(now) + DEFAULT_VALID_S
    if expires <= now:
        raise CommandError(f"--expires {utc_text(expires)} is not in the future (now {utc_text(now)})")
    if expires > UINT32_MAX:
        raise CommandError(f"--expires must be UTC seconds 0..{UINT32_MAX}")
    check_fits(op, args)
    check_args(op, signed_args(op, args, now))
    return store.queue_command(device, op, args, now, expires, note, by)


def label(store: Registry, dev: bytes) -> str:
    m = store.meter(dev)
    return f"{m.name} ({dev.hex()})" if m is not None and m.name else dev.hex()


def describe(op: int, args: dict | None) -> str:
    """One line for a person: what a command does."""
    if op == OP_CALENDAR and args:
        cal = args.get(mmsg.A_CALENDAR) if isinstance(args.get(mmsg.A_CALENDAR), dict) else {}
        name = cal.get("name") or "unnamed"
        return f"calendar {name!r}, active from {utc_text(args.get(mmsg.A_ACTIVATION))}"
    if op == OP_PROFILE and args:
        return f"profile rows ending {utc_text(args.get(mmsg.A_FROM))} .. {utc_text(args.get(mmsg.A_TO))}"
    if op == OP_BILLING_RESET:
        return "billing reset (snapshot now, demand reset)"
    if op == OP_DR_EVENT and args:
        what = "shed (load-control output open)" if args.get(mmsg.A_SHED) else f"limit {args.get(mmsg.A_LIMIT_W)} W"
        return (f"demand response #{args.get(mmsg.A_DR_ID)}: {what} from {utc_text(args.get(mmsg.A_START))} for "
                f"{args.get(mmsg.A_DURATION_S)} s")
    if op == OP_CONFIG and args and set(args) == {mmsg.A_GROUPS}:
        return "groups " + ",".join(str(g) for g in args[mmsg.A_GROUPS])
    if op == OP_CONFIG and args:
        names = {v: k for k, v in CONFIG_KEYS.items()}
        return "config " + ", ".join(f"{names.get(k, k)}={v}" for k, v in sorted(args.items()))
    if op == OP_REBOOT:
        return "reboot (answers, then restarts)"
    if op == OP_KEY_ROTATE and args:
        from meterkit.wire.keys import key_id

        try:
            kid = key_id(bytes.fromhex(args.get(mmsg.A_KEY))).hex()
        except (TypeError, ValueError):
            kid = "?"
        return f"rotate the head-end key to {kid}"
    if op == OP_SET_TIME:
        force = bool(args and args.get(mmsg.A_FORCE))
        return "set the clock to the concentrator's" + (f" (force: beyond {mmsg.SET_TIME_FREE_S} s too)" if force
                                                        else "")
    if op == mmsg.OP_FW_CHUNK and args:
        return f"firmware bytes from {args.get(mmsg.A_OFFSET)} ({len(args.get(mmsg.A_DATA) or '') // 2} bytes)"
    if op == mmsg.OP_FW_MANIFEST:
        return "firmware manifest (start or resume an update)"
    if op == mmsg.OP_FW_ACTIVATE:
        return "firmware activate (verify, boot the new image on trial)"
    if op == OP_DISCONNECT:
        return "disconnect: open the relay"
    if op == OP_RECONNECT:
        return "reconnect: close the relay (or ready for the customer's button, by control mode)"
    if op == OP_LIMITER and args:
        return describe_limiter(args)
    return op_name(op) + (f" {json.dumps(args, sort_keys=True)}" if args else "")


def describe_limiter(args: dict) -> str:
    """'limiter: 500 W, emergency 300 W, over 60 s, under 300 s, auto-reconnect; emergency #7 from ...'."""
    g = args.get
    parts = [f"{label}{g(k)}{unit}" for k, label, unit in (
        (mmsg.A_THRESHOLD_NORMAL, "", " W"), (mmsg.A_THRESHOLD_EMERGENCY, "emergency ", " W"),
        (mmsg.A_MIN_OVER_S, "over ", " s"), (mmsg.A_MIN_UNDER_S, "under ", " s")) if k in args]
    if mmsg.A_AUTO_RECONNECT in args:
        parts.append("auto-reconnect" if g(mmsg.A_AUTO_RECONNECT) else "button reconnects")
    pieces = [", ".join(parts)] if parts else []
    if mmsg.A_EMERGENCY_ID in args:
        groups = ",".join(str(x) for x in g(mmsg.A_EMERGENCY_GROUPS) or [])
        pieces.append(f"emergency profile #{g(mmsg.A_EMERGENCY_ID)} from {utc_text(g(mmsg.A_EMERGENCY_START))} "
                      f"for {g(mmsg.A_EMERGENCY_DURATION_S)} s, groups {groups}")
    return "limiter: " + "; ".join(pieces)


def command_rows(store: Store, device: bytes | None = None, states: list[str] | None = None,
                 now: float | None = None) -> list[dict]:
    """The queue as `meterkit command list` shows it, oldest first."""
    t = clock() if now is None else now
    names = {m.device_id: m.name for m in store.meters()}
    out = []
    for q in store.queued_commands(device, states):
        out.append({
            "id": q.id, "device": q.device_id.hex(), "meter": names.get(q.device_id), "op": q.op,
            "operation": op_name(q.op), "what": describe(q.op, q.args), "state": q.state,
            "overdue": q.state in QUEUE_PENDING and t >= q.expires_at,
            "created_at": q.created_at, "created_utc": utc_text(q.created_at), "expires_at": q.expires_at,
            "expires_utc": utc_text(q.expires_at), "attempts": q.attempts, "counter": q.counter, "sent_at": q.sent_at,
            "sent_utc": utc_text(q.sent_at), "answered_at": q.answered_at, "answered_utc": utc_text(q.answered_at),
            "result": q.result, "reason": q.reason, "note": q.note, "by": q.by, "args": jsonable(q.args),
        })
    return out


def jsonable(args: dict | None) -> dict | None:
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
    return text_table(head, body)


