"""Time-of-use bills from the head-end database: `meterkit bill`.

    meterkit bill --db PATH --meter ID|NAME --period 2026-10 --prices FILE [--calendar FILE]
                  [--csv OUT] [--plot-day 2026-10-14 --png OUT] [--billing-day N] [--source auto|snapshots|profile]

    prices = load_prices("examples/tariffs/night-2rate.prices.json", calendar)
    b = bill(store, "meter-1", "2026-10", prices, calendar)      # -> Bill
    print(b.format()); b.write_csv(open("det.csv", "w"))

docs/tariffs.md is the user's guide (calendar and price files, worked examples, how a bill is computed).

**Money is never a binary float.** Prices are read from JSON as exact decimals (`json.loads(parse_float=Decimal)`,
or strings); energies are whole Wh (registers) or mWh (load profile), demand W or mW; every amount is computed
in Decimal arithmetic that traps any rounding (``_EXACT``), so each line amount and their sum are exact. The
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

import calendar as _calendar
import csv
import datetime as _dt
import decimal
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TextIO

from meter import messages as mmsg
from meter.tou import MAX_TARIFFS, Calendar, CalendarSet
from meterkit import wire as P
from meterkit.store.api import Store
from meterkit.timefmt import utc_text

OBIS_MAX_DEMAND = 10600  # 1.6.0
SOURCES = ("auto", "snapshots", "profile")
ROUNDING = "half away from zero"
_CURRENCY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Every money and quantity operation runs in this context: 80 digits, and any rounding raises instead of
# happening silently. Only the final total is rounded (Bill.total), explicitly.
_EXACT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN,
                         traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation,
                                decimal.DivisionByZero, decimal.Overflow])


class PriceError(ValueError):
    """A price file that cannot be used; the message names the file and the failing element."""


class BillingError(Exception):
    """The data cannot make this bill (no snapshot and no profile, a register going backwards ...)."""


# --- price files ----------------------------------------------------------------------------------------------


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


# --- calendars -------------------------------------------------------------------------------------------------


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


# --- local time -------------------------------------------------------------------------------------------------


def _civil(t_local: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=t_local)


def _next_month(y: int, m: int) -> tuple[int, int]:
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
        d = _civil(self.local(t))
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
        return _civil(self.local(t)).strftime("%Y-%m-%d %H:%M") + " " + self.zone(t)


def parse_period(text: str) -> tuple[int, int]:
    """'2026-10' -> (2026, 10)."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or len(parts[0]) != 4:
        raise BillingError(f"period {text!r}: give the month the billing period starts in as YYYY-MM (2026-10)")
    y, m = int(parts[0]), int(parts[1])
    if not 1 <= m <= 12:
        raise BillingError(f"period {text!r}: month {m} outside 1..12")
    return y, m


# --- evidence from the store ------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A billing snapshot (kind 5) as signed by the meter: period end, registers and maximum demands."""

    seq: int
    period_end: int
    registers: dict[int, int]  # OBIS key -> Wh
    max_demand: dict[int, tuple[int, int]]  # OBIS key -> (W, UTC time)
    verified: bool = False

    def tariff_registers(self, c: int) -> dict[int, int]:
        """{tariff: Wh} of direction c (1 import, 2 export). A single-tariff meter sends no tariff registers:
        tariff 1 is the total then."""
        base = mmsg.OBIS_IMPORT if c == 1 else mmsg.OBIS_EXPORT  # c.8.0; c.8.t = base + t
        regs = {k - base: v for k, v in self.registers.items() if base < k <= base + 99}
        if not regs:
            return {1: self.registers.get(base, 0)}
        if sum(regs.values()) != self.registers.get(base, 0):
            raise BillingError(f"billing snapshot seq {self.seq}: tariff registers {c}.8.t sum to "
                               f"{sum(regs.values())} Wh, not the total {c}.8.0 = {self.registers.get(base)} Wh")
        return regs

    def demand(self, key: int) -> tuple[int, int] | None:
        v = self.max_demand.get(key)
        if v is None and key == OBIS_MAX_DEMAND:
            tar = [x for k, x in self.max_demand.items() if OBIS_MAX_DEMAND < k <= OBIS_MAX_DEMAND + 99]
            if tar:
                v = max(tar, key=lambda x: (x[0], -x[1]))
        return v


