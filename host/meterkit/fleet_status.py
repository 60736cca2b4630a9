"""Fleet commands on the head-end database: `meterkit status`, `meterkit export`, `meterkit meters`.

    meterkit status [--db PATH] [--json]
    meterkit export --db PATH --csv [--table readings|intervals|events|...] [--meter ID|NAME] [--out FILE]
    meterkit meters add --db PATH --key METER.pub.pem [--name N] [--period S]
    meterkit meters list --db PATH [--json]

`status` is one line per meter: device id, name, when the concentrator last heard from it, its state, the
import/export registers of its latest reading in kWh (exact: registers are whole Wh), frames stored, gaps
back-filled, outages. State: 'online'; 'offline' (the concentrator declared an outage that has not ended);
'stale' (no outage declared, but silent for more than 3 reporting periods: is the concentrator running?);
'never' (registered, never heard). --db defaults to $METERKIT_DB, else ./meterkit.db; the database is opened
read-only and never created.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import sys
import time
from typing import Any, TextIO

from meterkit.db import EXPORT_TABLES, SQLiteStore, StoreError

clock = time.time  # what `status` takes for now (a test sets it)
OFFLINE_AFTER = 3  # reporting periods of silence before a meter counts as stale (as the concentrator's default)
TIME_COLUMNS = {"meter_time", "end_time", "event_time", "period_end", "start", "end", "detected_at", "sent_at",
                "answered_at", "requested_at", "closed_at"}


def default_db() -> str:
    return os.environ.get("METERKIT_DB", "meterkit.db")


def utc(t: float | None) -> str:
    if t is None:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def kwh(wh: int | None) -> str:
    """Whole Wh as kWh with three decimals, exactly (no float)."""
    if wh is None:
        return ""
    sign = "-" if wh < 0 else ""
    q, r = divmod(abs(wh), 1000)
    return f"{sign}{q}.{r:03d}"


def meter_state(m: dict, now: float) -> str:
    if m["last_seen"] is None:
        return "never"
    if m["outage_open"]:
        return "offline"
    if now - m["last_seen"] > m["reporting_period_s"] * OFFLINE_AFTER:
        return "stale"
    return "online"


def fleet_status(store: Any, now: float | None = None) -> list[dict]:
    """One dict per meter, the figures `meterkit status` shows (now: for the state; default the time)."""
    t = clock() if now is None else now
    out = []
    for m in store.fleet():
        out.append({
            "device": m["device"], "name": m["name"], "last_seen": m["last_seen"], "last_seen_utc": utc(m["last_seen"]),
            "state": meter_state(m, t), "import_wh": m["import_wh"], "export_wh": m["export_wh"],
            "import_kwh": kwh(m["import_wh"]), "export_kwh": kwh(m["export_wh"]), "frames": m["frames_stored"],
            "gaps_backfilled": m["gaps_backfilled"], "gaps_open": m["gaps_open"],
            "gaps_settled": m["gaps_settled"], "interval_gaps": m["interval_gaps"], "outages": m["outages"],
            "ack_seq": m["ack_seq"], "reporting_period_s": m["reporting_period_s"], "firmware": m["firmware"],
            "board": m["board"], "boot_count": m["boot_count"],
        })
    return out


def format_status(rows: list[dict]) -> str:
    head = ("device", "name", "last seen (UTC)", "state", "import kWh", "export kWh", "frames", "back-filled",
            "outages")
    body = [(r["device"], r["name"] or "", r["last_seen_utc"] or "-", r["state"], r["import_kwh"] or "-",
             r["export_kwh"] or "-", str(r["frames"]), str(r["gaps_backfilled"]), str(r["outages"]))
            for r in rows]
    right = {4, 5, 6, 7, 8}
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = []
    for row in [head, *body]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    states = [r["state"] for r in rows]
    summary = f"{len(rows)} meters: " + ", ".join(f"{states.count(s)} {s}" for s in ("online", "offline", "stale",
                                                                                          "never") if s in states)
    return "\n".join([*lines, summary]) if rows else "no meters registered (meterkit meters add)"


def export_csv(store: Any, table: str, device: bytes | None, out: TextIO) -> int:
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
                cells.append(utc(v))
        w.writerow(cells)
        count += 1
    return count


# --- commands -----------------------------------------------------------------------------------------------


def open_store(path: str, prog: str, readonly: bool = True) -> SQLiteStore | None:
    """The head-end database for a `meterkit <prog>` command, or None after saying why on stderr."""
    try:
        return SQLiteStore(path, create=False, readonly=readonly)
    except StoreError as e:
        print(f"meterkit {prog}: {e}", file=sys.stderr)
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args.db, "status")
    if store is None:
        return 2
    with store:
        rows = fleet_status(store)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args.db, "export")
    if store is None:
        return 2
    with store:
        device = None
        if args.meter:
            device = store.lookup_device(args.meter)
            if device is None:
                print(f"meterkit export: no meter {args.meter!r} (give its 16-hex-digit id or its name)",
                      file=sys.stderr)
                return 2
        if args.out:
            with open(args.out, "w", newline="") as f:
                n = export_csv(store, args.table, device, f)
            print(f"{n} rows of {args.table} written to {args.out}", file=sys.stderr)
        else:
            export_csv(store, args.table, device, sys.stdout)
    return 0


def _cmd_meters_add(args: argparse.Namespace) -> int:
    from meterkit.keys import KeyFileError, load_public

    try:
        pub = load_public(args.key)
    except KeyFileError as e:
        print(f"meterkit meters add: {e}", file=sys.stderr)
        return 2
    try:
        store = SQLiteStore(args.db)
    except StoreError as e:
        print(f"meterkit meters add: {e}", file=sys.stderr)
        return 2
    with store:
        try:
            rec = store.register_meter(None, pub, args.name, args.period)
        except ValueError as e:
            print(f"meterkit meters add: {e}", file=sys.stderr)
            return 1
    print(f"meter {rec.device_id.hex()} registered" + (f" as {rec.name!r}" if rec.name else "")
          + f", reporting every {rec.reporting_period_s} s")
    return 0


def _cmd_meters_list(args: argparse.Namespace) -> int:
    store = open_store(args.db, "meters list")
    if store is None:
        return 2
    with store:
        ms = store.meters()
    rows = [{"device": m.device_id.hex(), "name": m.name, "provisioned_at": utc(m.provisioned_at),
             "reporting_period_s": m.reporting_period_s, "public_key": m.public_key.hex()} for m in ms]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['device']}  {r['name'] or '-':<16}  every {r['reporting_period_s']} s, "
                  f"registered {r['provisioned_at']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `status`, `export` and `meters` to a `meterkit` subparsers object."""
    st = subparsers.add_parser("status", help="fleet table: last seen, online/offline, kWh, frames, gaps, outages")
    st.add_argument("--db", default=default_db(), help="head-end database (default $METERKIT_DB or meterkit.db)")
    st.add_argument("--json", action="store_true", help="one JSON list, a dict per meter")
    st.set_defaults(func=_cmd_status)

    ex = subparsers.add_parser("export", help="a table of the head-end database as CSV")
    ex.add_argument("--db", required=True)
    ex.add_argument("--csv", action="store_true", default=True, help="CSV (the only format, and the default)")
    ex.add_argument("--table", choices=EXPORT_TABLES, default="readings")
    ex.add_argument("--meter", help="only this meter (16-hex-digit device id or name)")
    ex.add_argument("--out", help="write to this file instead of standard output")
    ex.set_defaults(func=_cmd_export)

    me = subparsers.add_parser("meters", help="the device registry: which meters the head-end accepts")
    sub = me.add_subparsers(dest="meters_command", required=True)
    add = sub.add_parser("add", help="register a meter by its public key (device id = key id)")
    add.add_argument("--db", required=True, help="head-end database (created if missing)")
    add.add_argument("--key", required=True, help="the meter's public key: PEM, 65 raw bytes or 130 hex digits")
    add.add_argument("--name", help="a name for people (house, feeder, panel ...)")
    add.add_argument("--period", type=int, default=60, help="its reporting period, s (default 60)")
    add.set_defaults(func=_cmd_meters_add)
    ls = sub.add_parser("list", help="registered meters")
    ls.add_argument("--db", required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_meters_list)
