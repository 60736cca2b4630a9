"""Property tests for meter.tou / meter.civil (CPython, hypothesis).

- civil arithmetic against datetime;
- random POSIX TZ strings against two independent POSIX TZ implementations: glibc (TZ + tzset) and CPython's
  zoneinfo (fed a minimal TZif file whose only content is the POSIX footer);
- random calendars x random windows (often straddling a DST change, a season start or a special day) against a
  brute-force minute-by-minute evaluation of local wall-clock time from zoneinfo: tariff_at agrees at every
  minute, and the chain of next_switch instants is exactly the set of instants at which the tariff changes;
- the same for an active + passive calendar with an activation instant inside the window.
"""

from __future__ import annotations

import calendar
import io
import json
import os
import random
import re
import struct
import time
import zoneinfo
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter import civil
from meter.tou import TZ, Calendar, CalendarSet

UTC = timezone.utc
D2000 = date(2000, 1, 1)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAL_SETTINGS = settings(SETTINGS, max_examples=120)


# ------------------------------------------------------------------------------------------- civil


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=date(1, 3, 1), max_value=date(9999, 12, 31)))
def test_civil_matches_datetime(d):
    n = (d - D2000).days
    assert civil.days_from_civil(d.year, d.month, d.day) == n
    assert civil.civil_from_days(n) == (d.year, d.month, d.day)
    assert civil.weekday(n) == d.weekday()
    assert civil.day_of_year(n) == d.timetuple().tm_yday
    assert civil.days_in_month(d.year, d.month) == calendar.monthrange(d.year, d.month)[1]
    assert civil.is_leap(d.year) == calendar.isleap(d.year)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-2 * 10**9, max_value=4 * 10**9))
def test_time_tuple_matches_gmtime(t):
    dt = datetime.fromtimestamp(t, UTC)
    want = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.weekday(), dt.timetuple().tm_yday)
    assert civil.time_tuple(t - 946684800) == want


# ------------------------------------------------------------------------------------ random POSIX TZ


def _hms(sec: int, sign_always=False) -> str:
    sign = "-" if sec < 0 else ("+" if sign_always else "")
    sec = abs(sec)
    h, m, s = sec // 3600, sec // 60 % 60, sec % 60
    out = f"{sign}{h}"
    if m or s:
        out += f":{m:02d}"
    if s:
        out += f":{s:02d}"
    return out


@st.composite
def posix_tz(draw):
    """A random POSIX TZ string with a DST rule whose start and end stay months apart (the order of the two
    transitions within a year never flips, so every implementation agrees on what the rule means)."""
    std_east = draw(st.integers(-12 * 4, 14 * 4)) * 900 + draw(st.sampled_from([0, 0, 0, 17, 1800 + 7]))
    std_east = max(-24 * 3600 + 1, min(24 * 3600 - 1, std_east))
    delta = draw(st.sampled_from([3600, 3600, 1800, 7200, -3600]))
    dst_east = std_east + delta
    names = draw(st.sampled_from([("AAA", "BBB"), ("<+x1>", "<-y2>"), ("STDX", "DSTX")]))
    s = names[0] + _hms(-std_east)
    s += names[1]
    if delta != 3600 or draw(st.booleans()):
        s += _hms(-dst_east)
    allow_n = draw(st.booleans())

    def rule(early: bool):
        kind = draw(st.sampled_from(["M", "J", "n"] if allow_n else ["M", "J"]))
        if kind == "M":
            m = draw(st.integers(2, 5) if early else st.integers(8, 11))
            r = f"M{m}.{draw(st.integers(1, 5))}.{draw(st.integers(0, 6))}"
        else:
            n = draw(st.integers(32, 150) if early else st.integers(213, 334))
            r = ("J" if kind == "J" else "") + str(n)
        if draw(st.booleans()):
            r += "/" + _hms(draw(st.integers(-47 * 3600, 71 * 3600)))
        return r

    north = draw(st.booleans())
    s += "," + rule(north) + "," + rule(not north)
    return s, std_east, allow_n


