"""Disconnect control in the simulator's own process (firmware/sim/run.py): the button pressed from the command
line (--press, the profile's sim.button_presses), and a power cut (SIGKILL) while the relay is open: the meter
boots with it open and meters nothing until the customer's button closes it."""

import json
import random
import signal
import subprocess

from meter import events
from meter.messages import CONTROL_CONNECTED, CONTROL_READY
from meter.store import Store
from meterkit.device.toolchain import firmware_dir
from meterkit.sim.runner import sim_command, sim_env

BATCH_S = 64 * 68632 / 1e6  # one metrology batch of the unix-sim board: when the meter looks at its button
WATTS = 18  # the constant scenario


def _run(flash, hours, press=None, kill_after_batches=None, when_ready=False):
    cmd = sim_command("constant", hours, flash_dir=flash, flags=("trace",) + (("press-when-ready",) * when_ready))
    if press is not None:
        cmd += ["--press", str(press)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sim_env(),
                            cwd=str(firmware_dir().parent))
    result = None
    batches = 0
    for line in proc.stdout:
        if line.startswith("@@BATCH"):
            batches += 1
            if batches == kill_after_batches:
                proc.send_signal(signal.SIGKILL)  # the power goes
        elif line.startswith("@@RESULT "):
            result = json.loads(line.split(" ", 1)[1])
    proc.wait(timeout=120)
    err = proc.stderr.read()
    if kill_after_batches is not None:
        assert proc.returncode == -signal.SIGKILL, f"ended on its own (rc {proc.returncode}): {err[-1500:]}"
        return None
    assert proc.returncode == 0, err[-1500:]
    return result


def test_a_meter_killed_while_disconnected_boots_disconnected_until_the_button(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    Store(str(flash), "disconnect", max_payload=8).save(bytes((CONTROL_CONNECTED, 2)))  # control mode 2 (as set)
    # the customer's button 120 s in: f, connected -> ready_for_reconnection; killed some batches later
    press_batches = int(120 / BATCH_S) + 1
    _run(flash, 1.0, press=120, kill_after_batches=press_batches + random.randint(2, 30))
    r = _run(flash, 0.1)
    assert r["control"] == [CONTROL_READY, 2], r["control"]
    assert r["metered_import_uwh"] == 0 and r["exact_import_uwh"] == 0, r
    assert str(events.DISCONNECT_CONTROL) not in r["events"], "no transition at boot"
    r = _run(flash, 0.1, press=60)  # e: the button closes the relay again
    assert r["control"] == [CONTROL_CONNECTED, 2], r["control"]
    low, high = WATTS * (360 - 60 - BATCH_S) / 3600e-6, WATTS * (360 - 60) / 3600e-6
    assert low <= r["exact_import_uwh"] <= high, (low, r["exact_import_uwh"], high)
    assert abs(r["metered_import_uwh"] - r["exact_import_uwh"]) <= r["exact_import_uwh"] * 1e-4, r
    assert r["events"][str(events.DISCONNECT_CONTROL)] == 1, r["events"]


def test_a_customer_who_presses_when_ready_waits_for_the_ready_state(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    store = Store(str(flash), "disconnect", max_payload=8)
    store.save(bytes((CONTROL_CONNECTED, 2)))  # connected, control mode 2
    r = _run(flash, 0.1, press=60, when_ready=True)  # not ready: the press is held (no manual disconnect f)
    assert r["control"] == [CONTROL_CONNECTED, 2], r["control"]
    assert str(events.DISCONNECT_CONTROL) not in r["events"], r["events"]
    assert r["metered_import_uwh"] > 0
    store.save(bytes((CONTROL_READY, 2)))  # ready for reconnection: the same press closes the relay (e)
    r = _run(flash, 0.1, press=60, when_ready=True)
    assert r["control"] == [CONTROL_CONNECTED, 2], r["control"]
    assert r["events"][str(events.DISCONNECT_CONTROL)] == 1, r["events"]
