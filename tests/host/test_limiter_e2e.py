"""End to end, issue 12's limiter (DLMS IC71): an emergency profile sent through the real concentrator to two
real meters (MicroPython Unix port, 18 W constant loads over TCP on the fleet clock). Its 12 W emergency
threshold is for group 7, in force for one hour. The meter of group 7 trips inside that hour only (a local
disconnect, g, after min_over), reconnects itself after min_under (control mode 5, auto reconnect: h), and is
connected after the window; the meter of group 8 never trips."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit.headend import commands as C
from meterkit.headend import control
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

MIN_OVER, MIN_UNDER, WINDOW = 60, 120, 3600
BATCH_S = 10  # the limiter looks once per metrology batch (~4.4 s), a reading period apart at most


def test_an_emergency_profile_applies_only_inside_its_window_and_for_its_group(tmp_path):
    specs = [MeterSpec(n, "constant", "tcp", seed=i) for i, n in enumerate(("member", "outsider"), 1)]
    fleet = Fleet(tmp_path, specs, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite", hours=3.0,
                  speed=1440.0)
    opens = fleet.start_unix + 3600

    def queue(fleet: Fleet) -> list[int]:
        ids, now = [], fleet.start_unix
        for m, group in zip(fleet.meters, (7, 8), strict=True):
            ids.append(C.queue(fleet.store, m.device, M.OP_CONFIG, {M.A_CONTROL_MODE: 5, M.A_GROUPS: [group]}, now,
                               by="e2e"))
            ids.append(C.queue(fleet.store, m.device, M.OP_LIMITER, {
                M.A_THRESHOLD_EMERGENCY: 12, M.A_MIN_OVER_S: MIN_OVER, M.A_MIN_UNDER_S: MIN_UNDER,
                M.A_EMERGENCY_ID: 1, M.A_EMERGENCY_START: opens, M.A_EMERGENCY_DURATION_S: WINDOW,
                M.A_EMERGENCY_GROUPS: [7], M.A_AUTO_RECONNECT: True}, now, by="e2e"))
        return ids

    ids = run_fleet(fleet, before=queue)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    codes = (events.LIMITER_TRIP, events.LIMITER_RESTORE, events.DISCONNECT_CONTROL)
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        answers = [(q.op, q.state, q.result) for q in db.queued_commands(ids=ids)]
        seen = {m.spec.name: [(e.code, e.value, e.time) for e in db.events(m.device, codes=codes)]
                for m in fleet.meters}
        final = {m.spec.name: control.relay_status(db, m.device) for m in fleet.meters}
    assert answers == [(M.OP_CONFIG, "answered", 0), (M.OP_LIMITER, "answered", 0)] * 2, answers

    member = seen["member"]
    trips = [(v, t) for c, v, t in member if c == events.LIMITER_TRIP]
    assert trips, member
    for watts, t in trips:  # inside the window only, each after min_over above the threshold
        assert opens + MIN_OVER <= t <= opens + WINDOW + BATCH_S, (t - opens, member)
        assert 15 <= watts <= 21, member  # the 18 W load, as the meter measured it
    moves = [v for c, v, _ in member if c == events.DISCONNECT_CONTROL]
    assert moves[0] == "g 1>2" and "h 2>1" in moves, moves  # tripped, then reconnected by itself
    restores = [t for c, _, t in member if c == events.LIMITER_RESTORE]
    assert restores and restores[0] >= trips[0][1] + MIN_UNDER, member
    assert moves[-1] == "h 2>1" and final["member"]["relay"] == "connected", (moves, final["member"])

    assert seen["outsider"] == [] and final["outsider"]["relay"] == "connected", seen["outsider"]
