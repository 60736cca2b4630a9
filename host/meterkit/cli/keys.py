"""`meterkit keys new`: the head-end's signing key pair."""

from __future__ import annotations

import argparse
import sys

from meterkit.cli.common import fail, run_alone
from meterkit.wire.keys import new_key


def _cmd_new(args: argparse.Namespace) -> int:
    try:
        key_path, pub_path, kid = new_key(args.out, args.name)
    except FileExistsError as e:
        return fail("keys new", e, 1)
    except (ValueError, OSError) as e:
        return fail("keys new", e)
    print(f"private key: {key_path} (mode 0600; keep it secret)")
    print(f"public key:  {pub_path}")
    print(f"key id:      {kid.hex()}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `keys` (with `keys new`) to a `meterkit` subparsers object."""
    keys = subparsers.add_parser("keys", help="head-end signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    new = sub.add_parser("new", help="generate a P-256 key pair (PKCS#8 PEM, mode 0600) and print its key id")
    new.add_argument("--out", required=True, help="directory for <name>.key.pem and <name>.pub.pem")
    new.add_argument("--name", default="headend", help="file name stem (default: headend)")
    new.set_defaults(func=_cmd_new)
    return keys


def main(argv: list[str] | None = None) -> int:
    """`meterkit keys ...` on its own (argv without the leading 'keys')."""
    return run_alone(add_parser, "keys", argv)


if __name__ == "__main__":
    sys.exit(main())
