"""`meterkit torture`: the torture suite (issue 11; docs/security.md and docs/performance.md, "Reliability").

    meterkit torture [--long] [--seed N] [--only NAME ...] [--out DIR] [--db pg|URL] [--json] [--verbose]

Runs each scenario (the short form, as CI does, or --long) with real firmware meters and a real concentrator, and
prints a table: frames made and stored, lost, register decreases, duplicates, state changes from refused
messages, each scenario's own figures, ok or FAIL. The seed is printed (and drawn if not given): a run is
reproduced by giving it again. Exit status 1 if any scenario failed. --db puts the failover scenario on
PostgreSQL: `pg` starts a server of its own in a temporary directory, or give a postgresql:// URL.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
from pathlib import Path

from meterkit.store import is_url
from meterkit.torture import runner


def _cmd_torture(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    names = args.only or runner.NAMES
    # the concentrator's warnings (every refused frame) would bury the table; --verbose shows them
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    print(f"meterkit torture: seed {seed}, {'long' if args.long else 'short'} form", file=sys.stderr)
    if args.out:
        results = runner.run(names, Path(args.out), args.long, seed, _progress, args.db)
    else:
        with tempfile.TemporaryDirectory(prefix="meterkit-torture-") as tmp:
            results = runner.run(names, Path(tmp), args.long, seed, _progress, args.db)
    if args.json:
        print(json.dumps({"seed": seed, "results": [r.as_dict() for r in results]}, indent=2))
    else:
        print(runner.table(results))
        print(f"seed {seed}: meterkit torture --seed {seed}{' --long' if args.long else ''}"
              f"{' --db ' + args.db if args.db else ''}")
    return 0 if all(r.ok for r in results) else 1


def _db(text: str) -> str:
    if text == "pg" or is_url(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give pg or a postgresql:// URL")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `torture` to a `meterkit` subparsers object."""
    p = subparsers.add_parser("torture", help="the torture suite: power kills, quick cuts, link drops, clock jumps, "
                                              "floods against real firmware and a real concentrator")
    p.add_argument("--long", action="store_true", help="the long form (minutes to tens of minutes; CI runs short)")
    p.add_argument("--seed", type=int, help="the random seed (default: drawn and printed)")
    p.add_argument("--only", action="append", choices=runner.NAMES, help="only this scenario (repeatable)")
    p.add_argument("--out", help="keep each scenario's fleet (flash, frames logs, database) under this directory")
    p.add_argument("--db", type=_db, help="the failover scenario's database: pg (a PostgreSQL server of its own, in "
                                          "a temporary directory) or a postgresql:// URL (default: a SQLite file)")
    p.add_argument("--json", action="store_true", help="every result and figure as JSON")
    p.add_argument("--verbose", action="store_true", help="show the concentrator's warnings")
    p.set_defaults(func=_cmd_torture)
