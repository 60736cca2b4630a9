# The metering hot loop: integrates raw INA219 readings into energy, integers only.
#
# Input per conversion cycle (from meter/ina219.py): `shunt` signed counts (10 uV LSB), `bus` counts
# (4 mV LSB, 0..8191), `tick` = ticks_us() at the read (modulo 2^30). Acquisition stores them into
# preallocated arrays; every batch the @micropython.viper kernel `integrate` (or its pure twin
# `integrate_py`, bit for bit the same) folds them into a small `state` array('i'). The front-end
# `Metrology` drains the state after each batch and converts raw energy into whole uWh, keeping the
# remainder exactly.
#
# Arrays (why these typecodes):
#   shunt  array('h')  int16, the register's own format; the kernel reads it with ptr16 and sign-extends.
#   bus    array('H')  uint16; the kernel keeps the low 13 bits (the INA219 bus value is 13 bits).
#   tick   array('i')  int32; ticks are < 2^30 so they fit, and ptr32 reads them in one load.
#   state  array('i')  ST_WORDS signed 32-bit words, indexed by the ST_* constants below.
#
# Per sample (every sample updates min/max/count; the first after start/resync only sets the last tick, so
# the conversion cycle that ended at that tick gets no energy: at most one cycle per start or resync):
#   dt      = (tick - last_tick) mod 2^30 us        correct across the 2^30 wrap
#   missed  : if dt > 1.5 cycles, round(dt / cycle) - 1 cycles were overwritten before we read them; only one
#             cycle of the gap counts as covered. (round half up: (dt + cycle//2) // cycle)
#   covered += dt, or += cycle for a gap
#   hold    : the reading's power is held over the whole gap (it is the best estimate of the missed cycles),
#             but at most HOLD_MAX_US: a longer dt integrates HOLD_MAX_US and is counted in ST_CLAMPED;
#             the rest of such a gap gets no energy (it still counts in elapsed, not in covered).
#   u       = (carry + dt) >> 2, carry = (carry + dt) & 3: dt in 4 us units, the sub-unit remainder carried to
#             the next interval, so no time is lost (sum of 4u + carry == sum of dt exactly).
#   p       = shunt * bus; |p| <= 32768 * 8191 < 2^28. p > 0 is import, p < 0 export (accumulated as |p|).
#   energy  += p * u in raw units.
#
# Units. 1 raw unit = 10 uV * 4 mV * 4 us / R = 1.6e-13 V^2 s / R(ohm) = 1.6e-7 J / R_uohm, and
# 1 uWh = 3.6e-3 J, so one uWh is exactly UWH_RAW_PER_UOHM * R_uohm = 22500 * R_uohm raw units (2.25e9 for
# 0.1 ohm; check: 12 W for 300 us = 1 uWh = 10000*3000 counts * 75 units = 2.25e9). An integer for every
# integer R_uohm, so take_uwh() divides exactly and keeps the remainder in raw units: nothing is rounded away.
# (docs/architecture.md says 1.6e-10 V^2 s and 22.5 * R_uohm: 1000x off, as 1e-5 * 4e-3 * 4e-6 = 1.6e-13.)
#
# 32-bit proof sketch (the tests check it op by op with an instrumented run of the twin):
#   p = ph * 2^14 + pl and u = uh * 2^14 + ul with 14-bit limbs (ph < 2^14, uh <= 122 after the hold clamp;
#   uh <= 2^14 even unclamped). Accumulator per direction: lo (14 bits), mid (14 bits), top.
#       lo  += pl*ul                          < 2^14 + 2^28
#       mid += ph*ul + pl*uh + (lo >> 14)     < 2^14 + 2^29 + 2^15
#       top += ph*uh + (mid >> 14)
#   The accumulator value V = top*2^28 + mid*2^14 + lo grows by exactly p*u, and with V mod 2^28 < 2^28 and
#   p < 2^28, top grows by at most u per sample.
#
# Per-batch bounds (state starts each batch drained: top, covered, missed, elapsed_hi, samples, clamped = 0).
# The front-end drains with plain Python small-int arithmetic, and an ESP32 small int is 31-bit (< 2^30), so
# every drained word is kept below 2^29 (the front-end adds it to a < 2^28 limb: < 2^30, no heap allocation):
#   top      <= BATCH_MAX * u_max = 256 * ((HOLD_MAX_US + 3) >> 2) = 256 * 2_000_000 = 512_000_000 < 2^29
#   covered  <= BATCH_MAX * 1.5 * CYCLE_US_MAX = 256 * 1_500_000 = 384_000_000 < 2^29
#   missed   <= BATCH_MAX * (((2^30 - 1) + CYCLE_US_MIN//2) // CYCLE_US_MIN - 1) = 256 * (2^21 - 1) < 2^29
#   elapsed  is kept as lo (mod 2^28, lo + dt < 2^28 + 2^30) and hi (+<= 4 per sample, <= 1024 per batch)
#   samples, clamped <= BATCH_MAX;  carry < 4;  last_tick < 2^30;  min/max are int16 / 13-bit.
# Hence: batch <= BATCH_MAX, CYCLE_US_MIN <= cycle <= CYCLE_US_MAX, power held for at most HOLD_MAX_US = 8 s.
# An interval that is not a gap is at most 1.5 cycles <= 1.5 s, so the clamp only ever shortens gaps that are
# already counted as missed; what it cuts off (a stall longer than 8 s) gets no energy estimate at all, and
# shows as a clamped interval and as lower coverage. The front-end's own limbs (pairs of words < 2^28) hold
# 2^58 units: they cannot overflow in the life of a meter.

