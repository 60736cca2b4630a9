"""`meterkit sim run` and `meterkit sim provision`: the real firmware against simulated hardware."""

from __future__ import annotations

import argparse
import json

from meterkit.cli.common import fail, utc_instant
from meterkit.sim.runner import SCENARIOS, SimError, format_result, progress_bar, provision, run_sim
from meterkit.wire import public_bytes
from meterkit.wire.keys import load_public


def _headend_point(path: str) -> bytes:
    return public_bytes(load_public(path))


def _cmd_sim_run(args: argparse.Namespace) -> int:
    progress = None if args.json or args.quiet else progress_bar(f"simulating {args.hours:g} h")
    try:
        result = run_sim(args.scenario, args.hours, seed=args.seed, heap=args.heap, flash_dir=args.flash,
                         board=args.board, start=args.start, frames_out=args.frames_out,
                         pubkey_out=args.pubkey_out, signing=not args.no_frames, progress=progress,
                         headend_pub=_headend_point(args.headend_key) if args.headend_key else None,
                         link=args.link, speed=args.speed, calendar=args.calendar, billing_day=args.billing_day,
                         tariffs=args.tariffs, demand_period_s=args.demand_period)
    except SimError as e:
        return fail("sim run", e, 1)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


def _cmd_sim_provision(args: argparse.Namespace) -> int:
    try:
        ident = provision(args.flash, _headend_point(args.headend_key), args.pubkey_out)
    except SimError as e:
        return fail("sim provision", e, 1)
    print(f"device id {ident['device_id']}; public key written to {args.pubkey_out}"
          + ("" if ident["created"] else " (the meter already had its key)"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("sim", help="run the firmware against simulated hardware")
    simsub = sim.add_subparsers(dest="sim_command", required=True)
    run = simsub.add_parser("run", help="one simulated meter, in virtual time, under the MicroPython Unix port")
    run.add_argument("--scenario", choices=SCENARIOS, default="solar-day")
    run.add_argument("--hours", type=float, default=24.0, help="virtual hours to simulate (default 24)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--start", type=utc_instant, default=None,
                     help="virtual start time, UTC, e.g. 2026-06-21T06:00 (default: the board's, midnight)")
    run.add_argument("--heap", default=None, help="cap the interpreter heap, e.g. 96K (ESP32-sized budget)")
    run.add_argument("--flash", default=None, help="flash directory to keep between runs (default: temporary)")
    run.add_argument("--board", default=None, help="board profile JSON (default boards/unix-sim.json)")
    run.add_argument("--frames-out", default=None, help="write the raw signed frames the meter sent to this file")
    run.add_argument("--pubkey-out", default=None, help="write the meter's public key (PEM) to this file")
    run.add_argument("--headend-key", default=None,
                     help="head-end public key (PEM) to install on the meter, as provisioning would")
    run.add_argument("--link", default=None,
                     help="report to a concentrator: tcp:HOST:PORT or serial:/dev/pts/N (needs --flash of a "
                          "provisioned meter)")
    run.add_argument("--speed", type=float, default=None,
                     help="virtual time at most this many times real time (e.g. 60 with --link)")
    run.add_argument("--no-frames", action="store_true", help="metering core only: no keys, no signed frames")
    run.add_argument("--calendar", default=None, help="TOU calendar JSON the meter starts with (docs/tariffs.md)")
    run.add_argument("--billing-day", type=int, default=None, help="day of the month a billing period ends (1..28)")
    run.add_argument("--tariffs", type=int, default=None, help="tariff registers on the meter (1..8, default 4)")
    run.add_argument("--demand-period", type=int, default=None, choices=(300, 900, 1800, 3600),
                     help="demand period in seconds (default 900)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_sim_run)
    prov = simsub.add_parser("provision", help="first boot of a simulated meter: it makes its key")
    prov.add_argument("--flash", required=True, help="the meter's flash directory (kept)")
    prov.add_argument("--headend-key", required=True, help="head-end public key (PEM) to install")
    prov.add_argument("--pubkey-out", required=True, help="write the meter's public key (PEM) here")
    prov.set_defaults(func=_cmd_sim_provision)
