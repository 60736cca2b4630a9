"""The baseline method of a demand-response event, for one meter, and the reduction it measures (pure: rows in,
figures out; meterkit.dr.report reads the store). docs/demand-response.md explains it for a utility.

0. A load-profile row holds the cumulative import register (mWh) at its end; an interval's energy is the
   difference from the row one capture period before. Without that row (or with a register that went back:
   a meter reset or replaced) the interval is a gap, never a zero (intervals()).
1. The event covers the intervals ending after its start up to its end: for a 15-minute profile, an event
   17:00-19:00 covers the eight intervals ending 17:15 .. 19:00.
2. Similar days: the days before the event day (local, in the programme's time zone) of the same kind, weekday
   (Mon-Fri) or weekend (Sat, Sun), searched back at most LOOKBACK_DAYS.
3. A similar day is left out when, for this meter, it had a demand-response event of its own (any event the
   meter was sent that touches the day), an outage (a stored outage overlapping the window, or a row flagged
   power fail / partial), a gap (a row of the window missing, or of another capture period), or an irregular
   row (clock adjusted, relay open: not the customer's usual load).
4. The baseline of each row is the average of that row (same clock time) on the most recent DAYS (10) days
   left; fewer left: the average of those, and the report says how many. None left (a meter commissioned
   days ago): "meter before" (NAESB's Meter Before / Meter After): every row's baseline is the average of the
   BEFORE_ROWS rows just before the event (an hour at 15 minutes; a flat load assumed), when those are all
   there and regular; else no baseline.
5. The reduction is the baseline minus the actual, summed over the event's rows that the meter delivered:
   a missing row is a gap, not a zero, so it is left out of both sides (and counted). Average kW: the reduction
   over the hours those rows cover; %: of the baseline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple
from zoneinfo import ZoneInfo

from meter.messages import ROW_CLOCK_ADJUSTED, ROW_PARTIAL, ROW_POWER_FAIL, ROW_RELAY_OPEN

DAYS = 10  # the baseline averages this many similar days
LOOKBACK_DAYS = 60  # ... searched back at most this far
ROW_OUTAGE = ROW_POWER_FAIL | ROW_PARTIAL
ROW_IRREGULAR = ROW_CLOCK_ADJUSTED | ROW_RELAY_OPEN
MWH_PER_KWH = 1_000_000
BEFORE_ROWS = 4  # the "meter before" fallback averages the rows just before the event, at most this many
METHOD_DAYS = "similar days"
METHOD_BEFORE = "meter before"


class Row(NamedTuple):
    """A load-profile row: import mWh (cumulative as stored; per interval after intervals()), its ROW_* flags,
    its capture period."""

    mwh: int | None
    status: int
    period_s: int | None


@dataclass(frozen=True)
class Baseline:
    ends: tuple[int, ...]  # the event's row end times (UTC)
    wanted: int  # days asked for
    days: tuple[dt.date, ...]  # the days averaged, most recent first
    mwh: dict[int, Fraction]  # per event row end: the average of the days (empty when no baseline)
    excluded: dict[str, int] = field(default_factory=dict)  # similar days left out, by reason
    method: str = METHOD_DAYS  # or METHOD_BEFORE (no similar day left)
    before: tuple[int, ...] = ()  # METHOD_BEFORE: the end times of the rows averaged


@dataclass(frozen=True)
class Reduction:
    """One meter's measured reduction; kWh figures None when they cannot be measured (note says why)."""

    intervals: int  # rows the event covers
    measured: int  # of them delivered: the comparison runs over these
    days: int  # baseline days used
    wanted: int
    baseline_kwh: float | None
    actual_kwh: float | None
    reduction_kwh: float | None
    avg_kw: float | None
    percent: float | None
    note: str


