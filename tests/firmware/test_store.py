# A/B checkpoint store and checkpoint policy (meter/store.py), run inside MicroPython.
# Test names are kept short: the harness passes every selected name in one argv element, and the Unix
# port aborts on an argument of 256 characters or more.
import os
import struct

from mptest import TempDir, eq, not_mp32, raises
from ramflash import Flash, NO_LITTLEFS, VfsLfs2
from meter.registers import UWH_PER_WH, Registers
from meter.store import (
    FORMAT_VERSION, HEADER, HEADER_LEN, MAGIC, OVERHEAD, SEQ_MASK, Checkpointer, Store, crc32, pack,
    seq_newer, unpack,
)


# -- helpers -------------------------------------------------------------------------------------------

def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _payload(i):
    r = Registers(2)
    r.add(i * 3 * UWH_PER_WH + i, i * 7, 1 + i % 2)
    return r.to_bytes()


def _with_crc(body):
    return bytes(body) + struct.pack("<I", crc32(body))


# -- the store ----------------------------------------------------------------------------------------

def test_empty():
    with TempDir("store") as d:
        s = Store(d)
        eq(s.load(), None, "nothing saved yet")
        eq(s.corrupt, 0, "missing slot files are not corruption")
        eq(s.faults, [], "faults")
        eq(s.writes, 0, "load writes nothing")
        eq(os.listdir(d), [], "load creates no file")


def test_round_trip():
    with TempDir("store") as d:
        s = Store(d, name="regs")
        sizes = 0
        for i in range(1, 6):
            p = _payload(i)
            eq(s.save(p), i, "seq returned by save %d" % i)
            sizes += OVERHEAD + len(p)
            eq(Store(d, name="regs").load(), (i, p), "fresh store sees save %d" % i)
        eq(s.writes, 5, "writes counted")
        eq(s.bytes_written, sizes, "bytes counted: header + payload + CRC per write")
        eq(sorted(os.listdir(d)), ["regs.a", "regs.b"], "only the two slot files exist")
        eq(Store(d, name="other").load(), None, "another name is another store")
        eq(s.save(b""), 6, "an empty payload is a payload")
        eq(Store(d, name="regs").load(), (6, b""), "empty payload round trip")


def test_alternate():
    with TempDir("store") as d:
        s = Store(d)
        a, b = s.paths
        s.save(b"one")
        assert _exists(a) and not _exists(b), "first checkpoint goes to slot a"
        seen = []
        for i in range(2, 7):
            before = (_read(a), _read(b) if _exists(b) else None)
            s.save(b"p%d" % i)
            after = (_read(a), _read(b))
            changed = [n for n in (0, 1) if before[n] != after[n]]
            eq(len(changed), 1, "exactly one slot written per save")
            seen.append(changed[0])
            eq(unpack(after[changed[0]])[0], i, "seq in the written slot")
            eq(unpack(after[1 - changed[0]])[0], i - 1, "previous checkpoint untouched")
        eq(seen, [1, 0, 1, 0, 1], "slots alternate")


def _damages(good):
    """(name, damaged bytes) for a valid slot `good`."""
    seq, payload = unpack(good)
    out = [("zero length", b""), ("truncated header", good[:HEADER_LEN - 1]),
           ("truncated crc", good[:-1]), ("trailing byte", good + b"\x00"),
           ("garbage", os.urandom(len(good))), ("erased", b"\xff" * len(good))]
    for n in range(len(good)):
        out.append(("prefix %d" % n, good[:n]))
    for i in range(len(good)):
        for bit in (0, 7):
            flipped = bytearray(good)
            flipped[i] ^= 1 << bit
            out.append(("bit %d of byte %d" % (bit, i), bytes(flipped)))
    # Well-formed except for one field: the CRC is valid, so the field check itself must catch it.
    n = len(payload)
    out.append(("wrong magic", _with_crc(struct.pack(HEADER, b"MKCQ", FORMAT_VERSION, seq, n) + payload)))
    out.append(("wrong version", _with_crc(struct.pack(HEADER, MAGIC, FORMAT_VERSION + 1, seq, n) + payload)))
    out.append(("too long", _with_crc(struct.pack(HEADER, MAGIC, FORMAT_VERSION, seq, n + 1) + payload)))
    return out