def _tzif(posix: str, std_east: int) -> bytes:
    """A TZif v2 file without transitions: zoneinfo then evaluates the POSIX footer for every instant."""
    header = b"TZif2" + b"\0" * 15 + struct.pack(">6l", 0, 0, 0, 0, 1, 4)
    body = struct.pack(">lBB", std_east, 0, 0) + b"XXX\0"
    return header + body + header + body + b"\n" + posix.encode() + b"\n"


@contextmanager
def libc_tz(posix: str):
    old = os.environ.get("TZ")
    os.environ["TZ"] = posix
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@SETTINGS
@given(posix_tz(), st.integers(2001, 2090),
       st.lists(st.integers(-4 * 3600, 4 * 3600), min_size=8, max_size=8),
       st.lists(st.integers(0, 366 * 86400), min_size=8, max_size=8))
def test_random_posix_tz_matches_glibc_and_zoneinfo(spec, year, near, anywhere):
    posix, std_east, has_n = spec
    tz = TZ(posix)
    start, end = tz.transitions(year)
    ts = [tr + d for tr in (start, end) for d in near + [-1, 0, 1]]
    y0 = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    ts += [y0 + a for a in anywhere]
    zone = None
    # CPython's zoneinfo (3.11) reads the zero-based `n` rule one day early and J59 as February 29 in leap
    # years (POSIX: J59 is always February 28); glibc follows POSIX there, so only glibc judges those rules.
    if not has_n and not re.search(r"J59(?!\d)", posix):
        zone = zoneinfo.ZoneInfo.from_file(io.BytesIO(_tzif(posix, std_east)), key="random")
    with libc_tz(posix):
        for t in ts:
            lt = time.localtime(t)
            got = (tz.utcoffset(t), tz.is_dst(t), tz.name(t), tz.localtime(t)[:6])
            assert got == (lt.tm_gmtoff, bool(lt.tm_isdst), lt.tm_zone, tuple(lt)[:6]), (posix, t)
            if zone is not None:
                dt = datetime.fromtimestamp(t, zone)
                assert tz.utcoffset(t) == int(dt.utcoffset().total_seconds()), (posix, t)
                assert tz.name(t) == dt.tzname()
            local = tz.utc_to_local(t)
            u = tz.local_to_utc(local)
            assert u <= t and tz.utc_to_local(u) == local, (posix, t, u)


# ------------------------------------------------------------------------ calendars vs brute force

# (POSIX TZ, IANA zone, years in which tzdata follows that rule). All transitions fall on whole UTC minutes.
CAL_ZONES = [
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin", 2010, 2040),
    ("PST8PDT,M3.2.0,M11.1.0", "America/Los_Angeles", 2010, 2040),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney", 2010, 2040),
    ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "Australia/Lord_Howe", 2010, 2040),
    ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "America/Nuuk", 2024, 2040),
    ("<-04>4<-03>,M9.1.6/24,M4.1.6/24", "America/Santiago", 2023, 2040),
    ("<+0530>-5:30", "Asia/Kolkata", 2010, 2040),
    # synthetic rules, judged by zoneinfo evaluating them as a TZif footer: DST ending at 00:30 sends the
    # clock back across midnight while the new day has begun; transitions at 50:00 local; a 2-hour DST.
    ("AAA3BBB,M3.5.0/0:30,M10.5.0/0:30", None, 2010, 2040),
    ("EET-2EEST,M3.4.4/50,M10.4.4/50", None, 2010, 2040),
    ("<+01>-1<+03>-3,M4.1.0/23,M9.5.6/1", None, 2010, 2040),
]

# The zones with midnight or across-midnight transitions are drawn three times as often.
ZONE_CHOICES = CAL_ZONES + [z for z in CAL_ZONES if z[0].startswith(("<-02>", "<-04>", "AAA3"))] * 2


def zone_for(posix: str, name: str | None) -> zoneinfo.ZoneInfo:
    if name is not None:
        return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo.from_file(io.BytesIO(_tzif(posix, TZ(posix).std_offset)), key=posix)

