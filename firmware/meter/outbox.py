# The durable outbox: every frame the meter makes stays in flash until a signed cumulative acknowledgement
# covers it (docs/protocol.md, "Acknowledgements, back-fill and the outbox"). Pure: runs under MicroPython
# and CPython; the file system is injected (`fs`, default `os`, or e.g. an unmounted vfs.VfsLfs2).
#
#   Outbox(flash_dir, max_bytes=131072, segment_bytes=4096, fs=os, persist_every=16, on_drop=None)
#   put(seq, frame)          append one frame (the bytes of frame.encode_frame) under its seq: one file append
#   ack(upto)                frames with seq <= upto are acknowledged; whole segments are deleted
#   next_after(seq)          (seq, frame) of the oldest unacknowledged frame above seq, or None
#   pending(after_seq=None)  iterator of the unacknowledged (seq, frame), oldest first
#   resend(first, last)      (iterator of the held frames in [first, last], first missing seq or None)
#   flush()                  persist the acknowledged mark now (orderly shutdown)
#
# Layout: <flash_dir>/outbox/<n>, segment files numbered 1, 2, 3 ... oldest first (meter/ring.py, the same
# segment ring as the load profile's). A segment is records appended one after the other, one per frame; a
# record is itself a frame (meter/frame.py) whose message is
#
#   offset 0  u8   record version (1)
#          1  u64  the frame's sequence number, little-endian (as handed out by messages.Builder)
#          9  ...  the COSE_Sign1, exactly as signed
#
# i.e. 0x00 COBS(version || seq || cose || CRC-32) 0x00. The seq travels beside the signed bytes from the moment
# they are signed: nothing reads it back out of them. Each record carries its own CRC, and its leading
# delimiter closes whatever came before, so a record torn by a power cut is skipped by the Deframer as noise
# and everything before and after it survives; what goes on the wire is frame.encode_frame(cose) again. A
# record of another version (e.g. a bare frame an older firmware stored) is skipped and counted (unreadable),
# and then nothing below the oldest frame held is vouched for after the boot (see `floor`). A segment takes
# appends until the next record would take it past segment_bytes; then a new one is started.
#
# RAM: an index entry per segment [number, frames, first seq, last seq, bytes] (at most about
# max_bytes / (segment_bytes - 1 KB) + 1 of them), one Deframer (1 KB), a 256-byte read buffer, the last
# frame put (so that sending it does not read flash back) and a read cursor (segment, byte offset, seq)
# so that reading frames in order resumes where the previous read stopped. Nothing loads a whole segment.
#
# Sequence numbers come from meter.seqno (strictly increasing, never reused), so frames are appended in
# sequence order, and a segment's frames all lie between its first and last seq.
#
# Acknowledgements: ack(upto) deletes every segment whose last seq <= upto. The mark itself ("outbox-ack",
# two CRC slots of meter/store.py) is written only when it has moved persist_every sequence numbers since
# the last write and frames at or below it are still in flash; at boot, frames <= the mark are skipped. A
# frame acknowledged after the last mark write is sent again after a reboot: a duplicate the head-end
# drops by sequence number. Bounded: when the segments exceed max_bytes the oldest segment is dropped
# (`dropped` counts its unacknowledged frames, `first_lost` / `last_lost` the range of the latest drop,
# on_drop(first, last, count) is called after the put that caused it and may itself put a frame).
#
# `floor`: every seq <= floor is no longer held (acknowledged, dropped, or, after a reboot, older than the
# oldest frame held then: what was dropped before the reboot is not remembered); every frame made above it is
# held. resend() reports a back-fill range that reaches down to the floor as gone from its first seq.
#
# Flash cost on LittleFS (the ESP32's file system, 4096-byte blocks): every file takes at least one block, so
# segment_bytes should be the block size (the default); 128 KB of outbox is then 32-33 blocks. LittleFS
# copies a file's partly written last block into a fresh block on every append after a close, so a put costs
# about one block erase, spread over the free blocks by LittleFS's wear levelling (measured in
# tests/firmware/test_outbox.py: 1536 frames a day, ~1570 erases).
import os
import struct

from meter import frame
from meter.ring import COUNT, FIRST, LAST, NO, SegmentRing
from meter.store import Store

CHUNK = 256  # bytes read from flash at a time
_VERSION = b"\x01"
_HEAD = 9  # version and seq before the COSE_Sign1 in a record
RECORD_MAX = frame.MAX_FRAME + _HEAD


def record(seq, cose):
    """The bytes stored for one frame: a frame of its own carrying the record version, seq and the COSE."""
    return frame.encode_frame(_VERSION + struct.pack("<Q", seq) + cose, RECORD_MAX)


