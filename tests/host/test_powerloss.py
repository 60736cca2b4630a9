"""Power loss at any instant: the real firmware (Unix port, simulated chip) is SIGKILLed at >= 100 random moments.

After every restart the registers must load uncorrupted, never be lower than before, never lower than the last
checkpoint the firmware reported as written, and lose at most one checkpoint quantum (10 Wh) of what it had
metered before the kill.
"""

import random
import signal
import subprocess
import threading
import time

from meterkit.device.toolchain import firmware_dir
from meterkit.sim.runner import sim_command, sim_env

KILLS = 100
QUANTUM_UWH = 10 * 1000000
# The firmware prints its progress line after a batch has settled (and maybe checkpointed), so a kill between
# the checkpoint and the line restores at most one batch more than the last line said: 64 cycles of 68.632 ms
# at the constant scenario's 18 W.
BATCH_UWH = 18 * 64 * 68632 // 1000 + 1


def _run_until_killed(flash, batches, delay_s):
    """Start the firmware; after it reports `batches` batches, kill it within delay_s (a random instant inside
    the next batch). Kill points are random in the meter's own progress, so machine load does not change what
    the test exercises. Returns (restored, last_metered, last_checkpoint) as the firmware reported them."""
    cmd = sim_command("constant", 48, flash_dir=flash, flags=("trace",))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sim_env(),
                            cwd=str(firmware_dir().parent))
    timer = threading.Timer(delay_s, proc.send_signal, (signal.SIGKILL,))
    restored = None
    metered = checkpointed = None
    seen = 0
    try:
        if batches == 0:
            timer.start()
        for line in proc.stdout:
            parts = line.split()
            if parts[0] == "@@RESTORED":
                restored = int(parts[1])
            elif parts[0] == "@@BATCH":
                metered, checkpointed = int(parts[1]), int(parts[2])
                seen += 1
                if seen == batches:
                    timer.start()
        proc.wait(timeout=60)
    finally:
        timer.cancel()
    err = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, f"firmware ended on its own (rc {proc.returncode}): {err[-1500:]}"
    return restored, metered, checkpointed


def test_registers_survive_random_kills(tmp_path):
    rng = random.Random(20261121)
    flash = tmp_path / "flash"
    flash.mkdir()
    prev_restored = 0
    prev_metered = None
    prev_checkpoint = 0
    losses = []
    t0 = time.monotonic()
    for i in range(KILLS):
        # 0..600 batches: up to ~44 virtual minutes, so runs span the 15-minute checkpoint rule and kills land
        # both before and after checkpoints; the delay (up to ~2 batches of wall time) picks the instant.
        restored, metered, checkpointed = _run_until_killed(flash, rng.randint(0, 600), rng.uniform(0, 0.02))
        if restored is None:
            # killed before the firmware even printed its restore line: nothing to compare; the next run will
            continue
        assert restored >= prev_restored, f"kill {i}: registers decreased {prev_restored} -> {restored}"
        assert restored >= prev_checkpoint, f"kill {i}: lost a written checkpoint ({prev_checkpoint} > {restored})"
        if prev_metered is not None:
            assert restored <= prev_metered + BATCH_UWH, f"kill {i}: restored more than was metered"
            lost = prev_metered - restored
            assert lost <= QUANTUM_UWH, f"kill {i}: lost {lost} uWh, more than one quantum"
            losses.append(lost)
        prev_restored = restored
        if metered is not None:
            prev_metered, prev_checkpoint = metered, checkpointed
        else:
            prev_metered, prev_checkpoint = restored, restored
    assert len(losses) >= KILLS // 2, f"too few comparable runs ({len(losses)})"
    assert prev_restored > 20 * QUANTUM_UWH, "the runs metered too little to exercise checkpoints"
    assert any(x > 0 for x in losses), "no kill ever landed between checkpoints"
    assert time.monotonic() - t0 < 600, "bounded"
