# The simulated hardware: virtual clock, I2C bus, and the register-level INA219 model (datasheet SBOS448).
# Runs inside MicroPython. Model tests talk to the model directly (read_reg / write_reg), so no wire time
# passes unless the test advances the clock.
import errno

import micropython
from mptest import SIM_TRUTH, eq, gt, le, ne, near, not_mp32, raises, same

from meter.clock import TICKS_PERIOD
from sim import scenarios
from sim.i2c import SimI2C
from sim.ina219 import INA219Model
from sim.vclock import VirtualClock

# Datasheet facts, restated here so the model is checked against the datasheet, not against itself.
# ADC settings table: code -> conversion time (us). Codes 0-3 (and 4-7: bit 3 is "don't care") are single
# 9..12-bit conversions; 8 is 12-bit; 9..15 average 2..128 samples.
DATASHEET_US = {0: 84, 1: 148, 2: 276, 3: 532, 4: 84, 5: 148, 6: 276, 7: 532, 8: 532,
                9: 1060, 10: 2130, 11: 4260, 12: 8510, 13: 17020, 14: 34050, 15: 68100}
POR_CONFIG = 0x399F
CNVR = 2
OVF = 1


def config(mode=7, sadc=3, badc=3, pg=3, brng=1):
    return (brng << 13) | (pg << 11) | (badc << 7) | (sadc << 3) | mode


def chip_with(scenario=None, **kw):
    clock = VirtualClock()
    chip = INA219Model(clock, scenario or scenarios.make("constant"), **kw)
    return clock, chip


def signed(v):
    return v - 0x10000 if v & 0x8000 else v


# -- virtual clock ------------------------------------------------------------------------------------------

