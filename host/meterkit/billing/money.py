"""Exact money and quantities: Decimal arithmetic that traps any rounding, one rounding of the total at the
end (half away from zero), integer splits that lose nothing, and how amounts are written."""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

from meterkit.billing.prices import Prices

ROUNDING = "half away from zero"


# Every money and quantity operation runs in this context: 80 digits, and any rounding raises instead of
# happening silently. Only the final total is rounded (Bill.total), explicitly.
EXACT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN,
                         traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation,
                                decimal.DivisionByZero, decimal.Overflow])


def split_by_weight(total: int, weights: list[int]) -> list[int]:
    """total split in proportion to weights, whole units, summing exactly to total (largest remainder; ties
    to the earlier share)."""
    w = sum(weights)
    base = [total * x // w for x in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % w), i))
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def kwh_of(units: int, per_kwh: int) -> Decimal:
    """units of 1/per_kwh kWh as an exact Decimal (Wh: 1000, mWh: 1_000_000)."""
    return EXACT.divide(Decimal(units), Decimal(per_kwh))


def demand_kw(mwh: int, period_s: int) -> tuple[Decimal, bool]:
    """Average power over one interval, kW, and whether it is exact (periods dividing 3600 s always are)."""
    num, den = mwh * 3600, period_s * 1_000_000
    try:
        return EXACT.divide(Decimal(num), Decimal(den)), True
    except (decimal.Inexact, decimal.Rounded):
        return Decimal(num * 10**6 // den + (1 if 2 * (num * 10**6 % den) >= den else 0)).scaleb(-6), False


def round_money(x: Decimal, minor_unit: int = 2) -> Decimal:
    """x rounded to the minor unit, half away from zero (ROUND_HALF_UP in Decimal's naming)."""
    return x.quantize(Decimal(1).scaleb(-minor_unit), rounding=ROUND_HALF_UP, context=decimal.Context(prec=100))


def plain_number(d: Decimal) -> str:
    """An exact decimal without an exponent and without trailing zeros after the point."""
    s = f"{d:f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def quantity_text(d: Decimal) -> str:
    """A quantity (kWh, kW) exactly, with at least 3 decimals (whole Wh and W show as such)."""
    whole, _, frac = plain_number(d).partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def money_text(d: Decimal, prices: Prices) -> str:
    s = plain_number(d)
    whole, _, frac = s.partition(".")
    return f"{whole}.{frac.ljust(prices.minor_unit, '0')}" if prices.minor_unit or frac else whole
