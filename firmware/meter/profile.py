# Load profile (OBIS 99.1.0) and event log (99.98.x): rings of fixed-size records in flash.
# Pure: runs unchanged under MicroPython and CPython. The file system is injected (`fs`, default `os`, or e.g.
# an unmounted vfs.VfsLfs2); it needs open(path, "rb"/"ab"), remove, mkdir and ilistdir or listdir.
#
#   LoadProfile(flash_dir, capacity_rows=6000, fs=os, segment_bytes=4096, name="profile")
#     append(end, imp_mwh, exp_mwh, status)  one row; end strictly above the last row's (else ValueError)
#     read(t_from=None, t_to=None)           iterator of rows with t_from <= end <= t_to, oldest first
#     last()                                 the newest row or None;  count: rows held (<= capacity_rows)
#   EventLog(flash_dir, capacity=512, fs=os, segment_bytes=4096, name="events")
#     log(code, value, t) -> seq             one event; seq = next_seq (1 for the first event ever)
#     read(after_seq=None, limit=16)         list of up to `limit` events with seq > after_seq, oldest first
#     last_seq, last(), count
# Rows are (end, imp_mwh, exp_mwh, status); events are (seq, t, code, value), value an int or a str.
#
# Row record, 24 bytes, little-endian:
#   0 u32 interval end, UTC seconds (to 2106)     10 u32+u16 cumulative export, mWh (u48)
#   4 u32+u16 cumulative import, mWh (u48)        16 u16 status (messages.ROW_* bits)
#   18 u8 kind 0x50 'P', 19 u8 version 1          20 u32 CRC-32 of bytes 0..19
# u48 mWh holds 2.8e14 mWh = 281 GWh: 385 000 years of the INA219's 83 W maximum (26 V x 3.2 A on 0.1 ohm), and
# still 3 800 years at 8.3 kW (a 1 milliohm shunt at 320 A). u32 mWh would have lasted only 5.9 years at 83 W.
#
# Event record, 48 bytes, little-endian:
#   0 u32 event sequence number   4 u32 time, UTC seconds   8 u16 event code (meter/events.py)
#   10 u8 value type: 0x10 int, 0x11 text   11 u8 text length (0..32)
#   12 32 bytes value: an int as i64 in bytes 12..19, or UTF-8 text (cut at a character boundary to <= 32
#      bytes), zero padded; None is stored as 0, an int beyond i64 or any other object as its str() text
#   44 u32 CRC-32 of bytes 0..43
#
# Layout: <flash_dir>/<name>/<n>, segment files numbered 1, 2, 3 ... oldest first (meter/ring.py, the same
# segment ring as the outbox's). Records are only ever appended (one open("ab"), write, close per record:
# durable when append/log returns) and a segment holds segment_bytes // record size of them (170 rows or 85
# events in 4080 bytes: one LittleFS block). When the
# rings hold `capacity` records besides the oldest segment, that segment file is deleted; reads show exactly
# the newest `capacity` records. Nothing is ever written in place, so no record but the one being appended is
# ever at risk.
#
# Power loss: a cut during an append leaves that segment with a short tail (fewer than 24/48 bytes) or, on a
# file system that is not copy-on-write, a full-length record that fails its CRC. At boot every segment's last
# slot is checked (stepping back over damaged ones); a segment ending in damage is closed ("sealed") and the
# next record starts a new segment, so damage can only ever sit at the end of a segment and every slot before
# it is a good record. A read checks the CRC, kind/type and order of every record and never returns a bad one
# (`corrupt` counts those skipped). LittleFS commits a file at close, so there a cut mid-append leaves the
# file as it was before the append. The event sequence number continues from the newest good record, one
# number further for every damaged slot at the end of the newest segment file: a torn event leaves a gap that
# shows the head-end an event was lost, and a number is never handed out twice even if the newest record is
# damaged later. Every log() attempt consumes its number, also one that fails.
#
# RAM: one index entry per segment [number, slots, first key, last key, bytes] (key = end time or event seq;
# 37 entries for 6000 rows), the last record, and per read a 240-byte buffer of decoded records (10 rows or 5
# events). No file stays open between records handed out, so rows may be appended while a read is running.
#
# Flash (LittleFS, 4096-byte blocks, measured on MicroPython's VfsLfs2 in RAM, tests/firmware/test_profile.py):
# an append after a close makes LittleFS copy the file's partly written last block into a fresh block: 0.99
# erases and ~2.1 KB programmed per row or event. 96 rows a day (15 min) cost 95 erases a day (60 days: 5 700,
# with 4 events a day 5 938, spread over all 128 blocks of the test device: at most 59 on one, mean 46). The
# full rings take 35-37 blocks (6000 rows, 148 KB) and 7-8 blocks (512 events). Spread by LittleFS over ~256
# free blocks of a 1.5 MB partition rated 100 000 cycles (25.6 M erases), that is ~740 years for the profile
# alone; 500 events a day would add ~500 erases (~140 years on their own). Alternatives measured: slot files
# written in place at (seq mod capacity) cost 1.02 erases and 4 KB per row and put the oldest row at risk
# during every write; one 144 KB file written in place costs ~34 erases per row (LittleFS copies the rest of a
# file after the changed block); staging rows in a small inline file costs ~0.23 erases per row but needs two
# writes with duplicates to resolve after a cut: not worth it at these rates.
import os
import struct

