"""Floods against a live concentrator with a real firmware meter reporting through a TCP proxy.

1. The head-end sends the meter one genuine billing reset (queued before the run); the proxy captures the link.
2. Then, in waves: idle connections from 200 loopback addresses; on connections of their own (from 127.0.0.3),
   the meter's frames replayed and forged, noise and an oversized frame; and into the meter's own link (a man in
   the middle): forged commands, replays of the captured command and acks, commands signed with the head-end's
   key but not exactly the schema, an oversized frame.
3. fd exhaustion: meterkit.testing.flood runs `meterkit concentrator` under RLIMIT_NOFILE 256 against 400 idle
   connections from 200 addresses, with a registered (rig) meter that must get every acknowledgement.

Counted: the meter's frames (tally: nothing lost), and the state changes the refused messages caused: billing
snapshots, billing-end, calendar and clock-set events and successful command results beyond the one genuine
reset (must be 0)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from pathlib import Path

from meter import cbor as mcbor
from meter import cose, events
from meter import messages as M
from meterkit import wire
from meterkit.headend import commands as C
from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.store import open_store
from meterkit.testing.flood import open_idle, run_flood, still_open
from meterkit.torture import attacks, fleetrun
from meterkit.torture.tally import Result

NAME = "floods"
SHORT = {"hours": 1.0, "waves": (0.4,), "frames": 200, "idle": 200, "fd_seconds": 4.0}
LONG = {"hours": 3.0, "waves": (0.4, 1.4, 2.4), "frames": 5000, "idle": 400, "fd_seconds": 12.0}
ATTACKER = "127.0.0.3"
STATE_EVENTS = (events.BILLING_END, events.CALENDAR_PASSIVE, events.CALENDAR_ACTIVATED, events.CLOCK_SET)


async def _upstream(port: int, streams: dict[str, bytes]) -> None:
    for data in streams.values():
        with contextlib.suppress(OSError):
            _r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
            w.write(data)
            with contextlib.suppress(OSError):
                await asyncio.wait_for(w.drain(), 5)
            w.close()


async def _wave(fleet: Fleet, cap: attacks.Capture, rng: random.Random, size: dict, seen: dict) -> None:
    m = fleet.meters[0]
    port = m.proxy.target[1]
    idle = open_idle(port, size["idle"], 200)
    await _upstream(port, attacks.upstream(cap.meter_frames or [b"\x00"], rng, size["frames"]))
    counter = fleet.conc.devices.get(m.device).counter + 1
    down = attacks.downstream(wire.HeadEnd(fleet.headend_key), m.device, counter, int(fleet.clock()),
                              cap.headend_frames, rng, max(size["frames"] // 10, 10))
    for kind, frames in down.items():
        for fr in frames:
            seen[kind] = seen.get(kind, 0) + m.proxy.inject(fr)
            await asyncio.sleep(0.002)
    await asyncio.sleep(0.5)
    seen["idle_held"] = max(seen.get("idle_held", 0), sum(still_open(s) for s in idle))
    for s in idle:
        s.close()


def _attacker(cap: attacks.Capture, rng: random.Random, size: dict, seen: dict):
    async def attack(fleet: Fleet) -> None:
        for hour in size["waves"]:
            while fleet.clock.hours() < hour:
                await asyncio.sleep(0.05)
            await _wave(fleet, cap, rng, size, seen)
    return attack


def state_changes(db, device: bytes) -> dict:
    """Facts that only an executed command (or a period end, none in this run) makes, less the genuine reset."""
    ev = db.events(device, codes=STATE_EVENTS)
    ok = 0
    for f in db.frames_after(device, -1, limit=None):
        if f.kind == M.RESPONSE:
            ok += mcbor.decode(cose.split(db.frame_raw(device, f.seq))[2]).get(M.K_RESULT) == M.RESULT_OK
    return {"billing_snapshots": len(db.billing_snapshots(device)) - 1, "state_events": len(ev) - 1,
            "commands_executed": ok - 1}


def _fd_exhaustion(size: dict, result: Result) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = run_flood(tmp, nofile=256, conns=400, sources=200, seconds=size["fd_seconds"])
    result.figures["fd_flood"] = {"held": r.flood_held, "fds_max": r.server_fds_max, "frames": r.frames,
                                  "acked": r.acked, "tracebacks": r.tracebacks, "log_lines": r.log_lines}
    if r.acked != r.frames or r.tracebacks or r.server_fds_max >= 256 - 16 or r.exit_code != 0:
        result.failures.append(f"fd exhaustion: {result.figures['fd_flood']}, exit {r.exit_code}")


def run(out: Path, long: bool, seed: int) -> Result:
    size = LONG if long else SHORT
    rng = random.Random(seed)
    fleet = fleetrun.new_fleet(out, [MeterSpec("f0", "constant", "tcp", seed=seed)], hours=size["hours"],
                               speed=1440.0, start_unix=1793491200 + 7200)  # mid-period: no period end
    cap, seen = attacks.Capture(), {}

    async def arm(f: Fleet) -> None:
        f.meters[0].proxy.fault = cap
        C.queue(f.store, f.meters[0].device, C.OP_BILLING_RESET, None, f.start_unix)

    fleetrun.run(fleet, before=arm, during=_attacker(cap, rng, size, seen))
    result = fleetrun.count(fleet, Result(NAME, "long" if long else "short"), expect_rejects=True)
    with open_store(fleet.db_path, create=False, readonly=True) as db:
        changes = state_changes(db, fleet.meters[0].device)
        refused = {r.reason: r.count for r in db.rejects()}
        result.figures["refusals_logged"] = {e: len(db.events(fleet.meters[0].device, codes=(e,)))
                                             for e in (events.AUTH_FAIL, events.COMMAND_REFUSED)}
    meter_refused = fleet.meters[0].runs[-1]["link"]["refused"] if fleet.meters[0].runs else None
    result.figures.update(sent=seen, rejects=refused, meter_refused=meter_refused,
                          state_changes=sum(changes.values()), changes=changes)
    if any(changes.values()):
        result.failures.append(f"refused messages changed the meter's state: {changes}")
    if not seen.get("replayed") or not cap.meter_frames:
        result.failures.append(f"the attack did not reach the meter: {seen}")
    judged = (meter_refused or {}).get("schema", 0) + (meter_refused or {}).get("expired", 0)
    if judged < seen.get("malformed", 0):
        result.failures.append(f"{judged} of {seen.get('malformed')} malformed commands reached the meter's schema "
                               f"check (the others came too late for their counters): {meter_refused}")
    _fd_exhaustion(size, result)
    return result
