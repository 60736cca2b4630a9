"""Interval readings from the stored load profile: register differences between consecutive rows, nothing invented.

A load-profile row (99.1.0, store.records.IntervalRecord) holds the cumulative import and export registers in mWh
at its end time, its ROW_* flags (meter.messages) and its capture period. The reading of the interval that ends at
row b is b's registers minus those of the row before it, a, over [a.end, b.end):

- consecutive rows one capture period apart: an ordinary reading;
- rows missing between a and b (a gap): ONE reading over the whole span, its true duration in its timePeriod,
  marked QUALITY_DERIVED. The registers are exact at both ends, so the energy is measured, not estimated; how it
  was spread over the missing intervals is unknown and is not made up;
- a register that went back (meter replaced or reset): no reading for that span, in either direction, and the
  summary says so (the sum of the values then differs from the registers' difference by what was skipped);
- row flags of b: clock adjusted -> QUALITY_QUESTIONABLE; power failure or partial -> QUALITY_OTHER. DST and
  relay open do not make a value doubtful (times are UTC; an open relay meters exactly nothing) and are not marked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from meter import tou
from meter.civil import civil_from_days, days_from_civil
from meter.messages import ROW_CLOCK_ADJUSTED, ROW_PARTIAL, ROW_POWER_FAIL
from meterkit.integrations.greenbutton.errors import GreenButtonError
from meterkit.integrations.greenbutton.espi import (
    QUALITY_DERIVED,
    QUALITY_OTHER,
    QUALITY_QUESTIONABLE,
    IntervalBlock,
    IntervalReading,
)
from meterkit.store.records import IntervalRecord
from meterkit.timefmt import utc_text

_DAYS_1970_TO_2000 = -days_from_civil(1970, 1, 1)  # meter.civil counts days from 2000-01-01


@dataclass(frozen=True)
class Interval:
    """Both directions of one interval: [start, end), import and export mWh, the qualities of its readings."""

    start: int
    end: int
    import_mwh: int
    export_mwh: int
    qualities: tuple[int, ...]


@dataclass
class Profile:
    """What the rows of the period give: the intervals, and what was left out or marked."""

    intervals: list[Interval]
    interval_s: int  # the most common capture period
    first: IntervalRecord  # the rows the readings start and end at
    last: IntervalRecord
    missing: int = 0  # capture periods without a row, covered by QUALITY_DERIVED readings
    skipped: list[tuple[int, int]] = field(default_factory=list)  # spans where a register went back
    unreadable: int = 0  # rows whose registers the store could not hold (beyond signed 64 bits)
    marked: Counter = field(default_factory=Counter)  # quality code -> readings marked


def row_qualities(status: int | None) -> list[int]:
    q = []
    if status and status & ROW_CLOCK_ADJUSTED:
        q.append(QUALITY_QUESTIONABLE)
    if status and status & (ROW_POWER_FAIL | ROW_PARTIAL):
        q.append(QUALITY_OTHER)
    return q


def profile_intervals(rows: Sequence[IntervalRecord], what: str) -> Profile:
    """The intervals between consecutive rows (ascending by end time); `what` names the meter and period in errors."""
    usable = [r for r in rows if r.import_mwh is not None and r.export_mwh is not None]
    if not rows:
        raise GreenButtonError(f"{what}: no load-profile rows stored in this period")
    if len(usable) < 2:
        at = f" ({utc_text(usable[0].end)})" if usable else ""
        raise GreenButtonError(f"{what}: only {len(usable)} usable load-profile row{at}: an interval needs the rows "
                               "at both of its ends")
    periods = Counter(r.period_s for r in usable if r.period_s)
    interval_s = periods.most_common(1)[0][0] if periods else usable[1].end - usable[0].end
    prof = Profile([], interval_s, usable[0], usable[-1], unreadable=len(rows) - len(usable))
    for a, b in zip(usable, usable[1:], strict=False):
        di, de = b.import_mwh - a.import_mwh, b.export_mwh - a.export_mwh
        if di < 0 or de < 0:
            prof.skipped.append((a.end, b.end))
            continue
        q = row_qualities(b.status)
        period = b.period_s or interval_s
        span = b.end - a.end
        if span > period:
            q.insert(0, QUALITY_DERIVED)
            prof.missing += -(-span // period) - 1
        prof.marked.update(q)
        prof.intervals.append(Interval(a.end, b.end, di, de, tuple(q)))
    if not prof.intervals:
        raise GreenButtonError(f"{what}: every interval of the period has a register that went back (meter "
                               "replaced or reset?): nothing to export")
    return prof


def daily_blocks(readings: Sequence[IntervalReading], tz: tou.TZ) -> list[IntervalBlock]:
    """Readings grouped by the local date their interval starts on (a block of 23, 24 or 25 hours on a full day)."""
    blocks: list[IntervalBlock] = []
    day = None
    for r in readings:
        d = tz.utc_to_local(r.start) // 86400
        if d != day:
            y, m, dd = civil_from_days(d - _DAYS_1970_TO_2000)
            blocks.append(IntervalBlock(label=f"{y:04d}-{m:02d}-{dd:02d}"))
            day = d
        blocks[-1].readings.append(r)
    return blocks
