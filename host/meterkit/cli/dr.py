"""`meterkit dr groups|event|list|report`: demand response, the utility's side (docs/demand-response.md).

    meterkit dr groups [METER [GROUPS]] [--no-send] [--by WHO] [--db PATH]   show, or set (1,2 / none) a meter's
                                                                              groups
    meterkit dr event --group G (--limit-w W | --shed) --start WHEN --duration 2h [--id N] [--by WHO] [--db PATH]
    meterkit dr list [--json] [--db PATH]
    meterkit dr report EVENT [--json] [--tz ZONE] [--days N] [--db PATH]
"""

from __future__ import annotations

import argparse
import json

from meterkit.cli.common import add_by, add_db, fail, open_store, utc_instant
from meterkit.dr import baseline, programme, report
from meterkit.headend import commands as C
from meterkit.timefmt import parse_duration, utc_text


def _arg(parse):  # an argparse type from a parser raising ValueError (CommandError is one)
    def f(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return f


def _groups(args: argparse.Namespace) -> int:
    store = open_store(args.db, "dr groups", readonly=args.groups is None)
    if store is None:
        return 2
    with store:
        devs = [m.device_id for m in store.meters()]
        if args.meter is not None:
            dev = store.lookup_device(args.meter)
            if dev is None:
                return fail("dr groups", f"no meter {args.meter!r} (its 16-hex-digit id or its name)")
            devs = [dev]
            if args.groups is not None:
                try:
                    qid = programme.set_groups(store, dev, args.groups, C.clock(), send=not args.no_send,
                                               by=args.by or C.operator())
                except C.CommandError as e:
                    return fail("dr groups", e, 1)
                print(f"meter {C.label(store, dev)}: groups {_ids(args.groups)}" + (
                    f"; queued command #{qid} to tell the meter (meterkit command list)" if qid else
                    "" if args.no_send else "; a meter keeps its last groups (it takes 1..16, not none)"))
                return 0
        for dev in devs:
            print(f"{C.label(store, dev)}: {_ids(store.groups(dev))}")
    return 0


def _ids(groups: list[int]) -> str:
    return ",".join(map(str, groups)) or "none"


def _event(args: argparse.Namespace) -> int:
    store = open_store(args.db, "dr event", readonly=False)
    if store is None:
        return 2
    with store:
        try:
            called = programme.call_event(store, args.group, args.start, args.duration, args.limit_w, args.shed,
                                          C.clock(), args.id, note="meterkit dr event", by=args.by or C.operator())
        except C.CommandError as e:
            return fail("dr event", e, 1)
        ev = called.event
        what = "shed" if ev.shed else f"limit {ev.limit_w} W"
        print(f"demand-response event {ev.id}: group {ev.group_id}, {what}, {utc_text(ev.start)} .. "
              f"{utc_text(ev.end)}")
        for t in called.targets:
            print(f"  queued command #{t.queue_id} for meter {C.label(store, t.device_id)} (expires at the end)")
        print(f"{len(called.targets)} meter(s); participation and reduction: meterkit dr report {ev.id}")
    return 0


def _show(args: argparse.Namespace, prog: str, make, fmt) -> int:
    """Read-only: make(store, now) -> rows, printed as JSON (--json) or by fmt; a ValueError is the reason."""
    store = open_store(args.db, prog)
    if store is None:
        return 2
    with store:
        try:
            got = make(store, C.clock())
        except ValueError as e:
            return fail(prog, e, 1)
    print(json.dumps(got, indent=2) if args.json else fmt(got))
    return 0


def _list(args: argparse.Namespace) -> int:
    return _show(args, "dr list", report.event_list, report.format_list)


def _report(args: argparse.Namespace) -> int:
    return _show(args, "dr report", lambda store, now: report.event_report(store, args.event, now, args.tz,
                                                                           args.days), report.format_report)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit dr groups | event | list | report`."""
    d = subparsers.add_parser("dr", help="demand response: meter groups, events on a group, participation and "
                                         "measured load reduction")
    sub = d.add_subparsers(dest="dr_op", required=True)

    g = sub.add_parser("groups", help="show the meters' groups, or set one meter's (and queue OP_CONFIG to tell "
                                      "it)")
    add_db(g)
    g.add_argument("meter", nargs="?", help="16-hex-digit device id or name (none: every meter)")
    g.add_argument("groups", nargs="?", type=_arg(programme.parse_groups), help="comma-separated ids, or none")
    g.add_argument("--no-send", action="store_true", help="the registry only: queue no command")
    add_by(g)
    g.set_defaults(func=_groups)

    e = sub.add_parser("event", help="call an event on a group: queued for each of its meters, expiring at the "
                                     "event's end")
    add_db(e)
    e.add_argument("--group", required=True, type=int, help="group id")
    how = e.add_mutually_exclusive_group(required=True)
    how.add_argument("--limit-w", type=int, metavar="W", help="limit import to W watts")
    how.add_argument("--shed", action="store_true", help="open the load-control output")
    e.add_argument("--start", required=True, type=utc_instant, metavar="WHEN", help="UTC, e.g. 2026-12-01T17:00Z")
    e.add_argument("--duration", required=True, type=_arg(parse_duration), help="e.g. 2h, 90m, 1h30m")
    e.add_argument("--id", type=int, help="event id (default: one more than the largest)")
    add_by(e)
    e.set_defaults(func=_event)

    ls = sub.add_parser("list", help="the events called, with their participation")
    add_db(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    r = sub.add_parser("report", help="an event's participation and measured reduction, per meter and group")
    add_db(r)
    r.add_argument("event", type=int, help="event id")
    r.add_argument("--json", action="store_true")
    r.add_argument("--tz", default="UTC", help="the programme's time zone: days and clock times (default UTC)")
    r.add_argument("--days", type=int, default=baseline.DAYS, help="similar days averaged (default 10)")
    r.set_defaults(func=_report)