def test_clock_ticks_wrap_at_2_30_and_time_counts_seconds():
    c = VirtualClock(start_unix_s=1000, start_us=TICKS_PERIOD - 10)
    eq(c.ticks_us(), TICKS_PERIOD - 10, "ticks before wrap")
    c.sleep_us(25)
    eq(c.ticks_us(), 15, "ticks after wrap")
    eq(c.time(), 1000, "time() within the first second")
    c.sleep_ms(2500)
    eq(c.time(), 1002, "time() after 2.5 s")
    c.advance_us(500000)
    eq(c.time(), 1003, "time() after 3 s")
    eq(c.ticks_ms(), (c.now_us // 1000) % TICKS_PERIOD, "ticks_ms")
    before = c.now_us
    c.sleep_us(-5)
    eq(c.now_us, before, "negative sleep does nothing")


# -- I2C bus ------------------------------------------------------------------------------------------------

def test_bus_charges_wire_time():
    clock, chip = chip_with()
    bus = SimI2C(clock, freq=400000)
    bus.add(0x40, chip)
    buf = bytearray(2)
    t0 = clock.now_us
    bus.readfrom_mem_into(0x40, 0, buf)
    # START, addr+W, pointer, repeated START, addr+R, 2 data bytes, STOP: 5 x 9 + 3 = 48 bits at 400 kHz.
    eq(clock.now_us - t0, 48 * 1000000 // 400000, "register read with pointer write")
    t0 = clock.now_us
    bus.readfrom_into(0x40, buf)
    bus.readfrom_into(0x40, buf)
    # START, addr+R, 2 bytes, STOP: 29 bits = 72.5 us each; the half microseconds are carried, not lost.
    eq(clock.now_us - t0, 2 * 29 * 1000000 // 400000, "two reads without pointer write")
    slow = SimI2C(clock, freq=100000)
    slow.add(0x40, chip)
    t0 = clock.now_us
    slow.readfrom_mem_into(0x40, 0, buf)
    eq(clock.now_us - t0, 48 * 1000000 // 100000, "same read at 100 kHz")


def test_bus_register_access_both_styles():
    clock, chip = chip_with()
    bus = SimI2C(clock)
    bus.add(0x40, chip)
    buf = bytearray(2)
    bus.readfrom_mem_into(0x40, 0, buf)
    eq((buf[0] << 8) | buf[1], POR_CONFIG, "config via readfrom_mem_into")
    bus.writeto_mem(0x40, 5, b"\x12\x34")
    eq(chip.read_reg(5), 0x1234, "calibration via writeto_mem")
    eq(bus.writeto(0x40, b"\x05\x10\x00"), 3, "pointer + value via writeto")
    eq(chip.read_reg(5), 0x1000, "calibration via writeto")
    bus.writeto(0x40, b"\x00")  # pointer only
    bus.readfrom_into(0x40, buf)
    eq((buf[0] << 8) | buf[1], POR_CONFIG, "readfrom_into reads the pointed register")
    eq(bus.readfrom_mem(0x40, 5, 2), b"\x10\x00", "readfrom_mem")
    eq(bus.writeto(0x40, b""), 0, "empty write probes the address")
    eq(bus.scan(), [0x40], "scan")


def test_bus_absent_device_and_injected_faults():
    clock, chip = chip_with()
    bus = SimI2C(clock)
    buf = bytearray(2)
    e = raises(OSError, bus.readfrom_mem_into, 0x40, 0, buf)
    eq(e.args[0], errno.ENODEV, "absent device: ENODEV")
    eq(bus.scan(), [], "empty scan")
    bus.add(0x40, chip)
    bus.fail_next(3)
    for _ in range(3):
        e = raises(OSError, bus.readfrom_mem_into, 0x40, 0, buf)
        eq(e.args[0], errno.EIO, "injected error is EIO")
    bus.readfrom_mem_into(0x40, 0, buf)  # the fourth works
    bus.fail_next(1, errno.ETIMEDOUT)
    e = raises(OSError, bus.writeto_mem, 0x40, 5, b"\x00\x10")
    eq(e.args[0], errno.ETIMEDOUT, "chosen errno")
    eq(chip.read_reg(5), 0, "a failed write changes nothing")
    bus.fail_rate(0.25, seed=7)
    fails = 0
    for _ in range(4000):
        try:
            bus.readfrom_mem_into(0x40, 0, buf)
        except OSError:
            fails += 1
    near(fails / 4000, 0.25, 0.03, "random failure rate")
    eq(bus.failures, fails + 4 + 1, "failures counted (3 injected + ENODEV + 1 ETIMEDOUT + random)")
    bus.fail_rate(0)
    bus.readfrom_mem_into(0x40, 0, buf)
    same(bus.remove(0x40), chip, "remove returns the device")
    raises(OSError, bus.readfrom_mem_into, 0x40, 0, buf)


# -- INA219 model: registers ---------------------------------------------------------------------------------

def test_power_on_values():
    clock, chip = chip_with()
    eq(chip.read_reg(0), POR_CONFIG, "config")
    for reg in (1, 3, 4, 5):
        eq(chip.read_reg(reg), 0, "register %d" % reg)
    eq(chip.read_reg(2) & CNVR, 0, "CNVR before the first conversion")


def test_soft_reset_bit15_resets_every_register_and_self_clears():
    clock, chip = chip_with()
    chip.write_reg(0, config(mode=7, sadc=0, badc=0, pg=1, brng=0))
    chip.write_reg(5, 4096)
    clock.advance_us(10000)
    ne(chip.read_reg(4), 0, "current register computed before the reset")
    chip.write_reg(0, 0x8000 | config(mode=3))
    eq(chip.read_reg(0), POR_CONFIG, "config back to 0x399F with RST cleared")
    eq(chip.read_reg(5), 0, "calibration reset")
    for reg in (1, 3, 4):
        eq(chip.read_reg(reg), 0, "register %d reset" % reg)
    eq(chip.read_reg(2), 0, "bus register reset")
    eq(chip.soft_resets, 1, "soft resets counted")


def test_brownout_reset():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=15))
    chip.write_reg(5, 4096)
    chip.reset()
    eq(chip.read_reg(0), POR_CONFIG, "config after brown-out")
    eq(chip.read_reg(5), 0, "calibration after brown-out")
    eq(chip.brownouts, 1, "brown-outs counted")
    # Power-on default is continuous 12-bit shunt + bus: converting again without being told.
    clock.advance_us(2 * 532)
    eq(chip.read_reg(2) & CNVR, CNVR, "converting in the default mode")


def test_calibration_bit0_reads_zero():
    clock, chip = chip_with()
    chip.write_reg(5, 4097)
    eq(chip.read_reg(5), 4096, "bit 0 dropped")
    chip.write_reg(5, 0xFFFF)
    eq(chip.read_reg(5), 0xFFFE, "bit 0 dropped at the top")


def test_read_only_registers_ignore_writes():
    clock, chip = chip_with()
    chip.write_reg(0, config())
    clock.advance_us(1064)
    before = [chip.read_reg(r) for r in (1, 2, 4)]
    for r in (1, 2, 3, 4):
        chip.write_reg(r, 0x5555)
    eq([chip.read_reg(r) for r in (1, 2, 4)], before, "shunt/bus/current unchanged")


# -- INA219 model: timing ------------------------------------------------------------------------------------

def _cycle_ends_at(clock, chip, cfg, want_us):
    t0 = clock.now_us
    chip.write_reg(0, cfg)
    clock.now_us = t0 + want_us - 1
    eq(chip.read_reg(2) & CNVR, 0, "CNVR 1 us before the end (config 0x%04x)" % cfg)
    clock.now_us = t0 + want_us
    eq(chip.read_reg(2) & CNVR, CNVR, "CNVR at the end (config 0x%04x)" % cfg)


def test_conversion_time_for_every_adc_code():
    clock, chip = chip_with()
    for code in range(16):
        # shunt code varies with the bus at 9 bits, then the other way round
        _cycle_ends_at(clock, chip, config(sadc=code, badc=0), DATASHEET_US[code] + DATASHEET_US[0])
        _cycle_ends_at(clock, chip, config(sadc=0, badc=code), DATASHEET_US[0] + DATASHEET_US[code])


def test_default_meter_cycle_is_68_63_ms():
    clock, chip = chip_with()
    _cycle_ends_at(clock, chip, config(sadc=15, badc=3), 68100 + 532)
    eq(chip.cycle_ns, (68100 + 532) * 1000, "cycle_ns")


def test_continuous_cycles_follow_each_other():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=9, badc=0))
    cyc = DATASHEET_US[9] + DATASHEET_US[0]
    clock.advance_us(10 * cyc + cyc // 2)
    chip.sync()
    eq(chip.cycles, 10, "ten cycles completed")
    eq(chip.last_end_us(), 10 * cyc, "last cycle end")
    eq(chip.next_end_us(), 11 * cyc, "next cycle end")


def test_oscillator_error_stretches_and_shrinks_cycles():
    for ppm in (20000, -30000):
        clock, chip = chip_with(osc_ppm=ppm)
        nominal = 68100 + 532
        actual = nominal * (1000000 + ppm) / 1000000
        chip.write_reg(0, config(sadc=15))
        clock.now_us = int(actual) - 1
        eq(chip.read_reg(2) & CNVR, 0, "not yet (%d ppm)" % ppm)
        clock.now_us = int(actual) + 1
        eq(chip.read_reg(2) & CNVR, CNVR, "done (%d ppm)" % ppm)
        near(chip.cycle_ns, actual * 1000, 1, "cycle_ns (%d ppm)" % ppm)


def test_config_write_restarts_the_conversion():
    clock, chip = chip_with()
    cyc = 68100 + 532
    chip.write_reg(0, config(sadc=15))
    clock.advance_us(cyc // 2)
    chip.write_reg(0, config(sadc=15))  # restart half way
    clock.advance_us(cyc // 2 + 100)
    eq(chip.read_reg(2) & CNVR, 0, "the aborted cycle never completes")
    eq(chip.cycles, 0, "no cycle counted")
    clock.advance_us(cyc)
    eq(chip.read_reg(2) & CNVR, CNVR, "a full cycle after the second write")


# -- INA219 model: CNVR and modes ----------------------------------------------------------------------------

def test_cnvr_set_and_cleared_as_datasheet():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=0, badc=0))
    clock.advance_us(84 * 2)
    eq(chip.read_reg(2) & CNVR, CNVR, "set at cycle end")
    chip.read_reg(1)
    chip.read_reg(4)
    chip.read_reg(0)
    eq(chip.read_reg(2) & CNVR, CNVR, "reading shunt/current/config/bus does not clear it")
    chip.read_reg(3)
    eq(chip.read_reg(2) & CNVR, 0, "reading power clears it")
    clock.advance_us(84 * 2)
    eq(chip.read_reg(2) & CNVR, CNVR, "set again by the next cycle")
    chip.write_reg(0, config(mode=0))
    eq(chip.read_reg(2) & CNVR, CNVR, "writing power-down does not clear it")
    chip.write_reg(0, config(mode=4))
    eq(chip.read_reg(2) & CNVR, CNVR, "writing ADC-off does not clear it")
    chip.write_reg(0, config(mode=7, sadc=0, badc=0))
    eq(chip.read_reg(2) & CNVR, 0, "writing a converting mode clears it")


def test_power_down_and_adc_off_convert_nothing():
    clock, chip = chip_with()
    for mode in (0, 4):
        chip.write_reg(0, config(mode=mode))
        n = chip.cycles
        clock.advance_us(1000000)
        chip.sync()
        eq(chip.cycles, n, "no conversions in mode %d" % mode)
        eq(chip.next_end_us(), None, "nothing scheduled in mode %d" % mode)


def test_triggered_mode_converts_once_per_config_write():
    clock, chip = chip_with()
    cyc = 532 * 2
    chip.write_reg(0, config(mode=3))
    clock.advance_us(cyc)
    eq(chip.read_reg(2) & CNVR, CNVR, "one conversion")
    eq(chip.read_reg(1), 15000, "shunt converted")
    chip.read_reg(3)
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(2) & CNVR, 0, "no second conversion without a trigger")
    eq(chip.cycles, 1, "one cycle")
    chip.write_reg(0, config(mode=3))  # trigger again
    clock.advance_us(cyc)
    eq(chip.read_reg(2) & CNVR, CNVR, "converted on the second trigger")
    eq(chip.cycles, 2, "two cycles")


def test_shunt_only_and_bus_only_modes():
    clock, chip = chip_with()
    chip.write_reg(0, config(mode=5, sadc=0))  # shunt continuous: cycles of one shunt conversion
    clock.advance_us(84)
    eq(chip.read_reg(2) & CNVR, CNVR, "shunt-only cycle is the shunt conversion time")
    eq(chip.read_reg(1), 15000, "shunt converted")
    eq(chip.read_reg(2) >> 3, 0, "bus not converted")
    chip.reset()
    chip.write_reg(0, config(mode=6, badc=1))  # bus continuous
    clock.advance_us(148)
    eq(chip.read_reg(2) & CNVR, CNVR, "bus-only cycle is the bus conversion time")
    eq(chip.read_reg(2) >> 3, 3000, "bus converted")
    eq(chip.read_reg(1), 0, "shunt not converted")
    eq(chip.exact_import_uwh, 0.0, "no ground truth without both conversions")


# -- INA219 model: values ------------------------------------------------------------------------------------

def test_readings_quantise_the_scenario():
    clock, chip = chip_with(scenarios.Constant(volts=12.345, amps=1.23456))
    chip.write_reg(0, config())
    eq(chip.read_reg(1), 0, "nothing before the first cycle ends")
    clock.advance_us(1064)
    eq(chip.read_reg(1), 12346, "shunt: 1.23456 A x 0.1 ohm / 10 uV, rounded to nearest")
    eq(chip.read_reg(2) >> 3, 3086, "bus: 12.345 V / 4 mV = 3086.25, rounded to nearest")


def test_negative_current_is_twos_complement_and_power_positive():
    clock, chip = chip_with(scenarios.Constant(volts=13.0, amps=-1.25))
    chip.write_reg(0, config())
    chip.write_reg(5, 4096)
    clock.advance_us(1064)
    eq(signed(chip.read_reg(1)), -12500, "shunt")
    eq(signed(chip.read_reg(4)), -12500, "current (cal 4096 on 0.1 ohm: 100 uA LSB)")
    bus = chip.read_reg(2) >> 3
    eq(chip.read_reg(3), 12500 * bus // 5000, "power is the magnitude")


def test_shunt_clamped_to_pga_range():
    # 2.5 A through 0.1 ohm is 250 mV: beyond /1, /2 and /4, inside /8.
    for pg, fs_mv in ((0, 40), (1, 80), (2, 160), (3, 320)):
        for amps in (2.5, -2.5):
            clock, chip = chip_with(scenarios.Constant(volts=12.0, amps=amps))
            chip.write_reg(0, config(pg=pg))
            clock.advance_us(1064)
            want = min(25000, fs_mv * 100)  # counts of 10 uV
            eq(signed(chip.read_reg(1)), want if amps > 0 else -want, "PG /%d, %s A" % (1 << pg, amps))


def test_bus_clamped_to_range():
    for brng, want in ((0, 4000), (1, 4500)):  # 18 V: beyond the 16 V range (4000 counts), inside 32 V
        clock, chip = chip_with(scenarios.Constant(volts=18.0, amps=1.0))
        chip.write_reg(0, config(brng=brng))
        clock.advance_us(1064)
        eq(chip.read_reg(2) >> 3, want, "BRNG=%d" % brng)


def test_current_and_power_from_calibration():
    # Datasheet: Current = Shunt x Cal / 4096, Power = Current x Bus / 5000, Current_LSB = 0.04096 / (Cal R).
    for cal in (2000, 4096, 8192, 10240):
        clock, chip = chip_with(scenarios.Constant(volts=12.0, amps=1.2345))
        chip.write_reg(0, config())
        chip.write_reg(5, cal)
        clock.advance_us(1064)
        shunt = chip.read_reg(1)
        bus = chip.read_reg(2) >> 3
        cur = chip.read_reg(4)
        eq(cur, shunt * cal // 4096, "current register, cal %d" % cal)
        eq(chip.read_reg(3), cur * bus // 5000, "power register, cal %d" % cal)
        lsb_a = 0.04096 / (cal * 0.1)
        near(cur * lsb_a, 1.2345, lsb_a + 1e-5, "current in amps, cal %d" % cal)
        near(chip.read_reg(3) * 20 * lsb_a, 12.0 * 1.2345, 20 * lsb_a + 1e-3, "power in watts, cal %d" % cal)
        eq(chip.read_reg(2) & OVF, 0, "no overflow, cal %d" % cal)


def test_calibration_applies_from_the_next_conversion():
    clock, chip = chip_with()
    chip.write_reg(0, config())
    clock.advance_us(1064)
    eq(chip.read_reg(4), 0, "uncalibrated: current reads 0")
    chip.write_reg(5, 4096)
    eq(chip.read_reg(4), 0, "still the last conversion's result")
    clock.advance_us(1064)
    eq(chip.read_reg(4), 15000, "calibrated from the next conversion")


def test_ovf_set_when_current_or_power_overflow():
    clock, chip = chip_with()
    chip.write_reg(0, config())
    chip.write_reg(5, 0xFFFE)  # 15000 counts x 65534 / 4096 = 240 k: beyond the 16-bit current register
    clock.advance_us(1064)
    eq(chip.read_reg(2) & OVF, OVF, "OVF set")
    eq(chip.read_reg(4), 32767, "current clamped")
    chip.write_reg(5, 4096)
    clock.advance_us(1064)
    eq(chip.read_reg(2) & OVF, 0, "OVF cleared by a conversion without overflow")


def test_offset_and_noise():
    clock, chip = chip_with(offset_lsb=3)
    chip.write_reg(0, config())
    clock.advance_us(1064)
    eq(chip.read_reg(1), 15003, "shunt offset in counts")
    clock, chip = chip_with(shunt_noise=2.0, bus_noise=1.0, seed=5)
    chip.write_reg(0, config())
    xs = []
    bs = []
    for _ in range(2000):
        clock.advance_us(1064)
        xs.append(signed(chip.read_reg(1)))
        bs.append(chip.read_reg(2) >> 3)
    mean = sum(xs) / len(xs)
    sd = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5
    near(mean, 15000, 0.3, "shunt noise is zero-mean")
    near(sd, 2.0, 0.25, "shunt noise standard deviation")
    bmean = sum(bs) / len(bs)
    near(bmean, 3000, 0.2, "bus noise is zero-mean")
    gt(max(bs), min(bs), "bus noise present")


# -- ground truth --------------------------------------------------------------------------------------------

@not_mp32(SIM_TRUTH)
def test_ground_truth_constant():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=15))
    n = 1000
    cyc_s = (68100 + 532) * 1e-6
    clock.advance_us(n * (68100 + 532) + 1000)
    chip.sync()
    eq(chip.cycles, n, "cycles")
    want = n * 12.0 * 1.5 * cyc_s / 3600 * 1e6
    near(chip.exact_import_uwh, want, want * 1e-9, "exact import, uWh")
    eq(chip.exact_export_uwh, 0.0, "exact export")
    imp, exp = chip.true_j()
    near(imp, n * 12.0 * 1.5 * cyc_s, 1e-6, "continuous integral, J")
    eq(exp, 0.0, "continuous export")


def test_ground_truth_export_and_mixed():
    for name in ("export", "mixed"):
        clock, chip = chip_with(scenarios.make(name, seed=3))
        chip.write_reg(0, config(sadc=15))
        clock.advance_us(3600 * 1000000)
        chip.sync()
        imp_j, exp_j = chip.true_j()
        # The chip samples the current only in the shunt window (99.2 % of the cycle), and pairs it with the
        # bus window's voltage: over an hour of a piecewise-constant load that differs from the continuous
        # integral only in the few cycles that straddle a step.
        near(chip.exact_export_uwh, exp_j / 3600 * 1e6, exp_j / 3600 * 1e6 * 2e-3, name + " export")
        near(chip.exact_import_uwh, imp_j / 3600 * 1e6, imp_j / 3600 * 1e6 * 2e-3 + 1, name + " import")
        gt(chip.exact_export_uwh, 0, name + " exports")
    gt(chip.exact_import_uwh, 0, "mixed imports too")


@not_mp32(SIM_TRUTH)
def test_ground_truth_stops_when_the_load_is_cut():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=15))
    cyc = 68100 + 532
    clock.advance_us(10 * cyc)
    chip.sync()
    e10 = chip.exact_import_uwh
    chip.load_connected = False  # as sim.hardware.SimRelayPin does
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), 0, "no current through an open relay")
    eq(chip.read_reg(2) >> 3, 3000, "bus voltage still there")
    eq(chip.exact_import_uwh, e10, "no energy while cut off")
    chip.load_connected = True
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), 15000, "current back")
    near(chip.exact_import_uwh, 2 * e10, 1e-6, "energy resumes")
    near(chip.true_j()[0] / 3600 * 1e6, 2 * e10, 1e-6, "continuous integral skips the open time too")


