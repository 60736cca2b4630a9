"""Random power kills with a live link: real firmware meters over TCP are SIGKILLed at random instants and
powered up again on the same flash a few virtual seconds to a minute later, while the concentrator runs on.

Acceptance: every frame made is stored (or still waiting in the outbox at the end), no register decreases, no
fact stored twice (tally)."""

from __future__ import annotations

import random
from pathlib import Path

from meterkit.sim.fleet import MeterSpec
from meterkit.torture import fleetrun
from meterkit.torture.tally import Result

NAME = "power_kills"
SHORT = {"meters": 1, "kills": 4}
LONG = {"meters": 4, "kills": 26}  # 104 kills
GAP_MIN_S = (240, 720)  # between power-up and the next kill (virtual seconds)
OUTAGE_S = (2, 60)


def schedule(rng: random.Random, kills: int) -> tuple[list[tuple[float, float]], float]:
    """[(cut, on)] in hours, and the hours the run needs (an hour of normal running after the last kill)."""
    t, out = 0.0, []
    for _ in range(kills):
        t += rng.uniform(*GAP_MIN_S)
        cut = t
        t += rng.uniform(*OUTAGE_S)
        out.append((cut / 3600, t / 3600))
    return out, t / 3600 + 1.0


def run(out: Path, long: bool, seed: int) -> Result:
    size = LONG if long else SHORT
    rng = random.Random(seed)
    specs = [MeterSpec(f"k{i}", "constant", "tcp", seed=seed + i) for i in range(size["meters"])]
    plans = [schedule(rng, size["kills"]) for _ in specs]
    fleet = fleetrun.new_fleet(out, specs, hours=max(h for _, h in plans), speed=1440.0)
    for spec, (cuts, _) in zip(specs, plans, strict=True):
        for cut, on in cuts:
            fleet.at(cut, "power_cut", spec.name)
            fleet.at(on, "power_on", spec.name)
    fleetrun.run(fleet)
    result = Result(NAME, "long" if long else "short")
    result.figures.update(kills=sum(m.power_cuts for m in fleet.meters), hours=round(fleet.hours, 2))
    if result.figures["kills"] != size["kills"] * size["meters"]:
        result.failures.append(f"{result.figures['kills']} kills made, {size['kills'] * size['meters']} planned")
    return fleetrun.count(fleet, result)
