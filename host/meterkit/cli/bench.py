"""`meterkit bench`: the firmware and the head-end measured side by side (docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import sys

from meterkit.bench.run import format_bench, run_bench


def _cmd_bench(args: argparse.Namespace) -> int:
    figures = run_bench(quick=args.quick, log=None if args.json else (lambda m: print(m, file=sys.stderr)))
    print(json.dumps(figures, indent=2) if args.json else format_bench(figures))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure the firmware and host side by side")
    bench.add_argument("--json", action="store_true", help="print one JSON object, a key per figure")
    bench.add_argument("--quick", action="store_true", help="shorter runs (rougher figures)")
    bench.set_defaults(func=_cmd_bench)
