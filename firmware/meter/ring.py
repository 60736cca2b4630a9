# The segment ring beneath the durable outbox (meter/outbox.py) and the load profile and event log
# (meter/profile.py): append-only records in segment files <flash_dir>/<name>/<n>, n = 1, 2, 3 ... oldest
# first; an index entry per segment; appends into the newest segment while it has room, else into a new one;
# the oldest segment deleted whole; the index rebuilt from the files at boot. Pure: runs under MicroPython and
# CPython. The file system is injected (`fs`, default `os`, or e.g. an unmounted vfs.VfsLfs2): open(path,
# "rb"/"ab"), remove, mkdir, and ilistdir or listdir.
#
# What a record is and how a segment file is read back belong to the owner, a subclass that provides
#   _survey(no) -> (records, first key, last key, bytes, damaged), or None if the file cannot be read
# Keys (frame seq, row end time, event seq) strictly increase from record to record, across segments too.
#
# Index entry, per segment: [number, records, first key, last key, bytes] (fields NO, COUNT, FIRST, LAST,
# BYTES). Nothing is ever written in place: only the record being appended is ever at risk. A failed append
# leaves no new file behind; in the newest segment its bytes are counted (they may have landed, torn), and a
# ring of fixed-size slots (seal_on_damage) starts its next record in a new segment, since a torn slot would
# shift every slot after it. Framed records delimit themselves and carry on in the same segment.
import os

from meter.store import dir_prefix, list_dir

NO = 0
COUNT = 1
FIRST = 2
LAST = 3
BYTES = 4
_ENOSPC = 28


class SegmentRing:
    seal_on_damage = True

    def __init__(self, flash_dir, name, segment_bytes, fs):
        self.fs = fs
        self._open = open if fs is os else fs.open
        self.flash_dir = flash_dir
        self.dir = dir_prefix(flash_dir) + name
        self.segment_bytes = segment_bytes
        self.segs = []          # the index, oldest first
        self.held = 0           # records in all segments
        self.bytes = 0          # bytes in all segment files
        self.writes = 0         # appends (one file append per record)
        self.bytes_written = 0
        self.deletes = 0        # segment files deleted (oldest dropped, found empty or out of order at boot)
        self.torn = 0           # segments that ended in damage at boot
        self._sealed = False    # the newest segment ends in damage: the next record starts a new one
        self._next_no = 1

    def _path(self, no):
        return self.dir + "/" + str(no)

    # -- boot -----------------------------------------------------------------------------------------------
    def _load(self):
        """Index the segment files, oldest first. A segment without a good record, one whose first key is not
        above the keys before it (not written by this ring), or one the owner has done with (_stale) is
        deleted; a file that cannot be read is left alone, and numbering goes on above it."""
        nos = []
        for name in list_dir(self.fs, self.flash_dir, self.dir):
            try:
                nos.append(int(name))
            except ValueError:
                pass  # not a segment
        nos.sort()
        if nos:
            self._next_no = nos[-1] + 1
        for no in nos:
            got = self._survey(no)
            if got is None:
                continue
            count, first, last, size, damaged = got
            if damaged:
                self.torn += 1
            seg = [no, count, first, last, size]
            self.held += count
            self.bytes += size
            if count == 0 or (self.segs and not self._follows(self.segs[-1], seg)) or self._stale(seg):
                self._delete(seg)
                continue
            self.segs.append(seg)
            self._sealed = damaged and self.seal_on_damage

    def _stale(self, seg):
        return False

    def _follows(self, prev, seg):
        """Whether segment `seg` may come after `prev` (keys strictly increase: else it was not written here)."""
        return seg[FIRST] > prev[LAST]

    # -- writing --------------------------------------------------------------------------------------------
    def _append(self, rec, key):
        """Append one record (durable when this returns). A full file system (ENOSPC, something else filled
        it) makes room by dropping the oldest segment, once; other errors propagate, the index unchanged."""
        try:
            self._write(rec, key)
        except OSError as e:
            if e.args[0] != _ENOSPC or len(self.segs) < 2:
                raise
            self._drop_oldest()
            self._write(rec, key)

    def _write(self, rec, key):
        segs = self.segs
        n = len(rec)
        seg = segs[-1] if segs and not self._sealed and segs[-1][BYTES] + n <= self.segment_bytes else None
        no = self._next_no if seg is None else seg[NO]
        self.writes += 1
        f = self._open(self._path(no), "ab")  # if this raises, nothing changed
        if seg is None:
            self._next_no += 1  # a file that a failed write may have left is never appended to
        try:
            f.write(rec)
            f.close()
        except BaseException:
            try:
                f.close()
                if seg is None:
                    self.fs.remove(self._path(no))  # a new file holding nothing but the torn record
            except OSError:
                pass
            if seg is not None:
                seg[BYTES] += n
                self.bytes += n
                self._sealed = self.seal_on_damage
            raise
        self.bytes_written += n
        self.bytes += n
        self.held += 1
        self._sealed = False
        if seg is None:
            segs.append([no, 1, key, key, n])
        else:
            seg[COUNT] += 1
            seg[LAST] = key
            seg[BYTES] += n

    # -- deleting -------------------------------------------------------------------------------------------
    def _drop_oldest(self):
        self._delete(self.segs.pop(0))

    def _delete(self, seg):
        try:
            self.fs.remove(self._path(seg[NO]))
        except OSError:
            pass  # already gone: the index is what counts
        self.held -= seg[COUNT]
        self.bytes -= seg[BYTES]
        self.deletes += 1
