"""`meterkit firmware sign|rotate-key|push|status`: signed firmware updates (docs/firmware-updates.md).

    meterkit firmware sign   --key firmware.key.pem --seq N --class BOARD/ARCH --version TEXT
                             (--payload FILE | --files F ...) --out UPDATE
    meterkit firmware sign   --key firmware.key.pem --seq N (--board NAME | --class BOARD/ARCH) --version TEXT
                             --bundle DIR [--base DIR] --out UPDATE    (a stock-firmware board's A/B slots)
    meterkit firmware rotate-key --key CURRENT.key.pem --new-pub NEXT.pub.pem --seq N --class BOARD/ARCH
                             --out UPDATE
    meterkit firmware push   UPDATE --firmware-pub firmware.pub.pem (--meter M ... | --all) [--canary N]
                             [--wave N] [--timeout S] [--by WHO] [--db PATH]
    meterkit firmware status [--json] [--db PATH]

The firmware key is not the head-end's (meterkit keys new --name firmware makes one); sign runs where that key
is kept. rotate-key makes an update whose payload is the next firmware public key, signed by the current
firmware key: pushed like an image, the meters install it (no restart) and take only the new key's updates after.
push checks the update against the firmware public key as a meter would, queues it for the canary,
waits for it to come back with the new version, then the next waves; a running concentrator delivers it. It
halts (exit 1) when a wave's meter refuses, rolls back or does not come back within --timeout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from meter import messages as M
from meterkit.cli.command import find_meter
from meterkit.cli.common import add_by, add_db, fail, open_store, run_alone
from meterkit.device.build import BuildError, load_bundle
from meterkit.firmware import image as I
from meterkit.firmware.rollout import Rollout, status_rows
from meterkit.headend.texttable import text_table
from meterkit.wire.keys import KeyFileError, load_private, load_public


def _cmd_sign(args: argparse.Namespace) -> int:
    try:
        key = load_private(args.key)
        if args.bundle:
            fmt, payload, board_class = M.FW_APP_FILES, *_bundle_payload(args)
        else:
            if not args.board_class:
                raise I.UpdateError("--class BOARD/ARCH is needed with --payload or --files")
            fmt, board_class = M.FW_IMAGE, args.board_class
            payload = (Path(args.payload).read_bytes() if args.payload
                       else I.pack_files({Path(f).name: Path(f).read_bytes() for f in args.files}))
        upd = I.sign(key, payload, args.seq, board_class, args.version, fmt)
        Path(args.out).write_bytes(upd.to_bytes())
    except (KeyFileError, OSError, I.UpdateError, BuildError) as e:
        return fail("firmware sign", e)
    print(f"{args.out}: {upd.version} seq {upd.seq} for {upd.board_class}, {len(upd.payload)} bytes in "
          f"{len(upd.chunks())} chunks")
    return 0


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    try:
        upd = I.rotation(load_private(args.key), load_public(args.new_pub), args.seq, args.board_class)
        Path(args.out).write_bytes(upd.to_bytes())
    except (KeyFileError, OSError, I.UpdateError) as e:
        return fail("firmware rotate-key", e)
    print(f"{args.out}: {upd.version} seq {upd.seq} for {upd.board_class}; push it with --firmware-pub set to the "
          "CURRENT key; later updates are signed with the new key and a sequence number above " + str(upd.seq))
    return 0


def _bundle_payload(args: argparse.Namespace) -> tuple[bytes, str]:
    """(the MKIH archive of --bundle, against --base; the class id: --class, or --board and the bundle's arch)."""
    bundle = load_bundle(args.bundle)
    base = load_bundle(args.base) if args.base else None
    if args.board_class:
        board_class = args.board_class
    elif not args.board:
        raise I.UpdateError("--board NAME (the board profile's name) or --class BOARD/ARCH is needed with --bundle")
    elif bundle.arch == "none":
        raise I.UpdateError("the bundle is portable bytecode (arch none): name the boards' arch with --class")
    else:
        board_class = f"{args.board}/{bundle.arch}"
    if base is not None and (base.arch, base.mpy) != (bundle.arch, bundle.mpy):
        raise I.UpdateError(f"the base bundle is built for {base.arch} (.mpy {base.mpy:#x}), this one for "
                            f"{bundle.arch} (.mpy {bundle.mpy:#x})")
    if base is not None and base.root_files() != bundle.root_files():
        print("note: the bundle's main.py differs from the base's; an update leaves a board's main.py as it is "
              "(`meterkit device deploy` replaces it)")
    code = {rel: bundle.data(f"slot/{rel}") for rel in bundle.slot_files()}
    slot_manifest = {"id": bundle.id, "arch": bundle.arch, "profile": board_class.split("/")[0]}
    return I.pack_slot(code, slot_manifest, base.slot_files() if base is not None else None), board_class


def _cmd_push(args: argparse.Namespace) -> int:
    try:
        upd = I.load(args.update, load_public(args.firmware_pub))
    except (KeyFileError, I.UpdateError) as e:
        return fail("firmware push", e)
    store = open_store(args.db, "firmware push", readonly=False)
    if store is None:
        return 2
    with store:
        if args.all:
            devices = [m.device_id for m in store.meters()]
        else:
            devices = [find_meter(store, m, "firmware push") for m in args.meter or []]
            if None in devices:
                return 2
        try:
            r = Rollout(store, upd, devices, canary=args.canary, wave=args.wave, timeout_s=args.timeout, by=args.by)
        except ValueError as e:
            return fail("firmware push", e)
        shown = 0

        def tick(s: float) -> None:
            nonlocal shown
            for line in r.log[shown:]:
                print(line, flush=True)
            shown = len(r.log)
            time.sleep(s)

        state = r.run(sleep=tick)
        tick(0)
    return 0 if state == "done" else 1


def _cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args.db, "firmware status")
    if store is None:
        return 2
    with store:
        rows = status_rows(store)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(text_table(("meter", "firmware", "last firmware event", "update commands queued"),
                         [(r["meter"], r["firmware"] or "?", r["last_event"] or "-", str(r["pending_commands"]))
                          for r in rows], right={3}))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("firmware", help="signed firmware updates: sign, push in waves, status")
    sub = p.add_subparsers(dest="firmware_command", required=True)
    s = sub.add_parser("sign", help="sign an image with the firmware key (an update file)")
    s.add_argument("--key", required=True, help="the firmware-signing private key (PEM)")
    s.add_argument("--seq", type=int, required=True, help="sequence number: above every one the meters ran")
    s.add_argument("--class", dest="board_class", metavar="BOARD/ARCH",
                   help="class id: the board profile's name and the .mpy arch, e.g. unix-sim/x64")
    s.add_argument("--board", help="with --bundle: the board profile's name (the class id's arch: the bundle's)")
    s.add_argument("--version", required=True, help="the version text meters report once they run it")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--payload", help="the image as it is (an ESP32 firmware .bin)")
    what.add_argument("--files", nargs="+", help="files packed as an MKIM archive (the Unix port's image)")
    what.add_argument("--bundle", help="a `meterkit device build` bundle: its application files for the other A/B "
                      "slot of a stock-firmware board (payload format 2)")
    s.add_argument("--base", help="with --bundle: the bundle the boards run now; files it holds unchanged are not "
                   "sent (the board copies them from its running slot)")
    s.add_argument("--out", required=True, help="the update file to write")
    s.set_defaults(func=_cmd_sign)
    k = sub.add_parser("rotate-key", help="an update that replaces the meters' firmware key, signed by the current one")
    k.add_argument("--key", required=True, help="the CURRENT firmware-signing private key (PEM)")
    k.add_argument("--new-pub", required=True, help="the next firmware public key (PEM): meterkit keys new --name ...")
    k.add_argument("--seq", type=int, required=True, help="sequence number: above every one the meters ran; the "
                                                           "rotation uses it up")
    k.add_argument("--class", dest="board_class", required=True, metavar="BOARD/ARCH",
                   help="class id of the meters that take it, e.g. unix-sim/x64 (one rotation per class)")
    k.add_argument("--out", required=True, help="the update file to write")
    k.set_defaults(func=_cmd_rotate_key)
    u = sub.add_parser("push", help="roll an update out in waves: a canary, then the rest")
    u.add_argument("update", help="the update file (meterkit firmware sign or rotate-key)")
    u.add_argument("--firmware-pub", required=True, help="the firmware public key the meters hold (PEM)")
    who = u.add_mutually_exclusive_group(required=True)
    who.add_argument("--meter", action="append", help="a meter (id or name), in rollout order; repeatable")
    who.add_argument("--all", action="store_true", help="every registered meter")
    u.add_argument("--canary", type=int, default=1, help="meters in the first wave (default 1)")
    u.add_argument("--wave", type=int, default=None, help="meters per later wave (default: all the rest)")
    u.add_argument("--timeout", type=float, default=1800.0, help="seconds a wave may take (default 1800)")
    add_by(u)
    add_db(u)
    u.set_defaults(func=_cmd_push)
    t = sub.add_parser("status", help="each meter's firmware and its last firmware event")
    t.add_argument("--json", action="store_true")
    add_db(t)
    t.set_defaults(func=_cmd_status)


def main(argv: list[str] | None = None) -> int:
    return run_alone(add_parser, "firmware", argv)
