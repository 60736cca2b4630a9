"""`meterkit status`, `meterkit export`, `meterkit meters add|list`: the fleet in the head-end database.

    meterkit status [--db PATH] [--json]
    meterkit export --db PATH --csv [--table readings|intervals|events|...] [--meter ID|NAME] [--out FILE]
    meterkit export --db PATH --green-button --meter ID|NAME --from T --to T [--prices F] [-o FILE]  (greenbutton.py)
    meterkit meters add --db PATH --key METER.pub.pem [--name N] [--period S]
    meterkit meters list --db PATH [--json]

--db defaults to $METERKIT_DB, else ./meterkit.db; status and export open it read-only and never create it.
"""

from __future__ import annotations

import argparse
import json
import sys

from meterkit.cli import greenbutton
from meterkit.cli.common import add_db, fail, open_store
from meterkit.headend.status import export_csv, fleet_status, format_status
from meterkit.store.api import EXPORT_TABLES
from meterkit.timefmt import utc_text
from meterkit.wire.keys import KeyFileError, load_public


def _cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args.db, "status")
    if store is None:
        return 2
    with store:
        rows = fleet_status(store)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.green_button:
        return greenbutton.run(args)
    args.table = args.table or "readings"
    store = open_store(args.db, "export")
    if store is None:
        return 2
    with store:
        device = None
        if args.meter:
            device = store.lookup_device(args.meter)
            if device is None:
                return fail("export", f"no meter {args.meter!r} (give its 16-hex-digit id or its name)")
        if args.out:
            with open(args.out, "w", newline="") as f:
                n = export_csv(store, args.table, device, f)
            print(f"{n} rows of {args.table} written to {args.out}", file=sys.stderr)
        else:
            export_csv(store, args.table, device, sys.stdout)
    return 0


def _cmd_meters_add(args: argparse.Namespace) -> int:
    try:
        pub = load_public(args.key)
    except KeyFileError as e:
        return fail("meters add", e)
    store = open_store(args.db, "meters add", readonly=False, create=True)
    if store is None:
        return 2
    with store:
        try:
            rec = store.register_meter(None, pub, args.name, args.period)
        except ValueError as e:
            return fail("meters add", e, 1)
    print(f"meter {rec.device_id.hex()} registered" + (f" as {rec.name!r}" if rec.name else "")
          + f", reporting every {rec.reporting_period_s} s")
    return 0


def _cmd_meters_list(args: argparse.Namespace) -> int:
    store = open_store(args.db, "meters list")
    if store is None:
        return 2
    with store:
        ms = store.meters()
    rows = [{"device": m.device_id.hex(), "name": m.name, "provisioned_at": utc_text(m.provisioned_at),
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
    add_db(st)
    st.add_argument("--json", action="store_true", help="one JSON list, a dict per meter")
    st.set_defaults(func=_cmd_status)

    ex = subparsers.add_parser("export", help="a table of the head-end database as CSV, or a meter's load profile "
                                              "as Green Button XML")
    ex.add_argument("--db", required=True)
    ex.add_argument("--csv", action="store_true", default=True, help="CSV (the default)")
    ex.add_argument("--table", choices=EXPORT_TABLES, default=None, help="the table (default readings)")
    ex.add_argument("--meter", help="only this meter (16-hex-digit device id or name)")
    ex.add_argument("-o", "--out", help="write to this file instead of standard output")
    greenbutton.add_arguments(ex)
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
