"""TCP link drops at random frame boundaries and mid-frame: the proxy between real firmware meters and the
concentrator counts frame delimiters (COBS frames end with 0x00) in both directions and, every few frames, lets a
connection break exactly after a delimiter or at a random byte inside a frame. The meter reconnects and resends.
After `DROPS` drops per meter the link heals (a link that drops every few frames carries about one frame per
connection, fewer than the meter makes at the fleet's speed: its outbox holds the rest, which is not a loss).

Acceptance: once the link is back, everything is delivered: nothing lost, nothing left in the outbox, nothing
stored twice, no register decreases (tally)."""

from __future__ import annotations

import random
from pathlib import Path

from meterkit.sim.fleet import MeterSpec
from meterkit.torture import fleetrun
from meterkit.torture.tally import Result

NAME = "link_drops"
# speed: the link's breaks and reconnects (0.2-2 s back-off) run in real time, so the long form runs the meters
# slowly enough (60x: a reading a second) that a link dropping every few frames is not simply outpaced
SHORT = {"meters": 1, "hours": 1.0, "drops": 16, "speed": 1440.0}
LONG = {"meters": 2, "hours": 2.0, "drops": 50, "speed": 60.0}
EVERY_FRAMES = (1, 6)  # a drop after this many frames (delimiters) have passed, either way


class Breaker:
    """A TcpProxy fault: drop the connection after a random number of frames, at a delimiter or mid-frame."""

    def __init__(self, rng: random.Random, limit: int):
        self.rng = rng
        self.left = limit  # drops still to make: then the link heals
        self.countdown = rng.randint(*EVERY_FRAMES)
        self.at_boundary = 0
        self.mid_frame = 0

    def __call__(self, chunk: bytes, upstream: bool) -> int | None:
        if self.left <= 0:
            return None
        ends = [i + 1 for i, b in enumerate(chunk) if b == 0]
        if len(ends) < self.countdown:
            self.countdown -= len(ends)
            return None
        end = ends[self.countdown - 1]  # the frame that completes the count
        self.countdown = self.rng.randint(*EVERY_FRAMES)
        self.left -= 1
        start = ends[ends.index(end) - 1] if end != ends[0] else 0
        if self.rng.random() < 0.5 or end - start < 2:
            self.at_boundary += 1
            return end
        self.mid_frame += 1
        return self.rng.randrange(start + 1, end)  # at least one byte of the frame passes, not all of it


def run(out: Path, long: bool, seed: int) -> Result:
    size = LONG if long else SHORT
    specs = [MeterSpec(f"l{i}", "constant", "tcp", seed=seed + i) for i in range(size["meters"])]
    fleet = fleetrun.new_fleet(out, specs, hours=size["hours"], speed=size["speed"])
    breakers = []

    async def arm(f) -> None:  # the proxies exist once the fleet is set up: before any meter runs
        for i, m in enumerate(f.meters):
            breakers.append(Breaker(random.Random(seed * 1000 + i), size["drops"]))
            m.proxy.fault = breakers[-1]

    fleetrun.run(fleet, before=arm)
    result = fleetrun.count(fleet, Result(NAME, "long" if long else "short"))
    result.figures.update(drops=sum(m.proxy.drops for m in fleet.meters),
                          at_boundary=sum(b.at_boundary for b in breakers),
                          mid_frame=sum(b.mid_frame for b in breakers),
                          connections=sum(m.proxy.connections for m in fleet.meters))
    # The drops race the meters' run (their reconnects take real time, the fleet's clock runs fast): on a loaded
    # machine the last one or two may not come before the run ends. Fewer than 3/4 of them would mean little.
    if result.figures["drops"] < size["drops"] * size["meters"] * 3 // 4:
        result.failures.append(f"too few drops to mean anything: {result.figures['drops']} of "
                               f"{size['drops'] * size['meters']} planned")
    return result
