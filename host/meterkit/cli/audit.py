"""`meterkit audit [METER] [--json] [--db PATH]`: the command audit log, oldest first.

One line per thing that happened to a command: queued (by whom), sent (each attempt, its counter), answered or
refused (the meter's result and reason), answered again, expired, failed. The concentrator's own commands
(set-time, back-fill, profile re-reads for load-profile gaps) are logged for 'concentrator'.
"""

from __future__ import annotations

import argparse

from meterkit.cli.command import show
from meterkit.cli.common import add_db
from meterkit.headend.audit import audit_rows, format_audit


def _cmd_audit(args: argparse.Namespace) -> int:
    return show(args, "audit", audit_rows, format_audit)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit audit`."""
    p = subparsers.add_parser("audit", help="the command audit log: who queued what, when it was sent and "
                                            "answered, and the result (oldest first)")
    add_db(p)
    p.add_argument("meter", nargs="?", metavar="METER", help="only this meter (16-hex-digit id or name)")
    p.add_argument("--json", action="store_true", help="one JSON list, a dict per entry")
    p.set_defaults(func=_cmd_audit)
