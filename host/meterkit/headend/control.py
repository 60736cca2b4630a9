"""Disconnect control (DLMS IC70) and the limiter (IC71) as the meters confirmed them: what `meterkit status`
and `meterkit relay status` show. Never what was requested: a command's answer says whether the meter took it,
its frames say what the relay is.

A meter's relay state comes from its newest frame by sequence number (a back-filled older frame never
overrides a newer one): its K_CONTROL state when that frame is a reading, else its status bits (ST_RELAY_OPEN
with ST_RECONNECT_READY: ready for reconnection; ST_RELAY_OPEN alone: disconnected; neither: connected).
Control mode and the import limit in force come from K_CONTROL of its newest reading ([1, 0, 0] when left out).
"""

from __future__ import annotations

from meter import events as E
from meter import messages as M
from meterkit.headend.commands import describe
from meterkit.headend.texttable import text_table
from meterkit.store.api import Store
from meterkit.store.records import FleetRecord
from meterkit.timefmt import utc_text
from meterkit.wire.names import op_name

STATE_NAMES = {M.CONTROL_DISCONNECTED: "disconnected", M.CONTROL_CONNECTED: "connected",
               M.CONTROL_READY: "ready for reconnection"}
RELAY_EVENTS = (E.DISCONNECT_CONTROL, E.LIMITER_TRIP, E.LIMITER_RESTORE, E.LIMITER_SET)
EVENT_NAMES = {E.DISCONNECT_CONTROL: "disconnect control", E.LIMITER_TRIP: "limiter trip",
               E.LIMITER_RESTORE: "limiter restore", E.LIMITER_SET: "limiter set"}
RELAY_OPS = (M.OP_DISCONNECT, M.OP_RECONNECT, M.OP_LIMITER)
SHOWN_EVENTS = 10  # the last relay events `relay status` shows


def state_of_status(status: int) -> int:
    """The IC70 state the status bits of a frame say."""
    if status & M.ST_RECONNECT_READY:
        return M.CONTROL_READY
    return M.CONTROL_DISCONNECTED if status & M.ST_RELAY_OPEN else M.CONTROL_CONNECTED


def relay_state(f: FleetRecord) -> int | None:
    """The confirmed IC70 state of a meter (None: no frame with a status yet)."""
    if f.control is not None and f.control_seq == f.last_seq:
        return f.control[0]
    return None if f.last_status is None else state_of_status(f.last_status)


def state_name(state: int | None) -> str:
    return "-" if state is None else STATE_NAMES.get(state, f"state {state}")


def limiter_text(f: FleetRecord) -> str:
    """'500 W' (the import limit in force), 'none', or '-' (no reading yet)."""
    if f.control is None:
        return "-"
    return f"{f.control[2]} W" if f.control[2] else "none"


def control_fields(f: FleetRecord) -> dict:
    """The relay and limiter figures of one meter, for `status` (text and JSON)."""
    state = relay_state(f)
    st = f.last_status or 0
    return {"relay_state": state, "relay": state_name(state),
            "control_mode": None if f.control is None else f.control[1],
            "limit_w": None if f.control is None else f.control[2], "limiter": limiter_text(f),
            "load_shed": bool(st & M.ST_LOAD_SHED), "dr_active": bool(st & M.ST_DR_ACTIVE),
            "relay_seq": f.last_seq}


def relay_status(store: Store, device: bytes) -> dict:
    """What `meterkit relay status METER` shows: the confirmed state, the limiter, the last relay events
    (20-23) and the last relay command (ops 6-8) with its result. KeyError for an unknown meter."""
    got = store.fleet(device)
    if not got:
        raise KeyError(device.hex())
    f = got[0]
    events = store.events(device, codes=RELAY_EVENTS)[-SHOWN_EVENTS:]
    cmds = [q for q in store.queued_commands(device) if q.op in RELAY_OPS]
    last = cmds[-1] if cmds else None
    return {
        "device": device.hex(), "meter": f.meter.name, **control_fields(f),
        "events": [{"seq": e.seq, "code": e.code, "event": EVENT_NAMES.get(e.code or 0, f"event {e.code}"),
                    "value": e.value, "time": e.time, "time_utc": utc_text(e.time)} for e in events],
        "last_command": None if last is None else {
            "id": last.id, "operation": op_name(last.op), "what": describe(last.op, last.args), "by": last.by,
            "state": last.state, "result": last.result, "reason": last.reason,
            "created_utc": utc_text(last.created_at), "answered_utc": utc_text(last.answered_at)},
    }


def format_relay_status(s: dict) -> str:
    who = f"{s['meter']} ({s['device']})" if s["meter"] else s["device"]
    mode = "-" if s["control_mode"] is None else str(s["control_mode"])
    flags = [x for x, on in (("load shed", s["load_shed"]), ("demand response active", s["dr_active"])) if on]
    relay = ("unknown (no frame from the meter yet)" if s["relay_state"] is None
             else f"{s['relay']} (as the meter last reported it, frame {s['relay_seq']})")
    lines = [f"meter {who}: relay {relay}, control mode {mode}, import limit {s['limiter']}"
             + (f"; {', '.join(flags)}" if flags else "")]
    c = s["last_command"]
    if c is None:
        lines.append("last relay command: none")
    else:
        result = "" if c["result"] is None else f", result {c['result']}"
        reason = f" ({c['reason']})" if c["reason"] else ""
        lines.append(f"last relay command: #{c['id']} {c['what']} by {c['by'] or '?'}, queued {c['created_utc']}: "
                     f"{c['state']}{result}{reason}")
    if not s["events"]:
        lines.append("relay events: none")
    else:
        lines.append("relay events (latest last):")
        body = [(e["time_utc"], e["event"], str(e["value"])) for e in s["events"]]
        lines += ["  " + x for x in text_table(("meter time (UTC)", "event", "value"), body).split("\n")]
    return "\n".join(lines)