# Minutes where DST changes bite in those zones (gaps, folds, midnight) are drawn more often.
HOT_MINUTES = [0, 1, 29, 30, 59, 60, 61, 89, 90, 119, 120, 121, 149, 150, 179, 180, 181,
               1379, 1380, 1410, 1439]


@st.composite
def window(draw):
    posix, name, y0, y1 = draw(st.sampled_from(ZONE_CHOICES))
    tz = TZ(posix)
    y = draw(st.integers(y0, y1))
    if tz.fixed or draw(st.integers(0, 4)) == 0:
        anchor = int(datetime(y, draw(st.integers(1, 12)), draw(st.integers(1, 28)), tzinfo=UTC).timestamp())
    else:
        anchor = draw(st.sampled_from(tz.transitions(y)))
    w0 = anchor - draw(st.integers(0, 40 * 60)) * 60 - draw(st.integers(0, 59))
    return posix, name, w0, w0 + 2 * 86400


@st.composite
def calendar_dict(draw, posix, dates):
    """A random valid calendar; season starts and special days are often placed on the window's dates."""
    ntar = draw(st.integers(1, 8))
    tariff = st.integers(1, ntar)
    minute = st.one_of(st.integers(1, 1439), st.sampled_from(HOT_MINUTES[1:]))
    days = {}
    for i in range(draw(st.integers(1, 4))):
        mins = sorted(set(draw(st.lists(minute, max_size=6))))
        days[f"d{i}"] = [[0, draw(tariff)]] + [[m, draw(tariff)] for m in mins]
    ids = sorted(days)
    weeks = {f"w{j}": [draw(st.sampled_from(ids)) for _ in range(7)] for j in range(draw(st.integers(1, 3)))}
    some_date = st.one_of(st.sampled_from(dates), st.dates(date(2010, 1, 1), date(2040, 12, 31)))
    starts = {(1, 1)} if draw(st.booleans()) else set()
    for d in draw(st.lists(some_date, max_size=3)):
        starts.add((d.month, d.day))
    if not starts:
        starts.add((draw(st.integers(1, 12)), draw(st.integers(1, 28))))
    seasons = [{"name": f"s{k}", "start": [m, d], "week": draw(st.sampled_from(sorted(weeks)))}
               for k, (m, d) in enumerate(sorted(starts))]
    special, seen = [], set()
    for d in draw(st.lists(some_date, max_size=3)):
        key = [d.year, d.month, d.day] if draw(st.booleans()) else [d.month, d.day]
        if tuple(key) not in seen:
            seen.add(tuple(key))
            special.append({"date": key, "day": draw(st.sampled_from(ids))})
    cal = {"tz": posix, "tariffs": ntar, "seasons": seasons, "weeks": weeks, "days": days}
    if special:
        cal["special"] = special
    return cal


def oracle_profile(cal: dict, d: date) -> str:
    for sp in cal.get("special", []):
        if sp["date"] == [d.year, d.month, d.day]:
            return sp["day"]
    for sp in cal.get("special", []):
        if sp["date"] == [d.month, d.day]:
            return sp["day"]
    week = cal["seasons"][-1]["week"]
    for s in cal["seasons"]:
        if (d.month, d.day) >= tuple(s["start"]):
            week = s["week"]
    return cal["weeks"][week][d.weekday()]


def oracle_tariff(cal: dict, local: datetime) -> int:
    points = cal["days"][oracle_profile(cal, local.date())]
    minute = local.hour * 60 + local.minute
    return [t for m, t in points if m <= minute][-1]


