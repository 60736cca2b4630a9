# The durable outbox (meter/outbox.py), inside MicroPython: put/ack/pending/resend, segments, the bound,
# rebuild after a reboot, a torn tail after a power cut, and its flash cost on a real LittleFS in RAM.
import os

from meter import cbor, cose, frame, p256
from meter.outbox import Outbox, record
from mptest import TempDir, eq, not_mp32, raises
from ramflash import BLOCK, Flash, NO_LITTLEFS, VfsLfs2

DEV = b"\x11\x22\x33\x44\x55\x66\x77\x88"
T0 = 1793491200
_key = []


def _d():
    if not _key:
        _key.append(p256.generate_key()[0])
    return _key[0]


def cose_of(seq, pad=0, kind=2):
    return cose.sign1(_d(), DEV, cbor.encode({1: kind, 2: DEV, 3: seq, 4: T0 + seq, 5: 0, 6: b"r" * pad}))


def fr(seq, pad=40):
    return frame.encode_frame(cose_of(seq, pad))


def rec(seq, payload_seq=None, pad=40):
    """The outbox's record of the frame fr(payload_seq or seq) stored under seq (its bytes on flash)."""
    return record(seq, cose_of(seq if payload_seq is None else payload_seq, pad))


def _segments(d):
    return sorted(int(n) for n in os.listdir(d + "/outbox"))


def _seqs(ob, after=None):
    return [s for s, _ in ob.pending(after)]


def test_a_record_carries_the_seq_beside_the_frame():
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=8192, segment_bytes=1024)
        other = fr(77)  # its payload says 77: the outbox stores and answers by the seq it is given
        ob.put(5, other)
        ob.put(6, fr(6))
        eq(list(Outbox(d, max_bytes=8192, segment_bytes=1024).pending()), [(5, other), (6, fr(6))], "by the seq put")
        with open(d + "/outbox/" + str(_segments(d)[0]), "rb") as f:
            eq(f.read(), rec(5, 77) + rec(6), "records: version 1, seq (u64 LE), COSE, in a frame of their own")
        raises(ValueError, ob.put, 7, b"\x00not a frame\x00")
        eq(_seqs(ob), [5, 6], "a broken frame is refused, nothing stored")
    with TempDir("outbox", make=False) as d:
        Outbox(d, max_bytes=8192, segment_bytes=1024)
        with open(d + "/outbox/1", "wb") as f:
            f.write(fr(3) + fr(4))  # bare frames, as an older firmware stored them: no seq beside them
        ob = Outbox(d, max_bytes=8192, segment_bytes=1024)
        eq((ob.unreadable, _seqs(ob)), (2, []), "skipped and counted")
        ob.put(9, fr(9))
        eq(ob.resend(0, 9)[1], 0, "nothing below the first frame held is vouched for")


def test_put_pending_ack():
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=8192, segment_bytes=1024)
        frames = {}
        for s in range(10, 20):
            frames[s] = fr(s)
            ob.put(s, frames[s])
        eq(ob.writes, 10, "one append per frame")
        eq(ob.bytes_written, sum(len(rec(s)) for s in frames), "bytes written")
        got = list(ob.pending())
        eq([s for s, _ in got], list(range(10, 20)), "oldest first")
        for s, f in got:
            eq(f, frames[s], "exact bytes of frame %d" % s)
        eq(_seqs(ob, 14), list(range(15, 20)), "after_seq")
        ob.ack(13)
        eq(ob.acked, 13, "mark")
        eq(_seqs(ob), list(range(14, 20)), "acked frames are not pending")
        ob.ack(12)
        eq(ob.acked, 13, "an older ack changes nothing")
        ob.ack(19)
        eq(_seqs(ob), [], "all acknowledged")
        eq(_segments(d), [], "fully acknowledged segments are deleted")
        eq(ob.bytes, 0, "nothing held")
        ob.put(20, fr(20))
        eq(_seqs(ob), [20], "new frame after everything was acknowledged")
        ob.ack(1000)
        eq(ob.acked, 20, "an ack above the newest frame is clamped to it")
        raises(ValueError, ob.put, 20, fr(20))
        raises(ValueError, ob.put, 5, fr(5))


