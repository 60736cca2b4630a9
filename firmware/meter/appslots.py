# Firmware updates for a board that runs stock MicroPython without OTA app partitions (docs/firmware-updates.md):
# meter.fwupdate's hw.ota over the A/B application slots that firmware/main.py runs and `meterkit device deploy`
# fills. Under `root` ("/" on a board):
#
#   app.a/, app.b/   the two slots, each a whole application (meter/*.mpy, board.json, MANIFEST.json)
#   app.slot         the slot to run: "a" or "b" (replaced by a new file renamed over it: a LittleFS rename is
#                    atomic, so a power cut leaves the old choice or the new one)
#   app.next.img     the update's payload (an MKIH archive, meter.archive: payload format FW_APP_FILES), written
#                    as fwupdate writes a partition; named after the slot it is for ("app.b" beside "app.a")
#   app.trial        "<slot> <state>": the slot an update set to boot and its trial: new (set to boot), pending
#                    (its trial boot has begun), aborted (rolled back). Confirmation removes it. firmware/main.py
#                    reads its first letter, the slot on trial, to take this module from the other slot: a slot
#                    on trial never judges itself. Keep that format.
#
# set_boot unpacks the archive into the other slot (files of an older bundle removed; a file the slot holds
# already is kept, a SAME file copied from the running slot; the board's own board.json and calendar.json, when
# the archive has none, carried from the running slot, paths into it moved to the new one), checks every file
# of the slot against the archive's SHA-256, then writes app.trial "<slot> new" and only then switches app.slot.
# boot() (main.py, at every power-up) keeps the trial's books: "new" becomes "pending" as the slot starts on
# trial; a slot still "pending" at the next boot never confirmed itself (mark_valid): app.slot goes back to the
# other slot, then app.trial says "aborted". Until the switch app.slot names the running slot, which nothing
# here touches; from the switch on, app.trial names the new slot as "new" or "pending"; a rollback switches
# before it records: at every instant the board boots a complete slot, and a slot on trial only on trial.
#
# Only os and files: runs under CPython, the Unix port and the 32-bit interpreter. `fs` (tests): the file
# operations, so that a power cut can fall between any two (tests/firmware/cutfs.py).
import hashlib
import os

from meter import archive

SLOTS = ("a", "b")
POINTER = "app.slot"
TRIAL = "app.trial"
STAGE = "app.next.img"
KEEP = ("board.json", "calendar.json")  # the board's own files (deploy's), kept across updates
MARGIN = 16 * 4096  # flash left free for the meter's own stores, and for the file system's own blocks
NO_STATVFS_ROOM = 256 * 1024  # the staging file's bound on a port without os.statvfs (the 32-bit interpreter)
BUF = 512  # bytes read at a time (hashing, copying)


class Files:
    """The file operations of this module, as os and open() do them (tests wrap them to cut the power)."""

    def open(self, path, mode):
        return open(path, mode)

    def rename(self, a, b):
        os.rename(a, b)

    def remove(self, path):
        os.remove(path)

    def mkdir(self, path):
        os.mkdir(path)

    def listdir(self, path):
        return os.listdir(path)

    def stat(self, path):
        return os.stat(path)

    def statvfs(self, path):
        return os.statvfs(path)


FILES = Files()


def _path(root, name):
    return root.rstrip("/") + "/" + name


def other(letter):
    return SLOTS[1 - SLOTS.index(letter)]


def _read_text(fs, path):
    try:
        with fs.open(path, "r") as f:
            return f.read().strip()
    except OSError:
        return ""


def _replace(fs, path, text):
    """path holds text from now on, or (a power cut) what it held before: a new file renamed over it."""
    with fs.open(path + ".new", "w") as f:
        f.write(text)
    fs.rename(path + ".new", path)


def _state(root, fs):
    """(letter named by app.slot or None, (slot on trial, its state) or (None, None))."""
    name = _read_text(fs, _path(root, POINTER))
    t = _read_text(fs, _path(root, TRIAL)).split()
    return (name if name in SLOTS else None), ((t[0], t[1]) if len(t) == 2 and t[0] in SLOTS else (None, None))


