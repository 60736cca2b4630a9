"""`meterkit command calendar|billing-reset|profile|set-time|list`: queue operator commands, see their answers.

    meterkit command calendar      --meter ID|NAME --calendar FILE --activate WHEN [--expires WHEN] [--db PATH]
    meterkit command billing-reset --meter ID|NAME [--expires WHEN] [--db PATH]
    meterkit command profile       --meter ID|NAME --from WHEN --to WHEN [--expires WHEN] [--db PATH]
    meterkit command set-time      --meter ID|NAME [--force] [--expires WHEN] [--db PATH]
    meterkit command list          [--meter ID|NAME] [--state STATE] [--json] [--db PATH]

Every queueing command takes --by WHO (who the command is for, in the audit log; default: the OS user).
WHEN is UTC: ISO 8601 (2026-12-01T00:00Z; no offset means UTC) or Unix seconds. --db defaults to $METERKIT_DB,
else ./meterkit.db; the database must exist and know the meter.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meterkit.cli.common import add_by, add_db, open_store
from meterkit.headend import commands as C
from meterkit.headend.commands import (
    OP_BILLING_RESET,
    OP_CALENDAR,
    OP_PROFILE,
    OP_SET_TIME,
    CommandError,
    calendar_args,
    command_rows,
    describe,
    format_rows,
    label,
    load_calendar,
    parse_when,
    profile_args,
    queue,
    set_time_args,
)
from meterkit.store.api import QUEUE_STATES
from meterkit.timefmt import utc_text


def _when(text: str) -> int:
    try:
        return parse_when(text)
    except CommandError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def find_meter(store: Any, text: str, prog: str) -> bytes | None:
    """The device id of a meter named by id or name, or None after saying so (`meterkit <prog>`)."""
    dev = store.lookup_device(text)
    if dev is None:
        print(f"meterkit {prog}: no meter {text!r} (give its 16-hex-digit id or its name; "
              "meterkit meters list)", file=sys.stderr)
    return dev


def queue_cli(args: argparse.Namespace, prog: str, build: Any) -> int:
    """`meterkit <prog>`: build (op, args) with build(now), then queue it for args.meter (id or name) with
    args.expires and args.by. Exit 0 queued, 1 refused (said why, nothing queued), 2 no database or meter."""
    now = C.clock()
    try:
        op, cargs = build(now)
    except CommandError as e:
        print(f"meterkit {prog}: {e}", file=sys.stderr)
        return 1
    store = open_store(args.db, prog, readonly=False)
    if store is None:
        return 2
    with store:
        dev = find_meter(store, args.meter, prog)
        if dev is None:
            return 2
        try:
            qid = queue(store, dev, op, cargs, now, args.expires, note=f"meterkit {prog}", by=args.by)
        except CommandError as e:
            print(f"meterkit {prog}: {e}", file=sys.stderr)
            return 1
        q = store.queued_commands(ids=[qid])[0]
        m = store.meter(dev)
        online = m is not None and m.online
        print(f"queued command #{qid} for meter {label(store, dev)}: {describe(op, cargs)}; "
              f"expires {utc_text(q.expires_at)}; by {q.by}")
        print("the concentrator sends it " + ("now (the meter is online)" if online else
                                              "when the meter connects") + "; see: meterkit command list")
    return 0


def _cmd_calendar(args: argparse.Namespace) -> int:
    def build(now: float) -> tuple[int, dict]:
        cal = load_calendar(args.calendar)
        return OP_CALENDAR, calendar_args(cal, args.activate, now)

    return queue_cli(args, "command calendar", build)


def _cmd_billing_reset(args: argparse.Namespace) -> int:
    return queue_cli(args, "command billing-reset", lambda now: (OP_BILLING_RESET, None))


def _cmd_profile(args: argparse.Namespace) -> int:
    return queue_cli(args, "command profile", lambda now: (OP_PROFILE, profile_args(args.frm, args.to)))


def _cmd_set_time(args: argparse.Namespace) -> int:
    return queue_cli(args, "command set-time", lambda now: (OP_SET_TIME, set_time_args(args.force)))


def show(args: argparse.Namespace, prog: str, read: Any, fmt: Any, readonly: bool = True) -> int:
    """`meterkit <prog> [METER] [--json]`: print read(store, device of args.meter or None) as JSON or as fmt()
    makes it. Exit 0, or 2 (no database, no such meter: said why)."""
    store = open_store(args.db, prog, readonly=readonly)
    if store is None:
        return 2
    with store:
        dev = None
        if args.meter:
            dev = find_meter(store, args.meter, prog)
            if dev is None:
                return 2
        out = read(store, dev)
    print(json.dumps(out, indent=2, ensure_ascii=False) if args.json else fmt(out))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    return show(args, "command list", lambda store, dev: command_rows(store, dev, args.state), format_rows,
                readonly=False)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit command calendar | billing-reset | profile | set-time | list`."""
    c = subparsers.add_parser("command", help="queue operator commands to meters (tariff calendar, billing "
                                              "reset, profile re-read, set the clock) and see their answers")
    sub = c.add_subparsers(dest="command_op", required=True)

    def common(p: argparse.ArgumentParser, meter_required: bool = True) -> None:
        add_db(p)
        p.add_argument("--meter", required=meter_required, help="16-hex-digit device id or the meter's name")

    def expires(p: argparse.ArgumentParser) -> None:
        add_by(p)
        p.add_argument("--expires", type=_when, default=None, metavar="WHEN",
                       help="not sent at or after this UTC time (default: a week from now; a calendar: its "
                            "activation)")

    cal = sub.add_parser("calendar", help="send a TOU calendar, active from a future instant (passive until then)")
    common(cal)
    cal.add_argument("--calendar", required=True, metavar="FILE", help="calendar JSON (docs/tariffs.md)")
    cal.add_argument("--activate", required=True, type=_when, metavar="WHEN",
                     help="when it becomes active: UTC, e.g. 2026-12-01T00:00Z, or Unix seconds")
    expires(cal)
    cal.set_defaults(func=_cmd_calendar)

    br = sub.add_parser("billing-reset", help="close the billing period now (snapshot, then demand reset)")
    common(br)
    expires(br)
    br.set_defaults(func=_cmd_billing_reset)

    pr = sub.add_parser("profile", help="have the meter send its load-profile rows of a time range again")
    common(pr)
    pr.add_argument("--from", dest="frm", required=True, type=_when, metavar="WHEN", help="first row end (UTC)")
    pr.add_argument("--to", required=True, type=_when, metavar="WHEN", help="last row end (UTC)")
    expires(pr)
    pr.set_defaults(func=_cmd_profile)

    st = sub.add_parser("set-time", help="set the meter's clock to the concentrator's (taken when the command "
                                         "is signed, not when it is queued)")
    common(st)
    st.add_argument("--force", action="store_true",
                    help="allow a jump of more than 900 s (without it the meter refuses one: -4)")
    expires(st)
    st.set_defaults(func=_cmd_set_time)

    ls = sub.add_parser("list", help="queued commands: state, result and reason")
    common(ls, meter_required=False)
    ls.add_argument("--state", action="append", choices=QUEUE_STATES, help="only these states (repeatable)")
    ls.add_argument("--json", action="store_true", help="one JSON list, a dict per command")
    ls.set_defaults(func=_cmd_list)
