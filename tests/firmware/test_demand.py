# meter/demand.py inside MicroPython: clock-aligned block demand (5/15/30/60 min), last and current
# average, maximum demand per tariff with timestamps, demand reset, partial periods (power cut, clock set),
# persistence and every rejection. Test names stay short (the harness passes them in one argv element).
import struct

import micropython
from mptest import contains, eq, ne, not_mp32, raises

from meter.demand import FORMAT_VERSION, PERIODS, Demand, obis

MPTEST_HEAP = "256K"  # capped: enough for parsing this file and meter.tou from source on the 64-bit port
T0 = 1767225600  # 2026-01-01 00:00:00 UTC, a multiple of every period
UW = 1000000


def _uwh_for(watts, seconds):
    """Exact µWh of `watts` held for `seconds` (the tests pick values that divide evenly)."""
    return watts * seconds * UW // 3600


def _run(d, t_from, t_to, watts, tariff, step=4):
    """Feed constant power from t_from to t_to in chunks of `step` s (the caller's batches), closing periods
    as their end is reached, the way the meter loop does. Whole µWh per chunk, the remainder carried (as the
    metrology front-end does), so any whole span gets exactly _uwh_for(watts, span). Returns the records."""
    recs = []
    t = t_from
    while t < t_to:
        n = min(t + step, t_to, d.next_boundary(t))
        r = d.add(_uwh_for(watts, n - t_from) - _uwh_for(watts, t - t_from), n, tariff)
        if r is not None:
            recs.append(r)
        r = d.close(n)
        if r is not None:
            recs.append(r)
        t = n
    return recs


def test_periods():
    for p in PERIODS:
        eq(Demand(p).period_s, p, "period")
    for bad in (0, 60, 600, 901, 7200, -900, "900", 900.0, True, None):
        raises(ValueError, Demand, bad)
    for bad in (0, 17, -1, 1.0, "2"):
        raises(ValueError, Demand, 900, bad)
    eq(Demand().period_s, 900, "default 15 min")
    eq(Demand().tariffs, 1, "default one tariff")
    eq(obis(), "1.6.0", "total")
    eq(obis(3), "1.6.3", "tariff 3")


def test_alignment():
    for p in PERIODS:
        d = Demand(p)
        eq(d.start, None, "no period before resume")
        d.resume(T0 + 7)
        eq(d.start, T0, "aligned start, %d s" % p)
        eq(d.end, T0 + p, "aligned end")
        eq(d.partial, True, "started 7 s late")
        eq(d.next_boundary(T0), T0 + p, "boundary after a boundary")
        eq(d.next_boundary(T0 + p - 1), T0 + p, "boundary just ahead")
        eq(d.next_boundary(T0 + p), T0 + 2 * p, "strictly after")
        d2 = Demand(p)
        d2.resume(T0 + 5 * p)
        eq((d2.start, d2.partial), (T0 + 5 * p, False), "resumed on a boundary")
    d = Demand(900)
    d.resume(T0 + 3 * 3600 + 1000)
    eq(d.start, T0 + 3 * 3600 + 900, "hh:15 period")


def test_averages():
    for p in PERIODS:
        d = Demand(p)
        d.resume(T0)
        recs = _run(d, T0, T0 + p, 1500, 1)
        want = _uwh_for(1500, p)
        eq(recs, [(T0 + p, 1500, want, 1, False)], "record, %d s" % p)
        eq(d.last_average, 1500, "last average W")
        eq(d.last_average_uw, 1500 * UW, "exact")
        eq((d.last_end, d.last_tariff, d.last_partial), (T0 + p, 1, False), "last")
        eq(d.start, T0 + p, "next period open")
        eq(d.current_average, 0, "nothing elapsed yet")
        # one µWh less: the exact value is kept, the W are rounded down
        d.add(want - 1, T0 + 2 * p, 1)
        rec = d.close(T0 + 2 * p)
        k = 3600 // p
        eq(rec, (T0 + 2 * p, 1499, want - 1, 1, False), "rounded down")
        eq(d.last_average_uw, 1500 * UW - k, "exact uW")
        eq(d.maximum(), (1500, T0 + p), "maximum")
        eq(d.maximum_uw(1), (1500 * UW, T0 + p), "maximum exact")


def test_current_avg():
    d = Demand(900)
    d.resume(T0)
    eq(d.current_average, 0, "nothing elapsed")
    d.add(UW, T0 + 60, 1)  # 1 Wh in one minute = 60 W
    eq(d.current_average, 60, "running average over elapsed time")
    eq(d.current_uwh, UW, "energy so far")
    d.add(0, T0 + 120, 1)
    eq(d.current_average, 30, "halved over twice the time")
    d.add(1, T0 + 180, 1)
    eq(d.current_average, 20, "rounded down")
    eq(d.reported_until, T0 + 180, "reported until")


