"""The demand-response baseline method (meterkit.dr.baseline) on constructed load profiles: similar-day selection
(weekday / weekend), exclusion of days with events, gaps and outages, fewer than 10 days, none, missing event
rows as gaps (not zeros), local clock times across a DST change, an event across midnight."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from meter.messages import ROW_POWER_FAIL, ROW_RELAY_OPEN
from meterkit.dr import baseline as B

P = 900
UTC = dt.timezone.utc
WED = dt.date(2026, 9, 23)
SAT = dt.date(2026, 9, 26)
assert WED.weekday() == 2 and SAT.weekday() == 5


def at(day: dt.date, hour: int, minute: int = 0, tz: dt.tzinfo = UTC) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz).timestamp())


def value(end: int) -> int:
    """A different figure for every row: the day and the slot show in it."""
    day = (end - P) // 86400
    return 100_000 + (day % 97) * 1000 + ((end // P) % 96) * 10


def profile(first: dt.date, last: dt.date, fn=value) -> dict[int, B.Row]:
    """Every row of the days first..last (UTC), import mWh fn(end)."""
    rows = {}
    for e in range(at(first, 0) + P, at(last, 0) + 86400 + 1, P):
        rows[e] = B.Row(fn(e), 0, P)
    return rows


def similar_days_back(day: dt.date, n: int, skip=()) -> list[dt.date]:
    """The oracle of the definition: the n most recent earlier days of the same kind (weekday/weekend), but skip."""
    out, d = [], day
    while len(out) < n:
        d -= dt.timedelta(days=1)
        if (d.weekday() >= 5) == (day.weekday() >= 5) and d not in skip:
            out.append(d)
    return out


def expected_mwh(ends: list[int], days: list[dt.date], event_day: dt.date, rows) -> dict[int, Fraction]:
    return {e: Fraction(sum(rows[e - (event_day - d).days * 86400].mwh for d in days), len(days)) for e in ends}


def test_window_is_the_rows_ending_after_the_start_up_to_the_end():
    s = at(WED, 17)
    assert B.window_ends(s, 7200, P) == [s + P * i for i in range(1, 9)]
    assert B.window_ends(s + 300, 3600, P) == [s + P * i for i in range(1, 5)]  # 17:05: the row 17:00-17:15 first
    assert B.window_ends(s, 600, P) == []
    rows = profile(WED - dt.timedelta(days=20), WED)
    red = B.reduction(B.baseline(rows, [], set(), s, 600, P), rows, P)
    assert (red.intervals, red.reduction_kwh) == (0, None) and "ends before any interval" in red.note


@pytest.mark.parametrize("event_day", [WED, SAT])
def test_the_last_ten_similar_days_same_clock_times(event_day):
    rows = profile(event_day - dt.timedelta(days=70), event_day)
    s = at(event_day, 17)
    base = B.baseline(rows, [], set(), s, 7200, P)
    want = similar_days_back(event_day, 10)
    assert list(base.days) == want
    assert all((d.weekday() >= 5) == (event_day.weekday() >= 5) for d in base.days)
    assert base.mwh == expected_mwh(B.window_ends(s, 7200, P), want, event_day, rows)
    assert base.excluded == {}


def test_days_with_events_gaps_and_outages_are_left_out_and_older_days_used():
    rows = profile(WED - dt.timedelta(days=70), WED)
    s = at(WED, 17)
    recent = similar_days_back(WED, 10)
    dr_days = {recent[0], recent[2]}
    del rows[at(recent[1], 18)]  # a gap in the window
    r = rows[at(recent[3], 17, 30)]
    rows[at(recent[3], 17, 30)] = r._replace(status=ROW_POWER_FAIL)  # an outage the meter flagged
    outages = [(at(recent[4], 18, 40), at(recent[4], 20))]  # one the concentrator found
    r = rows[at(recent[5], 18, 15)]
    rows[at(recent[5], 18, 15)] = r._replace(status=ROW_RELAY_OPEN)  # disconnected: not the usual load
    del rows[at(recent[6], 3)]  # a gap outside the window does not matter
    base = B.baseline(rows, outages, dr_days, s, 7200, P)
    want = similar_days_back(WED, 10, skip=set(recent[:6]))
    assert recent[6] in base.days and list(base.days) == want
    assert base.excluded == {"demand-response event": 2, "gap": 1, "outage": 2, "irregular row": 1}
    assert base.mwh == expected_mwh(list(base.ends), want, WED, rows)


def test_a_row_of_another_capture_period_is_a_gap():
    rows = profile(WED - dt.timedelta(days=30), WED)
    recent = similar_days_back(WED, 10)
    e = at(recent[0], 17, 45)
    rows[e] = rows[e]._replace(period_s=300)
    base = B.baseline(rows, [], set(), at(WED, 17), 3600, P)
    assert recent[0] not in base.days and base.excluded == {"gap": 1}


def test_fewer_than_ten_days_uses_what_there_is_and_says_so():
    rows = profile(WED - dt.timedelta(days=8), WED)
    s = at(WED, 17)
    base = B.baseline(rows, [], set(), s, 7200, P)
    want = [d for d in similar_days_back(WED, 10) if d >= WED - dt.timedelta(days=8)]
    assert list(base.days) == want and 0 < len(want) < 10
    red = B.reduction(base, rows, P)
    assert (red.days, red.wanted) == (len(want), 10)
    assert f"baseline of {len(want)} day(s)" in red.note


def test_no_similar_day_the_rows_just_before_the_event_are_the_baseline():
    rows = profile(WED, WED)  # commissioned this morning: no earlier day at all
    s = at(WED, 17)
    base = B.baseline(rows, [], set(), s, 7200, P)
    before = [s - P * i for i in range(3, -1, -1)]  # the hour before 17:00: rows ending 16:15 .. 17:00
    assert (base.days, base.method, base.before) == ((), B.METHOD_BEFORE, tuple(before))
    avg = Fraction(sum(rows[e].mwh for e in before), 4)
    assert base.mwh == {e: avg for e in B.window_ends(s, 7200, P)}
    red = B.reduction(base, rows, P)
    actual = sum(rows[e].mwh for e in B.window_ends(s, 7200, P))
    assert red.baseline_kwh == pytest.approx(float(avg * 8) / 1e6)
    assert red.reduction_kwh == pytest.approx(float(avg * 8 - actual) / 1e6)
    assert "meter before" in red.note
    # a short event averages as many rows before it as it covers
    assert B.baseline(rows, [], set(), s, 1800, P).before == (s - P, s)


def test_no_similar_day_and_a_gap_just_before_the_event_no_baseline():
    rows = profile(WED, WED)
    s = at(WED, 17)
    del rows[s - 2 * P]
    base = B.baseline(rows, [], set(), s, 7200, P)
    red = B.reduction(base, rows, P)
    assert base.days == () and base.mwh == {} and red.baseline_kwh is None and red.reduction_kwh is None
    assert red.percent is None and red.note.startswith("no baseline")
    assert red.actual_kwh == pytest.approx(sum(rows[e].mwh for e in B.window_ends(s, 7200, P)) / 1e6)
    flagged = profile(WED, WED)
    flagged[s - P] = flagged[s - P]._replace(status=ROW_RELAY_OPEN)  # the load was cut: not the usual load
    assert B.baseline(flagged, [], set(), s, 7200, P).mwh == {}
    assert B.baseline(profile(WED, WED), [(s - 600, s - 300)], set(), s, 7200, P).mwh == {}  # an outage


def test_reduction_kwh_average_kw_and_percent():
    before, during = 500_000, 200_000  # mWh per 15 min: 2 kW, then 0.8 kW
    rows = profile(WED - dt.timedelta(days=30), WED, lambda e: before)
    s = at(WED, 17)
    ends = B.window_ends(s, 7200, P)
    for e in ends:
        rows[e] = B.Row(during, 0, P)
    red = B.reduction(B.baseline(rows, [], set(), s, 7200, P), rows, P)
    n = len(ends)
    assert (red.intervals, red.measured, red.days) == (n, n, 10)
    assert red.baseline_kwh == pytest.approx(before * n / 1e6)
    assert red.actual_kwh == pytest.approx(during * n / 1e6)
    assert red.reduction_kwh == pytest.approx((before - during) * n / 1e6)
    assert red.avg_kw == pytest.approx((before - during) / 1e6 / (P / 3600))
    assert red.percent == pytest.approx(100 * (before - during) / before)
    assert red.note == ""


def test_missing_event_rows_are_gaps_not_zeros():
    before, during = 500_000, 200_000
    rows = profile(WED - dt.timedelta(days=30), WED, lambda e: before)
    s = at(WED, 17)
    ends = B.window_ends(s, 7200, P)
    for e in ends:
        rows[e] = B.Row(during, 0, P)
    del rows[ends[2]], rows[ends[5]]
    red = B.reduction(B.baseline(rows, [], set(), s, 7200, P), rows, P)
    k = len(ends) - 2
    assert (red.intervals, red.measured) == (len(ends), k)
    assert red.reduction_kwh == pytest.approx((before - during) * k / 1e6)  # zeros would give a larger one
    assert red.avg_kw == pytest.approx((before - during) / 1e6 / (P / 3600))
    assert red.percent == pytest.approx(100 * (before - during) / before)
    assert f"2 of {len(ends)} rows missing" in red.note


def test_local_clock_times_across_a_dst_change():
    berlin = B.zone("Europe/Berlin")
    event_day = dt.date(2026, 10, 28)  # a Wednesday after summer time ended (Sunday 25 October)

    def by_local_clock(end: int) -> int:
        t = dt.datetime.fromtimestamp(end - P, berlin)
        return 1000 * (t.hour * 4 + t.minute // 15) + t.date().toordinal() % 50

    rows = profile(event_day - dt.timedelta(days=30), event_day, by_local_clock)
    s = at(event_day, 17, tz=berlin)
    base = B.baseline(rows, [], set(), s, 7200, P, tz=berlin)
    want = similar_days_back(event_day, 10)
    assert list(base.days) == want and any(d < dt.date(2026, 10, 25) for d in want)
    day_part = Fraction(sum(d.toordinal() % 50 for d in want), len(want))
    assert [base.mwh[e] for e in base.ends] == [1000 * (17 * 4 + i) + day_part for i in range(8)]
    # in UTC the summer days' 17:00 row is another clock time: the figures differ
    assert B.baseline(rows, [], set(), s, 7200, P).mwh != base.mwh


def test_an_event_across_midnight_and_a_dr_day_it_touches():
    rows = profile(WED - dt.timedelta(days=40), WED + dt.timedelta(days=1))
    s = at(WED, 23)
    recent = similar_days_back(WED, 10)
    assert recent[1] + dt.timedelta(days=1) == recent[0]  # Monday, Tuesday
    # an event on Tuesday: Tuesday is out, and so is Monday, whose window (23:00-01:00) reaches into Tuesday
    base = B.baseline(rows, [], {recent[0]}, s, 7200, P)
    want = similar_days_back(WED, 10, skip={recent[0], recent[1]})
    assert list(base.days) == want and base.excluded == {"demand-response event": 2}
    assert base.mwh == expected_mwh(list(base.ends), want, WED, rows)


def test_group_total_of_measured_meters():
    a = B.Reduction(8, 8, 10, 10, 4.0, 1.0, 3.0, 1.5, 75.0, "")
    b = B.Reduction(8, 8, 10, 10, 2.0, 1.5, 0.5, 0.25, 25.0, "")
    none = B.Reduction(8, 0, 0, 10, None, None, None, None, None, "no baseline")
    t = B.total([a, b, none])
    assert (t.meters, t.baseline_kwh, t.actual_kwh, t.reduction_kwh, t.avg_kw) == (2, 6.0, 2.5, 3.5, 1.75)
    assert t.percent == pytest.approx(3.5 * 100 / 6.0)
    assert B.total([]).percent is None


def test_unknown_zone_refused():
    with pytest.raises(ValueError, match="unknown time zone"):
        B.zone("Mars/Olympus")


def test_interval_energy_from_cumulative_rows_gaps_where_a_row_is_missing():
    t = at(WED, 0)
    cum = {t + P * i: B.Row(1_000_000 + 1000 * i * i, 0, P) for i in range(8)}
    del cum[t + 3 * P]
    cum[t + 6 * P] = cum[t + 6 * P]._replace(mwh=5)  # the register went back: a reset meter
    cum[t + 7 * P] = cum[t + 7 * P]._replace(status=ROW_POWER_FAIL)
    got = B.intervals(cum)
    # i=0 has no row before it, 3 is missing so 3 and 4 are unknown, 6 went back; 7 keeps its flag
    assert sorted(got) == [t + P * i for i in (1, 2, 5, 7)]
    assert [got[t + P * i].mwh for i in (1, 2, 5)] == [1000 * (i * i - (i - 1) ** 2) for i in (1, 2, 5)]
    assert got[t + 7 * P] == B.Row(1_000_000 + 1000 * 49 - 5, ROW_POWER_FAIL, P)
    cum[t + 2 * P] = cum[t + 2 * P]._replace(period_s=300)
    assert t + 2 * P not in B.intervals(cum)


def test_days_before_the_meters_first_row_are_no_history_not_gaps():
    rows = profile(WED - dt.timedelta(days=2), WED)  # commissioned on Monday
    base = B.baseline(rows, [], set(), at(WED, 17), 3600, P)
    assert list(base.days) == [WED - dt.timedelta(days=1), WED - dt.timedelta(days=2)]
    assert base.excluded == {}  # the weeks before Monday are not 'gaps': the meter was not there
    del rows[at(WED - dt.timedelta(days=1), 17, 30)]  # a real gap on Tuesday is one
    assert B.baseline(rows, [], set(), at(WED, 17), 3600, P).excluded == {"gap": 1}
