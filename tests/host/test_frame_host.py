"""meter/frame.py under CPython: the very module the meter runs, checked against an independent reference
(a byte-at-a-time COBS decoder and zlib's CRC-32 written here) with hypothesis."""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter import cose, frame
from meter.frame import BadCOBS, BadCRC, Deframer, TooLong, TooShort


def ref_cobs_decode(body: bytes) -> bytes | None:
    """Reference COBS decoder (byte at a time, straight from the definition); None if invalid."""
    out = bytearray()
    i = 0
    n = len(body)
    if n == 0:
        return None
    while i < n:
        code = body[i]
        if code == 0:
            return None
        i += 1
        for _ in range(code - 1):
            if i >= n or body[i] == 0:
                return None
            out.append(body[i])
            i += 1
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def ref_frames(stream: bytes, max_frame: int = frame.MAX_FRAME) -> list[bytes]:
    """Reference deframer: split on 0x00, decode, check size and zlib CRC-32 (little-endian trailer)."""
    out = []
    limit = frame.cobs_max_len(max_frame + 4)
    segments = stream.split(b"\x00")
    for seg in segments[:-1]:  # the last one has no delimiter yet
        if not seg or len(seg) > limit:
            continue
        data = ref_cobs_decode(seg)
        if data is None or len(data) < 5 or len(data) - 4 > max_frame:
            continue
        if zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little"):
            out.append(data[:-4])
    return out


messages = st.binary(min_size=1, max_size=frame.MAX_FRAME)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_roundtrip(msg):
    f = frame.encode_frame(msg)
    assert f[0] == 0 and f[-1] == 0 and 0 not in f[1:-1]
    assert len(f) <= frame.cobs_max_len(len(msg) + 4) + 2
    assert frame.decode_frame(f) == msg
    assert ref_cobs_decode(f[1:-1]) == msg + zlib.crc32(msg).to_bytes(4, "little")
    assert ref_frames(f) == [msg]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_matches_reference(data):
    enc = bytes(frame.cobs_encode(data))
    assert 0 not in enc
    assert ref_cobs_decode(enc) == data
    assert bytes(frame.cobs_decode(enc)) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_cobs_decode_agrees_with_reference_on_any_body(body):
    want = ref_cobs_decode(body)
    if want is None:
        with pytest.raises(BadCOBS):
            frame.cobs_decode(body)
    else:
        assert bytes(frame.cobs_decode(body)) == want


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), max_size=50))
def test_deframer_any_bytes(stream, cuts):
    """Never crashes, never yields a frame with a bad CRC: exactly the reference's frames."""
    d = Deframer()
    got = []
    pos = 0
    for k in cuts:
        got += d.feed(stream[pos:pos + k])
        pos += k
    got += d.feed(stream[pos:])
    assert got == ref_frames(stream)
    for m in got:
        assert frame.decode_frame(frame.encode_frame(m)) == m
    assert d.pending <= d.max_body
    assert d.frames == len(got)


def stream_with_noise(rng: random.Random, msgs: list[bytes]) -> bytes:
    noise = [b"I (3021) wifi: connected\r\n", b"", b"\x00\x00", b"E: i2c EIO\n", b"\x07\xff\xfe",
             bytes(rng.randrange(1, 256) for _ in range(50)), b">>> ", b"\x01\x02\x03\x04\x05\x06"]
    out = bytearray()
    for m in msgs:
        out += rng.choice(noise)
        out += frame.encode_frame(m)
    out += rng.choice(noise)
    return bytes(out)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.integers(0, 2**32), st.integers(1, 200))
def test_frames_survive_noise_and_any_chunking(msgs, seed, chunk):
    rng = random.Random(seed)
    s = stream_with_noise(rng, msgs)
    d = Deframer()
    got = []
    for i in range(0, len(s), chunk):
        got += d.feed(s[i:i + chunk])
    assert got == msgs
    assert d.frames == len(msgs)


def test_real_cose_frames_with_log_text():
    d = bytes(range(1, 33))
    kid = bytes.fromhex("4d4b000000000001")
    msgs = [cose.sign1(d, kid, bytes([i]) * (i * 40)) for i in range(6)]
    log = b"meter: reading 1.8.0=123 Wh\r\n"
    s = b"".join(log + frame.encode_frame(m) for m in msgs) + log
    dec = Deframer()
    assert dec.feed(s) + dec.feed(b"\x00") == msgs
    assert dec.noise == 7 * len(log) and dec.noise_segments == 7


def test_flood_memory_bounded_and_counted():
    d = Deframer(max_frame=64)
    assert d.max_body == frame.cobs_max_len(68) == 69
    for _ in range(1000):
        assert d.feed(b"A" * 1000) == []
        assert d.pending <= d.max_body
    assert d.oversized == 1 and d.noise == 1_000_000
    assert d.feed(frame.encode_frame(b"ok", max_frame=64)) == [b"ok"]
    with pytest.raises(TooLong):
        frame.encode_frame(b"x" * 65, max_frame=64)
    with pytest.raises(ValueError):
        Deframer(max_frame=0)


def test_decode_frame_errors_are_distinct():
    f = frame.encode_frame(b"payload")
    bad = bytearray(f)
    bad[-2] ^= 0x01
    with pytest.raises(BadCRC):
        frame.decode_frame(bytes(bad))
    with pytest.raises(BadCOBS):
        frame.decode_frame(b"\x05ab")
    with pytest.raises(TooShort):
        frame.decode_frame(frame.cobs_encode(b"abc"))
    with pytest.raises(TooLong):
        frame.decode_frame(b"\x01" * 2000)
    for cls in (BadCRC, BadCOBS, TooShort, TooLong):
        assert issubclass(cls, frame.FrameError) and issubclass(cls, ValueError)


def test_crc_is_zlib():
    rng = random.Random(1)
    for n in (0, 1, 7, 100, 1024):
        data = rng.randbytes(n)
        assert frame.crc32(data) == zlib.crc32(data)