def _unrecord(msg):
    """(seq, cose) of a record's message, or None if it is not a record of this version."""
    if len(msg) <= _HEAD or msg[0] != _VERSION[0]:
        return None
    return struct.unpack_from("<Q", msg, 1)[0], msg[_HEAD:]


class Outbox(SegmentRing):
    seal_on_damage = False  # framed records delimit themselves: appends go on after a torn one

    def __init__(self, flash_dir, max_bytes=131072, segment_bytes=4096, fs=os, persist_every=16, on_drop=None,
                 mark_store=None):
        if segment_bytes < 64 or max_bytes < 2 * segment_bytes:
            raise ValueError("need segment_bytes >= 64 and max_bytes >= 2 * segment_bytes")
        SegmentRing.__init__(self, flash_dir, "outbox", segment_bytes, fs)
        self.max_bytes = max_bytes
        self.persist_every = persist_every
        self.on_drop = on_drop
        self._mark = mark_store if mark_store is not None else Store(flash_dir, "outbox-ack", fs=fs, max_payload=8)
        self._df = frame.Deframer(RECORD_MAX)
        self._chunk = bytearray(CHUNK)
        self.acked = -1         # every frame with seq <= acked is acknowledged
        self.last_seq = -1      # seq of the newest frame held (or put)
        self.mark_writes = 0    # writes of the acknowledged mark
        self.dropped = 0        # unacknowledged frames dropped because max_bytes was reached
        self.drops = 0          # segments dropped for that reason
        self.first_lost = None  # seq range of the latest drop
        self.last_lost = None
        self.unreadable = 0     # intact records of another version (skipped at boot)
        self._saved_mark = -1
        self._tail = None       # (seq, frame) of the last put: sent without reading flash back
        self._before_tail = -1  # seq of the frame put before it
        self._cur = None        # read cursor: [segment number, byte offset after a frame, that frame's seq]
        self._boot_floor = -1   # below the oldest frame held at boot nothing is known: reported as gone
        self._boot()

    # -- files --------------------------------------------------------------------------------------------
    def _delete(self, seg):
        SegmentRing._delete(self, seg)
        if self._cur is not None and self._cur[0] == seg[NO]:
            self._cur = None

    def _scan(self, no, start, after, first_only):
        """Frames of segment `no` from byte `start` on with seq > after.

        Returns (count, first seq, last seq, end offset of the first, COSE of the first, end of file)."""
        df = self._df
        df.reset()
        buf = self._chunk
        mv = memoryview(buf)
        count = 0
        first = last = end1 = cose1 = None
        pos = start
        try:
            f = self._open(self._path(no), "rb")
        except OSError:
            return 0, None, None, None, None, 0
        try:
            if start:
                f.seek(start)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                i = 0
                while i < n:
                    z = buf.find(b"\x00", i, n)
                    j = n if z < 0 else z + 1
                    got = df.feed(mv[i:j])
                    i = j
                    for msg in got:
                        rec = _unrecord(msg)
                        if rec is None:
                            self.unreadable += 1
                            continue
                        s = rec[0]
                        if s <= after:
                            continue
                        count += 1
                        last = s
                        if first is None:
                            first, end1, cose1 = s, pos + j, rec[1]
                            if first_only:
                                return count, first, last, end1, cose1, None
                pos += n
        finally:
            f.close()
        return count, first, last, end1, cose1, pos

    def _survey(self, no):
        count, first, last, _e, _c, size = self._scan(no, 0, -1, False)
        return count, first, last, size, self._df.pending  # pending: it ends in the middle of a frame

    def _stale(self, seg):
        return seg[LAST] <= self.acked  # fully acknowledged

    def _boot(self):
        got = self._mark.load()
        marked = got is not None and len(got[1]) == 8
        if marked:
            self.acked = self._saved_mark = struct.unpack("<Q", got[1])[0] - 1  # stored + 1: -1 is "none"
        noise = self._df.noise_segments
        self._load()
        self.torn += self._df.noise_segments - noise
        if self.unreadable:
            marked = False  # frames whose numbers cannot be read: what lies below the oldest held is not known
        if self.segs:
            self.last_seq = self.segs[-1][LAST]
        self._before_tail = self.last_seq
        # The mark is written whenever a segment is deleted (acknowledged or dropped), so every frame made above
        # it is still held: numbers above it that are not held were never made (skipped at a restart). Without
        # a mark (lost flash state) nothing below the oldest frame held can be vouched for.
        if marked:
            self._boot_floor = self.acked
        else:
            self._boot_floor = self.segs[0][FIRST] - 1 if self.segs else None
        while self.bytes > self.max_bytes and len(self.segs) > 1:
            self._drop_oldest()

    # -- writing ------------------------------------------------------------------------------------------
    def put(self, seq, fr):
        """Append one frame (durable when this returns). seq must be above every seq put before."""
        if seq <= self.last_seq:
            raise ValueError("frame seq %d is not above the last one put (%d)" % (seq, self.last_seq))
        rec = record(seq, frame.decode_frame(fr))  # a FrameError (ValueError) changes nothing
        if seq <= self.acked:
            # the numbering went backwards (its flash state was lost): forget the old mark, loudly visible
            self.acked = seq - 1
            self._save_mark()
        if self._boot_floor is None:
            self._boot_floor = seq - 1
        dropped = self.dropped
        self._append(rec, seq)
        self._before_tail = self.last_seq
        self.last_seq = seq
        self._tail = (seq, fr)
        while self.bytes > self.max_bytes and len(self.segs) > 1:
            self._drop_oldest()
        if self.dropped != dropped and self.on_drop is not None:
            self.on_drop(self.first_lost, self.last_lost, self.dropped - dropped)

    def _drop_oldest(self):
        seg = self.segs[0]
        if seg[LAST] > self.acked:
            if seg[FIRST] > self.acked:
                count, first = seg[COUNT], seg[FIRST]
            else:
                count, first = self._scan(seg[NO], 0, self.acked, False)[:2]
            if count:
                self.dropped += count
                self.first_lost, self.last_lost = first, seg[LAST]
        self.drops += 1
        SegmentRing._drop_oldest(self)
        self._save_mark()  # (always after a deletion: see _boot)

    # -- acknowledgements ---------------------------------------------------------------------------------
    def ack(self, upto):
        """Every frame with seq <= upto is acknowledged. Returns the number of segments deleted."""
        if upto > self.last_seq:
            upto = self.last_seq  # nothing above the newest frame was ever made: not acknowledged
        if upto <= self.acked:
            return 0
        self.acked = upto
        segs = self.segs
        deleted = 0
        while segs and segs[0][LAST] <= upto:
            self._delete(segs.pop(0))
            deleted += 1
        if deleted or (upto - self._saved_mark >= self.persist_every and segs and segs[0][FIRST] <= upto):
            self._save_mark()  # (always after a deletion: see _boot)
        return deleted

    def _save_mark(self):
        # What is persisted is the floor: acknowledged or dropped, no longer held either way.
        lost = self.last_lost if self.last_lost is not None else -1
        mark = self.acked if self.acked > lost else lost
        self._mark.save(struct.pack("<Q", mark + 1))
        self.mark_writes += 1
        self._saved_mark = self.acked

    def flush(self):
        """Persist the acknowledged mark if it moved since it was last written."""
        if self.acked != self._saved_mark:
            self._save_mark()

    @property
    def floor(self):
        """Every seq <= floor is no longer held (acknowledged, dropped, or from before the last boot and
        older than everything held at boot). Every frame made above it is held."""
        f = self.last_lost if self.last_lost is not None else -1
        if self._boot_floor is not None and self._boot_floor > f:
            f = self._boot_floor
        return self.acked if self.acked > f else f

    # -- reading ------------------------------------------------------------------------------------------
    def next_after(self, after):
        """(seq, frame) of the oldest unacknowledged frame with seq > after, or None."""
        if after < self.acked:
            after = self.acked
        if after >= self.last_seq:
            return None
        tail = self._tail
        if tail is not None and after >= self._before_tail:
            return tail
        cur = self._cur
        for seg in self.segs:
            if seg[LAST] <= after:
                continue
            start = cur[1] if cur is not None and cur[0] == seg[NO] and cur[2] <= after else 0
            got = self._scan(seg[NO], start, after, True)
            if got[0]:
                self._cur = [seg[NO], got[3], got[1]]
                return got[1], frame.encode_frame(got[4])
        return None

    def pending(self, after_seq=None):
        """Iterator over the unacknowledged (seq, frame) above after_seq, oldest first. Holds no file open
        between items, so frames may be put and acknowledged while it runs."""
        s = -1 if after_seq is None else after_seq
        while True:
            nx = self.next_after(s)
            if nx is None:
                return
            yield nx
            s = nx[0]

    def _range(self, after, last):
        while True:
            nx = self.next_after(after)
            if nx is None or nx[0] > last:
                return
            yield nx
            after = nx[0]

    def resend(self, first, last):
        """Back-fill of [first, last]: (iterator of the frames still held in it, oldest first; the first
        seq of the range that is no longer held, or None when nothing in it was acknowledged or dropped).
        Numbers above the floor that are not held were never used (skipped at a restart)."""
        missing = first if first <= self.floor else None
        return self._range(first - 1, last), missing
