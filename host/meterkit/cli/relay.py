"""`meterkit relay disconnect|reconnect|status METER` and `meterkit limit METER ...`: disconnect control (IC70)
and the limiter (IC71) of one meter.

    meterkit relay disconnect METER [--expires WHEN] [--by WHO] [--db PATH]
    meterkit relay reconnect  METER [--expires WHEN] [--by WHO] [--db PATH]
    meterkit relay status     METER [--json] [--db PATH]
    meterkit limit METER [--watts W] [--emergency-watts W] [--min-over D] [--min-under D]
                         [--auto-reconnect | --no-auto-reconnect]
                         [--emergency-id N --emergency-start WHEN --emergency-duration D --emergency-groups 1,2]
                         [--expires WHEN] [--by WHO] [--db PATH]

METER is the meter's 16-hex-digit id or its name. Commands go through the persisted queue (meterkit command
list; meterkit audit): the concentrator sends them when the meter is connected, or they expire. `relay status`
shows what the meter confirmed, never what was asked. D is a duration: seconds, or 90s, 15m, 2h, 1h30m.
"""

from __future__ import annotations

import argparse

from meterkit.cli.command import queue_cli, show
from meterkit.cli.common import add_by, add_db, utc_instant
from meterkit.headend.commands import OP_DISCONNECT, OP_LIMITER, OP_RECONNECT, CommandError, group_list, limiter_args
from meterkit.headend.control import format_relay_status, relay_status
from meterkit.timefmt import parse_duration


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _watts(text: str) -> int:
    t = text.strip().lower().removesuffix("w").strip()
    if not t.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number of watts: {text!r}")
    return int(t)


def _groups(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"group ids are whole numbers separated by commas, e.g. 1,2; not {text!r}")
    try:
        return group_list([int(p) for p in parts])
    except CommandError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_switch(args: argparse.Namespace) -> int:
    op = OP_DISCONNECT if args.relay_op == "disconnect" else OP_RECONNECT
    return queue_cli(args, f"relay {args.relay_op}", lambda now: (op, None))


def _cmd_status(args: argparse.Namespace) -> int:
    return show(args, "relay status", relay_status, format_relay_status)


EMERGENCY = ("emergency_id", "emergency_start", "emergency_duration", "emergency_groups")


def _limiter(args: argparse.Namespace, now: float) -> tuple[int, dict]:
    given = [getattr(args, k) is not None for k in EMERGENCY]
    if any(given) and not all(given):
        missing = ", ".join("--" + k.replace("_", "-") for k, g in zip(EMERGENCY, given, strict=True) if not g)
        raise CommandError(f"an emergency profile needs all of --emergency-id, --emergency-start, "
                           f"--emergency-duration and --emergency-groups: give {missing} too")
    emergency = tuple(getattr(args, k) for k in EMERGENCY) if all(given) else None
    return OP_LIMITER, limiter_args(args.watts, args.emergency_watts, args.min_over, args.min_under,
                                    args.auto_reconnect, emergency, now)  # type: ignore[arg-type]


def _cmd_limit(args: argparse.Namespace) -> int:
    return queue_cli(args, "limit", lambda now: _limiter(args, now))


def _queueing(p: argparse.ArgumentParser) -> None:
    add_db(p)
    p.add_argument("meter", metavar="METER", help="16-hex-digit device id or the meter's name")
    add_by(p)
    p.add_argument("--expires", type=utc_instant, default=None, metavar="WHEN",
                   help="not sent at or after this UTC time (default: a week from now)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit relay disconnect | reconnect | status` and `meterkit limit`."""
    r = subparsers.add_parser("relay", help="remote disconnect and reconnect of a meter's supply, and what its "
                                            "relay is (IC70)")
    sub = r.add_subparsers(dest="relay_op", required=True)
    for name, text in (("disconnect", "open the meter's relay (transitions b, c)"),
                       ("reconnect", "close it, or make it ready for the customer's button, by control mode "
                                     "(transitions a, d)")):
        p = sub.add_parser(name, help=text)
        _queueing(p)
        p.set_defaults(func=_cmd_switch)
    st = sub.add_parser("status", help="the relay state the meter confirmed, its limiter, its last relay events "
                                       "and the last relay command's result")
    add_db(st)
    st.add_argument("meter", metavar="METER", help="16-hex-digit device id or the meter's name")
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.set_defaults(func=_cmd_status)

    lim = subparsers.add_parser("limit", help="set a meter's load limiter (IC71): thresholds, durations, "
                                              "emergency profile; what is left out is kept")
    _queueing(lim)
    lim.add_argument("--watts", type=_watts, help="normal threshold, W of active import (0: no limit)")
    lim.add_argument("--emergency-watts", type=_watts, help="threshold inside the emergency window, W")
    lim.add_argument("--min-over", type=_duration, metavar="D", help="over the threshold this long: disconnect")
    lim.add_argument("--min-under", type=_duration, metavar="D", help="under it this long: restore")
    lim.add_argument("--auto-reconnect", action=argparse.BooleanOptionalAction, default=None,
                     help="reconnect by itself after --min-under (else the customer's button does)")
    lim.add_argument("--emergency-id", type=int, metavar="N", help="emergency profile id")
    lim.add_argument("--emergency-start", type=utc_instant, metavar="WHEN", help="emergency window start (UTC)")
    lim.add_argument("--emergency-duration", type=_duration, metavar="D", help="emergency window length")
    lim.add_argument("--emergency-groups", type=_groups, metavar="G,G",
                     help="the groups the emergency threshold applies to (comma-separated ids)")
    lim.set_defaults(func=_cmd_limit)

