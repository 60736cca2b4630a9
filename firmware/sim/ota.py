# The Unix port's OTA partitions and bootloader (docs/firmware-updates.md): what esp32.Partition and ESP-IDF's
# bootloader (with app rollback) are on a board, made of files in the meter's flash directory.
#
#   ota_0.bin, ota_1.bin   two app partitions of PART_SIZE bytes, written in FW_BLOCK blocks (erase, write)
#   otadata.json           the bootloader's choice: {"boot": name, "state": {name: new|pending|valid|aborted}}
#                          (replaced by a rename: a power cut leaves the old choice or the new one)
#
# At every boot the bootloader (boot()) runs what otadata says, as ESP-IDF does with rollback enabled: a "new"
# image is booted as "pending"; one still "pending" at the next boot never confirmed itself (mark_valid) and is
# "aborted" after TRIAL_BOOTS failed first boots: the other partition runs again. ota_0 with nothing written
# is the image flashed at the factory (the ROM: build/mpy-*). An image is an archive of files (MKIM, meter.archive);
# the bootloader checks it, unpacks it ahead of the ROM on sys.path (as a board's /app slot stands ahead of its
# frozen modules) and imports its `fwimage` module, the image's own code at boot: a broken image fails there.
import json
import os
import sys

from meter import archive
from meter.messages import FW_BLOCK, FW_IMAGE

PART_SIZE = 16 * FW_BLOCK  # 64 KB per partition: the tests' images are small
NAMES = ("ota_0", "ota_1")
TRIAL_BOOTS = 1  # failed first boots before the rollback (ESP-IDF: one)
COPY_BUF = 512  # bytes the bootloader copies at a time when it unpacks an image


_ERASED = b"\xff" * 256  # what erased flash reads; written a piece at a time, never a whole block in RAM


def _fill(f, n):
    """n bytes of 0xFF at f's position."""
    while n > 0:
        k = min(n, len(_ERASED))
        f.write(_ERASED if k == len(_ERASED) else _ERASED[:k])
        n -= k


class PowerCut(Exception):
    """A simulated power cut at a partition write (tests): the process ends as the board would stop."""