import sys
from array import array

from meter.clock import TICKS_MASK

# On CPython the pure twin is the kernel and the module doubles as a host-side oracle. The test is the
# implementation name, not `import micropython`: CPython may have a `micropython` shim installed (Adafruit's),
# whose viper decorator raises.
_MICROPYTHON = sys.implementation.name == "micropython"
if _MICROPYTHON:
    import micropython
    from micropython import const
else:
    def const(x):
        return x


# State words (array('i')). ST_* are public: tests and tools index the state by name.
ST_IMP_LO = const(0)      # import accumulator, low 14 bits       (raw units)
ST_IMP_MID = const(1)     # import accumulator, middle 14 bits    (raw units * 2^14)
ST_IMP_TOP = const(2)     # import accumulator, rest              (raw units * 2^28), drained every batch
ST_EXP_LO = const(3)      # export accumulator (|p| for p < 0), same layout
ST_EXP_MID = const(4)
ST_EXP_TOP = const(5)
ST_CARRY = const(6)       # sub-4-us time remainder, 0..3 us
ST_LAST_TICK = const(7)   # tick of the last sample (mod 2^30)
ST_STARTED = const(8)     # 1 once a tick has been seen (the first sample only sets ST_LAST_TICK)
ST_CYCLE_US = const(9)    # nominal conversion cycle in us (input, set by new_state)
ST_COVERED_US = const(10)  # us covered by cycles that were read, drained every batch
ST_MISSED = const(11)     # cycles missed (overwritten before being read), drained every batch
ST_ELAPSED_LO = const(12)  # elapsed us (sum of dt) mod 2^28
ST_ELAPSED_HI = const(13)  # elapsed us // 2^28, drained every batch
ST_SAMPLES = const(14)    # samples integrated, drained every batch
ST_CLAMPED = const(15)    # intervals longer than HOLD_MAX_US (energy held for HOLD_MAX_US only), drained
ST_SHUNT_MIN = const(16)  # min/max shunt counts (int16) and bus counts (0..8191) since new_state/reset_stats
ST_SHUNT_MAX = const(17)
ST_BUS_MIN = const(18)
ST_BUS_MAX = const(19)
ST_WORDS = const(20)

UWH_RAW_PER_UOHM = const(22500)  # raw units per uWh per micro-ohm of shunt (see "Units" above)
BATCH_MAX = const(256)
HOLD_MAX_US = const(8000000)
CYCLE_US_MIN = const(512)
CYCLE_US_MAX = const(1000000)
SHUNT_MIN = const(-32768)
SHUNT_MAX = const(32767)
BUS_MAX = const(8191)
DRAIN_LIMIT = const(0x20000000)  # 2^29: every drained word stays below this (see the bounds above)

_MASK14 = const(0x3FFF)
_MASK28 = const(0x0FFFFFFF)
_TMASK = const(0x3FFFFFFF)       # == meter.clock.TICKS_MASK, as a compile-time constant for viper
_BUSMASK = const(0x1FFF)


def new_state(cycle_us):
    """A fresh kernel state for a nominal conversion cycle of `cycle_us` microseconds."""
    if not CYCLE_US_MIN <= cycle_us <= CYCLE_US_MAX:
        raise ValueError("cycle_us out of range")
    st = array("i", bytes(4 * ST_WORDS))
    st[ST_CYCLE_US] = cycle_us
    reset_minmax(st)
    return st