def _stored_snapshots(store: Store, dev: bytes) -> list[Snapshot]:
    out = [Snapshot(b.seq, b.period_end, dict(b.registers), dict(b.max_demand)) for b in store.billing_snapshots(dev)]
    out.sort(key=lambda s: (s.period_end, s.seq))
    return out


def _verified(store: Store, dev: bytes, snap: Snapshot) -> Snapshot:
    """The snapshot as its signed frame says (the stored evidence, verified again with the meter's key)."""
    rec = store.meter(dev)
    raw = store.frame_raw(dev, snap.seq)
    if rec is None or raw is None:
        raise BillingError(f"billing snapshot seq {snap.seq}: its signed frame is not in the database")
    pub = P.public_from_bytes(rec.public_key)
    try:
        m = P.verify_and_decode(raw, lambda kid: pub if kid == dev else None)
    except P.ProtocolError as e:
        raise BillingError(f"billing snapshot seq {snap.seq}: the stored frame does not verify ({e}); "
                           "not billing from it") from None
    if m.kind != mmsg.BILLING or m.seq != snap.seq:
        raise BillingError(f"billing snapshot seq {snap.seq}: the stored frame is a {m.kind_name} frame")
    md = m.body.get(mmsg.K_MAX_DEMAND) or {}
    return Snapshot(m.seq, m.body[mmsg.K_PERIOD_END], dict(m.body[mmsg.K_BILLING_REGISTERS]),
                    {k: (v[0], v[1]) for k, v in md.items()}, True)


@dataclass
class Commissioning:
    """The meter started from empty registers inside the period: its first stored frame is such a hello."""

    seq: int
    time: int


def _commissioning(store: Store, dev: bytes, start: int, end: int) -> Commissioning | None:
    first = store.frames_after(dev, -1, limit=1)
    if not first:
        return None
    f = first[0]
    if (f.kind != mmsg.HELLO or (f.status or 0) & (mmsg.ST_RESTORED | mmsg.ST_CLOCK_NOT_SET)
            or not start <= f.meter_time < end):
        return None
    return Commissioning(f.seq, f.meter_time)


@dataclass(frozen=True)
class Row:
    end: int
    import_mwh: int
    export_mwh: int
    status: int
    period_s: int


def _profile_rows(store: Store, dev: bytes) -> list[Row]:
    out = []
    for x in store.interval_rows(dev):
        if x.import_mwh is None or x.export_mwh is None:
            continue  # beyond what the store keeps (signed 64 bits): not a meter of this world
        out.append(Row(x.end, x.import_mwh, x.export_mwh, x.status or 0, x.period_s or 0))
    return out


# --- exact arithmetic ---------------------------------------------------------------------------------------------


