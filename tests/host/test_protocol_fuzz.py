"""Fuzzing the host decoder: more than 10,000 random and mutated frames through verify_and_decode.

Properties:
- nothing but a ProtocolError subclass ever escapes, whatever the bytes;
- a frame whose bytes were changed after signing is never accepted (unless the change produced another
  genuine frame byte for byte);
- frames re-signed after their payload was mutated (valid signatures over arbitrary, often sloppy CBOR) are
  accepted only if the firmware's strict deterministic decoder (meter.cbor.decode) accepts the payload too and
  re-encodes it to the same bytes; whatever meter.cbor refuses, the host refuses.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter import cbor, cose
from meterkit import wire as P
from meterkit.bench.protocol import hello_payload, intervals_payload, reading_payload

D = bytes.fromhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
KEY = ec.derive_private_key(int.from_bytes(D, "big"), ec.SECP256R1())
DEV = bytes.fromhex("4d4b000000000001")
DEV2 = bytes.fromhex("4d4b000000000002")
KEY2 = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
LOOKUP = {DEV: KEY.public_key(), DEV2: KEY2.public_key()}.get
T0 = 1_700_000_000

REASONS = {c.reason for c in vars(P).values() if isinstance(c, type) and issubclass(c, P.ProtocolError)}
ENCODING_REASONS = {"not-canonical", "malformed", "truncated"}


def payloads() -> list[dict]:
    out = [hello_payload(1), reading_payload(2), intervals_payload(3, 1), intervals_payload(4, 4)]
    out.append({1: 4, 2: DEV, 3: 5, 4: T0, 5: 0, 6: 9, 7: 2, 8: "relay opened", 9: T0 - 1})
    out.append({1: 4, 2: DEV, 3: 6, 4: T0, 5: 2, 6: 10, 7: 3, 8: -12, 9: 99})
    out.append({1: 5, 2: DEV, 3: 7, 4: T0, 5: 0, 6: T0, 7: {10800: 5, 20800: 6},
                8: {10600: [1500, T0 - 60]}})
    out.append({1: 6, 2: DEV, 3: 8, 4: T0, 5: 0, 6: 41, 7: -3, 8: "locked"})
    out.append({1: 6, 2: DEV, 3: 9, 4: T0, 5: 0, 6: 42, 7: 0})
    return out


PAYLOADS = payloads()
# the firmware's own signer for the originals; P.sign1 (OpenSSL) gives identical bytes and is used for speed
ORIGINALS = [cose.sign1(D, DEV, cbor.encode(p)) for p in PAYLOADS]
ORIGINAL_SET = set(ORIGINALS)


def test_originals_verify():
    for p, f in zip(PAYLOADS, ORIGINALS, strict=True):
        assert P.sign1(KEY, DEV, cbor.encode(p)) == f
        m = P.verify_and_decode(f, LOOKUP)
        assert (m.kind, m.seq) == (p[1], p[3])


def run(data: bytes) -> str | None:
    """verify_and_decode; None if accepted, else the reason (any other exception fails the test)."""
    try:
        P.verify_and_decode(data, LOOKUP)
    except P.ProtocolError as e:
        assert e.reason in REASONS, e.reason
        assert str(e), "every refusal says why"
        return e.reason
    return None


def mutate_bytes(rng: random.Random, f: bytes) -> bytes:
    b = bytearray(f)
    op = rng.randrange(12)
    n = len(b)
    if n == 0:
        return rng.randbytes(rng.randint(1, 4))
    if op == 0:  # one to three bit flips
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == 1:  # a random byte
        b[rng.randrange(n)] = rng.randrange(256)
    elif op == 2:  # insert
        b.insert(rng.randrange(n + 1), rng.randrange(256))
    elif op == 3:  # delete
        del b[rng.randrange(n)]
    elif op == 4:  # truncate
        del b[rng.randrange(n):]
    elif op == 5:  # junk appended
        b.extend(rng.randbytes(rng.randint(1, 20)))
    elif op == 6:  # a slice duplicated
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 40))
        b[i:i] = b[i:j]
    elif op == 7:  # splice with another frame
        g = rng.choice(ORIGINALS)
        b = b[:rng.randrange(n)] + g[rng.randrange(len(g)):]
    elif op == 8:  # another device's kid
        b[9:17] = DEV2
    elif op == 9:  # another frame's signature
        b[-64:] = rng.choice(ORIGINALS)[-64:]
    elif op == 10:  # the header bytes around the payload
        i = rng.randrange(min(n, 20))
        b[i] = rng.randrange(256)
    else:  # a run of bytes overwritten
        i = rng.randrange(n)
        for k in range(i, min(n, i + rng.randint(2, 16))):
            b[k] = rng.randrange(256)
    return bytes(b)


# --- a sloppy CBOR encoder: valid CBOR that is often not deterministic --------------------------------------


def _head(rng: random.Random, major: int, n: int, sloppy: float) -> bytes:
    widths = [w for w, lim in ((0, 24), (1, 1 << 8), (2, 1 << 16), (4, 1 << 32), (8, 1 << 64)) if n < lim]
    w = widths[0] if rng.random() >= sloppy else rng.choice(widths)
    if w == 0:
        return bytes([major << 5 | n])
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[w]]) + n.to_bytes(w, "big")


def sloppy(rng: random.Random, v, s: float) -> bytes:
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if v is None:
        return b"\xf6"
    if isinstance(v, float):
        return b"\xfb" + __import__("struct").pack(">d", v)
    if isinstance(v, int):
        if not -(1 << 64) <= v < 1 << 64:  # only a bignum tag can carry it
            m = v if v >= 0 else -1 - v
            raw = m.to_bytes((m.bit_length() + 7) // 8, "big")
            return (b"\xc2" if v >= 0 else b"\xc3") + _head(rng, 2, len(raw), 0) + raw
        if rng.random() < s / 4 and 0 <= v < 1 << 64:
            raw = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
            return b"\xc2" + _head(rng, 2, len(raw), 0) + raw  # bignum
        return _head(rng, 0, v, s) if v >= 0 else _head(rng, 1, -1 - v, s)
    if isinstance(v, bytes):
        return _head(rng, 2, len(v), s) + v
    if isinstance(v, str):
        b = v.encode()
        return _head(rng, 3, len(b), s) + b
    if isinstance(v, list):
        items = b"".join(sloppy(rng, x, s) for x in v)
        if rng.random() < s / 3:
            return b"\x9f" + items + b"\xff"
        return _head(rng, 4, len(v), s) + items
    if isinstance(v, dict):
        entries = list(v.items())
        if rng.random() < s / 3:
            rng.shuffle(entries)
        if entries and rng.random() < s / 5:
            entries.append(entries[0])  # a duplicate key
        items = b"".join(sloppy(rng, k, s) + sloppy(rng, x, s) for k, x in entries)
        if rng.random() < s / 3:
            return b"\xbf" + items + b"\xff"
        return _head(rng, 5, len(entries), s) + items
    raise TypeError(type(v))


def random_value(rng: random.Random, depth: int = 0):
    r = rng.randrange(13 if depth < 3 else 9)
    return [
        lambda: rng.randrange(24),
        lambda: rng.randrange(1 << 32),
        lambda: rng.randrange(1 << 64),
        lambda: -rng.randrange(1, 1 << 63),
        lambda: rng.choice([1 << 64, -(1 << 64) - 1, 1 << 70]),
        lambda: rng.randbytes(rng.choice([0, 7, 8, 9])),
        lambda: rng.choice(["", "x", "\u00fc\u6c34", "relay opened"]),
        lambda: rng.choice([True, False, None, 0.5]),
        lambda: DEV,
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rng.choice([rng.randrange(20), 10800, 20800, -1, "k"]): random_value(rng, depth + 1)
                 for _ in range(rng.randrange(4))},
        lambda: [rng.randrange(1 << 32) for _ in range(4)],
        lambda: {10800: rng.randrange(1 << 40), 20800: rng.randrange(100)},
    ][r]()


def mutate_payload(rng: random.Random, p: dict) -> dict:
    p = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in p.items()}
    for _ in range(rng.randint(0, 2)):
        op = rng.randrange(6)
        keys = list(p)
        if op == 0 and keys:
            p[rng.choice(keys)] = random_value(rng)
        elif op == 1 and keys:
            del p[rng.choice(keys)]
        elif op == 2:
            p[rng.randrange(14)] = random_value(rng)
        elif op == 3:
            p[1] = rng.choice([1, 2, 3, 4, 5, 6, 7, 16, 17, 255])
        elif op == 4 and isinstance(p.get(6), dict) and p[6]:
            regs = p[6]
            regs[rng.choice(list(regs))] = random_value(rng)
        elif op == 5:
            p[2] = rng.choice([DEV, DEV2, DEV[:7], b"", "dev"])
    return dict(sorted(p.items(), key=lambda kv: (type(kv[0]) is not int, str(kv[0]))))


def _has_tag(v) -> bool:
    if isinstance(v, cbor.Tag):
        return True
    if isinstance(v, list):
        return any(_has_tag(x) for x in v)
    if isinstance(v, dict):
        return any(_has_tag(k) or _has_tag(x) for k, x in v.items())
    return False


def check_resigned(payload: bytes, kid: bytes = DEV) -> str | None:
    """A validly signed frame over `payload`: the host agrees with the firmware's strict decoder."""
    try:
        strict = cbor.decode(payload)
        # meter.cbor keeps tags as opaque Tag objects (bignums included); the protocol has no tags at all, and
        # cbor2 turns a bignum into an int whose deterministic encoding is not a tag: refused either way
        strict_ok = cbor.encode(strict) == payload and not _has_tag(strict)
    except cbor.DecodeError:
        strict, strict_ok = None, False
    key = KEY if kid == DEV else KEY2
    frame = P.sign1(key, kid, payload)
    try:
        m = P.verify_and_decode(frame, LOOKUP)
    except P.ProtocolError as e:
        assert e.reason in REASONS
        if strict_ok:
            assert e.reason not in ENCODING_REASONS, (e, payload.hex())
        return e.reason
    assert strict_ok, f"host accepted a payload the strict decoder refuses: {payload.hex()}"
    assert isinstance(strict, dict)
    rebuilt = {1: m.kind, 2: m.device_id, 3: m.seq, 4: m.time, 5: m.status, **m.body}
    assert rebuilt == strict
    assert m.device_id == kid and m.raw == frame
    return None


