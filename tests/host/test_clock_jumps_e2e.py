"""End to end (issue 11, finding 2): clocks set wrong and corrected, with the real firmware (MicroPython Unix port)
reporting to a real concentrator on the fleet clock. Someone moves a meter's RTC behind its back (sim/run.py
--rtc-jump) ten years ahead for 30 minutes and back, ten years back, to 1970, beyond uint32; another meter
comes back from a power cut with its clock a year behind. The meters that lose a usable clock say so (status
bit ST_CLOCK_NOT_SET) and the concentrator sets them. In every case: no billing period snapshotted twice, a
load-profile row within one interval of the correction, no internal-error event, every frame made stored."""

from __future__ import annotations

from collections import Counter

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meterkit.sim.demo import _frames_produced
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

START = 1796079600  # 2026-11-30 23:00 UTC: the billing period ends an hour later (the board: UTC, day 1)
BILLING_END = START + 3600
TEN_YEARS = 3652 * 86400
QUARTER = 900
SPECS = [
    MeterSpec("ahead", "constant", "tcp", seed=1, rtc_jump=f"600:+{TEN_YEARS},2400:-{TEN_YEARS}"),
    MeterSpec("back", "constant", "tcp", seed=2, rtc_jump=f"600:-{TEN_YEARS}"),
    MeterSpec("epoch", "constant", "serial", seed=3, rtc_jump="600:=0"),
    MeterSpec("beyond", "constant", "tcp", seed=4, rtc_jump=f"600:={(1 << 32) + 1000}"),
    MeterSpec("boot", "constant", "serial", seed=5, restart_rtc_offset_s=-365 * 86400),
]


def test_clocks_set_wrong_and_corrected(tmp_path):
    fleet = Fleet(tmp_path, SPECS, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite", hours=1.5,
                  speed=1440.0, start_unix=START)
    fleet.at(0.5, "power_cut", "boot")
    fleet.at(0.52, "power_on", "boot")
    run_fleet(fleet)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    figures = {}
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        for m in fleet.meters:
            dev, name = m.device, m.spec.name
            periods = Counter(b.period_end for b in db.billing_snapshots(dev))
            sets = sorted(db.events(dev, codes=(events.CLOCK_SET,)), key=lambda e: e.event_seq)
            corrected = sets[-1].time if sets else None  # the last set (key 9: the new time) corrected it
            rows = db.interval_rows(dev)
            after = [r.end for r in rows if corrected is not None and corrected < r.end <= corrected + QUARTER]
            internal = [e.value for e in db.events(dev, codes=(events.INTERNAL,))]
            made = _frames_produced(m.frames_log)
            stored = {f.seq for f in db.frames_after(dev, -1, limit=None)}
            figures[name] = {"snapshots": dict(periods), "clock_sets": [e.value for e in sets],
                             "rows_after_correction": len(after), "internal": len(internal),
                             "frames_made": len(made), "frames_stored": len(stored & made)}
            assert [p for p, n in periods.items() if n > 1] == [], (name, figures[name])
            assert list(periods) == [BILLING_END], (name, figures[name])
            assert sets and len(after) == 1, (name, figures[name], [(r.end, r.status) for r in rows])
            assert internal == [], (name, internal)
            assert made and made <= stored, (name, figures[name])
            wrong = [r.end for r in rows if not START < r.end <= START + 2 * 3600]
            figures[name]["rows_dated_wrong"] = len(wrong)
            if name == "ahead":  # made while its clock read ten years ahead: a valid time, so it was believed
                assert all(START + TEN_YEARS < t <= START + TEN_YEARS + 2400 for t in wrong), (name, wrong)
            else:
                assert wrong == [], (name, wrong)
            assert not [r for r in m.runs if r["events"].get(str(events.INTERNAL))], (name, m.runs)
        # a resend of a stored frame (the link's ack timer at 1440x) is a replay, and the bytes a power cut left
        # half sent on the serial line are noise: neither is a frame refused
        refused = [r for r in db.rejects() if r.reason not in ("replay", "noise")]
    assert refused == [], refused
    print("clock jumps:", figures)
