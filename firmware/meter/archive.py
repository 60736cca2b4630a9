# The archives of files that firmware updates carry (docs/firmware-updates.md): one reader for both kinds.
#
#   MKIM (PLAIN)   the Unix port's partition images (payload format FW_IMAGE, sim/ota.py mounts them):
#                  magic, u16 count, per file: u8 name length, name, u32 size, the bytes
#   MKIH (HASHED)  the application files of an A/B slot (payload format FW_APP_FILES, meter.appslots unpacks them):
#                  magic, u16 count, per file: u8 name length, name, u8 kind, u32 size, SHA-256 (32 bytes), then
#                  the bytes if kind is DATA; kind SAME carries none: the file is the running slot's file with
#                  this hash (an update built against the firmware the meters run sends only what changed)
#
# Little-endian. A name is a relative path of '/'-separated parts, none empty, '.' or '..'; no name twice.
# The host writes both (meterkit.firmware.image). Pure: runs under CPython too.
import struct

PLAIN = b"MKIM"
HASHED = b"MKIH"
DATA = 0
SAME = 1
NAME_MAX = 255


class Entry:
    """One file of an archive: name, size, digest (SHA-256, HASHED only, else None) and pos, where its bytes
    start in the archive (None: SAME, the running slot's file)."""

    def __init__(self, name, size, digest, pos):
        self.name = name
        self.size = size
        self.digest = digest
        self.pos = pos


def entries(read, kind):
    """The archive of this kind (PLAIN or HASHED) that read(pos, buf) reads (it fills buf from pos or raises
    ValueError): ([Entry], end); ValueError if it is not one or is damaged."""
    head = bytearray(6)
    read(0, head)
    magic = bytes(head[:4])
    if magic != kind:
        raise ValueError("not an archive of %s" % ("files" if kind == PLAIN else "application files (MKIH)"))
    count = struct.unpack_from("<H", head, 4)[0]
    hashed = magic == HASHED
    pos = 6
    out = []
    seen = set()
    one = bytearray(1)
    for _ in range(count):
        read(pos, one)
        raw = bytearray(one[0])
        read(pos + 1, raw)
        pos += 1 + len(raw)
        name = check_name(raw)
        if name in seen:
            raise ValueError("a damaged archive: %s twice" % name)
        seen.add(name)
        fixed = bytearray(37 if hashed else 4)
        read(pos, fixed)
        pos += len(fixed)
        if hashed:
            kind, size = struct.unpack_from("<BI", fixed)
            if kind not in (DATA, SAME):
                raise ValueError("a damaged archive: kind %d for %s" % (kind, name))
            e = Entry(name, size, bytes(fixed[5:]), pos if kind == DATA else None)
        else:
            e = Entry(name, struct.unpack("<I", fixed)[0], None, pos)
        if e.pos is not None:
            pos += e.size
        out.append(e)
    return out, pos


def check_name(raw):
    """A file name of an archive (bytes) as text; ValueError unless it is a plain relative path."""
    try:
        name = bytes(raw).decode()
    except UnicodeError:
        name = ""
    parts = name.split("/")
    if not name or len(raw) > NAME_MAX or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError("a damaged archive: file name %r" % (bytes(raw),))
    return name