@not_mp32(SIM_TRUTH)
def test_a_shed_cuts_the_import_by_the_share_in_the_registers_and_the_ground_truth():
    clock, chip = chip_with()
    chip.write_reg(0, config(sadc=15))
    cyc = 68100 + 532
    clock.advance_us(10 * cyc)
    full = chip.read_reg(1)
    e10 = chip.exact_import_uwh
    chip.set_load_share(0.6)  # as sim.hardware.SimLoadControlPin does with 40 % of the load shed
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), round(full * 0.6), "the shunt carries 60 % of the current")
    eq(chip.read_reg(2) >> 3, 3000, "bus voltage as it was")
    near(chip.exact_import_uwh - e10, 0.6 * e10, 1e-6, "60 % of the energy while shed")
    chip.set_load_share(1.0)
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), full, "the whole current back")
    near(chip.exact_import_uwh, 2.6 * e10, 1e-6, "energy at the full rate again")
    near(chip.true_j()[0] / 3600 * 1e6, 2.6 * e10, 1e-6, "the continuous integral follows the share too")
    chip.set_load_share(0.6)
    chip.load_connected = False
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), 0, "an open relay cuts what is left")
    near(chip.exact_import_uwh, 2.6 * e10, 1e-6, "no energy through the open relay")
    chip.load_connected = True
    clock.advance_us(10 * cyc)
    eq(chip.read_reg(1), round(full * 0.6), "reclosed: still shed")
    near(chip.true_j()[0] / 3600 * 1e6, 3.2 * e10, 1e-6, "continuous integral, shed spans at their share")
    raises(ValueError, chip.set_load_share, 1.5)
    eq(chip.load_share, 0.6, "a bad share changes nothing")


