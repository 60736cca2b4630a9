"""`meterkit keys new|rotate|status`: the head-end's signing key pair, its rotation, who holds which key.

    meterkit keys new    --out DIR [--name NAME]
    meterkit keys rotate --key CURRENT.key.pem [--name NAME] [--expires WHEN] [--by WHO] [--db PATH]
    meterkit keys status [--key CURRENT.key.pem] [--json] [--db PATH]
    meterkit keys tls    --out DIR [--name HEADEND-NAME] [--host ADDR ...] [--meter NAME ...]

rotate makes a new key pair next to the current one and queues a key rotation (op 12) for every registered
meter; the concentrator signs each with the key that meter holds, and moves the meter to the new key when its
answer is stored. docs/concentrator.md, "Configuration, reboot and key rotation"; docs/security.md.

tls makes the TLS certificates of the meter link (meterkit.wire.tlscerts): a private CA, the head-end's certificate
and key (--tls-cert/--tls-key of `meterkit concentrator`), and a client certificate per --meter for mutual TLS; a
directory made before gets the meters it lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from meterkit.cli.command import _when
from meterkit.cli.common import add_by, add_db, fail, open_store, run_alone
from meterkit.headend import keyring
from meterkit.headend.commands import CommandError
from meterkit.timefmt import utc_text
from meterkit.wire import tlscerts
from meterkit.wire.keys import KeyFileError, key_id, load_private, load_public, new_key, point_of


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


def _cmd_rotate(args: argparse.Namespace) -> int:
    try:
        current = key_id(load_private(args.key).public_key())
    except KeyFileError as e:
        return fail("keys rotate", e)
    store = open_store(args.db, "keys rotate", readonly=False)
    if store is None:
        return 2
    with store:
        if not store.meters():
            return fail("keys rotate", "no meters registered: nothing to rotate (a new key needs no rotation: "
                                       "meterkit keys new)", 1)
        name = args.name or time.strftime("headend-%Y%m%dT%H%M%SZ", time.gmtime())
        try:
            key_path, pub_path, kid = new_key(Path(args.key).resolve().parent, name)
        except (FileExistsError, ValueError, OSError) as e:
            return fail("keys rotate", e, 1)
        try:
            ids = keyring.rotate(store, current, point_of(load_public(pub_path)), time.time(), args.expires, args.by)
        except CommandError as e:
            return fail("keys rotate", e, 1)
    print(f"new head-end key {kid.hex()}: {key_path} (private), {pub_path}")
    print(f"queued a key rotation for {len(ids)} meter(s) (commands #{ids[0]}..#{ids[-1]}), each signed with the "
          f"key it holds ({current.hex()} unless rotated before)")
    print(f"a running concentrator finds the new key next to {args.key}; restart it with --key {args.key} "
          f"--key {key_path}; once `meterkit keys status` shows every meter on {kid.hex()}, retire the old key")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    default = None
    if args.key:
        try:
            default = key_id(load_private(args.key).public_key())
        except KeyFileError as e:
            return fail("keys status", e)
    store = open_store(args.db, "keys status")
    if store is None:
        return 2
    with store:
        rows = keyring.status(store, default)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        kid = r["kid"] or "the concentrator's first --key"
        since = f" since {utc_text(r['since'])}" if r["since"] else ""
        to = f"; rotating to {r['rotating_to']}" + ("" if r["online"] else " (offline: when it returns)") \
            if r["rotating_to"] else ""
        print(f"{r['meter'] or r['device']}: {kid}{since}{to}")
    held = {r["kid"] for r in rows}
    if len(held) == 1 and not any(r["rotating_to"] for r in rows) and None not in held:
        print(f"every meter holds {held.pop()}: any other head-end key can be retired")
    return 0


def _cmd_tls(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        if (out / "ca.key.pem").exists():
            files = tlscerts.tls_files(out, args.name)
            ca_key, ca = tlscerts.load_ca(files)
            for m in args.meter:
                if m not in files.meters:
                    files.meters[m] = tlscerts.add_meter(files, ca_key, ca, m)
        else:
            files = tlscerts.make_tls_dir(out, args.name, tuple(args.host), tuple(args.meter))
    except (ValueError, OSError) as e:
        return fail("keys tls", e)
    print(f"CA (pin it on the meters: link.tls.ca): {files.ca_der} ({files.ca}); its key {files.ca_key}: keep it "
          "offline")
    print(f"head-end: --tls-cert {files.cert} --tls-key {files.key} (name {files.server_name!r}: the meters' "
          "link.tls.server_name)")
    for name, (cert, key) in sorted(files.meters.items()):
        print(f"meter {name}: link.tls.cert {cert}, link.tls.key {key} (mutual TLS: --tls-client-ca {files.ca})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `keys` (with `keys new`, `keys rotate`, `keys status`) to a `meterkit` subparsers object."""
    keys = subparsers.add_parser("keys", help="head-end signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    new = sub.add_parser("new", help="generate a P-256 key pair (PKCS#8 PEM, mode 0600) and print its key id")
    new.add_argument("--out", required=True, help="directory for <name>.key.pem and <name>.pub.pem")
    new.add_argument("--name", default="headend", help="file name stem (default: headend)")
    new.set_defaults(func=_cmd_new)
    rot = sub.add_parser("rotate", help="make a new head-end key next to the current one and queue its rotation "
                                        "for every registered meter")
    add_db(rot)
    add_by(rot)
    rot.add_argument("--key", required=True, help="the current head-end private key (PEM): the new one is "
                                                  "written beside it")
    rot.add_argument("--name", help="file name stem of the new key (default: headend-<UTC time>)")
    rot.add_argument("--expires", type=_when, default=None, metavar="WHEN",
                     help="give up on a meter not reached by then (default: a week; an offline meter gets it "
                          "when it returns before that)")
    rot.set_defaults(func=_cmd_rotate)
    st = sub.add_parser("status", help="which head-end key each meter holds, and rotations on their way")
    add_db(st)
    st.add_argument("--key", help="the concentrator's first key: names the key of meters with none recorded")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    tls = sub.add_parser("tls", help="TLS certificates for the meter link: a CA, the head-end's certificate, meter "
                                     "certificates for mutual TLS (ECDSA P-256)")
    tls.add_argument("--out", required=True, help="directory for them (0700; private keys 0600)")
    tls.add_argument("--name", default=tlscerts.DEFAULT_SERVER_NAME,
                     help=f"the head-end's name in its certificate (default {tlscerts.DEFAULT_SERVER_NAME})")
    tls.add_argument("--host", action="append", default=[], metavar="ADDR",
                     help="another name or IP address for the certificate (repeatable)")
    tls.add_argument("--meter", action="append", default=[], metavar="NAME",
                     help="a meter client certificate (repeatable; added to an existing directory)")
    tls.set_defaults(func=_cmd_tls)
    return keys


def main(argv: list[str] | None = None) -> int:
    """`meterkit keys ...` on its own (argv without the leading 'keys')."""
    return run_alone(add_parser, "keys", argv)


if __name__ == "__main__":
    sys.exit(main())
