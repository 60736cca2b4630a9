"""Power loss against the checkpoint store (firmware/meter/store.py).

1. Real processes: a child under the MicroPython Unix port saves checkpoints in a loop and prints each
   value once save() has returned; the parent SIGKILLs it at random instants (half the runs with a slow,
   byte-by-byte flash so most kills land inside a slot write), loads the store with CPython after every kill
   and restarts the child from it. The loaded value may never be below the last value printed as saved, and
   the registers must be exactly those of that value.
2. Hypothesis (CPython): a torn write at every byte offset of the new slot, under several models of what the
   rest of the file holds (nothing, the old bytes, erased 0xFF, noise): load() returns the previous or the
   new checkpoint, never anything else, and the store keeps working.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter.registers import Registers
from meter.store import OVERHEAD, SEQ_MASK, Store, crc32, pack, unpack
from meterkit.device.toolchain import micropython_cmd, mp_env

STEP_IMPORT_UWH = 1_234_567
STEP_EXPORT_UWH = 89_012
TARIFFS = 2
KILLS = 120
SLOW_US = 150  # per byte written, in the slow-flash runs

CHILD = """\
import os
import sys
import time
from meter.registers import Registers
from meter.store import Store


class SlowFile:
    def __init__(self, f, us):
        self.f = f
        self.us = us

    def write(self, data):
        for i in range(len(data)):
            self.f.write(data[i:i + 1])
            time.sleep_us(self.us)
        return len(data)

    def read(self, n):
        return self.f.read(n)

    def close(self):
        self.f.close()


class SlowFS:
    def __init__(self, us):
        self.us = us

    def open(self, path, mode):
        f = open(path, mode)
        return SlowFile(f, self.us) if "w" in mode else f

    def stat(self, path):
        return os.stat(path)

    def mkdir(self, path):
        return os.mkdir(path)


root = sys.argv[1]
slow_us = int(sys.argv[2])
steps = int(sys.argv[3])
step_import = int(sys.argv[4])
step_export = int(sys.argv[5])
tariffs = int(sys.argv[6])
store = Store(root, fs=SlowFS(slow_us) if slow_us else os)
got = store.load()
regs = Registers.from_bytes(got[1]) if got else Registers(tariffs)
v = regs.total_uwh("import") // step_import
sys.stdout.write("start %d %d\\n" % (v, store.corrupt))
n = 0
while steps == 0 or n < steps:
    v += 1
    regs.add(step_import, step_export, 1 + v % tariffs)
    store.save(regs.to_bytes())
    sys.stdout.write("saved %d\\n" % v)  # one write(2): a kill cannot leave half a number behind
    n += 1
