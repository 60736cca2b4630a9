"""Power-loss-safe checkpoints of an opaque payload, and the policy that decides when to write one.

Pure: runs unchanged under CPython and MicroPython. The file system is injected (`fs`, default `os`); any
object with open(path, mode), stat(path) and mkdir(path) works, e.g. an unmounted `vfs.VfsLfs2`.

Two slot files, `<name>.a` and `<name>.b`, are written alternately. A slot is (little-endian)

    offset  size  field
    0       4     magic b"MKCP"
    4       1     format version (1)
    5       4     sequence number, u32, wraps modulo 2^32
    9       2     payload length L (<= max_payload)
    11      L     payload
    11+L    4     CRC-32 (zlib/binascii polynomial) over bytes 0 .. 11+L-1

so a slot costs 15 bytes plus the payload. `load()` takes the newest slot (serial-number arithmetic on the
sequence) whose magic, version, length and CRC are all valid. `save()` always writes the slot that does NOT
hold that checkpoint, with sequence + 1: a power loss at any instant can only damage the slot being written
(truncated, zero length, half old/half new, erased 0xFF...), which then fails its CRC, and `load()` falls
back to the previous checkpoint, which was never touched. Nothing else is written per checkpoint: no
rename, no directory entry, no metadata file. `writes` and `bytes_written` count every slot write.

Checkpoint policy (`Checkpointer`): a checkpoint is due when 10 Wh have been metered since the last one, or
when 15 minutes have passed since the last one AND anything at all was metered since. An unchanged payload
is never rewritten (it would wear flash and add nothing), so an idle meter stops writing; the most a power
loss can cost is < 10 Wh and < 15 minutes of metering.
"""

from meter.crc import crc32
import os
import struct

MAGIC = b"MKCP"
FORMAT_VERSION = 1
HEADER = "<4sBIH"
HEADER_LEN = 11
CRC_LEN = 4
OVERHEAD = HEADER_LEN + CRC_LEN
SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
DEFAULT_MAX_PAYLOAD = 2048
_ENOENT = 2


def dir_prefix(d):
    """'' for the current directory, else d with exactly one trailing '/': what a file name is joined to."""
    if d in ("", "."):
        return ""
    return d if d.endswith("/") else d + "/"


def exists(root_dir, name):
    """Whether a store `name` has a slot file in root_dir (damaged or not): what a part that is loaded only
    when it has state asks at boot, without loading it."""
    p = dir_prefix(root_dir) + name
    for slot in (".a", ".b"):
        try:
            os.stat(p + slot)
            return True
        except OSError:
            pass
    return False


def list_dir(fs, flash_dir, d):
    """File names in directory d (inside flash_dir), creating both if missing (then: [])."""
    try:
        if hasattr(fs, "ilistdir"):
            return [e[0] for e in fs.ilistdir(d)]
        return fs.listdir(d)
    except OSError:
        for path in (flash_dir.rstrip("/"), d):
            if path and path != ".":
                try:
                    fs.mkdir(path)
                except OSError:
                    pass  # exists
        return []


def pack(seq, payload):
    """The bytes of one slot holding `payload` with sequence number `seq` (a bytearray: no second copy of a
    calendar's 2 KB on a board's heap)."""
    n = len(payload)
    buf = bytearray(HEADER_LEN + n + CRC_LEN)
    struct.pack_into(HEADER, buf, 0, MAGIC, FORMAT_VERSION, seq & SEQ_MASK, n)
    buf[HEADER_LEN:HEADER_LEN + n] = payload
    struct.pack_into("<I", buf, HEADER_LEN + n, crc32(memoryview(buf)[:HEADER_LEN + n]))
    return buf


def unpack(blob, max_payload=DEFAULT_MAX_PAYLOAD):
    """(seq, payload) of a slot's bytes; ValueError saying what is wrong with a damaged one."""
    size = len(blob)
    if size == 0:
        raise ValueError("empty slot")
    if size < OVERHEAD:
        raise ValueError("truncated: %d bytes, a slot has at least %d" % (size, OVERHEAD))
    magic, version, seq, n = struct.unpack_from(HEADER, blob, 0)
    if magic != MAGIC:
        raise ValueError("bad magic %r" % (bytes(magic),))
    if version != FORMAT_VERSION:
        raise ValueError("unsupported format version %d (this firmware reads %d)" % (version, FORMAT_VERSION))
    if n > max_payload:
        raise ValueError("payload length %d exceeds the %d-byte limit" % (n, max_payload))
    if size != OVERHEAD + n:
        raise ValueError("length mismatch: %d bytes, header says %d" % (size, OVERHEAD + n))
    body = memoryview(blob)[:HEADER_LEN + n]
    (crc,) = struct.unpack_from("<I", blob, HEADER_LEN + n)
    if crc != crc32(body):
        raise ValueError("CRC mismatch")
    return seq, bytes(body[HEADER_LEN:])


def seq_newer(a, b):
    """True if sequence number a is newer than b (RFC 1982 serial arithmetic modulo 2^32)."""
    d = (a - b) & SEQ_MASK
    return 0 < d < (SEQ_MOD >> 1)


