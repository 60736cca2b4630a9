"""End to end: a demand-response event called as `meterkit dr event` calls it, through the real concentrator to
the real firmware (MicroPython Unix port, simulated meters over TCP on the fleet clock) and back: each meter of
the group accepts it (answer 0, DR_ACCEPTED), it comes into force and ends on the meters' clocks (DR_START,
DR_END), and the participation and report are read from what the concentrator stored. A meter outside the
group gets nothing. Two hours of history give no similar day, and the rows just before the event start with the
meter's first (no interval before it): no baseline; the report says so and measures the actual."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter.messages import OP_DR_EVENT
from meterkit.dr import participation as PT
from meterkit.dr import programme, report
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

GROUP = 5


def test_a_group_event_reaches_the_real_meters_and_their_participation_is_read_back(tmp_path):
    specs = [MeterSpec(n, "constant", "tcp", seed=i) for i, n in enumerate(("in-1", "in-2", "out"), 1)]
    fleet = Fleet(tmp_path, specs, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite", hours=2.0,
                  speed=1440.0)
    start = fleet.start_unix + 1800  # half an hour into the run, for half an hour

    def call(fleet: Fleet):
        devs = {m.spec.name: m.device for m in fleet.meters}
        for name in ("in-1", "in-2"):
            programme.set_groups(fleet.store, devs[name], [GROUP], fleet.start_unix, send=False)
        return devs, programme.call_event(fleet.store, GROUP, start, 1800, None, True, fleet.start_unix, by="e2e")

    devs, called = run_fleet(fleet, before=call)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    ev = called.event
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        parts = {p.name: p for p in PT.participation(db, ev, start + 7200)}
        dr_events = {n: [(e.code, e.value, e.time) for e in db.events(d, codes=PT.DR_CODES)]
                     for n, d in devs.items()}
        out_commands = [q for q in db.queued_commands(devs["out"]) if q.op == OP_DR_EVENT]
        rep = report.event_report(db, ev.id, start + 7200)
    assert set(parts) == {"in-1", "in-2"} and out_commands == [] and dr_events["out"] == []
    for name in ("in-1", "in-2"):
        p = parts[name]
        assert p.state == "accepted", (name, p)
        codes = [(c, v) for c, v, _ in dr_events[name]]
        assert codes == [(events.DR_ACCEPTED, ev.id), (events.DR_START, ev.id), (events.DR_END, ev.id)], codes
        assert p.accepted_at < start <= p.started_at < ev.end <= p.ended_at, (p, start, ev.end)
    assert rep["participation"]["accepted"] == 2
    for m in rep["meters"]:
        assert m["days"] == 0 and m["baseline_kwh"] is None and m["note"].startswith("no baseline")
        assert m["intervals"] > 0 and m["measured"] == m["intervals"] and m["actual_kwh"] > 0, m
    assert rep["group"]["meters"] == 0  # nothing measured against a baseline
