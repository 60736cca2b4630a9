# meter/metrology.py under the real MicroPython: viper kernel == pure twin (bit for bit), every kernel
# intermediate inside signed 32 bits (instrumented run of the shipped twin), allocation-free acquisition,
# and energy against exact integer references.
from array import array

import micropython
from checked32 import ChkSeq
from mptest import eq, raises

import meter.metrology as mt
from meter.clock import TICKS_MASK, TICKS_PERIOD
from meter.metrology import Metrology, integrate, integrate_py, new_state

DEFAULT_CYCLE = 68630   # INA219 shunt 128x (68.10 ms) + bus 12-bit (0.532 ms)
R_100M = 100000         # 0.1 ohm in micro-ohms


class Rng:
    """xorshift32: the same stream on every port."""

    def __init__(self, seed):
        self.x = seed & 0xFFFFFFFF or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        return self.next() % n

    def between(self, lo, hi):
        return lo + self.below(hi - lo + 1)


def gen(rng, n, cycle, t0):
    """n readings: full-range shunt (both signs) and bus, dt mostly one cycle with jitter, sometimes a gap of
    a few cycles, a huge gap (up to 2^30 - 1 us, beyond the hold limit), a repeat tick, or 1.5-cycle edges."""
    sh = array("h", bytes(2 * n))
    bus = array("H", bytes(2 * n))
    tk = array("i", bytes(4 * n))
    t = t0
    for i in range(n):
        k = rng.below(100)
        if k < 70:
            dt = cycle + rng.between(-cycle // 50, cycle // 50)
        elif k < 85:
            dt = rng.between(2, 9) * cycle + rng.between(-cycle // 2, cycle // 2)
        elif k < 90:
            dt = rng.between(mt.HOLD_MAX_US - 3, TICKS_MASK)
        elif k < 93:
            dt = 0
        elif k < 96:
            dt = cycle + (cycle >> 1) + rng.between(-1, 1)
        else:
            dt = rng.between(1, 3)
        t = (t + dt) & TICKS_MASK
        tk[i] = t
        k = rng.below(10)
        if k == 0:
            sh[i] = mt.SHUNT_MIN
        elif k == 1:
            sh[i] = mt.SHUNT_MAX
        else:
            sh[i] = rng.between(mt.SHUNT_MIN, mt.SHUNT_MAX)
        bus[i] = mt.BUS_MAX if rng.below(5) == 0 else rng.between(0, mt.BUS_MAX)
    return sh, bus, tk


def feed(m, sh, bus, tk):
    for i in range(len(tk)):
        m.add(sh[i], bus[i], tk[i])


# -- an instrumented int: every arithmetic result must lie inside signed 32 bits --------------------------
def checked_run(st, sh, bus, tk, n):
    """Run the shipped twin with every value instrumented; the plain twin on a copy must agree bit for bit."""
    plain = array("i", st)
    integrate_py(plain, sh, bus, tk, n)
    integrate_py(ChkSeq(st), ChkSeq(sh), ChkSeq(bus), ChkSeq(tk), n)
    eq(bytes(st), bytes(plain), "checked twin == twin")


GROWING = (mt.ST_IMP_TOP, mt.ST_EXP_TOP, mt.ST_COVERED_US, mt.ST_MISSED, mt.ST_ELAPSED_LO,
           mt.ST_ELAPSED_HI, mt.ST_SAMPLES, mt.ST_CLAMPED)


def drain(st):
    """What the front-end does between batches (the kernel's precondition); returns the drained words."""
    out = [st[k] for k in GROWING]
    for k in GROWING:
        st[k] = 0
    return out


def assert_drainable(st, what):
    for k in GROWING:
        assert 0 <= st[k] < mt.DRAIN_LIMIT, "%s: state word %d = %d not below 2^29" % (what, k, st[k])
    assert 0 <= st[mt.ST_IMP_LO] < 16384 and 0 <= st[mt.ST_IMP_MID] < 16384, what
    assert 0 <= st[mt.ST_EXP_LO] < 16384 and 0 <= st[mt.ST_EXP_MID] < 16384, what
    assert 0 <= st[mt.ST_CARRY] < 4 and 0 <= st[mt.ST_LAST_TICK] <= TICKS_MASK, what


def worst_streams():
    """Streams of consecutive BATCH_MAX-sample batches that push each word to its bound: extreme |p| of both
    signs, dt = 2^30 - 1 (clamped), dt at the hold limit, and gaps at the shortest and longest cycle."""
    n = mt.BATCH_MAX
    out = []
    for cycle in (mt.CYCLE_US_MIN, DEFAULT_CYCLE, mt.CYCLE_US_MAX):
        for dt in (TICKS_MASK, mt.HOLD_MAX_US + 3, mt.HOLD_MAX_US, cycle + (cycle >> 1), cycle * 3 // 2 + 1):
            for s in (mt.SHUNT_MIN, mt.SHUNT_MAX):
                sh = array("h", [s] * n)
                bus = array("H", [mt.BUS_MAX] * n)
                tks = [array("i", [(TICKS_MASK - 5 + (b * n + i) * dt) & TICKS_MASK for i in range(n)])
                       for b in range(3)]
                out.append((cycle, sh, bus, tks))
    return out


# -- kernel equivalence -----------------------------------------------------------------------------------
def test_names():
    """The state layout is fully named, and on MicroPython the default kernel is the viper one."""
    assert integrate is not integrate_py, "on MicroPython the default kernel must be the viper one"
    eq(len(new_state(DEFAULT_CYCLE)), mt.ST_WORDS, "state words")
    eq(mt.ST_WORDS, max(mt.ST_IMP_LO, mt.ST_BUS_MAX, mt.ST_CLAMPED) + 1, "names cover the state")


def test_eq_random():
    """viper == twin bit for bit on seeded random data (tick wrap, both signs, gaps, clamps, batch sizes)."""
    for seed, cycle, batch in ((1, DEFAULT_CYCLE, 64), (7, mt.CYCLE_US_MIN, 256), (99, mt.CYCLE_US_MAX, 13),
                               (2024, 1064, 1), (31337, DEFAULT_CYCLE, 256)):
        rng = Rng(seed)
        sh, bus, tk = gen(rng, 1500, cycle, TICKS_PERIOD - 3 * cycle)
        wraps = sum(1 for i in range(1, len(tk)) if tk[i] < tk[i - 1])
        assert wraps > 0, "seed %d: data must cross the 2^30 wrap" % seed
        mv = Metrology(cycle, R_100M, batch=batch, kernel=integrate)
        mp = Metrology(cycle, R_100M, batch=batch, kernel=integrate_py)
        for i in range(len(tk)):
            mv.add(sh[i], bus[i], tk[i])
            mp.add(sh[i], bus[i], tk[i])
            if mv.pending == 0:
                eq(bytes(mv.state), bytes(mp.state), "seed %d: state after sample %d" % (seed, i))
                eq(bytes(mv._fe), bytes(mp._fe), "seed %d: front-end after sample %d" % (seed, i))
        eq(mv.take_uwh(), mp.take_uwh(), "seed %d uWh" % seed)
        eq(mv.pending_raw(), mp.pending_raw(), "seed %d remainder" % seed)
        for name in ("samples", "covered_us", "elapsed_us", "missed", "clamped"):
            eq(getattr(mv, name), getattr(mp, name), "seed %d %s" % (seed, name))
        eq(mv.minmax(), mp.minmax(), "seed %d min/max" % seed)
        assert mv.missed > 0 and mv.clamped > 0, "seed %d exercised gaps and the hold clamp" % seed


def test_eq_extreme():
    """viper == twin on the worst-case streams (max |shunt| x max bus x max dt), drained between batches."""
    for cycle, sh, bus, tks in worst_streams():
        sv = new_state(cycle)
        sp = new_state(cycle)
        for tk in tks:
            integrate(sv, sh, bus, tk, len(tk))
            integrate_py(sp, sh, bus, tk, len(tk))
            eq(bytes(sv), bytes(sp), "extreme batch, cycle %d" % cycle)
            drain(sv)
            drain(sp)


def test_i32_worst():
    """Every intermediate of the kernel's operations stays in signed 32 bits on the worst-case streams, and
    every word the front-end drains stays below 2^29 (an ESP32 small int after adding a 28-bit limb)."""
    most = {}
    for cycle, sh, bus, tks in worst_streams():
        st = new_state(cycle)
        for tk in tks:
            checked_run(st, sh, bus, tk, len(tk))
            assert_drainable(st, "worst batch cycle %d" % cycle)
            for k, v in zip(GROWING, drain(st)):
                most[k] = max(most.get(k, 0), v)
    # The streams really reach the documented bounds (BATCH_MAX intervals in a continuing batch).
    n = mt.BATCH_MAX
    u_max = (mt.HOLD_MAX_US + 3) >> 2
    eq(most[mt.ST_MISSED], n * ((TICKS_MASK + (mt.CYCLE_US_MIN >> 1)) // mt.CYCLE_US_MIN - 1), "missed bound")
    eq(most[mt.ST_COVERED_US], n * (mt.CYCLE_US_MAX * 3 // 2), "covered bound")
    eq(most[mt.ST_SAMPLES], n, "samples bound")
    for k in (mt.ST_IMP_TOP, mt.ST_EXP_TOP):
        assert n * u_max * 99 < most[k] * 100 <= n * u_max * 100, "top %d near its bound: %d" % (k, most[k])


def test_i32_random():
    """The instrumented twin stays in signed 32 bits on seeded random batches."""
    for seed, cycle in ((3, DEFAULT_CYCLE), (5, mt.CYCLE_US_MIN), (11, mt.CYCLE_US_MAX)):
        rng = Rng(seed)
        sh, bus, tk = gen(rng, mt.BATCH_MAX, cycle, TICKS_PERIOD - 1000)
        st = new_state(cycle)
        for _ in range(3):
            checked_run(st, sh, bus, tk, len(tk))
            assert_drainable(st, "random seed %d" % seed)
            drain(st)


def test_i32_trips():
    """The instrument works: a batch longer than BATCH_MAX of clamped gaps overflows and is caught."""
    n = 1100
    sh = array("h", [mt.SHUNT_MAX] * n)
    bus = array("H", [mt.BUS_MAX] * n)
    tk = array("i", [(i * TICKS_MASK) & TICKS_MASK for i in range(n)])
    e = raises(AssertionError, checked_run, new_state(mt.CYCLE_US_MIN), sh, bus, tk, n)
    assert "overflow" in str(e), str(e)


# -- semantics ---------------------------------------------------------------------------------------------
def one(cycle, readings, kernel=integrate):
    st = new_state(cycle)
    n = len(readings)
    sh = array("h", [r[0] for r in readings])
    bus = array("H", [r[1] for r in readings])
    tk = array("i", [r[2] for r in readings])
    kernel(st, sh, bus, tk, n)
    return st


def raw(st, base):
    return (st[base + 2] << 28) + (st[base + 1] << 14) + st[base]


def test_first_tick():
    """The first sample only sets the last tick (and counts in samples and min/max)."""
    for kernel in (integrate, integrate_py):
        st = one(DEFAULT_CYCLE, [(1000, 3000, 12345)], kernel)
        eq(st[mt.ST_LAST_TICK], 12345, "last tick")
        eq(st[mt.ST_STARTED], 1, "started")
        eq(st[mt.ST_SAMPLES], 1, "samples")
        eq(raw(st, mt.ST_IMP_LO) + raw(st, mt.ST_EXP_LO), 0, "no energy without an interval")
        eq(st[mt.ST_COVERED_US] + st[mt.ST_ELAPSED_LO] + st[mt.ST_ELAPSED_HI], 0, "no time")
        eq((st[mt.ST_SHUNT_MIN], st[mt.ST_SHUNT_MAX], st[mt.ST_BUS_MIN], st[mt.ST_BUS_MAX]),
           (1000, 1000, 3000, 3000), "min/max include the first sample")


def test_wrap():
    """dt is right across the 2^30 wrap; the sub-4-us remainder is carried, no time is lost."""
    c = DEFAULT_CYCLE
    t0 = TICKS_MASK - 10
    dts = (c + 1, c + 2, c - 1, c + 3)
    ticks = [t0]
    for d in dts:
        ticks.append((ticks[-1] + d) & TICKS_MASK)
    assert ticks[1] < ticks[0], "second tick wrapped"
    for kernel in (integrate, integrate_py):
        st = one(c, [(2000, 5000, t) for t in ticks], kernel)
        total = sum(dts)
        eq(st[mt.ST_ELAPSED_LO] + (st[mt.ST_ELAPSED_HI] << 28), total, "elapsed across wrap")
        eq(st[mt.ST_COVERED_US], total, "covered")
        eq(st[mt.ST_CARRY], total % 4, "carried sub-4us remainder")
        eq(raw(st, mt.ST_IMP_LO), 2000 * 5000 * (total // 4), "constant power: exact to the carry")


def test_export():
    """Negative current accumulates as export, positive as import."""
    for kernel in (integrate, integrate_py):
        readings = [(0, 0, 0), (-3000, 3000, 40000), (3000, 3000, 80000), (0, 3000, 120000)]
        st = one(DEFAULT_CYCLE, readings, kernel)
        eq(raw(st, mt.ST_EXP_LO), 3000 * 3000 * 10000, "export")
        eq(raw(st, mt.ST_IMP_LO), 3000 * 3000 * 10000, "import")
        eq((st[mt.ST_SHUNT_MIN], st[mt.ST_SHUNT_MAX]), (-3000, 3000), "signed min/max")


def test_missed():
    """Gaps over 1.5 cycles count round(dt/cycle) - 1 missed cycles, cover one cycle, hold power."""
    c = 1000
    cases = (  # dt, missed, covered
        (c * 3 // 2, 0, c * 3 // 2),       # exactly 1.5 cycles: not a gap
        (c * 3 // 2 + 1, 1, c),            # just over: round(1.501) - 1 = 1
        (c * 5 // 2 - 1, 1, c),            # round(2.499) = 2
        (c * 5 // 2, 2, c),                # round half up: 3 - 1
        (c * 10, 9, c),
    )
    for dt, missed, covered in cases:
        for kernel in (integrate, integrate_py):
            st = one(c, [(1, 1, 500), (-100, 200, 500 + dt)], kernel)
            eq(st[mt.ST_MISSED], missed, "missed for dt %d" % dt)
            eq(st[mt.ST_COVERED_US], covered, "covered for dt %d" % dt)
            eq(raw(st, mt.ST_EXP_LO), 100 * 200 * (dt // 4), "power held over the full dt %d" % dt)
            eq(st[mt.ST_CARRY], dt % 4, "carry for dt %d" % dt)
    odd = 1001  # odd cycle: 1.5 cycles is 1501.5, so 1501 is not a gap and 1502 is
    for dt, missed in ((1501, 0), (1502, 1), (2502, 1), (2503, 2)):
        eq(one(odd, [(1, 1, 0), (1, 1, dt)])[mt.ST_MISSED], missed, "odd cycle dt %d" % dt)


def test_hold():
    """Intervals beyond HOLD_MAX_US get energy for HOLD_MAX_US only and are counted."""
    c = DEFAULT_CYCLE
    for dt in (mt.HOLD_MAX_US, mt.HOLD_MAX_US + 1, TICKS_MASK):
        for kernel in (integrate, integrate_py):
            st = one(c, [(0, 0, 100), (4000, 3000, (100 + dt) & TICKS_MASK)], kernel)
            held = dt if dt <= mt.HOLD_MAX_US else mt.HOLD_MAX_US
            eq(raw(st, mt.ST_IMP_LO), 4000 * 3000 * (held // 4), "energy held at most HOLD_MAX_US")
            eq(st[mt.ST_CLAMPED], 1 if dt > mt.HOLD_MAX_US else 0, "clamped count")
            eq(st[mt.ST_ELAPSED_LO] + (st[mt.ST_ELAPSED_HI] << 28), dt, "elapsed keeps the whole gap")
            eq(st[mt.ST_MISSED], (dt + c // 2) // c - 1, "missed counts the whole gap")


def test_mask():
    """Out-of-contract array contents cannot break the bounds: bus keeps 13 bits, ticks 30 bits."""
    st = new_state(DEFAULT_CYCLE)
    sp = new_state(DEFAULT_CYCLE)
    sh = array("h", [-1, -32768])
    bus = array("H", [0xFFFF, 0x2000 | 7])
    tk = array("i", [5 | (1 << 30), 1005])
    integrate(st, sh, bus, tk, 2)
    integrate_py(sp, sh, bus, tk, 2)
    eq(bytes(st), bytes(sp), "viper == twin")
    eq(st[mt.ST_BUS_MAX], 8191, "bus masked to 13 bits")
    eq(raw(st, mt.ST_EXP_LO), 32768 * 7 * 250, "sign-extended shunt x masked bus over 1000 us")


# -- front-end --------------------------------------------------------------------------------------------
def test_no_alloc():
    """add() and flush() on the viper path run under micropython.heap_lock()."""
    rng = Rng(4242)
    sh, bus, tk = gen(rng, 1200, DEFAULT_CYCLE, TICKS_PERIOD - 5 * DEFAULT_CYCLE)
    ref = Metrology(DEFAULT_CYCLE, R_100M, batch=64, kernel=integrate_py)
    feed(ref, sh, bus, tk)
    ref.flush()
    m = Metrology(DEFAULT_CYCLE, R_100M, batch=64)
    m.add(sh[0], bus[0], tk[0])
    m.flush()
    locked = False
    micropython.heap_lock()
    try:
        try:
            bytearray(16)
        except MemoryError:
            locked = True
        for i in range(1, len(tk)):
            m.add(sh[i], bus[i], tk[i])
        m.flush()
    finally:
        micropython.heap_unlock()
    assert locked, "heap_lock is real: an allocation inside it fails"
    assert any(m._fe[j] for j in range(1, len(m._fe), 2)), "a front-end limb carry ran under the lock"
    eq(bytes(m.state), bytes(ref.state), "locked run state")
    eq(bytes(m._fe), bytes(ref._fe), "locked run front-end")
    eq(m.take_uwh(), ref.take_uwh(), "locked run energy")
    for j in range(len(m._fe)):
        assert 0 <= m._fe[j] < 1 << 30, "front-end word %d is an ESP32 small int" % j


def test_12wh():
    """1 A at 12 V for one hour on 0.1 ohm is exactly 12 Wh, across several tick wraps."""
    # 1 A through 0.1 ohm = 100 mV = 10000 counts; 12 V = 3000 counts; ticks wrap several times in an hour.
    c = DEFAULT_CYCLE
    m = Metrology(c, R_100M)
    t = TICKS_PERIOD - 12345
    hour = 3600 * 1000000
    now = 0
    m.add(10000, 3000, t)
    while now < hour:
        step = c if now + c <= hour else hour - now
        now += step
        m.add(10000, 3000, (t + now) & TICKS_MASK)
    eq(m.elapsed_us, hour, "elapsed")
    eq(m.take_uwh(), (12000000, 0), "12 Wh import, nothing export")
    eq(m.pending_raw(), (0, 0), "nothing left over")
    eq(m.coverage_ppm(), 1000000, "full coverage")
    eq(m.extremes(), (1000, 1000, 12000, 12000), "min/max in mA/mV")
    eq(m.take_uwh(), (0, 0), "a second take is empty")


def test_odd_shunt():
    """An awkward shunt (22500 * R raw units per uWh): taken uWh + remainder == exact raw energy."""
    r = 100003
    c = 1000
    m = Metrology(c, r, batch=17)
    got = 0
    t = 0
    m.add(-7777, 4321, t)
    steps = 0
    for k in range(1, 6001):
        t = (t + c + (k % 7)) & TICKS_MASK
        steps += c + (k % 7)
        m.add(-7777, 4321, t)
        if k % 1000 == 0:
            imp, exp = m.take_uwh()
            eq(imp, 0, "no import")
            got += exp
            assert 0 <= m.pending_raw()[1] < mt.UWH_RAW_PER_UOHM * r, "remainder below one uWh"
    raw_total = 7777 * 4321 * (steps // 4)
    pend = m.pending_raw()[1]
    eq(got * mt.UWH_RAW_PER_UOHM * r + pend, raw_total, "taken uWh + raw remainder == exact raw energy")
    eq(got, raw_total // (mt.UWH_RAW_PER_UOHM * r), "whole uWh")
    assert got > 0 and pend > 0, "both parts exercised"


def test_stats():
    """samples, elapsed, covered, missed, coverage, min/max in raw counts and mA/mV, reset_stats."""
    c = 1000
    m = Metrology(c, R_100M, batch=3)
    ticks = (0, 1000, 2000, 6000, 7000, 7000)  # gap of 4 cycles: 3 missed, 1 cycle covered
    settled = [m.add(-1000 + 500 * i, 2500 + i, t) for i, t in enumerate(ticks)]
    eq(settled, [False, False, True, False, False, True], "add() says when a batch ran")
    eq(m.pending, 0, "nothing pending after a full batch")
    eq(m.samples, 6, "samples")
    eq(m.elapsed_us, 7000, "elapsed")
    eq(m.covered_us, 4000, "covered")
    eq(m.missed, 3, "missed")
    eq(m.coverage_ppm(), 4000 * 1000000 // 7000, "coverage")
    eq(m.minmax(), (-1000, 1500, 2500, 2505), "raw min/max")
    eq(m.extremes(), (-100, 150, 10000, 10020), "mA/mV")
    eq((m.ma(-1000), m.mv(2505)), (-100, 10020), "conversion helpers")
    m.reset_stats()
    eq((m.samples, m.elapsed_us, m.covered_us, m.missed), (0, 0, 0, 0), "reset")
    eq((m.minmax(), m.extremes()), (None, None), "no min/max before a reading")
    eq(m.coverage_ppm(), 0, "no interval yet")
    m.add(0, 0, 8000)
    eq((m.elapsed_us, m.covered_us), (1000, 1000), "timing continues after reset_stats")
    m = Metrology(DEFAULT_CYCLE, 3000)  # 3 mohm: 10 uV / 3 mohm = 3.333 mA per count
    eq([m.ma(x) for x in (0, 1, 2, -1, -2, 3)], [0, 3, 7, -3, -7, 10], "nearest mA")


def test_resync():
    """resync(): the pause before the next sample is neither elapsed, covered nor given energy."""
    m = Metrology(1000, R_100M)
    m.add(100, 100, 0)
    m.add(100, 100, 1000)
    m.resync()
    m.add(100, 100, 500000)
    m.add(100, 100, 501000)
    eq((m.elapsed_us, m.covered_us, m.missed), (2000, 2000, 0), "pause not counted")
    eq(m.pending_raw()[0], 2 * 100 * 100 * 250, "energy of the two intervals only")


def test_bad_input():
    """Out-of-range configuration and readings raise ValueError and store nothing."""
    raises(ValueError, Metrology, mt.CYCLE_US_MIN - 1, R_100M)
    raises(ValueError, Metrology, mt.CYCLE_US_MAX + 1, R_100M)
    raises(ValueError, Metrology, DEFAULT_CYCLE, 0)
    raises(ValueError, Metrology, DEFAULT_CYCLE, R_100M, 0)
    raises(ValueError, Metrology, DEFAULT_CYCLE, R_100M, mt.BATCH_MAX + 1)
    m = Metrology(DEFAULT_CYCLE, R_100M)
    raises(ValueError, m.add, mt.SHUNT_MAX + 1, 0, 0)
    raises(ValueError, m.add, 0, mt.BUS_MAX + 1, 0)
    raises(ValueError, m.add, 0, 0, TICKS_PERIOD)
    raises(ValueError, m.add, 0, -1, 0)
    eq(m.pending, 0, "nothing stored")