from meter.crc import crc32
from meter.ring import COUNT, FIRST, LAST, NO, SegmentRing

ROW_SIZE = 24
ROW_KIND = 0x50
ROW_VERSION = 1
EVENT_SIZE = 48
V_INT = 0x10
V_TEXT = 0x11
TEXT_MAX = 32
U32 = 0xFFFFFFFF
U48 = (1 << 48) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
CHUNK_BYTES = 240  # records read from flash at a time: 10 rows or 5 events


def _uint(v, top, what):
    if not isinstance(v, int) or v < 0 or v > top:
        raise ValueError("%s must be an integer in 0..%d, got %r" % (what, top, v))
    return v


def pack_row(end, imp_mwh, exp_mwh, status):
    """The 24 bytes of one load-profile row; ValueError for a field out of its range."""
    _uint(end, U32, "end")
    _uint(imp_mwh, U48, "imp_mwh")
    _uint(exp_mwh, U48, "exp_mwh")
    _uint(status, 0xFFFF, "status")
    buf = bytearray(ROW_SIZE)
    struct.pack_into("<IIHIHHBB", buf, 0, end, imp_mwh & U32, imp_mwh >> 32, exp_mwh & U32, exp_mwh >> 32,
                     status, ROW_KIND, ROW_VERSION)
    struct.pack_into("<I", buf, 20, crc32(memoryview(buf)[:20]))
    return bytes(buf)


def unpack_row(buf, off=0):
    """(end, imp_mwh, exp_mwh, status) of the row at buf[off:off+24], or None if it is damaged."""
    if len(buf) - off < ROW_SIZE:
        return None
    end, il, ih, el, eh, status, kind, version, crc = struct.unpack_from("<IIHIHHBBI", buf, off)
    if kind != ROW_KIND or version != ROW_VERSION or crc != crc32(memoryview(buf)[off:off + 20]):
        return None
    return (end, il | (ih << 32), el | (eh << 32), status)


def _text(v):
    s = v if isinstance(v, str) else str(v)
    b = s[:TEXT_MAX].encode()  # at most 4 bytes a character: bounded whatever the string's length
    if len(b) > TEXT_MAX:
        n = TEXT_MAX
        while n > 0 and (b[n] & 0xC0) == 0x80:
            n -= 1  # b[n] continues a character that would be cut: leave it all out
        b = b[:n]
    return b


def pack_event(seq, t, code, value):
    """The 48 bytes of one event; value an int (i64) or text (<= 32 UTF-8 bytes, longer text is cut)."""
    _uint(seq, U32, "seq")
    _uint(t, U32, "t")
    _uint(code, 0xFFFF, "code")
    if value is None:
        value = 0
    elif value is True or value is False:
        value = int(value)  # MicroPython's bool is not an int subclass
    buf = bytearray(EVENT_SIZE)
    if isinstance(value, int) and I64_MIN <= value <= I64_MAX:
        struct.pack_into("<IIHBBq", buf, 0, seq, t, code, V_INT, 0, int(value))
    else:
        b = _text(value)
        struct.pack_into("<IIHBB", buf, 0, seq, t, code, V_TEXT, len(b))
        buf[12:12 + len(b)] = b
    struct.pack_into("<I", buf, 44, crc32(memoryview(buf)[:44]))
    return bytes(buf)


def unpack_event(buf, off=0):
    """(seq, t, code, value) of the event at buf[off:off+48], or None if it is damaged."""
    if len(buf) - off < EVENT_SIZE:
        return None
    seq, t, code, vtype, n = struct.unpack_from("<IIHBB", buf, off)
    (crc,) = struct.unpack_from("<I", buf, off + 44)
    if crc != crc32(memoryview(buf)[off:off + 44]):
        return None
    if vtype == V_INT:
        value = struct.unpack_from("<q", buf, off + 12)[0]
    elif vtype == V_TEXT and n <= TEXT_MAX:
        try:
            value = bytes(buf[off + 12:off + 12 + n]).decode()
        except UnicodeError:
            return None
    else:
        return None
    return (seq, t, code, value)