class Store:
    """A/B slot checkpoint store for one payload.

    load() -> (seq, payload) or None, never raises on damaged files; save(payload) -> seq written.
    Counters: writes, bytes_written (every slot write), corrupt (damaged slots seen by load()).
    `faults` lists (slot file, reason) for the damaged slots of the last load()."""

    def __init__(self, root_dir, name="registers", fs=os, max_payload=DEFAULT_MAX_PAYLOAD):
        self.fs = fs
        # MicroPython's os has no open(); CPython's os.open is the fd-level call. A VFS object has its own.
        self._open = open if fs is os else fs.open
        self.root = root_dir
        self.name = name
        self.max_payload = max_payload
        prefix = dir_prefix(root_dir)
        self.paths = (prefix + name + ".a", prefix + name + ".b")
        self.writes = 0
        self.bytes_written = 0
        self.corrupt = 0
        self.faults = []
        self.seq = None      # sequence number of the newest valid checkpoint, None if there is none
        self._slot = None    # index into paths of that checkpoint
        self._loaded = False
        self._dir_ok = False

    def _read_slot(self, i):
        """(seq, payload), or None if the slot file does not exist; ValueError/OSError if damaged."""
        try:
            f = self._open(self.paths[i], "rb")
        except OSError as e:
            if e.args and e.args[0] == _ENOENT:
                return None
            raise
        try:
            # Bounded read: a damaged length field or a stray big file cannot exhaust a 100 KB heap.
            blob = f.read(OVERHEAD + self.max_payload + 1)
        finally:
            f.close()
        return unpack(blob or b"", self.max_payload)

    def load(self):
        """(seq, payload) of the newest valid checkpoint, or None. Damaged slots are counted, not raised."""
        self.faults = []
        best = None
        for i in (0, 1):
            try:
                got = self._read_slot(i)
            except (ValueError, OSError) as e:
                self.corrupt += 1
                self.faults.append((self.paths[i], str(e) or type(e).__name__))
                continue
            if got is not None and (best is None or seq_newer(got[0], best[1][0])):
                best = (i, got)
        self._loaded = True
        if best is None:
            self.seq = self._slot = None
            return None
        self._slot, self.seq = best[0], best[1][0]
        return best[1]

    def save(self, payload):
        """Write `payload` as the next checkpoint into the slot not holding the newest one; returns its seq.

        If this raises (or the power fails) the previous checkpoint is intact and still the one loaded."""
        n = len(payload)
        if n > self.max_payload:
            raise ValueError("payload of %d bytes exceeds max_payload %d" % (n, self.max_payload))
        if not self._loaded:
            self.load()
        if not self._dir_ok:
            self._ensure_dir()
        if self.seq is None:
            seq, target = 1, 0
        else:
            seq, target = (self.seq + 1) & SEQ_MASK, 1 - self._slot
        blob = pack(seq, payload)
        f = self._open(self.paths[target], "wb")
        try:
            self.writes += 1
            self.bytes_written += len(blob)
            f.write(blob)
        finally:
            f.close()
        self.seq, self._slot = seq, target
        return seq

    def _ensure_dir(self):
        root = self.root.rstrip("/")
        if root and root != ".":
            try:
                self.fs.stat(root)
            except OSError:
                self.fs.mkdir(root)
        self._dir_ok = True


class Checkpointer:
    """When to checkpoint: every `quantum_uwh` metered (10 Wh) or every `max_interval_s` (15 min) if
    anything was metered since the last checkpoint, whichever comes first.

    `total_uwh` is any count that grows whenever energy is metered (Registers.total_uwh(): import plus
    export); `now_s` is a monotonic clock in seconds (hw.monotonic_s: uptime, or the virtual clock; never wall
    time, which can be set). After loading the checkpoint at boot, call mark(total, now) so the unchanged
    registers are not rewritten. maybe_save() after every batch, flush() where the registers must be on flash
    (a stored profile row, a billing snapshot, the end of a run): the meter's whole checkpoint policy."""

    def __init__(self, store, quantum_uwh=10000000, max_interval_s=900):
        self.store = store
        self.quantum_uwh = quantum_uwh
        self.max_interval_s = max_interval_s
        self.last_uwh = None
        self.last_s = None

    def due(self, total_uwh, now_s):
        if self.last_uwh is None:
            return True
        metered = total_uwh - self.last_uwh
        if metered == 0:
            return False
        if metered >= self.quantum_uwh or metered < 0:
            return True
        elapsed = now_s - self.last_s
        # A clock that went backwards cannot prove the interval has not passed: checkpoint and restart it.
        return elapsed >= self.max_interval_s or elapsed < 0

    def mark(self, total_uwh, now_s):
        self.last_uwh = total_uwh
        self.last_s = now_s

    def maybe_save(self, total_uwh, now_s, make_payload):
        """Save make_payload() if a checkpoint is due; True if one was written."""
        if not self.due(total_uwh, now_s):
            return False
        self.store.save(make_payload())
        self.mark(total_uwh, now_s)
        return True

    def flush(self, total_uwh, now_s, make_payload):
        """Save now if anything was metered since the last checkpoint (orderly shutdown, reboot command)."""
        if self.last_uwh is not None and total_uwh == self.last_uwh:
            return False
        self.store.save(make_payload())
        self.mark(total_uwh, now_s)
        return True
