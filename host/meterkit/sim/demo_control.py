"""The demo's two-way control (issue 12), as a utility's operator would run it on the demo fleet.

- Disconnect control: meter-3 is put in control mode 1 at commissioning, disconnected remotely at 14:00 UTC (on
  a 24-hour run), reconnected remotely at 16:00 (mode 1: ready for reconnection, nothing flows yet), and its
  customer presses the button at 17:00 (or, if the meter is not ready by then, as soon as it is).
  Its import register stands still from the disconnect to the press.
- Demand response: meters 2, 4 and 6 are in group 1; a shed event (their load-control outputs open) runs from
  07:00 to 09:00 UTC on November 1. The report measures each meter's reduction against the documented baseline
  (docs/demand-response.md: no similar day in a 24-hour run, so the hour before the event, "meter before").

Every command goes through the persisted queue, signed by the concentrator when the meter is connected, and is
in the audit log as the demo operator's. Times scale with the run (a 1-hour run does the same in its hour).
"""

from __future__ import annotations

import asyncio
import dataclasses

from meter import events
from meter import messages as M
from meterkit.dr import programme
from meterkit.dr import report as dr_report
from meterkit.headend import commands as C
from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.store.api import Store
from meterkit.timefmt import utc_text

BY = "demo operator"
CONTROL_METER = "meter-3"
DISCONNECT_H, RECONNECT_H, PRESS_H = 2.0, 4.0, 5.0  # 14:00, 16:00 and 17:00 UTC on a 24-hour run
DR_GROUP = 1
DR_METERS = ("meter-2", "meter-4", "meter-6")
DR_START_H, DR_HOURS = 19.0, 2.0  # 07:00-09:00 UTC on 2026-11-01 on a 24-hour run


def with_button(specs: list[MeterSpec], hours: float) -> list[MeterSpec]:
    """The fleet's specs with CONTROL_METER's customer pressing the button at PRESS_H (scaled), or later once
    the meter is ready for reconnection: a short run squeezes the three steps into minutes, and a command
    delivered a few minutes late on a loaded machine must not find the customer pressing too early."""
    at = PRESS_H * hours / 24.0 * 3600
    return [dataclasses.replace(s, button_presses=(at,), press_when_ready=True) if s.name == CONTROL_METER else s
            for s in specs]


def dr_window(fleet: Fleet) -> tuple[int, int]:
    """The event's start (UTC, on a whole minute) and duration (s), scaled to the run."""
    scale = fleet.hours / 24.0
    start = fleet.start_unix + int(DR_START_H * scale * 3600) // 60 * 60
    return start, max(60, int(DR_HOURS * scale * 3600) // 60 * 60)


async def operate(fleet: Fleet) -> int:
    """The operator's day: configure, call the DR event, disconnect and reconnect on time. Returns the event id."""
    devs = {m.spec.name: m.device for m in fleet.meters}
    now = fleet.clock()
    C.queue(fleet.store, devs[CONTROL_METER], M.OP_CONFIG, {M.A_CONTROL_MODE: 1}, now, by=BY,
            note="control mode 1: a remote reconnect leaves the closing to the customer")
    for name in DR_METERS:
        programme.set_groups(fleet.store, devs[name], [DR_GROUP], now, by=BY)
    start, duration = dr_window(fleet)
    called = programme.call_event(fleet.store, DR_GROUP, start, duration, None, True, now, by=BY,
                                  note="the demo's peak shed")
    scale = fleet.hours / 24.0
    for at_h, op, why in ((DISCONNECT_H, M.OP_DISCONNECT, "non-payment"), (RECONNECT_H, M.OP_RECONNECT, "paid")):
        while fleet.clock.hours() < at_h * scale:
            await asyncio.sleep(0.02)
        C.queue(fleet.store, devs[CONTROL_METER], op, None, fleet.clock(), by=BY, note=why)
    return called.event.id


def control_lines(db: Store, fleet: Fleet) -> list[str]:
    """CONTROL_METER's relay story as the meter reported it, and its import register while the relay was open."""
    [m] = [m for m in fleet.meters if m.spec.name == CONTROL_METER]
    moves = [(e.value, e.time) for e in db.events(m.device, codes=(events.DISCONNECT_CONTROL,))]
    what = {"b": "disconnected remotely", "d": "reconnected remotely: ready for reconnection",
            "e": "the customer pressed the button: connected", "a": "reconnected remotely"}
    lines = [f"{CONTROL_METER}: {what.get(str(v)[:1], 'moved')} ({v}) at {utc_text(t)}" for v, t in moves]
    opened = [t for v, t in moves if str(v).startswith("b")]
    closed = [t for v, t in moves if str(v)[:1] in "ae"]
    if opened and closed:
        rows = [r for r in db.interval_rows(m.device, from_end=opened[0], to_end=closed[-1])
                if opened[0] < r.end - (r.period_s or 0) and r.end < closed[-1]]  # whole rows while open
        stood = {r.import_mwh for r in rows}
        lines.append(f"{CONTROL_METER}: relay open {(closed[-1] - opened[0]) / 3600:.2f} h; import register over the "
                     f"{len(rows)} profile rows inside: "
                     + (f"stood at {rows[0].import_mwh / 1e6:.6f} kWh" if len(stood) == 1 else
                        f"MOVED ({len(stood)} different values)" if rows else "no rows"))
    elif not moves:
        lines.append(f"{CONTROL_METER}: NO disconnect-control event stored")
    return lines


def dr_lines(db: Store, event_id: int, now: float) -> list[str]:
    return dr_report.format_report(dr_report.event_report(db, event_id, now)).splitlines()
