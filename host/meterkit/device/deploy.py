"""`meterkit device deploy`: a firmware bundle and a board profile onto a board, switched atomically.

The flash holds two slots, /app.a and /app.b; /app.slot names the one firmware/main.py runs. A deploy:

1. checks the bundle (its files against its manifest) and the profile (meter.board, on this host) and that
   both fit the board: .mpy version and native architecture, the profile's mcu against the board's platform;
2. fills the other slot: a file whose hash is already there stays, one the running slot holds is copied on
   the board, only the rest crosses the cable; files of an older bundle go; the slot's MANIFEST.json last;
3. hashes every file of the slot on the board and compares: any difference stops the deploy here;
4. replaces /main.py if it changed (a new file renamed over it), then switches: /app.slot.new renamed over
   /app.slot. LittleFS renames are atomic, so at every instant the board boots one complete slot;
5. restarts the board (soft reset into main.py) and reads its boot line.

On a board with the meter frozen into its firmware image, the slot holds the profile and the config only.
The profile's tariff calendar, when it names a file on this host, travels into the slot as calendar.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meterkit.device.build import ARCH_CODES, MANIFEST, Bundle
from meterkit.device.session import DeviceError, Session

SLOTS = ("a", "b")
POINTER = "/app.slot"
PLATFORMS = {"esp32": "esp32", "unix-sim": "linux"}  # profile mcu -> the sys.platform of a board that runs it

_COPY_ON_BOARD = """\
with open(%r, 'rb') as s, open(%r, 'wb') as d:
    b = bytearray(1024)
    while True:
        n = s.readinto(b)
        if not n:
            break
        d.write(b[:n])