def test_fallback():
    with TempDir("store") as d:
        s = Store(d)
        s.save(b"older checkpoint")
        s.save(b"newest checkpoint")
        newest_path = s.paths[1]
        good = _read(newest_path)
        for name, bad in _damages(good):
            _write(newest_path, bad)
            t = Store(d)
            eq(t.load(), (1, b"older checkpoint"), name)
            eq(t.corrupt, 1, name + ": counted")
            eq(len(t.faults), 1, name + ": one fault")
            eq(t.faults[0][0], newest_path, name + ": names the slot")
        reasons = {}
        for name, bad in _damages(good):
            _write(newest_path, bad)
            t = Store(d)
            t.load()
            reasons[name] = t.faults[0][1]
        assert "magic" in reasons["wrong magic"], reasons["wrong magic"]
        assert "version" in reasons["wrong version"], reasons["wrong version"]
        assert "CRC" in reasons["bit 0 of byte 20"], reasons["bit 0 of byte 20"]
        assert "empty" in reasons["zero length"], reasons["zero length"]
        # the next save repairs the damaged slot and keeps the older one until it succeeds
        t = Store(d)
        eq(t.save(b"after repair"), 2, "seq continues from the valid checkpoint")
        eq(Store(d).load(), (2, b"after repair"), "repaired")
        eq(unpack(_read(s.paths[0])), (1, b"older checkpoint"), "older slot untouched by the repair")


def test_both_bad():
    with TempDir("store") as d:
        s = Store(d)
        _write(s.paths[0], b"\x00" * 40)
        _write(s.paths[1], b"MKCP")
        eq(s.load(), None, "nothing valid")
        eq(s.corrupt, 2, "both counted")
        eq(s.load(), None, "still nothing")
        eq(s.corrupt, 4, "counted on every load")
        eq(s.save(b"fresh"), 1, "starts again at seq 1")
        eq(Store(d).load(), (1, b"fresh"), "loads after fresh start")


def test_rollover():
    assert seq_newer(0, SEQ_MASK), "0 follows 2^32 - 1"
    assert not seq_newer(SEQ_MASK, 0), "2^32 - 1 precedes 0"
    assert seq_newer(5, 4) and not seq_newer(4, 5) and not seq_newer(4, 4), "ordinary order"
    with TempDir("store") as d:
        s = Store(d)
        _write(s.paths[0], pack(SEQ_MASK - 1, b"x"))
        _write(s.paths[1], pack(SEQ_MASK, b"last before wrap"))
        eq(s.load(), (SEQ_MASK, b"last before wrap"), "largest seq")
        eq(s.save(b"wrapped"), 0, "wraps to 0")
        eq(Store(d).load(), (0, b"wrapped"), "0 is newer than 2^32 - 1")
        eq(unpack(_read(s.paths[1])), (SEQ_MASK, b"last before wrap"), "previous kept")
        eq(Store(d).save(b"after wrap"), 1, "continues")
        eq(Store(d).load(), (1, b"after wrap"), "1 after 0")


class PowerCut(Exception):
    pass


class CutFile:
    def __init__(self, f, fs):
        self.f = f
        self.fs = fs

    def write(self, data):
        room = self.fs.budget
        if room is not None and len(data) > room:
            self.f.write(data[:room])
            self.fs.budget = 0
            raise PowerCut()
        if room is not None:
            self.fs.budget = room - len(data)
        return self.f.write(data)

    def read(self, n):
        return self.f.read(n)

    def close(self):
        self.f.close()