@not_mp32(SIM_TRUTH)
def test_a_shed_leaves_an_export_as_it_is_and_no_shed_changes_nothing():
    # mixed: a minute of import, a minute of export, in turn; random-walk: every cycle a new current.
    for name, share in (("mixed", 0.6), ("mixed", 1.0), ("random-walk", 1.0)):
        runs = []
        for shed in (False, True):
            clock, chip = chip_with(scenarios.make(name, seed=5))
            chip.write_reg(0, config(sadc=15))
            if shed:
                chip.set_load_share(0.6)
                chip.set_load_share(share)  # 1.0: shed and closed again before the first cycle
            regs = []
            for _ in range(1000):
                clock.advance_us(10 * 68632)
                regs.append(signed(chip.read_reg(1)))
            runs.append((regs, chip.exact_import_uwh, chip.exact_export_uwh, chip.true_j()))
        if share == 1.0:
            eq(runs[1], runs[0], name + ": a share of 1 is the whole load, bit for bit")
            continue
        gt(runs[0][2], 0, name + " exports")
        eq([r for r in runs[1][0] if r < 0], [r for r in runs[0][0] if r < 0], name + ": export registers")
        eq((runs[1][2], runs[1][3][1]), (runs[0][2], runs[0][3][1]), name + ": export truth")
        imp = [(r, w) for r, w in zip(runs[0][0], runs[1][0]) if r > 0]
        gt(len(imp), 100, name + " imports too")
        le(max(abs(w - r * share) for r, w in imp), 1, name + ": import registers at the share (1 count rounding)")
        near(runs[1][1], runs[0][1] * share, runs[0][1] * 1e-9, name + ": import truth")
        near(runs[1][3][0], runs[0][3][0] * share, runs[0][3][0] * 1e-9, name + ": continuous import")