def boot(root="/", fs=FILES):
    """At power-up (firmware/main.py), before the application: the trial's books. -> (the slot letter to run, or
    "" without slots; whether it runs on trial)."""
    name, (slot, state) = _state(root, fs)
    if name is None:
        return "", False
    if slot != name or state not in ("new", "pending"):
        return name, False  # no trial (an old record, or one left by a cut before its switch, is no trial)
    if state == "new":
        _replace(fs, _path(root, TRIAL), name + " pending")
        return name, True
    print("meterkit: slot %s never confirmed its trial boot: back to slot %s" % (name, other(name)))
    _roll_back(root, fs, name)
    return other(name), False


def abort(root="/", fs=FILES):
    """The application on trial failed (main.py: an exception out of it): back to the previous slot before the
    board resets -> True; False when no trial runs."""
    name, (slot, state) = _state(root, fs)
    if name is None or slot != name or state != "pending":
        return False
    _roll_back(root, fs, name)
    return True


def _roll_back(root, fs, name):
    _replace(fs, _path(root, POINTER), other(name))  # first: from here on the previous slot boots
    _replace(fs, _path(root, TRIAL), name + " aborted")


def sha256_file(fs, path):
    """SHA-256 of a file, None if there is none."""
    h = hashlib.sha256()
    buf = bytearray(BUF)
    try:
        with fs.open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
    except OSError:
        return None
    return h.digest()


class Staging:
    """The update's payload in one file (app.next.img), as fwupdate writes a partition: erase(0) starts it
    afresh (a file needs no other erase: chunks come in order), write and read at a block and an offset; a read
    past its end gives 0xFF, as erased flash."""

    def __init__(self, slots, name, size):
        self.fs = slots.fs
        self.path = _path(slots.root, STAGE)
        self.block = slots.block
        self.name = name
        self.size = size

    def erase(self, block):
        if block == 0:
            self.fs.open(self.path, "wb").close()

    def write(self, block, offset, data):
        with self.fs.open(self.path, "r+b") as f:
            f.seek(block * self.block + offset)
            f.write(data)

    def read(self, block, offset, buf):
        n = 0
        try:
            with self.fs.open(self.path, "rb") as f:
                f.seek(block * self.block + offset)
                n = f.readinto(buf) or 0
        except OSError:
            pass
        for i in range(n, len(buf)):
            buf[i] = 0xFF


def _reader(f):
    def read(pos, buf):
        f.seek(pos)
        if (f.readinto(buf) or 0) != len(buf):
            raise ValueError("the archive ends early")
    return read