def reset_minmax(st):
    st[ST_SHUNT_MIN] = SHUNT_MAX
    st[ST_SHUNT_MAX] = SHUNT_MIN
    st[ST_BUS_MIN] = BUS_MAX
    st[ST_BUS_MAX] = 0


def integrate_py(state, shunt_arr, bus_arr, tick_arr, n):
    """Pure-Python twin of `integrate`: the same operations in the same order, so `state` ends bit-identical.

    Mirrors the viper kernel line for line (including the int16 sign extension that the kernel needs because
    ptr16 loads zero-extend, and the min/max sign extension needed because ptr32 loads zero-extend on 64-bit
    hosts). Caller guarantees n <= BATCH_MAX, n <= len(each array), and a state drained since the last batch.
    """
    st = state
    lo_i = st[ST_IMP_LO]
    mid_i = st[ST_IMP_MID]
    top_i = st[ST_IMP_TOP]
    lo_e = st[ST_EXP_LO]
    mid_e = st[ST_EXP_MID]
    top_e = st[ST_EXP_TOP]
    carry = st[ST_CARRY]
    last = st[ST_LAST_TICK]
    started = st[ST_STARTED]
    cyc = st[ST_CYCLE_US]
    half = cyc >> 1
    gap = cyc + half
    cov = st[ST_COVERED_US]
    missed = st[ST_MISSED]
    el_lo = st[ST_ELAPSED_LO]
    el_hi = st[ST_ELAPSED_HI]
    nsamp = st[ST_SAMPLES]
    clamped = st[ST_CLAMPED]
    smin = ((st[ST_SHUNT_MIN] + 0x8000) & 0xFFFF) - 0x8000
    smax = ((st[ST_SHUNT_MAX] + 0x8000) & 0xFFFF) - 0x8000
    bmin = st[ST_BUS_MIN]
    bmax = st[ST_BUS_MAX]
    for i in range(n):
        s = ((shunt_arr[i] + 0x8000) & 0xFFFF) - 0x8000
        b = bus_arr[i] & _BUSMASK
        t = tick_arr[i] & _TMASK
        if s < smin:
            smin = s
        if s > smax:
            smax = s
        if b < bmin:
            bmin = b
        if b > bmax:
            bmax = b
        nsamp += 1
        if started:
            dt = (t - last) & _TMASK
            el_lo += dt
            el_hi += el_lo >> 28
            el_lo &= _MASK28
            if dt > gap:
                missed += (dt + half) // cyc - 1
                cov += cyc
            else:
                cov += dt
            if dt > HOLD_MAX_US:
                dt = HOLD_MAX_US
                clamped += 1
            r = carry + dt
            u = r >> 2
            carry = r & 3
            p = s * b
            if p < 0:
                p = -p
                pl = p & _MASK14
                ph = p >> 14
                ul = u & _MASK14
                uh = u >> 14
                lo_e += pl * ul
                mid_e += ph * ul + pl * uh + (lo_e >> 14)
                lo_e &= _MASK14
                top_e += ph * uh + (mid_e >> 14)
                mid_e &= _MASK14
            elif p > 0:
                pl = p & _MASK14
                ph = p >> 14
                ul = u & _MASK14
                uh = u >> 14
                lo_i += pl * ul
                mid_i += ph * ul + pl * uh + (lo_i >> 14)
                lo_i &= _MASK14
                top_i += ph * uh + (mid_i >> 14)
                mid_i &= _MASK14
        else:
            started = 1
        last = t
    st[ST_IMP_LO] = lo_i
    st[ST_IMP_MID] = mid_i
    st[ST_IMP_TOP] = top_i
    st[ST_EXP_LO] = lo_e
    st[ST_EXP_MID] = mid_e
    st[ST_EXP_TOP] = top_e
    st[ST_CARRY] = carry
    st[ST_LAST_TICK] = last
    st[ST_STARTED] = started
    st[ST_COVERED_US] = cov
    st[ST_MISSED] = missed
    st[ST_ELAPSED_LO] = el_lo
    st[ST_ELAPSED_HI] = el_hi
    st[ST_SAMPLES] = nsamp
    st[ST_CLAMPED] = clamped
    st[ST_SHUNT_MIN] = smin
    st[ST_SHUNT_MAX] = smax
    st[ST_BUS_MIN] = bmin
    st[ST_BUS_MAX] = bmax
    return n


