# Load scenarios for the simulated INA219: what bus voltage and current the chip's inputs see over time.
# Runs unchanged under MicroPython and CPython, and gives the same numbers in both (own integer hash and
# PRNG, no `random`), so a seed means the same day everywhere.
#
#   s = make("solar-day", seed=1)
#   s.avg(t0, t1)     -> (volts, amps): averages over [t0, t1] (seconds since the simulation started)
#   s.energy(t0, t1)  -> (import_j, export_j): the exact integral of v*i, positive and negative parts
#   s.conv(t0, t1, t2)   the model's per-cycle fast path, times in integer NANOseconds: sets s.amps = average
#                        current over [t0, t1] (the shunt window), s.volts = average voltage over [t1, t2]
#                        (the bus window) and s.vi = s.volts * s.amps
#   s.name, s.describe
#
# Every scenario is defined segment by segment on a fixed grid (segment k covers scenario-phase time
# [k*seg_s, (k+1)*seg_s)); inside a segment, voltage and current are closed-form, so averages and energy are
# exact integrals (piecewise constant, piecewise linear, or sin^2 for the solar bell), never sampled.
# Currents stay within +-3.0 A: inside the driver's default range (3.2 A on 0.1 ohm).
#
# conv() runs once per simulated conversion cycle (1.26 M times a day), and every float MicroPython creates is
# a heap allocation, so it works on integer nanoseconds and, for piecewise-constant scenarios, hands back the
# same float objects for a whole segment (the model notices and skips re-quantising them).
import math

_cos = math.cos

NAMES = ("constant", "steps", "solar-day", "random-walk", "export", "mixed")
DAY_S = 86400


