"""One meter's Green Button export: the stored load profile of a period as an ESPI Atom feed.

    exp = green_button(store, "meter-1", start, end, prices="night.prices.json", calendar="night.calendar.json")
    with open("meter-1.xml", "wb") as f:
        exp.write(f)
    print(exp.summary())

The period is [start, end] in UTC seconds: the readings run from the first stored row at or after start to the
last one at or before end (an interval needs the rows at both of its ends). Local time (LocalTimeParameters, the
daily IntervalBlocks) is the TOU calendar's POSIX TZ, or `tz`, or UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from meter import tou
from meterkit.billing.bills import device_of
from meterkit.billing.errors import BillingError
from meterkit.billing.localtime import TouCalendar
from meterkit.billing.money import EXACT, kwh_of, plain_number
from meterkit.integrations.greenbutton import espi
from meterkit.integrations.greenbutton.atom import Feed, write_feed
from meterkit.integrations.greenbutton.errors import GreenButtonError
from meterkit.integrations.greenbutton.localtime import local_time_parameters
from meterkit.integrations.greenbutton.prices import MWH_PER_KWH, Pricing, costs, load_pricing
from meterkit.integrations.greenbutton.readings import Profile, daily_blocks, profile_intervals
from meterkit.store.api import Store
from meterkit.timefmt import utc_text

QUALITY_NAMES = {espi.QUALITY_DERIVED: ("spans", "span", "missing rows (quality 11, derived)"),
                 espi.QUALITY_QUESTIONABLE: ("had", "had", "the clock set (quality 10, questionable)"),
                 espi.QUALITY_OTHER: ("was", "were", "not metered throughout (quality 16, other)")}


@dataclass
class Export:
    feed: Feed
    profile: Profile
    pricing: Pricing | None

    def write(self, out: BinaryIO) -> None:
        write_feed(self.feed, out)

    def total_mwh(self, k: int) -> int:
        """The sum of the values of MeterReading k (0 import, 1 export)."""
        return sum(r.value for r in self.feed.meter_readings[k].readings)

    def total_cost(self, k: int) -> int | None:
        rs = self.feed.meter_readings[k].readings
        return None if self.pricing is None else sum(r.cost or 0 for r in rs)

    def summary(self) -> str:
        """What was exported and what was left out, for people (the CLI prints it on stderr)."""
        p = self.profile
        lines = [f"{len(p.intervals)} intervals from {utc_text(self.feed.start)} to {utc_text(self.feed.end)} "
                 f"(rows every {p.interval_s} s; local time {self.feed.local_time.source})",
                 f"import {plain_number(kwh_of(self.total_mwh(0), MWH_PER_KWH))} kWh, "
                 f"export {plain_number(kwh_of(self.total_mwh(1), MWH_PER_KWH))} kWh"]
        if self.pricing is not None:
            cur = self.pricing.prices.currency
            a, b = (EXACT.divide(self.total_cost(k), espi.COST_UNITS_PER_CURRENCY) for k in (0, 1))
            lines.append(f"cost {plain_number(a)} {cur}, export credit {plain_number(b)} {cur} "
                         f"(energy only: no fixed or demand charges; prices {self.pricing.source})")
        for q, n in sorted(p.marked.items()):
            one, many, what = QUALITY_NAMES[q]
            lines.append(f"{n} interval{'s' if n != 1 else ''} {one if n == 1 else many} {what}")
        if p.missing:
            lines.append(f"{p.missing} capture period{'s' if p.missing != 1 else ''} without a row: the energy is in "
                         "the reading that spans them")
        for a, b in p.skipped:
            lines.append(f"NOT EXPORTED: {utc_text(a)} .. {utc_text(b)}: a register went back (meter replaced or "
                         "reset?)")
        if p.unreadable:
            lines.append(f"{p.unreadable} rows with registers beyond what the store holds were left out")
        return "\n".join(lines)


def _device(store: Store, meter: bytes | str) -> bytes:
    try:
        return device_of(store, meter)
    except BillingError as e:
        raise GreenButtonError(str(e)) from None


def _calendar(calendar: Any) -> TouCalendar | None:
    if calendar is None:
        return None
    try:
        return TouCalendar.of(calendar if not isinstance(calendar, Path) else str(calendar))
    except ValueError as e:
        raise GreenButtonError(f"calendar: {e}") from None


def green_button(store: Store, meter: bytes | str, start: int, end: int, *, prices: str | Path | None = None,
                 calendar: Any = None, tz: str | None = None, now: float | None = None) -> Export:
    """The export of one meter's load profile over [start, end] (see the module docstring). calendar: the meter's
    TOU calendar (file, dict or TouCalendar): its TZ gives local time and its tariffs price the intervals; tz: a
    POSIX TZ string instead (no calendar); prices: a price file (docs/tariffs.md) -> a cost on every reading."""
    if end <= start:
        raise GreenButtonError(f"the period ends ({utc_text(end)}) before it starts ({utc_text(start)})")
    cal = _calendar(calendar)
    if cal is not None and tz is not None:
        raise GreenButtonError("give the time zone once: the calendar's TZ, or --tz without a calendar")
    dev = _device(store, meter)
    tz_text = cal.tz_at(end).string if cal is not None else (tz or "UTC0")
    local = local_time_parameters(tz_text)
    pricing = load_pricing(prices, cal) if prices is not None else None
    rec = store.meter(dev)
    what = f"meter {dev.hex()}, {utc_text(start)} .. {utc_text(end)}"
    prof = profile_intervals(store.interval_rows(dev, start, end), what)
    sets = []
    for flow, k in ((espi.FLOW_FORWARD, "import_mwh"), (espi.FLOW_REVERSE, "export_mwh")):
        rt = espi.ReadingType(flow, prof.interval_s, pricing.currency if pricing is not None else None)
        readings = [espi.IntervalReading(iv.start, iv.end - iv.start, getattr(iv, k), iv.qualities)
                    for iv in prof.intervals]
        if pricing is not None:
            amount = pricing.import_amount if flow == espi.FLOW_FORWARD else pricing.export_amount
            readings = [replace(r, cost=c) for r, c in zip(readings, costs([amount(iv) for iv in prof.intervals]),
                                                           strict=True)]
        sets.append(espi.MeterReadingSet(rt, daily_blocks(readings, tou.TZ(tz_text))))
    feed = Feed(dev, rec.name if rec else None, prof.intervals[0].start, prof.intervals[-1].end, local, sets,
                int(time.time() if now is None else now))
    return Export(feed, prof, pricing)
