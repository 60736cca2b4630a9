# Framing of meterkit messages on a byte stream (serial or TCP): COBS with a 0x00 delimiter and a CRC-32
# trailer. Pure: the same module runs on the meter (MicroPython) and in the head-end (CPython).
#
#   frame = 0x00 || COBS(cose || CRC-32(cose), little-endian) || 0x00        (docs/protocol.md, "Framing")
#
#   encode_frame(cose) -> bytes             decode_frame(body) -> cose (raises a FrameError subclass)
#   cobs_encode(data) / cobs_decode(body)   cobs_max_len(n)      crc32(data)
#   Deframer(max_frame=1024).feed(chunk) -> [cose, ...]   (counters: frames, noise, noise_segments, ...)
#
# COBS (Cheshire & Baker 1999) rewrites a byte string so that it holds no 0x00: the data is cut at its
# zeros into blocks, each led by a code byte = 1 + the block's length (at most 254 non-zero bytes; code
# 0xFF means 254 bytes with no zero after them). Cost: at least one byte, at most one per 254 bytes.
# Then 0x00 can delimit frames: a receiver that joins mid-stream, or sees log text printed on the same
# serial port, loses only the bytes up to the next 0x00. A frame starts with a delimiter as well as ending
# with one, so text printed before a frame is its own segment (noise) instead of a prefix that spoils the
# frame; the empty segment between two back-to-back frames is ignored.
#
# What a segment between two delimiters is:
#   - empty                       -> ignored (nothing counted)
#   - longer than a frame can be  -> oversized: dropped without being buffered (memory stays bounded)
#   - not valid COBS, shorter than the CRC + 1 byte, or a wrong CRC -> noise (line noise, log text)
#   - otherwise                   -> a frame: the COSE bytes go on to signature verification. A good CRC with
#     a bad signature is a forgery (or a key mix-up), not noise: that is the receiver's job to count.
#
# The CRC is binascii.crc32 (IEEE 802.3 / zlib, the same in MicroPython and CPython), over the COSE bytes,
# stored little-endian as in the checkpoint slots of meter/store.py.

from meter.crc import crc32

MAX_FRAME = 1024  # largest COSE_Sign1 (bytes) a frame may carry (docs/protocol.md)
HOST_MAX_FRAME = 3200  # a head-end message may be larger: a calendar command carries a whole TOU calendar
CRC_LEN = 4
DELIM = b"\x00"


class FrameError(ValueError):
    pass


class BadCOBS(FrameError):
    """Not a valid COBS body: a 0x00 inside it, or a code byte that points past its end."""


class BadCRC(FrameError):
    """The CRC-32 trailer does not match the bytes before it (line noise, not a forgery)."""


class TooShort(FrameError):
    """Empty, or decodes to fewer bytes than the CRC-32 trailer plus one byte of message."""


class TooLong(FrameError):
    """Carries (or would carry) more than max_frame bytes of message."""


