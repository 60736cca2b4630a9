# The whole meter (meter.app) on simulated hardware: bad things happen to the chip and the bus, and the
# sampling loop neither crashes nor loses its accuracy.
import json

from meter import hal
from meter.app import EV_CHIP_RESET, EV_I2C_ERRORS, EV_SENSOR_FAULT, EV_SENSOR_OK, Meter
from mptest import eq, fresh_dir

BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"


def _meter(**overrides):
    with open(BOARD) as f:
        board = json.loads(f.read())
    flash = fresh_dir("test-app")
    sim = {"scenario": "constant"}
    sim.update(overrides)
    hw = hal.open_hardware(hal.validate_board(board), flash_dir=flash, sim_overrides=sim)
    return hw, Meter(hw)


def _run_s(hw, m, seconds):
    end = hw.sim.clock.now_us + seconds * 1000000
    m.run_until(lambda: hw.sim.clock.now_us >= end)


def _error_ppm(hw, m):
    chip = hw.sim.chip
    chip.sync()
    exact = chip.exact_import_uwh
    got = m.registers.total_uwh("import")
    return abs(got - exact) * 1000000 // exact


def test_meters_accurately_and_checkpoints():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 1800)
    assert _error_ppm(hw, m) <= 1, _error_ppm(hw, m)
    eq(m.store.writes >= 2, True, "checkpoints written (15-minute rule)")


def test_chip_reset_is_detected_logged_and_metering_goes_on():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 300)
    hw.sim.chip.reset()  # a brown-out on a load transient: registers back to power-on defaults
    _run_s(hw, m, 300)
    eq(m.sensor.resets, 1, "resets")
    eq(m.event_counts.get(EV_CHIP_RESET), 1, "chip reset event")
    # the chip kept converting with its default (1.06 ms bus+shunt) settings until re-initialised: still metered
    assert _error_ppm(hw, m) < 100, _error_ppm(hw, m)


def test_i2c_error_storm_is_counted_and_survived():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 120)
    hw.i2c.fail_next(50)  # 50 failed transactions in a row
    _run_s(hw, m, 120)
    assert m.sensor.errors >= 50, m.sensor.errors
    eq(m.event_counts.get(EV_I2C_ERRORS, 0) >= 1, True, "storm event")
    before = m.registers.total_uwh()
    _run_s(hw, m, 120)
    assert m.registers.total_uwh() > before, "metering resumed"


def test_absent_chip_is_logged_once_and_retried_until_it_appears():
    hw, m = _meter(absent=True)
    m.start()
    _run_s(hw, m, 60)
    eq(m.event_counts.get(EV_SENSOR_FAULT), 1, "one fault event, not one per retry")
    eq(m.registers.total_uwh(), 0, "nothing metered without a chip")
    hw.i2c.add(0x40, hw.sim.chip)  # the chip is plugged in
    _run_s(hw, m, 120)
    eq(m.event_counts.get(EV_SENSOR_OK), 1, "sensor came up")
    assert m.registers.total_uwh() > 0, "metering started"


def test_registers_survive_a_restart():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 1200)
    m.checkpoint(force=True)
    saved = m.registers.total_uwh()
    again = Meter(hw)  # same flash directory: a reboot
    eq(again.registers.total_uwh(), saved, "restored")
