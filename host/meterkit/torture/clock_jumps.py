"""Clocks set wrong and corrected (issue 11, finding 2), with the real firmware reporting to a real concentrator on
the fleet clock. Someone moves a meter's RTC behind its back (sim/run.py --rtc-jump) ten years ahead for a while
and back, ten years back, to 1970, beyond uint32; another meter comes back from a power cut with its clock a year
behind. The meters that lose a usable clock say so (status bit ST_CLOCK_NOT_SET) and the concentrator sets them.

Checks per meter: no billing period snapshotted twice (and only the one period the run crosses), a load-profile
row within one interval of the correction, no internal-error event (stored, or counted by the meter), rows dated
wrong only while a wrong but valid clock was believed, every frame made stored, none refused (tally, count).
The short form moves the clocks at fixed instants; the long form draws them (and runs longer)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from meter import events
from meterkit.sim.fleet import MeterSpec
from meterkit.store import open_store
from meterkit.torture import fleetrun
from meterkit.torture.tally import Result

NAME = "clock_jumps"
START = 1796079600  # 2026-11-30 23:00 UTC: the billing period ends an hour later (the board: UTC, day 1)
BILLING_END = START + 3600
TEN_YEARS = 3652 * 86400
QUARTER = 900
BEYOND_U32 = (1 << 32) + 1000


def plan(rng: random.Random | None) -> tuple[list[MeterSpec], dict]:
    """The meters and their faults (specs, {"ahead": (jump s, back s), "boot": cut hour, "hours": run}): fixed
    without rng (the short form), drawn with it (the long form)."""
    at = (lambda: int(rng.uniform(300, 1500))) if rng else (lambda: 600)
    ahead = at()
    back = ahead + (int(rng.uniform(600, 2400)) if rng else 1800)
    boot_cut = round(rng.uniform(0.3, 0.7), 3) if rng else 0.5
    specs = [
        MeterSpec("ahead", "constant", "tcp", seed=1, rtc_jump=f"{ahead}:+{TEN_YEARS},{back}:-{TEN_YEARS}"),
        MeterSpec("back", "constant", "tcp", seed=2, rtc_jump=f"{at()}:-{TEN_YEARS}"),
        MeterSpec("epoch", "constant", "serial", seed=3, rtc_jump=f"{at()}:=0"),
        MeterSpec("beyond", "constant", "tcp", seed=4, rtc_jump=f"{at()}:={BEYOND_U32}"),
        MeterSpec("boot", "constant", "serial", seed=5, restart_rtc_offset_s=-365 * 86400),
    ]
    return specs, {"ahead": (ahead, back), "boot": boot_cut, "hours": 3.0 if rng else 1.5}


def check_meter(db, m, faults: dict) -> tuple[dict, list[str]]:
    """One meter's figures and the checks it failed."""
    dev, name = m.device, m.spec.name
    periods = Counter(b.period_end for b in db.billing_snapshots(dev))
    sets = sorted(db.events(dev, codes=(events.CLOCK_SET,)), key=lambda e: e.event_seq)
    corrected = sets[-1].time if sets else None  # the last set (key 9: the new time) corrected it
    rows = db.interval_rows(dev)
    after = [r.end for r in rows if corrected is not None and corrected < r.end <= corrected + QUARTER]
    internal = len(list(db.events(dev, codes=(events.INTERNAL,))))
    internal += sum(r["events"].get(str(events.INTERNAL), 0) for r in m.runs)
    wrong = [r.end for r in rows if not START < r.end <= START + faults["hours"] * 3600 + QUARTER]
    figures = {"snapshots": sum(periods.values()),
               "clock_sets": [e.value for e in sets], "rows_after_correction": len(after), "internal": internal,
               "rows_dated_wrong": len(wrong)}
    fails = []
    if list(periods) != [BILLING_END] or any(n > 1 for n in periods.values()):
        fails.append(f"{name}: billing snapshots {dict(periods)}, want one for {BILLING_END}")
    if not sets or len(after) != 1:
        fails.append(f"{name}: {len(after)} profile rows within {QUARTER} s of the correction ({len(sets)} sets)")
    if internal:
        fails.append(f"{name}: {internal} internal-error events")
    jump, back = faults["ahead"]
    believed = (START + TEN_YEARS + jump - QUARTER, START + TEN_YEARS + back + QUARTER)  # a valid time: believed
    if [t for t in wrong if name != "ahead" or not believed[0] < t <= believed[1]]:
        fails.append(f"{name}: profile rows dated wrong {wrong[:5]}")
    return figures, fails


def run(out: Path, long: bool, seed: int) -> Result:
    specs, faults = plan(random.Random(seed) if long else None)
    fleet = fleetrun.new_fleet(out, specs, hours=faults["hours"], speed=1440.0, start_unix=START)
    fleet.at(faults["boot"], "power_cut", "boot")
    fleet.at(faults["boot"] + 0.02, "power_on", "boot")
    fleetrun.run(fleet)
    result = fleetrun.count(fleet, Result(NAME, "long" if long else "short"))
    with open_store(fleet.db_path, create=False, readonly=True) as db:
        for m in fleet.meters:
            figures, fails = check_meter(db, m, faults)
            result.figures[m.spec.name] = figures
            result.failures += fails
    return result