def test_segments_rotate_and_are_deleted_whole():
    with TempDir("outbox", make=False) as d:
        f0 = rec(0)
        per = 1024 // len(f0)
        ob = Outbox(d, max_bytes=16384, segment_bytes=1024)
        for s in range(3 * per):
            ob.put(s, fr(s))
        eq(len(_segments(d)), 3, "%d records of %d bytes per 1 KB segment" % (per, len(f0)))
        for seg in ob.segs:
            assert seg[4] <= 1024, "a segment stays within segment_bytes"
        ob.ack(per + 1)  # the first segment and two frames of the second
        eq(len(_segments(d)), 2, "the first segment went")
        eq(_seqs(ob)[0], per + 2, "the second one is partly acknowledged")
        ob.ack(3 * per - 1)
        eq(_segments(d), [], "the current segment is deleted too when all of it is acknowledged")


def test_rebuilt_after_reboot():
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=8192, segment_bytes=1024, persist_every=4)
        frames = {}
        for s in range(100, 130, 3):  # sequence numbers with gaps (skipped at restarts)
            frames[s] = fr(s)
            ob.put(s, frames[s])
        ob.ack(106)
        eq(ob.mark_writes, 1, "the mark moved 4+ numbers with acknowledged frames still in flash")
        ob2 = Outbox(d, max_bytes=8192, segment_bytes=1024, persist_every=4)
        eq(ob2.acked, 106, "mark restored")
        got = list(ob2.pending())
        eq([s for s, _ in got], list(range(109, 130, 3)), "the unacknowledged frames, oldest first")
        for s, f in got:
            eq(f, frames[s], "frame %d intact" % s)
        eq(ob2.last_seq, 127, "newest seq")
        ob2.put(200, fr(200))
        eq(_seqs(ob2)[-1], 200, "appends go on after the reboot")
        # an acknowledgement not yet persisted: after a reboot those frames are sent again (harmless dups)
        ob2.ack(109)
        eq(ob2.mark_writes, 0, "109 - 106 < 4: not written")
        ob3 = Outbox(d, max_bytes=8192, segment_bytes=1024, persist_every=4)
        eq(_seqs(ob3)[0], 109, "frame 109 comes back after a reboot: the mark says 106")
        ob3.ack(109)
        ob3.flush()
        eq(ob3.mark_writes, 1, "flush() writes a mark that moved")
        ob3.flush()
        eq(ob3.mark_writes, 1, "and only then")
        eq(_seqs(Outbox(d, max_bytes=8192, segment_bytes=1024))[0], 112, "flush() persisted 109")


def test_torn_tail_after_power_cut():
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=8192, segment_bytes=4096)
        frames = [fr(s) for s in range(6)]
        recs = [rec(s) for s in range(6)]
        for s in range(6):
            ob.put(s, frames[s])
        path = d + "/outbox/" + str(_segments(d)[-1])
        with open(path, "rb") as f:
            data = f.read()
        cut = len(data) - len(recs[5]) // 2  # the power failed half-way through the last append
        with open(path, "wb") as f:
            f.write(data[:cut])
        ob2 = Outbox(d, max_bytes=8192, segment_bytes=4096)
        got = list(ob2.pending())
        eq([s for s, _ in got], [0, 1, 2, 3, 4], "frames before the torn one survive")
        for s, f in got:
            eq(f, frames[s], "intact %d" % s)
        eq(ob2.torn, 1, "the torn tail is seen")
        eq(ob2.last_seq, 4, "and skipped")
        # the next frame is appended after the torn bytes; its leading delimiter closes them off
        f6 = fr(6)
        ob2.put(6, f6)
        ob3 = Outbox(d, max_bytes=8192, segment_bytes=4096)
        eq(_seqs(ob3), [0, 1, 2, 3, 4, 6], "torn bytes in the middle of a segment are skipped")
        eq(ob3.torn, 1, "now a noise segment")
        eq(list(ob3.pending(5))[0][1], f6, "frame after the torn one intact")
        # noise and a truncated frame at the very start of a segment
        with open(path, "wb") as f:
            f.write(b"\x00\x17garbage" + recs[0][5:] + recs[1] + recs[2][:-1])
        ob4 = Outbox(d, max_bytes=8192, segment_bytes=4096)
        eq(_seqs(ob4), [1], "only the whole frame")


