"""Billing determinants: energy per tariff and maximum demand, from snapshots or from the load profile,
placed in the billing period; the priced lines."""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from meter import messages as mmsg
from meterkit.billing.errors import BillingError
from meterkit.billing.evidence import Commissioning, Row, Snapshot
from meterkit.billing.localtime import LocalTime, TouCalendar, midnight_offset, next_month
from meterkit.billing.money import EXACT, demand_kw, kwh_of, plain_number, split_by_weight
from meterkit.billing.prices import Prices
from meterkit.timefmt import utc_text


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
class Energy:
    source: str
    evidence: str
    imp: dict[int, int]  # tariff -> units
    exp: dict[int, int]
    per_kwh: int  # units per kWh: 1000 (Wh) or 1_000_000 (mWh)
    value_unit: str
    start: dict[str, int] = field(default_factory=dict)  # register -> value at the start / end
    end: dict[str, int] = field(default_factory=dict)


def energy_from_snapshots(opening: Snapshot | Commissioning, closing: Snapshot) -> Energy:
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
    e = Energy("snapshot", ev, {}, {}, 1000, "Wh")
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


def profile_window(rows: list[Row], start: int, end: int, comm: Commissioning | None,
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


def tariff_parts(segs: list[tuple[int, int]], units: int) -> list[tuple[int, int]]:
    """[(tariff, units)]: the growth of one interval split over its tariff segments [(tariff, seconds)] in
    proportion to time, on whole units (largest remainder: nothing lost or made up)."""
    return list(zip([t for t, _ in segs], split_by_weight(units, [n for _, n in segs]), strict=True))


def energy_from_profile(win: list[Row], cal: TouCalendar, comm: Commissioning | None) -> tuple[Energy, list[str]]:
    e = Energy("profile", "", {}, {}, 1_000_000, "mWh")
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
        for dst, d in ((e.imp, di), (e.exp, de)):
            for t, part in tariff_parts(segs, d):
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
    kw, exact = demand_kw(best[1], best[2])
    return best[0], kw, best[2], exact


@dataclass
class Placement:
    label: str
    start: int
    end: int
    local: LocalTime
    opening: Snapshot | None
    closing: Snapshot | None
    notes: list[str]


def place(snaps: list[Snapshot], y: int, m: int, cal: TouCalendar | None, billing_day: int | None,
           dev: bytes) -> Placement:
    """Find the snapshots that open and close period y-m, and its start and end (UTC)."""
    ny, nm = next_month(y, m)
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
    return Placement(label, start, end, local, opening, closing, notes)


def demand_determinants(pl: Placement, pr: Prices, cal: TouCalendar | None, source: str,
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
            out.append(Determinant(code, desc, t or None, EXACT.divide(Decimal(w), Decimal(1000)), "kW",
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


def energy_determinants(energy: Energy, tariffs: list[int], pr: Prices) -> list[Determinant]:
    dets = []
    for c, per, what in ((1, energy.imp, "import"), (2, energy.exp, "export")):
        dets.append(Determinant(f"{c}.8.0", f"energy {what}, total", None, kwh_of(sum(per.values()), energy.per_kwh),
                                "kWh", energy.source, energy.evidence, energy.start.get(f"{c}.8.0"),
                                energy.end.get(f"{c}.8.0"), energy.value_unit))
        for t in tariffs:
            reg = f"{c}.8.{t}"
            dets.append(Determinant(reg, f"energy {what}, {pr.tariff_name(t)}", t, kwh_of(per.get(t, 0),
                                    energy.per_kwh), "kWh", energy.source, energy.evidence, energy.start.get(reg),
                                    energy.end.get(reg), energy.value_unit if reg in energy.start else ""))
    return dets


def price_lines(energy: Energy, tariffs: list[int], demands: list[Determinant], pr: Prices,
                 notes: list[str]) -> list[Line]:
    """Energy per tariff x price, export credits, demand charges, the fixed charge: every amount exact."""
    lines: list[Line] = []
    for t in tariffs:
        q = kwh_of(energy.imp.get(t, 0), energy.per_kwh)
        p = pr.tariffs.get(t)
        if p is None:
            raise BillingError(f"the meter recorded {plain_number(q)} kWh of import in tariff {t}, which has no price "
                               f"in {pr.name or 'the price file'}")
        lines.append(Line(f"energy {p.name or f'tariff {t}'}", q, "kWh", p.import_price,
                          EXACT.multiply(q, p.import_price), f"1.8.{t}"))
    for t in tariffs:
        q = kwh_of(energy.exp.get(t, 0), energy.per_kwh)
        p = pr.tariffs.get(t)
        if p is None or p.export_price is None:
            if q:
                notes.append(f"{plain_number(q)} kWh exported in {pr.tariff_name(t)} not credited (no export price)")
            continue
        lines.append(Line(f"export credit {p.name or f'tariff {t}'}", q, "kWh", EXACT.minus(p.export_price),
                          EXACT.minus(EXACT.multiply(q, p.export_price)), f"2.8.{t}"))
    for d in demands:
        price = pr.demand.get(d.register)
        if price is not None:
            lines.append(Line(f"demand charge {d.register}" + (f" ({pr.tariff_name(d.tariff)})" if d.tariff else ""),
                              d.quantity, "kW", price, EXACT.multiply(d.quantity, price), d.register))
    if pr.fixed:
        lines.append(Line("fixed charge", Decimal(1), "period", pr.fixed, pr.fixed))
    return lines


def cross_check(energy: Energy, rows: list[Row], start: int, end: int) -> str | None:
    """Registers against the load profile over the same period (they differ by the sub-Wh residuals)."""
    by_end = {r.end: r for r in rows}
    a, b = by_end.get(start), by_end.get(end)
    if a is None or b is None:
        return None
    dp = b.import_mwh - a.import_mwh
    dr = (energy.end["1.8.0"] - energy.start["1.8.0"]) * 1000
    prof, regs = plain_number(kwh_of(dp, 10**6)), plain_number(kwh_of(dr, 10**6))
    if abs(dp - dr) < 1000:
        return (f"cross-check: the load profile's import growth {prof} kWh, the registers' {regs} kWh (they differ "
                "by the sub-Wh residuals: under 1 Wh)")
    return (f"WARNING: the load profile's import growth {prof} kWh disagrees with the registers' {regs} kWh by 1 Wh "
            "or more")