def test_crossing():
    d = Demand(900, 2)
    d.resume(T0 + 890)
    before = d.to_bytes()
    e = raises(ValueError, d.add, 100, T0 + 905, 1)
    contains("crosses the period boundary at %d" % (T0 + 900), str(e), "names the boundary")
    eq(d.to_bytes(), before, "nothing changed")
    d.add(100, T0 + 900, 1)
    raises(ValueError, d.add, 1, T0 + 899, 1)  # backwards in time
    e = raises(ValueError, d.add, 1, T0 + 1801, 1)  # the chunk from 900 to 1801 crosses 1800
    contains(str(T0 + 1800), str(e), "second boundary named")
    ne(d.to_bytes(), before, "the valid chunk counted")
    for args in ((-1, T0 + 901, 1), (1.5, T0 + 901, 1), (True, T0 + 901, 1), (1, T0 + 901, 0),
                 (1, T0 + 901, 3), (1, T0 + 901, None), (1, float(T0 + 901), 1), (1, -5, 1), (1, 1 << 33, 1)):
        snap = d.to_bytes()
        raises(ValueError, d.add, *args)
        eq(d.to_bytes(), snap, "rejected %r changed nothing" % (args,))
    raises(ValueError, Demand().add, 1, T0, 1)  # before resume()
    for bad in (None, 1.0, -1, "x"):
        raises(ValueError, d.close, bad)
        raises(ValueError, d.resume, bad)
        raises(ValueError, d.reset, bad)


def test_rollover():
    d = Demand(300)
    d.resume(T0)
    eq(d.add(_uwh_for(600, 300), T0 + 300, 1), None, "ends exactly at the boundary: still open")
    eq(d.start, T0, "not closed by add")
    rec = d.add(_uwh_for(900, 4), T0 + 304, 1)  # a chunk wholly in the next period closes the last one
    eq(rec, (T0 + 300, 600, _uwh_for(600, 300), 1, False), "closed by the next chunk")
    eq(d.start, T0 + 300, "next period")
    eq(d.current_average, 900, "new period's running average")
    eq(d.close(T0 + 599), None, "not yet")
    eq(d.close(T0 + 600)[0], T0 + 600, "closed at its end")


def test_max_tariffs():
    d = Demand(900, 3)
    d.resume(T0)
    plan = ((1, 1000), (2, 2000), (1, 1500), (2, 1800), (1, 1500), (3, 0))
    t = T0
    for tariff, w in plan:
        _run(d, t, t + 900, w, tariff)
        t += 900
    e = [T0 + 900 * (i + 1) for i in range(len(plan))]
    eq(d.maximum(1), (1500, e[2]), "1.6.1: equal later period does not replace the earlier")
    eq(d.maximum(2), (2000, e[1]), "1.6.2")
    eq(d.maximum(3), (0, e[5]), "1.6.3: a zero period still has its time")
    eq(d.maximum(0), (2000, e[1]), "1.6.0 overall")
    eq(d.snapshot(), {"1.6.0": [2000, e[1]], "1.6.1": [1500, e[2]], "1.6.2": [2000, e[1]],
                      "1.6.3": [0, e[5]]}, "snapshot")
    raises(ValueError, d.maximum, 4)
    raises(ValueError, d.maximum_uw, -1)
    for v in d.snapshot().values():
        eq((type(v[0]), type(v[1])), (int, int), "ints only")


