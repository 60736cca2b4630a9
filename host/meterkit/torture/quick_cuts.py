"""Bursts of quick successive power cuts (issue 11, finding 1): a real firmware meter over TCP is powered up and
cut again 4 times in a row, each cut a few virtual seconds after boot (at the meter's first time report, every
4 batches = 17.6 virtual s: before the head-end's 30-s back-fill), then left running.

The figure: from the last power-up (the time in that boot's hello: a meter's clock starts at the fleet's time)
to the first reading of that boot that the head-end stored (its receive time on the fleet clock), in reading
periods. Acceptance: at most 2 reading periods in every burst, and nothing lost (tally). The fleet runs at 120x
(not 1440x) so that "a few seconds after boot" is a few of the meter's seconds and not one step of the fleet."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from meter import messages as M
from meterkit.sim.fleet import MeterSpec
from meterkit.torture import fleetrun
from meterkit.torture.tally import Result, logged_payloads

NAME = "quick_cuts"
SHORT_BURSTS, LONG_BURSTS = 2, 20
CUTS = 4
READING_S = 60
SPEED = 120.0
LEAD_S = 300  # normal running before the first burst
AFTER_BOOT_S = (3, 15)  # cut this long after power-up (the fleet applies it at the meter's next time report)
OUTAGE_S = (1, 5)
OBSERVE_S = 15 * READING_S  # after a burst's last power-up, until the next burst
RESUME_PERIODS = 2


def bursts(rng: random.Random, n: int) -> tuple[list[list[tuple[float, str]]], list[float]]:
    """The actions of each burst [(second, action)] and the second of each burst's last power-up."""
    t, out, last_on = float(LEAD_S), [], []
    for _ in range(n):
        actions = []
        for i in range(CUTS):
            if i:
                actions.append((t, "power_on"))
                t += rng.uniform(*AFTER_BOOT_S)
            actions.append((t, "power_cut"))
            t += rng.uniform(*OUTAGE_S)
        actions.append((t, "power_on"))
        last_on.append(t)
        out.append(actions)
        t += OBSERVE_S
    return out, last_on


def boots(frames_log: Path) -> list[tuple[int, int]]:
    """(meter time, seq) of every boot's hello in a frames log, by time. A meter's clock starts at the fleet's
    time when it is powered up, so a hello's time is its power-up (plus the boot's few virtual seconds)."""
    return sorted((p[M.K_TIME], p[M.K_SEQ]) for p in logged_payloads(frames_log) if p[M.K_KIND] == M.HELLO)


def resumed(frames: list[tuple[int, int, int, float]], hellos: list[tuple[int, int]], start: int,
            last_on: list[float]) -> list[float | None]:
    """Per burst: reading periods from its last power-up to the first reading of that boot (a sequence number
    above its hello's: numbers never repeat) stored (None: none within OBSERVE_S, or no hello)."""
    out = []
    for on_s in last_on:
        on = start + on_s
        until = on + OBSERVE_S  # the next burst's first cut (or the end of the run)
        boot = next(((t, seq) for t, seq in hellos if on - 1 <= t <= until), None)  # launched at int(clock)
        fresh = [rx for seq, kind, _t, rx in frames if boot and kind == M.READING and seq > boot[1] and rx <= until]
        out.append(round((min(fresh) - boot[0]) / READING_S, 2) if fresh else None)
    return out


def run(out: Path, long: bool, seed: int) -> Result:
    rng = random.Random(seed)
    plan, last_on = bursts(rng, LONG_BURSTS if long else SHORT_BURSTS)
    hours = (last_on[-1] + OBSERVE_S) / 3600
    fleet = fleetrun.new_fleet(out, [MeterSpec("q0", "constant", "tcp", seed=seed)], hours=hours, speed=SPEED,
                               reading_s=READING_S)
    for t, action in (a for burst in plan for a in burst):
        fleet.at(t / 3600, action, "q0")
    fleetrun.run(fleet)
    result = fleetrun.count(fleet, Result(NAME, "long" if long else "short"))
    m = fleet.meters[0]
    delays = resumed(fleetrun.received(fleet.db_path, m.device), boots(m.frames_log), fleet.start_unix, last_on)
    done = [d for d in delays if d is not None]
    result.figures.update(bursts=len(last_on), cuts=fleet.meters[0].power_cuts, resumed_periods=delays,
                          resumed_max=max(done) if done else None,
                          resumed_median=statistics.median(done) if done else None,
                          stalled=delays.count(None))
    if result.figures["cuts"] != CUTS * len(last_on):
        result.failures.append(f"{result.figures['cuts']} cuts made, {CUTS * len(last_on)} planned")
    late = [i for i, d in enumerate(delays) if d is None or d > RESUME_PERIODS]
    if late:
        result.failures.append(f"bursts {late}: no fresh reading stored within {RESUME_PERIODS} reading periods "
                               f"of the last power-up (observed for {OBSERVE_S // READING_S})")
    return result
