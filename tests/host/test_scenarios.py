"""Load scenarios (firmware/sim/scenarios.py) in CPython: exact integrals, the per-cycle fast path, ranges,
determinism, and the same numbers under MicroPython."""

from __future__ import annotations

import json
import math
import random
import subprocess

import pytest

from meterkit.device.toolchain import micropython_cmd, mp_env
from sim import scenarios

NAMES = scenarios.NAMES


def instant(sc, t):
    return sc.avg(t, t)


def numeric(sc, t0, t1, n=4000):
    """Midpoint-rule integrals of v, i and v*i from (near-)instantaneous values."""
    h = (t1 - t0) / n
    sv = si = svi = 0.0
    for k in range(n):
        v, i = instant(sc, t0 + (k + 0.5) * h)
        sv += v * h
        si += i * h
        svi += v * i * h
    return sv, si, svi


@pytest.mark.parametrize("name", NAMES)
def test_averages_and_energy_are_the_integrals(name):
    sc = scenarios.make(name, seed=5)
    rng = random.Random(1)
    for _ in range(12):
        t0 = rng.uniform(0, 2 * 86400)
        t1 = t0 + rng.choice((0.05, 1.7, 37.0, 400.0))  # within a segment and across several
        v, i = sc.avg(t0, t1)
        sv, si, svi = numeric(sc, t0, t1)
        d = t1 - t0
        assert v == pytest.approx(sv / d, rel=1e-3, abs=1e-3)
        assert i == pytest.approx(si / d, rel=1e-3, abs=1e-3)
        imp, exp = sc.energy(t0, t1)
        assert imp >= 0 and exp >= 0
        assert imp - exp == pytest.approx(svi, rel=1e-3, abs=1e-3 * d)


@pytest.mark.parametrize("name", NAMES)
def test_per_cycle_fast_path_equals_avg(name):
    sc = scenarios.make(name, seed=2)
    ref = scenarios.make(name, seed=2)
    rng = random.Random(3)
    t = 0
    for _ in range(3000):
        t += rng.randrange(1, 4000) * 1_000_000_000 // 100  # jumps of up to 40 s, some landing on boundaries
        sh, bu = 68_100_000, 532_000
        sc.conv(t, t + sh, t + sh + bu)
        _, i = ref.avg(t * 1e-9, (t + sh) * 1e-9)
        v, _ = ref.avg((t + sh) * 1e-9, (t + sh + bu) * 1e-9)
        assert sc.amps == pytest.approx(i, rel=1e-9, abs=1e-9)
        assert sc.volts == pytest.approx(v, rel=1e-9, abs=1e-9)
        assert sc.vi == pytest.approx(sc.volts * sc.amps, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_values_stay_inside_the_chip_and_driver_ranges(name):
    sc = scenarios.make(name, seed=9)
    for s in range(0, 2 * 86400, 7):
        v, i = instant(sc, s + 0.5)
        assert 0.0 <= v <= 26.0, (s, v)  # INA219 bus input range
        assert abs(i) <= 3.0, (s, i)  # inside 3.2 A on 0.1 ohm (the default board)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    a = scenarios.make(name, seed=7)
    b = scenarios.make(name, seed=7)
    c = scenarios.make(name, seed=8)
    times = [k * 977.3 for k in range(80)]
    va = [a.avg(t, t + 60.0) for t in times]
    assert va == [b.avg(t, t + 60.0) for t in times]
    # and again out of order (random-walk restarts from its checkpoints)
    assert [a.avg(t, t + 60.0) for t in reversed(times)] == list(reversed(va))
    if name != "constant":
        assert va != [c.avg(t, t + 60.0) for t in times]


def test_solar_day_shape():
    sc = scenarios.make("solar-day", seed=1, tod_s=0)  # scenario time 0 at midnight
    for day in range(3):
        base = day * 86400
        assert sc.avg(base + 0, base + 6 * 3600) == (0.0, 0.0)  # night
        assert sc.avg(base + 18 * 3600, base + 24 * 3600) == (0.0, 0.0)
        noon = max(instant(sc, base + 12 * 3600 + k * 60)[1] for k in range(-30, 30))
        assert 2.0 <= noon <= 2.5
        v, _ = instant(sc, base + 12 * 3600)
        assert 17.0 <= v <= 18.0
    # clouds: some noon-hour minutes are well below the clear-sky bell
    bell = [math.sin(math.pi * (5 * 3600 + k * 120 + 1) / 43200) ** 2 for k in range(60)]
    dips = [instant(sc, 11 * 3600 + k * 120 + 1)[1] / bell[k] for k in range(60)]
    assert min(dips) < 0.9 * 2.5 and max(dips) == pytest.approx(2.5, rel=1e-6)
    # tod_s shifts the day: starting at noon, scenario time 0 is bright
    assert scenarios.make("solar-day", tod_s=12 * 3600).avg(0, 1)[1] > 1.0
    # by default the simulation starts at sunrise: sun for 12 hours, then 12 dark ones
    default = scenarios.make("solar-day")
    assert default.avg(0, 600)[1] > 0 and default.avg(12 * 3600, 24 * 3600) == (0.0, 0.0)


def test_export_and_mixed_signs():
    ex = scenarios.make("export")
    assert ex.energy(0, 86400)[0] == 0.0 and ex.energy(0, 86400)[1] > 0
    mx = scenarios.make("mixed")
    imp, exp = mx.energy(0, 86400)
    assert imp > 0 and exp > 0


def test_unknown_scenario_names_the_choices():
    with pytest.raises(ValueError, match="solar-day"):
        scenarios.make("sunny")


_MP_SNIPPET = """
import json
from sim import scenarios
out = {}
for name in scenarios.NAMES:
    sc = scenarios.make(name, seed=13)
    vals = []
    for k in range(40):
        t = k * 2311.7
        vals.append(list(sc.avg(t, t + 13.0)))
        sc.conv(k * 2311700000000, k * 2311700000000 + 68100000, k * 2311700000000 + 68632000)
        vals.append([sc.volts, sc.amps])
    out[name] = vals
print(json.dumps(out))
"""


def test_same_numbers_under_micropython():
    proc = subprocess.run(micropython_cmd("-c", _MP_SNIPPET), capture_output=True, text=True, env=mp_env(),
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    mp = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in NAMES:
        sc = scenarios.make(name, seed=13)
        for k in range(40):
            t = k * 2311.7
            a = sc.avg(t, t + 13.0)
            sc.conv(k * 2311700000000, k * 2311700000000 + 68100000, k * 2311700000000 + 68632000)
            assert mp[name][2 * k] == pytest.approx(list(a), rel=1e-12, abs=1e-12), name
            assert mp[name][2 * k + 1] == pytest.approx([sc.volts, sc.amps], rel=1e-12, abs=1e-12), name
