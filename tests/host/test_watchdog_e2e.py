"""A watchdog reset, end to end: the real firmware (Unix port, simulated board) stalls inside a cycle, its
watchdog resets it (sim/run.py ends the run as a restart), the next boot logs WATCHDOG_RESET, and the signed
event frame is stored by a running concentrator (real TCP on 127.0.0.1, real SQLite)."""

from __future__ import annotations

import asyncio
import json
import subprocess

from meter import events, frame
from meter.identity import Identity
from meterkit.sim.runner import sim_command, sim_env
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until


def _run(flash, frames, hours, *extra):
    cmd = sim_command("constant", hours, flash_dir=flash, start=T0) + ["--frames", str(frames), *extra]
    return subprocess.run(cmd, env=sim_env(), capture_output=True, text=True, timeout=300)


def test_a_stalled_loop_is_reset_by_the_watchdog_and_the_head_end_hears_of_it(tmp_path):
    flash, frames = tmp_path / "flash", tmp_path / "meter.frames"
    first = _run(flash, frames, 0.05, "--stall", "60:40")  # at 60 s the I2C bus hangs for 40 s (timeout 30 s)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "@@RESET watchdog: no feed for 40" in first.stdout
    second = _run(flash, frames, 0.02)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout.split("@@RESULT ", 1)[1])
    assert result["events"].get(str(events.WATCHDOG_RESET)) == 1
    assert result["watchdog_longest_ms"] < 1000  # a cycle, not the stall: this boot ran clean

    blob = frames.read_bytes()
    meter = SimMeter(identity=Identity(str(flash)))  # the device key the firmware made, read from its flash
    assert meter.device_id.hex() == result["device_id"]
    n_frames = len(frame.Deframer().feed(blob))

    async def main():
        async with LoopbackRig(tmp_path / "head.db") as rig:
            rig.register(meter)
            cl = await rig.connect(meter)
            cl.send(blob)
            # (the reset skipped the rest of a block of sequence numbers: acks stop below that gap)
            await until(lambda: rig.conc.stats().get("frames_stored", 0) == n_frames)
            assert cl.refused == []
            rows = list(rig.store.export("events", meter.device_id)[1])
            return [(r[3], r[4]) for r in rows]

    stored = asyncio.run(asyncio.wait_for(main(), 60))
    assert (events.WATCHDOG_RESET, "watchdog") in stored
    assert [c for c, _ in stored].count(events.POWER_UP) == 2  # both boots
