"""End to end, issue 12's disconnect control: the operator's commands through the real concentrator to the real
firmware (MicroPython Unix port, a simulated meter over TCP on the fleet clock) and back. A configuration puts
the meter in control mode 1; a remote disconnect cuts the simulated load, so the import register stops, and the
concentrator's relay status shows the relay open as the meter reported it; a remote reconnect in mode 1 only
makes the meter ready for reconnection (nothing flows yet); the customer's button closes the relay and the
register moves again."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit.headend import commands as C
from meterkit.headend import control
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

DISCONNECT_H, RECONNECT_H, PRESS_H, HOURS = 0.5, 1.5, 2.25, 3.0


def _readings(db, dev: bytes) -> list[tuple[int, int, int]]:
    """(meter time, status, 1.8.0 Wh) of every stored reading, oldest first."""
    names, rows = db.export("readings", dev)
    i_t, i_s, i_w = names.index("meter_time"), names.index("status"), names.index("import_wh")
    return [(r[i_t], r[i_s], r[i_w]) for r in rows]


def test_disconnect_stops_the_registers_and_a_reconnect_waits_for_the_button(tmp_path):
    spec = MeterSpec("house", "constant", "tcp", seed=1, button_presses=(PRESS_H * 3600,))
    fleet = Fleet(tmp_path, [spec], ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite", hours=HOURS,
                  speed=1440.0)
    seen: dict[str, dict] = {}

    async def operator(fleet: Fleet) -> list[int]:
        dev = fleet.meters[0].device
        ids = [C.queue(fleet.store, dev, M.OP_CONFIG, {M.A_CONTROL_MODE: 1}, fleet.start_unix, by="e2e")]
        for at_h, op in ((DISCONNECT_H, M.OP_DISCONNECT), (RECONNECT_H, M.OP_RECONNECT)):
            while fleet.clock.hours() < at_h:
                await asyncio.sleep(0.02)
            seen[f"before {op}"] = control.relay_status(fleet.store, dev)
            ids.append(C.queue(fleet.store, dev, op, None, fleet.clock(), by="e2e"))
        while fleet.clock.hours() < PRESS_H - 0.1:
            await asyncio.sleep(0.02)
        seen["before the press"] = control.relay_status(fleet.store, dev)
        return ids

    ids = run_fleet(fleet, alongside=operator)
    [m] = fleet.meters
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        answers = [(q.op, q.state, q.result, q.reason) for q in db.queued_commands(ids=ids)]
        moves = [(e.value, e.time) for e in db.events(m.device, codes=(events.DISCONNECT_CONTROL,))]
        readings = _readings(db, m.device)
        final = control.relay_status(db, m.device)
    assert answers == [(M.OP_CONFIG, "answered", 0, None), (M.OP_DISCONNECT, "answered", 0, None),
                       (M.OP_RECONNECT, "answered", 0, None)], answers
    assert [v for v, _ in moves] == ["b 1>0", "d 0>2", "e 2>1"], moves
    cut, ready, pressed = (t for _, t in moves)
    start = fleet.start_unix
    # each executed after it was queued, and before the next step (on a loaded machine a command may take a few
    # real tenths of a second: many virtual minutes at 1440x)
    assert start + DISCONNECT_H * 3600 <= cut < start + RECONNECT_H * 3600 <= ready < pressed, moves
    assert abs(pressed - (start + PRESS_H * 3600)) < 60, moves  # the button, pressed at its fleet time

    before = [r for r in readings if r[0] < cut]
    off = [r for r in readings if cut < r[0] < pressed]
    after = [r for r in readings if r[0] > pressed]
    assert len(before) > 3 and len(off) > 10 and len(after) > 3, (len(before), len(off), len(after))
    assert before[-1][2] > before[0][2] and after[-1][2] > after[0][2]  # 18 W flows before and after
    assert len({wh for _, _, wh in off}) == 1, off  # the relay is open: the import register stands still
    assert all(s & M.ST_RELAY_OPEN for _, s, _ in off), off
    assert [bool(s & M.ST_RECONNECT_READY) for t, s, _ in off] == [t > ready for t, _, _ in off], off
    assert not any(s & (M.ST_RELAY_OPEN | M.ST_RECONNECT_READY) for _, s, _ in before + after)

    # what the operator saw: the state the meter confirmed, never the one requested
    assert seen[f"before {M.OP_DISCONNECT}"]["relay"] == "connected"
    assert seen[f"before {M.OP_RECONNECT}"]["relay"] == "disconnected", seen
    assert seen["before the press"]["relay"] == "ready for reconnection", seen
    assert final["relay"] == "connected" and final["control_mode"] == 1, final
