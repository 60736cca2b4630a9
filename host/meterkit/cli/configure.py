"""`meterkit config METER ...` and `meterkit reboot METER`: queue a configuration or a reboot (ops 10, 11).

    meterkit config METER [--demand-period S] [--capture-period S] [--reading-s S] [--over-current-ma N]
                          [--over-voltage-mv N] [--control-mode M] [--groups 1,2] [--expires WHEN] [--by WHO]
                          [--db PATH]
    meterkit reboot METER [--expires WHEN] [--by WHO] [--db PATH]

The concentrator delivers them through the command queue (`meterkit command list` shows the answers). A meter
takes a configuration whole or not at all; what it cannot honour is refused here already (meter.board's
SETTING_VALUES). docs/concentrator.md, "Configuration, reboot and key rotation".
"""

from __future__ import annotations

import argparse

from meterkit.cli.command import _when, queue_cli
from meterkit.cli.common import add_by, add_db
from meterkit.headend.commands import OP_CONFIG, OP_REBOOT, config_args


def _groups(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--groups wants group ids like 1,2, not {text!r}") from None


def _cmd_config(args: argparse.Namespace) -> int:
    def build(now: float) -> tuple[int, dict]:
        return OP_CONFIG, config_args(
            demand_period_s=args.demand_period, capture_period_s=args.capture_period, reading_s=args.reading_s,
            over_current_ma=args.over_current_ma, over_voltage_mv=args.over_voltage_mv,
            control_mode=args.control_mode, groups=args.groups)

    return queue_cli(args, "config", build)


def _cmd_reboot(args: argparse.Namespace) -> int:
    return queue_cli(args, "reboot", lambda now: (OP_REBOOT, None))


def _common(p: argparse.ArgumentParser) -> None:
    add_db(p)
    add_by(p)
    p.add_argument("meter", help="16-hex-digit device id or the meter's name")
    p.add_argument("--expires", type=_when, default=None, metavar="WHEN",
                   help="not sent at or after this UTC time (default: a week from now)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit config` and `meterkit reboot`."""
    c = subparsers.add_parser("config", help="change a meter's settings: periods, reporting interval, alarm "
                                             "thresholds, control mode, groups (all or nothing)")
    _common(c)
    c.add_argument("--demand-period", type=int, metavar="S", help="demand period, s: 300, 900, 1800 or 3600 "
                   "(from the next billing-period end)")
    c.add_argument("--capture-period", type=int, metavar="S", help="load-profile capture period, s: 60, 300, "
                   "600, 900, 1800 or 3600 (from the top of the next hour)")
    c.add_argument("--reading-s", type=int, metavar="S", help="seconds between readings, 10..86400")
    c.add_argument("--over-current-ma", type=int, metavar="N", help="over-current alarm, mA (0: off)")
    c.add_argument("--over-voltage-mv", type=int, metavar="N", help="over-voltage alarm, mV (0: off)")
    c.add_argument("--control-mode", type=int, metavar="M", help="disconnect control mode 0..6 (IC 70)")
    c.add_argument("--groups", type=_groups, metavar="1,2", help="the meter's group ids (demand response)")
    c.set_defaults(func=_cmd_config)
    r = subparsers.add_parser("reboot", help="restart a meter (it answers first; nothing it stored is lost)")
    _common(r)
    r.set_defaults(func=_cmd_reboot)