def test_hot_path_puts_no_frame_on_the_heap():
    # The simulator's speed depends on it: MicroPython allocates (and frees) a call frame on the heap when a
    # function's locals plus value stack are too many, and a register read runs ~4 million times a day.
    clock, chip = chip_with(scenarios.make("steps"))
    bus = SimI2C(clock)
    bus.add(0x40, chip)
    chip.write_reg(0, config(sadc=15))
    buf = bytearray(2)
    bus.readfrom_mem_into(0x40, 2, buf)
    total = micropython.mem_total()
    for _ in range(50):  # within one cycle: nothing to compute
        bus.readfrom_mem_into(0x40, 2, buf)
        bus.readfrom_mem_into(0x40, 3, buf)
    eq(micropython.mem_total() - total, 0, "bytes allocated by 100 register reads")


@not_mp32("the scenarios keep time in integer nanoseconds, heap ints on a 32-bit port (sim/ never runs on a board)")
def test_scenarios_allocate_only_their_floats():
    for name in scenarios.NAMES:
        sc = scenarios.make(name)
        t = 12 * 3600 * 1000000000
        sc.conv(t, t + 68100000, t + 68632000)
        total = micropython.mem_total()
        for _ in range(10):  # inside one segment
            t += 68632000
            sc.conv(t, t + 68100000, t + 68632000)
        # a few floats per cycle (16 bytes each as counted by mem_total), never a frame (over 100 bytes)
        le((micropython.mem_total() - total) // 10, 6 * 16, name + ": conv allocates only its floats")
