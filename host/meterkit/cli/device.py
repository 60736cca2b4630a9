"""`meterkit device build|flash|deploy|provision|calibrate`: a board from nothing to reporting (README, "Real
hardware"; docs/hardware.md has every command).

    meterkit device build [--arch xtensawin|rv32imc|x86|x64|none] [--out DIR]
    meterkit device flash --port PORT --firmware FILE.bin [--chip esp32|esp32s3|esp32c3] [--dry-run]
    meterkit device deploy --port PORT --board PROFILE.json [--bundle DIR] [--release-via FLEET.db]
    meterkit device provision --port PORT --db FLEET.db --headend-key HEADEND.pub.pem
                              [--serial | --wifi SSID --password PW --connect HOST:PORT | --tcp HOST:PORT]
                              [--name NAME] [--period S] [--pubkey-out METER.pem] [--release-via FLEET.db]
                              [--firmware-pub FIRMWARE.pub.pem]
                              [--tls-ca CA --tls-server-name NAME [--tls-cert METER.der --tls-key METER.key.der]]
    meterkit device calibrate --port PORT [--points FILE] [--cycles N] [--release-via FLEET.db]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from meterkit.cli.common import fail, host_port, open_store
from meterkit.device import build as B
from meterkit.device import calibrate as C
from meterkit.device import flash as F
from meterkit.device import provision as PV
from meterkit.device.deploy import deploy, load_profile
from meterkit.device.session import DeviceError
from meterkit.device.tlsfiles import load_tls
from meterkit.device.toolchain import repo_root
from meterkit.headend.handover import HandoverError, released
from meterkit.sim.runner import write_public_pem
from meterkit.wire.keys import KeyFileError, key_id, load_public, public_bytes


@contextlib.contextmanager
def _port_lent(args: argparse.Namespace) -> Iterator[None]:
    """With --release-via DB: the concentrator serving DB lets go of the port for the duration."""
    if not getattr(args, "release_via", None):
        yield
        return
    with released(args.release_via, args.port) as ok:
        print(f"the concentrator of {args.release_via} " + ("released " if ok else "does not hold ") + args.port,
              file=sys.stderr)
        yield


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        b = B.build_bundle(args.arch, args.out)
    except B.BuildError as e:
        return fail("device build", e)
    print(f"bundle {b.id} ({b.arch}, {len(b.slot_files())} files) in {b.dir}; freeze manifest: "
          f"{b.dir / 'freeze' / 'manifest.py'}")
    return 0


def _cmd_flash(args: argparse.Namespace) -> int:
    try:
        cmds = F.flash(args.port, args.firmware, chip=args.chip, baud=args.baud, run=not args.dry_run)
    except DeviceError as e:
        return fail("device flash", e)
    for c in cmds:
        print("esptool " + " ".join(c))
    if not args.dry_run:
        print("MicroPython is on the board; next: meterkit device deploy --port " + args.port)
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.board)
        bundle = B.load_bundle(args.bundle or repo_root() / "build" / "bundle-xtensawin")
        with _port_lent(args):
            r = deploy(args.port, bundle, profile, progress=lambda m: print(m, file=sys.stderr))
    except (DeviceError, B.BuildError, HandoverError) as e:
        return fail("device deploy", e)
    extra = " (meter frozen in the firmware image: profile and config only)" if r.frozen else ""
    print(f"firmware {r.bundle} in slot {r.slot}: {len(r.sent)} files sent, {len(r.copied)} copied on the board, "
          f"{len(r.kept)} unchanged, {len(r.removed)} removed{extra}")
    ok = f"meterkit: firmware {r.bundle}" in r.booted
    print("the board restarted and runs it" if ok else "the board restarted (no boot line seen yet)")
    return 0


def _link(args: argparse.Namespace) -> dict | None:
    if args.serial:
        return PV.serial_link(args.baud)
    if args.wifi:
        if not args.connect:
            raise DeviceError("--wifi needs --connect HOST:PORT (the concentrator's address)")
        return PV.wifi_link(args.wifi, args.password or "", *args.connect)
    if args.tcp:
        return {"kind": "tcp", "host": args.tcp[0], "port": args.tcp[1]}
    return None


def _cmd_provision(args: argparse.Namespace) -> int:
    try:  # every key and file checked before the database or the board is touched
        headend = public_bytes(load_public(args.headend_key))
        firmware = public_bytes(load_public(args.firmware_pub)) if args.firmware_pub else None
        if args.tls_ca:
            tls = load_tls(args.tls_ca, args.tls_server_name, args.tls_cert, args.tls_key)
        elif args.tls_server_name or args.tls_cert or args.tls_key:
            raise DeviceError("--tls-server-name, --tls-cert and --tls-key come with --tls-ca (the CA to pin)")
        else:
            tls = None
    except (KeyFileError, DeviceError) as e:
        return fail("device provision", e)
    store = open_store(args.db, "device provision", readonly=False, create=True)
    if store is None:
        return 2
    def register(dev: bytes, pub: bytes) -> None:
        store.register_meter(dev, pub, args.name, args.period)
        store.set_meter_key(dev, key_id(headend), time.time())  # the head-end key it holds (key rotation)
        store.commit()

    with store:
        try:
            link = _link(args)
            with _port_lent(args):
                p = PV.provision(args.port, headend, link, register=register, firmware_pub=firmware, tls=tls)
        except (DeviceError, HandoverError, ValueError) as e:
            return fail("device provision", e)
    if args.pubkey_out:
        write_public_pem(p.public_key, Path(args.pubkey_out))
    extra = (", firmware key installed" if p.firmware_key else "") + (
        f", TLS ({len(p.tls_files)} file(s) in {PV.TLS_DIR}/)" if p.tls_files else "")
    print(f"meter {p.device_id.hex()} ({p.board}): key {'made now' if p.created else 'kept'} on the board, head-end "
          f"key installed{extra}, link {p.link['kind'] if p.link else 'unchanged'}, registered in {args.db}")
    return 0


def _ask(i: int) -> dict:
    what = "a small load (or none)" if i == 0 else "a large load (near your maximum)"
    text = input(f"point {i + 1}: set {what}; the reference meter reads (mA): ")
    try:
        return {"reference_ma": float(text)}
    except ValueError:
        raise DeviceError(f"wrong reference value {text!r}: a number of mA; nothing was changed") from None


def _cmd_calibrate(args: argparse.Namespace) -> int:
    try:
        points = C.load_points(args.points) if args.points else None
        if points is not None and len(points) != 2:
            raise DeviceError(f"{args.points}: calibration takes exactly two points, not {len(points)}")
        with _port_lent(args):
            f = C.calibrate(args.port, (lambda i, s: points[i]) if points else (lambda i, s: _ask(i)), args.cycles)
    except (DeviceError, HandoverError) as e:
        return fail("device calibrate", e)
    print(f"calibration {f.id} stored: gain {f.gain_ppm / 1e6:.6f}, offset {f.offset_ua / 1000:+.3f} mA; every "
          "reading now carries its id")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `device` and its commands to a `meterkit` subparsers object."""
    dev = subparsers.add_parser("device", help="a real board: build, flash, deploy, provision, calibrate")
    sub = dev.add_subparsers(dest="device_command", required=True)

    b = sub.add_parser("build", help="the firmware bundle (mpy-cross, manifest of hashes) and the freeze manifest")
    b.add_argument("--arch", default="xtensawin", help=f"{', '.join(B.ARCHS)} (default xtensawin: ESP32, S3)")
    b.add_argument("--out", help="output directory (default build/bundle-ARCH)")
    b.set_defaults(func=_cmd_build)

    f = sub.add_parser("flash", help="MicroPython onto the board through esptool")
    f.add_argument("--port", required=True)
    f.add_argument("--firmware", required=True, help="a MicroPython .bin for the board (micropython.org/download)")
    f.add_argument("--chip", choices=F.CHIPS, help="skip detection (the image must still match)")
    f.add_argument("--baud", type=int, default=F.BAUD)
    f.add_argument("--dry-run", action="store_true", help="print the esptool commands, write nothing")
    f.set_defaults(func=_cmd_flash)

    d = sub.add_parser("deploy", help="bundle, profile and config onto the board, switched atomically")
    d.add_argument("--port", required=True)
    d.add_argument("--board", required=True, help="board profile (boards/*.json)")
    d.add_argument("--bundle", default=None, help="bundle directory (default build/bundle-xtensawin)")
    _release(d)
    d.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("provision", help="device key made on the board, head-end key and link installed, registered")
    p.add_argument("--port", required=True)
    p.add_argument("--db", required=True, help="the head-end database the meter is registered in")
    p.add_argument("--headend-key", required=True, help="the head-end's public key (PEM)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--serial", action="store_true", help="report on the USB serial port itself (UART0)")
    g.add_argument("--wifi", metavar="SSID", help="report over Wi-Fi (with --password and --connect)")
    g.add_argument("--tcp", type=host_port, metavar="HOST:PORT", help="report over TCP (a board already online)")
    p.add_argument("--password", help="Wi-Fi password")
    p.add_argument("--connect", type=host_port, metavar="HOST:PORT", help="the concentrator, for --wifi")
    p.add_argument("--baud", type=int, default=115200, help="with --serial")
    p.add_argument("--name", help="a name for people")
    p.add_argument("--period", type=int, default=60, help="its reporting period, s (default 60)")
    p.add_argument("--pubkey-out", help="also write the meter's public key (PEM) here")
    p.add_argument("--firmware-pub", metavar="PEM", help="the firmware-signing public key (meterkit keys new --name "
                                                          "firmware): the board takes updates signed by it")
    t = p.add_argument_group("TLS on the TCP link (meterkit keys tls makes the files; docs/security.md)")
    t.add_argument("--tls-ca", metavar="FILE", help="the head-end's CA to pin (ca.der)")
    t.add_argument("--tls-server-name", metavar="NAME", help="the name in the head-end's certificate")
    t.add_argument("--tls-cert", metavar="FILE", help="mutual TLS: the meter's certificate (meters/NAME.der)")
    t.add_argument("--tls-key", metavar="FILE", help="mutual TLS: its key (meters/NAME.key.der), made on this host")
    _release(p)
    p.set_defaults(func=_cmd_provision)

    c = sub.add_parser("calibrate", help="two-point gain and offset against a reference meter")
    c.add_argument("--port", required=True)
    c.add_argument("--points", help='JSON file {"points": [{"reference_ma": ..}, {"reference_ma": ..}]} '
                                    "(default: asks at each point)")
    c.add_argument("--cycles", type=int, default=C.CYCLES, help="conversion cycles averaged per point")
    _release(c)
    c.set_defaults(func=_cmd_calibrate)


def _release(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release-via", metavar="FLEET.db",
                   help="ask the concentrator serving this database to let go of the port meanwhile")
