"""Time-of-use bills from the head-end database: `meterkit bill`.

    meterkit bill --db PATH --meter ID|NAME --period 2026-10 --prices FILE [--calendar FILE]
                  [--csv OUT] [--plot-day 2026-10-14 --png OUT] [--billing-day N] [--source auto|snapshots|profile]

    prices = load_prices("examples/tariffs/night-2rate.prices.json", calendar)
    b = bill(store, "meter-1", "2026-10", prices, calendar)      # -> Bill
    print(b.format()); b.write_csv(open("det.csv", "w"))

docs/tariffs.md is the user's guide (calendar and price files, worked examples, how a bill is computed).

**Money is never a binary float.** Prices are read from JSON as exact decimals (`json.loads(parse_float=Decimal)`,
or strings); energies are whole Wh (registers) or mWh (load profile), demand W or mW; every amount is computed
in Decimal arithmetic that traps any rounding (``EXACT``), so each line amount and their sum are exact. The
total is rounded once, at the end, to the currency's minor unit (``minor_unit``, default 2 digits), half away
from zero (ROUND_HALF_UP: 0.005 -> 0.01, -0.005 -> -0.01). Line amounts are shown exact.

**The billing period** ``YYYY-MM`` is the one that starts in that month: it is opened by the billing snapshot
whose period end (key 6) falls on a local date in month MM and closed by the first snapshot whose period end
falls in the month after (with billing day 1: October 1 00:00 to November 1 00:00 local time). Local time is
the calendar's POSIX TZ; without a calendar it is inferred from the snapshot itself (a period end is a local
midnight, so its UTC time of day gives the UTC offset, taken in -11..+14 h).

**Billing determinants and their sources** (each `Determinant` says which one it came from):

energy per tariff (1.8.t import, 2.8.t export)
    ``snapshot``: tariff register at the closing snapshot minus the same register at the opening snapshot;
    both snapshots are the signed frames stored as evidence, re-verified with the meter's public key.
    If no snapshot opened the period but the meter's first stored frame is a hello inside the period without
    the 'registers restored' status bit (a meter that started from empty registers: commissioned in this
    period), the opening registers are 0 at that hello ("snapshot" from commissioning).
    Otherwise ``profile``: the load-profile rows (99.1.0, cumulative import/export mWh) from the row at the
    period start to the row at the period end; the growth between two consecutive rows goes to the tariff
    the calendar (meter.tou) has in force during that interval; an interval across a tariff switch is split
    in proportion to time (largest remainder on whole mWh, so nothing is lost or made up), and the growth
    across missing rows is split the same way (an estimate: the note says how many intervals were missing).
maximum demand (1.6.0, 1.6.t)
    ``snapshot``: key 8 of the closing snapshot (1.6.0 absent but tariff maxima present: their maximum).
    Otherwise ``profile``: the largest average import power over one complete capture period; per tariff,
    of the intervals that end in that tariff (the tariff in force during the interval's last second).

The profile and the registers differ by the registers' sub-Wh residuals (each tariff register keeps its own,
so it is the floor of that tariff's energy) when the calendar switches on interval ends.
"""


from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from meterkit.billing.determinants import (
    Determinant,
    Line,
    cross_check,
    demand_determinants,
    energy_determinants,
    energy_from_profile,
    energy_from_snapshots,
    place,
    price_lines,
    profile_window,
)
from meterkit.billing.errors import BillingError
from meterkit.billing.evidence import (
    Commissioning,
    Row,
    Snapshot,
    commissioning,
    profile_rows,
    stored_snapshots,
    verified,
)
from meterkit.billing.localtime import LocalTime, TouCalendar, parse_period
from meterkit.billing.money import EXACT, ROUNDING, money_text, plain_number, quantity_text, round_money
from meterkit.billing.prices import Prices, check_prices_against, load_prices, parse_prices
from meterkit.store.api import Store
from meterkit.timefmt import utc_text

SOURCES = ("auto", "snapshots", "profile")


