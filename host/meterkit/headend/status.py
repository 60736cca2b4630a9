"""The fleet as people read it: one row per meter (what `meterkit status` shows) and tables as CSV (`meterkit
export`), from the store's read-outs.

A meter's row: device id, name, when the concentrator last heard from it, its state, the import/export
registers of its latest reading in kWh (exact: registers are whole Wh), frames stored, gaps back-filled,
outages, and its clock: 'not set' (its newest frame says so), else its drift as the concentrator last measured
it (its clock minus the concentrator's; headend/clocks.py), '-' before the first measurement. State: 'online';
'offline' (the concentrator declared an outage that has not ended); 'stale' (no outage declared, but silent for
more than 3 reporting periods: is the concentrator running?); 'never' (registered, never heard). Relay and
limit: the disconnect control state and import limit the meter confirmed (headend/control.py).
"""

from __future__ import annotations

import csv
import time
from typing import Any, TextIO

from meter import messages as M
from meterkit.headend.control import control_fields
from meterkit.headend.texttable import text_table
from meterkit.store.api import ReadOuts
from meterkit.store.records import FleetRecord
from meterkit.timefmt import utc_text

clock = time.time  # what `status` takes for now (a test sets it)
OFFLINE_AFTER = 3  # reporting periods of silence before a meter counts as stale (as the concentrator's default)
TIME_COLUMNS = {"at", "meter_time", "end_time", "event_time", "period_end", "start", "end", "detected_at", "sent_at",
                "answered_at", "requested_at", "closed_at"}


def kwh(wh: int | None) -> str:
    """Whole Wh as kWh with three decimals, exactly (no float)."""
    if wh is None:
        return ""
    sign = "-" if wh < 0 else ""
    q, r = divmod(abs(wh), 1000)
    return f"{sign}{q}.{r:03d}"


def meter_state(f: FleetRecord, now: float) -> str:
    m = f.meter
    if m.last_seen is None:
        return "never"
    if f.outage_open:
        return "offline"
    if now - m.last_seen > m.reporting_period_s * OFFLINE_AFTER:
        return "stale"
    return "online"


def clock_text(f: FleetRecord) -> str:
    """A meter's clock for people: 'not set', '+3 s' (ahead of the concentrator), '-2 s', or '-' (unknown)."""
    if f.last_status is not None and f.last_status & M.ST_CLOCK_NOT_SET:
        return "not set"
    drift = f.meter.clock_drift_s
    return "-" if drift is None else f"{drift:+.0f} s"


def fleet_status(store: ReadOuts, now: float | None = None) -> list[dict]:
    """One dict per meter, the figures `meterkit status` shows (now: for the state; default the time)."""
    t = clock() if now is None else now
    out = []
    for f in store.fleet():
        m = f.meter
        out.append({
            "device": m.device_id.hex(), "name": m.name, "last_seen": m.last_seen,
            "last_seen_utc": utc_text(m.last_seen),
            "state": meter_state(f, t), "import_wh": f.import_wh, "export_wh": f.export_wh,
            "import_kwh": kwh(f.import_wh), "export_kwh": kwh(f.export_wh), "frames": m.frames_stored,
            "gaps_backfilled": f.gaps_backfilled, "gaps_open": f.gaps_open,
            "gaps_settled": f.gaps_settled, "interval_gaps": f.interval_gaps, "outages": f.outages,
            "ack_seq": m.ack_seq, "reporting_period_s": m.reporting_period_s, "firmware": m.firmware,
            "board": m.board, "boot_count": m.boot_count, "clock": clock_text(f),
            "clock_set": None if f.last_status is None else not f.last_status & M.ST_CLOCK_NOT_SET,
            "clock_drift_s": m.clock_drift_s, "clock_drift_at": m.clock_drift_at,
            "clock_drift_at_utc": utc_text(m.clock_drift_at), **control_fields(f),
        })
    return out


def format_status(rows: list[dict]) -> str:
    head = ("device", "name", "last seen (UTC)", "state", "import kWh", "export kWh", "frames", "back-filled",
            "outages", "clock", "relay", "limit")
    body = [(r["device"], r["name"] or "", r["last_seen_utc"] or "-", r["state"], r["import_kwh"] or "-",
             r["export_kwh"] or "-", str(r["frames"]), str(r["gaps_backfilled"]), str(r["outages"]), r["clock"],
             r["relay"], r["limiter"]) for r in rows]
    lines = text_table(head, body, right={4, 5, 6, 7, 8, 9}).split("\n")
    states = [r["state"] for r in rows]
    summary = f"{len(rows)} meters: " + ", ".join(f"{states.count(s)} {s}" for s in ("online", "offline", "stale",
                                                                                          "never") if s in states)
    return "\n".join([*lines, summary]) if rows else "no meters registered (meterkit meters add)"


def export_csv(store: ReadOuts, table: str, device: bytes | None, out: TextIO) -> int:
    """Write one table as CSV (times also as UTC ISO 8601); returns the number of rows."""
    names, rows = store.export(table, device)
    times = [i for i, n in enumerate(names) if n in TIME_COLUMNS]
    header = []
    for i, n in enumerate(names):
        header.append(n)
        if i in times:
            header.append(f"{n}_utc")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    count = 0
    for r in rows:
        cells: list[Any] = []
        for i, v in enumerate(r):
            cells.append("" if v is None else v)
            if i in times:
                cells.append(utc_text(v))
        w.writerow(cells)
        count += 1
    return count
