"""`meterkit bench`: the firmware and the head-end measured side by side (docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import sys

from meterkit.bench.run import SECTIONS, format_bench, format_section, run_bench, run_section
from meterkit.cli.common import fail


def _cmd_bench(args: argparse.Namespace) -> int:
    log = None if args.json else (lambda m: print(m, file=sys.stderr))
    if args.only:
        from meterkit.device.mp32 import Unavailable as Mp32Unavailable
        from meterkit.testing.haproxy import HAProxyUnavailable
        from meterkit.testing.pgserver import PgUnavailable

        try:
            figures = run_section(args.only, quick=args.quick, log=log)
        except (HAProxyUnavailable, PgUnavailable, Mp32Unavailable) as e:
            return fail("bench", e)
        print(json.dumps(figures, indent=2) if args.json else format_section(args.only, figures))
        return 0
    figures = run_bench(quick=args.quick, log=log)
    print(json.dumps(figures, indent=2) if args.json else format_bench(figures))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure the firmware and host side by side")
    bench.add_argument("--json", action="store_true", help="print one JSON object, a key per figure")
    bench.add_argument("--quick", action="store_true", help="shorter runs (rougher figures)")
    bench.add_argument("--only", choices=SECTIONS,
                       help="run one section that the default bench leaves out: scale (SQLite vs PostgreSQL, 2 vs 1 "
                            "concentrators through HAProxy; starts its own PostgreSQL and HAProxy, minutes), "
                            "footprint (database bytes per frame and per meter-day, SQLite and PostgreSQL), "
                            "tls (the meter's handshake, heap and bytes per frame; the concentrator's CPU per frame "
                            "and per handshake, in clear and over TLS), heap (the smallest heap of the linked meter "
                            "on the 32-bit interpreter, plain and with a firmware update, over 8 fresh keys; ~30 min), "
                            "fwupdate (an update's delivery time per KB at real-time speed, serial and TCP)")
    bench.set_defaults(func=_cmd_bench)
