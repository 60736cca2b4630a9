"""`meterkit sim run` end to end: the real firmware under the Unix port meters each scenario accurately."""

import json
import subprocess
import sys

import pytest

from meterkit.sim.runner import SimError, run_sim

MORNING = 1793527200  # 2026-11-01 10:00 UTC: the simulated sun is up


@pytest.mark.parametrize("scenario", ["constant", "steps", "solar-day", "random-walk", "export", "mixed"])
def test_scenario_metered_within_0_01_percent(scenario):
    r = run_sim(scenario, 2.0, seed=3, start=MORNING)
    gross = r["exact_import_uwh"] + r["exact_export_uwh"]
    assert gross > 1000, "scenario produced no energy in the window"
    assert r["error_pct"] < 0.01, r
    assert r["coverage_ppm"] >= 999000, r
    assert r["missed"] == 0, r
    # import and export land in their own registers
    if r["exact_export_uwh"] == 0:
        assert r["metered_export_uwh"] == 0
    if r["exact_import_uwh"] == 0:
        assert r["metered_import_uwh"] == 0


def test_export_scenario_feeds_export_register():
    r = run_sim("export", 1.0)
    assert r["metered_export_uwh"] > 0
    assert r["registers"]["2.8.0"] == r["metered_export_uwh"] // 1000000


def test_metering_core_runs_in_a_capped_esp32_sized_heap():
    # A smoke cap on this 64-bit port, where objects and pointers are twice the ESP32's size: it includes ~20K
    # of simulator code a board never loads and ~80K of firmware bytecode (the TOU calendar alone ~22K) that a
    # board keeps frozen in flash. The board's own figures are measured in the 32-bit interpreter by
    # `meterkit bench` and held to budgets by test_heap_budget (docs/performance.md, "Heap"). 200K since issue
    # 12: the simulated board's relay pin, button and load-control output, hal.Output and hal.Button, the board
    # schema of those sections and meter.app's lazy control hook took the 0.05-h run's edge from 187K to 193K.
    # 216K after the settings and load-shed merges: this 0.5-h run then failed at 200K and 202K and passed at
    # 201K, 203K and 204K (the edge is not monotonic: where a 752-byte buffer at boot finds room). 232K after
    # issue 15's firmware-update and TLS merges (the update hooks in meter.app, the schema's ops 13-15, hal's OTA
    # and TLS transport): 216K then failed 3 of 3, 224K passed 3 of 3.
    r = run_sim("random-walk", 0.5, heap="232K", signing=False)
    assert r["heap_total"] <= 232 * 1024
    assert r["error_pct"] < 0.01


def test_too_small_heap_is_a_clear_error():
    with pytest.raises(SimError, match="heap cap 4K"):
        run_sim("constant", 0.1, heap="4K", signing=False)


def test_absent_chip_is_reported_not_a_crash(tmp_path):
    from meterkit.device.toolchain import firmware_dir
    from meterkit.sim.runner import sim_command, sim_env

    cmd = sim_command("constant", 0.05, flash_dir=tmp_path, flags=("absent",))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=sim_env(), cwd=str(firmware_dir().parent),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("@@RESULT ", 1)[1])
    assert result["samples"] == 0
    assert result["events"].get("1", 0) >= 1, result["events"]  # EV_SENSOR_FAULT logged


def test_cli_json_is_one_object():
    proc = subprocess.run([sys.executable, "-m", "meterkit.cli", "sim", "run", "--scenario", "constant",
                           "--hours", "0.2", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    for key in ("exact_import_uwh", "metered_import_uwh", "error_pct", "coverage_pct", "samples", "missed",
                "heap_peak", "wall_s"):
        assert key in obj


def test_solar_day_follows_the_clock():
    night = run_sim("solar-day", 1.0, start=MORNING - 10 * 3600)  # 00:00-01:00 UTC
    noon = run_sim("solar-day", 1.0, start=MORNING + 2 * 3600)  # 12:00-13:00 UTC
    assert night["exact_import_uwh"] == 0 and night["metered_import_uwh"] == 0
    assert noon["metered_import_uwh"] > 10 * 1000000


def test_signing_meter_runs_in_a_capped_heap():
    # The whole meter (signing, profile, event log, outbox, TOU calendar, demand) on the 64-bit port, firmware
    # bytecode included: a board freezes that bytecode into flash (docs/performance.md, "Heap"). Its edge here:
    # 280-288K before the firmware-update merge, 288-296K after (3 runs each): the cap keeps a margin above it.
    # The board's own budgets are the 32-bit ones (test_heap_budget.py).
    r = run_sim("steps", 0.5, heap="304K")
    assert r["frames"] > 10 and r["error_pct"] < 0.01


def test_unknown_scenario_rejected():
    with pytest.raises(SimError, match="unknown scenario"):
        run_sim("lunar-eclipse", 1)
