# Load profile (99.1.0) and event log (99.98.x) rings (meter/profile.py), inside MicroPython: record formats,
# append/read by time range, wrap-around, rebuild after a reboot, torn and damaged records, event sequence
# numbers across reboots, and the flash cost and power-cut behaviour on a real LittleFS in RAM.
import gc
import os

from meter import profile
from meter.profile import EVENT_SIZE, ROW_SIZE, EventLog, LoadProfile, pack_event, pack_row, unpack_event, unpack_row
from mptest import TempDir, eq, not_mp32, raises, rmtree
from ramflash import Flash, NO_LITTLEFS, VfsLfs2

T0 = 1793491200  # 2026-10-31 00:00 UTC
U48 = (1 << 48) - 1


def row(i):
    # a 15-minute row of a meter drawing about 60 W and exporting a little, status bits cycling
    return (T0 + 900 * (i + 1), 15000 * (i + 1), 7 * i, i % 32)


def _segments(d, name="profile"):
    return sorted(int(n) for n in os.listdir(d + "/" + name))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _flip(data, i):
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


# -- record formats ----------------------------------------------------------------------------------------

def test_row_record():
    r = pack_row(T0, 123456789012, 5, 0x1F)
    eq(len(r), ROW_SIZE, "row size")
    eq(r[0:4], T0.to_bytes(4, "little"), "end at offset 0")
    eq(r[16:18], b"\x1f\x00", "status at 16")
    eq(r[18:20], b"P\x01", "kind and version")
    eq(unpack_row(r), (T0, 123456789012, 5, 0x1F), "round trip")
    top = pack_row(0xFFFFFFFF, U48, U48, 0xFFFF)
    eq(unpack_row(top), (0xFFFFFFFF, U48, U48, 0xFFFF), "every field at its maximum")
    eq(unpack_row(pack_row(0, 0, 0, 0)), (0, 0, 0, 0), "zeros")
    # 83.2 W (26 V x 3.2 A) for 100 years in mWh still fits u48
    century = 83200 * 24 * 36525
    eq(unpack_row(pack_row(T0, century, century, 0))[1], century, "a century at the INA219 maximum")
    for bad in ((-1, 0, 0, 0), (1 << 32, 0, 0, 0), (T0, U48 + 1, 0, 0), (T0, 0, -1, 0), (T0, 0, 0, 1 << 16),
                (T0, "1", 0, 0)):
        raises(ValueError, pack_row, *bad)
    for i in range(ROW_SIZE):
        eq(unpack_row(_flip(r, i)), None, "a flipped bit in byte %d is detected" % i)
    eq(unpack_row(r[:-1]), None, "short")
    eq(unpack_row(b"\x00" * ROW_SIZE), None, "zero-filled")
    eq(unpack_row(b"\xff" * ROW_SIZE), None, "erased")
    eq(unpack_row(b"xx" + r, 2), (T0, 123456789012, 5, 0x1F), "at an offset")


