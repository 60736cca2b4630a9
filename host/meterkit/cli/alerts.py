"""`meterkit alerts`: the security monitor's alerts (docs/alerts.md).

    meterkit alerts [--db PATH] [--meter METER] [--severity info|warning|critical] [--state open|acknowledged|all]
                    [--json]
    meterkit alerts ack ID [ID ...] [--by WHO]

Listing shows open alerts by default, oldest first; --severity shows that severity and above. Acknowledging
closes an alert for new occurrences (the next one opens a new alert) and records who did it and when.
"""

from __future__ import annotations

import argparse
import json
import time

from meterkit.cli.command import find_meter
from meterkit.cli.common import add_db, fail, open_store
from meterkit.headend.alertview import acknowledge, alert_rows, format_alerts
from meterkit.headend.commands import operator
from meterkit.store.api import ALERT_STATES, SEVERITIES


def _cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args.db, "alerts")
    if store is None:
        return 2
    with store:
        dev = None
        if args.meter:
            dev = find_meter(store, args.meter, "alerts")
            if dev is None:
                return 2
        rows = alert_rows(store, dev, args.severity, None if args.state == "all" else args.state)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_alerts(rows))
    return 0


def _cmd_ack(args: argparse.Namespace) -> int:
    store = open_store(args.db, "alerts ack", readonly=False)
    if store is None:
        return 2
    with store:
        missing = acknowledge(store, args.ids, args.by or operator(), time.time())
    for i in args.ids:
        if i not in missing:
            print(f"alert {i} acknowledged")
    if missing:
        return fail("alerts ack", f"no open alert {', '.join(map(str, missing))} (meterkit alerts --state all)", 1)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit alerts [ack]`."""
    p = subparsers.add_parser("alerts", help="the security monitor's alerts: list (open by default), acknowledge")
    add_db(p)
    p.add_argument("--meter", help="only this meter (16-hex-digit id or name)")
    p.add_argument("--severity", choices=SEVERITIES, help="only this severity and above")
    p.add_argument("--state", choices=(*ALERT_STATES, "all"), default="open", help="default: open")
    p.add_argument("--json", action="store_true", help="one JSON list, a dict per alert")
    p.set_defaults(func=_cmd_list)
    sub = p.add_subparsers(dest="alerts_op")
    a = sub.add_parser("ack", help="acknowledge alerts: seen; the next occurrence opens a new one")
    # before or after `ack` alike (a subparser's own default would override the one given before it)
    a.add_argument("--db", default=argparse.SUPPRESS, help="head-end database (default $METERKIT_DB or meterkit.db)")
    a.add_argument("ids", nargs="+", type=int, metavar="ID")
    a.add_argument("--by", default=None, metavar="WHO", help="who acknowledges (default: the OS user)")
    a.set_defaults(func=_cmd_ack)
