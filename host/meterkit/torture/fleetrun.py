"""What the fleet scenarios share: a fleet of real firmware meters on a fresh head-end key, run to its end, then
counted (tally), with the run's own complaints (a meter that crashed, frames the head-end refused) as failures."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meterkit.sim.fleet import Fleet, FleetMeter, MeterSpec
from meterkit.store import open_store
from meterkit.torture.tally import Result, logged_seqs, tally

# A resend of a stored frame (the link's ack timer at 1440x) is a replay (answered or not: a meter back from a
# power cut resends its window, a figure of its own), and the bytes a power cut left half sent on a line are
# noise: none of them is a frame refused.
HARMLESS_REJECTS = ("replay", "replay-unanswered", "noise")
# More frames than the link's window (firmware meter/link.py: 8) still in the outbox when the run (and its 30-s
# drain) ended: not lost, but the head-end stopped taking them: reporting stalled.
STALLED_PENDING = 8


def new_fleet(out: Path, specs: list[MeterSpec], **kw) -> Fleet:
    out.mkdir(parents=True, exist_ok=True)
    return Fleet(out, specs, ec.generate_private_key(ec.SECP256R1()), out / "db.sqlite", **kw)


Hook = Callable[[Fleet], Awaitable[None]]


def run(fleet: Fleet, before: Hook | None = None, during: Hook | None = None, timeout_s: float = 1800.0,
        settle_s: float = 3.0) -> None:
    """Set up, then `before` (e.g. arm the proxies), run to the end with `during` running beside the fleet (e.g.
    an attacker), close."""

    async def scenario() -> None:
        await fleet.setup()
        try:
            if before is not None:
                await before(fleet)
            side = asyncio.create_task(during(fleet)) if during is not None else None
            await fleet.run(settle_s=settle_s)
            if side is not None:
                await side
        finally:
            await fleet.close()
            gc.collect()  # the killed runs' subprocess transports close now, on this loop, not after it is gone
            await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(scenario(), timeout_s))


def pending(m: FleetMeter, stored: set[int]) -> set[int]:
    """Frames still in the meter's outbox at the end of its last run (its newest `outbox_held` made frames)."""
    held = m.runs[-1].get("outbox_held", 0) if m.runs else 0
    made = sorted(logged_seqs(m.frames_log) | stored)
    return set(made[len(made) - held:]) if held else set()


def count(fleet: Fleet, result: Result, expect_rejects: bool = False) -> Result:
    """Tally every meter of a finished fleet into result; a crash, a stalled meter, and (unless the scenario
    sends hostile frames itself: expect_rejects) a frame the head-end refused are failures."""
    result.failures += [line for line in fleet.log if "exited with" in line]
    with open_store(fleet.db_path, create=False, readonly=True) as db:
        for m in fleet.meters:
            stored = set(db.seqs_above(m.device, -1))
            t = tally(db, m.device, m.spec.name, m.frames_log, pending(m, stored))
            result.tallies.append(t)
            if t.pending > STALLED_PENDING:
                result.failures.append(f"{t.meter}: {t.pending} frames still in the outbox at the end (stalled)")
        rejects = db.rejects()
        refused = [(r.reason, r.count) for r in rejects if r.reason not in HARMLESS_REJECTS]
        result.figures["unanswered_replays"] = sum(r.count for r in rejects if r.reason == "replay-unanswered")
    if refused and not expect_rejects:
        result.failures.append(f"frames refused by the head-end: {refused}")
    result.figures["refused_frames"] = sum(n for _, n in refused)
    return result


def received(db_path: Path, device: bytes) -> list[tuple[int, int, int, float]]:
    """(seq, kind, meter_time, received_at) of every frame stored for a meter, by seq."""
    with open_store(db_path, create=False, readonly=True) as db:
        return [(f.seq, f.kind, f.meter_time, f.received_at) for f in db.frames_after(device, -1, limit=None)]