def test_fuzz_ten_thousand_frames():
    rng = random.Random(20261121)
    counts: dict[str, int] = {}
    accepted_mutants = 0
    total = 0

    def count(reason):
        counts[reason or "accepted"] = counts.get(reason or "accepted", 0) + 1

    # 1) random bytes, and random bytes behind a plausible COSE_Sign1 head
    for _ in range(1500):
        junk = rng.randbytes(rng.choice([0, 1, 2, 5, 40, 200, 1100]))
        count(run(junk))
        count(run(bytes.fromhex("d28443a10126a10448") + DEV + junk))
        total += 2
    # 2) byte-level mutations of signed frames: never accepted
    for _ in range(6000):
        f = rng.choice(ORIGINALS)
        g = f
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            g = mutate_bytes(rng, g)
        reason = run(g)
        if reason is None and g not in ORIGINAL_SET:
            accepted_mutants += 1
        count(reason)
        total += 1
    assert accepted_mutants == 0
    # 3) payload mutations, sloppily encoded and validly re-signed: host == strict firmware decoder
    for i in range(1500):
        p = mutate_payload(rng, rng.choice(PAYLOADS))
        try:
            body = sloppy(rng, p, rng.choice([0.0, 0.0, 0.1, 0.5]))
        except TypeError:
            continue
        count(check_resigned(body, DEV2 if i % 50 == 0 else DEV))
        total += 1
    assert total >= 10_000, total
    print(total, sorted(counts.items()))
    # the corpus reaches every layer: envelope, signature, schema and encoding checks, and acceptance
    for reason in ("truncated", "malformed", "bad-signature", "unknown-kid", "not-canonical", "wrong-type",
                   "missing-key", "unknown-key", "out-of-range", "unknown-kind", "wrong-kind", "kid-mismatch",
                   "accepted", "oversized"):
        assert counts.get(reason, 0) > 0, (reason, counts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1100))
def test_hypothesis_any_bytes(data):
    reason = run(data)
    assert reason is not None or data in ORIGINAL_SET


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ORIGINALS), st.integers(0, 2000), st.binary(min_size=1, max_size=8))
def test_hypothesis_overwrite_never_accepted(frame, pos, patch):
    pos %= len(frame)
    g = frame[:pos] + patch + frame[pos + len(patch):]
    reason = run(g)
    assert reason is not None or g in ORIGINAL_SET


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.binary(max_size=12) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.integers(0, 30) | st.text(max_size=2), children, max_size=4),
    max_leaves=12))
def test_hypothesis_resigned_values(value):
    body = cbor.encode(value) if _encodable(value) else None
    if body is None:
        return
    check_resigned(body)


def _encodable(v) -> bool:
    try:
        cbor.encode(v)
    except cbor.EncodeError:
        return False
    return True


@pytest.mark.parametrize("p", PAYLOADS, ids=lambda p: P.KIND_NAMES[p[1]])
def test_every_single_byte_change_of_a_frame_is_refused(p):
    f = P.sign1(KEY, DEV, cbor.encode(p))
    for i in range(len(f)):
        g = bytearray(f)
        g[i] ^= 0xFF
        assert run(bytes(g)) is not None, i