class AppSlots:
    """meter.fwupdate's hw.ota over the A/B slots under root (the running slot: the one app.slot named when
    this was made, at boot)."""

    def __init__(self, root, letter, fs=FILES):
        from meter.messages import FW_APP_FILES, FW_BLOCK

        self.root = root
        self.fs = fs
        self.letter = letter
        self.format = FW_APP_FILES  # the payload format it takes: application files, never a partition image
        self.block = FW_BLOCK

    @classmethod
    def at(cls, root="/", fs=FILES):
        """The slots under root, or None when app.slot names no slot."""
        name = _state(root, fs)[0]
        return None if name is None else cls(root, name, fs)

    def running(self):
        return "app." + self.letter

    def next_update(self):
        return Staging(self, "app." + other(self.letter), self._room())

    def partition(self, name):
        return self.next_update() if name == "app." + other(self.letter) else None

    def mark_valid(self):
        slot, state = _state(self.root, self.fs)[1]
        if slot == self.letter and state in ("new", "pending"):
            self.fs.remove(_path(self.root, TRIAL))  # confirmed: no trial any more
        try:
            self.fs.remove(_path(self.root, STAGE))  # its flash is free again until the next update
        except OSError:
            pass

    def _free(self):
        """Free bytes of the file system, or None on a port without os.statvfs."""
        try:
            st = self.fs.statvfs(self.root)
        except (AttributeError, OSError):
            return None
        return st[0] * st[4]  # f_bsize * f_bavail

    def _size(self, path):
        try:
            return self.fs.stat(path)[6]
        except OSError:
            return 0

    def _room(self):
        """The largest payload the staging file may hold: the free flash (with what it holds now) less MARGIN."""
        free = self._free()
        if free is None:
            return NO_STATVFS_ROOM
        room = free + self._size(_path(self.root, STAGE)) - MARGIN
        return max(0, room // self.block * self.block)

    # -- activation ------------------------------------------------------------------------------------------
    def set_boot(self, part):
        """Unpack the verified payload into the other slot, check every file, record the trial, switch.
        ValueError or OSError (nothing switched, the running slot untouched) says why it cannot."""
        new = other(self.letter)
        if part.name != "app." + new:
            raise ValueError("%s is not the slot beside the running one" % part.name)
        target = _path(self.root, part.name)
        with self.fs.open(part.path, "rb") as f:
            read = _reader(f)
            items = archive.entries(read, archive.HASHED)[0]
            want = self._fill(target, items, read)
        self._verify(target, want)
        _replace(self.fs, _path(self.root, TRIAL), new + " new")  # before the switch: the new slot runs on trial
        _replace(self.fs, _path(self.root, POINTER), new)

    def _fill(self, target, items, read):
        """The slot's files from the archive; -> {name: SHA-256} of every file the slot must now hold."""
        fs = self.fs
        here = _path(self.root, self.running())
        names = set(e.name for e in items)
        kept = self._carried(here, names)
        try:
            fs.mkdir(target)
        except OSError:
            pass
        for rel in self._files(target):
            if rel not in names and rel not in kept:
                fs.remove(target + "/" + rel)  # an older bundle's, or a slot filled part-way before
        self._check_room(target, items)
        want = {}
        for e in items:
            dest = target + "/" + e.name
            want[e.name] = e.digest
            if sha256_file(fs, dest) == e.digest:
                continue  # there already (an earlier bundle, or an activation cut short)
            self._dirs(target, e.name)
            if e.pos is not None:
                self._copy(dest, read, e.pos, e.size)
                continue
            src = here + "/" + e.name
            if sha256_file(fs, src) != e.digest:
                raise ValueError("%s is not the running slot's as the update expects: it is built for other "
                                 "firmware" % e.name)
            with fs.open(src, "rb") as f:
                self._copy(dest, _reader(f), 0, e.size)
        for rel, data in kept.items():
            want[rel] = hashlib.sha256(data).digest()
            if sha256_file(fs, target + "/" + rel) != want[rel]:
                with fs.open(target + "/" + rel, "wb") as f:
                    f.write(data)
        return want

    def _carried(self, here, names):
        """The board's own files of the running slot the archive does not replace: {name: bytes}, paths into
        the running slot (deploy's calendar path in board.json) moved to the other one."""
        out = {}
        old, new = '"/app.%s/' % self.letter, '"/app.%s/' % other(self.letter)
        for rel in KEEP:
            if rel in names:
                continue
            try:
                with self.fs.open(here + "/" + rel, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            out[rel] = data.replace(old.encode(), new.encode()) if rel == "board.json" else data
        return out

    def _check_room(self, target, items):
        free = self._free()
        if free is None:
            return
        blk = self.block
        need = sum((e.size + blk - 1) // blk * blk for e in items)
        have = free + sum(self._size(target + "/" + rel) for rel in self._files(target)) - MARGIN
        if need > have:
            raise OSError("the new slot needs %d bytes of flash, %d are free" % (need, max(0, have)))

    def _verify(self, target, want):
        for rel, digest in want.items():
            if sha256_file(self.fs, target + "/" + rel) != digest:
                raise ValueError("slot file %s does not hold what the archive says: not switched" % rel)

    def _copy(self, dest, read, pos, size):
        buf = bytearray(BUF)
        mv = memoryview(buf)
        with self.fs.open(dest, "wb") as out:
            done = 0
            while done < size:
                n = min(BUF, size - done)
                read(pos + done, mv[:n])
                out.write(mv[:n])
                done += n

    def _dirs(self, target, rel):
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):
            try:
                self.fs.mkdir(target + "/" + "/".join(parts[:i + 1]))
            except OSError:
                pass

    def _files(self, top, prefix=""):
        """Every file under top, as relative names."""
        out = []
        try:
            names = self.fs.listdir(top + "/" + prefix[:-1] if prefix else top)
        except OSError:
            return out
        for n in names:
            rel = prefix + n
            if self.fs.stat(top + "/" + rel)[0] & 0x4000:
                out.extend(self._files(top, rel + "/"))
            else:
                out.append(rel)
        return out