"""

_PREPARE = """\
import os
def _mk(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
for _p in %r:
    _mk(_p)
for _p in %r:
    os.remove(_p)
"""


@dataclass
class DeployReport:
    slot: str
    bundle: str
    sent: list[str] = field(default_factory=list)  # crossed the cable
    copied: list[str] = field(default_factory=list)  # copied on the board from the running slot
    kept: list[str] = field(default_factory=list)  # already in the slot
    removed: list[str] = field(default_factory=list)
    frozen: bool = False
    booted: str = ""  # what the board printed after the restart


def load_profile(path: str | Path) -> dict:
    """The board profile, checked by the firmware's own meter.board (DeviceError says what is wrong)."""
    from meter.board import BoardError, load_board

    try:
        return load_board(str(path))
    except BoardError as e:
        raise DeviceError(f"wrong board profile: {e}") from None


def slot_contents(bundle: Bundle, profile: dict, slot: str, frozen: bool) -> dict[str, bytes]:
    """What the slot must hold: path in the slot -> bytes (MANIFEST.json not included)."""
    files = {} if frozen else {rel: bundle.data(f"slot/{rel}") for rel in bundle.slot_files()}
    profile = json.loads(json.dumps(profile))
    cal = (profile.get("tariff") or {}).get("calendar")
    if isinstance(cal, str):
        try:
            files["calendar.json"] = Path(cal).read_bytes()
        except OSError as e:
            raise DeviceError(f"the profile's tariff calendar {cal} cannot be read: {e}") from None
        profile["tariff"]["calendar"] = f"/app.{slot}/calendar.json"
    files["board.json"] = (json.dumps(profile, indent=1, sort_keys=True) + "\n").encode()
    return files


def board_chip(machine: str) -> str | None:
    """The chip named by an ESP32 port's sys.implementation._machine ('Generic ESP32S3 module with ESP32S3'
    -> 'esp32s3'), or None."""
    _, sep, chip = machine.rpartition(" with ")
    chip = chip.strip().lower().replace("-", "")
    return chip if sep and chip.startswith("esp32") else None


def check_fit(bundle: Bundle, profile: dict, s: Session) -> None:
    info = s.info
    want = PLATFORMS.get(profile["mcu"])
    if want != info.platform:
        raise DeviceError(f"wrong board profile: {profile['name']!r} is for an {profile['mcu']} board, and the board "
                          f"on {s.port} is a {info.platform} ({info.machine})")
    chip = board_chip(info.machine)
    if chip and profile.get("chip") and profile["chip"] != chip:
        raise DeviceError(f"wrong board profile: {profile['name']!r} is for an {profile['chip'].upper()}, and the "
                          f"board on {s.port} is an {chip.upper()} ({info.machine}): pick its profile in boards/")
    if info.frozen_meter:
        return
    if info.mpy != bundle.mpy:
        raise DeviceError(f"the board's MicroPython loads .mpy v{info.mpy & 0xff}.{info.mpy >> 8}, the bundle is "
                          f"v{bundle.mpy & 0xff}.{bundle.mpy >> 8}: flash a matching MicroPython "
                          "(`meterkit device flash`)")
    if bundle.arch != "none" and ARCH_CODES.get(bundle.arch) != info.arch:
        arch = {v: k for k, v in ARCH_CODES.items()}.get(info.arch, f"arch {info.arch}")
        raise DeviceError(f"the bundle is built for {bundle.arch}, the board runs {arch}: "
                          f"`meterkit device build --arch {arch}`")


def running_slot(s: Session) -> str | None:
    out = s.run(f"try:\n with open({POINTER!r}) as f: print(f.read().strip())\nexcept OSError: print('')").strip()
    return out if out in SLOTS else None


def deploy(port: str, bundle: Bundle, profile: dict, progress: Callable[[str], None] | None = None,
           restart: bool = True) -> DeployReport:
    say = progress or (lambda msg: None)
    with Session.open(port) as s:
        check_fit(bundle, profile, s)
        current = running_slot(s)
        slot = "b" if current == "a" else "a"
        target, here = f"/app.{slot}", f"/app.{current}" if current else None
        files = slot_contents(bundle, profile, slot, s.info.frozen_meter)
        hashes = {rel: _sha(data) for rel, data in files.items()}
        report = DeployReport(slot, bundle.id, frozen=s.info.frozen_meter)
        say(f"board: {s.info.platform} ({s.info.machine}), running slot {current or '-'}; filling slot {slot}")
        _fill(s, target, here, files, hashes, report, say)
        manifest = {"id": bundle.id, "arch": bundle.arch, "files": hashes, "profile": profile["name"]}
        s.write_file(f"{target}/{MANIFEST}", _json(manifest))
        hashes[MANIFEST] = _sha(_json(manifest))
        found = s.hashes(target)
        wrong = sorted(rel for rel, h in hashes.items() if found.get(f"{target}/{rel}") != h)
        if wrong:
            raise DeviceError(f"slot {slot} does not hold what was sent ({', '.join(wrong)}): the board still runs "
                              f"slot {current or '-'}; deploy again")
        _root_files(s, bundle, report, say)
        s.write_file(POINTER + ".new", slot.encode())
        s.run(f"import os\nos.rename({POINTER + '.new'!r}, {POINTER!r})")
        say(f"switched to slot {slot} (firmware {bundle.id})")
        if restart:
            report.booted = s.restart(expect=rf"meterkit: firmware {bundle.id}")
    return report


def _fill(s: Session, target: str, here: str | None, files: dict[str, bytes], hashes: dict[str, str],
          report: DeployReport, say: Callable[[str], None]) -> None:
    have = s.hashes(target, *([here] if here else []))
    in_target = {p[len(target) + 1:]: h for p, h in have.items() if p.startswith(target + "/")}
    in_running = {p[len(here) + 1:]: h for p, h in have.items() if here and p.startswith(here + "/")}
    stale = sorted(rel for rel in in_target if rel not in files and rel != MANIFEST)
    dirs = sorted({f"{target}/{d}" for rel in files for d in _parents(rel)} | {target}, key=len)
    # the slot's manifest goes first: a slot being filled never claims to be complete
    gone = ([MANIFEST] if MANIFEST in in_target else []) + stale
    s.run(_PREPARE % (dirs, [f"{target}/{rel}" for rel in gone]))
    report.removed = stale
    for rel, data in sorted(files.items()):
        h = hashes[rel]
        if in_target.get(rel) == h:
            report.kept.append(rel)
        elif in_running.get(rel) == h:
            s.run(_COPY_ON_BOARD % (f"{here}/{rel}", f"{target}/{rel}"))
            report.copied.append(rel)
        else:
            say(f"sending {rel} ({len(data)} bytes)")
            s.write_file(f"{target}/{rel}", data)
            report.sent.append(rel)


def _root_files(s: Session, bundle: Bundle, report: DeployReport, say: Callable[[str], None]) -> None:
    """main.py (and any other file of the bundle's root): replaced by a rename, only when it changed."""
    names = sorted(bundle.root_files())
    have = s.hashes(*[f"/{n}" for n in names])
    for name in names:
        data = bundle.data(f"root/{name}")
        if have.get(f"/{name}") == _sha(data):
            report.kept.append(f"/{name}")
            continue
        say(f"sending /{name}")
        s.write_file(f"/{name}.new", data)
        s.run(f"import os\nos.rename('/{name}.new', '/{name}')")
        report.sent.append(f"/{name}")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
