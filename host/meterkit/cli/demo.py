"""`meterkit demo`: the main job, a fleet of simulated meters reporting to a concentrator."""

from __future__ import annotations

import argparse

from meterkit.sim.demo import run_demo


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(hours=args.hours, out=args.out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job: simulated meters reporting, with a summary")
    demo.add_argument("--hours", type=float, default=24.0)
    demo.add_argument("--out", default="out/demo", help="where the demo writes its files")
    demo.set_defaults(func=_cmd_demo)