@dataclass
class Bill:
    device: bytes
    meter_name: str | None
    period: str
    start: int
    end: int
    prices: Prices
    determinants: list[Determinant]
    lines: list[Line]
    notes: list[str]
    sources: dict[str, str]  # "energy"/"demand" -> how it was obtained
    local: LocalTime

    @property
    def currency(self) -> str:
        return self.prices.currency

    @property
    def total_exact(self) -> Decimal:
        s = Decimal(0)
        for ln in self.lines:
            s = EXACT.add(s, ln.amount)
        return s

    @property
    def total(self) -> Decimal:
        """The exact total rounded once to the currency's minor unit, half away from zero."""
        return round_money(self.total_exact, self.prices.minor_unit)

    def determinant(self, register: str) -> Determinant | None:
        return next((d for d in self.determinants if d.register == register), None)

    def format(self) -> str:
        """The bill as text for people."""
        cur = self.currency
        name = f" ({self.meter_name})" if self.meter_name else ""
        out = [f"Bill for meter {self.device.hex()}{name}, period {self.period}",
               f"  from {self.local.show(self.start)} to {self.local.show(self.end)}"
               f"  ({utc_text(self.start)} .. {utc_text(self.end)})",
               f"  prices: {self.prices.name or 'unnamed'} ({cur})", ""]
        head = ("", "quantity", "", "unit price", f"amount {cur}")
        rows = [(ln.description, plain_number(ln.quantity) if ln.unit == "period" else quantity_text(ln.quantity),
                 ln.unit, f"{ln.unit_price:f}", money_text(ln.amount, self.prices)) for ln in self.lines]
        step = Decimal(1).scaleb(-self.prices.minor_unit)
        totals = [("total, exact", money_text(self.total_exact, self.prices)),
                  (f"TOTAL {cur} (rounded to {step}, {ROUNDING})", f"{self.total:.{self.prices.minor_unit}f}")]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
        widths[4] = max(widths[4], *(len(v) for _, v in totals))
        widths[0] = max(widths[0], max(len(k) for k, _ in totals) - sum(widths[1:4]) - 6)
        for r in [head, *rows]:
            out.append("  " + "  ".join((r[i].ljust if i in (0, 2) else r[i].rjust)(widths[i])
                                        for i in range(5)).rstrip())
        total_w = sum(widths) + 8
        out.append("  " + "-" * total_w)
        for k, v in totals:
            out.append("  " + k.ljust(total_w - widths[4]) + v.rjust(widths[4]))
        out.append("")
        out.append("Billing determinants:")
        width = max(len(d.description) for d in self.determinants)
        for d in self.determinants:
            extra = "" if d.at is None else (f", maximum at {self.local.show(d.at)}" if d.at
                                             else ", no demand period counted")
            out.append(f"  {d.register:<7} {d.description:<{width}} {quantity_text(d.quantity):>14} {d.unit:<3}  "
                       f"[{d.source}{extra}]")
        out.append("")
        for k, v in self.sources.items():
            out.append(f"{k} from {v}")
        for n in self.notes:
            out.append(f"note: {n}")
        return "\n".join(out)

    CSV_COLUMNS = ("period", "device", "meter", "register", "description", "tariff", "quantity", "unit", "source",
                   "start_value", "end_value", "value_unit", "period_start_utc", "period_end_utc", "max_at_utc",
                   "evidence")

    def write_csv(self, out: TextIO) -> int:
        """The billing determinants as CSV (one row each, quantities exact); returns the number of rows."""
        w = csv.writer(out, lineterminator="\n")
        w.writerow(self.CSV_COLUMNS)
        for d in self.determinants:
            w.writerow([self.period, self.device.hex(), self.meter_name or "", d.register, d.description,
                        "" if d.tariff is None else d.tariff, quantity_text(d.quantity), d.unit, d.source,
                        "" if d.start_value is None else d.start_value, "" if d.end_value is None else d.end_value,
                        d.value_unit, utc_text(self.start), utc_text(self.end), utc_text(d.at), d.evidence])
        return len(self.determinants)


