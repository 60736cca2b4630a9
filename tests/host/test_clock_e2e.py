"""End to end: the concentrator keeps the real firmware's clocks (MicroPython Unix port, simulated meters over TCP
and serial on the fleet clock). One meter boots without a clock (its RTC at 2000-01-01, as an ESP32's after
power-up), one runs two hours slow, one ten minutes fast. The concentrator sets the first at its hello, measures
the drift of the others from readings that arrived promptly, and sets them: with force where the jump is beyond
900 s. Nothing is stamped with a wrong date, and `meterkit status` shows each meter's drift."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit.headend import status
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

SPECS = [
    MeterSpec("unset", "constant", "tcp", seed=1, rtc="unset"),
    MeterSpec("slow", "constant", "serial", seed=2, rtc_offset_s=-7200),
    MeterSpec("fast", "constant", "tcp", seed=3, rtc_offset_s=600),
]


def test_the_concentrator_sets_an_unset_and_two_drifted_clocks(tmp_path):
    # The fleet clock steps by ~18 virtual seconds and lets meters run up to 120 s ahead of it (sim/run.py): the
    # drift rule gets a bound and a jitter to match (there is no outbox burst in this run to tell apart).
    fleet = Fleet(tmp_path, SPECS, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite", hours=1.0,
                  speed=1440.0, clock_drift_max_s=300.0, clock_jitter_s=40.0)
    run_fleet(fleet)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    start = fleet.start_unix
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        byname = {m.spec.name: m.device for m in fleet.meters}
        sets = {name: [q for q in db.queued_commands(dev) if q.op == M.OP_SET_TIME] for name, dev in byname.items()}
        moved = {name: [e.value for e in db.events(dev, codes=(events.CLOCK_SET,))] for name, dev in byname.items()}
        rows = {name: db.interval_rows(dev) for name, dev in byname.items()}
        frames = {name: db.frames_after(dev, -1, limit=None) for name, dev in byname.items()}
        fleet_rows = {r["name"]: r for r in status.fleet_status(db, now=start + 3600)}
        meters = {m.name: (m.clock_drift_s, m.clock_drift_at) for m in db.meters()}
        counts = db.counters()
    for name in byname:
        assert [(q.state, q.result) for q in sets[name]] == [("answered", 0)], (name, sets[name], meters, counts)
        assert fleet.meters[[m.spec.name for m in fleet.meters].index(name)].runs[-1]["clock_set"], name
    unset, slow, fast = sets["unset"][0], sets["slow"][0], sets["fast"][0]
    assert (unset.args, unset.reason) == ({M.A_FORCE: False}, "set; expiry not checked: the clock was not set")
    assert "not set" in unset.note
    assert slow.args == {M.A_FORCE: True} and "off by -7" in slow.note  # two hours: only with force
    assert fast.args == {M.A_FORCE: False} and "off by +" in fast.note  # ten minutes: within 900 s
    [back] = moved["slow"]
    assert 7000 <= back <= 7300, moved
    [forward] = moved["fast"]
    assert -900 <= forward <= -600, moved
    [jump] = moved["unset"]
    assert jump > 25 * 365 * 86400, "from the RTC's 2000-01-01 to now"
    # every clock was set within minutes: every row has the right date, one row says that the clock was
    # adjusted in its interval (for the meter that had no clock: its first row, partial too)
    for name in byname:
        assert rows[name] and all(start < r.end <= start + 3600 + 600 for r in rows[name]), (name, rows[name][:3])
        assert len([r for r in rows[name] if r.status & M.ROW_CLOCK_ADJUSTED]) == 1, (name, rows[name])
    first = rows["unset"][0].status
    assert first & M.ROW_CLOCK_ADJUSTED and first & M.ROW_PARTIAL, rows["unset"][:2]
    flagged = [f for f in frames["unset"] if f.status & M.ST_CLOCK_NOT_SET]
    assert flagged and flagged[0].kind == M.HELLO
    assert all(f.meter_time < 3600 for f in flagged), "stamped with seconds since boot, not a date"
    wrong = [f for f in frames["unset"] if not f.status & M.ST_CLOCK_NOT_SET and f.meter_time < start]
    assert not wrong, wrong[:3]
    for name, r in fleet_rows.items():
        assert r["clock"] != "not set" and r["clock_drift_s"] is not None, (name, r)
        assert abs(r["clock_drift_s"]) < fleet.clock_settings["clock_drift_max_s"], (name, r["clock"])