"""


class Expected:
    """The registers after v steps, advanced incrementally (v never decreases)."""

    def __init__(self):
        self.v = 0
        self.regs = Registers(TARIFFS)

    def at(self, v: int) -> Registers:
        assert v >= self.v
        while self.v < v:
            self.v += 1
            self.regs.add(STEP_IMPORT_UWH, STEP_EXPORT_UWH, 1 + self.v % TARIFFS)
        return self.regs


def _spawn(script: Path, root: Path, slow_us: int, steps: int) -> subprocess.Popen:
    cmd = micropython_cmd(script, str(root), str(slow_us), str(steps), str(STEP_IMPORT_UWH),
                          str(STEP_EXPORT_UWH), str(TARIFFS))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mp_env(), bufsize=0)


def _read_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf or marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _kill(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    return out, err


def _check_loaded(root: Path, expected: Expected, printed: int, why: str) -> tuple[Registers, int]:
    """Load with CPython: (registers, damaged slots seen). printed = the last value known durably saved."""
    store = Store(str(root))
    got = store.load()
    if got is None:
        assert printed == 0, f"{why}: store empty although value {printed} was saved ({store.faults})"
        return Registers(TARIFFS), store.corrupt
    seq, payload = got
    regs = Registers.from_bytes(payload)  # a loaded checkpoint is never garbage
    v = regs.total_uwh("import") // STEP_IMPORT_UWH
    assert v in (printed, printed + 1), f"{why}: loaded {v}, last printed as saved {printed}"
    assert seq == v, f"{why}: seq {seq} for value {v}"
    assert regs == expected.at(v), f"{why}: registers {regs!r} != expected {expected.at(v)!r}"
    return regs, store.corrupt


def test_sigkill_at_random_instants(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "flash"
    root.mkdir()
    rng = random.Random(20240601)
    expected = Expected()
    value = 0        # what the store held when this run started (the child resumes from it)
    regs = Registers(TARIFFS)
    torn_slow = slow_runs = 0
    t0 = time.monotonic()
    for run in range(KILLS):
        slow = SLOW_US if run % 2 else 0
        proc = _spawn(script, root, slow, 0)
        head = b""
        if run % 6 == 0:
            time.sleep(rng.uniform(0, 0.015))  # any instant, interpreter start-up and load() included
        else:
            head = _read_until(proc, b"start", 10)
            time.sleep(rng.uniform(0.0005, 0.02))
        out, err = _kill(proc)
        text = (head + out).decode()
        why = f"run {run} (slow={slow})"
        assert proc.returncode == -signal.SIGKILL, f"{why}: child ended by itself: {err.decode()[-2000:]}"
        lines = text.split("\n")[:-1]  # the last piece has no newline: the kill cut it short
        printed = value
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "start":
                started = int(rest.split()[0])
                assert started == value, f"{why}: MicroPython loaded {started}, CPython {value}"
            elif kind == "saved":
                assert int(rest) == printed + 1, f"{why}: saved {rest} after {printed}"
                printed = int(rest)
            else:
                raise AssertionError(f"{why}: unexpected output {line!r}")
        loaded, damaged = _check_loaded(root, expected, printed, why)
        assert loaded.never_below(regs), f"{why}: a register went backwards: {loaded!r} < {regs!r}"
        regs, value = loaded, loaded.total_uwh("import") // STEP_IMPORT_UWH
        if slow:
            slow_runs += 1
            torn_slow += damaged > 0
    # a clean run after all that: the child resumes, saves, exits normally
    proc = _spawn(script, root, 0, 3)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"start {value} "), lines
    assert lines[1:] == [f"saved {value + i}" for i in (1, 2, 3)], lines
    final, damaged = _check_loaded(root, expected, value + 3, "final clean run")
    assert final.total_uwh("import") == (value + 3) * STEP_IMPORT_UWH and damaged == 0
    assert time.monotonic() - t0 < 60, "the kill loop took far too long"
    # the slow-flash runs put most kills inside a slot write: torn slots really were met and survived
    assert torn_slow >= slow_runs // 4, f"only {torn_slow} of {slow_runs} slow-flash kills tore a slot"


# -- torn writes at every byte offset (CPython, simulated) ------------------------------------------------

class PowerCut(Exception):
    pass


class CutWriter:
    def __init__(self, path: str, fs: CutFS):
        self.fs = fs
        self.old = Path(path).read_bytes() if os.path.exists(path) else b""
        self.f = open(path, "wb")  # noqa: SIM115 - closed by Store.save

    def write(self, data: bytes) -> int:
        k = self.fs.budget
        if k >= len(data):
            self.f.write(data)
            return len(data)
        self.f.write(data[:k])
        rest = len(data) - k
        if self.fs.tail == "old":  # overwritten in place: the old slot's bytes (erased beyond its end) remain
            self.f.write((self.old + b"\xff" * len(data))[k:len(data)])
        elif self.fs.tail == "erased":
            self.f.write(b"\xff" * rest)
        elif self.fs.tail == "noise":
            self.f.write((self.fs.noise * (rest // len(self.fs.noise) + 1))[:rest])
        raise PowerCut(f"power cut after {k} bytes")

    def close(self) -> None:
        self.f.close()


class CutFS:
    """os-like file system whose power fails after `budget` bytes of a slot write. The rest of the slot holds
    "none" (truncated), "old" (the previous bytes, overwritten in place), "erased" (0xFF) or "noise"."""

    def __init__(self, budget: int, tail: str, noise: bytes = b"\x5a"):
        self.budget = budget
        self.tail = tail
        self.noise = noise or b"\x5a"

    def open(self, path, mode):
        return CutWriter(path, self) if "w" in mode else open(path, mode)  # noqa: SIM115

    def stat(self, path):
        return os.stat(path)

    def mkdir(self, path):
        return os.mkdir(path)


def _snapshot(paths) -> dict[str, bytes | None]:
    return {p: (Path(p).read_bytes() if os.path.exists(p) else None) for p in paths}


def _restore(snap: dict[str, bytes | None]) -> None:
    for p, data in snap.items():
        if data is None:
            if os.path.exists(p):
                os.remove(p)
        else:
            Path(p).write_bytes(data)


@settings(max_examples=60, deadline=None)
@given(history=st.lists(st.binary(max_size=40), min_size=1, max_size=3),
       new=st.binary(max_size=60),
       tail=st.sampled_from(["none", "old", "erased", "noise"]),
       noise=st.binary(min_size=1, max_size=16),
       start_seq=st.sampled_from([0, 1000, SEQ_MASK - 1]))
def test_torn_write_at_every_offset(history, new, tail, noise, start_seq):
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        if start_seq:  # start near the 2^32 wrap as well as from an empty store
            Path(store.paths[0]).write_bytes(pack(start_seq, b"seed"))
        for p in history:
            store.save(p)
        old = store.load()
        assert old is not None and old[1] == history[-1]
        new_seq = (old[0] + 1) & SEQ_MASK
        new_blob = pack(new_seq, new)
        before = _snapshot(store.paths)
        for k in range(len(new_blob) + 1):
            _restore(before)
            try:
                seq = Store(d, fs=CutFS(k, tail, noise)).save(new)
                completed = True
                assert seq == new_seq
            except PowerCut:
                completed = False
            after = Store(d)
            got = after.load()
            where = f"cut at {k}/{len(new_blob)} bytes, tail={tail}"
            if completed:
                assert got == (new_seq, new), where
                assert after.corrupt == 0, where
            else:
                assert got in (old, (new_seq, new)), f"{where}: loaded {got!r}"
                if got != old:  # only when the torn slot happens to hold exactly the new bytes
                    assert any(Path(p).read_bytes() == new_blob for p in store.paths), where
            # the store keeps working from whatever survived
            after.save(b"next")
            assert Store(d).load() == (((got[0] + 1) & SEQ_MASK), b"next"), where


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, SEQ_MASK), payload=st.binary(max_size=80),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_damaged_slot_never_loads(seq, payload, edits):
    blob = pack(seq, payload)
    assert crc32(blob[:-4]) == zlib.crc32(blob[:-4])
    assert unpack(blob) == (seq, payload)
    bad = bytearray(blob)
    for pos, val in edits:
        bad[pos % len(bad)] = val
    if bytes(bad) == blob:
        assert unpack(bytes(bad)) == (seq, payload)
    else:
        with pytest.raises(ValueError):
            unpack(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120))
def test_arbitrary_bytes_only_value_error(data):
    try:
        seq, payload = unpack(data)
    except ValueError as e:
        assert str(e)
    else:
        assert pack(seq, payload) == data, "only a canonical slot can load"


def test_slot_size_is_overhead_plus_payload():
    assert len(pack(7, b"abc")) == OVERHEAD + 3