if _MICROPYTHON:

    @micropython.viper
    def integrate(state, shunt_arr, bus_arr, tick_arr, n: int) -> int:
        """Viper kernel: integrates n samples into `state`. Allocates nothing. See integrate_py (its twin)."""
        st = ptr32(state)
        sp = ptr16(shunt_arr)
        bp = ptr16(bus_arr)
        tp = ptr32(tick_arr)
        lo_i = int(st[ST_IMP_LO])
        mid_i = int(st[ST_IMP_MID])
        top_i = int(st[ST_IMP_TOP])
        lo_e = int(st[ST_EXP_LO])
        mid_e = int(st[ST_EXP_MID])
        top_e = int(st[ST_EXP_TOP])
        carry = int(st[ST_CARRY])
        last = int(st[ST_LAST_TICK])
        started = int(st[ST_STARTED])
        cyc = int(st[ST_CYCLE_US])
        half = cyc >> 1
        gap = cyc + half
        cov = int(st[ST_COVERED_US])
        missed = int(st[ST_MISSED])
        el_lo = int(st[ST_ELAPSED_LO])
        el_hi = int(st[ST_ELAPSED_HI])
        nsamp = int(st[ST_SAMPLES])
        clamped = int(st[ST_CLAMPED])
        smin = ((int(st[ST_SHUNT_MIN]) + 0x8000) & 0xFFFF) - 0x8000
        smax = ((int(st[ST_SHUNT_MAX]) + 0x8000) & 0xFFFF) - 0x8000
        bmin = int(st[ST_BUS_MIN])
        bmax = int(st[ST_BUS_MAX])
        for i in range(n):
            s = ((int(sp[i]) + 0x8000) & 0xFFFF) - 0x8000
            b = int(bp[i]) & _BUSMASK
            t = int(tp[i]) & _TMASK
            if s < smin:
                smin = s
            if s > smax:
                smax = s
            if b < bmin:
                bmin = b
            if b > bmax:
                bmax = b
            nsamp += 1
            if started:
                dt = (t - last) & _TMASK
                el_lo += dt
                el_hi += el_lo >> 28
                el_lo &= _MASK28
                if dt > gap:
                    missed += (dt + half) // cyc - 1
                    cov += cyc
                else:
                    cov += dt
                if dt > HOLD_MAX_US:
                    dt = HOLD_MAX_US
                    clamped += 1
                r = carry + dt
                u = r >> 2
                carry = r & 3
                p = s * b
                if p < 0:
                    p = -p
                    pl = p & _MASK14
                    ph = p >> 14
                    ul = u & _MASK14
                    uh = u >> 14
                    lo_e += pl * ul
                    mid_e += ph * ul + pl * uh + (lo_e >> 14)
                    lo_e &= _MASK14
                    top_e += ph * uh + (mid_e >> 14)
                    mid_e &= _MASK14
                elif p > 0:
                    pl = p & _MASK14
                    ph = p >> 14
                    ul = u & _MASK14
                    uh = u >> 14
                    lo_i += pl * ul
                    mid_i += ph * ul + pl * uh + (lo_i >> 14)
                    lo_i &= _MASK14
                    top_i += ph * uh + (mid_i >> 14)
                    mid_i &= _MASK14
            else:
                started = 1
            last = t
        st[ST_IMP_LO] = lo_i
        st[ST_IMP_MID] = mid_i
        st[ST_IMP_TOP] = top_i
        st[ST_EXP_LO] = lo_e
        st[ST_EXP_MID] = mid_e
        st[ST_EXP_TOP] = top_e
        st[ST_CARRY] = carry
        st[ST_LAST_TICK] = last
        st[ST_STARTED] = started
        st[ST_COVERED_US] = cov
        st[ST_MISSED] = missed
        st[ST_ELAPSED_LO] = el_lo
        st[ST_ELAPSED_HI] = el_hi
        st[ST_SAMPLES] = nsamp
        st[ST_CLAMPED] = clamped
        st[ST_SHUNT_MIN] = smin
        st[ST_SHUNT_MAX] = smax
        st[ST_BUS_MIN] = bmin
        st[ST_BUS_MAX] = bmax
        return n

else:
    integrate = integrate_py


# Front-end accumulators: pairs (lo < 2^28, hi = multiples of 2^28) of small ints in an array('i'), so that
# the per-batch drain never creates a big int. The value of a pair is hi * 2^28 + lo.
_F_IMP = const(0)        # import energy in units of 2^28 raw units (the kernel's top limb)
_F_EXP = const(2)
_F_COVERED = const(4)    # us
_F_MISSED = const(6)
_F_ELAPSED = const(8)    # us
_F_SAMPLES = const(10)
_F_CLAMPED = const(12)
_F_WORDS = const(14)


