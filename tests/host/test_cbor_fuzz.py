"""Fuzzing the strict CBOR decoder and COSE_Sign1 verification.

Under CPython (the pure firmware modules imported from firmware/): hypothesis-generated values and byte
strings, plus seeded mutations (bit flips, truncations, insertions, deletions, overwrites, duplications) of
real signed frames, at least 10,000 inputs in all. Then a smaller batch of the same kind inside the real
MicroPython Unix port. Properties:

- the decoder either returns a value or raises cbor.DecodeError, nothing else, and whatever it accepts is
  the unique deterministic encoding of that value (encode(decode(b)) == b);
- verify1 either returns or raises a cose.COSEError, and never accepts a frame that differs from the one
  that was signed.
"""

from __future__ import annotations

import json
import random
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter import cbor, cose, p256
from meter.cbor import Tag
from meterkit.device.toolchain import run_micropython

KIDS = [bytes.fromhex("4d4b000000000001"), b"headend1"]
KEYS_D = [bytes(range(1, 33)), bytes(range(7, 39))]
PUBS = {kid: p256.public_key(d) for kid, d in zip(KIDS, KEYS_D, strict=True)}

U64 = 2**64
ints = st.integers(-U64, U64 - 1)
leaves = st.one_of(ints, st.binary(max_size=40), st.text(max_size=16), st.booleans(), st.none())
keys = st.one_of(ints, st.text(max_size=8), st.binary(max_size=8))
# tag numbers that cbor2 does not interpret (it would turn 0/1/2/3... into datetimes, bignums, ...)
tag_numbers = st.sampled_from([18, 61, 98, 1000, 2**20, 2**40, U64 - 1])
values = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.dictionaries(keys, kids, max_size=6),
        st.builds(Tag, tag_numbers, kids),
    ),
    max_leaves=24,
)

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_reject(data: bytes):
    """decode() must return or raise DecodeError; an accepted input must be the deterministic encoding."""
    try:
        value = cbor.decode(data)
    except cbor.DecodeError:
        return False
    assert cbor.encode(value) == data, data.hex()
    return True


@settings(FUZZ, max_examples=1000)
@given(values)
def test_roundtrip_random_values(value):
    enc = cbor.encode(value)
    assert cbor.decode(enc) == value
    assert cbor.encode(cbor.decode(enc)) == enc


@settings(FUZZ, max_examples=3000)
@given(st.binary(max_size=48))
def test_random_bytes_never_crash(data):
    _decode_or_reject(data)


EDITS = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**16), st.binary(min_size=1, max_size=4)),
                 min_size=1, max_size=3)


@settings(FUZZ, max_examples=1500)
@given(values, EDITS)
def test_mutated_encodings_never_crash(value, edits):
    data = bytearray(cbor.encode(value))
    for op, where, blob in edits:
        i = where % (len(data) + 1)
        if op == 0 and data:
            data[i % len(data)] ^= 1 << (blob[0] & 7)
        elif op == 1:
            del data[i:]
        elif op == 2:
            data[i:i] = blob
        elif op == 3 and data:
            del data[i % len(data):i % len(data) + len(blob)]
        elif op == 4 and data:
            data[i % len(data)] = blob[0]
        else:
            data[i:i] = data[i:i + len(blob)]
    _decode_or_reject(bytes(data))


def _frames() -> list[bytes]:
    payloads = [b"", cbor.encode({0: KIDS[0], 1: 1, 2: 7, 3: 1700000000, 4: 0}),
                cbor.encode({0: KIDS[0], 1: 2, 2: 8, 3: 1700000900, 4: 3,
                             5: {1: 123456789, 2: 0, 3: [230456, -1500, 345000]}, 6: "ok"})]
    return [cose.sign1(KEYS_D[i % 2], KIDS[i % 2], p) for i, p in enumerate(payloads)]


