"""mp32's frozen image (`-X freeze=DIR`, device/port32/frozen.c): the meter's code outside the heap, found by
import as frozen modules, run as the core runs frozen .mpy. The heap figure "beside the code" rests on it
(docs/performance.md, "Heap on a board")."""

from __future__ import annotations

import os
import subprocess

import pytest

from meterkit.device import mp32
from meterkit.device.toolchain import compiled_firmware, firmware_dir

pytestmark = pytest.mark.mp32

METER = sorted(p.stem for p in (firmware_dir() / "meter").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def exe():
    try:
        return mp32.ensure()
    except mp32.Unavailable as e:
        if os.environ.get("METERKIT_MP32") == "require":
            pytest.fail(f"the 32-bit interpreter is required here: {e}")
        pytest.skip(f"the 32-bit suite did not run: {e}")


def _run(exe, code: str, freeze: bool, *extra: str) -> subprocess.CompletedProcess:
    x86 = compiled_firmware("x86")
    cmd = [str(exe), *extra] + (["-X", f"freeze={x86 / 'meter'}"] if freeze else []) + ["-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MICROPYPATH=f".frozen:{x86}"),
                          timeout=120, check=False)


IMPORT_ALL = f"""
import gc
gc.collect(); a = gc.mem_alloc()
for m in {METER!r}:
    __import__("meter." + m)
gc.collect()
import sys
print(gc.mem_alloc() - a, sys.modules["meter.app"].__file__)
"""


def test_every_meter_module_imports_frozen_and_its_code_leaves_the_heap(exe):
    frozen = _run(exe, IMPORT_ALL, True)
    loaded = _run(exe, IMPORT_ALL, False)
    assert frozen.returncode == 0, frozen.stderr
    assert loaded.returncode == 0, loaded.stderr
    frozen_bytes, frozen_file = frozen.stdout.split()
    loaded_bytes, loaded_file = loaded.stdout.split()
    assert frozen_file == "meter/app.py"  # the name mpy-tool gives a frozen module
    assert loaded_file.endswith("meter/app.mpy")
    # globals, functions and classes stay on the heap; bytecode, constants and qstrs do not
    assert int(frozen_bytes) * 3 < int(loaded_bytes), (frozen_bytes, loaded_bytes)


def test_frozen_code_runs_and_survives_collections(exe):
    code = """
import gc
from meter import cbor, crc, p256
d, pub = p256.generate_key()
for i in range(50):
    gc.collect()
    assert cbor.decode(cbor.encode({1: [i, b"x" * i, "t%d" % i]})) == {1: [i, b"x" * i, "t%d" % i]}
gc.collect()
sig = p256.sign(d, b"m" * 32)
setattr(cbor, "a_name_made_at_run_time_%d" % len(sig), 1)  # a new qstr: a fresh pool on the heap
print(p256.verify(pub, b"m" * 32, sig), crc.crc32(b"123456789"))
"""
    r = _run(exe, code, True, "-X", "heapsize=64K")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", str(0xCBF43926)]


def test_a_missing_freeze_directory_is_a_clear_error(exe, tmp_path):
    r = subprocess.run([str(exe), "-X", f"freeze={tmp_path / 'nope'}", "-c", "print(1)"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 1
    assert "cannot open the directory" in r.stderr


def test_a_broken_mpy_is_refused_before_anything_runs(exe, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.mpy").write_bytes(b"M\x06garbage")
    r = subprocess.run([str(exe), "-X", f"freeze={pkg}", "-c", "print(1)"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 1
    assert "-X freeze" in r.stderr and "incompatible .mpy" in r.stderr


@pytest.mark.parametrize("suite", ["test_hot_loop", "test_link", "test_p256"])
def test_firmware_tests_pass_with_the_meter_frozen(exe, suite):
    # the hot loop allocates nothing frozen either (heap_lock); the link and the signatures run from frozen code
    tests = firmware_dir().parent / "tests" / "firmware"
    x86 = compiled_firmware("x86")
    r = subprocess.run([str(exe), "-X", f"freeze={x86 / 'meter'}", str(tests / "mptest.py"), suite],
                       capture_output=True, text=True, cwd=str(tests), timeout=600, check=False,
                       env=dict(os.environ, MICROPYPATH=f".frozen:{tests}:{x86}"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert ", 0 failed" in r.stdout.strip().splitlines()[-1], r.stdout[-3000:]