def brute_force(cal: dict, zone: zoneinfo.ZoneInfo, w0: int, w1: int) -> dict[int, int]:
    """Tariff at every whole UTC minute in [w0, w1]: the day profile evaluated at the latest local wall-clock
    time reached so far (so a fall-back repeats no switch), local time from zoneinfo."""
    g0 = (w0 // 60) * 60 - 6 * 3600
    high = None
    out = {}
    for u in range(g0, w1 + 61, 60):
        for v in (u - 1, u):
            local = datetime.fromtimestamp(v, zone).replace(tzinfo=None)
            if high is None or local > high:
                high = local
        if u >= w0 - 60:
            out[u] = oracle_tariff(cal, high)
    return out


def changes(grid: dict[int, int], w0: int, w1: int) -> set[int]:
    return {u for u in grid if w0 < u <= w1 and u - 60 in grid and grid[u] != grid[u - 60]}


def window_dates(zone, w0, w1):
    d0 = datetime.fromtimestamp(w0, zone).date()
    return [d0 + timedelta(days=k) for k in range(-1, 4)]


@CAL_SETTINGS
@given(st.data())
def test_calendar_matches_brute_force(data):
    posix, name, w0, w1 = data.draw(window())
    zone = zone_for(posix, name)
    d = data.draw(calendar_dict(posix, window_dates(zone, w0, w1)))
    cal = Calendar(json.loads(json.dumps(d)))
    assert cal.to_dict() == d
    grid = brute_force(d, zone, w0, w1)
    for u, want in grid.items():
        assert cal.tariff_at(u) == want, (u, datetime.fromtimestamp(u, zone))
        assert cal.tariff_at(u + 37) == want
    # the same from a cold start and in random order (the day cache must not change any answer)
    order = sorted(grid)
    random.Random(data.draw(st.integers(0, 2**32))).shuffle(order)
    cold = Calendar(d)
    for u in order[:300]:
        assert cold.tariff_at(u) == grid[u], ("cold", u)
    for u in order[:20]:
        assert Calendar(d).tariff_at(u) == grid[u], ("fresh", u)
    # the next_switch chain from w0 visits exactly the instants where the tariff changes
    want_changes = changes(grid, w0, w1)
    got, t = [], w0
    while True:
        n = cal.next_switch(t)
        assert n > t
        if n > w1:
            break
        assert cal.tariff_at(n) != cal.tariff_at(n - 1), ("no-op switch inside the window", n)
        got.append(n)
        t = n
    assert got == sorted(want_changes)
    for u in [u for u in order if u >= w0][:20]:        # cold next_switch from anywhere in the window
        later = [c for c in got if c > u]
        n = Calendar(d).next_switch(u)
        assert n == later[0] if later else n > w1, ("cold next_switch", u, n)


@CAL_SETTINGS
@given(st.data())
def test_calendar_set_activation_matches_brute_force(data):
    posix, name, w0, w1 = data.draw(window())
    zone = zone_for(posix, name)
    dates = window_dates(zone, w0, w1)
    active = data.draw(calendar_dict(posix, dates))
    passive_tz = data.draw(st.sampled_from([posix, "UTC0", "CET-1CEST,M3.5.0,M10.5.0/3"]))
    passive = data.draw(calendar_dict(passive_tz, dates))
    at = data.draw(st.integers(w0 + 1, w1 - 1))
    cs = CalendarSet(active)
    cs.activate_passive(passive, at, w0)
    zone_p = {"UTC0": zoneinfo.ZoneInfo("UTC"),
              "CET-1CEST,M3.5.0,M10.5.0/3": zoneinfo.ZoneInfo("Europe/Berlin")}.get(passive_tz, zone)
    ga = brute_force(active, zone, w0, w1)
    gp = brute_force(passive, zone_p, w0, w1)
    for u in ga:
        assert cs.tariff_at(u) == (ga[u] if u < at else gp[u]), u
    before = ga[(at - 1) // 60 * 60]
    assert cs.tariff_at(at - 1) == before and cs.tariff_at(at) == gp[at // 60 * 60]
    want = {u for u in changes(ga, w0, w1) if u < at} | {u for u in changes(gp, w0, w1) if u > at}
    if gp[at // 60 * 60] != before:
        want.add(at)
    got, t = [], w0
    while (n := cs.next_switch(t)) <= w1:
        got.append(n)
        t = n
    assert got == sorted(want)
    assert cs.promote(at - 1) is False and cs.promote(at) is True
    assert cs.tariff_at(at) == gp[at // 60 * 60]