def _mutate(rnd: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        op = rnd.randrange(7)
        i = rnd.randrange(len(data) + 1)
        if op <= 1 and data:  # bit flips are the most common line error
            data[i % len(data)] ^= 1 << rnd.randrange(8)
        elif op == 2:
            del data[i:]
        elif op == 3:
            data[i:i] = rnd.randbytes(rnd.randrange(1, 9))
        elif op == 4 and data:
            del data[i % len(data):i % len(data) + rnd.randrange(1, 9)]
        elif op == 5 and data:
            data[i % len(data)] = rnd.randrange(256)
        else:
            data[i:i] = data[i:i + rnd.randrange(1, 9)]
    return bytes(data)


def test_mutated_frames_are_rejected():
    rnd = random.Random(9052)
    frames = _frames()
    for f in frames:
        assert cose.verify1(f, PUBS.get)[0] in PUBS
    seen: dict[str, int] = {}
    tried = 0
    for _ in range(6000):
        original = frames[rnd.randrange(len(frames))]
        mutated = _mutate(rnd, original)
        if mutated == original:
            continue
        tried += 1
        _decode_or_reject(mutated)
        try:
            cose.verify1(mutated, PUBS.get)
        except cose.COSEError as e:
            seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1
        else:
            raise AssertionError("mutated frame accepted: " + mutated.hex())
    assert tried > 5900
    # the mutations reach every layer: CBOR, structure and the signature itself
    assert {"Malformed", "BadSignature", "BadStructure"} <= set(seen), seen
    assert seen["BadSignature"] > 1000, seen


FUZZ_SCRIPT = """
import sys
import json
from meter import cbor, cose

H = bytes.fromhex
inp = json.load(open(sys.argv[1]))
frames = [H(f) for f in inp["frames"]]
keys = {H(k): H(v) for k, v in inp["keys"].items()}

state = [inp["seed"]]

def rnd(n):
    # xorshift32: the same small PRNG on every port
    x = state[0]
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    state[0] = x
    return x % n

def randbytes(n):
    return bytes(rnd(256) for _ in range(n))

def mutate(frame):
    data = bytearray(frame)
    for _ in range((1, 1, 1, 2, 3)[rnd(5)]):
        op = rnd(7)
        i = rnd(len(data) + 1)
        if op <= 1 and data:
            data[i % len(data)] ^= 1 << rnd(8)
        elif op == 2:
            data = data[:i]
        elif op == 3:
            data = data[:i] + randbytes(1 + rnd(8)) + data[i:]
        elif op == 4 and data:
            j = i % len(data)
            data = data[:j] + data[j + 1 + rnd(8):]
        elif op == 5 and data:
            data[i % len(data)] = rnd(256)
        else:
            data = data[:i] + data[i:i + 1 + rnd(8)] + data[i:]
    return bytes(data)

out = {"mutated": 0, "random": 0, "accepted": [], "crashes": [], "errors": {}, "decoded_ok": 0}

def record(name):
    out["errors"][name] = out["errors"].get(name, 0) + 1

for n in range(inp["mutations"]):
    original = frames[n % len(frames)]
    m = mutate(original)
    if m == original:
        continue
    out["mutated"] += 1
    try:
        v = cbor.decode(m)
        if cbor.encode(v) != m:
            out["crashes"].append(["noncanonical-accepted", m.hex()])
    except cbor.DecodeError:
        pass
    except Exception as e:
        out["crashes"].append([type(e).__name__, m.hex()])
    try:
        cose.verify1(m, keys.get)
        out["accepted"].append(m.hex())
    except cose.COSEError as e:
        record(type(e).__name__)
    except Exception as e:
        out["crashes"].append([type(e).__name__, m.hex()])

for n in range(inp["random"]):
    data = randbytes(rnd(40))
    out["random"] += 1
    try:
        v = cbor.decode(data)
        out["decoded_ok"] += 1
        if cbor.encode(v) != data:
            out["crashes"].append(["noncanonical-accepted", data.hex()])
    except cbor.DecodeError:
        pass
    except Exception as e:
        out["crashes"].append([type(e).__name__, data.hex()])

print(json.dumps(out))
"""


def test_fuzz_inside_micropython(tmp_path):
    script = tmp_path / "fuzz.py"
    script.write_text(textwrap.dedent(FUZZ_SCRIPT))
    data = tmp_path / "fuzz.json"
    data.write_text(json.dumps({
        "frames": [f.hex() for f in _frames()],
        "keys": {k.hex(): v.hex() for k, v in PUBS.items()},
        "seed": 2463534242,
        "mutations": 2000,
        "random": 2000,
    }))
    proc = run_micropython(script, str(data), timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["crashes"] == []
    assert out["accepted"] == []
    assert out["mutated"] > 1900 and out["random"] == 2000
    assert out["errors"].get("BadSignature", 0) > 300, out["errors"]
    assert out["errors"].get("Malformed", 0) > 300, out["errors"]
