"""Property tests for meter.demand (CPython, hypothesis).

A random timeline of seconds, each with its own import energy (whole µWh), tariff and a metered/unmetered
flag (outages, a missing sensor), is fed to Demand the way the meter loop does: batches of random length,
split at period boundaries, tariff switches and outage starts; resume() after every outage, close() after
every batch and now and then inside outages; demand resets and save/restore round trips at random instants.

The result is compared with a brute-force recomputation from the raw per-second energies that shares no
code with meter.demand: every closed period's (end, W, µWh, tariff, partial), the maxima per tariff and
overall with their timestamps (also those handed back by each reset), and every value is an int.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter.demand import PERIODS, Demand

T0 = 1767225600  # 2026-01-01 00:00 UTC
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def timelines(draw):
    period = draw(st.sampled_from(PERIODS))
    tariffs = draw(st.integers(1, 5))
    n = draw(st.integers(2, 5)) * period + draw(st.integers(0, period - 1))
    t_start = T0 + draw(st.integers(0, 2 * period))
    segments = draw(st.lists(
        st.tuples(st.integers(1, 2 * period),                      # duration, s
                  st.one_of(st.just(0), st.integers(0, 3000000)),  # µWh per second (up to 10.8 kW)
                  st.integers(1, tariffs),
                  st.integers(0, 5)),                              # 0: an outage
        min_size=1, max_size=12))
    noise = draw(st.sampled_from([0, 0, 1000, 500000]))  # 0: constant loads, so maxima tie
    seed = draw(st.integers(0, 2 ** 32 - 1))
    batches = draw(st.lists(st.integers(1, 90), min_size=1, max_size=16))
    events = draw(st.lists(st.tuples(st.integers(0, n), st.sampled_from(["reset", "save", "close"])),
                           max_size=10))
    rng = random.Random(seed)
    energy, tariff, metered = [], [], []
    while len(energy) < n:
        for dur, rate, tar, on in segments:
            for _ in range(dur):
                energy.append(rate + (rng.randrange(noise + 1) if noise else 0))
                tariff.append(tar)
                metered.append(on != 0)
    del energy[n:], tariff[n:], metered[n:]
    return period, tariffs, t_start, energy, tariff, metered, batches, sorted(events)


def _drive(period, tariffs, t_start, energy, tariff, metered, batches, events):
    """Feed the timeline as the meter loop would. Returns (demand, records, resets, t_final)."""
    d = Demand(period, tariffs)
    n = len(energy)
    records, resets = [], []
    ev = list(events)
    b = 0

    def keep(rec):
        if rec is not None:
            records.append(rec)

    def run_events(upto):
        nonlocal d
        while ev and ev[0][0] <= upto:
            at, what = ev.pop(0)
            t = t_start + upto  # events happen at the instant reached, after the batch that got there
            if d.start is None:
                continue
            if what == "reset":
                keep(d.close(t))
                resets.append((t, d.reset(t)))
            elif what == "save":
                restored = Demand.from_bytes(d.to_bytes())
                assert restored == d
                d = restored
            else:
                keep(d.close(t))

    i = 0
    up = False
    while i < n:
        if not metered[i]:
            up = False
            i += 1
            run_events(i)
            continue
        if not up:
            keep(d.resume(t_start + i))
            up = True
        length = batches[b % len(batches)]
        b += 1
        stop = min(i + length, n, d.next_boundary(t_start + i) - t_start)
        k = i + 1
        while k < stop and tariff[k] == tariff[i] and metered[k]:
            k += 1
        keep(d.add(sum(energy[i:k]), t_start + k, tariff[i]))
        keep(d.close(t_start + k))
        i = k
        run_events(i)
    t_final = t_start + n
    keep(d.close(t_final))
    return d, records, resets, t_final


def _brute(period, tariffs, t_start, energy, tariff, metered, reset_times, t_final):
    """Periods from the raw seconds: second i covers (t_start + i, t_start + i + 1]."""
    per = {}
    for i in range(len(energy)):
        if not metered[i]:
            continue
        s = (t_start + i) // period * period
        p = per.setdefault(s, {"uwh": 0, "tariff": 0, "covered": 0})
        p["uwh"] += energy[i]
        p["tariff"] = tariff[i]  # the last metered second's: the tariff in force at the period end
        p["covered"] += 1
    closed = []
    for s in sorted(per):
        if s + period <= t_final:
            p = per[s]
            avg_uw = p["uwh"] * 3600 // period  # exact: 3600 is a multiple of the period
            closed.append((s + period, avg_uw // 1000000, p["uwh"], p["tariff"], p["covered"] < period))
    open_uwh = sum(p["uwh"] for s, p in per.items() if s + period > t_final)

    def maxima(lo, hi):
        best = {}
        for end, _, uwh, tar, _ in closed:
            if lo < end <= hi:
                for key in (0, tar):
                    if key not in best or uwh > best[key][0]:
                        best[key] = (uwh, end)
        out = {}
        for key in range(tariffs + 1):
            uwh, end = best.get(key, (0, 0))
            out[f"1.6.{key}"] = [uwh * 3600 // period // 1000000, end]
        return out, best

    at_resets = []
    lo = -1
    for r in reset_times:
        at_resets.append(maxima(lo, r)[0])
        lo = r
    final, final_exact = maxima(lo, t_final)
    return closed, open_uwh, at_resets, final, final_exact


def _all_ints(v):
    if isinstance(v, dict):
        return all(isinstance(k, str) and _all_ints(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_all_ints(x) for x in v)
    return type(v) in (int, bool)


@SETTINGS
@given(timelines())
def test_maxima_match_brute_force(tl):
    period, tariffs, t_start, energy, tariff, metered, batches, events = tl
    d, records, resets, t_final = _drive(*tl)
    closed, open_uwh, at_resets, final, final_exact = _brute(
        period, tariffs, t_start, energy, tariff, metered, [t for t, _ in resets], t_final)

    counted = [r for r in records if r[3] != 0]
    for r in records:
        if r[3] == 0:  # a period resumed or closed into with nothing reported: no tariff, no maximum
            assert r[1:] == (0, 0, 0, True), r
    assert counted == closed
    assert [snap for _, snap in resets] == at_resets
    assert d.snapshot() == final
    for key in range(tariffs + 1):
        uwh, end = final_exact.get(key, (0, 0))
        assert d.maximum_uw(key) == (uwh * 3600 // period, end)
    # 1.6.0 is the largest tariff maximum
    assert final["1.6.0"][0] == max(final[f"1.6.{k}"][0] for k in range(1, tariffs + 1))
    assert d.current_uwh == open_uwh
    if records:
        last = records[-1]
        assert (d.last_end, d.last_average, d.last_uwh, d.last_tariff, d.last_partial) == last
    assert d.resets == len(resets)
    assert _all_ints(records) and _all_ints(d.snapshot()) and _all_ints([s for _, s in resets])
    assert _all_ints([d.last_average, d.current_average, d.last_average_uw, d.maximum(), d.maximum_uw()])
    assert Demand.from_bytes(d.to_bytes()) == d


@SETTINGS
@given(st.sampled_from(PERIODS), st.integers(0, 10 ** 7), st.integers(0, 3600), st.integers(0, 4 * 10 ** 10))
def test_crossing_always_rejected(period, offset, pos, uwh):
    """A chunk that straddles a boundary is refused with no state change, wherever it starts and ends."""
    d = Demand(period, 2)
    t = T0 + offset
    d.resume(t)
    before = d.to_bytes()
    boundary = d.next_boundary(t)
    t_end = boundary + 1 + pos
    try:
        d.add(uwh, t_end, 1)
    except ValueError as e:
        assert "crosses the period boundary" in str(e)
    else:
        raise AssertionError(f"a chunk over {boundary} accepted")
    assert d.to_bytes() == before


@SETTINGS
@given(timelines(), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(-2, 2))
def test_damaged_bytes(tl, flips, resize):
    """A saved state with bytes overwritten (and perhaps cut or extended): either a ValueError, or a Demand
    that saves back to exactly those bytes and keeps working; never another exception."""
    d = _drive(*tl)[0]
    data = bytearray(d.to_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data.extend(bytes(resize))
    try:
        e = Demand.from_bytes(bytes(data))
    except ValueError as err:
        assert str(err).startswith("demand: ")
        return
    assert e.to_bytes() == bytes(data)
    t = T0 + 7 * 10 ** 7  # forwards or backwards from the restored state: both are valid
    e.resume(t)
    e.add(5, e.next_boundary(t), e.tariffs)
    e.close(e.next_boundary(t))
    assert e.snapshot()["1.6.0"][0] == max(e.snapshot()[f"1.6.{k}"][0] for k in range(1, e.tariffs + 1))
