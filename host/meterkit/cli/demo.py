"""`meterkit demo`: the main job, a fleet of simulated meters reporting to a concentrator. `meterkit demo --scale`:
several concentrators on PostgreSQL behind HAProxy, one SIGKILLed mid-run, nothing lost (torture/scale_demo.py)."""

from __future__ import annotations

import argparse
import sys

from meterkit.sim.demo import run_demo


def _cmd_demo(args: argparse.Namespace) -> int:
    sizes = {k: getattr(args, k) for k in ("meters", "firmware", "seconds", "concentrators")
             if getattr(args, k) is not None}  # unset: the scale demo's defaults
    if sizes and not args.scale:
        print(f"meterkit demo: {', '.join('--' + k for k in sizes)} only with --scale", file=sys.stderr)
        return 2
    if args.scale:
        from meterkit.torture.scale_demo import run_scale_demo

        return run_scale_demo(out=args.out or "out/demo-scale", seed=args.seed, echo=lambda s: print(s, flush=True),
                              **sizes)
    return run_demo(hours=args.hours, out=args.out or "out/demo", tls=not args.no_tls)


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job: simulated meters reporting, with a summary (--scale: several "
                                       "concentrators on PostgreSQL behind HAProxy, one killed mid-run)")
    demo.add_argument("--hours", type=float, default=24.0)
    demo.add_argument("--out", help="where the demo writes its files (default out/demo, out/demo-scale)")
    demo.add_argument("--no-tls", action="store_true", help="the TCP meters in clear (default: TLS, docs/security.md)")
    scale = demo.add_argument_group("--scale", "PostgreSQL (a server of its own), HAProxy, concentrators and a "
                                               "fleet; one concentrator SIGKILLed mid-run and restarted")
    scale.add_argument("--scale", action="store_true", help="run the scale demo instead")
    scale.add_argument("--meters", type=int, help="protocol-level meters (default 100)")
    scale.add_argument("--firmware", type=int, help="real firmware meters beside them (default 2)")
    scale.add_argument("--seconds", type=float, help="real seconds of readings (default 30)")
    scale.add_argument("--concentrators", type=int, help="concentrator processes (default 2)")
    scale.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=_cmd_demo)
