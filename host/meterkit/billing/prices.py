"""Price files (JSON, docs/tariffs.md): read as exact decimals, checked element by element."""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from meter.tou import MAX_TARIFFS
from meterkit.billing.errors import PriceError
from meterkit.billing.localtime import TouCalendar

_CURRENCY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class TariffPrice:
    tariff: int
    name: str
    import_price: Decimal  # currency per kWh imported
    export_price: Decimal | None = None  # currency per kWh exported, credited; None: export not credited


@dataclass(frozen=True)
class Prices:
    currency: str
    tariffs: dict[int, TariffPrice]
    demand: dict[str, Decimal] = field(default_factory=dict)  # "1.6.0" / "1.6.t" -> currency per kW
    fixed: Decimal = Decimal(0)  # per billing period
    minor_unit: int = 2  # digits after the decimal point the total is rounded to
    name: str = ""

    def tariff_name(self, t: int) -> str:
        p = self.tariffs.get(t)
        return p.name if p is not None and p.name else f"tariff {t}"


_PRICE_KEYS = ("name", "comment", "currency", "minor_unit", "tariffs", "demand", "fixed")


_TARIFF_KEYS = ("name", "comment", "import", "export")


def _perr(path: str, why: str) -> PriceError:
    return PriceError(f"prices{' ' + path if path else ''}: {why}")


def _keys(d: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise _perr(path, f"must be an object, not {_type(d)}")
    for k in d:
        if k not in allowed:
            raise _perr(path, f"unknown key {k!r} (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in d:
            raise _perr(path, f"missing field {k!r}")


def _type(v: Any) -> str:
    return {bool: "true/false", str: "a string", list: "a list", dict: "an object", type(None): "null",
            float: "a binary float"}.get(type(v), type(v).__name__)


def _amount(v: Any, path: str) -> Decimal:
    """A price: a JSON number (read as an exact decimal), a decimal string, an int or a Decimal; >= 0."""
    if type(v) is int or isinstance(v, Decimal):
        d = Decimal(v)
    elif isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except decimal.InvalidOperation:
            raise _perr(path, f"{v!r} is not a decimal number") from None
    elif isinstance(v, float):
        raise _perr(path, f"{v!r} is a binary float: give the price as a decimal string or load the file with "
                          "load_prices (exact decimals)")
    else:
        raise _perr(path, f"must be a number, not {_type(v)}")
    if not d.is_finite():
        raise _perr(path, f"{v!r} is not a finite number")
    if d < 0:
        raise _perr(path, f"negative price {d} (a credit for export goes in 'export', as a positive number)")
    return d


def _tariff_number(k: Any, path: str) -> int:
    s = str(k)
    if not s.isdigit() or not 1 <= int(s) <= MAX_TARIFFS:
        raise _perr(path, f"unknown tariff {k!r}: tariffs are numbered 1..{MAX_TARIFFS}")
    return int(s)


def parse_prices(d: Any, calendar: Any = None) -> Prices:
    """Validate a price dict (see docs/tariffs.md) and return Prices. With a calendar, every tariff the
    calendar uses must have a price and no price may name a tariff the calendar does not have."""
    _keys(d, "", _PRICE_KEYS, ("currency", "tariffs"))
    name = d.get("name", "")
    if not isinstance(name, str):
        raise _perr("name", f"must be a string, not {_type(name)}")
    cur = d["currency"]
    if not isinstance(cur, str) or len(cur) != 3 or any(c not in _CURRENCY_CHARS for c in cur):
        raise _perr("currency", f"must be an ISO 4217 code of 3 capital letters (EUR, USD ...), not {cur!r}")
    minor = d.get("minor_unit", 2)
    if type(minor) is not int or not 0 <= minor <= 6:
        raise _perr("minor_unit", f"must be an integer 0..6 (digits of the currency's minor unit), not {minor!r}")
    tariffs = d["tariffs"]
    if not isinstance(tariffs, dict) or not tariffs:
        raise _perr("tariffs", "must be a non-empty object {\"1\": {\"import\": price per kWh, ...}, ...}")
    tp: dict[int, TariffPrice] = {}
    for k in sorted(tariffs, key=str):
        path = f"tariffs[{k!r}]"
        t = _tariff_number(k, path)
        if t in tp:
            raise _perr(path, f"tariff {t} listed twice")
        e = tariffs[k]
        _keys(e, path, _TARIFF_KEYS, ("import",))
        tname = e.get("name", "")
        if not isinstance(tname, str):
            raise _perr(path + ".name", f"must be a string, not {_type(tname)}")
        exp = _amount(e["export"], path + ".export") if "export" in e else None
        tp[t] = TariffPrice(t, tname, _amount(e["import"], path + ".import"), exp)
    demand: dict[str, Decimal] = {}
    dem = d.get("demand", {})
    if not isinstance(dem, dict):
        raise _perr("demand", f"must be an object {{\"1.6.0\": price per kW, ...}}, not {_type(dem)}")
    for k in sorted(dem, key=str):
        path = f"demand[{k!r}]"
        parts = str(k).split(".")
        if len(parts) != 3 or parts[:2] != ["1", "6"] or not parts[2].isdigit():
            raise _perr(path, "a demand register is 1.6.0 (maximum demand) or 1.6.t (maximum in tariff t)")
        t = int(parts[2])
        if t and t not in tp:
            raise _perr(path, f"unknown tariff {t}: it has no energy price in 'tariffs'")
        demand[f"1.6.{t}"] = _amount(dem[k], path)
    fixed = _amount(d["fixed"], "fixed") if "fixed" in d else Decimal(0)
    prices = Prices(cur, tp, demand, fixed, minor, name)
    if calendar is not None:
        check_prices_against(prices, calendar)
    return prices


def check_prices_against(prices: Prices, calendar: Any) -> None:
    """PriceError unless the prices and the calendar name the same tariffs (see parse_prices)."""
    cal = TouCalendar.of(calendar)
    for t in sorted(prices.tariffs):
        if t > cal.tariffs:
            raise _perr(f"tariffs['{t}']", f"unknown tariff {t}: the calendar {cal.name!r} has tariffs "
                                           f"1..{cal.tariffs}")
    for t in sorted(cal.used):
        if t not in prices.tariffs:
            raise _perr("tariffs", f"the calendar {cal.name!r} uses tariff {t}, which has no price")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_prices(path: str | Path, calendar: Any = None) -> Prices:
    """Read a price file (JSON; numbers are read as exact decimals) and validate it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise PriceError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        d = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError as e:
        raise PriceError(f"{path}: not valid JSON: {e}") from None
    try:
        return parse_prices(d, calendar)
    except PriceError as e:
        raise PriceError(f"{path}: {e}") from None