def test_bounded_drops_oldest_segment():
    with TempDir("outbox", make=False) as d:
        drops = []
        ob = Outbox(d, max_bytes=2048, segment_bytes=512, on_drop=lambda a, b, n: drops.append((a, b, n)))
        per = 512 // len(rec(0))
        n = 40
        for s in range(n):
            ob.put(s, fr(s))
            assert ob.bytes <= 2048, "bounded after every put"
        held = _seqs(ob)
        eq(held, list(range(held[0], n)), "the newest frames are kept, contiguous")
        eq(ob.dropped, held[0], "every older frame was counted as dropped")
        eq(ob.drops, held[0] // per, "whole segments")
        eq((ob.first_lost, ob.last_lost), (held[0] - per, held[0] - 1), "range of the latest drop")
        eq(sum(x[2] for x in drops), ob.dropped, "on_drop saw every dropped frame")
        eq(drops[0], (0, per - 1, per), "first drop")
        eq(ob.floor, held[0] - 1, "floor")
        # back-fill of a range that was partly dropped
        it, missing = ob.resend(held[0] - 5, held[0] + 2)
        eq(missing, held[0] - 5, "first missing")
        eq([s for s, _ in it], [held[0], held[0] + 1, held[0] + 2], "what is still held")
        it, missing = ob.resend(held[0] + 1, held[0] + 3)
        eq((missing, [s for s, _ in it]), (None, [held[0] + 1, held[0] + 2, held[0] + 3]), "all held")
        # a partly acknowledged oldest segment: only its unacknowledged frames count as dropped
        ob.ack(held[0] + 1)
        before = ob.dropped
        for s in range(n, n + per):
            ob.put(s, fr(s))
        eq(ob.dropped - before, per - 2, "acknowledged frames are not lost")
        # after a reboot nothing below the oldest frame held is known: resend says gone for it
        ob2 = Outbox(d, max_bytes=2048, segment_bytes=512)
        first = _seqs(ob2)[0]
        eq(ob2.resend(0, first)[1], 0, "gone below the oldest frame held")
        eq(ob2.resend(first, first + 1)[1], None, "held")


def test_resend_with_gaps_and_cursor():
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=16384, segment_bytes=600)
        seqs = [1, 2, 5, 6, 7, 20, 21, 40]
        frames = {}
        for s in seqs:
            frames[s] = fr(s)
            ob.put(s, frames[s])
        it, missing = ob.resend(3, 21)
        got = list(it)
        eq([s for s, _ in got], [5, 6, 7, 20, 21], "held frames in range (numbers never used are not there)")
        eq(missing, None, "nothing was dropped or acknowledged")
        # iterate while frames are put and acknowledged in between (the iterator holds no file open)
        out = []
        for s, f in ob.pending():
            eq(f, frames[s], "frame %d" % s)
            out.append(s)
            if s == 5:
                ob.ack(6)
                frames[41] = fr(41)
                ob.put(41, frames[41])
        eq(out, [1, 2, 5, 7, 20, 21, 40, 41], "acks and puts during iteration are seen")
        # next_after in order hits the cursor, out of order scans again; the same answers either way
        for after in (6, 7, 20, 0, 21, 7, 39, 40, 41):
            nx = ob.next_after(after)
            want = [s for s in sorted(frames) if s > after and s > 6]
            eq(nx[0] if nx else None, want[0] if want else None, "next after %d" % after)


def test_put_survives_reboot_between_any_two_appends():
    with TempDir("outbox", make=False) as d:
        made = []
        for boot in range(5):
            ob = Outbox(d, max_bytes=4096, segment_bytes=1024)
            eq(_seqs(ob), made, "boot %d sees every frame" % boot)
            last_no = ob.segs[-1][0] if ob.segs else None
            room = bool(ob.segs) and ob.segs[-1][4] + len(rec(boot * 10)) <= 1024
            for k in range(3):
                s = boot * 10 + k
                ob.put(s, fr(s))
                made.append(s)
                if k == 0 and room:
                    eq(ob.segs[-1][0], last_no, "boot %d: the last segment had room and takes the frame" % boot)
        eq(_segments(d), [seg[0] for seg in ob.segs], "index and files agree")
        for seg in ob.segs[:-1]:
            assert seg[4] + len(rec(99)) > 1024, "no segment but the last has room left: %r" % (ob.segs,)


# -- on a real LittleFS (the ESP32's file system), in RAM ------------------------------------------------

