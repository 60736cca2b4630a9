"""The pure twin of the metrology kernel (firmware/meter/metrology.py, imported under CPython) against exact
references: energy as an exact Fraction of sum(shunt x bus x dt) in uWh, time statistics from their
definitions, and every intermediate of the kernel's operations inside signed 32 bits (hypothesis-driven)."""

import sys
from array import array
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meter.metrology as mt
from meter.clock import TICKS_MASK, TICKS_PERIOD
from meter.metrology import Metrology, integrate, integrate_py, new_state

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
from checked32 import ChkSeq  # noqa: E402 - the firmware test's own 32-bit checker, shared

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Physical units, stated independently of the module: shunt LSB 10 uV, bus LSB 4 mV, ticks in us, R in uohm,
# 1 uWh = 3.6e-3 J.  E[uWh] = sum(shunt*bus*dt) * 1e-5 V * 4e-3 V * 1e-6 s / (R * 1e-6 ohm) / 3.6e-3 J.
UWH_PER_COUNT2_US = Fraction(1, 10**5) * Fraction(4, 10**3) * Fraction(1, 10**6) / Fraction(36, 10**4)


def uwh_per_count2_us(r_uohm):
    return UWH_PER_COUNT2_US / Fraction(r_uohm, 10**6)


@st.composite
def streams(draw, min_len=1, max_len=400):
    """cycle, shunt resistance, batch, start tick, readings [(shunt, bus, dt)], take points."""
    cycle = draw(st.one_of(st.sampled_from([mt.CYCLE_US_MIN, 68630, mt.CYCLE_US_MAX]),
                           st.integers(mt.CYCLE_US_MIN, mt.CYCLE_US_MAX)))
    dt = st.one_of(
        st.integers(max(0, cycle - cycle // 20), cycle + cycle // 20),        # normal cycles with jitter
        st.integers(0, 12 * cycle),                                           # short reads and gaps
        st.integers(cycle + (cycle >> 1) - 2, cycle + (cycle >> 1) + 2),      # the 1.5-cycle edge
        st.integers(mt.HOLD_MAX_US - 4, mt.HOLD_MAX_US + 4),                  # the hold edge
        st.integers(0, TICKS_MASK),                                           # anything a tick can say
    )
    shunt = st.one_of(st.integers(mt.SHUNT_MIN, mt.SHUNT_MAX),
                      st.sampled_from([mt.SHUNT_MIN, mt.SHUNT_MAX, 0]))
    bus = st.one_of(st.integers(0, mt.BUS_MAX), st.just(mt.BUS_MAX))
    readings = draw(st.lists(st.tuples(shunt, bus, dt), min_size=min_len, max_size=max_len))
    r_uohm = draw(st.one_of(st.integers(1, 10**7), st.sampled_from([100000, 100003, 1000, 1])))
    batch = draw(st.integers(1, mt.BATCH_MAX))
    t0 = draw(st.one_of(st.integers(0, TICKS_MASK), st.integers(TICKS_PERIOD - 10**6, TICKS_MASK)))
    takes = draw(st.sets(st.integers(0, max(0, len(readings) - 1)), max_size=6))
    return cycle, r_uohm, batch, t0, readings, takes


def ticks_of(t0, readings):
    out, t = [], t0
    for _, _, dt in readings:
        t = (t + dt) & TICKS_MASK
        out.append(t)
    return out


def run(cycle, r_uohm, batch, t0, readings, takes):
    m = Metrology(cycle, r_uohm, batch=batch)
    got = [0, 0]
    for i, ((s, b, _), t) in enumerate(zip(readings, ticks_of(t0, readings), strict=True)):
        m.add(s, b, t)
        if i in takes:
            imp, exp = m.take_uwh()
            assert imp >= 0 and exp >= 0
            got[0] += imp
            got[1] += exp
            assert all(0 <= x < m.units_per_uwh for x in m.pending_raw()), "remainder is below one uWh"
    return m, got


def test_module_imports_under_cpython_with_the_twin_as_kernel():
    assert integrate is integrate_py
    assert mt.UWH_RAW_PER_UOHM * 100000 == 2250000000  # 0.1 ohm: the figure follows from the units below
    # one raw unit (10 uV x 4 mV x 4 us) at R uohm, in uWh, times units_per_uwh, is exactly one uWh
    for r in (1, 3, 100000, 100003):
        assert uwh_per_count2_us(r) * 4 * Metrology(68630, r).units_per_uwh == 1


@SETTINGS
@given(streams())
def test_energy_is_the_exact_integral_with_the_carried_remainder(case):
    """Import and export in uWh (taken + pending remainder, as Fractions) equal the exact integral
    sum(shunt x bus x held dt) -- each interval's sub-4-us tail carried into the next interval, as
    documented -- and nothing is lost in limbs, drains or the uWh conversion."""
    cycle, r_uohm, batch, t0, readings, takes = case
    m, got = run(*case)
    pend = m.pending_raw()
    meter = [Fraction(got[d]) + Fraction(pend[d], m.units_per_uwh) for d in (0, 1)]

    exact = [Fraction(0), Fraction(0)]
    carried = [Fraction(0), Fraction(0)]
    c_prev, held_sum = 0, 0
    k = uwh_per_count2_us(r_uohm)
    for s, b, dt in readings[1:]:                       # the first reading only starts the clock
        held = min(dt, mt.HOLD_MAX_US)
        held_sum += held
        c = held_sum % 4                                # sub-4-us time not yet integrated after this interval
        p = s * b
        d = 0 if p > 0 else 1
        exact[d] += abs(p) * held * k
        carried[d] += abs(p) * (c_prev - c) * k         # tail in from the previous interval, out to the next
        c_prev = c
    assert meter == [exact[0] + carried[0], exact[1] + carried[1]]
    assert m.state[mt.ST_CARRY] == held_sum % 4


@SETTINGS
@given(streams(), st.sampled_from([0, 1, 2, 3]))
def test_constant_power_is_exact_to_the_final_carry(case, skew):
    cycle, r_uohm, batch, t0, readings, takes = case
    s, b = readings[0][0], readings[0][1]
    flat = [(s, b, dt) for _, _, dt in readings] + [(s, b, skew)]
    m, got = run(cycle, r_uohm, batch, t0, flat, takes)
    held = sum(min(dt, mt.HOLD_MAX_US) for _, _, dt in flat[1:])
    d = 0 if s * b > 0 else 1
    total = Fraction(got[d]) + Fraction(m.pending_raw()[d], m.units_per_uwh)
    assert total == abs(s * b) * (held - held % 4) * uwh_per_count2_us(r_uohm)
    assert got[1 - d] == 0 and m.pending_raw()[1 - d] == 0


@SETTINGS
@given(streams())
def test_time_statistics_follow_their_definitions(case):
    cycle, r_uohm, batch, t0, readings, takes = case
    m, _ = run(*case)
    dts = [dt for _, _, dt in readings[1:]]
    gaps = [dt for dt in dts if Fraction(dt) > Fraction(3, 2) * cycle]
    assert m.samples == len(readings)
    assert m.elapsed_us == sum(dts)
    assert m.covered_us == sum(dt for dt in dts if Fraction(dt) <= Fraction(3, 2) * cycle) + cycle * len(gaps)
    assert m.missed == sum(int(Fraction(dt, cycle) + Fraction(1, 2)) - 1 for dt in gaps)
    assert m.clamped == sum(1 for dt in dts if dt > mt.HOLD_MAX_US)
    assert 0 <= m.coverage_ppm() <= 10**6
    shunts = [s for s, _, _ in readings]
    buses = [b for _, b, _ in readings]
    assert m.minmax() == (min(shunts), max(shunts), min(buses), max(buses))
    assert m.extremes() == (m.ma(min(shunts)), m.ma(max(shunts)), 4 * min(buses), 4 * max(buses))


@settings(max_examples=300, deadline=None)
@given(st.integers(mt.SHUNT_MIN, mt.SHUNT_MAX), st.integers(1, 10**7))
def test_ma_rounds_to_nearest_half_up(counts, r_uohm):
    exact = Fraction(counts * 10**4, r_uohm)  # counts * 10 uV / R
    got = Metrology(68630, r_uohm).ma(counts)
    assert got - Fraction(1, 2) <= exact < got + Fraction(1, 2)  # nearest, a tie goes up


# -- 32-bit bounds: the shipped twin, run with every value instrumented -----------------------------------
GROWING = (mt.ST_IMP_TOP, mt.ST_EXP_TOP, mt.ST_COVERED_US, mt.ST_MISSED, mt.ST_ELAPSED_LO, mt.ST_ELAPSED_HI,
           mt.ST_SAMPLES, mt.ST_CLAMPED)


@SETTINGS
@given(streams(min_len=1, max_len=mt.BATCH_MAX), st.integers(0, (1 << 14) - 1), st.integers(0, (1 << 14) - 1),
       st.integers(0, 3), st.booleans())
def test_every_intermediate_fits_32_bits_and_drains_stay_small(case, lo, mid, carry, started):
    """From any drained state (lo/mid limbs and carry anywhere in range, started or not), one batch of up to
    BATCH_MAX readings keeps every intermediate in signed 32 bits and every drained word below 2^29."""
    cycle, _, _, t0, readings, _ = case
    state = new_state(cycle)
    for k in (mt.ST_IMP_LO, mt.ST_EXP_LO):
        state[k], state[k + 1] = lo, mid
    state[mt.ST_CARRY] = carry
    state[mt.ST_STARTED] = int(started)
    state[mt.ST_LAST_TICK] = t0
    n = len(readings)
    sh = array("h", [r[0] for r in readings])
    bus = array("H", [r[1] for r in readings])
    tk = array("i", ticks_of(t0, readings))
    plain = array("i", state)
    integrate_py(plain, sh, bus, tk, n)
    integrate_py(ChkSeq(state), ChkSeq(sh), ChkSeq(bus), ChkSeq(tk), n)
    assert state == plain
    for k in GROWING:
        assert 0 <= state[k] < mt.DRAIN_LIMIT
    for k in (mt.ST_IMP_LO, mt.ST_IMP_MID, mt.ST_EXP_LO, mt.ST_EXP_MID):
        assert 0 <= state[k] < 1 << 14


def test_worst_batch_reaches_but_respects_the_bounds():
    """BATCH_MAX continuing intervals of max |p| held for the full hold time, at the shortest cycle."""
    n = mt.BATCH_MAX
    for s in (mt.SHUNT_MIN, mt.SHUNT_MAX):
        state = new_state(mt.CYCLE_US_MIN)
        state[mt.ST_STARTED] = 1
        state[mt.ST_CARRY] = 3
        for k in (mt.ST_IMP_LO, mt.ST_EXP_LO, mt.ST_IMP_MID, mt.ST_EXP_MID):
            state[k] = (1 << 14) - 1
        tk = array("i", [((i + 1) * TICKS_MASK) & TICKS_MASK for i in range(n)])
        integrate_py(ChkSeq(state), ChkSeq(array("h", [s] * n)), ChkSeq(array("H", [mt.BUS_MAX] * n)),
                     ChkSeq(tk), n)
        u_max = (mt.HOLD_MAX_US + 3) >> 2
        top = state[mt.ST_EXP_TOP if s < 0 else mt.ST_IMP_TOP]
        assert n * u_max * 99 // 100 < top <= n * u_max < mt.DRAIN_LIMIT
        assert state[mt.ST_MISSED] == n * ((TICKS_MASK + (mt.CYCLE_US_MIN >> 1)) // mt.CYCLE_US_MIN - 1)
        assert state[mt.ST_MISSED] < mt.DRAIN_LIMIT
        assert state[mt.ST_CLAMPED] == n