def _mix(seed, k):
    """A 32-bit integer hash of (seed, k): same result in CPython and MicroPython."""
    x = (seed * 0x9E3779B1 + k * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def _unit(seed, k):
    """Uniform in [0, 1) from (seed, k)."""
    return _mix(seed, k) / 4294967296.0


class Scenario:
    name = "?"
    describe = ""
    seg_s = DAY_S  # segment length, seconds (an integer)
    phase_s = 0  # scenario time t maps to phase time t + phase_s (the grid and time of day use phase time)

    def __init__(self):
        self.volts = 0.0
        self.amps = 0.0
        self.vi = 0.0
        self._seg_ns = self.seg_s * 1000000000
        self._ph_ns = 0

    def _seg(self, k, a, b):
        """(integral of v, integral of i, integral of v*i) over [a, b], which lies inside segment k."""
        raise NotImplementedError

    def _integrate(self, t0, t1):
        P = self.seg_s
        ph = self.phase_s
        sv = si = imp = exp = 0.0
        a = t0
        k = int((a + ph) // P)
        while a < t1:
            b = (k + 1) * P - ph
            if b > t1:
                b = t1
            if b > a:
                v, i, e = self._seg(k, a, b)
                sv += v
                si += i
                if e >= 0:
                    imp += e
                else:
                    exp -= e
                a = b
            k += 1
        return sv, si, imp, exp

    def avg(self, t0, t1):
        """(average volts, average amps) over [t0, t1]; the instantaneous value if t1 <= t0."""
        if t1 <= t0:
            t1 = t0 + 1e-6
        sv, si, _, _ = self._integrate(t0, t1)
        d = t1 - t0
        return sv / d, si / d

    def energy(self, t0, t1):
        """(import joules, export joules): integral of v*i over [t0, t1], split by sign."""
        if t1 <= t0:
            return 0.0, 0.0
        _, _, imp, exp = self._integrate(t0, t1)
        return imp, exp

    def conv(self, t0, t1, t2):
        """Shunt window [t0, t1], bus window [t1, t2] (integer ns): sets amps, volts, vi (generic version)."""
        a = t0 * 1e-9
        b = t1 * 1e-9
        c = t2 * 1e-9
        if t1 > t0:
            self.amps = self._integrate(a, b)[1] / (b - a)
        if t2 > t1:
            self.volts = self._integrate(b, c)[0] / (c - b)
        self.vi = self.volts * self.amps


class _Piecewise(Scenario):
    """Voltage and current constant within each segment: level(k) -> (volts, amps)."""

    def __init__(self, seed):
        Scenario.__init__(self)
        self.seed = seed
        self._k = None
        self._v = 0.0
        self._i = 0.0

    def level(self, k):
        raise NotImplementedError

    def _seg(self, k, a, b):
        v, i = self.level(k)
        d = b - a
        return v * d, i * d, v * i * d

    def conv(self, t0, t1, t2):
        k = t0 // self._seg_ns
        if t2 > (k + 1) * self._seg_ns:  # the cycle straddles a step
            Scenario.conv(self, t0, t1, t2)
            return
        if k != self._k:
            self._enter(k)
        self.volts = self._v
        self.amps = self._i
        self.vi = self._vi

    def _enter(self, k):
        self._k = k
        self._v, self._i = self.level(k)
        self._vi = self._v * self._i


class Constant(_Piecewise):
    name = "constant"
    describe = "12 V, 1.5 A, forever (18 W)"

    def __init__(self, seed=1, volts=12.0, amps=1.5):
        _Piecewise.__init__(self, seed)
        self.volts = self._v = volts
        self.amps = self._i = amps
        self.vi = volts * amps

    def level(self, k):
        return self._v, self._i

    def conv(self, t0, t1, t2):
        pass  # volts and amps never change


class Steps(_Piecewise):
    name = "steps"
    describe = "a DC load switching between 0 and 2.9 A every 3 minutes; 12.6 V supply, 0.2 ohm wiring"
    seg_s = 180
    LEVELS = (0.0, 0.12, 0.45, 0.9, 1.5, 2.2, 2.9)

    def level(self, k):
        i = self.LEVELS[_mix(self.seed, k) % len(self.LEVELS)]
        return 12.6 - 0.2 * i, i


class Battery(_Piecewise):
    """A 12.8 V (LiFePO4) battery whose current changes every seg_s seconds, uniformly in [lo, hi] amps;
    negative is discharging (export)."""

    def __init__(self, seed, name, lo, hi, seg_s, describe):
        self.name = name
        self.seg_s = seg_s
        self.describe = describe
        self._lo = lo
        self._span = hi - lo
        _Piecewise.__init__(self, seed)

    def level(self, k):
        i = self._lo + self._span * _unit(self.seed, k)
        return 13.1 + 0.05 * i, i


class SolarDay(Scenario):
    name = "solar-day"
    describe = ("a solar panel: dark 18:00-06:00, a sin^2 bell peaking at 2.5 A at noon on a ~18 V MPPT bus, "
                "passing clouds in 2-minute steps; repeats daily")
    seg_s = 120
    SUNRISE_S = 6 * 3600
    DAYLIGHT_S = 12 * 3600
    PEAK_A = 2.5

    def __init__(self, seed=1, tod_s=0):
        self.phase_s = int(tod_s) % DAY_S
        Scenario.__init__(self)
        self._ph_ns = self.phase_s * 1000000000
        self.seed = seed
        self._w = math.pi / self.DAYLIGHT_S
        self._w_ns = self._w * 1e-9
        self._sinc_d = -1  # shunt window length (ns) the cached factor below is for
        self._sinc = 0.0
        self._k = None
        self._x0 = 0.0  # phase time of the segment's sunrise (x = phase time - x0)
        self._day = False
        self._c = 0.0
        self._v = 0.0
        self._pc = 0.0
        self._mo = 0

    def _segment(self, k):
        # Sunrise and sunset fall on segment boundaries (both are multiples of seg_s), so a segment is all
        # night or all day.
        day0 = (k * self.seg_s // DAY_S) * DAY_S
        tod = k * self.seg_s - day0
        self._k = k
        self._x0 = day0 + self.SUNRISE_S
        self._mo = 2 * (self._ph_ns - self._x0 * 1000000000)  # x0 + x1 = t0 + t1 + _mo (ns)
        self._day = self.SUNRISE_S <= tod < self.SUNRISE_S + self.DAYLIGHT_S
        if not self._day:
            self._c = 0.0
            self._v = 0.0
            return
        # Clouds come in spells of four segments; inside a spell each segment has its own depth.
        if _unit(self.seed, k // 4) < 0.6:
            c = 1.0
        else:
            c = 0.2 + 0.6 * _unit(self.seed ^ 0x5BD1E995, k)
        self._c = c
        self._v = 17.2 + 0.8 * c  # the MPPT voltage sags a little under cloud
        self._pc = self.PEAK_A * c

    def _seg(self, k, a, b):
        if k != self._k:
            self._segment(k)
        if not self._day:
            return 0.0, 0.0, 0.0
        # Integral of sin^2(w x) over [x0, x1] = d/2 - cos(w (x0 + x1)) sin(w d) / (2 w), d = x1 - x0: no
        # cancellation between large antiderivative values, so short windows stay exact.
        w = self._w
        d = b - a
        m = a + b + 2.0 * (self.phase_s - self._x0)
        si = self._pc * (0.5 * d - math.cos(w * m) * math.sin(w * d) / (2.0 * w))
        return self._v * d, si, self._v * si

    def conv(self, t0, t1, t2):
        k = (t0 + self._ph_ns) // self._seg_ns
        if t2 + self._ph_ns > (k + 1) * self._seg_ns:
            Scenario.conv(self, t0, t1, t2)
            return
        if k != self._k:
            self._segment(k)
        if not self._day:
            self.volts = self.amps = self.vi = 0.0
            return
        self._daylight(t0, t1)

    def _daylight(self, t0, t1):
        if t1 - t0 != self._sinc_d:
            self._set_sinc(t1 - t0)
        # Mean of sin^2(w x) over [x0, x1] = 1/2 - cos(w (x0 + x1)) * sin(w d) / (2 w d), d = x1 - x0; the
        # last factor depends only on the window length, the same every cycle. (Step by step: a deep
        # expression would push the frame onto the heap.)
        t0 = _cos(self._w_ns * (t0 + t1 + self._mo))
        t0 = self._pc * (0.5 - t0 * self._sinc)
        self.volts = self._v
        self.amps = t0
        self.vi = self._v * t0

    def _set_sinc(self, d):
        wd = self._w_ns * d
        self._sinc = math.sin(wd) / (2.0 * wd)
        self._sinc_d = d


class RandomWalk(Scenario):
    name = "random-walk"
    describe = ("a noisy DC load: a mean-reverting random walk (knots every second, linear between them) "
                "between 0.05 and 3.0 A, with per-knot jitter, on a 12.4 V supply with 0.25 ohm wiring")
    seg_s = 1
    LO = 0.05
    HI = 3.0
    MEAN = 1.2
    STEP = 0.06
    PULL = 0.002  # mean reversion per knot
    JITTER = 0.04
    V0 = 12.4
    R = 0.25
    _CP_SHIFT = 12  # a checkpoint of the walk every 4096 knots, for random access

    def __init__(self, seed=1):
        Scenario.__init__(self)
        self.seed = seed
        self._cp = [self.MEAN]  # walk state at knot m << _CP_SHIFT
        self._kc = 0  # cursor: walk state _wc at knot _kc
        self._wc = self.MEAN
        self._k = None
        self._i0 = self._i1 = self._sh = self._a0 = self._rsh = 0.0
        self._base = 0
        self._pk = None  # the previous segment, kept for a cycle that straddles a knot
        self._pi0 = self._pi1 = 0.0

    def _walk_to(self, n):
        if n < self._kc:
            m = n >> self._CP_SHIFT
            self._kc = m << self._CP_SHIFT
            self._wc = self._cp[m]
        k = self._kc
        w = self._wc
        seed = self.seed
        cp = self._cp
        while k < n:
            w += self.PULL * (self.MEAN - w) + self.STEP * (2.0 * _unit(seed, k) - 1.0)
            if w < self.LO:
                w = 2 * self.LO - w
            elif w > self.HI:
                w = 2 * self.HI - w
            k += 1
            if not k & ((1 << self._CP_SHIFT) - 1) and (k >> self._CP_SHIFT) == len(cp):
                cp.append(w)
        self._kc = k
        self._wc = w
        return w

    def knot(self, n):
        """Current (amps) at knot n: the walk plus that knot's jitter, kept inside [LO, HI]."""
        i = self._walk_to(n) + self.JITTER * (2.0 * _unit(self.seed ^ 0x2545F491, n) - 1.0)
        if i < self.LO:
            return self.LO
        if i > self.HI:
            return self.HI
        return i

    def _segment(self, k):
        # Only ever step forward or back by one segment in the hot path: keep the previous segment so a
        # cycle straddling a knot never sends the walk back to a checkpoint.
        pk, pi0, pi1 = self._pk, self._pi0, self._pi1
        self._pk, self._pi0, self._pi1 = self._k, self._i0, self._i1
        if k == pk:
            i0, i1 = pi0, pi1
        elif self._k is not None and k == self._k + 1:
            i0 = self._i1
            i1 = self.knot(k + 1)
        else:
            i0 = self.knot(k)
            i1 = self.knot(k + 1)
        self._k = k
        self._i0 = i0
        self._i1 = i1
        # For conv(): i(t) = i0 + sh * (2 t - 2 k e9), v(t) = a0 - rsh * (2 t - 2 k e9), t in ns.
        sh = (i1 - i0) * 0.5e-9
        self._sh = sh
        self._a0 = self.V0 - self.R * i0
        self._rsh = self.R * sh
        self._base = 2 * k * 1000000000

    def _seg(self, k, a, b):
        if k != self._k:
            self._segment(k)
        s = self._i1 - self._i0
        ia = self._i0 + s * (a - k)
        ib = self._i0 + s * (b - k)
        d = b - a
        si = 0.5 * (ia + ib) * d
        sii = (ia * ia + ia * ib + ib * ib) * d / 3.0
        return self.V0 * d - self.R * si, si, self.V0 * si - self.R * sii

    def _iint(self, a, b):
        """Integral of i over [a, b] (integer ns, a < b), in A*ns: the cycle-straddles-a-knot path."""
        s = 0.0
        while a < b:
            if a // 1000000000 != self._k:
                self._segment(a // 1000000000)
            e = (a // 1000000000 + 1) * 1000000000
            if e > b:
                e = b
            s += (e - a) * (self._i0 + self._sh * (a + e - self._base))
            a = e
        return s

    def conv(self, t0, t1, t2):
        k = t0 // 1000000000
        if k != self._k:
            self._segment(k)
        if t2 > (k + 1) * 1000000000:  # the cycle crosses a knot
            self._straddle(t0, t1, t2)
            return
        # Averages of a linear function are its values at the window midpoints.
        self.amps = self._i0 + self._sh * (t0 + t1 - self._base)
        self.volts = self._a0 - self._rsh * (t1 + t2 - self._base)
        self.vi = self.volts * self.amps

    def _straddle(self, t0, t1, t2):
        self.amps = self._iint(t0, t1) / (t1 - t0)
        self.volts = self.V0 - self.R * self._iint(t1, t2) / (t2 - t1)
        self.vi = self.volts * self.amps


def make(name, seed=1, tod_s=None):
    """A scenario by name. tod_s: the time of day (seconds past midnight) at scenario time 0, for solar-day;
    by default the simulation starts at sunrise (06:00), so even a short run sees the sun. To have the sun
    follow a simulated clock, pass its time of day (e.g. start_unix_s % 86400 for UTC)."""
    if name == "constant":
        return Constant(seed)
    if name == "steps":
        return Steps(seed)
    if name == "solar-day":
        return SolarDay(seed, SolarDay.SUNRISE_S if tod_s is None else tod_s)
    if name == "random-walk":
        return RandomWalk(seed)
    if name == "export":
        return Battery(seed, name, -3.0, -0.5, 120, "a battery discharging into a grid-tie inverter: "
                       "-0.5 .. -3 A, changing every 2 minutes")
    if name == "mixed":
        return Battery(seed, name, -2.5, 2.5, 60, "a battery charged and discharged in turn: -2.5 .. +2.5 A, "
                       "changing every minute")
    raise ValueError("unknown scenario %r; choose one of: %s" % (name, ", ".join(NAMES)))