def test_switch_mid_period():
    # a switch at 10 min: the whole period counts for the tariff in force at its end
    d = Demand(900, 2)
    d.resume(T0)
    _run(d, T0, T0 + 600, 3000, 1)
    _run(d, T0 + 600, T0 + 900, 600, 2)
    eq(d.last_tariff, 2, "tariff at the period end")
    eq(d.last_average, (3000 * 600 + 600 * 300) // 900, "average over the whole period")
    eq(d.maximum(1), (0, 0), "1.6.1 untouched")
    eq(d.maximum(2), (2200, T0 + 900), "1.6.2")
    # a switch exactly on the boundary: the period before it keeps the old tariff
    _run(d, T0 + 900, T0 + 1800, 100, 2)
    _run(d, T0 + 1800, T0 + 2700, 50, 1)
    eq(d.maximum(1), (50, T0 + 2700), "new tariff from the boundary on")
    eq(d.maximum(2), (2200, T0 + 900), "old maximum kept")


def test_calendar():
    # driven as the meter does it: batches split at period boundaries and at the calendar's switches
    from meter.tou import CalendarSet  # here, not at the top: parsing tou.py's source takes a big heap

    cal = {"tz": "CET-1CEST,M3.5.0,M10.5.0/3", "tariffs": 2,
           "seasons": [{"start": [1, 1], "week": "w"}], "weeks": {"w": ["d"] * 7},
           "days": {"d": [[0, 2], [370, 1], [1320, 2]]}}  # 06:10 local = 05:10 UTC in winter
    cs = CalendarSet(cal)
    d = Demand(900, 2)
    t = T0 + 4 * 3600
    d.resume(t)
    stop = T0 + 7 * 3600
    while t < stop:
        n = min(t + 4, d.next_boundary(t), cs.next_switch(t), stop)
        tariff = cs.tariff_at(t)
        watts = 3600 if tariff == 2 else 900  # whole µWh per second: every chunk is exact
        d.add(_uwh_for(watts, n - t), n, tariff)
        d.close(n)
        t = n
    eq(cs.tariff_at(T0 + 5 * 3600 + 599), 2, "night tariff before 05:10 UTC")
    eq(cs.tariff_at(T0 + 5 * 3600 + 600), 1, "day tariff from 05:10 UTC")
    # 05:00-05:15 UTC: 10 min at 3.6 kW (tariff 2), 5 min at 0.9 kW (tariff 1): ends under tariff 1
    eq(d.maximum(1), (2700, T0 + 5 * 3600 + 900), "mixed period -> tariff 1")
    eq(d.maximum(2), (3600, T0 + 4 * 3600 + 900), "first full night period")
    eq(d.maximum(0), (3600, T0 + 4 * 3600 + 900), "overall")


def test_reset():
    d = Demand(900, 2)
    d.resume(T0)
    _run(d, T0, T0 + 900, 2000, 1)
    _run(d, T0 + 900, T0 + 1200, 600, 2)
    before = d.reset(T0 + 1200)
    eq(before, {"1.6.0": [2000, T0 + 900], "1.6.1": [2000, T0 + 900], "1.6.2": [0, 0]}, "values before")
    eq(d.snapshot(), {"1.6.0": [0, 0], "1.6.1": [0, 0], "1.6.2": [0, 0]}, "cleared")
    eq((d.resets, d.reset_time), (1, T0 + 1200), "counted")
    eq(d.start, T0 + 900, "the current period goes on")
    _run(d, T0 + 1200, T0 + 1800, 600, 2)
    eq(d.maximum(2), (600, T0 + 1800), "the running period counts after the reset")
    eq(d.maximum(0), (600, T0 + 1800), "1.6.0 after the reset")
    eq(d.last_average, 600, "last average is not a maximum: untouched by reset")
    d.reset(T0 + 1800)
    eq(d.resets, 2, "second reset")


def test_power_cut():
    d = Demand(900)
    d.resume(T0)
    _run(d, T0, T0 + 300, 3000, 1)
    # power lost at T0+300, back at T0+1200: the first period closes partial, averaged over 900 s
    rec = d.resume(T0 + 1200)
    eq(rec, (T0 + 900, 1000, _uwh_for(3000, 300), 1, True), "partial, nominal length")
    eq(d.last_partial, True, "flag")
    eq(d.maximum(), (1000, T0 + 900), "a partial period competes for the maximum")
    eq((d.start, d.partial, d.reported_until), (T0 + 900, True, T0 + 1200), "next period started late")
    _run(d, T0 + 1200, T0 + 1800, 1800, 1)
    eq((d.last_end, d.last_average, d.last_partial), (T0 + 1800, 1200, True), "600 s of 1800 W in 900 s")
    _run(d, T0 + 1800, T0 + 2700, 360, 1)
    eq(d.last_partial, False, "a full period again")
    # an outage inside one period
    _run(d, T0 + 2700, T0 + 2800, 360, 1)
    eq(d.resume(T0 + 3000), None, "same period: nothing closes")
    eq(d.partial, True, "but it has a hole")
    _run(d, T0 + 3000, T0 + 3600, 360, 1)
    eq((d.last_partial, d.last_uwh), (True, _uwh_for(360, 700)), "hole not metered")
    # resuming exactly at a boundary after a clean close: nothing is partial
    eq(d.resume(T0 + 3600), None, "no gap")
    eq(d.partial, False, "clean")


def test_sliver_no_peak():
    # ten seconds of 9 kW before an outage must not become a 9 kW maximum
    d = Demand(900)
    d.resume(T0 + 880)
    _run(d, T0 + 880, T0 + 890, 9000, 1)
    rec = d.resume(T0 + 5000)
    eq(rec[1], 100, "9 kW x 10 s over 900 s")
    eq(d.maximum(), (100, T0 + 900), "maximum")


def test_nothing_reported():
    d = Demand(900)
    d.resume(T0 + 100)
    rec = d.close(T0 + 900)
    eq(rec, (T0 + 900, 0, 0, 0, True), "closed, no tariff, partial")
    eq(d.maximum(), (0, 0), "never enters the maxima")
    eq(d.close(T0 + 3700), (T0 + 1800, 0, 0, 0, True), "an unmetered period")
    eq(d.start, T0 + 3600, "the period containing the close time")


def test_clock_set():
    d = Demand(900, 2)
    d.resume(T0)
    _run(d, T0, T0 + 600, 900, 1)
    # clock set backwards by 700 s: the current period closes now (nominal end), the new one is partial
    rec = d.resume(T0 - 100)
    eq(rec, (T0 + 900, 600, _uwh_for(900, 600), 1, True), "closed at once")
    eq((d.start, d.partial, d.reported_until), (T0 - 900, True, T0 - 100), "period of the new time")
    _run(d, T0 - 100, T0, 1800, 2)
    eq((d.last_end, d.last_average, d.last_tariff), (T0, 200, 2), "100 s of 1800 W")
    eq(d.maximum(1), (600, T0 + 900), "1.6.1")
    eq(d.maximum(2), (200, T0), "1.6.2")
    # forward inside one period: a hole
    eq(d.resume(T0 + 400), None, "same period")
    eq(d.partial, True, "hole")
    # forward across periods
    rec = d.resume(T0 + 10000)
    eq((rec[0], rec[4]), (T0 + 900, True), "closed partial")
    eq((d.start, d.reported_until), (T0 + 9900, T0 + 10000), "new period")
    # a clock set back to the very same instant changes nothing
    eq(d.resume(T0 + 10000), None, "no-op")


def test_persist():
    d = Demand(1800, 4)
    eq(Demand.from_bytes(d.to_bytes()), d, "fresh")
    d.resume(T0 + 13)
    _run(d, T0 + 13, T0 + 5400, 2500, 3)
    _run(d, T0 + 5400, T0 + 7000, 700, 4)
    d.reset(T0 + 6000)
    _run(d, T0 + 7000, T0 + 7400, 300, 1)
    blob = d.to_bytes()
    eq(len(blob), 41 + 12 * 5, "size")
    e = Demand.from_bytes(blob)
    eq(e, d, "round trip")
    eq(Demand.from_bytes(bytearray(blob)), d, "from a bytearray")
    eq(Demand.from_bytes(memoryview(blob)), d, "from a memoryview")
    # both go on identically
    ra = _run(d, T0 + 7400, T0 + 9000, 4000, 2)
    rb = _run(e, T0 + 7400, T0 + 9000, 4000, 2)
    eq(ra, rb, "same records")
    eq(e.snapshot(), d.snapshot(), "same maxima")
    eq(e.to_bytes(), d.to_bytes(), "same bytes")
    big = Demand(3600)
    big.resume(T0)
    big.add(5 << 40, T0 + 3600, 1)  # far beyond 31 bits
    big.close(T0 + 3600)
    eq(Demand.from_bytes(big.to_bytes()), big, "big energy")
    eq(big.maximum(), ((5 << 40) // UW, T0 + 3600), "big maximum")


def _blob():
    d = Demand(900, 2)
    d.resume(T0 + 10)
    _run(d, T0 + 10, T0 + 1800, 1000, 1)
    _run(d, T0 + 1800, T0 + 2700, 2000, 2)
    _run(d, T0 + 2700, T0 + 2800, 10, 2)
    return bytearray(d.to_bytes())


def _set(blob, fmt, off, *v):
    b = bytearray(blob)
    struct.pack_into(fmt, b, off, *v)
    return b


def test_malformed():
    good = _blob()
    Demand.from_bytes(good)
    head = 41
    bad = [
        ("not bytes", "abc"), ("None", None), ("empty", b""), ("truncated header", good[:40]),
        ("truncated", good[:-1]), ("trailing", good + b"\x00"),
        ("version", _set(good, "<B", 0, FORMAT_VERSION + 1)), ("no tariffs", _set(good, "<B", 1, 0)),
        ("17 tariffs", _set(good, "<B", 1, 17)), ("3 tariffs, 2 stored", _set(good, "<B", 1, 3)),
        ("period", _set(good, "<H", 2, 600)), ("flags", _set(good, "<B", 4, 0x1F)),
        ("tariff", _set(good, "<B", 5, 3)), ("last tariff", _set(good, "<B", 6, 9)),
        ("start unaligned", _set(good, "<I", 7, T0 + 2700 + 1)), ("dt", _set(good, "<H", 11, 901)),
        ("energy without tariff", _set(good, "<B", 5, 0)),
        ("last end unaligned", _set(good, "<I", 21, T0 + 2701)),
        ("never started", _set(good, "<B", 4, 0x0C)),
        ("last absent", _set(good, "<B", 4, 0x01)),
        ("max time unaligned", _set(good, "<QI", head + 24, 1, T0 + 2699)),
        ("max without time", _set(good, "<QI", head + 24, 1, 0)),
        ("1.6.0 too big", _set(good, "<QI", head, 1 << 40, T0 + 2700)),
        ("1.6.0 wrong time", _set(good, "<QI", head, 500000000, T0 + 900)),
        ("1.6.0 empty", _set(good, "<QI", head, 0, 0)),
        ("tariff above 1.6.0", _set(good, "<QI", head + 12, 1 << 40, T0 + 900)),
    ]
    for what, blob in bad:
        e = raises(ValueError, Demand.from_bytes, blob)
        eq(str(e)[:8], "demand: ", "%s: clear message %r" % (what, str(e)))


def _lcg(seed):
    s = [seed & 0x7FFFFFFF]

    def rnd(n):
        s[0] = (s[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (s[0] >> 8) % n
    return rnd


def test_random_brute():
    # the host property test, replayed on the firmware: random loads, random tariff switches and batch
    # lengths against a brute-force recomputation from the raw energies, one sample per g seconds
    for p in PERIODS:
        rnd = _lcg(p)
        n_t = 3
        g = p // 300
        span = 5 * 300  # samples: five periods
        t_start = T0 + g * rnd(300)
        energy = []
        tariff = []
        tar = 1
        for _ in range(span):
            if rnd(60) == 0:
                tar = 1 + rnd(n_t)
            tariff.append(tar)
            energy.append(rnd(3000000) * g)
        d = Demand(p, n_t)
        d.resume(t_start)
        i = 0
        while i < span:
            j = min(i + 1 + rnd(20), span, (d.next_boundary(t_start + i * g) - t_start) // g)
            k = i + 1
            while k < j and tariff[k] == tariff[i]:
                k += 1
            d.add(sum(energy[i:k]), t_start + k * g, tariff[i])
            d.close(t_start + k * g)
            i = k
        # brute force: sample i covers (t_start + i * g, t_start + (i + 1) * g]
        per = {}
        for i in range(span):
            s = (t_start + i * g) // p * p
            e = per.get(s, [0, 0, 0])
            e[0] += energy[i]
            e[1] = tariff[i]
            e[2] += g
            per[s] = e
        best = [[0, 0] for _ in range(n_t + 1)]
        t_end = t_start + span * g
        for s in sorted(per):
            uwh, tr, _ = per[s]
            if s + p > t_end:
                continue  # still open
            for x in (0, tr):
                if not best[x][1] or uwh > best[x][0]:
                    best[x] = [uwh, s + p]
        for x in range(n_t + 1):
            eq(d.maximum_uw(x), (best[x][0] * 3600 // p, best[x][1]), "%d s, 1.6.%d" % (p, x))
        last = max(s for s in per if s + p <= t_end)
        eq((d.last_end, d.last_uwh, d.last_tariff, d.last_partial),
           (last + p, per[last][0], per[last][1], per[last][2] < p), "%d s, last period" % p)
        eq(d.current_uwh, sum(per[s][0] for s in per if s + p > t_end), "%d s, open period" % p)


@not_mp32("UTC seconds since 1970 (T0 = 1.77e9) are heap ints on a 32-bit port: this loop's t += 4 and "
          "Demand's t_end - start allocate there (once per 4.4 s batch on a board, outside the hot loop)")
def test_add_no_alloc():
    d = Demand(3600, 2)
    d.resume(T0)
    d.add(1, T0 + 1, 1)
    t = T0 + 1
    micropython.heap_lock()
    try:
        for _ in range(500):
            t += 4
            d.add(123456, t, 2)
            d.close(t)
    finally:
        micropython.heap_unlock()
    eq(d.current_uwh, 1 + 500 * 123456, "all added")