def _move(st, k, fe, j):
    # Adds state word k into front-end pair j and zeroes it. st[k] < DRAIN_LIMIT = 2^29 and fe[j] < 2^28, so
    # x < 2^30: a small int even on the ESP32, no heap allocation.
    x = fe[j] + st[k]
    st[k] = 0
    fe[j] = x & _MASK28
    fe[j + 1] += x >> 28


def _raw(fe, j, st, k, clear):
    # The whole accumulator of one direction (front-end pair + the kernel's mid/lo limbs) as one Python int.
    raw = (((fe[j + 1] << 28) + fe[j]) << 28) + (st[k + 1] << 14) + st[k]
    if clear:
        fe[j] = fe[j + 1] = 0
        st[k] = st[k + 1] = 0
    return raw


class Metrology:
    """Batches raw readings, runs the kernel, and turns raw energy into whole uWh with an exact remainder.

    cycle_us    nominal INA219 conversion cycle (68_630 us for shunt 128x + bus 12-bit), CYCLE_US_MIN..MAX
    shunt_uohm  shunt resistance in micro-ohms (100_000 for 0.1 ohm), a positive integer
    batch       samples per kernel run, 1..BATCH_MAX
    kernel      integrate (viper on MicroPython) or integrate_py (the twin)

    Attributes: state (the kernel's array), pending (readings added but not yet integrated),
    units_per_uwh (raw units in one uWh). add() and flush() allocate nothing: the kernel works in place and
    the drain uses small ints only. Big integers appear only in take_uwh(), pending_raw() and the statistics.
    Statistics count from construction or reset_stats(), and include the pending readings (they flush).
    """

    def __init__(self, cycle_us, shunt_uohm, batch=64, kernel=integrate):
        if not 1 <= batch <= BATCH_MAX:
            raise ValueError("batch must be 1..%d" % BATCH_MAX)
        if not isinstance(shunt_uohm, int) or shunt_uohm <= 0:
            raise ValueError("shunt_uohm must be a positive integer")
        self.cycle_us = cycle_us
        self.shunt_uohm = shunt_uohm
        self.units_per_uwh = UWH_RAW_PER_UOHM * shunt_uohm
        self.state = new_state(cycle_us)
        self.pending = 0
        self._kernel = kernel
        self._batch = batch
        self._sh = array("h", bytes(2 * batch))
        self._bus = array("H", bytes(2 * batch))
        self._tk = array("i", bytes(4 * batch))
        self._fe = array("i", bytes(4 * _F_WORDS))
        self._res = [0, 0]  # sub-uWh remainders (import, export) in raw units, each < units_per_uwh
        self._cuts = 0  # readings added by cut() (not real samples: taken off the sample count)

    # -- acquisition (hot path, allocation-free) --------------------------------------------------------
    def add(self, shunt, bus, tick):
        """Store one reading; runs the kernel when the batch is full. True when this reading completed a
        batch (the kernel ran and the state was drained), so the caller can settle energy then."""
        if not (SHUNT_MIN <= shunt <= SHUNT_MAX and 0 <= bus <= BUS_MAX and 0 <= tick <= _TMASK):
            raise ValueError("reading out of range")
        n = self.pending
        self._sh[n] = shunt
        self._bus[n] = bus
        self._tk[n] = tick
        n += 1
        self.pending = n
        if n >= self._batch:
            self.flush()
            return True
        return False

    def flush(self):
        """Integrate the pending readings and drain the state's growing words into the front-end."""
        n = self.pending
        if n:
            st = self.state
            fe = self._fe
            self._kernel(st, self._sh, self._bus, self._tk, n)
            self.pending = 0
            _move(st, ST_IMP_TOP, fe, _F_IMP)
            _move(st, ST_EXP_TOP, fe, _F_EXP)
            _move(st, ST_COVERED_US, fe, _F_COVERED)
            _move(st, ST_MISSED, fe, _F_MISSED)
            _move(st, ST_ELAPSED_LO, fe, _F_ELAPSED)
            fe[_F_ELAPSED + 1] += st[ST_ELAPSED_HI]
            st[ST_ELAPSED_HI] = 0
            _move(st, ST_SAMPLES, fe, _F_SAMPLES)
            _move(st, ST_CLAMPED, fe, _F_CLAMPED)

    def cut(self, shunt, bus, tick):
        """Split the conversion cycle that this reading ends at `tick`, an instant inside it (a tariff switch,
        a demand or profile boundary): everything up to `tick` is integrated now, so take_uwh() returns the
        energy before the instant, and the caller then add()s the same reading to meter the rest of the cycle.
        The reading's power is held over the cycle either way, so the cycle's energy is divided in proportion
        to time and the sum is unchanged (the 4 us carry is kept). The extra reading is not counted as a
        sample. If the cycle is a gap (missed cycles), each part estimates its own missed cycles."""
        self.add(shunt, bus, tick)
        self.flush()
        self._cuts += 1

    # -- energy -----------------------------------------------------------------------------------------
    def take_uwh(self):
        """(import_uwh, export_uwh): whole uWh since the last take; the sub-uWh remainder is kept exactly."""
        self.flush()
        res = self._res
        den = self.units_per_uwh
        out = [0, 0]
        for d in (0, 1):
            e = res[d] + _raw(self._fe, _F_IMP + 2 * d, self.state, ST_IMP_LO + 3 * d, True)
            out[d] = e // den
            res[d] = e - out[d] * den
        return out[0], out[1]

    def pending_raw(self):
        """Energy integrated but not yet returned by take_uwh, in raw units: (import, export).
        Right after take_uwh() each is the remainder, below units_per_uwh."""
        self.flush()
        res = self._res
        return (res[0] + _raw(self._fe, _F_IMP, self.state, ST_IMP_LO, False),
                res[1] + _raw(self._fe, _F_EXP, self.state, ST_EXP_LO, False))

    # -- statistics -------------------------------------------------------------------------------------
    def _pair(self, j):
        self.flush()
        return (self._fe[j + 1] << 28) + self._fe[j]

    @property
    def samples(self):
        return self._pair(_F_SAMPLES) - self._cuts

    @property
    def covered_us(self):
        return self._pair(_F_COVERED)

    @property
    def elapsed_us(self):
        """Microseconds from the first to the last tick (every gap included)."""
        return self._pair(_F_ELAPSED)

    @property
    def missed(self):
        return self._pair(_F_MISSED)

    @property
    def clamped(self):
        """Intervals longer than HOLD_MAX_US: their power was held for HOLD_MAX_US only."""
        return self._pair(_F_CLAMPED)

    def coverage_ppm(self):
        """covered_us / elapsed_us in parts per million (0 before the second reading)."""
        el = self.elapsed_us
        return self.covered_us * 1000000 // el if el else 0

    def minmax(self):
        """(min_shunt, max_shunt, min_bus, max_bus) in raw counts, or None before the first reading."""
        if not self.samples:
            return None
        st = self.state
        return st[ST_SHUNT_MIN], st[ST_SHUNT_MAX], st[ST_BUS_MIN], st[ST_BUS_MAX]

    def extremes(self):
        """(min_ma, max_ma, min_mv, max_mv) as integers, or None before the first reading."""
        mm = self.minmax()
        return None if mm is None else (self.ma(mm[0]), self.ma(mm[1]), mm[2] * 4, mm[3] * 4)

    def ma(self, shunt_counts):
        """Shunt counts -> mA, nearest (a tie rounds up): counts * 10 uV / R."""
        r = self.shunt_uohm
        return (shunt_counts * 20000 + r) // (2 * r)

    @staticmethod
    def mv(bus_counts):
        """Bus counts -> mV (4 mV per count, exact)."""
        return bus_counts * 4

    def reset_stats(self):
        """Zero samples/covered/elapsed/missed/clamped and min/max; energy and timing continuity are kept."""
        self.flush()
        fe = self._fe
        for j in range(_F_COVERED, _F_WORDS):
            fe[j] = 0
        self._cuts = 0
        reset_minmax(self.state)

    def start_at(self, tick):
        """The sensor's first conversion cycle began at `tick` (e.g. the configuration write): the first
        reading then integrates from there instead of only setting the start, so no cycle goes unmetered."""
        self.flush()
        st = self.state
        st[ST_LAST_TICK] = tick & _TMASK
        st[ST_STARTED] = 1

    def resync(self):
        """Forget the last tick: the next reading only starts a new interval (after a sensor reset or a pause
        the meter did not measure; that time is neither covered, nor elapsed, nor given energy)."""
        self.flush()
        self.state[ST_STARTED] = 0


assert _TMASK == TICKS_MASK
