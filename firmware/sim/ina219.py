# Register-level model of the TI INA219 (datasheet SBOS448), for the simulator and as a test oracle.
# Runs unchanged under MicroPython and CPython. Never deployed to a board.
#
# Registers (16 bit, MSB first on the bus):
#   0 config      RST(15, self-clearing: resets every register) BRNG(13) PG(12..11) BADC(10..7) SADC(6..3)
#                 MODE(2..0); power-on value 0x399F. Bit 14 is unused and reads 0 here.
#   1 shunt       signed, 10 uV LSB, clamped to the PGA range: +-4000 << PG counts (+-40/80/160/320 mV)
#   2 bus         bits 15..3 = bus voltage in 4 mV counts (clamped to 0..4000 at BRNG=0, 0..8000 at BRNG=1),
#                 bit 1 CNVR, bit 0 OVF
#   3 power       |current| * bus / 5000 (unsigned); reading it clears CNVR
#   4 current     shunt * cal / 4096 (signed)
#   5 calibration bit 0 is not implemented and reads 0; power-on value 0 (current and power read 0)
# Current and power are computed (truncating toward zero, as integer hardware does) at the end of each
# conversion, with the calibration in effect then; OVF is set when either leaves its 16-bit range (the value
# is then clamped). Shunt and bus readings are the window averages rounded to the nearest count (round():
# ties to even in both MicroPython and CPython, and no float allocated on the way).
#
# Timing: ADC codes 0-7 select 9..12-bit single conversions (84/148/276/532 us; bit 3 is "don't care"),
# codes 8-15 select 1..128-sample averaging (0.532 .. 68.10 ms). In continuous shunt+bus mode (7) a cycle is
# the shunt conversion followed by the bus conversion; at its end shunt, bus, current and power update
# together and CNVR is set. Modes 5/6 convert only shunt / only bus; triggered modes 1-3 convert once per
# config write; modes 0 and 4 convert nothing. A config write aborts the conversion in progress and starts
# over from the time of the write. CNVR clears on reading power and on writing a converting mode.
# osc_ppm stretches (positive) or shortens (negative) every conversion, as an off-frequency oscillator does.
#
# The model is lazy: on each register access it catches up every cycle completed by clock.now_us. Time is
# kept in integer nanoseconds on the clock's timeline (now_us * 1000); scenario time 0 is the clock's
# now_us when the model was created.
#
# Ground truth (simulator only, floats are fine here): for every completed shunt+bus cycle the chip
# converted, (bus window average volts) x (shunt window average amps) x (cycle duration) is added to the
# import (positive) or export (negative) total: exact_import_uwh / exact_export_uwh (floats, uWh), as of the
# last register access or sync(). true_j() gives the continuous integral of v*i over the same converting
# time, for comparison (the chip samples the current only in the shunt window).
#
# Loads behind switches (sim.hardware): the supply relay (load_connected false: no current at all) and the
# load-control contactor (set_load_share(s): of a current flowing in, only the share s flows; 1.0 = all).
# The share applies to import only: the scenario gives the net current, and with it exporting the customer's
# load behind the contactor is unknown, so a shed then leaves the export as it is. Registers and ground truth
# both follow the switches, from the first cycle not yet caught up.
DEFAULT_CONFIG = 0x399F
CONV_US = (84, 148, 276, 532, 84, 148, 276, 532, 532, 1060, 2130, 4260, 8510, 17020, 34050, 68100)
_NEVER = 1 << 61


def conversion_us(code):
    """Conversion time of a BADC/SADC code (0..15), per the datasheet's ADC settings table."""
    return CONV_US[code & 15]


