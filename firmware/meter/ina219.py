# INA219 driver (TI datasheet SBOS448): calibration, continuous shunt+bus conversions, one read per cycle.
#
# Integers only, and nothing allocated per read: three preallocated 2-byte buffers, readfrom_mem_into.
# The hardware is injected: `i2c` is a machine.I2C (or sim.i2c.SimI2C), `ticks_us` a microsecond counter
# wrapping at 2^30 (meter.clock), `sleep_us` an exact blocking sleep, `sleep_ms` (optional) one that lets the
# core idle. On an ESP32 time.sleep_us busy-waits, while time.sleep_ms blocks the task in FreeRTOS ticks and
# busy-waits only the last partial tick; so the long wait for a cycle goes to sleep_ms and only its last
# millisecond or two, and the CNVR polls, to sleep_us (docs/performance.md, "CPU duty").
#
#   s = INA219(i2c, shunt_uohm=100_000, max_ma=3_200, sleep_us=..., ticks_us=..., on_event=...)
#   s.init()                 soft reset, configure, calibrate, read back; SensorError if absent or unwilling
#   while True:
#       if s.wait_cycle():   sleeps until the next conversion cycle and reads it (False: none / I2C error)
#           use(s.shunt, s.bus, s.tick)     signed 10 uV counts, 4 mV counts, ticks_us when read
#       ...; s.check()       now and then: re-initialises a chip that lost its configuration
#
# Units: shunt counts are 10 uV (so amps = shunt * 10e-6 / R), bus counts are 4 mV. The chip's current and
# power registers are calibrated (so other readers such as Adafruit's driver see sensible values) but the
# meter never uses them: energy comes from shunt x bus, which is finer than the power register.
try:
    from micropython import const
except ImportError:  # CPython (host tests use this driver as-is)
    def const(x):
        return x

import errno

from meter.events import CHIP_RESET as EV_CHIP_RESET  # codes passed to on_event(code, value)
from meter.events import I2C_ERRORS as EV_I2C_ERRORS
from meter.clock import TICKS_MASK, ticks_add, ticks_diff

_REG_CONFIG = const(0)
_REG_SHUNT = const(1)
_REG_BUS = const(2)
_REG_POWER = const(3)
_REG_CAL = const(5)
_RST = const(0x8000)
_BRNG_32V = const(0x2000)
_MODE_SHUNT_BUS_CONT = const(7)

ERROR_EVENT_AFTER = const(8)

# Conversion time (us) of each BADC/SADC code, from the datasheet's ADC settings table: codes 0-7 are single
# 9/10/11/12-bit conversions (bit 3 "don't care"), 8-15 are 1..128-sample averages of 12-bit conversions.
_CONV_US = (84, 148, 276, 532, 84, 148, 276, 532, 532, 1060, 2130, 4260, 8510, 17020, 34050, 68100)


class SensorError(Exception):
    pass


