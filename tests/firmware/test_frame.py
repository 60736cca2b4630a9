# meter/frame.py on MicroPython: COBS, CRC-32 trailer, frame errors and the stream Deframer.
from mptest import eq, raises

from meter import frame
from meter.frame import BadCOBS, BadCRC, Deframer, FrameError, TooLong, TooShort

H = bytes.fromhex


class Lcg:
    """Deterministic pseudo-random numbers (the same on every port)."""

    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n

    def data(self, n, zero_every=0):
        out = bytearray(n)
        for i in range(n):
            out[i] = 0 if zero_every and self.next(zero_every) == 0 else self.next(256)
        return bytes(out)


def no_zero(b):
    return bytes(b).find(b"\x00") < 0


# Vectors from the COBS paper / the usual reference table (Wikipedia "Consistent Overhead Byte Stuffing").
def _seq(a, b):
    return bytes(range(a, b))


VECTORS = [
    (H("00"), H("0101")),
    (H("0000"), H("010101")),
    (H("001100"), H("01021101")),
    (H("11220033"), H("0311220233")),
    (H("11223344"), H("0511223344")),
    (H("11000000"), H("0211010101")),
    (_seq(1, 255), b"\xff" + _seq(1, 255)),
    (_seq(0, 255), b"\x01\xff" + _seq(1, 255)),
    (_seq(1, 256), b"\xff" + _seq(1, 255) + b"\x02\xff"),
    (_seq(2, 256) + b"\x00", b"\xff" + _seq(2, 256) + b"\x01\x01"),
    (_seq(3, 256) + b"\x00\x01", b"\xfe" + _seq(3, 256) + b"\x02\x01"),
    (b"", b"\x01"),
]


def test_cobs_vectors():
    for data, enc in VECTORS:
        eq(bytes(frame.cobs_encode(data)), enc, "encode %s" % data[:8].hex())
        eq(bytes(frame.cobs_decode(enc)), data, "decode %s" % enc[:8].hex())


def test_cobs_roundtrip_and_overhead():
    r = Lcg(7)
    for n in list(range(0, 40)) + [253, 254, 255, 256, 507, 508, 509, 762, 1028, 1100]:
        for zero_every in (0, 3, 50):
            data = r.data(n, zero_every)
            enc = frame.cobs_encode(data)
            assert no_zero(enc), "0x00 in encoding of %d bytes" % n
            assert len(enc) <= frame.cobs_max_len(n), "overhead %d > %d" % (len(enc), frame.cobs_max_len(n))
            eq(bytes(frame.cobs_decode(enc)), data, "roundtrip n=%d" % n)
    # the bound is reached by data without zeros
    for n in (0, 1, 254, 255, 1028):
        eq(len(frame.cobs_encode(b"\x07" * n)), frame.cobs_max_len(n), "max len %d" % n)


def test_cobs_decode_errors():
    e = raises(BadCOBS, frame.cobs_decode, b"")
    assert "empty" in str(e)
    raises(BadCOBS, frame.cobs_decode, H("0311002233"))  # a zero inside
    raises(BadCOBS, frame.cobs_decode, H("05112233"))  # code points past the end
    raises(BadCOBS, frame.cobs_decode, b"\xff" + b"\x01" * 100)
    # the optional empty final block after a full one decodes to the same data
    eq(bytes(frame.cobs_decode(b"\xff" + _seq(1, 255) + b"\x01")), _seq(1, 255), "trailing 01")
    assert issubclass(BadCOBS, FrameError) and issubclass(FrameError, ValueError), "hierarchy"


def test_crc_check_value():
    eq(frame.crc32(b"123456789"), 0xCBF43926, "CRC-32/IEEE check value")
    eq(frame.crc32(b""), 0, "empty")