class SimPartition:
    cut_after = None  # tests: the number of erase/write operations left before a PowerCut (None: never)

    def __init__(self, flash_dir, name):
        self.name = name
        self.size = PART_SIZE
        self.path = flash_dir.rstrip("/") + "/" + name + ".bin"

    def _open(self):
        try:
            return open(self.path, "r+b")
        except OSError:
            f = open(self.path, "w+b")
            _fill(f, FW_BLOCK)  # erased flash reads 0xFF
            return f

    @staticmethod
    def cut():
        """True when the power goes at this operation (SimPartition.cut_after counts the ones that complete)."""
        c = SimPartition.cut_after
        if c is None:
            return False
        if c <= 0:
            return True
        SimPartition.cut_after = c - 1
        return False

    def erase(self, block):
        torn = self.cut()  # torn: half the block erased
        self._put(block * FW_BLOCK, None, FW_BLOCK // 2 if torn else FW_BLOCK)
        if torn:
            raise PowerCut("power cut erasing block %d of %s" % (block, self.name))

    def write(self, block, offset, data):
        if self.cut():  # torn: half the bytes written
            self._put(block * FW_BLOCK + offset, data[:len(data) // 2])
            raise PowerCut("power cut writing block %d of %s" % (block, self.name))
        self._put(block * FW_BLOCK + offset, data)

    def _put(self, pos, data, erase=0):
        """Write data at pos, or with data None, `erase` bytes of 0xFF."""
        f = self._open()
        try:
            f.seek(0, 2)
            end = f.tell()
            if end < pos:
                _fill(f, pos - end)
            f.seek(pos)
            if data is None:
                _fill(f, erase)
            else:
                f.write(data)
        finally:
            f.close()

    def read(self, block, offset, buf):
        pos = block * FW_BLOCK + offset
        n = len(buf)
        try:
            with open(self.path, "rb") as f:
                f.seek(pos)
                got = f.read(n)
        except OSError:
            got = b""
        buf[:len(got)] = got
        for i in range(len(got), n):
            buf[i] = 0xFF


def _otadata_path(flash_dir):
    return flash_dir.rstrip("/") + "/otadata.json"


def load_otadata(flash_dir):
    try:
        with open(_otadata_path(flash_dir)) as f:
            d = json.load(f)
        if d.get("boot") in NAMES and isinstance(d.get("state"), dict):
            return d
    except (OSError, ValueError):
        pass
    return {"boot": "ota_0", "state": {"ota_0": "valid"}, "tries": 0}


def save_otadata(flash_dir, d):
    p = _otadata_path(flash_dir)
    with open(p + ".new", "w") as f:
        json.dump(d, f)
    os.rename(p + ".new", p)


def other(name):
    return NAMES[1 - NAMES.index(name)]


class SimOta:
    """hw.ota on the Unix port (meter.fwupdate's interface); running: the partition the bootloader booted."""

    format = FW_IMAGE  # the payload format it takes: a partition image

    def __init__(self, flash_dir, running):
        self.flash_dir = flash_dir
        self._running = running

    def running(self):
        return self._running

    def partition(self, name):
        return SimPartition(self.flash_dir, name) if name in NAMES else None

    def next_update(self):
        return self.partition(other(self._running))

    def set_boot(self, part):
        d = load_otadata(self.flash_dir)
        d["boot"] = part.name
        d["state"][part.name] = "new"
        d["tries"] = 0
        save_otadata(self.flash_dir, d)
        if SimPartition.cut():  # the power goes right after the bootloader's choice changed
            raise PowerCut("power cut after set_boot")

    def mark_valid(self):
        d = load_otadata(self.flash_dir)
        if d["state"].get(self._running) == "pending":
            d["state"][self._running] = "valid"
            save_otadata(self.flash_dir, d)
        if SimPartition.cut():
            raise PowerCut("power cut after mark_valid")


# -- the bootloader ----------------------------------------------------------------------------------------
running = None  # the partition boot() chose in this process
trial = False  # ... and whether it runs on trial (not yet confirmed)


def choose(flash_dir):
    """The bootloader's choice at this boot: (partition name, on trial); otadata updated as ESP-IDF's is."""
    d = load_otadata(flash_dir)
    name = d["boot"]
    state = d["state"].get(name, "valid")
    if state == "pending":
        d["tries"] = d.get("tries", 0) + 1
        if d["tries"] >= TRIAL_BOOTS:
            d["state"][name] = "aborted"
            print("@@ROLLBACK %s: its first boot never confirmed it" % name)
            name = d["boot"] = other(name)
        save_otadata(flash_dir, d)
    elif state == "new":
        d["state"][name] = "pending"
        d["tries"] = 0
        save_otadata(flash_dir, d)
    elif state == "aborted":
        name = d["boot"] = other(name)
        save_otadata(flash_dir, d)
    return name, d["state"].get(name) == "pending"


def entries(part):
    """The files of the MKIM archive at the start of a partition, where they lie, and the archive's length:
    ([(name, offset, size)], n); ValueError if none is there or it is damaged. Only the headers are read
    (meter.archive reads them)."""
    def read(pos, buf):
        if pos + len(buf) > part.size:
            raise ValueError("a damaged image in %s" % part.name)
        _read(part, pos, buf)

    try:
        items, end = archive.entries(read, archive.PLAIN)
    except ValueError as e:
        raise ValueError("no image in %s: %s" % (part.name, e))
    if any("/" in e.name for e in items):
        raise ValueError("a damaged image in %s" % part.name)
    return [(e.name, e.pos, e.size) for e in items], end


def _read(part, pos, buf):
    mv = memoryview(buf)
    done = 0
    while done < len(buf):
        at = pos + done
        n = min(len(buf) - done, FW_BLOCK - at % FW_BLOCK)
        part.read(at // FW_BLOCK, at % FW_BLOCK, mv[done:done + n])
        done += n


def _written(flash_dir, name):
    """Partition `name`, or None for ota_0 never written (the factory image runs); ValueError for another empty
    one."""
    part = SimPartition(flash_dir, name)
    try:
        os.stat(part.path)
    except OSError:
        if name == "ota_0":
            return None
        raise ValueError("partition %s is empty" % name)
    return part


def image_bytes(flash_dir, name):
    """The archive in partition `name` (None: ota_0 never written, the factory image); ValueError if damaged."""
    part = _written(flash_dir, name)
    if part is None:
        return None
    n = entries(part)[1]
    buf = bytearray(n)
    _read(part, 0, buf)
    return bytes(buf)


def mount(flash_dir, name):
    """Unpack the image of partition `name` ahead of the ROM and run its fwimage module; nothing for the factory
    image (ota_0 never written)."""
    part = _written(flash_dir, name)
    if part is None:
        return None
    files = entries(part)[0]
    d = flash_dir.rstrip("/") + "/boot-" + name
    try:
        os.mkdir(d)
    except OSError:
        for e in os.listdir(d):  # what an earlier image in this partition left
            os.remove(d + "/" + e)
    buf = bytearray(COPY_BUF)  # copied a piece at a time: a board's bootloader needs none of the meter's heap
    mv = memoryview(buf)
    for fname, pos, size in files:
        with open(d + "/" + fname, "wb") as f:
            done = 0
            while done < size:
                n = min(COPY_BUF, size - done)
                _read(part, pos + done, mv[:n])
                f.write(mv[:n])
                done += n
    sys.path.insert(0, d)
    import fwimage  # noqa: F401 - the image's code at boot

    return getattr(fwimage, "VERSION", None)


def boot(flash_dir):
    """Choose, mount and start the image: (partition, on trial). An image that fails here ends the process as a
    board reset (exit 3): the next boot rolls it back."""
    global running, trial
    running, trial = choose(flash_dir)
    try:
        version = mount(flash_dir, running)
    except Exception as e:  # noqa: BLE001 - a broken image: the board resets
        print("@@RESET crash: image %s failed at boot: %r" % (running, e))
        sys.exit(3)
    print("@@BOOT %s%s%s" % (running, " (trial)" if trial else "", " version %s" % version if version else ""))
    return running, trial
