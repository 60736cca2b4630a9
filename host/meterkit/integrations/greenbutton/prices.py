"""The cost of each interval, from the price file and TOU calendar that `meterkit bill` uses (docs/tariffs.md).

There is no second price model: the price file is meterkit.billing's, read by its own loader, and an interval's
energy goes to the calendar's tariffs exactly as a bill from the load profile splits it (billing.determinants:
tariff_parts, in proportion to time, on whole mWh). Import is charged at the tariff's import price; export is
credited at its export price, written as a negative cost; export in a tariff without an export price is not
credited, as on the bill. Amounts are exact decimals (billing.money.EXACT).

ESPI writes a cost in hundred-thousandths of the currency. Each reading's cost is the running total rounded
(half away from zero) minus the previous running total rounded, so that every cost is within one unit of its
exact amount and the costs of a MeterReading add up to its exact total rounded once: nothing is lost to
rounding, however many intervals there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from meterkit.billing.determinants import tariff_parts
from meterkit.billing.errors import PriceError
from meterkit.billing.localtime import TouCalendar
from meterkit.billing.money import EXACT, kwh_of, round_money
from meterkit.billing.prices import Prices, load_prices
from meterkit.integrations.greenbutton.errors import GreenButtonError
from meterkit.integrations.greenbutton.espi import COST_UNITS_PER_CURRENCY, currency_number
from meterkit.integrations.greenbutton.readings import Interval
from meterkit.timefmt import utc_text

MWH_PER_KWH = 1_000_000
COST_DIGITS = 5  # hundred-thousandths


@dataclass
class Pricing:
    """A price file with the calendar that says which tariff is in force (None: a single-rate price file)."""

    prices: Prices
    calendar: TouCalendar | None
    source: str  # the price file, for the feed and the summary

    @property
    def currency(self) -> int:
        return currency_number(self.prices.currency)

    def parts(self, iv: Interval, mwh: int) -> list[tuple[int, int]]:
        """[(tariff, mWh)] of one interval's energy in one direction."""
        if self.calendar is None:
            return [(1, mwh)]
        return tariff_parts(self.calendar.segments(iv.start, iv.end), mwh)

    def import_amount(self, iv: Interval) -> Decimal:
        total = Decimal(0)
        for t, mwh in self.parts(iv, iv.import_mwh):
            p = self.prices.tariffs.get(t)
            if p is None:
                raise GreenButtonError(f"{self.source}: tariff {t} is in force from the interval starting "
                                       f"{utc_text(iv.start)} but has no price")
            total = EXACT.add(total, EXACT.multiply(kwh_of(mwh, MWH_PER_KWH), p.import_price))
        return total

    def export_amount(self, iv: Interval) -> Decimal:
        total = Decimal(0)
        for t, mwh in self.parts(iv, iv.export_mwh):
            p = self.prices.tariffs.get(t)
            if p is not None and p.export_price is not None:
                total = EXACT.subtract(total, EXACT.multiply(kwh_of(mwh, MWH_PER_KWH), p.export_price))
        return total


def load_pricing(path: str | Path, calendar: TouCalendar | None) -> Pricing:
    """The price file (checked against the calendar when one is given); without a calendar only a single-rate file
    (tariff 1 alone) can price intervals."""
    try:
        prices = load_prices(path, calendar)
    except PriceError as e:
        raise GreenButtonError(str(e)) from None
    if calendar is None and set(prices.tariffs) != {1}:
        raise GreenButtonError(f"{path}: prices tariffs {', '.join(map(str, sorted(prices.tariffs)))}: which one is "
                               "in force when needs the meter's TOU calendar (--calendar FILE)")
    currency_number(prices.currency)  # an unknown currency is refused before anything is written
    return Pricing(prices, calendar, str(path))


def costs(amounts: Sequence[Decimal]) -> list[int]:
    """Exact amounts -> costs in hundred-thousandths, each the rounded running total's step (see the module doc)."""
    out, running, before = [], Decimal(0), 0
    for a in amounts:
        running = EXACT.add(running, a)
        now = int(round_money(running, COST_DIGITS) * COST_UNITS_PER_CURRENCY)
        out.append(now - before)
        before = now
    return out
