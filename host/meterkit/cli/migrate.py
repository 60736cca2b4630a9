"""`meterkit migrate --from FILE --to URL [--verify-only]`: move a SQLite head-end to PostgreSQL, verified.

Exit 0: copied (or, --verify-only, found equal) and verified; 1: the verification found a difference (the copy
was rolled back: the target is as it was); 2: nothing could be done (source missing or at an old schema, target
unreachable or not empty), said why.
"""

from __future__ import annotations

import argparse
import sys

from meterkit.cli.common import fail, run_alone
from meterkit.store import StoreError, is_url
from meterkit.store.transfer import copy_to_postgres, verify_copy


def _cmd_migrate(args: argparse.Namespace) -> int:
    if not is_url(args.to):
        return fail("migrate", f"--to wants a postgresql:// URL, got {args.to!r}")
    if is_url(args.frm):
        return fail("migrate", f"--from wants the SQLite file, got a URL {args.frm!r}")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.verify_only:
            check = verify_copy(args.frm, args.to, say)
        else:
            check = copy_to_postgres(args.frm, args.to, say)
    except StoreError as e:
        return fail("migrate", e)
    print(check.format())
    if not check.ok:
        print("meterkit migrate: verification FAILED" + ("" if args.verify_only else
              ": rolled back, nothing was stored in the target"), file=sys.stderr)
        return 1
    if not args.verify_only:
        print(f"{args.frm} moved to {check.target}: point the concentrators at it with --db URL")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `migrate` to a `meterkit` subparsers object."""
    p = subparsers.add_parser(
        "migrate", help="move a SQLite head-end database to PostgreSQL, verified (rows, frames, signatures)",
        description="Copy every table of the SQLite head-end FILE into the empty PostgreSQL database URL in one "
                    "transaction, then verify before the commit: each table row by row, every frame's bytes, "
                    "every frame's signature against its meter's key, the audit log. Any difference rolls the "
                    "copy back. Exit 0 ok, 1 verification failed, 2 could not run.")
    p.add_argument("--from", dest="frm", required=True, metavar="FILE", help="the SQLite head-end database")
    p.add_argument("--to", required=True, metavar="URL",
                   help="postgresql://user@host:port/dbname: an existing, empty database (created by the operator)")
    p.add_argument("--verify-only", action="store_true",
                   help="copy nothing: verify an earlier copy against the file (read-only on both sides)")
    p.set_defaults(func=_cmd_migrate)


def main(argv: list[str] | None = None) -> int:
    """`meterkit migrate ...` on its own (argv without the leading 'migrate')."""
    return run_alone(add_parser, "migrate", argv)


if __name__ == "__main__":
    sys.exit(main())
