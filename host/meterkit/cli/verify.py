"""`meterkit verify FILE --key PUBKEY`: check a file of meter frames the way a customer would."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meterkit import wire as P
from meterkit.cli.common import run_alone
from meterkit.wire.audit import format_frame, format_gap, format_summary, verify_bytes
from meterkit.wire.keys import KeyFileError, load_public


def _cmd_verify(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        pub = load_public(args.key)
    except KeyFileError as e:
        print(f"meterkit verify: bad --key: {e}", file=err)
        return 2
    device = None
    if args.device:
        try:
            device = bytes.fromhex(args.device)
        except ValueError:
            device = b""
        if len(device) != P.DEVICE_ID_LEN:
            print(f"meterkit verify: --device wants {2 * P.DEVICE_ID_LEN} hex digits, got {args.device!r}",
                  file=err)
            return 2
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except FileNotFoundError:
        print(f"meterkit verify: {args.file}: no such file", file=err)
        return 2
    except OSError as e:
        print(f"meterkit verify: {args.file}: cannot read: {e.strerror or e}", file=err)
        return 2
    report = verify_bytes(data, pub, device)
    s = report["summary"]
    # only a complete, valid file passes unless told otherwise (issue 11: deleted frames passed)
    allow_noise, allow_gaps = args.allow_noise and not args.strict, args.allow_gaps and not args.strict
    ok = (s["frames"] > 0 and s["invalid"] == 0 and (allow_noise or not s["noise_segments"])
          and (allow_gaps or not s["missing"]))
    if args.json:
        report["file"] = args.file
        report["ok"] = ok
        print(json.dumps(report, indent=2))
    else:
        for f in report["frames"]:
            print(format_frame(f))
        for g in s["gaps"]:
            print(format_gap(g))
        print(format_summary(s))
        if not s["frames"]:
            print(f"no frames in {args.file}", file=err)
    return 0 if ok else 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `verify` to a `meterkit` subparsers object."""
    p = subparsers.add_parser(
        "verify", help="check a file of meter frames against the meter's public key (transparency tool)",
        description="Check every frame of FILE (a COBS frame stream) against the meter's public key and "
                    "show it in words. Exit 0 only for a complete, valid file (frames, all valid, no noise, "
                    "no gap in the sequence numbers), 1 otherwise, 2 on usage errors.")
    p.add_argument("file", metavar="FILE", help="frame stream, e.g. from `meterkit sim run --frames-out` "
                                                "('-' reads standard input)")
    p.add_argument("--key", required=True, metavar="PUBKEY",
                   help="the meter's public key: PEM, raw 65-byte point, or its 130 hex digits")
    p.add_argument("--device", metavar="HEX", help="accept only this 8-byte device id (16 hex digits)")
    p.add_argument("--json", action="store_true", help="print one JSON object with a list of frames")
    p.add_argument("--allow-gaps", action="store_true",
                   help="accept missing sequence numbers (a partial capture); they are still reported")
    p.add_argument("--allow-noise", action="store_true",
                   help="accept bytes between frames that are not frames (log text in a serial capture)")
    p.add_argument("--strict", action="store_true",
                   help="no gaps, no noise (the default; overrides the --allow options)")
    p.set_defaults(func=_cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    """`meterkit verify ...` on its own (argv without the leading 'verify')."""
    return run_alone(add_parser, "verify", argv)


if __name__ == "__main__":
    sys.exit(main())
