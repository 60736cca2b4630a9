"""The demo's firmware update (issue 15), as a utility would roll one out: the demo's firmware-signing key (not the
head-end's) signs image meterkit-0.2, which a rollout delivers through the command queue in two waves: meter-1 as
the canary, then the other five once it has come back. Each meter writes the image beside the running one, boots
it on trial and confirms it only after it has metered and its first reading is acknowledged (docs/firmware-updates.md).

It starts at ROLLOUT_H (00:00 UTC on a 24-hour run: an hour after the billing period closed, two before meter-5's
power cut, which an unfinished delivery would simply resume after), scaled to the run like the demo's other steps,
and may take until the run ends. The summary says what every meter's last hello names.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from meter import events as E
from meterkit.device import toolchain
from meterkit.firmware import image as I
from meterkit.firmware.rollout import Rollout
from meterkit.sim.fleet import Fleet
from meterkit.store.api import Store
from meterkit.wire import keys

BY = "demo operator"
ROLLOUT_H = 12.0  # hours into a 24-hour run
VERSION = "meterkit-0.2"
SEQ = 2
# The image's own code (the Unix port's image: an archive of files unpacked ahead of the ROM, its `fwimage` run
# at boot); a board's would be a MicroPython firmware .bin or an application bundle.
IMAGE_FILES = {"fwimage.py": f"VERSION = {VERSION!r}\n".encode()}


def firmware_key(out: Path):
    """The demo's firmware-signing key pair, kept in out/keys beside the head-end's (made once)."""
    kdir = out / "keys"
    if not (kdir / "firmware.key.pem").exists():
        keys.new_key(kdir, name="firmware")
    return keys.load_private(kdir / "firmware.key.pem")


def board_class() -> str:
    """The class id the fleet's meters report: the sim board's profile name and this Unix port's .mpy arch."""
    code = "from meter.fwupdate import native_arch; print(native_arch())"
    arch = subprocess.run([toolchain.micropython_bin(), "-c", code], env=toolchain.mp_env(), capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()
    return f"unix-sim/{arch}"


def prepare(fleet: Fleet, out: Path) -> I.Update:
    """Before setup: provisioning installs the firmware public key on every meter; the signed update."""
    key = firmware_key(out)
    fleet.firmware_pub = keys.public_bytes(key.public_key())
    return I.sign(key, I.pack_files(IMAGE_FILES), SEQ, board_class(), VERSION)


async def roll_out(fleet: Fleet, update: I.Update) -> Rollout:
    """At ROLLOUT_H (scaled): the rollout, stepped on the concentrator's clock until done, halted or the run ends."""
    while fleet.clock.hours() < ROLLOUT_H * fleet.hours / 24.0:
        await asyncio.sleep(0.02)
    order = ["meter-1"] + [m.spec.name for m in fleet.meters if m.spec.name != "meter-1"]
    devs = {m.spec.name: m.device for m in fleet.meters}
    remaining_s = fleet.start_unix + fleet.hours * 3600 - fleet.clock()
    r = Rollout(fleet.store, update, [devs[n] for n in order], canary=1, timeout_s=remaining_s, by=BY)
    logged = 0
    while True:
        state = r.step(fleet.clock())
        for entry in r.log[logged:]:  # into the demo's timeline
            fleet.log.append(f"{fleet.clock.hours():5.2f} h  firmware {VERSION}: {entry}")
        logged = len(r.log)
        if state != "running" or fleet.clock() >= fleet.clock.end:
            return r
        await asyncio.sleep(0.05)


def rollout_lines(db: Store, fleet: Fleet, r: Rollout) -> list[str]:
    """The rollout's log and state, and what each meter runs as its firmware events and last hello say."""
    names = {m.device: m.spec.name for m in fleet.meters}
    lines = [f"{VERSION} (seq {r.update.seq}, {len(r.update.payload)} bytes in {len(r.update.chunks())} chunk(s), "
             f"signed by the firmware key): {len(r.waves)} waves, "
             + ("still running when the run ended" if r.state == "running" else r.state)
             + (f": {r.reason}" if r.reason else "")]
    firmware = {m.device_id: m.firmware for m in db.meters()}
    for dev in r.devices:
        p = r.meters.get(dev)
        confirmed = [e for e in db.events(dev, codes=(E.FW_CONFIRMED,)) if e.value == VERSION]
        wave = next(i for i, w in enumerate(r.waves, 1) if dev in w)
        lines.append(f"{names[dev]} (wave {wave}): " + (f"confirmed at seq {confirmed[-1].seq}" if confirmed else
                                                       p.state if p else "not started")
                     + f"; its last hello names {firmware.get(dev)}")
    return lines