class CutFS:
    """os-like file system whose power fails after `budget` more bytes have been written."""

    def __init__(self, budget=None):
        self.budget = budget

    def open(self, path, mode):
        return CutFile(open(path, mode), self)

    def stat(self, path):
        return os.stat(path)

    def mkdir(self, path):
        return os.mkdir(path)


def test_torn():
    with TempDir("store") as d:
        s = Store(d)
        s.save(b"old-old")
        s.save(b"old")
        new = b"the new checkpoint"
        slot_len = OVERHEAD + len(new)
        saved = (_read(s.paths[0]), _read(s.paths[1]))
        for cut in range(slot_len):
            _write(s.paths[0], saved[0])
            _write(s.paths[1], saved[1])
            fs = CutFS(cut)
            t = Store(d, fs=fs)
            raises(PowerCut, t.save, new)
            after = Store(d)
            eq(after.load(), (2, b"old"), "power cut after %d of %d bytes" % (cut, slot_len))
            eq(after.corrupt, 1, "torn slot counted at %d" % cut)
            # a cut inside save() leaves the store usable: the retry goes to the same slot
            fs.budget = None
            eq(t.save(new), 3, "retry after cut at %d" % cut)
            eq(Store(d).load(), (3, new), "retry lands at %d" % cut)


def test_limits():
    with TempDir("store") as d:
        s = Store(d, max_payload=64)
        e = raises(ValueError, s.save, b"x" * 65)
        assert "65" in str(e), str(e)
        eq(s.writes, 0, "refused payload writes nothing")
        s.save(b"x" * 64)
        s.save(b"ok")
        # a valid-CRC slot claiming a payload beyond the limit, and a stray big file: rejected, bounded read
        big = b"y" * 65
        _write(s.paths[1], pack(3, big))
        t = Store(d, max_payload=64)
        eq(t.load(), (1, b"x" * 64), "oversized slot skipped")
        assert "limit" in t.faults[0][1], t.faults[0][1]
        _write(s.paths[1], b"z" * 50000)
        t = Store(d, max_payload=64)
        eq(t.load(), (1, b"x" * 64), "big stray file skipped")
        eq(t.corrupt, 1, "counted")


def test_mkdir():
    with TempDir("store") as d:
        sub = d + "/flash"
        s = Store(sub + "/")
        eq(s.load(), None, "missing directory loads as empty")
        eq(s.save(b"p"), 1, "save creates the directory")
        eq(Store(sub).load(), (1, b"p"), "found with or without trailing slash")


def test_crc():
    # binascii.crc32 must be the zlib CRC-32 (the host verifies slots with CPython's zlib)
    eq(crc32(b"123456789"), 0xCBF43926, "CRC-32 check value")
    eq(crc32(b""), 0, "empty")


# -- checkpoint policy ----------------------------------------------------------------------------------

class CountingStore:
    def __init__(self):
        self.saved = []

    def save(self, payload):
        self.saved.append(payload)
        return len(self.saved)


def test_quantum():
    st = CountingStore()
    c = Checkpointer(st, quantum_uwh=10 * UWH_PER_WH, max_interval_s=900)
    assert c.due(0, 0), "never checkpointed: due"
    c.mark(0, 0)
    assert not c.due(0, 1), "nothing metered"
    assert not c.due(c.quantum_uwh - 1, 1), "just below 10 Wh"
    assert c.due(c.quantum_uwh, 1), "10 Wh"
    assert c.maybe_save(c.quantum_uwh + 5, 2, lambda: b"A"), "saved"
    eq(st.saved, [b"A"], "payload built and saved")
    assert not c.maybe_save(c.quantum_uwh + 6, 3, lambda: b"B"), "not due right after"
    eq(len(st.saved), 1, "nothing more")
    assert c.due(c.quantum_uwh + 4, 4), "registers went backwards (restored/reset): persist"