def _split(total: int, weights: list[int]) -> list[int]:
    """total split in proportion to weights, whole units, summing exactly to total (largest remainder; ties
    to the earlier share)."""
    w = sum(weights)
    base = [total * x // w for x in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % w), i))
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def _kwh(units: int, per_kwh: int) -> Decimal:
    """units of 1/per_kwh kWh as an exact Decimal (Wh: 1000, mWh: 1_000_000)."""
    return _EXACT.divide(Decimal(units), Decimal(per_kwh))


def _demand_kw(mwh: int, period_s: int) -> tuple[Decimal, bool]:
    """Average power over one interval, kW, and whether it is exact (periods dividing 3600 s always are)."""
    num, den = mwh * 3600, period_s * 1_000_000
    try:
        return _EXACT.divide(Decimal(num), Decimal(den)), True
    except (decimal.Inexact, decimal.Rounded):
        return Decimal(num * 10**6 // den + (1 if 2 * (num * 10**6 % den) >= den else 0)).scaleb(-6), False


# --- determinants -------------------------------------------------------------------------------------------------


@dataclass
class Determinant:
    """One billing determinant: what was measured, how much, and from which evidence."""

    register: str  # OBIS code: 1.8.0, 1.8.t, 2.8.0, 2.8.t, 1.6.0, 1.6.t
    description: str
    tariff: int | None
    quantity: Decimal  # kWh (energy) or kW (demand), exact
    unit: str  # "kWh" or "kW"
    source: str  # "snapshot" or "profile"
    evidence: str  # which frames / rows
    start_value: int | None = None  # energy: the register at the period start (value_unit)
    end_value: int | None = None
    value_unit: str = ""  # "Wh" (registers), "mWh" (profile), "W" (demand)
    at: int | None = None  # demand: UTC time of the maximum


@dataclass
class Line:
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal  # signed: credits are negative
    amount: Decimal  # exact
    register: str = ""


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
            s = _EXACT.add(s, ln.amount)
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
        rows = [(ln.description, _num(ln.quantity) if ln.unit == "period" else _qty(ln.quantity), ln.unit,
                 f"{ln.unit_price:f}", _money(ln.amount, self.prices)) for ln in self.lines]
        step = Decimal(1).scaleb(-self.prices.minor_unit)
        totals = [("total, exact", _money(self.total_exact, self.prices)),
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
            out.append(f"  {d.register:<7} {d.description:<{width}} {_qty(d.quantity):>14} {d.unit:<3}  "
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
                        "" if d.tariff is None else d.tariff, _qty(d.quantity), d.unit, d.source,
                        "" if d.start_value is None else d.start_value, "" if d.end_value is None else d.end_value,
                        d.value_unit, utc_text(self.start), utc_text(self.end), utc_text(d.at), d.evidence])
        return len(self.determinants)


def round_money(x: Decimal, minor_unit: int = 2) -> Decimal:
    """x rounded to the minor unit, half away from zero (ROUND_HALF_UP in Decimal's naming)."""
    return x.quantize(Decimal(1).scaleb(-minor_unit), rounding=ROUND_HALF_UP, context=decimal.Context(prec=100))


def _num(d: Decimal) -> str:
    """An exact decimal without an exponent and without trailing zeros after the point."""
    s = f"{d:f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _qty(d: Decimal) -> str:
    """A quantity (kWh, kW) exactly, with at least 3 decimals (whole Wh and W show as such)."""
    whole, _, frac = _num(d).partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def _money(d: Decimal, prices: Prices) -> str:
    s = _num(d)
    whole, _, frac = s.partition(".")
    return f"{whole}.{frac.ljust(prices.minor_unit, '0')}" if prices.minor_unit or frac else whole


# --- the bill -------------------------------------------------------------------------------------------------------


@dataclass
class _Energy:
    source: str
    evidence: str
    imp: dict[int, int]  # tariff -> units
    exp: dict[int, int]
    per_kwh: int  # units per kWh: 1000 (Wh) or 1_000_000 (mWh)
    value_unit: str
    start: dict[str, int] = field(default_factory=dict)  # register -> value at the start / end
    end: dict[str, int] = field(default_factory=dict)


def _energy_from_snapshots(opening: Snapshot | Commissioning, closing: Snapshot) -> _Energy:
    if isinstance(opening, Commissioning):
        o_imp: dict[int, int] = {}
        o_exp: dict[int, int] = {}
        o_tot = {1: 0, 2: 0}
        ev = (f"signed snapshot seq {closing.seq} minus empty registers at commissioning "
              f"(first-boot hello seq {opening.seq})")
    else:
        o_imp, o_exp = opening.tariff_registers(1), opening.tariff_registers(2)
        o_tot = {1: opening.registers.get(mmsg.OBIS_IMPORT, 0), 2: opening.registers.get(mmsg.OBIS_EXPORT, 0)}
        ev = f"signed snapshots seq {opening.seq} -> {closing.seq}"
    c_imp, c_exp = closing.tariff_registers(1), closing.tariff_registers(2)
    e = _Energy("snapshot", ev, {}, {}, 1000, "Wh")
    for c, o, cl, dst in ((1, o_imp, c_imp, e.imp), (2, o_exp, c_exp, e.exp)):
        for t in sorted(set(o) | set(cl)):
            a, b = o.get(t, 0), cl.get(t, 0)
            if b < a:
                raise BillingError(f"register {c}.8.{t} went backwards from {a} Wh (seq "
                                   f"{getattr(opening, 'seq', '-')}) to {b} Wh (seq {closing.seq}): meter replaced "
                                   "or reset? Bill from the profile (--source profile) or split the period")
            dst[t] = b - a
            e.start[f"{c}.8.{t}"], e.end[f"{c}.8.{t}"] = a, b
        e.start[f"{c}.8.0"] = o_tot[c]
        e.end[f"{c}.8.0"] = closing.registers.get(c * 10000 + 800, 0)
    return e


def _profile_window(rows: list[Row], start: int, end: int, comm: Commissioning | None,
                    local: LocalTime) -> list[Row]:
    win = [r for r in rows if start <= r.end <= end]
    if not win or win[-1].end != end:
        raise BillingError(f"the load profile has no row at the period end {local.show(end)} ({utc_text(end)}): "
                           "cannot bill from it")
    if win[0].end != start:
        if comm is not None and comm.time <= win[0].end and not any(r.end < comm.time for r in rows):
            win.insert(0, Row(comm.time, 0, 0, 0, 0))  # empty registers at the first boot
        else:
            raise BillingError(f"the load profile has no row at the period start {local.show(start)} "
                               f"({utc_text(start)}): cannot bill from it")
    return win


def _energy_from_profile(win: list[Row], cal: TouCalendar, comm: Commissioning | None) -> tuple[_Energy, list[str]]:
    e = _Energy("profile", "", {}, {}, 1_000_000, "mWh")
    missing = 0
    split = 0
    for a, b in zip(win, win[1:], strict=False):
        di, de = b.import_mwh - a.import_mwh, b.export_mwh - a.export_mwh
        if di < 0 or de < 0:
            raise BillingError(f"the load profile goes backwards between {utc_text(a.end)} and {utc_text(b.end)} "
                               f"(import {a.import_mwh} -> {b.import_mwh} mWh, export {a.export_mwh} -> "
                               f"{b.export_mwh} mWh): meter replaced or reset?")
        if b.period_s and b.end - a.end > b.period_s and a.period_s:
            missing += (b.end - a.end) // b.period_s - 1
        segs = cal.segments(a.end, b.end)
        if len(segs) > 1:
            split += 1
        lengths = [n for _, n in segs]
        for dst, d in ((e.imp, di), (e.exp, de)):
            for (t, _), part in zip(segs, _split(d, lengths), strict=True):
                dst[t] = dst.get(t, 0) + part
    e.start = {"1.8.0": win[0].import_mwh, "2.8.0": win[0].export_mwh}
    e.end = {"1.8.0": win[-1].import_mwh, "2.8.0": win[-1].export_mwh}
    first = "empty registers at commissioning" if comm is not None and win[0].period_s == 0 else \
        f"row {utc_text(win[0].end)}"
    e.evidence = f"{len(win) - 1} load-profile intervals from {first} to row {utc_text(win[-1].end)}"
    notes = []
    if missing:
        notes.append(f"ESTIMATED: {missing} load-profile intervals are missing; the energy across each gap is "
                     "spread over its tariffs in proportion to time")
    if split:
        notes.append(f"{split} intervals straddle a tariff switch; their energy is split in proportion to time")
    return e, notes


def _demand_from_profile(win: list[Row], cal: TouCalendar, key: int) -> tuple[int, Decimal, int, bool] | None:
    """(time of the interval end, kW, interval s, exact) of the largest complete-interval average import
    power; for 1.6.t only intervals that end in tariff t. Ties: the earliest."""
    best: tuple[int, int, int] | None = None  # (end, mWh, period)
    t = key % 100
    for a, b in zip(win, win[1:], strict=False):
        if not b.period_s or b.end - a.end != b.period_s:
            continue
        if t and cal.tariff_at(b.end - 1) != t:
            continue
        mwh = b.import_mwh - a.import_mwh
        if best is None or mwh * best[2] > best[1] * b.period_s:
            best = (b.end, mwh, b.period_s)
    if best is None:
        return None
    kw, exact = _demand_kw(best[1], best[2])
    return best[0], kw, best[2], exact


@dataclass
class _Placement:
    label: str
    start: int
    end: int
    local: LocalTime
    opening: Snapshot | None
    closing: Snapshot | None
    notes: list[str]


def _place(snaps: list[Snapshot], y: int, m: int, cal: TouCalendar | None, billing_day: int | None,
           dev: bytes) -> _Placement:
    """Find the snapshots that open and close period y-m, and its start and end (UTC)."""
    ny, nm = _next_month(y, m)
    label = f"{y:04d}-{m:02d}"

    def local_of(s: Snapshot) -> LocalTime:
        return LocalTime(cal) if cal is not None else LocalTime(None, midnight_offset(s.period_end))

    closing = next((s for s in snaps if local_of(s).date(s.period_end)[:2] == (ny, nm)), None)
    before = [s for s in snaps if closing is None or s.period_end < closing.period_end]
    opening = next((s for s in reversed(before) if local_of(s).date(s.period_end)[:2] == (y, m)), None)
    ref = closing or opening
    local = local_of(ref) if ref is not None else LocalTime(cal)
    if not local.known:
        raise BillingError(f"no billing snapshot of meter {dev.hex()} opens or closes {label}: give the TOU calendar "
                           "(--calendar FILE) to bill it from the load profile")
    notes = []
    if cal is None and opening is not None and closing is not None and \
            midnight_offset(opening.period_end) != midnight_offset(closing.period_end):
        notes.append("the two snapshots are local midnights under different UTC offsets (DST?): local times on "
                     "this bill use the closing one's; give --calendar for exact local times")
    day = local.date(ref.period_end)[2] if ref is not None else (billing_day or 1)
    start = opening.period_end if opening is not None else \
        local.midnight(y, m, min(day, _calendar.monthrange(y, m)[1]))
    end = closing.period_end if closing is not None else \
        local.midnight(ny, nm, min(day, _calendar.monthrange(ny, nm)[1]))
    return _Placement(label, start, end, local, opening, closing, notes)


def _demand_determinants(pl: _Placement, pr: Prices, cal: TouCalendar | None, source: str,
                         profile: Callable[[], list[Row]], notes: list[str]) -> tuple[list[Determinant], set[str]]:
    """Maximum demands: every one the closing snapshot holds, and every one priced (from the profile if the
    snapshot lacks it)."""
    closing = pl.closing if source != "profile" else None
    keys = sorted({mmsg.obis_key(k) for k in pr.demand} | (set(closing.max_demand) if closing is not None else set()))
    out: list[Determinant] = []
    used: set[str] = set()
    for key in keys:
        code = mmsg.obis_code(key)
        t = key % 100
        desc = "maximum demand" + (f", {pr.tariff_name(t)}" if t else "")
        v = closing.demand(key) if closing is not None else None
        if v is not None:
            w, at = v
            derived = " (maximum of the tariff maxima)" if key not in closing.max_demand else ""
            out.append(Determinant(code, desc, t or None, _EXACT.divide(Decimal(w), Decimal(1000)), "kW",
                                   "snapshot", f"signed snapshot seq {closing.seq}{derived}", None, w, "W", at))
            used.add(f"signed snapshot seq {closing.seq}")
            continue
        if code not in pr.demand:
            continue
        if source == "snapshots":
            raise BillingError(f"no maximum demand {code} in the closing snapshot (source 'snapshots' forced)")
        if cal is None:
            raise BillingError(f"no maximum demand {code} in a closing snapshot: the profile fallback needs the TOU "
                               "calendar (--calendar FILE)")
        got = _demand_from_profile(profile(), cal, key)
        if got is None:
            raise BillingError(f"no complete load-profile interval in {pl.label} for maximum demand {code}")
        at, kw, period_s, exact = got
        if not exact:
            notes.append(f"{code} from the profile rounded to 1 mW: a {period_s} s interval does not divide 1 h")
        out.append(Determinant(code, desc, t or None, kw, "kW", "profile",
                               f"largest average import over one {period_s} s load-profile interval"
                               + (f" ending in {pr.tariff_name(t)}" if t else ""), None, None, "", at))
        used.add("the load profile" + (" (forced)" if source == "profile" else " (not in a closing snapshot)"))
    return out, used


def _energy_determinants(energy: _Energy, tariffs: list[int], pr: Prices) -> list[Determinant]:
    dets = []
    for c, per, what in ((1, energy.imp, "import"), (2, energy.exp, "export")):
        dets.append(Determinant(f"{c}.8.0", f"energy {what}, total", None, _kwh(sum(per.values()), energy.per_kwh),
                                "kWh", energy.source, energy.evidence, energy.start.get(f"{c}.8.0"),
                                energy.end.get(f"{c}.8.0"), energy.value_unit))
        for t in tariffs:
            reg = f"{c}.8.{t}"
            dets.append(Determinant(reg, f"energy {what}, {pr.tariff_name(t)}", t, _kwh(per.get(t, 0),
                                    energy.per_kwh), "kWh", energy.source, energy.evidence, energy.start.get(reg),
                                    energy.end.get(reg), energy.value_unit if reg in energy.start else ""))
    return dets


def _price_lines(energy: _Energy, tariffs: list[int], demands: list[Determinant], pr: Prices,
                 notes: list[str]) -> list[Line]:
    """Energy per tariff x price, export credits, demand charges, the fixed charge: every amount exact."""
    lines: list[Line] = []
    for t in tariffs:
        q = _kwh(energy.imp.get(t, 0), energy.per_kwh)
        p = pr.tariffs.get(t)
        if p is None:
            raise BillingError(f"the meter recorded {_num(q)} kWh of import in tariff {t}, which has no price in "
                               f"{pr.name or 'the price file'}")
        lines.append(Line(f"energy {p.name or f'tariff {t}'}", q, "kWh", p.import_price,
                          _EXACT.multiply(q, p.import_price), f"1.8.{t}"))
    for t in tariffs:
        q = _kwh(energy.exp.get(t, 0), energy.per_kwh)
        p = pr.tariffs.get(t)
        if p is None or p.export_price is None:
            if q:
                notes.append(f"{_num(q)} kWh exported in {pr.tariff_name(t)} not credited (no export price)")
            continue
        lines.append(Line(f"export credit {p.name or f'tariff {t}'}", q, "kWh", _EXACT.minus(p.export_price),
                          _EXACT.minus(_EXACT.multiply(q, p.export_price)), f"2.8.{t}"))
    for d in demands:
        price = pr.demand.get(d.register)
        if price is not None:
            lines.append(Line(f"demand charge {d.register}" + (f" ({pr.tariff_name(d.tariff)})" if d.tariff else ""),
                              d.quantity, "kW", price, _EXACT.multiply(d.quantity, price), d.register))
    if pr.fixed:
        lines.append(Line("fixed charge", Decimal(1), "period", pr.fixed, pr.fixed))
    return lines


def _cross_check(energy: _Energy, rows: list[Row], start: int, end: int) -> str | None:
    """Registers against the load profile over the same period (they differ by the sub-Wh residuals)."""
    by_end = {r.end: r for r in rows}
    a, b = by_end.get(start), by_end.get(end)
    if a is None or b is None:
        return None
    dp = b.import_mwh - a.import_mwh
    dr = (energy.end["1.8.0"] - energy.start["1.8.0"]) * 1000
    prof, regs = _num(_kwh(dp, 10**6)), _num(_kwh(dr, 10**6))
    if abs(dp - dr) < 1000:
        return (f"cross-check: the load profile's import growth {prof} kWh, the registers' {regs} kWh (they differ "
                "by the sub-Wh residuals: under 1 Wh)")
    return (f"WARNING: the load profile's import growth {prof} kWh disagrees with the registers' {regs} kWh by 1 Wh "
            "or more")


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
    dev = _device(store, meter)
    y, m = parse_period(period) if isinstance(period, str) else period
    pl = _place(_stored_snapshots(store, dev), y, m, cal, billing_day, dev)
    notes = pl.notes
    opening = _verified(store, dev, pl.opening) if pl.opening is not None else None
    closing = pl.closing = _verified(store, dev, pl.closing) if pl.closing is not None else None
    comm = None if opening is not None else _commissioning(store, dev, pl.start, pl.end)

    cache: dict[str, list[Row]] = {}

    def rows() -> list[Row]:
        if "rows" not in cache:
            cache["rows"] = _profile_rows(store, dev)
        return cache["rows"]

    def window() -> list[Row]:
        if "win" not in cache:
            cache["win"] = _profile_window(rows(), pl.start, pl.end, comm, pl.local)
        return cache["win"]

    # --- energy
    sources: dict[str, str] = {}
    open_ev: Snapshot | Commissioning | None = opening or comm
    if source != "profile" and open_ev is not None and closing is not None:
        energy = _energy_from_snapshots(open_ev, closing)
        sources["energy"] = energy.evidence
        check = _cross_check(energy, rows(), pl.start, pl.end)
        if check:
            notes.append(check)
    else:
        what = "opening" if open_ev is None else "closing"
        if source == "snapshots":
            raise BillingError(f"the snapshot {what} {pl.label} is not in the database (source 'snapshots' forced)")
        if cal is None:
            raise BillingError(f"the billing snapshot {what} {pl.label} is missing: billing from the load profile "
                               "needs the TOU calendar (--calendar FILE)")
        energy, more = _energy_from_profile(window(), cal, comm)
        notes += more
        why = "forced" if source == "profile" else f"the snapshot {what} the period is missing"
        sources["energy"] = f"the load profile ({why}): {energy.evidence}"

    demands, used = _demand_determinants(pl, pr, cal, source, window, notes)
    if used:
        sources["demand"] = "; ".join(sorted(used))
    tariffs = sorted(set(pr.tariffs) | {t for t, v in energy.imp.items() if v}
                     | {t for t, v in energy.exp.items() if v})
    dets = _energy_determinants(energy, tariffs, pr) + demands
    lines = _price_lines(energy, tariffs, demands, pr, notes)
    rec = store.meter(dev)
    return Bill(dev, rec.name if rec else None, pl.label, pl.start, pl.end, pr, dets, lines, notes, sources, pl.local)


def _device(store: Store, meter: bytes | str) -> bytes:
    if isinstance(meter, (bytes, bytearray)):
        if store.meter(bytes(meter)) is None:
            raise BillingError(f"no meter {bytes(meter).hex()} in the database")
        return bytes(meter)
    dev = store.lookup_device(meter)
    if dev is None:
        raise BillingError(f"no meter {meter!r} in the database (give its 16-hex-digit id or its name)")
    return dev


# --- a day's load profile, coloured by tariff ---------------------------------------------------------------------

TARIFF_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def day_profile(store: Store, meter: bytes | str, day: str, calendar: Any) -> tuple[LocalTime, int, int, list[tuple]]:
    """The intervals of one local day: (local time, day start, day end, [(start, end, import W, export W,
    tariff)]) with average powers as exact Decimals; intervals whose rows are missing are left out."""
    cal = TouCalendar.of(calendar)
    dev = _device(store, meter)
    try:
        d = _dt.date.fromisoformat(day)
    except ValueError:
        raise BillingError(f"day {day!r}: give a date as YYYY-MM-DD") from None
    local = LocalTime(cal)
    d0 = local.midnight(d.year, d.month, d.day)
    nxt = d + _dt.timedelta(days=1)
    d1 = local.midnight(nxt.year, nxt.month, nxt.day)
    rows = [r for r in _profile_rows(store, dev) if d0 - 86400 <= r.end <= d1]
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        if b.end <= d0 or not b.period_s or b.end - a.end != b.period_s:
            continue
        w_i = _EXACT.divide(Decimal((b.import_mwh - a.import_mwh) * 3600), Decimal(b.period_s * 1000)) \
            if 3600 % b.period_s == 0 else Decimal((b.import_mwh - a.import_mwh) * 3600 // (b.period_s * 1000))
        w_e = _EXACT.divide(Decimal((b.export_mwh - a.export_mwh) * 3600), Decimal(b.period_s * 1000)) \
            if 3600 % b.period_s == 0 else Decimal((b.export_mwh - a.export_mwh) * 3600 // (b.period_s * 1000))
        out.append((a.end, b.end, w_i, w_e, cal.tariff_at(b.end - 1)))
    return local, d0, d1, out


def plot_day(store: Store, meter: bytes | str, day: str, calendar: Any, png: str | Path,
             prices: Prices | None = None) -> int:
    """Write a PNG of one local day's load profile (average power per interval; export below zero), each bar
    coloured by the tariff the interval ends in. Returns the number of intervals drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    local, d0, d1, ivs = day_profile(store, meter, day, calendar)
    if not ivs:
        raise BillingError(f"no load-profile intervals on {day}")
    dev = _device(store, meter)
    rec = store.meter(dev)
    name = (prices.tariff_name if prices is not None else (lambda t: f"tariff {t}"))
    kwh_by: dict[int, Decimal] = {}
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    for a, b, wi, we, t in ivs:
        x, width = (a - d0) / 3600, (b - a) / 3600
        colour = TARIFF_COLOURS[(t - 1) % len(TARIFF_COLOURS)]
        ax.bar(x, float(wi), width=width, align="edge", color=colour, edgecolor="white", linewidth=0.3)
        if we:
            ax.bar(x, -float(we), width=width, align="edge", color=colour, alpha=0.45, edgecolor="white",
                   linewidth=0.3)
        kwh_by[t] = _EXACT.add(kwh_by.get(t, Decimal(0)), _EXACT.divide(_EXACT.multiply(wi, Decimal(b - a)),
                                                                         Decimal(3_600_000)))
    hours = (d1 - d0) / 3600
    ax.set_xlim(0, hours)
    ticks = list(range(0, int(hours) + 1, 2))
    ax.set_xticks(ticks)  # placed by elapsed time, labelled by the local wall clock (a DST day shows it)
    ax.set_xticklabels([_civil(local.local(d0 + h * 3600)).strftime("%H:%M") for h in ticks])
    ax.axhline(0, color="black", linewidth=0.6)
    zones = local.zone(d0) + (f" -> {local.zone(d1 - 1)}" if local.zone(d0) != local.zone(d1 - 1) else "")
    ax.set_xlabel(f"local time ({zones}; this day has {hours:g} h)")
    ax.set_ylabel("average power per interval, W (export < 0)")
    who = f"{dev.hex()}" + (f" ({rec.name})" if rec is not None and rec.name else "")
    ax.set_title(f"load profile of meter {who} on {day}, coloured by tariff")
    handles = [Patch(color=TARIFF_COLOURS[(t - 1) % len(TARIFF_COLOURS)],
                     label=f"{t}: {name(t)}, {_num(round_money(kwh_by[t], 3))} kWh")
               for t in sorted(kwh_by)]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, format="png")
    plt.close(fig)
    return len(ivs)


# --- command line -------------------------------------------------------------------------------------------------


__all__ = ["Bill", "BillingError", "Determinant", "Line", "PriceError", "Prices", "TariffPrice", "TouCalendar",
           "bill", "load_calendar", "load_prices", "parse_prices", "plot_day", "round_money"]