class _Ring(SegmentRing):
    """Fixed-size records in the slots of a segment ring (meter/ring.py), whose first field (the key) strictly
    increases; reads show the newest `capacity` of them."""

    def __init__(self, flash_dir, name, capacity, segment_bytes, fs, size, unpack):
        per = segment_bytes // size
        if capacity < 1 or per < 1:
            raise ValueError("need capacity >= 1 and segment_bytes >= %d" % size)
        SegmentRing.__init__(self, flash_dir, name, segment_bytes, fs)
        self.capacity = capacity
        self.per = per
        self._size = size
        self._unpack = unpack
        self.corrupt = 0       # damaged or out-of-order records skipped by reads
        self._last = None      # the newest record (read from flash when first asked for after a boot)
        self.tail_damage = 0   # damaged slots at the end of the newest segment file at boot
        self._load()
        self._trim()

    def _record(self, f, slot, buf):
        """The record in `slot` of open file f, or None if it is damaged or missing."""
        f.seek(slot * self._size)
        n = f.readinto(buf)
        return self._unpack(buf) if n == self._size else None

    def _survey(self, no):
        """(slots up to the last good record, first key, last key, file size, damaged) of one segment file:
        its last slot is checked, stepping back over damaged ones."""
        size = self._size
        buf = bytearray(size)
        try:
            f = self._open(self._path(no), "rb")
        except OSError:
            return None
        try:
            end = f.seek(0, 2)
            i = end // size - 1
            last = self._record(f, i, buf) if i >= 0 else None
            while last is None and i > 0:
                i -= 1
                last = self._record(f, i, buf)
            first = None
            j = 0
            while j < i and first is None:
                first = self._record(f, j, buf)
                j += 1
            if first is None:
                first = last
        finally:
            f.close()
        slots = i + 1 if last is not None else 0
        self.tail_damage = (end - slots * size + size - 1) // size  # (the newest file read wins)
        if not slots:
            return 0, None, None, end, end != 0
        return slots, first[0], last[0], end, end != slots * size

    def _last_key(self):
        return self.segs[-1][LAST] if self.segs else None

    def _add(self, rec, key):
        self._append(rec, key)
        self._trim()

    def _trim(self):
        segs = self.segs
        while len(segs) > 1 and self.held - segs[0][COUNT] >= self.capacity:
            self._drop_oldest()

    # -- reading ------------------------------------------------------------------------------------------
    @property
    def count(self):
        """Records held, at most capacity (a record damaged after it was written still counts)."""
        return self.held if self.held < self.capacity else self.capacity

    def last(self):
        """The newest record, or None."""
        if self._last is None and self.segs:
            seg = self.segs[-1]
            try:
                f = self._open(self._path(seg[NO]), "rb")
                try:
                    self._last = self._record(f, seg[COUNT] - 1, bytearray(self._size))
                finally:
                    f.close()
            except OSError:
                pass  # unreadable now: as if damaged
        return self._last

    def _start(self, key, segs=None):
        """Number of the segment (of `segs`, default all) that holds the first record with a key >= `key`."""
        segs = self.segs if segs is None else segs
        no = segs[0][NO] if segs else 0
        for seg in segs:
            if seg[FIRST] > key:
                break
            no = seg[NO]
        return no

    def _scan(self, no, stop=None):
        """Every good record of the visible window from segment `no` on (up to segment number `stop`,
        exclusive), oldest first. Reads CHUNK_BYTES at a time, decodes them and closes the file before handing
        them out."""
        size = self._size
        buf = bytearray(CHUNK_BYTES // size * size)
        mv = memoryview(buf)
        slot = 0
        prev = None
        while True:
            seg = None
            for s in self.segs:  # looked up again every chunk: appends and deletions may happen in between
                if s[NO] >= no:
                    seg = s
                    break
            if seg is None or (stop is not None and seg[NO] >= stop):
                return
            if seg[NO] != no:
                no, slot = seg[NO], 0
            if seg is self.segs[0] and self.held > self.capacity and slot < self.held - self.capacity:
                slot = self.held - self.capacity  # older than the newest `capacity` records
            n = seg[COUNT] - slot
            if n <= 0:
                no, slot = no + 1, 0
                continue
            if n * size > len(buf):
                n = len(buf) // size
            try:
                f = self._open(self._path(no), "rb")
            except OSError:
                no, slot = no + 1, 0  # deleted meanwhile
                continue
            try:
                f.seek(slot * size)
                got = f.readinto(mv[:n * size]) or 0
            finally:
                f.close()
            out = []
            for k in range(n):
                rec = self._unpack(buf, k * size) if (k + 1) * size <= got else None
                if rec is None or (prev is not None and rec[0] <= prev):
                    self.corrupt += 1
                    continue
                prev = rec[0]
                out.append(rec)
            slot += n
            for rec in out:
                yield rec


class LoadProfile(_Ring):
    """Load profile 99.1.0: rows (end, imp_mwh, exp_mwh, status), end in UTC seconds, energies cumulative mWh.

    Rows are stored in the order they were made, in runs: within a run, end times strictly increase. A clock
    set back starts a new run (append's `new_run`) in a new segment; an end time that any stored run spans
    (from its first row to its last) is never stored again (docs/protocol.md, "Clock changes")."""

    def __init__(self, flash_dir, capacity_rows=6000, fs=os, segment_bytes=4096, name="profile"):
        _Ring.__init__(self, flash_dir, name, capacity_rows, segment_bytes, fs, ROW_SIZE, unpack_row)

    def _follows(self, prev, seg):
        return True  # a segment whose first row is not after the one before starts a new run

    def append(self, end, imp_mwh, exp_mwh, status=0, new_run=False):
        """Store one row (durable when this returns). ValueError if end is not after the last row's end (with
        new_run: if a stored run spans it) or a field is out of range; OSError from the file system (the ring
        is unchanged, the row not stored)."""
        rec = pack_row(end, imp_mwh, exp_mwh, status)
        last = self._last_key()
        back = last is not None and end <= last
        if back and not new_run:
            raise ValueError("row end %d is not after the last row's end %d" % (end, last))
        for seg in self.segs:
            if seg[FIRST] <= end <= seg[LAST]:
                raise ValueError("row end %d is within the stored rows %d..%d" % (end, seg[FIRST], seg[LAST]))
        if back:
            self._sealed = True  # the new run starts a segment of its own
        self._add(rec, end)
        self._last = (end, imp_mwh, exp_mwh, status)

    def runs(self):
        """The runs of segments, oldest first: lists of index entries whose keys strictly increase."""
        out = []
        for seg in self.segs:
            if out and seg[FIRST] > out[-1][-1][LAST]:
                out[-1].append(seg)
            else:
                out.append([seg])
        return out

    def read(self, t_from=None, t_to=None):
        """Iterator over the rows with t_from <= end <= t_to (None: unbounded), in the order they were made
        (oldest first; by end time within each run)."""
        runs = self.runs()
        for i in range(len(runs)):
            run = runs[i]
            if (t_to is not None and run[0][FIRST] > t_to) or (t_from is not None and run[-1][LAST] < t_from):
                continue
            start = self._start(t_from, run) if t_from is not None else run[0][NO]
            for row in self._scan(start, runs[i + 1][0][NO] if i + 1 < len(runs) else None):
                if t_from is not None and row[0] < t_from:
                    continue
                if t_to is not None and row[0] > t_to:
                    break
                yield row


class EventLog(_Ring):
    """Event log 99.98.x: events (seq, t, code, value); seq never repeats, also across reboots."""

    def __init__(self, flash_dir, capacity=512, fs=os, segment_bytes=4096, name="events"):
        _Ring.__init__(self, flash_dir, name, capacity, segment_bytes, fs, EVENT_SIZE, unpack_event)
        self.next_seq = self.last_seq + 1 + self.tail_damage

    @property
    def last_seq(self):
        """Sequence number of the newest event, 0 if there is none."""
        k = self._last_key()
        return 0 if k is None else k

    def log(self, code, value, t):
        """Store one event (durable when this returns) and return its sequence number. ValueError for a code
        or time out of range (no number used); OSError from the file system (the event may be lost, its
        number is not used again)."""
        seq = self.next_seq
        rec = pack_event(seq, t, code, value)
        self.next_seq = seq + 1  # consumed even if the write fails: it may have landed
        self._add(rec, seq)
        self._last = unpack_event(rec)
        return seq

    def read(self, after_seq=None, limit=16):
        """List of up to `limit` events with seq > after_seq (None: from the oldest held), oldest first."""
        out = []
        if limit <= 0:
            return out
        after = -1 if after_seq is None else after_seq
        for ev in self._scan(self._start(after + 1)):
            if ev[0] > after:
                out.append(ev)
                if len(out) >= limit:
                    break
        return out