def test_encode_frame_layout():
    msg = H("d28443a10126a10448") + b"\x00\x01\x02\x00" * 10
    f = frame.encode_frame(msg)
    eq(f[0], 0, "leading delimiter")
    eq(f[-1], 0, "trailing delimiter")
    assert no_zero(f[1:-1]), "no 0x00 inside"
    data = bytes(frame.cobs_decode(f[1:-1]))
    eq(data[:-4], msg, "message")
    eq(data[-4:], frame.crc32(msg).to_bytes(4, "little"), "CRC-32 trailer, little-endian")
    eq(frame.decode_frame(f), msg, "decode the whole frame")
    eq(frame.decode_frame(f[1:-1]), msg, "decode the body alone")
    eq(frame.decode_frame(bytearray(f)), msg, "bytearray")
    eq(frame.encode_frame(bytearray(msg)), f, "bytearray in")


def test_frame_sizes_at_the_limit():
    r = Lcg(3)
    for n in (1, 250, 251, 1020, 1024):
        msg = r.data(n)
        f = frame.encode_frame(msg)
        assert len(f) <= frame.cobs_max_len(n + 4) + 2, "size %d" % len(f)
        eq(frame.decode_frame(f), msg, "roundtrip %d" % n)
    eq(frame.cobs_max_len(1028), 1033, "1024-byte message: at most 1033 COBS bytes")
    eq(len(frame.encode_frame(b"\x01" * 1024)), 1035, "worst case on the wire")


def test_decode_frame_errors():
    msg = b"a COSE message \x00 with a zero"
    f = frame.encode_frame(msg)
    body = f[1:-1]
    # BadCRC: every single-bit flip of the body that still decodes as COBS is caught by the CRC
    flips = 0
    for i in range(len(body)):
        for bit in range(8):
            b = bytearray(body)
            b[i] ^= 1 << bit
            try:
                frame.decode_frame(b)
            except (BadCRC, BadCOBS, TooShort):
                flips += 1
            else:
                raise AssertionError("flip %d.%d accepted" % (i, bit))
    eq(flips, 8 * len(body), "every flip refused")
    e = raises(BadCRC, frame.decode_frame, body[:-1] + bytes([body[-1] ^ 0x40]))
    assert "CRC" in str(e)
    raises(BadCOBS, frame.decode_frame, body[:5] + b"\x00" + body[5:])
    raises(BadCOBS, frame.decode_frame, b"\x09abc")
    raises(TooShort, frame.decode_frame, b"")
    raises(TooShort, frame.decode_frame, b"\x00\x00")
    raises(TooShort, frame.decode_frame, frame.cobs_encode(b"\x01\x02\x03\x04"))  # only a CRC's worth
    raises(TooLong, frame.encode_frame, b"\x01" * 1025)
    raises(TooShort, frame.encode_frame, b"")
    big = frame.cobs_encode(b"\x01" * 1100)
    e = raises(TooLong, frame.decode_frame, big)
    assert "at most 1033" in str(e), str(e)
    # a body short enough as COBS but decoding to more than max_frame (zeros cost nothing extra)
    data = b"\x00" * 1025
    data += frame.crc32(data).to_bytes(4, "little")
    raises(TooLong, frame.decode_frame, frame.cobs_encode(data))
    eq(frame.decode_frame(frame.encode_frame(b"xy", max_frame=2), max_frame=2), b"xy", "small max_frame")
    raises(TooLong, frame.decode_frame, frame.encode_frame(b"xyz"), 2)


def frames_of(n, seed):
    r = Lcg(seed)
    return [r.data(1 + r.next(300), 5) for _ in range(n)]


def test_deframer_clean_stream():
    msgs = frames_of(20, 11)
    d = Deframer()
    got = d.feed(b"".join(frame.encode_frame(m) for m in msgs))
    eq(got, msgs, "frames")
    eq((d.frames, d.noise, d.noise_segments, d.pending), (20, 0, 0, 0), "counters")