class INA219Model:
    def __init__(self, clock, scenario, shunt_ohms=0.1, osc_ppm=0, offset_lsb=0, bus_noise=0.0,
                 shunt_noise=0.0, seed=1):
        self.clock = clock
        self.scenario = scenario
        self.shunt_ohms = shunt_ohms
        self.osc_ppm = osc_ppm
        self.offset_lsb = offset_lsb  # shunt offset, in 10 uV counts (may be fractional)
        self.bus_noise = bus_noise  # standard deviation of the reported bus reading, in 4 mV counts
        self.shunt_noise = shunt_noise  # standard deviation of the reported shunt reading, in 10 uV counts
        self._counts_per_amp = shunt_ohms * 100000.0  # shunt counts (10 uV) per ampere
        self._rng = (seed & 0xFFFFFFFF) or 1
        self._org_ns = clock.now_us * 1000
        # The relay (sim.hardware.SimRelayPin sets this): with the load cut off the shunt carries no current; the
        # bus voltage stays. A change takes effect from the first cycle not yet caught up when it is noticed
        # (the cycle in progress, when the meter reads every cycle).
        self.load_connected = True
        self._connected = True
        self.load_share = 1.0  # set_load_share(): the share of an import current flowing (1.0: nothing shed)
        self._share = 1.0
        self._whole = True  # connected and nothing shed: registers take the scenario's current as it is
        self._cut_src = None  # the scenario's amps float last scaled by the share, and the result
        self._cut_val = 0.0
        # Ground truth and counters (plain attributes: a class with properties makes every store slow in
        # MicroPython, and _run is the simulator's hot path). As of the last register access or sync().
        self.cycles = 0  # conversion cycles completed, any mode
        self.exact_import_uwh = 0.0  # energy the chip converted flowing in, uWh (float: simulator only)
        self.exact_export_uwh = 0.0  # ... flowing out (current negative), uWh
        self.last_volts = 0.0  # true averages of the last completed cycle (bus window, shunt window)
        self.last_amps = 0.0
        self.soft_resets = 0  # RST bit writes
        self.brownouts = 0  # reset() calls
        self._span_imp = 0.0
        self._span_exp = 0.0
        self._span_ns = -1  # start of the open converting span (-1: none)
        self._start_ns = self._org_ns
        self._next_ns = _NEVER
        self._por(self._org_ns)

    # -- state -----------------------------------------------------------------------------------------------
    def _por(self, now_ns):
        self._config = DEFAULT_CONFIG
        self._cal = 0
        self._shunt = 0
        self._bus = 0
        self._power = 0
        self._current = 0
        self._cnvr = 0  # 0 or 2 (its bit position in the bus register)
        self._ovf = 0
        self._apply_config(now_ns)

    def _apply_config(self, now_ns):
        self._span_close()
        cfg = self._config
        mode = cfg & 7
        self._mode = mode
        self._fs = 4000 << ((cfg >> 11) & 3)
        self._bus_max = 8000 if cfg & 0x2000 else 4000
        k = 1000000 + self.osc_ppm
        sh = int(CONV_US[(cfg >> 3) & 15] * k / 1000 + 0.5)
        bu = int(CONV_US[(cfg >> 7) & 15] * k / 1000 + 0.5)
        both = mode & 3
        if both == 1:
            bu = 0
        elif both == 2:
            sh = 0
        self._q_amps = None  # the floats last quantised into the shunt / bus registers (range may change)
        self._q_volts = None
        self._e_vi = None  # the vi float whose per-cycle energy _e holds
        self._e = 0.0
        self.shunt_ns = sh  # shunt conversion time, ns (oscillator error included)
        self.cycle_ns = sh + bu  # one conversion cycle in the current configuration, ns
        self._dur_uwh = (sh + bu) * 1e-9 * (1e6 / 3600.0)  # cycle duration in hours x 1e6: W -> uWh
        self._start_ns = now_ns
        self._truth = both == 3 and self._connected  # cycles whose energy counts as ground truth
        if both == 0:
            self._next_ns = _NEVER  # power-down (0) or ADC off (4): no conversions, CNVR untouched
            return
        self._cnvr = 0
        self._next_ns = now_ns + sh + bu
        if both == 3 and self._connected:
            self._span_ns = now_ns

    def _span_close(self):
        if self._span_ns >= 0:
            end = self._start_ns  # end of the last completed cycle of the span
            if end > self._span_ns:
                org = self._org_ns
                imp, exp = self.scenario.energy((self._span_ns - org) * 1e-9, (end - org) * 1e-9)
                self._span_imp += imp * self._share
                self._span_exp += exp
            self._span_ns = -1

    def _gauss(self):
        # Irwin-Hall: (sum of 4 uniforms - 2) * sqrt(3) has mean 0 and variance 1.
        x = self._rng
        t = 0
        for _ in range(4):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            t += x
        self._rng = x
        return (t / 4294967296.0 - 2.0) * 1.7320508075688772

    # The hot path: about 1.26 million cycles per simulated day. MicroPython puts a function's frame on the
    # heap (allocated and freed on every call) once its locals plus value stack exceed 11 words, which costs
    # more than the arithmetic, so the work is split into small functions.
    def _run(self, now):
        """Complete every conversion cycle that ended by now (ns); update the registers from the last one."""
        if self.load_connected != self._connected:
            self._relay()
        n = 0
        t = self._start_ns
        while self._next_ns <= now:
            self._cycle(t - self._org_ns)
            t = self._next_ns
            n += 1
            if self._mode < 4:  # triggered: one cycle per config write
                self._next_ns = _NEVER
                break
            self._next_ns = t + self.cycle_ns
        self._start_ns = t
        self.cycles += n
        self._update()

    def _cycle(self, t):
        # One conversion cycle from scenario time t (ns): the scenario's window averages and its energy.
        sc = self.scenario
        sc.conv(t, t + self.shunt_ns, t + self.cycle_ns)
        if self._truth:
            t = sc.vi
            # Piecewise scenarios hand back the same float object for a whole segment: reuse its energy.
            if t is not self._e_vi:
                self._e_vi = t
                self._e = t * self._dur_uwh
            if t >= 0.0:
                self.exact_import_uwh += self._e
            else:
                self.exact_export_uwh -= self._e

    def _cycle_shed(self, t):
        # _cycle while the load-control contactor is open (set_load_share binds it in place of _cycle): an
        # import is the share of the scenario's, an export as it is. No energy cache: a shed is rare.
        sc = self.scenario
        sc.conv(t, t + self.shunt_ns, t + self.cycle_ns)
        if self._truth:
            t = sc.vi
            if t >= 0.0:
                self.exact_import_uwh += t * self._share * self._dur_uwh
            else:
                self.exact_export_uwh -= t * self._dur_uwh

    def _update(self):
        # Registers take the last completed cycle (re-quantised only when its values changed).
        sc = self.scenario
        amps = sc.amps if self._whole else self._cut(sc.amps)
        self.last_amps = amps
        self.last_volts = sc.volts
        if self._mode & 1 and (amps is not self._q_amps or self.shunt_noise):
            self._q_amps = amps
            self._shunt = self._quantise_shunt(amps)
        if self._mode & 2 and (sc.volts is not self._q_volts or self.bus_noise):
            self._q_volts = sc.volts
            self._bus = self._quantise_bus(sc.volts)
        self._compute()
        self._cnvr = 2

    def _quantise_shunt(self, amps):
        x = amps * self._counts_per_amp
        if self.offset_lsb:
            x += self.offset_lsb
        if self.shunt_noise:
            x += self.shunt_noise * self._gauss()
        x = round(x)
        if x > self._fs:
            return self._fs
        if x < -self._fs:
            return -self._fs
        return x

    def _quantise_bus(self, volts):
        y = volts * 250.0
        if self.bus_noise:
            y += self.bus_noise * self._gauss()
        y = round(y)
        if y < 0:
            return 0
        if y > self._bus_max:
            return self._bus_max
        return y

    def _cut(self, amps):
        # The current through the shunt with the relay open (none) or part of the load shed (the share of an
        # import). The same float for the same scenario float, so _update re-quantises only on a change.
        if not self._connected:
            return 0.0
        if amps <= 0.0:
            return amps
        if amps is not self._cut_src:
            self._cut_src = amps
            self._cut_val = amps * self._share
        return self._cut_val

    def _relay(self):
        # A switch changed: the open span is closed with the share it had, the next one opens from here.
        self._span_close()
        self._connected = bool(self.load_connected)
        if self.load_share != self._share:
            self._share = self.load_share
            self._cut_src = None
            if self._share == 1.0:
                del self._cycle  # back to the class's _cycle: nothing extra per cycle when nothing is shed
            else:
                self._cycle = self._cycle_shed
        self._whole = self._connected and self._share == 1.0
        self._truth = self._mode & 3 == 3 and self._connected
        if self._truth:
            self._span_ns = self._start_ns

    def _compute(self):
        p = self._shunt * self._cal
        cur = p >> 12 if p >= 0 else -((-p) >> 12)
        ovf = 0
        if cur > 32767:
            cur = 32767
            ovf = 1
        elif cur < -32768:
            cur = -32768
            ovf = 1
        pw = (cur if cur >= 0 else -cur) * self._bus // 5000
        if pw > 65535:
            pw = 65535
            ovf = 1
        self._current = cur
        self._power = pw
        self._ovf = ovf

    # -- register interface (used by sim.i2c.SimI2C) ---------------------------------------------------------
    def read_reg(self, reg):
        now = self.clock.now_us * 1000
        if now >= self._next_ns:
            self._run(now)
        if reg == 2:
            return (self._bus << 3) | self._cnvr | self._ovf
        if reg == 1:
            return self._shunt & 0xFFFF
        if reg == 3:
            self._cnvr = 0
            return self._power
        if reg == 0:
            return self._config
        if reg == 4:
            return self._current & 0xFFFF
        if reg == 5:
            return self._cal
        return 0

    def write_reg(self, reg, value):
        now = self.clock.now_us * 1000
        if now >= self._next_ns:
            self._run(now)
        value &= 0xFFFF
        if reg == 0:
            if value & 0x8000:
                self.soft_resets += 1
                self._por(now)
            else:
                self._config = value & 0x3FFF
                self._apply_config(now)
        elif reg == 5:
            self._cal = value & 0xFFFE
        # 1..4 are read-only: writes are ignored

    # -- simulator controls ----------------------------------------------------------------------------------
    def sync(self):
        """Catch up with the clock (registers and ground truth) without a register access."""
        now = self.clock.now_us * 1000
        if now >= self._next_ns:
            self._run(now)

    def set_load_share(self, share):
        """The load-control contactor (sim.hardware.SimLoadControlPin): from the first cycle not yet caught up,
        an import current is this share (0..1) of the scenario's; 1.0 when the contactor is closed."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("load share %r is not within 0..1" % (share,))
        self.load_share = float(share)
        if self.load_share != self._share:
            self._relay()

    def reset(self):
        """A brown-out (e.g. a sharp load transient): every register back to its power-on value."""
        self.sync()
        self.brownouts += 1
        self._por(self.clock.now_us * 1000)

    # -- ground truth and introspection ----------------------------------------------------------------------
    def true_j(self):
        """(import J, export J): the continuous integral of v*i over all completed shunt+bus cycles."""
        self.sync()
        imp = self._span_imp
        exp = self._span_exp
        if self._span_ns >= 0 and self._start_ns > self._span_ns:
            org = self._org_ns
            i, e = self.scenario.energy((self._span_ns - org) * 1e-9, (self._start_ns - org) * 1e-9)
            imp += i * self._share
            exp += e
        return imp, exp

    def last_end_us(self):
        """Clock time (now_us timeline) at which the last completed cycle ended."""
        return self._start_ns // 1000

    def next_end_us(self):
        """Clock time at which the cycle in progress will end (None when the chip is not converting)."""
        return None if self._next_ns == _NEVER else (self._next_ns + 999) // 1000