def test_interval():
    st = CountingStore()
    c = Checkpointer(st, quantum_uwh=10 * UWH_PER_WH, max_interval_s=900)
    c.mark(1000, 100)
    assert not c.due(1001, 100 + 899), "1 µWh, 899 s"
    assert c.due(1001, 100 + 900), "1 µWh, 900 s"
    assert not c.due(1000, 100 + 10 * 3600), "unchanged after 10 h: no write"
    assert c.due(1001, 99), "clock stepped back: cannot prove the interval, persist"
    assert not c.flush(1000, 200, lambda: b"F"), "flush of unchanged registers writes nothing"
    assert c.flush(1002, 200, lambda: b"F"), "flush of changed registers"
    eq(st.saved, [b"F"], "flushed")
    eq((c.last_uwh, c.last_s), (1002, 200), "marked")


def _day(watts, c, step_s):
    """Meter `watts` for one day in steps of step_s seconds; returns the number of checkpoints."""
    st = CountingStore()
    c.store = st
    c.mark(0, 0)
    uwh = 0
    per_step = watts * step_s * UWH_PER_WH // 3600
    assert per_step * 3600 == watts * step_s * UWH_PER_WH, "exact step"
    for now in range(step_s, 86400 + 1, step_s):
        uwh += per_step
        c.maybe_save(uwh, now, lambda: b"r")
    return len(st.saved)


def test_day():
    # The write counts quoted in the docs: max(day / interval, energy / quantum) while anything is metered.
    c = Checkpointer(None)
    quantum_wh = c.quantum_uwh // UWH_PER_WH
    for watts in (0, 5, 39, 100, 1000):
        got = _day(watts, c, 36)
        if watts == 0:
            want = 0
        else:
            by_energy = watts * 24 // quantum_wh
            by_time = 86400 // c.max_interval_s
            want = max(by_energy, by_time)
        eq(got, want, "checkpoints per day at %d W" % watts)


# -- on a real LittleFS (the ESP32's file system), in RAM ---------------------------------------------

@not_mp32(NO_LITTLEFS)
def test_lfs():
    flash = Flash(32)
    VfsLfs2.mkfs(flash)
    fs = VfsLfs2(flash)
    s = Store("/meter", fs=fs)
    r = Registers(2)
    for i in range(300):
        r.add(UWH_PER_WH + i, i, 1 + i % 2)
        s.save(r.to_bytes())
    got = Store("/meter", fs=VfsLfs2(flash)).load()
    eq(got[0], 300, "seq after remount")
    assert Registers.from_bytes(got[1]) == r, "registers after remount"
    # the docs' conservative model charges one block erase per checkpoint; LittleFS does better
    erased = sum(flash.erases)
    assert erased <= s.writes, "%d erases for %d checkpoints" % (erased, s.writes)


@not_mp32(NO_LITTLEFS)
def test_lfs_cut():
    # Power fails at every program/erase of every save, 0, 1/4, 1/2 or 3/4 through it; the remounted image
    # must hold the previous checkpoint or the new one. 200 saves cross several metadata compactions.
    flash = Flash(16)
    VfsLfs2.mkfs(flash)
    image = flash.data
    prev = None
    cuts = 0
    for i in range(200):
        new = _payload(i)
        k = 0
        while True:
            for q in (0, 1, 2, 3):
                dev = Flash(image=image, cut_at=k, quarters=q)
                Store("/", fs=VfsLfs2(dev)).save(new)
                if dev.frozen is None:
                    break
                got = Store("/", fs=VfsLfs2(Flash(image=dev.frozen))).load()
                assert got == prev or got == (i + 1, new), "save %d cut at op %d+%d/4: %r" % (i, k, q, got)
                cuts += 1
            if dev.frozen is None:
                image = dev.data
                break
            k += 1
        prev = (i + 1, new)
    assert cuts >= 4 * 200, "every save was cut at least once (%d cuts)" % cuts
