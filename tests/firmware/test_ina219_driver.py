# The INA219 driver (meter/ina219.py) against the simulated chip and bus, and against a tiny fake bus that
# allocates nothing (to prove that reading a cycle allocates nothing either). Runs inside MicroPython.
import errno

import micropython
from mptest import contains, eq, ge, gt, le, lt, near, raises

from meter.clock import TICKS_PERIOD, ticks_add
from meter.ina219 import EV_CHIP_RESET, EV_I2C_ERRORS, INA219, SensorError
from sim import scenarios
from sim.i2c import SimI2C
from sim.ina219 import INA219Model
from sim.vclock import VirtualClock


def rig(scenario="constant", start_us=0, events=None, seed=1, osc_ppm=0, **kw):
    clock = VirtualClock(start_us=start_us)
    sc = scenarios.make(scenario, seed=seed) if isinstance(scenario, str) else scenario
    chip = INA219Model(clock, sc, shunt_ohms=kw.get("shunt_uohm", 100000) / 1e6, osc_ppm=osc_ppm)
    bus = SimI2C(clock)
    bus.add(0x40, chip)
    on_event = None
    if events is not None:
        def on_event(code, value):
            events.append((code, value))
    drv = INA219(bus, sleep_us=clock.sleep_us, ticks_us=clock.ticks_us, on_event=on_event, **kw)
    return clock, chip, bus, drv


def fields(cfg):
    return {"brng": (cfg >> 13) & 1, "pg": (cfg >> 11) & 3, "badc": (cfg >> 7) & 15, "sadc": (cfg >> 3) & 15,
            "mode": cfg & 7}


# -- calibration and configuration ---------------------------------------------------------------------------

