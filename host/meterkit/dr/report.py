"""`meterkit dr report EVENT`: an event's participation and measured reduction, per meter and for the group.

The store's rows go into the method (meterkit.dr.baseline) as they are. The group total counts the meters that
took part (accepted, not opted out) and have a measured reduction; opted-out meters are totalled apart, and
meters that refused or were never reached are listed with their figures but counted in neither total.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict

from meterkit.dr import baseline as B
from meterkit.dr.participation import Participation, participation, tally
from meterkit.headend.texttable import text_table
from meterkit.store.api import Store
from meterkit.store.records import DREventRecord
from meterkit.timefmt import utc_text


class ReportError(ValueError):
    """A report that cannot be made (no such event); the message says why, for a person."""


def meter_rows(store: Store, device: bytes, event: DREventRecord, lookback_days: int) -> dict[int, B.Row]:
    """The energy of the meter's load-profile intervals from the lookback to a day past the event, by end time
    (the stored rows hold cumulative registers: baseline.intervals)."""
    lo = event.start - (lookback_days + 2) * 86400
    return B.intervals({r.end: B.Row(r.import_mwh, r.status or 0, r.period_s)
                        for r in store.interval_rows(device, from_end=lo, to_end=event.end + 86400)})


def capture_period(rows: dict[int, B.Row], event: DREventRecord) -> int | None:
    """The capture period of the rows inside the event (else of all the rows): the most common one."""
    inside = [r.period_s for e, r in rows.items() if event.start < e <= event.end and r.period_s]
    periods = inside or [r.period_s for r in rows.values() if r.period_s]
    return Counter(periods).most_common(1)[0][0] if periods else None


def measure_meter(store: Store, device: bytes, event: DREventRecord, now: float, tz: dt.tzinfo, days: int,
                  lookback_days: int = B.LOOKBACK_DAYS) -> tuple[B.Baseline | None, B.Reduction]:
    rows = meter_rows(store, device, event, lookback_days)
    period = capture_period(rows, event)
    if period is None:
        return None, B.Reduction(0, 0, 0, days, None, None, None, None, None, "no load-profile rows")
    outages = [(o.start, now if o.end is None else o.end) for o in store.outages(device)]
    dr_days: set[dt.date] = set()
    for other in store.dr_events(device):
        if other.id != event.id:
            dr_days |= B.days_touched(other.start, other.end, tz)
    base = B.baseline(rows, outages, dr_days, event.start, event.duration_s, period, tz, days, lookback_days)
    return base, B.reduction(base, rows, period)


def _meter_entry(p: Participation, base: B.Baseline | None, red: B.Reduction) -> dict:
    return {"device": p.device_id.hex(), "meter": p.name, "participation": p.state, "reason": p.reason,
            "accepted_utc": utc_text(p.accepted_at), "started_utc": utc_text(p.started_at),
            "ended_utc": utc_text(p.ended_at), "opted_out_utc": utc_text(p.opted_out_at), **asdict(red),
            "baseline_method": base.method if base and base.mwh else None,
            "baseline_dates": [d.isoformat() for d in base.days] if base else [],
            "days_excluded": dict(base.excluded) if base else {}}


def event_report(store: Store, event_id: int, now: float, tz_name: str = "UTC", days: int = B.DAYS) -> dict:
    """The report as a JSON-able dict (ReportError for an unknown event, ValueError for a bad zone or days)."""
    event = store.dr_event(event_id)
    if event is None:
        raise ReportError(f"no demand-response event {event_id} (meterkit dr list)")
    if not 1 <= days <= 30:
        raise ValueError(f"--days must be 1..30, not {days}")
    tz = B.zone(tz_name)
    parts = participation(store, event, now)
    meters, took_part, opted_out = [], [], []
    for p in parts:
        base, red = measure_meter(store, p.device_id, event, now, tz, days)
        meters.append(_meter_entry(p, base, red))
        if p.state == "accepted":
            took_part.append(red)
        elif p.state == "opted out":
            opted_out.append(red)
    return {
        "event": {"id": event.id, "group": event.group_id, "start_utc": utc_text(event.start),
                  "end_utc": utc_text(event.end), "duration_s": event.duration_s, "limit_w": event.limit_w,
                  "shed": event.shed, "created_utc": utc_text(event.created_at)},
        "complete": now >= event.end, "timezone": tz_name, "baseline_days": days,
        "participation": tally(parts), "meters": meters,
        "group": asdict(B.total(took_part)), "opted_out": asdict(B.total(opted_out)),
    }


def event_list(store: Store, now: float) -> list[dict]:
    """Every event called, by start, with its participation counts (`meterkit dr list`)."""
    return [{"id": e.id, "group": e.group_id, "start_utc": utc_text(e.start), "end_utc": utc_text(e.end),
             "limit_w": e.limit_w, "shed": e.shed, "participation": tally(participation(store, e, now))}
            for e in store.dr_events()]


def format_list(rows: list[dict]) -> str:
    out = []
    for r in rows:
        counts = ", ".join(f"{n} {s}" for s, n in r["participation"].items() if n)
        what = "shed" if r["shed"] else f"limit {r['limit_w']} W"
        out.append(f"{r['id']:>4}  group {r['group']}  {what}  {r['start_utc']} .. {r['end_utc']}  {counts}")
    return "\n".join(out) or "no demand-response events"


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _note(m: dict) -> str:
    left = ", ".join(f"{n} {why}" for why, n in sorted(m["days_excluded"].items()))
    return "; ".join(x for x in (m["note"], f"days left out: {left}" if left else "") if x)


def format_report(rep: dict) -> str:
    """The report for a person: the event, a table of meters, the group and opted-out totals."""
    ev = rep["event"]
    what = "shed" if ev["shed"] else f"limit {ev['limit_w']} W"
    counts = ", ".join(f"{n} {s}" for s, n in rep["participation"].items() if n)
    lines = [f"demand-response event {ev['id']}: group {ev['group']}, {what}, {ev['start_utc']} .. {ev['end_utc']}"
             + ("" if rep["complete"] else " (not over yet: measured so far)"),
             f"meters: {counts or 'none'}; baseline: the same intervals on the last {rep['baseline_days']} similar "
             f"days ({rep['timezone']}), else the hour before the event (meter before)", ""]
    head = ("meter", "participation", "baseline kWh", "actual kWh", "reduction kWh", "avg kW", "%", "days", "note")
    body = []
    for m in rep["meters"]:
        state = m["participation"] + (f" ({m['reason']})" if m["reason"] else "") + (
            f" at {m['opted_out_utc']}" if m["opted_out_utc"] else "")
        body.append((m["meter"] or m["device"], state, _num(m["baseline_kwh"]), _num(m["actual_kwh"]),
                     _num(m["reduction_kwh"]), _num(m["avg_kw"]), _num(m["percent"], "{:.1f}"),
                     f"{m['days']}/{m['wanted']}", _note(m)))
    lines.append(text_table(head, body, right={2, 3, 4, 5, 6, 7}))
    for key, title in (("group", "group total (meters that took part)"), ("opted_out", "opted out (not in the "
                                                                                          "group total)")):
        t = rep[key]
        if key == "opted_out" and not t["meters"] and not rep["participation"]["opted out"]:
            continue
        lines.append(f"{title}: {t['meters']} meter(s) measured, baseline {t['baseline_kwh']:.3f} kWh, actual "
                     f"{t['actual_kwh']:.3f} kWh, reduction {t['reduction_kwh']:.3f} kWh, average "
                     f"{t['avg_kw']:.3f} kW" + ("" if t["percent"] is None else f", {t['percent']:.1f} %"))
    return "\n".join(lines)