def bill(store: Store, meter: bytes | str, period: str | tuple[int, int], prices: Prices | dict | str | Path,
         calendar: Any = None, *, billing_day: int | None = None, source: str = "auto") -> Bill:
    """The TOU bill of one meter for one billing period (see the module docstring for every rule).

    meter: device id (bytes), 16 hex digits or the meter's name; period: 'YYYY-MM' (the month the period starts
    in) or (year, month); prices: Prices, a price dict or a price file; calendar: TouCalendar, meter.tou Calendar
    or CalendarSet, a calendar dict or a calendar file (needed for the profile fallback and to place a period
    whose snapshots are missing); billing_day: local day of month the periods end on, used only when no
    snapshot tells it (default 1); source: 'auto' (snapshots, else profile), 'snapshots' or 'profile' (forced).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    cal = None if calendar is None else TouCalendar.of(calendar)
    if isinstance(prices, Prices):
        pr = prices
        if cal is not None:
            check_prices_against(pr, cal)
    elif isinstance(prices, dict):
        pr = parse_prices(prices, cal)
    else:
        pr = load_prices(prices, cal)
    dev = device_of(store, meter)
    y, m = parse_period(period) if isinstance(period, str) else period
    pl = place(stored_snapshots(store, dev), y, m, cal, billing_day, dev)
    notes = pl.notes
    opening = verified(store, dev, pl.opening) if pl.opening is not None else None
    closing = pl.closing = verified(store, dev, pl.closing) if pl.closing is not None else None
    comm = None if opening is not None else commissioning(store, dev, pl.start, pl.end)

    cache: dict[str, list[Row]] = {}

    def rows() -> list[Row]:
        if "rows" not in cache:
            cache["rows"] = profile_rows(store, dev)
        return cache["rows"]

    def window() -> list[Row]:
        if "win" not in cache:
            cache["win"] = profile_window(rows(), pl.start, pl.end, comm, pl.local)
        return cache["win"]

    # --- energy
    sources: dict[str, str] = {}
    open_ev: Snapshot | Commissioning | None = opening or comm
    if source != "profile" and open_ev is not None and closing is not None:
        energy = energy_from_snapshots(open_ev, closing)
        sources["energy"] = energy.evidence
        check = cross_check(energy, rows(), pl.start, pl.end)
        if check:
            notes.append(check)
    else:
        what = "opening" if open_ev is None else "closing"
        if source == "snapshots":
            raise BillingError(f"the snapshot {what} {pl.label} is not in the database (source 'snapshots' forced)")
        if cal is None:
            raise BillingError(f"the billing snapshot {what} {pl.label} is missing: billing from the load profile "
                               "needs the TOU calendar (--calendar FILE)")
        energy, more = energy_from_profile(window(), cal, comm)
        notes += more
        why = "forced" if source == "profile" else f"the snapshot {what} the period is missing"
        sources["energy"] = f"the load profile ({why}): {energy.evidence}"

    demands, used = demand_determinants(pl, pr, cal, source, window, notes)
    if used:
        sources["demand"] = "; ".join(sorted(used))
    tariffs = sorted(set(pr.tariffs) | {t for t, v in energy.imp.items() if v}
                     | {t for t, v in energy.exp.items() if v})
    dets = energy_determinants(energy, tariffs, pr) + demands
    lines = price_lines(energy, tariffs, demands, pr, notes)
    rec = store.meter(dev)
    return Bill(dev, rec.name if rec else None, pl.label, pl.start, pl.end, pr, dets, lines, notes, sources, pl.local)


def device_of(store: Store, meter: bytes | str) -> bytes:
    if isinstance(meter, (bytes, bytearray)):
        if store.meter(bytes(meter)) is None:
            raise BillingError(f"no meter {bytes(meter).hex()} in the database")
        return bytes(meter)
    dev = store.lookup_device(meter)
    if dev is None:
        raise BillingError(f"no meter {meter!r} in the database (give its 16-hex-digit id or its name)")
    return dev
