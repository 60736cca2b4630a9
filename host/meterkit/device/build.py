"""`meterkit device build`: the firmware bundle that deploy copies onto a board, and the freeze manifest.

    build_bundle("xtensawin") -> Bundle in build/bundle-xtensawin/:
        MANIFEST.json        format, id, arch, the .mpy version, and the SHA-256 of every file below
        slot/meter/*.mpy     the meter package, compiled by mpy-cross (goes into /app.a or /app.b)
        root/main.py         the entry point (goes to the flash's root; source: a board runs only main.py)
        freeze/manifest.py   firmware/manifest.py, with freeze/meter/*.py beside it: a frozen image is built
                             from this directory alone (docs/hardware.md)

arch: an mpy-cross -march value (xtensawin: ESP32 and ESP32-S3; rv32imc: ESP32-C3; x86, x64 ...) or "none":
bytecode without native code, for any port of the same .mpy version; a module with native code (metrology's
viper kernel) then travels as source and is compiled on the board by its own emitter.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from meterkit.device.toolchain import firmware_dir, mpy_cross_bin, repo_root

ARCHS = ("xtensawin", "rv32imc", "x86", "x64", "armv6m", "armv7m", "armv7emsp", "xtensa", "none")
# sys.implementation._mpy >> 10 on a board: the native architecture its .mpy files must have (py/persistentcode.h)
ARCH_CODES = {"x86": 1, "x64": 2, "armv6m": 4, "armv7m": 5, "armv7emsp": 7, "xtensa": 9, "xtensawin": 10,
              "rv32imc": 11}
MANIFEST = "MANIFEST.json"
FORMAT = 1


class BuildError(RuntimeError):
    pass


@dataclass
class Bundle:
    dir: Path
    id: str
    arch: str
    mpy: int  # .mpy version | sub-version << 8, as in sys.implementation._mpy without the arch bits
    files: dict[str, str]  # "slot/meter/app.mpy" or "root/main.py" -> SHA-256 hex

    def slot_files(self) -> dict[str, str]:
        return {p[5:]: h for p, h in self.files.items() if p.startswith("slot/")}

    def root_files(self) -> dict[str, str]:
        return {p[5:]: h for p, h in self.files.items() if p.startswith("root/")}

    def data(self, path: str) -> bytes:
        return (self.dir / path).read_bytes()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_id(files: dict[str, str]) -> str:
    """A short name for exactly these files: the first 12 hex digits of SHA-256 over 'path hash' lines."""
    text = "".join(f"{p} {h}\n" for p, h in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def mpy_cross_version() -> int:
    """The .mpy version mpy-cross emits, as version | sub-version << 8 ('emitting mpy v6.3' -> 0x306)."""
    out = subprocess.run([mpy_cross_bin(), "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise BuildError(f"cannot tell which .mpy version mpy-cross emits from {out.strip()!r}")
    return int(m.group(1)) | int(m.group(2)) << 8


def _compile(src: Path, rel: str, out: Path, arch: str) -> bool:
    """mpy-cross src -> out; False when the module has native code and the arch is 'none' (kept as source)."""
    cmd = [mpy_cross_bin(), "-s", rel, "-o", str(out), str(src)]
    if arch != "none":
        cmd.insert(1, f"-march={arch}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return True
    if arch == "none" and "invalid arch" in proc.stderr:
        return False
    raise BuildError(f"mpy-cross failed on {rel}: {proc.stderr.strip()}")


def build_bundle(arch: str, out: str | Path | None = None) -> Bundle:
    if arch not in ARCHS:
        raise BuildError(f"--arch must be one of {', '.join(ARCHS)}, not {arch!r}")
    fw = firmware_dir()
    out_dir = Path(out) if out is not None else repo_root() / "build" / f"bundle-{arch}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "slot" / "meter").mkdir(parents=True)
    (out_dir / "root").mkdir()
    for src in sorted((fw / "meter").glob("*.py")):
        rel = f"meter/{src.name}"
        mpy = out_dir / "slot" / "meter" / (src.stem + ".mpy")
        if not _compile(src, rel, mpy, arch):
            shutil.copyfile(src, out_dir / "slot" / rel)
    shutil.copyfile(fw / "main.py", out_dir / "root" / "main.py")
    shutil.copytree(fw / "meter", out_dir / "freeze" / "meter", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(fw / "manifest.py", out_dir / "freeze" / "manifest.py")
    return write_manifest(out_dir, arch, mpy_cross_version())


def write_manifest(out_dir: Path, arch: str, mpy: int) -> Bundle:
    """The bundle's MANIFEST.json over what its slot/ and root/ hold now; the Bundle."""
    files = {p.relative_to(out_dir).as_posix(): sha256_file(p)
             for p in sorted(out_dir.rglob("*")) if p.is_file() and p.parts[len(out_dir.parts)] in ("slot", "root")}
    bundle = Bundle(out_dir, bundle_id(files), arch, mpy, files)
    manifest = {"format": FORMAT, "id": bundle.id, "arch": arch, "mpy": bundle.mpy, "files": files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return bundle


def load_bundle(path: str | Path) -> Bundle:
    """A bundle made by build_bundle, its files checked against its manifest (BuildError names what is wrong)."""
    d = Path(path)
    try:
        m = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise BuildError(f"{d} is not a firmware bundle (no {MANIFEST}): run `meterkit device build` first") from None
    except ValueError as e:
        raise BuildError(f"{d / MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("files"), dict):
        raise BuildError(f"{d / MANIFEST}: not a bundle manifest of format {FORMAT}")
    for rel, digest in m["files"].items():
        p = d / rel
        if not p.is_file() or sha256_file(p) != digest:
            raise BuildError(f"{p} is missing or changed since the build: run `meterkit device build` again")
    return Bundle(d, m["id"], m["arch"], m["mpy"], m["files"])
