"""What several `meterkit` commands share: argument types, the default database, opening it with a message."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from meterkit.store import StoreError
from meterkit.store import open_store as _open
from meterkit.store.api import Store
from meterkit.timefmt import parse_utc


def default_db() -> str:
    return os.environ.get("METERKIT_DB", "meterkit.db")


def add_db(p: argparse.ArgumentParser, required: bool = False, help: str | None = None) -> None:
    """--db: the head-end database (default $METERKIT_DB, else ./meterkit.db)."""
    if required:
        p.add_argument("--db", required=True, help=help or "head-end database")
    else:
        p.add_argument("--db", default=default_db(), help=help or "head-end database (default $METERKIT_DB or "
                                                                    "meterkit.db)")


def add_by(p: argparse.ArgumentParser) -> None:
    """--by: who a queued command is for, as the audit log records it (default: the OS user)."""
    p.add_argument("--by", default=None, metavar="WHO",
                   help="who the command is for, in the audit log (default: the OS user)")


def open_store(path: str, prog: str, readonly: bool = True, create: bool = False) -> Store | None:
    """The head-end database for `meterkit <prog>`, or None after saying why on stderr."""
    try:
        return _open(path, create=create, readonly=readonly)
    except StoreError as e:
        print(f"meterkit {prog}: {e}", file=sys.stderr)
        return None


def utc_instant(text: str) -> int:
    """argparse type: a UTC instant (meterkit.timefmt.parse_utc)."""
    try:
        return parse_utc(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def host_port(text: str) -> tuple[str, int]:
    """argparse type: HOST:PORT (an empty host listens everywhere)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def run_alone(add_parser: Callable[[argparse._SubParsersAction], object], command: str,
              argv: list[str] | None = None) -> int:
    """`meterkit <command> ...` from one family module on its own (argv without the leading command)."""
    parser = argparse.ArgumentParser(prog="meterkit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


def fail(prog: str, message: object, code: int = 2) -> int:
    """Say why `meterkit <prog>` stops, on stderr; return its exit code."""
    print(f"meterkit {prog}: {message}", file=sys.stderr)
    return code
