"""`meterkit bill`: a time-of-use bill for one meter and billing period (and its CSV, a day's PNG)."""

from __future__ import annotations

import argparse
import sys

from meterkit.billing import SOURCES, BillingError, bill, load_calendar, load_prices, plot_day
from meterkit.cli.common import add_db, fail
from meterkit.store import StoreError, open_store


def _cmd_bill(args: argparse.Namespace) -> int:


    if (args.plot_day is None) != (args.png is None):
        print("meterkit bill: --plot-day and --png go together", file=sys.stderr)
        return 2
    try:
        cal = load_calendar(args.calendar) if args.calendar else None
        if args.plot_day and cal is None:
            raise BillingError("--plot-day colours the profile by tariff: it needs --calendar FILE")
        prices = load_prices(args.prices, cal)
        store = open_store(args.db, create=False, readonly=True)
    except (ValueError, BillingError, StoreError) as e:
        return fail("bill", e)
    with store:
        try:
            b = bill(store, args.meter, args.period, prices, cal, billing_day=args.billing_day, source=args.source)
            print(b.format())
            if args.csv:
                with open(args.csv, "w", newline="") as f:
                    n = b.write_csv(f)
                print(f"{n} billing determinants written to {args.csv}", file=sys.stderr)
            if args.plot_day:
                n = plot_day(store, args.meter, args.plot_day, cal, args.png, prices)
                print(f"load profile of {args.plot_day} ({n} intervals) drawn to {args.png}", file=sys.stderr)
        except BillingError as e:
            return fail("bill", e, 1)
    return 0


def _billing_day(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 31:
        raise argparse.ArgumentTypeError(f"a day of the month 1..31, not {text!r}")
    return int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `bill` to a `meterkit` subparsers object."""


    b = subparsers.add_parser("bill", help="a time-of-use bill for one meter and billing period (and CSV, PNG)")
    add_db(b)
    b.add_argument("--meter", required=True, help="16-hex-digit device id or the meter's name")
    b.add_argument("--period", required=True, help="the month the billing period starts in, YYYY-MM")
    b.add_argument("--prices", required=True, help="price file (JSON, docs/tariffs.md)")
    b.add_argument("--calendar", help="TOU calendar (JSON): needed for the load-profile fallback and --plot-day")
    b.add_argument("--csv", metavar="OUT", help="write the billing determinants to this CSV file")
    b.add_argument("--plot-day", metavar="YYYY-MM-DD", help="draw this local day's load profile by tariff")
    b.add_argument("--png", metavar="OUT", help="the PNG file for --plot-day")
    b.add_argument("--billing-day", type=_billing_day, default=None,
                   help="local day of month periods end on, when no snapshot tells (default 1)")
    b.add_argument("--source", choices=SOURCES, default="auto",
                   help="determinants from snapshots (else the profile: auto, the default), or force one")
    b.set_defaults(func=_cmd_bill)