def cobs_max_len(n):
    """Longest COBS encoding of n bytes: one code byte per started block of 254, at least one."""
    return n + ((n + 253) // 254 if n else 1)


def cobs_encode(data):
    """COBS encoding of data (bytes-like) as a bytearray with no 0x00 in it."""
    if not isinstance(data, bytes):
        data = bytes(data)  # bytes.find is the fast way to the next zero; memoryview has no find
    n = len(data)
    out = bytearray()
    start = 0
    while True:
        z = data.find(DELIM, start)
        end = n if z < 0 else z
        full = False
        while end - start >= 254:
            out.append(0xFF)
            out.extend(data[start:start + 254])
            start += 254
            full = True
        if z < 0 and full and start == end:
            break  # the data ends with a full block: no zero follows it, and none is implied
        out.append(end - start + 1)
        out.extend(data[start:end])
        if z < 0:
            break
        start = z + 1
    return out


def _cobs_decode(body, n):
    # body: bytes-like without 0x00 (checked by the caller), n = len(body) > 0
    out = bytearray(body)
    return out[:_cobs_unstuff(out, n)]  # MicroPython's bytearray cannot delete a slice


def _cobs_unstuff(buf, n):
    # COBS-decode buf[:n] (a bytearray without 0x00) in place and return the decoded length: a block never
    # decodes to more bytes than it takes, so the output never overtakes the input. The deframer decodes in its
    # own buffer: a 3 KB command costs no growing bytearray (docs/performance.md, "Heap on a board").
    i = 0
    o = 0
    while i < n:
        code = buf[i]
        j = i + code
        if j > n:
            raise BadCOBS("COBS block at %d runs %d bytes past the end" % (i, j - n))
        buf[o:o + code - 1] = buf[i + 1:j]  # a copy of at most 254 bytes, then moved down
        o += code - 1
        i = j
        if code != 0xFF and i < n:
            buf[o] = 0
            o += 1
    return o


def cobs_decode(body):
    """Inverse of cobs_encode (bytearray); BadCOBS if body holds a 0x00 or a block overruns its end.

    Also accepts the variant some encoders emit, a final empty block (0x01) after a full one.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    n = len(body)
    if n == 0:
        raise BadCOBS("empty COBS body")
    if body.find(DELIM) >= 0:
        raise BadCOBS("0x00 inside a COBS body at %d" % body.find(DELIM))
    return _cobs_decode(body, n)


def encode_frame(cose, max_frame=MAX_FRAME):
    """The bytes to send for one message: 0x00, COBS(cose || CRC-32 little-endian), 0x00."""
    n = len(cose)
    if n > max_frame:
        raise TooLong("message is %d bytes, a frame carries at most %d" % (n, max_frame))
    if n == 0:
        raise TooShort("empty message")
    data = bytearray(cose)
    data.extend(crc32(cose).to_bytes(CRC_LEN, "little"))
    out = bytearray(DELIM)
    out.extend(cobs_encode(data))
    out.extend(DELIM)
    return bytes(out)


def _check(data, max_frame):
    # data: the decoded segment (message || CRC); returns the message or raises
    m = len(data) - CRC_LEN
    if m < 1:
        raise TooShort("%d bytes after COBS decoding, need at least %d" % (len(data), CRC_LEN + 1))
    if m > max_frame:
        raise TooLong("message is %d bytes, a frame carries at most %d" % (m, max_frame))
    want = int.from_bytes(bytes(data[m:]), "little")
    got = crc32(memoryview(data)[:m])
    if got != want:
        raise BadCRC("CRC-32 %08x, trailer says %08x" % (got, want))
    return bytes(memoryview(data)[:m])  # one copy: the message alone


def decode_frame(body, max_frame=MAX_FRAME):
    """The message (COSE bytes) carried by one frame.

    body is what lay between two delimiters; delimiters at either end are tolerated, so
    decode_frame(encode_frame(m)) == m. Raises BadCOBS, TooShort, TooLong or BadCRC (all FrameError).
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    a = 0
    b = len(body)
    while a < b and body[a] == 0:
        a += 1
    while b > a and body[b - 1] == 0:
        b -= 1
    if a or b != len(body):
        body = body[a:b]
    n = b - a
    if n == 0:
        raise TooShort("empty frame")
    if n > cobs_max_len(max_frame + CRC_LEN):
        raise TooLong("frame body is %d bytes, at most %d" % (n, cobs_max_len(max_frame + CRC_LEN)))
    if body.find(DELIM) >= 0:
        raise BadCOBS("0x00 inside a frame body at %d" % body.find(DELIM))
    return _check(_cobs_decode(body, n), max_frame)


class Deframer:
    """Cuts a byte stream into frames; feed() returns the messages (COSE bytes) of the frames it completed.

    Memory is one preallocated buffer of max_body = cobs_max_len(max_frame + 4) bytes. A segment that
    outgrows it is dropped on the spot and everything up to the next 0x00 is skipped, so a flood without
    delimiters costs counters, not memory. Counters (never reset by feed):
      frames          messages returned
      noise           bytes of non-empty segments that were not frames (oversized ones included)
      noise_segments  such segments
      oversized       segments longer than max_body (also counted as noise)
      bad_cobs, bad_crc, too_short, too_long   why the other noise segments were refused
    """

    def __init__(self, max_frame=MAX_FRAME):
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        self.max_frame = max_frame
        self.max_body = cobs_max_len(max_frame + CRC_LEN)
        self._buf = bytearray(self.max_body)
        self._n = 0
        self._skipping = False
        self.frames = 0
        self.noise = 0
        self.noise_segments = 0
        self.oversized = 0
        self.bad_cobs = 0
        self.bad_crc = 0
        self.too_short = 0
        self.too_long = 0

    @property
    def pending(self):
        """Bytes buffered of the segment in progress (not yet delimited)."""
        return self._n

    def reset(self):
        """Forget the segment in progress (e.g. after a reconnect); counters stay."""
        self._n = 0
        self._skipping = False

    def feed(self, data):
        """Take the next chunk of the stream; return the list of messages of the frames it completed."""
        if not isinstance(data, bytes):
            data = bytes(data)
        out = []
        n = len(data)
        pos = 0
        mv = memoryview(data)
        while pos < n:
            z = data.find(DELIM, pos)
            end = n if z < 0 else z
            k = end - pos
            if k:
                if self._skipping:
                    self.noise += k
                elif self._n + k > self.max_body:
                    self.noise += self._n + k
                    self.noise_segments += 1
                    self.oversized += 1
                    self._n = 0
                    self._skipping = True
                else:
                    self._buf[self._n:self._n + k] = mv[pos:end]
                    self._n += k
            if z < 0:
                break
            if self._skipping:
                self._skipping = False
            elif self._n:
                self._segment(out)
            pos = z + 1
        return out

    def _segment(self, out):
        n = self._n
        self._n = 0
        try:
            msg = _check(memoryview(self._buf)[:_cobs_unstuff(self._buf, n)], self.max_frame)
        except BadCOBS:
            self.bad_cobs += 1
        except BadCRC:
            self.bad_crc += 1
        except TooShort:
            self.too_short += 1
        except TooLong:
            self.too_long += 1
        else:
            self.frames += 1
            out.append(msg)
            return
        self.noise += n
        self.noise_segments += 1