def test_event_record():
    e = pack_event(7, T0, 9, -42)
    eq(len(e), EVENT_SIZE, "event size")
    eq(unpack_event(e), (7, T0, 9, -42), "int")
    for v in (0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 40):
        eq(unpack_event(pack_event(1, 2, 3, v))[3], v, "int %d" % v)
    eq(unpack_event(pack_event(1, 2, 3, 1 << 63))[3], str(1 << 63), "beyond i64: its text")
    eq(unpack_event(pack_event(1, 2, 3, None))[3], 0, "None is 0")
    eq(unpack_event(pack_event(1, 2, 3, True))[3], 1, "a bool is an int")
    eq(unpack_event(pack_event(1, 2, 3, ""))[3], "", "empty text")
    eq(unpack_event(pack_event(1, 2, 3, "bad-signature"))[3], "bad-signature", "text")
    eq(unpack_event(pack_event(1, 2, 3, "x" * 32))[3], "x" * 32, "32 bytes fit")
    eq(unpack_event(pack_event(1, 2, 3, "y" * 33))[3], "y" * 32, "33 are cut to 32")
    eq(unpack_event(pack_event(1, 2, 3, "z" * 5000))[3], "z" * 32, "long text")
    # multi-byte characters are never cut in half
    eq(unpack_event(pack_event(1, 2, 3, "\u00e9" * 20))[3], "\u00e9" * 16, "2-byte chars: 16 of them")
    eq(unpack_event(pack_event(1, 2, 3, "a" + "\u00e9" * 16))[3], "a" + "\u00e9" * 15, "31 bytes, not 32")
    eq(unpack_event(pack_event(1, 2, 3, "ab" + "\u20ac" * 11))[3], "ab" + "\u20ac" * 10, "3-byte chars")
    eq(unpack_event(pack_event(1, 2, 3, "\U0001f600" * 9))[3], "\U0001f600" * 8, "4-byte chars")
    eq(unpack_event(pack_event(1, 2, 3, b"\x01"))[3], str(b"\x01"), "other objects: str()")
    eq(unpack_event(pack_event(1, 2, 3, OSError(5)))[3], str(OSError(5)), "an exception's text")
    for bad in ((-1, 0, 0, 0), (1 << 32, 0, 0, 0), (1, -1, 0, 0), (1, 0, 1 << 16, 0), (1, 0, -3, 0)):
        raises(ValueError, pack_event, *bad)
    t = pack_event(7, T0, 9, "text value")
    for rec in (e, t):
        for i in range(EVENT_SIZE):
            eq(unpack_event(_flip(rec, i)), None, "a flipped bit in byte %d is detected" % i)
    eq(unpack_event(b"\x00" * EVENT_SIZE), None, "zero-filled")
    eq(unpack_event(b"\xff" * EVENT_SIZE), None, "erased")


# -- load profile on the Unix port's file system -----------------------------------------------------------

def test_append_read_ranges():
    with TempDir("lp", make=False) as d:
        lp = LoadProfile(d)
        eq(lp.count, 0, "empty")
        eq(lp.last(), None, "no last row")
        eq(list(lp.read()), [], "nothing to read")
        rows = [row(i) for i in range(400)]  # spans three 170-row segments
        for r in rows:
            lp.append(*r)
        eq(lp.count, 400, "count")
        eq(lp.last(), rows[-1], "last")
        eq(lp.writes, 400, "one write per row")
        eq(lp.bytes_written, 400 * ROW_SIZE, "24 bytes per row")
        eq(len(_segments(d)), 3, "170 rows per 4080-byte segment")
        eq(list(lp.read()), rows, "everything, oldest first")
        ends = [r[0] for r in rows]
        for a, b in ((ends[0], ends[0]), (ends[10], ends[20]), (ends[165], ends[175]), (ends[169], ends[170]),
                     (ends[339], ends[341]), (ends[-1], ends[-1] + 10 ** 6), (0, ends[3]), (ends[5] + 1, ends[7] - 1),
                     (ends[100] - 450, ends[102] + 450)):
            eq(list(lp.read(a, b)), [r for r in rows if a <= r[0] <= b], "range %d..%d" % (a - T0, b - T0))
        eq(list(lp.read(ends[3] + 1, ends[3] + 899)), [], "between two rows")
        eq(list(lp.read(ends[-1] + 1)), [], "after the last")
        eq(list(lp.read(None, ends[0] - 1)), [], "before the first")
        eq(list(lp.read(ends[398])), rows[398:], "open end")
        eq(list(lp.read(None, ends[1])), rows[:2], "open start")
        eq(list(lp.read(ends[50], ends[40])), [], "an empty range")


