"""Property tests for the load-profile and event-log rings (firmware/meter/profile.py) under CPython.

The rings run on an in-memory file system that can lose power at any byte of a write or at a file deletion.
What a cut leaves behind is drawn too: the bytes written so far (a short tail), or a full-length record whose
unwritten part is noise, zeros or erased flash (a file system that extends the file before writing the data).
Hypothesis drives random sequences of appends, reboots, power cuts (followed by a reboot), I/O errors part-way
through a write (the meter goes on without a reboot) and bit rot in stored records. After every reboot:

- every acknowledged row (append returned) among the newest `capacity` is read back exactly, in order; the row
  being appended when the power failed is either there or not, and nothing else is;
- no damaged record is ever returned (bit rot may cost rows, never produce a wrong one);
- event sequence numbers returned by log() strictly increase across reboots and power cuts.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter.profile import EVENT_SIZE, ROW_SIZE, EventLog, LoadProfile, pack_event, pack_row, unpack_event, unpack_row

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_793_491_200


class PowerCut(BaseException):
    """The power failed: raised by the file system at the cut and for everything after it until a reboot."""


class MemFile:
    def __init__(self, fs, path, mode):
        self.fs = fs
        self.path = path
        self.mode = mode
        self.pos = 0

    def seek(self, off, whence=0):
        self.fs.alive()
        self.pos = off if whence == 0 else len(self.fs.files[self.path]) + off
        return self.pos

    def readinto(self, buf):
        self.fs.alive()
        data = self.fs.files[self.path][self.pos:self.pos + len(buf)]
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def write(self, data):
        self.fs.alive()
        assert self.mode == "ab", "the rings only append"
        data = bytes(data)
        allowed = self.fs.spend(len(data))
        f = self.fs.files[self.path]
        if allowed == len(data):
            f += data
            return len(data)
        f += data[:allowed]
        how = self.fs.cut_mode
        rest = len(data) - allowed
        if how == "noise":
            f += self.fs.rng.randbytes(rest)
        elif how == "zeros":
            f += b"\x00" * rest
        elif how == "erased":
            f += b"\xff" * rest
        return self.fs.fail()

    def close(self):
        self.fs.alive()


class MemFS:
    """Files in a dict; `budget` units (one per byte written, one per deletion) until the power fails."""

    def __init__(self, seed=0):
        self.files: dict[str, bytearray] = {}
        self.dirs = {""}
        self.budget = None
        self.cut_mode = "truncate"
        self.fatal = True
        self.dead = False
        self.rng = random.Random(seed)

    def alive(self):
        if self.dead:
            raise PowerCut()

    def spend(self, n):
        if self.budget is None:
            return n
        got = min(n, self.budget)
        self.budget -= got
        return got

    def arm(self, units, mode, fatal=True):
        self.budget, self.cut_mode, self.fatal = units, mode, fatal

    def fail(self):
        if self.fatal:
            self.dead = True
            raise PowerCut()
        self.budget = None  # an I/O error: this operation failed, the next ones work
        raise OSError(5, "I/O error")

    def reboot(self):
        self.budget, self.dead = None, False

    def open(self, path, mode):
        self.alive()
        if mode == "rb":
            if path not in self.files:
                raise OSError(2, "no such file")
        elif mode == "ab":
            if path.rsplit("/", 1)[0] not in self.dirs:
                raise OSError(2, "no such directory")
            self.files.setdefault(path, bytearray())
        else:
            raise AssertionError(f"unexpected mode {mode}")
        return MemFile(self, path, mode)

    def remove(self, path):
        self.alive()
        if self.spend(1) == 0:
            return self.fail()
        if path not in self.files:
            raise OSError(2, "no such file")
        del self.files[path]

    def mkdir(self, path):
        self.alive()
        if path in self.dirs:
            raise OSError(17, "exists")
        self.dirs.add(path)

    def listdir(self, path):
        self.alive()
        if path not in self.dirs:
            raise OSError(2, "no such directory")
        prefix = path + "/"
        return [p[len(prefix):] for p in self.files if p.startswith(prefix) and "/" not in p[len(prefix):]]


# -- strategies ----------------------------------------------------------------------------------------------

CUT_MODES = ("truncate", "noise", "zeros", "erased")
step = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 30)),
    st.tuples(st.just("reboot")),
    st.tuples(st.just("cut"), st.integers(0, 60), st.sampled_from(CUT_MODES)),
    st.tuples(st.just("fail"), st.integers(0, 60), st.sampled_from(CUT_MODES)),
)
shape = st.tuples(st.integers(1, 40), st.integers(1, 12))  # capacity, records per segment


class RowSource:
    def __init__(self, rng):
        self.rng = rng
        self.end = T0
        self.imp = self.exp = 0

    def next(self):
        self.end += self.rng.choice((900, 900, 900, 1, 450, 3600 * 7))
        self.imp += self.rng.randrange(0, 200_000)
        self.exp += self.rng.choice((0, 0, self.rng.randrange(0, 1 << 40)))
        return (self.end, self.imp, self.exp, self.rng.randrange(0, 1 << 16))


def check_profile(lp, acked, cap):
    want = acked[-cap:]
    assert list(lp.read()) == want
    assert lp.count == len(want)
    assert lp.last() == (acked[-1] if acked else None)
    if want:
        a, b = want[len(want) // 3][0], want[-1][0] - 1
        assert list(lp.read(a, b)) == [r for r in want if a <= r[0] <= b]


@SETTINGS
@given(shape, st.lists(step, max_size=25), st.integers(0, 2**32))
def test_profile_power_cuts(shape, steps, seed):
    cap, per = shape
    fs = MemFS(seed)
    rows = RowSource(random.Random(seed))

    def boot():
        return LoadProfile("m", capacity_rows=cap, fs=fs, segment_bytes=per * ROW_SIZE)

    lp = boot()
    acked = []
    for s in steps:
        if s[0] == "append":
            for _ in range(s[1]):
                r = rows.next()
                lp.append(*r)
                acked.append(r)
        elif s[0] == "reboot":
            lp = boot()
            check_profile(lp, acked, cap)
        elif s[0] == "fail":
            # an I/O error (not a power cut) part-way through the append: the meter goes on without a reboot
            fs.arm(s[1], s[2], fatal=False)
            r = rows.next()
            try:
                lp.append(*r)
                acked.append(r)
            except OSError:
                # the error may come after the record landed (removing the oldest segment): then it is stored
                if lp.last() == r:
                    acked.append(r)
            fs.reboot()
            check_profile(lp, acked, cap)
        else:
            fs.arm(s[1], s[2])
            r = rows.next()
            try:
                lp.append(*r)
                acked.append(r)  # the cut came too late to touch this append
                cut = False
            except PowerCut:
                cut = True
            fs.reboot()
            lp = boot()
            got = list(lp.read())
            if cut and got == (acked + [r])[-cap:] and got != acked[-cap:]:
                acked.append(r)  # the whole record landed before the power failed
            check_profile(lp, acked, cap)
    lp = boot()
    check_profile(lp, acked, cap)
    r = rows.next()
    lp.append(*r)  # the ring still takes rows
    check_profile(boot(), acked + [r], cap)


@SETTINGS
@given(shape, st.lists(step, max_size=25), st.integers(0, 2**32))
def test_event_seq_never_repeats(shape, steps, seed):
    cap, per = shape
    fs = MemFS(seed)
    rng = random.Random(seed)

    def boot():
        return EventLog("m", capacity=cap, fs=fs, segment_bytes=per * EVENT_SIZE)

    def event():
        value = rng.choice((rng.randrange(-(1 << 63), 1 << 63), "x" * rng.randrange(0, 40), "\u00e9" * 17, None))
        return rng.randrange(0, 1 << 16), value, T0 + rng.randrange(0, 1 << 30)

    def stored(code, value, t):
        # what the log gives back for a value: None is 0, text is cut to 32 UTF-8 bytes at a character boundary
        return unpack_event(pack_event(1, t, code, value))[1:]

    def check(ev):
        got = ev.read(limit=cap + 5)
        assert got == acked[-cap:]
        assert ev.last_seq == (acked[-1][0] if acked else 0)
        assert ev.count == len(got)

    def landed(seq, e):
        # an I/O error may still leave the whole record in flash (an erased last byte that matches the CRC's):
        # the live log does not count it, the next boot reads it back, under the number the failed log() used
        newest = max((f for f in fs.files if f.startswith("m/events/")), key=lambda f: int(f.rsplit("/", 1)[1]),
                     default=None)
        tail = bytes(fs.files[newest][-EVENT_SIZE:]) if newest else b""
        return unpack_event(tail) == (seq,) + stored(*e)

    ev = boot()
    acked = []
    returned = []
    after_boot = []  # records of failed log() calls that landed whole: visible from the next boot on
    for s in steps:
        if s[0] in ("reboot", "cut"):
            acked = sorted(acked + after_boot)
            after_boot = []
        if s[0] == "append":
            for _ in range(s[1]):
                e = event()
                seq = ev.log(*e)
                returned.append(seq)
                acked.append((seq,) + stored(*e))
        elif s[0] == "reboot":
            ev = boot()
            check(ev)
        elif s[0] == "fail":
            fs.arm(s[1], s[2], fatal=False)
            e = event()
            n = ev.next_seq
            try:
                seq = ev.log(*e)
                returned.append(seq)
                acked.append((seq,) + stored(*e))
            except OSError:
                assert ev.next_seq == n + 1, "a failed log() uses its number"
                if landed(n, e):
                    after_boot.append((n,) + stored(*e))
            fs.reboot()
            check(ev)
        else:
            fs.arm(s[1], s[2])
            e = event()
            try:
                seq = ev.log(*e)
                returned.append(seq)
                acked.append((seq,) + stored(*e))
            except PowerCut:
                pass
            fs.reboot()
            ev = boot()
            got = ev.read(limit=cap + 5)
            if got and got[-1][1:] == stored(*e) and (not acked or got[-1][0] > acked[-1][0]):
                acked.append(got[-1])  # landed whole before the cut: its number is taken
            check(ev)
            assert not returned or ev.next_seq > returned[-1]
        assert returned == sorted(set(returned)), "every returned seq is new and larger"
    acked = sorted(acked + after_boot)
    check(boot())
    seq = boot().log(1, 2, 3)
    assert not returned or seq > returned[-1]


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 80), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)),
                                                         min_size=1, max_size=8), st.integers(0, 2**32))
def test_bit_rot_never_returns_a_bad_record(per, n, flips, seed):
    fs = MemFS(seed)
    rows = RowSource(random.Random(seed))
    lp = LoadProfile("m", capacity_rows=1000, fs=fs, segment_bytes=per * ROW_SIZE)
    stored = [rows.next() for _ in range(n)]
    for r in stored:
        lp.append(*r)
    ev = EventLog("m", fs=fs, segment_bytes=per * EVENT_SIZE)
    events = [(ev.log(i % 9, i if i % 2 else f"e{i}", T0 + i),) + (T0 + i, i % 9, i if i % 2 else f"e{i}")
              for i in range(n)]
    paths = sorted(fs.files)
    for where, bit in flips:
        f = fs.files[paths[where % len(paths)]]
        f[where % len(f)] ^= 1 << bit
    lp2 = LoadProfile("m", capacity_rows=1000, fs=fs, segment_bytes=per * ROW_SIZE)
    got = list(lp2.read())
    assert set(got) <= set(stored), "only rows that were stored"
    assert [r[0] for r in got] == sorted({r[0] for r in got}), "strictly increasing"
    assert len(got) >= n - len(flips), "a flip costs at most one row"
    assert lp2.last() == (got[-1] if got else None)
    ev2 = EventLog("m", fs=fs, segment_bytes=per * EVENT_SIZE)
    got_ev = ev2.read(limit=2000)
    assert set(got_ev) <= set(events), "only events that were logged"
    assert len(got_ev) >= n - len(flips)
    # both keep working: a later row and event are stored and read back
    last = (stored[-1][0] + 900, stored[-1][1] + 1, stored[-1][2], 0)
    lp2.append(*last)
    assert list(LoadProfile("m", capacity_rows=1000, fs=fs, segment_bytes=per * ROW_SIZE).read())[-1] == last
    seq = ev2.log(5, "after", T0)
    assert seq > max((e[0] for e in got_ev), default=0)
    assert len(flips) > 1 or seq > n, "one damaged record never makes a handed-out number come back"
    assert EventLog("m", fs=fs, segment_bytes=per * EVENT_SIZE).read(after_seq=seq - 1) == [(seq, T0, 5, "after")]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**48 - 1), st.integers(0, 2**48 - 1), st.integers(0, 2**16 - 1))
def test_row_round_trip(end, imp, exp, status):
    rec = pack_row(end, imp, exp, status)
    assert len(rec) == ROW_SIZE
    assert unpack_row(rec) == (end, imp, exp, status)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=60)))
def test_event_value_round_trip(value):
    got = unpack_event(pack_event(1, T0, 4, value))[3]
    if isinstance(value, int):
        assert got == value
    else:
        b = value.encode()
        assert got.encode() == b[:len(got.encode())], "a prefix of the text"
        assert len(got.encode()) <= 32
        assert len(got.encode()) == len(b) or len(b) > 32 and len(got.encode()) > 28, "cut only where needed"


def test_cpython_os_file_system(tmp_path):
    # the rings double as host-side oracles on the real file system
    lp = LoadProfile(str(tmp_path), capacity_rows=300)
    rows = [(T0 + 900 * i, 1000 * i, 0, 0) for i in range(1, 401)]
    for r in rows:
        lp.append(*r)
    again = LoadProfile(str(tmp_path), capacity_rows=300)
    assert list(again.read()) == rows[-300:]
    assert list(again.read(rows[200][0], rows[202][0])) == rows[200:203]
    ev = EventLog(str(tmp_path))
    assert [ev.log(i, f"v{i}", T0) for i in range(3)] == [1, 2, 3]
    assert EventLog(str(tmp_path)).read(after_seq=1) == [(2, T0, 1, "v1"), (3, T0, 2, "v2")]
    with pytest.raises(ValueError, match="not after"):
        again.append(rows[-1][0], 0, 0, 0)
