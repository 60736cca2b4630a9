"""`meterkit billcheck`: a simulated run across a billing boundary, billed from its frames and from the truth."""

from __future__ import annotations

import argparse
import json
import sys
import time

from meterkit.cli.common import fail
from meterkit.sim.billcheck import (
    DEFAULT_CALENDAR,
    DEFAULT_DAYS,
    DEFAULT_PRICES,
    DEFAULT_SCENARIO,
    DEFAULT_START,
    CheckError,
    check,
    format_report,
    simulate,
)
from meterkit.sim.runner import SCENARIOS, progress_bar


def _cmd_billcheck(args: argparse.Namespace) -> int:


    quiet = args.json or args.quiet
    say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr))
    progress = None if quiet else progress_bar(f"simulating {args.days:g} days")
    t0 = time.monotonic()
    try:
        run = simulate(args.days, args.start, args.calendar, args.prices, args.scenario, args.seed, args.billing_day,
                       args.reading_s, args.db, progress=progress, say=say)
        say("billing the period and computing the ground truth")
        report = check(run)
    except CheckError as e:
        return fail("billcheck", e)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        print(f"  wall time {report['wall_s']} s; the bill again: meterkit bill --db {run.db} --meter "
              f"{run.meter_name} --period {run.period} --prices {run.prices_path} --calendar {run.calendar_path}")
    return 0 if report["ok"] else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit billcheck`."""


    p = subparsers.add_parser("billcheck", help="a simulated run across a billing boundary, billed by `meterkit bill` "
                                                "and from the simulator's ground truth, compared to the Wh")
    p.add_argument("--days", type=float, default=DEFAULT_DAYS, help=f"virtual days (default {DEFAULT_DAYS:g})")
    p.add_argument("--start", default=DEFAULT_START,
                   help=f"start, local time of the calendar unless an offset or Z is given (default {DEFAULT_START})")
    p.add_argument("--calendar", default=DEFAULT_CALENDAR, help=f"TOU calendar JSON (default {DEFAULT_CALENDAR})")
    p.add_argument("--prices", default=DEFAULT_PRICES, help=f"price file JSON (default {DEFAULT_PRICES})")
    p.add_argument("--scenario", choices=SCENARIOS, default=DEFAULT_SCENARIO,
                   help=f"simulated load (default {DEFAULT_SCENARIO}: import and export)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--billing-day", type=int, default=1, help="local day of month billing periods end on (1..28)")
    p.add_argument("--reading-s", type=int, default=900, help="seconds between the meter's readings (default 900)")
    p.add_argument("--db", default=None, help="head-end database to create (default: in a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_billcheck)
