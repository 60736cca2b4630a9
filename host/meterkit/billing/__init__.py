"""Bills from a meter's signed data: price files, local time from the meter's own TOU calendar, billing
determinants from billing snapshots (or the load profile), money in exact decimals, CSV and plots.

May import: meter (tou, civil: the calendar code the meter runs), meterkit.wire, the store's interface,
meterkit.timefmt, the standard library, matplotlib (plots only). Not the head-end, the CLI or SQL.
"""

from meterkit.billing.bills import SOURCES, Bill, bill
from meterkit.billing.determinants import Determinant, Line
from meterkit.billing.errors import BillingError, PriceError
from meterkit.billing.evidence import Row, Snapshot
from meterkit.billing.localtime import LocalTime, TouCalendar, load_calendar, parse_period
from meterkit.billing.money import ROUNDING, round_money
from meterkit.billing.plot import day_profile, plot_day
from meterkit.billing.prices import Prices, TariffPrice, load_prices, parse_prices

__all__ = ["ROUNDING", "SOURCES", "Bill", "BillingError", "Determinant", "Line", "LocalTime", "PriceError", "Prices",
           "Row", "Snapshot", "TariffPrice", "TouCalendar", "bill", "day_profile", "load_calendar", "load_prices",
           "parse_period", "parse_prices", "plot_day", "round_money"]