class INA219:
    def __init__(self, i2c, addr=0x40, shunt_uohm=100000, max_ma=3200, shunt_avg=128, bus_bits=12,
                 sleep_us=None, ticks_us=None, on_event=None, sleep_ms=None):
        if shunt_uohm <= 0 or max_ma <= 0:
            raise ValueError("shunt_uohm and max_ma must be positive")
        self._i2c = i2c
        self.addr = addr
        self.shunt_uohm = shunt_uohm
        self.max_ma = max_ma
        # PGA: the narrowest shunt range (40 mV << pg) that holds max_ma across the shunt. mA x uOhm = nV.
        full_nv = max_ma * shunt_uohm
        pg = 0
        while full_nv > (40000000 << pg):
            pg += 1
            if pg > 3:
                raise ValueError("max_ma x shunt = %d uV exceeds the INA219's 320 mV shunt range"
                                 % (full_nv // 1000))
        self.pg = pg
        self.shunt_fs = 4000 << pg  # full-scale shunt reading, counts
        # Calibration (datasheet 8.5.1): Current_LSB >= max / 2^15 (eq. 2), rounded up here to a 1-2-5 step
        # of microamps (or coarser, while Cal would not fit the register), and
        #   Cal = trunc(0.04096 / (Current_LSB[A] x R[ohm]))            (eq. 1)
        #       = 40_960_000_000 // (Current_LSB[uA] x R[uOhm])          (the same, in integers)
        # with bit 0 cleared (not implemented in the chip). E.g. 0.1 ohm, 3.2 A: 100 uA, Cal 4096.
        lsb = m = 1
        while lsb * 32768 < max_ma * 1000 or 40960000000 // (lsb * shunt_uohm) > 0xFFFE:
            lsb = (1, 2, 5)[m % 3] * 10 ** (m // 3)
            m += 1
        cal = (40960000000 // (lsb * shunt_uohm)) & 0xFFFE
        if cal < 2:
            raise ValueError("shunt %d uOhm with max %d mA gives no usable calibration"
                             % (shunt_uohm, max_ma))
        self.current_lsb_ua = lsb
        self.power_lsb_uw = 20 * lsb  # datasheet: Power_LSB = 20 x Current_LSB
        self.cal = cal
        if shunt_avg not in (1, 2, 4, 8, 16, 32, 64, 128) or not 9 <= bus_bits <= 12:
            raise ValueError("shunt_avg must be 1, 2, 4, ... 128 and bus_bits 9 ... 12, not %r and %r"
                             % (shunt_avg, bus_bits))
        # ADC codes: 9..12 bits are 0..3; n-sample averaging (12 bit) is 8 | log2(n), and 1 sample is 3.
        sadc = 3 if shunt_avg == 1 else 8 | (len(bin(shunt_avg)) - 3)
        badc = bus_bits - 9
        self.config = _BRNG_32V | (pg << 11) | (badc << 7) | (sadc << 3) | _MODE_SHUNT_BUS_CONT
        self.shunt_us = _CONV_US[sadc]
        self.bus_us = _CONV_US[badc]
        self.cycle_us = self.shunt_us + self.bus_us  # nominal; the chip's oscillator may be a few % off
        self.shunt_duty_ppm = self.shunt_us * 1000000 // self.cycle_us
        self.poll_us = max(100, self.cycle_us >> 6)  # CNVR poll interval while waiting
        if ticks_us is None or sleep_us is None:
            import time
            if ticks_us is None:
                def ticks_us():
                    return time.ticks_us() & TICKS_MASK
            if sleep_us is None:
                sleep_us = time.sleep_us
        self._ticks = ticks_us
        self._sleep = sleep_us
        self._sleep_ms = sleep_ms  # None: every wait busy (what the driver did before, kept for comparison)
        self._event = on_event
        self._buf = bytearray(2)
        self._wbuf = bytearray(2)
        # Latest cycle (valid after read_cycle / wait_cycle returned True).
        self.shunt = 0  # signed, 10 uV counts
        self.bus = 0  # 4 mV counts
        self.ovf = 0  # 1: math overflow flag or shunt reading at full scale (the reading is clipped)
        self.tick = 0  # ticks_us just before the read that found the cycle
        self.t_config = 0  # ticks_us when init() wrote the configuration: the start of the first cycle
        # Counters.
        self.cycles = 0  # cycles read
        self.polls = 0  # bus-register polls that found no new cycle
        self.errors = 0  # I2C errors (all)
        self.err_run = 0  # consecutive I2C errors
        self.timeouts = 0  # waits in which no cycle arrived within a whole cycle time
        self.resets = 0  # chip re-initialisations after it lost its configuration
        self.overflows = 0  # cycles read with ovf set
        self.period_us = self.cycle_us  # measured cycle period (tracks the chip's oscillator)
        self._pq = self.cycle_us << 4  # period_us x 16, for a smooth integer average
        self._due = 0  # ticks_us at which the next cycle is expected
        self._fresh = False  # the last successful read was the cycle before this one (period measurable)
        self._last = 0  # tick of the last successful read
        self._hits = 0  # consecutive waits whose first poll already found the cycle

    # -- register access -------------------------------------------------------------------------------------
    def _read(self, reg):
        b = self._buf
        self._i2c.readfrom_mem_into(self.addr, reg, b)
        return (b[0] << 8) | b[1]

    def _write(self, reg, value):
        b = self._wbuf
        b[0] = value >> 8
        b[1] = value & 0xFF
        self._i2c.writeto_mem(self.addr, reg, b)

    # -- set-up ----------------------------------------------------------------------------------------------
    def init(self):
        """Soft-reset the chip, write configuration and calibration, and verify that it holds them."""
        try:
            self._write(_REG_CONFIG, _RST)
            self._write(_REG_CONFIG, self.config)
            t = self._ticks()  # the first conversion cycle starts with that write
            self._write(_REG_CAL, self.cal)
            cfg = self._read(_REG_CONFIG)
            cal = self._read(_REG_CAL)
        except OSError as e:
            code = e.args[0] if e.args else 0
            if code == errno.ENODEV:  # nobody ACKed the address
                raise SensorError("no INA219 at I2C address 0x%02x (no ACK: ENODEV): check wiring, "
                                  "power and the A0/A1 address jumpers" % self.addr)
            raise SensorError("INA219 at I2C address 0x%02x: I2C error during set-up (errno %r)"
                              % (self.addr, code))
        if cfg != self.config or cal != self.cal:
            raise SensorError("INA219 at I2C address 0x%02x does not hold its configuration: config reads "
                              "0x%04x (wrote 0x%04x), calibration reads %d (wrote %d)"
                              % (self.addr, cfg, self.config, cal, self.cal))
        self.t_config = t
        self.err_run = 0
        self._fresh = False
        self._due = ticks_add(t, self.period_us)  # the first cycle ends one cycle after the config write

    # -- reading ------------------------------------------------------------------------------------------
    # MicroPython puts a function's frame on the heap (allocated and freed on every call) when its locals plus
    # its deepest value stack exceed 11 words (py/objfun.c, VM_MAX_STATE_ON_STACK), and a try block costs 3
    # of them. heap_lock() cannot see that: under the lock the frame silently falls back to the C stack. So
    # the functions below are kept small (tests/firmware/test_ina219_driver.py checks with mem_total()).

    def read_cycle(self):
        """Poll CNVR once; if a cycle completed, read it (shunt, then power to clear CNVR) and return True.
        Raises OSError on an I2C error (wait_cycle counts those). Allocates nothing."""
        b = self._buf
        t = self._ticks()
        self._i2c.readfrom_mem_into(self.addr, _REG_BUS, b)
        if not b[1] & 2:
            return False
        bus = (b[0] << 5) | (b[1] >> 3)
        ovf = b[1] & 1
        self._i2c.readfrom_mem_into(self.addr, _REG_SHUNT, b)
        s = (b[0] << 8) | b[1]
        self._i2c.readfrom_mem_into(self.addr, _REG_POWER, b)  # clears CNVR: the next cycle is recognisable
        if s & 0x8000:
            s -= 0x10000
        if s >= self.shunt_fs or s <= -self.shunt_fs:
            ovf = 1  # the shunt input is at (or beyond) full scale: the reading is clipped
        if ovf:
            self.overflows += 1
        self.shunt = s
        self.bus = bus
        self.ovf = ovf
        self.tick = t
        self.cycles += 1
        return True

    def wait_cycle(self):
        """Sleep until the next cycle is due, poll CNVR every poll_us until it is set, read the cycle.
        Returns True with shunt/bus/tick updated; False after an I2C error (counted, and an event after
        ERROR_EVENT_AFTER in a row) or when no cycle came within a whole cycle time (then check() runs)."""
        d = ticks_diff(self._due, self._ticks())
        if 0 < d <= self.period_us:  # (a longer wait means we were away for minutes: poll at once)
            self._wait(d)
        first = True
        while True:
            d = self._poll()
            if d > 0:
                break
            if d < 0:
                return False
            first = False
            self.polls += 1
            if ticks_diff(self._ticks(), self._due) > self.period_us:
                # No cycle for a whole cycle time: the chip stopped converting (power-down, lost config).
                self.timeouts += 1
                self._fresh = False
                self._due = ticks_add(self._ticks(), self.period_us)
                self.check()
                return False
            self._sleep(self.poll_us)
        if self.err_run:
            if self.err_run >= ERROR_EVENT_AFTER:
                self.err_run = 0
                self.check()  # the storm may have come with a brown-out
            self.err_run = 0
        self._schedule(first)
        return True

    def _wait(self, d):
        # Until the cycle is due, d us from now: whole milliseconds idle, then the last 1-2 ms exact.
        if d > 2000 and self._sleep_ms is not None:
            self._sleep_ms(d // 1000 - 1)
            d = ticks_diff(self._due, self._ticks())
        if d > 0:
            self._sleep(d)

    def _poll(self):
        # 1: a cycle was read, 0: none yet, -1: I2C error (counted). No "except ... as e" here: binding the
        # exception makes the frame too big for the stack (see above); _failed finds out which error it was.
        try:
            return 1 if self.read_cycle() else 0
        except OSError:
            pass
        self._failed()
        return -1

    def _failed(self):
        self.errors += 1
        self.err_run += 1
        if self.err_run == ERROR_EVENT_AFTER and self._event is not None:
            self._event(EV_I2C_ERRORS, self._probe_errno())
        self._fresh = False
        self._sleep(self.poll_us)

    def _probe_errno(self):
        # Which error is it? ENODEV: the chip is gone (wiring, power); EIO/ETIMEDOUT: a noisy bus. One config
        # read tells (0 if it worked after all).
        try:
            self._read(_REG_CONFIG)
            return 0
        except OSError as e:
            self.errors += 1
            return e.args[0] if e.args else -1

    def _schedule(self, first):
        # Track the chip's real cycle period (its oscillator may be well off nominal) from the spacing of
        # consecutive reads: the spacing jitters by up to a poll interval but averages to the true period.
        t = self.tick
        c = self.cycle_us
        if self._fresh:
            dt = ticks_diff(t, self._last)
            if c - (c >> 2) < dt < c + (c >> 2):
                self._pq += dt - (self._pq >> 4)
                self.period_us = self._pq >> 4
        self._fresh = True
        self._last = t
        # Aim the first poll a sixteenth of a poll interval before the expected end. If the cycle was already
        # there at the first poll we may be running late (a faster chip than we think), so aim twice as early
        # each time that repeats: a poll soon lands before an end again, and the spacing measures the chip,
        # not our own schedule. Steady state (measured in the simulator, oscillator -10 % .. +10 %): about
        # 1.3 polls per cycle, and a read follows its cycle's end by less than one poll interval plus the
        # read itself.
        if first:
            self._hits += 1
        else:
            self._hits = 0
        g = (self.poll_us >> 4) << (self._hits if self._hits < 8 else 8)
        if g > c >> 2:
            g = c >> 2
        self._due = ticks_add(t, self.period_us - g)

    def check(self):
        """Read configuration and calibration back; if the chip lost them (it resets on sharp load
        transients), re-initialise it, count it, emit EV_CHIP_RESET and return True."""
        try:
            cfg = self._read(_REG_CONFIG)
            cal = self._read(_REG_CAL)
        except OSError:
            self.errors += 1
            return False
        if cfg == self.config and cal == self.cal:
            return False
        try:
            self.init()
        except SensorError:
            self.errors += 1
            return False  # still wrong: the next check tries again
        self.resets += 1
        if self._event is not None:
            self._event(EV_CHIP_RESET, cfg)
        return True

    # -- readings in engineering units (integers; for display and frames, not the energy path) --------------
    def bus_mv(self):
        return self.bus * 4

    def current_ua(self):
        return _div(self.shunt * 10000000, self.shunt_uohm)

    def power_mw(self):
        return _div(self.bus * 4 * self.current_ua(), 1000000)


def _div(a, b):
    # Integer division truncating toward zero (so import and export round alike).
    return a // b if a >= 0 else -(-a // b)