def test_stock_breakout_calibration_matches_the_datasheet_example():
    # 0.1 ohm, 3.2 A: Current_LSB = 3.2 A / 2^15 = 97.7 uA -> 100 uA; Cal = 0.04096 / (100 uA x 0.1) = 4096
    # (the datasheet's and Adafruit's 32V/2A example).
    clock, chip, bus, drv = rig()
    eq(drv.current_lsb_ua, 100, "Current_LSB")
    eq(drv.cal, 4096, "Cal")
    eq(drv.power_lsb_uw, 2000, "Power_LSB = 20 x Current_LSB")
    eq(fields(drv.config), {"brng": 1, "pg": 3, "badc": 3, "sadc": 15, "mode": 7}, "config fields")
    eq(drv.cycle_us, 68100 + 532, "nominal cycle")
    eq(drv.shunt_duty_ppm, 68100 * 1000000 // (68100 + 532), "shunt duty")


def test_calibration_for_other_shunts():
    cases = ((10000, 10000), (1000000, 100), (50000, 6400), (20000, 5000), (100000, 400), (2000, 30000))
    for uohm, ma in cases:
        drv = INA219(None, shunt_uohm=uohm, max_ma=ma, sleep_us=lambda n: None, ticks_us=lambda: 0)
        lsb = drv.current_lsb_ua
        what = "%d uOhm, %d mA" % (uohm, ma)
        ge(lsb * 32768, ma * 1000, what + ": Current_LSB covers the maximum")
        mant = lsb
        while mant % 10 == 0:
            mant //= 10
        contains(mant, (1, 2, 5), what + ": Current_LSB %d on the 1-2-5 series" % lsb)
        eq(drv.cal, int(0.04096 / (lsb * 1e-6 * uohm * 1e-6)) & 0xFFFE, what + ": Cal (float formula)")
        gt(drv.cal, 0, what + ": Cal fits")
        le(drv.cal, 0xFFFE, what + ": Cal fits")
        shunt_mv = ma * uohm / 1e9 * 1000
        ge(40 << drv.pg, shunt_mv, what + ": PGA range holds the maximum")
        if drv.pg:
            lt(40 << (drv.pg - 1), shunt_mv, what + ": narrowest PGA range")


def test_adc_settings_and_cycle_time():
    for avg, sadc, us in ((1, 3, 532), (2, 9, 1060), (16, 12, 8510), (128, 15, 68100)):
        for bits, badc, bus_us in ((9, 0, 84), (12, 3, 532)):
            drv = INA219(None, shunt_avg=avg, bus_bits=bits, sleep_us=lambda n: None, ticks_us=lambda: 0)
            eq(fields(drv.config)["sadc"], sadc, "SADC for %d samples" % avg)
            eq(fields(drv.config)["badc"], badc, "BADC for %d bits" % bits)
            eq(drv.cycle_us, us + bus_us, "cycle for avg %d, %d bits" % (avg, bits))


def test_impossible_settings_raise_valueerror():
    noop = {"sleep_us": lambda n: None, "ticks_us": lambda: 0}
    e = raises(ValueError, INA219, None, shunt_uohm=100000, max_ma=4000, **noop)
    contains("320 mV", str(e), "message names the shunt range")
    raises(ValueError, INA219, None, shunt_avg=3, **noop)
    raises(ValueError, INA219, None, bus_bits=8, **noop)
    raises(ValueError, INA219, None, shunt_uohm=0, **noop)


# -- init ----------------------------------------------------------------------------------------------------

def test_init_configures_and_verifies_the_chip():
    clock, chip, bus, drv = rig()
    chip.write_reg(5, 1234)  # leftovers from someone else
    drv.init()
    eq(chip.read_reg(0), drv.config, "config written")
    eq(chip.read_reg(5), drv.cal, "calibration written")
    eq(chip.soft_resets, 1, "soft reset first")
    eq(drv.wait_cycle(), True, "first cycle")
    # t_config marks the start of the first cycle: the first read's tick is one cycle (plus a little) later.
    lag = drv.tick - drv.t_config - drv.cycle_us
    ge(lag, 0, "first read after the first cycle ended")
    le(lag, drv.poll_us + 120, "first read after the first cycle ended (us)")


def test_absent_chip_raises_sensorerror_with_a_clear_message():
    clock = VirtualClock()
    bus = SimI2C(clock)
    drv = INA219(bus, sleep_us=clock.sleep_us, ticks_us=clock.ticks_us)
    e = raises(SensorError, drv.init)
    msg = str(e)
    for part in ("0x40", "no INA219", "ENODEV"):
        contains(part, msg, "message")


def test_chip_that_does_not_hold_its_config_raises_sensorerror():
    class Deaf:  # ACKs, but every register reads 0 and writes are lost
        def read_reg(self, reg):
            return 0

        def write_reg(self, reg, value):
            pass

    clock = VirtualClock()
    bus = SimI2C(clock)
    bus.add(0x41, Deaf())
    drv = INA219(bus, addr=0x41, sleep_us=clock.sleep_us, ticks_us=clock.ticks_us)
    e = raises(SensorError, drv.init)
    msg = str(e)
    for part in ("0x41", "does not hold its configuration"):
        contains(part, msg, "message")


def test_i2c_error_during_init_raises_sensorerror():
    clock, chip, bus, drv = rig()
    bus.fail_next(1)
    e = raises(SensorError, drv.init)
    contains("I2C error", str(e), "message")
    drv.init()  # and a retry works


# -- reading -------------------------------------------------------------------------------------------------

def test_reading_a_constant_load():
    clock, chip, bus, drv = rig()
    drv.init()
    eq(drv.wait_cycle(), True, "a cycle")
    eq(drv.shunt, 15000, "shunt counts: 1.5 A x 0.1 ohm / 10 uV")
    eq(drv.bus, 3000, "bus counts: 12 V / 4 mV")
    eq(drv.ovf, 0, "no overflow")
    eq(drv.current_ua(), 1500000, "current_ua")
    eq(drv.bus_mv(), 12000, "bus_mv")
    eq(drv.power_mw(), 18000, "power_mw")
    eq(drv.read_cycle(), False, "no new cycle right after a read")


def test_every_cycle_is_read_and_matches_the_scenario():
    for name in ("steps", "random-walk", "export"):
        clock, chip, bus, drv = rig(name, seed=4)
        drv.init()
        c0 = chip.cycles
        worst = 0.0
        for _ in range(3000):  # 3.4 minutes
            eq(drv.wait_cycle(), True, name + ": wait_cycle")
            # The reading is the model's true shunt-window average, quantised to the nearest 10 uV.
            err = abs(drv.shunt * 1e-4 - chip.last_amps)
            worst = max(worst, err)
            berr = abs(drv.bus * 0.004 - chip.last_volts)
            le(berr, 0.002 + 1e-9, name + ": bus within half an LSB")
        le(worst, 0.5e-4 + 1e-9, name + ": shunt within half an LSB (worst, A)")
        eq(drv.cycles, chip.cycles - c0, name + ": no cycle missed")
        eq(drv.errors, 0, name + ": no errors")
        lt(drv.polls, drv.cycles // 2, name + ": extra polls")


def test_read_follows_the_cycle_end_closely():
    clock, chip, bus, drv = rig()
    drv.init()
    worst = 0
    for i in range(500):
        drv.wait_cycle()
        if i > 20:
            lag = clock.now_us - chip.last_end_us()
            worst = max(worst, lag)
    # A poll interval, plus the three register reads (3 x 120 us at 400 kHz).
    le(worst, drv.poll_us + 3 * 120, "read lag, us")


def test_across_the_ticks_wrap():
    clock, chip, bus, drv = rig(start_us=TICKS_PERIOD - 20000000)  # 20 s before ticks_us wraps
    drv.init()
    c0 = chip.cycles
    wrapped = False
    last = None
    for _ in range(1000):  # 68 s
        eq(drv.wait_cycle(), True, "wait_cycle")
        if last is not None and drv.tick < last:
            wrapped = True
        last = drv.tick
    eq(wrapped, True, "ticks wrapped during the run")
    eq(drv.cycles, chip.cycles - c0, "no cycle missed across the wrap")
    near(drv.period_us, drv.cycle_us, 50, "period estimate")


def test_oscillator_error_is_tracked():
    for ppm in (-80000, -30000, 30000, 80000):
        clock, chip, bus, drv = rig(osc_ppm=ppm)
        drv.init()
        c0 = chip.cycles
        for _ in range(600):
            eq(drv.wait_cycle(), True, "wait_cycle")
        actual = chip.cycle_ns / 1000
        eq(drv.cycles, chip.cycles - c0, "%d ppm: no cycle missed" % ppm)
        near(drv.period_us, actual, actual * 0.002, "%d ppm: period estimate" % ppm)
        lt(drv.polls, drv.cycles, "%d ppm: polls" % ppm)


def test_overflow_counted_when_the_shunt_saturates():
    # max 1 A on 0.1 ohm: PGA /4 (160 mV); a 2.5 A load drives the shunt input to full scale.
    clock, chip, bus, drv = rig(scenarios.Constant(volts=12.0, amps=2.5), max_ma=1000)
    drv.init()
    eq(drv.pg, 2, "PGA /4")
    for _ in range(5):
        drv.wait_cycle()
    eq(drv.shunt, 16000, "clipped at 160 mV")
    eq(drv.ovf, 1, "overflow flagged")
    eq(drv.overflows, 5, "overflows counted")


# -- faults --------------------------------------------------------------------------------------------------

def test_chip_reset_is_detected_and_reinitialised():
    events = []
    clock, chip, bus, drv = rig(events=events)
    drv.init()
    for _ in range(10):
        drv.wait_cycle()
    eq(drv.check(), False, "nothing to do while the chip is configured")
    eq(events, [], "no events")
    chip.reset()  # brown-out on a load transient
    eq(drv.check(), True, "reset detected")
    eq(drv.resets, 1, "resets counted")
    eq(events, [(EV_CHIP_RESET, 0x399F)], "event with the config that was read")
    eq(chip.read_reg(0), drv.config, "config restored")
    eq(chip.read_reg(5), drv.cal, "calibration restored")
    c0 = chip.cycles
    for _ in range(20):
        eq(drv.wait_cycle(), True, "reading resumes")
    eq(drv.shunt, 15000, "reading right after the re-init")
    eq(drv.cycles - 10, chip.cycles - c0, "every cycle since read")


def test_a_chip_that_stopped_converting_is_noticed_by_wait_cycle():
    events = []
    clock, chip, bus, drv = rig(events=events)
    drv.init()
    drv.wait_cycle()
    chip.write_reg(0, drv.config & ~7)  # power-down, e.g. written by a confused second master
    eq(drv.wait_cycle(), False, "no cycle comes")
    eq(drv.timeouts, 1, "timeout counted")
    eq(drv.resets, 1, "re-initialised")
    eq(events[0][0], EV_CHIP_RESET, "event")
    eq(drv.wait_cycle(), True, "reading again")


def test_i2c_error_storm_is_counted_and_reading_resumes():
    events = []
    clock, chip, bus, drv = rig(events=events)
    drv.init()
    drv.wait_cycle()
    bus.fail_next(20)
    falses = 0
    for _ in range(100):
        if drv.wait_cycle():
            break
        falses += 1
    # At the 8th error in a row the driver reads the config once to learn which errno it is facing: that
    # read takes one of the 20 failures, so 19 wait_cycle calls fail.
    eq(falses, 19, "one False per failed poll")
    eq(drv.errors, 20, "errors counted")
    eq(drv.err_run, 0, "run reset after success")
    eq(events, [(EV_I2C_ERRORS, errno.EIO)], "one event per storm")
    eq(drv.shunt, 15000, "correct reading after the storm")
    c0 = chip.cycles
    n0 = drv.cycles
    for _ in range(50):
        eq(drv.wait_cycle(), True, "steady again")
    eq(drv.cycles - n0, chip.cycles - c0, "no misses after the storm")


def test_random_error_storm_never_raises():
    clock, chip, bus, drv = rig("steps")
    drv.init()
    bus.fail_rate(0.3, seed=9)
    good = 0
    for _ in range(3000):
        if drv.wait_cycle():
            good += 1
            le(abs(drv.shunt * 1e-4 - chip.last_amps), 0.5e-4 + 1e-9, "good reads are right")
    eq(drv.errors, bus.failures, "every bus failure counted")
    # A read needs its three transactions to succeed (0.7^3 = 34 %); a failure costs one call and a poll.
    gt(good, 3000 * 0.343 * 0.6, "cycles still read through the storm")
    bus.fail_rate(0)
    eq(drv.wait_cycle(), True, "first read after the storm (it may find a cycle that ended during the storm)")
    c0 = chip.cycles
    n0 = drv.cycles
    for _ in range(200):
        eq(drv.wait_cycle(), True, "steady after the storm")
    eq(drv.cycles - n0, chip.cycles - c0, "no misses after the storm")


def test_absent_chip_mid_run():
    events = []
    clock, chip, bus, drv = rig(events=events)
    drv.init()
    drv.wait_cycle()
    bus.remove(0x40)
    for _ in range(10):
        eq(drv.wait_cycle(), False, "unplugged")
    eq(drv.errors, bus.failures, "errors counted (the polls and one diagnostic read)")
    eq(events, [(EV_I2C_ERRORS, errno.ENODEV)], "the event says the chip is gone, not a noisy bus")
    bus.add(0x40, chip)
    eq(drv.wait_cycle(), True, "plugged back in")


# -- no allocation -------------------------------------------------------------------------------------------

class FakeBus:
    """Register file behind readfrom_mem_into that allocates nothing: a list of small ints."""

    def __init__(self):
        self.regs = [0, 0, 0, 0, 0, 0]

    def readfrom_mem_into(self, addr, reg, buf):
        v = self.regs[reg]
        buf[0] = v >> 8
        buf[1] = v & 0xFF
        if reg == 3:
            self.regs[2] &= ~2  # reading power clears CNVR

    def writeto_mem(self, addr, reg, buf):
        self.regs[reg] = (buf[0] << 8) | buf[1]


class FakeTime:
    """A ticks_us that wraps at 2^30 and moves only when slept, from `start`. Allocation-free on a 32-bit port
    as well (ticks_add never leaves the small ints there); counts the wraps it went through."""

    def __init__(self, bus, start=0):
        self.t = start
        self.bus = bus
        self.wraps = 0

    def ticks(self):
        return self.t

    def sleep(self, n):
        t = ticks_add(self.t, n)
        if t < self.t:
            self.wraps += 1
        self.t = t
        self.bus.regs[2] |= 2  # a conversion completed while we slept

    def sleep_ms(self, n):
        self.sleep(n * 1000)


def _fake_rig():
    fake = FakeBus()
    tm = FakeTime(fake)
    drv = INA219(fake, sleep_us=tm.sleep, ticks_us=tm.ticks)
    fake.regs[1] = 0x10000 - 12345  # -123.45 mV
    fake.regs[2] = (3210 << 3) | 2  # 12.84 V, CNVR
    return fake, drv


def test_read_cycle_and_wait_cycle_allocate_nothing():
    fake, drv = _fake_rig()
    micropython.heap_lock()
    try:
        got = drv.read_cycle()
        again = drv.read_cycle()
        waited = drv.wait_cycle()
        waited2 = drv.wait_cycle()
    finally:
        micropython.heap_unlock()
    eq(got, True, "read a cycle")
    eq(again, False, "CNVR cleared by the power read")
    eq((waited, waited2), (True, True), "wait_cycle read the next cycles")
    eq(drv.shunt, -12345, "signed shunt")
    eq(drv.bus, 3210, "bus")
    eq(drv.ovf, 0, "ovf")
    eq(drv.cycles, 3, "cycles")


def test_no_call_frame_on_the_heap_either():
    # heap_lock() cannot see a frame that MicroPython would have put on the heap (too many locals + stack):
    # under the lock it silently falls back to the C stack. The Unix port counts every allocation in
    # mem_total(), so check that reading cycles (reads and polls that find nothing) allocates nothing at all.
    fake, drv = _fake_rig()
    drv.wait_cycle()
    total = micropython.mem_total()
    for _ in range(50):
        drv.read_cycle()
        drv.wait_cycle()
    eq(micropython.mem_total() - total, 0, "bytes allocated by 50 read_cycle + wait_cycle")
    eq(drv.cycles, 51, "cycles read")


def test_ovf_flag_from_the_chip_is_counted():
    fake = FakeBus()
    tm = FakeTime(fake)
    drv = INA219(fake, sleep_us=tm.sleep, ticks_us=tm.ticks)
    fake.regs[1] = 1000
    fake.regs[2] = (3000 << 3) | 2 | 1
    eq(drv.read_cycle(), True, "read")
    eq(drv.ovf, 1, "OVF bit")
    eq(drv.overflows, 1, "counted")
