"""`meterkit export --green-button`: one meter's load profile as Green Button (ESPI) XML (docs/green-button.md).

    meterkit export --db PATH --green-button --meter ID|NAME --from T --to T [--prices FILE] [--calendar FILE]
                    [--tz POSIX] [-o FILE]

The options join `meterkit export` (cli/fleet.py); this module holds their handler.
"""

from __future__ import annotations

import argparse
import sys

from meterkit.cli.common import fail, open_store, utc_instant
from meterkit.integrations.greenbutton import GreenButtonError, green_button


def add_arguments(ex: argparse.ArgumentParser) -> None:
    """The Green Button options of `meterkit export` (--meter and -o/--out are export's own)."""
    ex.add_argument("--green-button", action="store_true",
                    help="one meter's load profile as Green Button (NAESB ESPI) Atom XML instead of CSV")
    ex.add_argument("--from", dest="start", type=utc_instant, metavar="T",
                    help="Green Button: period start, UTC (2026-10-01T00:00Z, an offset, or Unix seconds)")
    ex.add_argument("--to", dest="end", type=utc_instant, metavar="T", help="Green Button: period end, UTC")
    ex.add_argument("--prices", metavar="FILE", help="Green Button: a cost on every interval, from this price "
                                                     "file (docs/tariffs.md)")
    ex.add_argument("--calendar", metavar="FILE", help="Green Button: the meter's TOU calendar: its tariffs price "
                                                       "the intervals, its TZ is the local time")
    ex.add_argument("--tz", metavar="POSIX", help="Green Button: local time as a POSIX TZ rule when no calendar is "
                                                  "given (default UTC0)")


def run(args: argparse.Namespace) -> int:
    missing = [o for o, v in (("--meter", args.meter), ("--from", args.start), ("--to", args.end)) if v is None]
    if missing:
        return fail("export", f"--green-button needs {', '.join(missing)}")
    if args.table is not None:
        return fail("export", "--table is for CSV; a Green Button export is the load profile")
    store = open_store(args.db, "export")
    if store is None:
        return 2
    with store:
        try:
            exp = green_button(store, args.meter, args.start, args.end, prices=args.prices, calendar=args.calendar,
                               tz=args.tz)
        except GreenButtonError as e:
            return fail("export", e, 1)
    if args.out:
        with open(args.out, "wb") as f:
            exp.write(f)
    else:
        exp.write(sys.stdout.buffer)
        sys.stdout.flush()
    where = f" to {args.out}" if args.out else ""
    print(f"meter {exp.feed.device.hex()}: Green Button XML written{where}\n{exp.summary()}", file=sys.stderr)
    return 0