def intervals(cumulative: Mapping[int, Row]) -> dict[int, Row]:
    """Step 0: the energy of each interval (by end time) whose row and the row one period before it are both
    there, of the same period, the register not gone back; every other interval is left out (a gap)."""
    out = {}
    for e, r in cumulative.items():
        prev = cumulative.get(e - r.period_s) if r.period_s else None
        if prev is None or r.mwh is None or prev.mwh is None or prev.period_s != r.period_s or r.mwh < prev.mwh:
            continue
        out[e] = Row(r.mwh - prev.mwh, r.status, r.period_s)
    return out


def window_ends(start: int, duration_s: int, period_s: int) -> list[int]:
    """End times of the rows an event covers: on the capture grid, after start, up to start + duration."""
    first = (start // period_s + 1) * period_s
    return list(range(first, start + duration_s + 1, period_s))


def local_day(t: float, tz: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(t, tz).date()


def days_touched(start: float, end: float, tz: dt.tzinfo) -> set[dt.date]:
    """The local dates an interval [start, end) touches."""
    first, last = local_day(start, tz), local_day(max(start, end - 1), tz)
    return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}


def similar(a: dt.date, b: dt.date) -> bool:
    """Both weekdays or both weekend days."""
    return (a.weekday() >= 5) == (b.weekday() >= 5)


def _clock(ends: Sequence[int], period_s: int, day: dt.date, tz: dt.tzinfo) -> list[tuple[int, dt.time]]:
    """Each row as (days after `day`, local clock time of its start)."""
    out = []
    for e in ends:
        s = dt.datetime.fromtimestamp(e - period_s, tz)
        out.append(((s.date() - day).days, s.time()))
    return out


def same_rows(clock: list[tuple[int, dt.time]], period_s: int, day: dt.date, tz: dt.tzinfo) -> list[int]:
    """The end times of the rows at the same clock times on another day."""
    return [int(dt.datetime.combine(day + dt.timedelta(days=off), t, tzinfo=tz).timestamp()) + period_s
            for off, t in clock]


def why_not(ends: Sequence[int], period_s: int, rows: Mapping[int, Row], outages: Sequence[tuple[float, float]],
            dr_days: set[dt.date], touched: set[dt.date]) -> str | None:
    """Why a day's rows cannot be a baseline day (None: they can)."""
    if touched & dr_days:
        return "demand-response event"
    lo, hi = ends[0] - period_s, ends[-1]
    if any(s < hi and e > lo for s, e in outages):
        return "outage"
    got = [rows.get(e) for e in ends]
    if any(r is not None and r.status & ROW_OUTAGE for r in got):
        return "outage"
    if any(r is None or r.mwh is None or r.period_s != period_s for r in got):
        return "gap"
    if any(r is not None and r.status & ROW_IRREGULAR for r in got):
        return "irregular row"
    return None


def baseline(rows: Mapping[int, Row], outages: Sequence[tuple[float, float]], dr_days: Iterable[dt.date],
             start: int, duration_s: int, period_s: int, tz: dt.tzinfo = dt.timezone.utc, days: int = DAYS,
             lookback_days: int = LOOKBACK_DAYS) -> Baseline:
    """The baseline of the event's rows from the meter's rows before it (steps 1-4 above)."""
    ends = window_ends(start, duration_s, period_s)
    if not ends:
        return Baseline((), days, (), {})
    event_day = local_day(ends[0] - period_s, tz)
    clock = _clock(ends, period_s, event_day, tz)
    offsets = {off for off, _ in clock}
    skip = set(dr_days)
    used: list[tuple[dt.date, list[int]]] = []
    excluded: dict[str, int] = {}
    oldest = min(rows, default=None)  # the meter's first row: no day before it is a gap, there is no history
    for back in range(1, lookback_days + 1):
        if len(used) == days:
            break
        day = event_day - dt.timedelta(days=back)
        if not similar(day, event_day):
            continue
        theirs = same_rows(clock, period_s, day, tz)
        if oldest is None or theirs[-1] < oldest:
            break
        touched = {day + dt.timedelta(days=o) for o in offsets}
        why = why_not(theirs, period_s, rows, outages, skip, touched)
        if why is None:
            used.append((day, theirs))
        else:
            excluded[why] = excluded.get(why, 0) + 1
    if not used:
        return meter_before(rows, outages, tuple(ends), period_s, days, excluded)
    mwh = {e: Fraction(sum(rows[theirs[i]].mwh or 0 for _, theirs in used), len(used)) for i, e in enumerate(ends)}
    return Baseline(tuple(ends), days, tuple(d for d, _ in used), mwh, excluded)


def meter_before(rows: Mapping[int, Row], outages: Sequence[tuple[float, float]], ends: tuple[int, ...],
                 period_s: int, days: int, excluded: dict[str, int]) -> Baseline:
    """Step 4's fallback: the rows just before the event (as many as it covers, at most BEFORE_ROWS) averaged,
    the same for every row of the event; no baseline unless they are all there, regular and outside an
    outage (why_not's rules)."""
    n = min(len(ends), BEFORE_ROWS)
    before = [ends[0] - period_s * i for i in range(n, 0, -1)]
    if why_not(before, period_s, rows, outages, set(), set()) is not None:
        return Baseline(ends, days, (), {}, excluded)
    avg = Fraction(sum(rows[e].mwh or 0 for e in before), n)
    return Baseline(ends, days, (), {e: avg for e in ends}, excluded, METHOD_BEFORE, tuple(before))


def reduction(base: Baseline, rows: Mapping[int, Row], period_s: int) -> Reduction:
    """Step 5: the event's actual rows against the baseline."""
    got = [e for e in base.ends if (r := rows.get(e)) is not None and r.mwh is not None]
    n, k = len(base.ends), len(got)
    if not n:
        return Reduction(0, 0, 0, base.wanted, None, None, None, None, None,
                         f"the event ends before any interval of {period_s} s does")
    if not base.mwh:
        return Reduction(n, k, 0, base.wanted, None, _kwh(sum(rows[e].mwh or 0 for e in got)) if got else None,
                         None, None, None, "no baseline: no similar day without an event, outage or gap, and "
                         "no complete regular rows just before the event")
    if not got:
        return Reduction(n, 0, len(base.days), base.wanted, None, None, None, None, None,
                         "no data: the meter delivered no row of the event")
    b = sum(base.mwh[e] for e in got)
    a = sum(rows[e].mwh or 0 for e in got)
    hours = Fraction(k * period_s, 3600)
    if base.method == METHOD_BEFORE:
        notes = [f"baseline: meter before (the {len(base.before)} row(s) before the start; no similar day)"]
    else:
        notes = [f"baseline of {len(base.days)} day(s)" if len(base.days) < base.wanted else ""]
    if k < n:
        notes.append(f"{n - k} of {n} rows missing (gaps, left out of both sides)")
    kw = float((b - a) / hours / MWH_PER_KWH)  # mWh per hour is mW
    return Reduction(n, k, len(base.days), base.wanted, _kwh(b), _kwh(a), _kwh(b - a), kw,
                     float((b - a) * 100 / b) if b else None, "; ".join(x for x in notes if x))


def _kwh(mwh: Fraction | int) -> float:
    return float(Fraction(mwh) / MWH_PER_KWH)


@dataclass(frozen=True)
class Total:
    meters: int
    baseline_kwh: float
    actual_kwh: float
    reduction_kwh: float
    avg_kw: float
    percent: float | None


def total(reductions: Iterable[Reduction]) -> Total:
    """The sum of the meters that have a measured reduction (average kW: the sum of theirs)."""
    rs = [r for r in reductions if r.reduction_kwh is not None]
    b = sum(r.baseline_kwh or 0.0 for r in rs)
    red = sum(r.reduction_kwh or 0.0 for r in rs)
    return Total(len(rs), b, sum(r.actual_kwh or 0.0 for r in rs), red, sum(r.avg_kw or 0.0 for r in rs),
                 red * 100 / b if b else None)


def zone(name: str) -> dt.tzinfo:
    """A time zone by IANA name ('UTC', 'Europe/Berlin'); ValueError if unknown."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e