def test_out_of_order_rejected():
    with TempDir("lp", make=False) as d:
        lp = LoadProfile(d)
        lp.append(T0 + 900, 10, 0, 0)
        lp.append(T0 + 1800, 20, 0, 0)
        e = raises(ValueError, lp.append, T0 + 1800, 30, 0, 0)
        assert "not after" in str(e), str(e)
        raises(ValueError, lp.append, T0 + 900, 30, 0, 0)
        raises(ValueError, lp.append, T0, 30, 0, 0)
        raises(ValueError, lp.append, T0 + 2700, -1, 0, 0)
        raises(ValueError, lp.append, T0 + 2700, 1, 0, 1 << 16)
        eq(lp.writes, 2, "nothing written for a refused row")
        eq(list(lp.read()), [(T0 + 900, 10, 0, 0), (T0 + 1800, 20, 0, 0)], "ring unchanged")
        lp2 = LoadProfile(d)
        raises(ValueError, lp2.append, T0 + 1800, 30, 0, 0)  # also after a reboot: known from flash
        lp2.append(T0 + 1801, 30, 0, 0)
        eq(lp2.count, 3, "a later row is taken")


def test_wrap_keeps_newest_capacity():
    # (capacity, segment bytes): 5 rows a segment (capacity a multiple or not of it), one row a segment,
    # a capacity smaller than a segment, and the default 4096-byte segments
    for cap, seg in ((20, 120), (23, 120), (7, 24), (3, 240), (200, 4096)):
        with TempDir("lp", make=False) as d:
            lp = LoadProfile(d, capacity_rows=cap, segment_bytes=seg)
            per = seg // ROW_SIZE
            rows = []
            for i in range(3 * cap + per + 1):
                rows.append(row(i))
                lp.append(*rows[-1])
                eq(lp.count, min(len(rows), cap), "count %d/%d" % (cap, seg))
                held = sum(s[1] for s in lp.segs)
                assert held < cap + per, "flash holds fewer than capacity + one segment of rows (%d)" % held
            want = rows[-cap:]
            eq(list(lp.read()), want, "the newest %d rows (segment %d)" % (cap, seg))
            eq(list(lp.read(rows[0][0], want[0][0])), want[:1], "older rows are not shown")
            eq(len(_segments(d)), len(lp.segs), "one file per segment")
            eq(lp.deletes, (len(rows) + per - 1) // per - len(lp.segs), "whole oldest segments deleted")
            again = LoadProfile(d, capacity_rows=cap, segment_bytes=seg)
            eq(list(again.read()), want, "after a reboot")
            eq(again.count, cap, "count after a reboot")
            # a smaller capacity after a reboot (board profile changed): trimmed to it
            small = LoadProfile(d, capacity_rows=max(1, cap // 2), segment_bytes=seg)
            eq(list(small.read()), rows[-max(1, cap // 2):], "smaller capacity")


def test_reboot_rebuild():
    with TempDir("lp", make=False) as d:
        lp = LoadProfile(d)
        rows = [row(i) for i in range(180)]
        for r in rows[:175]:
            lp.append(*r)
        lp2 = LoadProfile(d)
        eq(lp2.count, 175, "count rebuilt")
        eq(lp2.last(), rows[174], "newest valid row found")
        eq(lp2.torn, 0, "nothing damaged")
        eq([s[1] for s in lp2.segs], [170, 5], "index rebuilt")
        for r in rows[175:]:
            lp2.append(*r)
        eq(_segments(d), [1, 2], "appends go on in the same segment after a reboot")
        eq(list(LoadProfile(d).read()), rows, "all rows")
        # a file that is not a segment, and an empty segment file, are ignored / removed
        _write(d + "/profile/notes.txt", b"x")
        _write(d + "/profile/9", b"")
        lp3 = LoadProfile(d)
        eq(list(lp3.read()), rows, "stray files change nothing")
        eq(sorted(os.listdir(d + "/profile")), ["1", "2", "notes.txt"], "the empty segment is removed")
        more = [row(i) for i in range(180, 341)]  # fill segment 2, then one row more
        for r in more:
            lp3.append(*r)
        eq(sorted(os.listdir(d + "/profile")), ["1", "10", "2", "notes.txt"], "numbering goes on above 9")
        eq(list(LoadProfile(d).read()), rows + more, "all rows")


def test_torn_last_record():
    for how in ("half", "one byte", "all but one", "garbage", "zeros", "erased", "flipped"):
        # torn in the middle of a segment, or as the first row of a new one (5 rows a segment, 10 before it)
        for seg, ngood in ((4096, 12), (120, 12), (120, 10)):
            good = [row(i) for i in range(ngood)]
            nxt = row(ngood)
            after = row(ngood + 1)
            with TempDir("lp", make=False) as d:
                lp = LoadProfile(d, segment_bytes=seg)
                for r in good:
                    lp.append(*r)
                lp.append(*nxt)
                path = d + "/profile/" + str(_segments(d)[-1])
                data = _read(path)
                rec = data[-ROW_SIZE:]
                if how == "half":
                    torn = rec[:12]
                elif how == "one byte":
                    torn = rec[:1]
                elif how == "all but one":
                    torn = rec[:-1]
                elif how == "garbage":
                    torn = os.urandom(ROW_SIZE)
                elif how == "zeros":
                    torn = b"\x00" * ROW_SIZE
                elif how == "erased":
                    torn = b"\xff" * ROW_SIZE
                else:
                    torn = _flip(rec, 5)
                _write(path, data[:-ROW_SIZE] + torn)
                lp2 = LoadProfile(d, segment_bytes=seg)
                what = "%s, segment %d, row %d" % (how, seg, ngood)
                eq(list(lp2.read()), good, "torn row lost, older rows intact (%s)" % what)
                eq(lp2.last(), good[-1], "last is the newest valid row (%s)" % what)
                eq(lp2.count, ngood, "count (%s)" % what)
                eq(lp2.torn, 1, "damage seen (%s)" % what)
                lp2.append(*nxt)  # the meter writes the row again (or the next one)
                lp2.append(*after)
                lp3 = LoadProfile(d, segment_bytes=seg)
                eq(list(lp3.read()), good + [nxt, after], "appending after a torn tail (%s)" % what)
                eq(lp3.corrupt, 0, "the damage is outside every segment's good slots (%s)" % what)


def test_damaged_older_record_never_returned():
    with TempDir("lp", make=False) as d:
        lp = LoadProfile(d, segment_bytes=240)  # 10 rows a segment
        rows = [row(i) for i in range(35)]
        for r in rows:
            lp.append(*r)
        segs = _segments(d)
        # bit rot: a row in the middle of the first segment, the first row of the second, the last of the third
        for no, slot in ((segs[0], 4), (segs[1], 0), (segs[2], 9)):
            p = d + "/profile/" + str(no)
            _write(p, _flip(_read(p), slot * ROW_SIZE + 7))
        lp2 = LoadProfile(d, segment_bytes=240)
        got = list(lp2.read())
        eq(got, [r for i, r in enumerate(rows) if i not in (4, 10, 29)], "every other row, none damaged")
        eq(lp2.corrupt, 2, "two damaged rows skipped by the read")
        eq(lp2.torn, 1, "the third was the end of its segment: seen at boot")
        eq(list(lp2.read(rows[9][0], rows[11][0])), [rows[9], rows[11]], "range across the damage")


def test_read_while_appending():
    with TempDir("lp", make=False) as d:
        lp = LoadProfile(d, capacity_rows=30, segment_bytes=240)
        for i in range(30):
            lp.append(*row(i))
        seen = []
        n = 30
        for r in lp.read():
            seen.append(r)
            if len(seen) % 3 == 0 and n < 90:
                for _ in range(4):  # the ring wraps under the reader: its oldest segments go
                    lp.append(*row(n))
                    n += 1
        for a, b in zip(seen, seen[1:]):
            assert a[0] < b[0], "strictly increasing while the ring moves"
        for r in seen:
            eq(r, row((r[0] - T0) // 900 - 1), "every row read is a stored row")
        eq(seen[-1], row(n - 1), "rows appended during the read are read too")
        eq(list(lp.read()), [row(i) for i in range(n - 30, n)], "the ring itself")


# -- event log ---------------------------------------------------------------------------------------------

def test_event_seq_monotonic_across_reboots():
    with TempDir("ev", make=False) as d:
        ev = EventLog(d)
        eq(ev.last_seq, 0, "empty log")
        eq(ev.last(), None, "no last event")
        seqs = []
        for boot in range(6):
            ev = EventLog(d, capacity=40, segment_bytes=480)  # 10 events a segment: wraps during the test
            if seqs:
                eq(ev.last_seq, seqs[-1], "boot %d: derived from the newest record" % boot)
            seqs.append(ev.log(8, boot, T0 + boot))  # power up
            for k in range(boot * 7):
                seqs.append(ev.log(9, "reason %d" % k, T0 + boot * 100 + k))
        eq(seqs, list(range(1, len(seqs) + 1)), "1, 2, 3 ... never repeated")
        got = EventLog(d, capacity=40, segment_bytes=480).read(limit=100)
        eq([e[0] for e in got], seqs[-40:], "the newest 40 after the wrap")
        eq(got[-1], (seqs[-1], T0 + 5 * 100 + 34, 9, "reason 34"), "newest event")


def test_event_read_after_limit():
    with TempDir("ev", make=False) as d:
        ev = EventLog(d, segment_bytes=480)
        want = []
        for i in range(45):
            v = i * 1000 - 7 if i % 2 else "text %d" % i
            eq(ev.log(i % 11, v, T0 + i), i + 1, "seq")
            want.append((i + 1, T0 + i, i % 11, v))
        eq(ev.count, 45, "count")
        eq(ev.last(), want[-1], "last")
        eq(ev.read(), want[:16], "default limit 16, oldest first")
        eq(ev.read(limit=100), want, "all")
        eq(ev.read(after_seq=20, limit=5), want[20:25], "after 20")
        eq(ev.read(after_seq=9, limit=3), want[9:12], "across a segment boundary")
        eq(ev.read(after_seq=45), [], "after the newest")
        eq(ev.read(after_seq=44, limit=10), want[44:], "only the newest")
        eq(ev.read(after_seq=0, limit=0), [], "limit 0")
        eq(ev.read(after_seq=-5, limit=2), want[:2], "below every seq")
        ev2 = EventLog(d, segment_bytes=480)
        eq(ev2.read(after_seq=30, limit=100), want[30:], "after a reboot")


def test_event_wrap_and_torn():
    with TempDir("ev", make=False) as d:
        ev = EventLog(d, capacity=512)
        for i in range(1300):
            ev.log(i % 5, i, T0 + i)
        eq(ev.count, 512, "capacity")
        got = ev.read(after_seq=0, limit=600)
        eq([e[0] for e in got], list(range(789, 1301)), "the newest 512")
        assert len(_segments(d, "events")) <= 512 // 85 + 2, "85 events a segment, one extra at most"
        # the power fails half-way through an event
        path = d + "/events/" + str(_segments(d, "events")[-1])
        data = _read(path)
        _write(path, data[:-EVENT_SIZE // 2])
        ev2 = EventLog(d, capacity=512)
        eq(ev2.last_seq, 1299, "the torn event is lost")
        eq(ev2.read(after_seq=1297), [(1298, T0 + 1297, 1297 % 5, 1297), (1299, T0 + 1298, 1298 % 5, 1298)],
           "the ones before it are intact")
        eq(ev2.next_seq, 1301, "its number is skipped: the gap tells the head-end an event was lost")
        eq(ev2.log(8, 0, T0 + 2000), 1301, "next event")
        ev3 = EventLog(d, capacity=512)
        eq(ev3.last_seq, 1301, "after another reboot")
        eq(ev3.next_seq, 1302, "no gap without damage")
        eq([e[0] for e in ev3.read(after_seq=1297)], [1298, 1299, 1301], "the gap")


def test_event_seq_not_reused_after_damage():
    for per, how in ((85, "rot"), (85, "torn"), (1, "rot"), (1, "torn")):
        with TempDir("ev", make=False) as d:
            ev = EventLog(d, segment_bytes=per * EVENT_SIZE)
            for i in range(10):
                ev.log(1, i, T0 + i)
            path = d + "/events/" + str(_segments(d, "events")[-1])
            data = _read(path)
            # the newest event (already handed out) rots, or a second one is torn after it
            _write(path, _flip(data, len(data) - 3) if how == "rot" else data + pack_event(11, T0, 1, 0)[:30])
            ev2 = EventLog(d, segment_bytes=per * EVENT_SIZE)
            eq(ev2.last_seq, 9 if how == "rot" else 10, "newest good record (%d, %s)" % (per, how))
            # rot: number 10 was handed out and is not used again; torn: 11 never landed, its gap shows the loss
            eq(ev2.log(2, 0, T0 + 99), 11 if how == "rot" else 12, "next number (%d, %s)" % (per, how))
        # a log() whose write fails consumes its number
    with TempDir("ev", make=False) as d:
        ev = EventLog(d)
        ev.log(1, 0, T0)
        raises(ValueError, ev.log, 1 << 16, 0, T0)
        eq(ev.next_seq, 2, "a refused event uses no number")
        rmtree(d + "/events")
        raises(OSError, ev.log, 1, 0, T0)
        eq(ev.next_seq, 3, "a failed write uses its number")


# -- on a real LittleFS (the ESP32's file system), in RAM ------------------------------------------------

def _lfs_days(days, events_per_day):
    gc.collect()
    dev = Flash(128)  # 512 KB
    VfsLfs2.mkfs(dev)
    fs = VfsLfs2(dev)
    lp = LoadProfile("/meter", fs=fs)
    ev = EventLog("/meter", fs=fs)
    n = 0
    every = 96 // events_per_day
    for day in range(days):
        for q in range(96):
            lp.append(*row(n))
            n += 1
            if q % every == 0:
                ev.log(9, "bad-signature", T0 + 900 * n)
    erases = sum(dev.erases)
    writes = lp.writes + ev.writes
    eq(writes, days * 96 + days * events_per_day, "one write per row and per event")
    # LittleFS copies a file's partly written last block into a fresh one on every append after a close:
    # about one erase per record, never much more, spread over the device by its wear levelling
    assert erases <= writes + writes // 16 + 8, "%d erases for %d records" % (erases, writes)
    mean = erases // dev.blocks
    assert max(dev.erases) <= 2 * mean + 10, "wear spread over the blocks: %r" % dev.erases
    lp = ev = None
    fs2 = VfsLfs2(dev)
    gc.collect()
    base = gc.mem_alloc()
    lp2 = LoadProfile("/meter", fs=fs2)
    ev2 = EventLog("/meter", fs=fs2)
    gc.collect()
    ram = gc.mem_alloc() - base
    # the index: a 4-item list per segment (34 for 60 days) and the last record (64-bit port: ~2x the ESP32)
    assert ram < 4096 + 160 * (len(lp2.segs) + len(ev2.segs)), "RAM after a rebuild: %d bytes" % ram
    return n, lp2, ev2, erases, dev


@not_mp32(NO_LITTLEFS)
def test_lfs_day():
    n, lp, ev, erases, dev = _lfs_days(1, 8)
    eq(list(lp.read()), [row(i) for i in range(96)], "a day of rows after a remount")
    eq(ev.last_seq, 8, "events")
    assert erases >= 96, "each append to a file in a block costs a block copy (%d erases)" % erases


@not_mp32(NO_LITTLEFS)
def test_lfs_60_days():
    n, lp, ev, erases, dev = _lfs_days(60, 4)
    eq(n, 5760, "60 days of 15-minute rows")
    eq(lp.count, 5760, "all of them held (capacity 6000)")
    eq(lp.last(), row(5759), "last")
    day59 = list(lp.read(row(96 * 59)[0], row(96 * 60 - 1)[0]))
    eq(day59, [row(i) for i in range(96 * 59, 96 * 60)], "the last day by time range")
    gc.collect()
    base = gc.mem_alloc()
    k = 0
    for r in lp.read():
        if r != row(k):
            raise AssertionError("row %d: %r" % (k, r))
        k += 1
        if k == 3000:
            r = None
            gc.collect()
            held = gc.mem_alloc() - base
            assert held < 4096, "a read holds a chunk, not the 138 KB ring: %d bytes mid-way" % held
    eq(k, 5760, "every row, in order, streamed from flash")
    eq(ev.last_seq, 240, "events")
    eq(len(lp.segs), 34, "5760 rows in 34 segments of 170 (one LittleFS block each)")
    for _ in range(400):  # past capacity: the oldest segments go
        lp.append(*row(k))
        k += 1
    eq(lp.count, 6000, "capacity")
    eq(next(iter(lp.read())), row(k - 6000), "oldest row shown")


def _cut_run(make, step, indices, cap, records):
    """Append records 0, 1, 2 ... on a 16-block LittleFS; each append is cut at every program/erase, with none or
    half of that operation done. The image at the cut is remounted: the ring must hold the records acknowledged
    before (the newest `cap` of them), with or without the one being appended, then take one more record."""
    flash = Flash(16)
    VfsLfs2.mkfs(flash)
    image = flash.data
    acked = []
    cuts = 0
    for i in range(records):
        k = 0
        while True:
            for q in (0, 2):
                dev = Flash(image=image, cut_at=k, quarters=q)
                step(make(VfsLfs2(dev)), i)
                if dev.frozen is None:
                    break
                cut = Flash(image=dev.frozen)
                got = indices(make(VfsLfs2(cut)))
                with_it = got == (acked + [i])[-cap:]
                assert got == acked[-cap:] or with_it, "cut %d+%d/4 during record %d: %r" % (k, q, i, got)
                step(make(VfsLfs2(cut)), i + 1)
                got = indices(make(VfsLfs2(cut)))
                eq(got, (acked + ([i] if with_it else []) + [i + 1])[-cap:], "a record after the cut")
                cuts += 1
            if dev.frozen is None:
                image = dev.data
                break
            k += 1
        acked.append(i)
    assert cuts >= 2 * records, "every append was cut (%d cuts)" % cuts


@not_mp32(NO_LITTLEFS)
def test_lfs_power_cut_every_op_profile():
    def make(fs):
        return LoadProfile("/", capacity_rows=25, fs=fs, segment_bytes=240)  # 10 rows: inline, then a block

    def step(lp, i):
        lp.append(*row(i))

    def indices(lp):
        out = []
        for r in lp.read():
            i = (r[0] - T0) // 900 - 1
            eq(r, row(i), "an intact row")
            out.append(i)
        eq(lp.count, len(out), "count")
        eq(lp.last(), row(out[-1]) if out else None, "last")
        return out

    _cut_run(make, step, indices, 25, 40)


@not_mp32(NO_LITTLEFS)
def test_lfs_power_cut_every_op_events():
    def make(fs):
        return EventLog("/", capacity=12, fs=fs, segment_bytes=240)  # 5 events a segment

    def step(ev, i):
        ev.log(i % 7, "event %d" % i, T0 + i)

    def indices(ev):
        got = ev.read(limit=20)
        out = []
        for seq, t, code, value in got:
            i = t - T0
            eq((code, value), (i % 7, "event %d" % i), "an intact event")
            out.append(i)
        seqs = [e[0] for e in got]
        eq(ev.last_seq, seqs[-1] if seqs else 0, "last_seq")
        for a, b in zip(seqs, seqs[1:]):
            assert a < b, "increasing: %r" % seqs
        for seq, i in zip(seqs, out):
            # acknowledged events keep their numbers; one logged after a cut gets a number above every one
            # handed out before (the last acknowledged event, i - 2, had i - 1)
            assert seq == i + 1 or (i == out[-1] and seq >= i), "event %d has seq %d" % (i, seq)
        return out

    _cut_run(make, step, indices, 12, 24)


def test_module_constants():
    eq(profile.ROW_SIZE * (4096 // profile.ROW_SIZE), 4080, "170 rows fill a block")
    eq(profile.EVENT_SIZE * (4096 // profile.EVENT_SIZE), 4080, "85 events fill a block")
