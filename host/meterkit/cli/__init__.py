"""The `meterkit` command line: argparse and handlers only, one module per command family.

Each module registers its commands with ``add_parser(subparsers)`` and turns arguments into calls of the logic
packages (wire, store, headend, billing, sim, bench, device); no logic module imports argparse or this package.
"""

from __future__ import annotations

import argparse
import sys

from meterkit import __version__
from meterkit.cli import (
    alerts,
    audit,
    bench,
    bill,
    billcheck,
    command,
    concentrator,
    configure,
    demo,
    device,
    dr,
    firmware,
    fleet,
    keys,
    migrate,
    relay,
    sim,
    torture,
    verify,
)

FAMILIES = (sim, bench, demo, keys, verify, concentrator, fleet, bill, command, configure, relay, audit, dr,
            billcheck, device, torture, migrate, firmware, alerts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meterkit", description="meterkit host toolkit")
    p.add_argument("--version", action="version", version=f"meterkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
