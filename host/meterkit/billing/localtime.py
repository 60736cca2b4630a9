"""Local time of a bill: the meter's own TOU calendar (meter.tou: the calendar code the meter runs) with its
POSIX TZ, or a fixed offset inferred from a billing snapshot; billing periods by local month."""

from __future__ import annotations

import calendar as _calendar
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from meter.tou import Calendar, CalendarSet
from meterkit.billing.errors import BillingError


class TouCalendar:
    """A meter.tou Calendar or CalendarSet (active + passive with an activation instant), as billing uses it."""

    def __init__(self, cal: Calendar | CalendarSet):
        self.cal = cal
        cals = [cal] if isinstance(cal, Calendar) else [c for c in (cal.active, cal.passive) if c is not None]
        self.tariffs = max(c.tariffs for c in cals)
        self.used = {p[1] for c in cals for day in c.to_dict()["days"].values() for p in day}
        self.name = " / ".join(c.name or "unnamed" for c in cals)

    @classmethod
    def of(cls, v: Any) -> TouCalendar:
        if isinstance(v, TouCalendar):
            return v
        if isinstance(v, (Calendar, CalendarSet)):
            return cls(v)
        if isinstance(v, dict):
            return cls(CalendarSet.from_dict(v) if "active" in v else Calendar(v))
        return load_calendar(v)

    def tariff_at(self, t: int) -> int:
        return self.cal.tariff_at(t)

    def next_switch(self, t: int) -> int:
        return self.cal.next_switch(t)

    def tz_at(self, t: int) -> Any:
        c = self.cal if isinstance(self.cal, Calendar) else self.cal.calendar_at(t)
        return c.tz

    def segments(self, a: int, b: int) -> list[tuple[int, int]]:
        """[(tariff, seconds)] of the UTC span [a, b), in order, neighbours of one tariff merged."""
        out: list[list[int]] = []
        s = a
        while s < b:
            t = self.tariff_at(s)
            n = min(self.next_switch(s), b)
            if out and out[-1][0] == t:
                out[-1][1] += n - s
            else:
                out.append([t, n - s])
            s = n
        return [(t, n) for t, n in out]


def load_calendar(path: str | Path) -> TouCalendar:
    """A calendar JSON file: the meter.tou calendar dict, or {"active": ..., "passive": ..., "activation": t}."""
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    try:
        return TouCalendar(CalendarSet.from_dict(d) if isinstance(d, dict) and "active" in d else Calendar(d))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def civil(t_local: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=t_local)


def next_month(y: int, m: int) -> tuple[int, int]:
    return (y + 1, 1) if m == 12 else (y, m + 1)


def midnight_offset(t: int) -> int:
    """The UTC offset (s, -11..+14 h) under which UTC instant t is a local midnight."""
    off = (-t) % 86400
    return off - 86400 if off > 14 * 3600 else off


class LocalTime:
    """Local time of the bill: the calendar's POSIX TZ, or a fixed offset inferred from a snapshot."""

    def __init__(self, cal: TouCalendar | None, offset: int | None = None):
        self.cal = cal
        self.offset = offset

    @property
    def known(self) -> bool:
        return self.cal is not None or self.offset is not None

    def local(self, t: int) -> int:
        if self.cal is not None:
            return self.cal.tz_at(t).utc_to_local(t)
        return t + (self.offset or 0)

    def date(self, t: int) -> tuple[int, int, int]:
        d = civil(self.local(t))
        return d.year, d.month, d.day

    def midnight(self, y: int, m: int, d: int) -> int:
        """UTC instant of local midnight starting y-m-d (the first instant the local clock reads it)."""
        t_local = _calendar.timegm((y, m, d, 0, 0, 0))
        if self.cal is not None:
            return self.cal.tz_at(t_local - 14 * 3600).local_to_utc(t_local)
        if self.offset is None:
            raise BillingError("local time unknown: give the TOU calendar (--calendar FILE)")
        return t_local - self.offset

    def zone(self, t: int) -> str:
        if self.cal is not None:
            return self.cal.tz_at(t).name(t)
        o = self.offset or 0
        sign = "-" if o < 0 else "+"
        return f"UTC{sign}{abs(o) // 3600:02d}:{abs(o) % 3600 // 60:02d}"

    def show(self, t: int | None) -> str:
        if t is None:
            return ""
        return civil(self.local(t)).strftime("%Y-%m-%d %H:%M") + " " + self.zone(t)


def parse_period(text: str) -> tuple[int, int]:
    """'2026-10' -> (2026, 10)."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or len(parts[0]) != 4:
        raise BillingError(f"period {text!r}: give the month the billing period starts in as YYYY-MM (2026-10)")
    y, m = int(parts[0]), int(parts[1])
    if not 1 <= m <= 12:
        raise BillingError(f"period {text!r}: month {m} outside 1..12")
    return y, m
