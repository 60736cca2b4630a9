"""The `meterkit` command line."""

from __future__ import annotations

import argparse
import json
import sys

from meterkit import __version__


def _utc_instant(text: str) -> int:
    """'2026-06-21T06:00' (UTC) -> Unix seconds, for argparse."""
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def _headend_point(path: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    from meterkit.keys import load_public

    return load_public(path).public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def _cmd_sim_run(args: argparse.Namespace) -> int:
    from meterkit.sim import SimError, format_result, progress_bar, run_sim

    progress = None if args.json or args.quiet else progress_bar(f"simulating {args.hours:g} h")
    try:
        result = run_sim(args.scenario, args.hours, seed=args.seed, heap=args.heap, flash_dir=args.flash,
                         board=args.board, start=args.start, frames_out=args.frames_out,
                         pubkey_out=args.pubkey_out, signing=not args.no_frames, progress=progress,
                         headend_pub=_headend_point(args.headend_key) if args.headend_key else None,
                         link=args.link, speed=args.speed, calendar=args.calendar, billing_day=args.billing_day,
                         tariffs=args.tariffs, demand_period_s=args.demand_period)
    except SimError as e:
        print(f"meterkit sim run: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


def _cmd_sim_provision(args: argparse.Namespace) -> int:
    from meterkit.sim import SimError, provision

    try:
        ident = provision(args.flash, _headend_point(args.headend_key), args.pubkey_out)
    except SimError as e:
        print(f"meterkit sim provision: {e}", file=sys.stderr)
        return 1
    print(f"device id {ident['device_id']}; public key written to {args.pubkey_out}"
          + ("" if ident["created"] else " (the meter already had its key)"))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from meterkit.bench import format_bench, run_bench

    figures = run_bench(quick=args.quick, log=None if args.json else (lambda m: print(m, file=sys.stderr)))
    print(json.dumps(figures, indent=2) if args.json else format_bench(figures))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from meterkit.demo import run_demo

    return run_demo(hours=args.hours, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    from meterkit.sim import SCENARIOS

    p = argparse.ArgumentParser(prog="meterkit", description="meterkit host toolkit")
    p.add_argument("--version", action="version", version=f"meterkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="run the firmware against simulated hardware")
    simsub = sim.add_subparsers(dest="sim_command", required=True)
    run = simsub.add_parser("run", help="one simulated meter, in virtual time, under the MicroPython Unix port")
    run.add_argument("--scenario", choices=SCENARIOS, default="solar-day")
    run.add_argument("--hours", type=float, default=24.0, help="virtual hours to simulate (default 24)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--start", type=_utc_instant, default=None,
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

    bench = sub.add_parser("bench", help="measure the firmware and host side by side")
    bench.add_argument("--json", action="store_true", help="print one JSON object, a key per figure")
    bench.add_argument("--quick", action="store_true", help="shorter runs (rougher figures)")
    bench.set_defaults(func=_cmd_bench)

    demo = sub.add_parser("demo", help="the main job: simulated meters reporting, with a summary")
    demo.add_argument("--hours", type=float, default=24.0)
    demo.add_argument("--out", default="out/demo", help="where the demo writes its files")
    demo.set_defaults(func=_cmd_demo)

    from meterkit import billcheck, billing, commands, concentrator, fleet_status, keys, verify

    keys.add_parser(sub)
    verify.add_parser(sub)
    concentrator.add_parser(sub)  # meterkit concentrator
    fleet_status.add_parser(sub)  # meterkit status / export / meters add|list
    billing.add_parser(sub)  # meterkit bill
    commands.add_parser(sub)  # meterkit command calendar | billing-reset | profile | list
    billcheck.add_parser(sub)  # meterkit billcheck: a long simulated run billed from frames and from truth
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