def _lfs_day(ack_every_min):
    # One day of a meter reading once a minute with a 15-minute profile row: 1440 + 96 frames
    dev = Flash(128)  # 512 KB: the outbox's 128 KB bound is 32 blocks of it
    VfsLfs2.mkfs(dev)
    ob = Outbox("/", fs=VfsLfs2(dev))
    n = 0
    for minute in range(1440):
        ob.put(n, fr(n, pad=48))  # a single-tariff reading frame is ~140 bytes
        n += 1
        if minute % 15 == 14:
            ob.put(n, fr(n, pad=30))
            n += 1
        if ack_every_min and minute % ack_every_min == ack_every_min - 1:
            ob.ack(n - 2)  # the head-end is a frame behind: segments are never completely acknowledged
    eq(n, 1536, "frames")
    eq(ob.writes, n, "one append per frame")
    assert ob.bytes <= ob.max_bytes, "bounded"
    erases = sum(dev.erases)
    # LittleFS copies a file's partly filled last block into a fresh one on every append after a close:
    # one erase per frame, spread over the free blocks by its wear levelling.
    assert erases <= n + n // 8, "about one block erase per frame, not more (%d)" % erases
    mean = erases // dev.blocks
    assert max(dev.erases) <= 2 * mean + 10, "wear spread over the blocks: %r" % dev.erases
    return ob, dev


@not_mp32(NO_LITTLEFS)
def test_littlefs_day_acknowledged():
    # ESP32 file system (LittleFS2, 4096-byte blocks) in RAM; a live head-end acknowledging every 3 minutes
    ob, dev = _lfs_day(3)
    deleted = ob._next_no - len(ob.segs)  # segments made minus segments held
    assert ob.mark_writes <= 1536 // 16 + deleted + 1, \
        "mark: one write per deleted segment and at most one per 16 frames (%d)" % ob.mark_writes
    eq(ob.dropped, 0, "nothing dropped")
    eq(len(ob.segs), 1, "one segment in flash")


@not_mp32(NO_LITTLEFS)
def test_littlefs_day_offline():
    # the head-end is away all day: the outbox fills to its bound, then drops its oldest segments
    ob, dev = _lfs_day(0)
    eq(ob.mark_writes, ob.drops, "one mark per dropped segment: the floor survives a reboot")
    assert ob.dropped > 0, "the bound was reached"
    eq(ob.dropped, ob.last_lost + 1, "every frame up to the latest drop was dropped, oldest first")
    held = _seqs(ob)
    eq(held, list(range(ob.last_lost + 1, 1536)), "the newest frames are all there, after a remount too")
    eq(_seqs(Outbox("/", fs=VfsLfs2(dev))), held, "rebuilt from the file system")


@not_mp32(NO_LITTLEFS)
def test_littlefs_full_drops_oldest_instead_of_failing():
    dev = Flash(16)  # 64 KB, most of it taken by other files: the outbox's own bound is never reached
    VfsLfs2.mkfs(dev)
    fs = VfsLfs2(dev)
    f = fs.open("/ballast", "wb")
    f.write(b"b" * (9 * BLOCK))
    f.close()
    ob = Outbox("/", fs=fs, segment_bytes=BLOCK)
    for s in range(200):
        ob.put(s, fr(s))  # would raise OSError(ENOSPC) without room being made
    assert ob.dropped > 0 and ob.bytes < ob.max_bytes, "full file system: the oldest segments went"
    held = _seqs(ob)
    eq(held, list(range(held[0], 200)), "the newest frames, contiguous")
    eq(ob.dropped, held[0], "every older frame counted")
    eq(_seqs(Outbox("/", fs=VfsLfs2(dev), segment_bytes=BLOCK)), held, "after a remount")


def test_numbers_skipped_at_a_restart_were_never_made():
    # A reboot resumes numbering after the reserved block (meter/seqno.py): the head-end sees a gap and asks
    # for it. With everything acknowledged before the reboot, the outbox can vouch that the skipped numbers
    # were never made (answer 0), while acknowledged ones are reported as no longer held.
    with TempDir("outbox", make=False) as d:
        ob = Outbox(d, max_bytes=8192, segment_bytes=1024)
        for n in range(20):
            ob.put(n, fr(n))
        ob.ack(19)
        again = Outbox(d, max_bytes=8192, segment_bytes=1024)  # reboot
        again.put(1024, fr(1024))
        frames, missing = again.resend(20, 1023)
        eq(list(frames), [], "nothing held in the skipped block")
        eq(missing, None, "never made: not 'gone'")
        frames, missing = again.resend(15, 30)
        eq(missing, 15, "acknowledged before the reboot: no longer held")
        frames, missing = again.resend(1024, 1024)
        eq([s for s, _f in frames], [1024], "the new frame is held")
