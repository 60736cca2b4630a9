"""A local day's load profile, coloured by the tariff in force (matplotlib, PNG)."""

from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from meterkit.billing.bills import device_of
from meterkit.billing.errors import BillingError
from meterkit.billing.evidence import profile_rows
from meterkit.billing.localtime import LocalTime, TouCalendar, civil
from meterkit.billing.money import EXACT, plain_number, round_money
from meterkit.billing.prices import Prices
from meterkit.store.api import Store

TARIFF_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def day_profile(store: Store, meter: bytes | str, day: str, calendar: Any) -> tuple[LocalTime, int, int, list[tuple]]:
    """The intervals of one local day: (local time, day start, day end, [(start, end, import W, export W,
    tariff)]) with average powers as exact Decimals; intervals whose rows are missing are left out."""
    cal = TouCalendar.of(calendar)
    dev = device_of(store, meter)
    try:
        d = _dt.date.fromisoformat(day)
    except ValueError:
        raise BillingError(f"day {day!r}: give a date as YYYY-MM-DD") from None
    local = LocalTime(cal)
    d0 = local.midnight(d.year, d.month, d.day)
    nxt = d + _dt.timedelta(days=1)
    d1 = local.midnight(nxt.year, nxt.month, nxt.day)
    rows = [r for r in profile_rows(store, dev) if d0 - 86400 <= r.end <= d1]
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        if b.end <= d0 or not b.period_s or b.end - a.end != b.period_s:
            continue
        w_i = EXACT.divide(Decimal((b.import_mwh - a.import_mwh) * 3600), Decimal(b.period_s * 1000)) \
            if 3600 % b.period_s == 0 else Decimal((b.import_mwh - a.import_mwh) * 3600 // (b.period_s * 1000))
        w_e = EXACT.divide(Decimal((b.export_mwh - a.export_mwh) * 3600), Decimal(b.period_s * 1000)) \
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
    dev = device_of(store, meter)
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
        kwh_by[t] = EXACT.add(kwh_by.get(t, Decimal(0)), EXACT.divide(EXACT.multiply(wi, Decimal(b - a)),
                                                                         Decimal(3_600_000)))
    hours = (d1 - d0) / 3600
    ax.set_xlim(0, hours)
    ticks = list(range(0, int(hours) + 1, 2))
    ax.set_xticks(ticks)  # placed by elapsed time, labelled by the local wall clock (a DST day shows it)
    ax.set_xticklabels([civil(local.local(d0 + h * 3600)).strftime("%H:%M") for h in ticks])
    ax.axhline(0, color="black", linewidth=0.6)
    zones = local.zone(d0) + (f" -> {local.zone(d1 - 1)}" if local.zone(d0) != local.zone(d1 - 1) else "")
    ax.set_xlabel(f"local time ({zones}; this day has {hours:g} h)")
    ax.set_ylabel("average power per interval, W (export < 0)")
    who = f"{dev.hex()}" + (f" ({rec.name})" if rec is not None and rec.name else "")
    ax.set_title(f"load profile of meter {who} on {day}, coloured by tariff")
    handles = [Patch(color=TARIFF_COLOURS[(t - 1) % len(TARIFF_COLOURS)],
                     label=f"{t}: {name(t)}, {plain_number(round_money(kwh_by[t], 3))} kWh")
               for t in sorted(kwh_by)]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, format="png")
    plt.close(fig)
    return len(ivs)