def test_deframer_log_text_between_frames():
    msgs = frames_of(6, 5)
    logs = [b"I (1234) meter: boot\r\n", b"", b"Traceback (most recent call last):\n  File ...\n", b"x",
            b"W: i2c retry 3\n", b"\xff\xfe binary junk \x07"]
    stream = bytearray()
    noise = 0
    for m, log in zip(msgs, logs):
        stream.extend(log)
        noise += len(log)
        stream.extend(frame.encode_frame(m))
    stream.extend(b"tail without newline")
    d = Deframer()
    got = d.feed(stream)
    eq(got, msgs, "every frame survives the log text")
    eq(d.pending, 20, "tail still buffered")
    eq(d.feed(b"\x00"), [], "tail is no frame")
    eq(d.noise, noise + 20, "noise bytes")
    eq(d.noise_segments, 6, "noise segments")
    eq(d.frames, 6, "frames")


def test_deframer_random_chunking():
    msgs = frames_of(15, 23)
    stream = b"junk" + b"".join(frame.encode_frame(m) + b"log line\n" for m in msgs)
    r = Lcg(99)
    for _ in range(20):
        d = Deframer()
        got = []
        pos = 0
        while pos < len(stream):
            k = 1 + r.next(40)
            got.extend(d.feed(stream[pos:pos + k]))
            pos += k
        eq(got, msgs, "chunked")
        eq(d.noise_segments, 15, "junk + 14 log lines (the last is still pending)")


def test_deframer_flood_is_bounded():
    d = Deframer()
    flood = b"\x55" * 997
    for _ in range(100):
        eq(d.feed(flood), [], "nothing from a flood")
        assert d.pending <= d.max_body, "buffer bounded"
    eq(len(d._buf), d.max_body, "one preallocated buffer")
    eq(d.oversized, 1, "one oversized segment")
    eq(d.noise, 99700, "every flood byte counted")
    msg = b"after the flood"
    eq(d.feed(frame.encode_frame(msg)), [msg], "resync on the next delimiter")
    eq(d.noise_segments, 1, "the flood was one segment")


def test_deframer_largest_frame_and_one_more():
    d = Deframer(max_frame=1024)
    eq(d.max_body, 1033, "max body")
    msg = bytes(range(1, 256)) * 4 + b"\x01\x02\x03\x04"
    eq(d.feed(frame.encode_frame(msg)), [msg], "1024-byte message")
    over = bytearray(b"\x00" * 1025)
    over.extend(frame.crc32(over).to_bytes(4, "little"))
    eq(d.feed(b"\x00" + frame.cobs_encode(over) + b"\x00"), [], "1025-byte message (fits the buffer)")
    eq(d.too_long, 1, "counted too long")
    eq(d.feed(b"\x00" + b"\x01" * 1034 + b"\x00"), [], "1034-byte body")
    eq(d.oversized, 1, "counted oversized")


def test_deframer_errors_counted():
    good = b"good"
    f = frame.encode_frame(good)
    bad_crc = bytearray(f)
    bad_crc[3] ^= 0x01
    stream = bytes(bad_crc) + b"\x00\x09ab\x00" + b"\x00\x02\x02\x00" + f
    d = Deframer()
    eq(d.feed(stream), [good], "only the good one")
    eq((d.bad_crc, d.bad_cobs, d.too_short, d.noise_segments), (1, 1, 1, 3), "reasons")
    # a frame cut short by a reset of the sender costs only itself
    eq(d.feed(f[:5] + f), [good], "truncated frame then a whole one")
    eq(d.noise_segments, 4, "the truncated one is noise")
    d.feed(f[:5])
    eq(d.pending, 4, "pending")
    d.reset()
    eq(d.pending, 0, "reset")
    eq(d.feed(f[5:] + f), [good], "rest of a frame after reset is noise, then a good one")


def test_deframer_without_leading_delimiter():
    # a sender that only terminates frames still works on a clean stream
    msgs = frames_of(4, 2)
    stream = b"".join(frame.encode_frame(m)[1:] for m in msgs)
    eq(Deframer().feed(stream), msgs, "trailing delimiters only")
    eq(Deframer().feed(memoryview(stream)), msgs, "memoryview in")
