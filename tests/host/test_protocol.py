"""meterkit.wire.protocol: meter frames signed by the firmware's own code (meter.cbor + meter.cose, run under
CPython) verified and decoded on the host; every rejection with its reason; replay guard; head-end commands
and acknowledgements checked by the firmware's meter.cose.verify1 (CPython, and once in MicroPython)."""

from __future__ import annotations

import hashlib
import json
import textwrap

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor, cose, p256
from meter import messages as M
from meter.cbor import Tag
from meterkit import wire as P
from meterkit.bench.protocol import hello_payload, intervals_payload, reading_payload
from meterkit.device.toolchain import run_micropython

D = bytes.fromhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
DEV = bytes.fromhex("4d4b000000000001")
PUB = P.public_from_bytes(p256.public_key(D))
D2 = bytes.fromhex("0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201001")
DEV2 = bytes.fromhex("4d4b000000000002")
PUB2 = P.public_from_bytes(p256.public_key(D2))
KEYS = {DEV: PUB, DEV2: PUB2}
LOOKUP = KEYS.get
T0 = 1_700_000_000

HOST_D = 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF
HOST_KEY = ec.derive_private_key(HOST_D, ec.SECP256R1())


def sign(payload: dict | bytes, d: bytes = D, kid: bytes = DEV) -> bytes:
    """A meter frame made by the firmware's code: meter.cbor.encode + meter.cose.sign1."""
    body = payload if isinstance(payload, bytes) else cbor.encode(payload)
    return cose.sign1(d, kid, body)


def envelope(protected=cose.PROTECTED_ES256, unprotected=None, payload=b"", signature=b"\x00" * 64, tag=18):
    return cbor.encode(Tag(tag, [protected, {4: DEV} if unprotected is None else unprotected, payload,
                                 signature]))


def common(kind: int, seq: int = 7, t: int = T0, status: int = 0, device: bytes = DEV) -> dict:
    return {1: kind, 2: device, 3: seq, 4: t, 5: status}


def event_payload(value=-42) -> dict:
    p = common(M.EVENT)
    p.update({6: 12, 7: 3, 8: value, 9: T0 - 5})
    return p


def billing_payload(demand: bool = True) -> dict:
    p = common(M.BILLING)
    p.update({6: T0, 7: {10800: 5000, 10801: 3000, 10802: 2000, 20800: 10}})
    if demand:
        p[8] = {10600: [1500, T0 - 3600], 10601: [900, T0 - 7200]}
    return p


def response_payload(reason: str | None = "relay locked") -> dict:
    p = common(M.RESPONSE)
    p.update({6: 41, 7: -3})
    if reason is not None:
        p[8] = reason
    return p


def reason_of(frame: bytes, lookup=LOOKUP) -> str:
    with pytest.raises(P.ProtocolError) as ei:
        P.verify_and_decode(frame, lookup)
    return ei.value.reason


# --- constants ---------------------------------------------------------------------------------------------


def test_obis_keys():
    assert M.obis_key("1.8.0") == 10800
    assert M.obis_key("1.8.1") == 10801
    assert M.obis_key("2.8.0") == 20800
    assert M.obis_key("1.7.0") == 10700 == M.OBIS_POWER
    assert M.obis_key("32.7.0") == 320700 == M.OBIS_VOLTAGE
    assert M.obis_key("31.7.0") == 310700 == M.OBIS_CURRENT
    assert M.obis_key("99.98.1") == 999801
    assert M.obis_key("1-0:1.8.0*255") == 10800
    assert M.obis_key("1-0:2.8.3") == 20803
    for key in (0, 10800, 10899, 999801, 320700, 2559999):
        assert M.obis_key(M.obis_code(key)) == key
    assert M.obis_code(10800) == "1.8.0"
    assert M.obis_code(999801) == "99.98.1"
    for bad in ("1.8", "1.8.0.0", "a.b.c", "1.100.0", "1.8.100", "256.0.0", "", "1.-8.0"):
        with pytest.raises(ValueError):
            M.obis_key(bad)
    for bad in (-1, 2560000, "10800", True):
        with pytest.raises(ValueError):
            M.obis_code(bad)


def test_kinds_and_status_bits():
    assert (M.HELLO, M.READING, M.INTERVALS, M.EVENT, M.BILLING, M.RESPONSE, M.COMMAND, M.ACK) == (
        1, 2, 3, 4, 5, 6, 16, 17)
    assert M.ST_CLOCK_NOT_SET == 2 and M.ST_RESTORED == 256
    assert P.status_names(0) == []
    assert P.status_names(M.ST_RELAY_OPEN | M.ST_POWER_FAIL) == ["relay open", "power failure"]
    assert P.status_names(1 << 12) == ["bit 12"]
    assert P.row_status_names(M.ROW_PARTIAL | M.ROW_DST) == ["DST", "partial"]


def test_error_reasons_are_distinct():
    classes = [c for c in vars(P).values() if isinstance(c, type) and issubclass(c, P.ProtocolError)]
    reasons = [c.reason for c in classes if c is not P.ProtocolError]
    assert len(reasons) == len(set(reasons)) >= 20
    assert all(issubclass(c, ValueError) for c in classes)


# --- valid frames ----------------------------------------------------------------------------------------


def test_every_meter_kind_verifies():
    cases = [
        hello_payload(1),
        reading_payload(2),
        intervals_payload(3, 1),
        intervals_payload(4, 4),
        event_payload(-42),
        event_payload("relay opened"),
        billing_payload(True),
        billing_payload(False),
        response_payload("relay locked"),
        response_payload(None),
    ]
    for payload in cases:
        f = sign(payload)
        m = P.verify_and_decode(f, LOOKUP)
        assert m.kind == payload[1] and m.kind_name == P.KIND_NAMES[payload[1]]
        assert (m.device_id, m.seq, m.time, m.status) == (DEV, payload[3], payload[4], payload[5])
        assert m.body == {k: v for k, v in payload.items() if k > 5}
        assert m.raw == f and m.kid == DEV
        assert m.expires is None
        assert repr(m).startswith(f"Message({m.kind_name}")


def test_reading_fields_and_extremes():
    p = reading_payload(2**64 - 1)
    p[M.K_TIME] = 2**32 - 1
    p[M.K_STATUS] = 0x1FF
    p[M.K_REGISTERS] = {10800: 2**64 - 1, 10801: -(2**64), 20800: 0}
    p[M.K_INSTANT] = [-(2**63), 26000, 2**63]
    p[M.K_UNCOVERED_PPM] = 1_000_000
    m = P.verify_and_decode(sign(p), LOOKUP)
    assert m.seq == 2**64 - 1 and m.time == 2**32 - 1
    assert m.body[6][10801] == -(2**64)
    assert m.body[7] == [-(2**63), 26000, 2**63]
    assert P.status_names(m.status)[-1] == "registers restored"


def test_bytearray_and_memoryview_input():
    f = sign(reading_payload(9))
    assert P.verify_and_decode(bytearray(f), LOOKUP).seq == 9
    assert P.verify_and_decode(memoryview(f), LOOKUP).raw == f
    with pytest.raises(TypeError):
        P.verify_and_decode("not bytes", LOOKUP)  # type: ignore[arg-type]


def test_host_sign1_is_byte_identical_to_firmware_sign1():
    key = ec.derive_private_key(int.from_bytes(D, "big"), ec.SECP256R1())
    for payload in (reading_payload(1), intervals_payload(2, 4), hello_payload(3), b"", b"\x00" * 300):
        body = payload if isinstance(payload, bytes) else cbor.encode(payload)
        assert P.sign1(key, DEV, body) == cose.sign1(D, DEV, body)
    assert P.public_bytes(key.public_key()) == p256.public_key(D)
    with pytest.raises(ValueError):
        P.sign1(key, b"short", b"")
    with pytest.raises(TypeError):
        P.sign1(ec.generate_private_key(ec.SECP384R1()), DEV, b"")  # type: ignore[arg-type]


def test_cbor2_decodes_what_the_meter_encodes():
    # independent decoder agrees with the firmware encoder on every shape used
    for payload in (reading_payload(5), intervals_payload(6, 4), billing_payload(), event_payload("x")):
        body = cbor.encode(payload)
        assert cbor2.loads(body) == payload
        assert cbor2.dumps(payload) == body  # uint keys ascending: cbor2's plain encoding is deterministic


# --- rejections, one reason each --------------------------------------------------------------------------


def test_truncated():
    f = sign(reading_payload(1))
    for n in (1, 2, 10, 30, len(f) - 65, len(f) - 1):
        assert reason_of(f[:n]) == "truncated", n
    assert reason_of(b"") == "truncated"
    with pytest.raises(P.Truncated, match="ends early"):
        P.verify_and_decode(f[:-1], LOOKUP)


def test_bit_flips_are_bad_signatures():
    f = sign(reading_payload(1))
    payload_at = f.index(cbor.encode(reading_payload(1)))
    for pos in (payload_at + 5, payload_at + 40, len(f) - 64, len(f) - 33, len(f) - 1):
        g = bytearray(f)
        g[pos] ^= 0x10
        assert reason_of(bytes(g)) == "bad-signature", pos


def test_wrong_key():
    f = sign(reading_payload(1), d=D2, kid=DEV)  # claims to be DEV, signed with DEV2's key
    with pytest.raises(P.BadSignature, match=DEV.hex()):
        P.verify_and_decode(f, LOOKUP)


def test_wrong_algorithm():
    body = cbor.encode(reading_payload(1))
    for alg in (-35, -8, -257, 1):
        prot = cbor.encode({1: alg})
        f = envelope(protected=prot, payload=body)
        with pytest.raises(P.WrongAlgorithm, match=str(alg)):
            P.verify_and_decode(f, LOOKUP)
    assert reason_of(envelope(protected=b"", payload=body)) == "wrong-alg"  # no alg at all
    assert reason_of(envelope(protected=cbor.encode({1: -7, 4: DEV}), payload=body)) == "bad-envelope"
    assert reason_of(envelope(protected=b"\xa1\x01\x38\x06", payload=body)) == "bad-envelope"  # -7 long form
    assert reason_of(envelope(protected=b"\xff", payload=body)) == "bad-envelope"


def test_unknown_kid():
    f = sign(reading_payload(1, device=b"unknown!"), kid=b"unknown!")
    with pytest.raises(P.UnknownKid, match=b"unknown!".hex()):
        P.verify_and_decode(f, LOOKUP)

    def raising(kid):
        raise KeyError(kid)

    assert reason_of(sign(reading_payload(1)), raising) == "unknown-kid"


def test_lookup_must_return_a_p256_key():
    f = sign(reading_payload(1))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(TypeError, match="P-256"):
        P.verify_and_decode(f, lambda kid: p384)
    with pytest.raises(TypeError, match="P-256"):
        P.verify_and_decode(f, lambda kid: p256.public_key(D))  # raw bytes are not a key object


def test_oversized():
    p = hello_payload(1)
    p[6] = "v" * 1000
    f = sign(p)
    assert len(f) > P.MAX_MESSAGE
    with pytest.raises(P.Oversized, match="at most 1024"):
        P.verify_and_decode(f, LOOKUP)
    p[6] = "v" * (1000 - (len(f) - P.MAX_MESSAGE))
    assert len(sign(p)) == P.MAX_MESSAGE
    assert P.verify_and_decode(sign(p), LOOKUP).body[6] == p[6]


def nest(depth: int) -> object:
    v: object = 0
    for _ in range(depth):
        v = [v]
    return v


def test_deeply_nested():
    assert P.MAX_DEPTH == 8
    assert reason_of(sign(b"\x81" * 600 + b"\x00")) == "too-deep"  # the payload: 600 nested arrays
    with pytest.raises(P.TooDeep, match="deeper than 8"):
        P.verify_and_decode(sign(mutate(event_payload(), k8=nest(12))), LOOKUP)
    # MAX_DEPTH counts containers: the payload map + 8 arrays is 9, one too many; + 7 arrays is fine
    assert reason_of(sign(mutate(event_payload(), k8=nest(8)))) == "too-deep"
    assert reason_of(sign(mutate(event_payload(), k8=nest(7)))) == "wrong-type"
    # nesting in the envelope itself
    assert reason_of(b"\xd2\x84" + b"\x81" * 12 + b"\x00" + b"\xa0\x40\x40") == "too-deep"


def test_non_canonical_payloads():
    base = reading_payload(300)
    body = cbor.encode(base)
    assert P.verify_and_decode(sign(body), LOOKUP).seq == 300
    seq_at = body.index(b"\x03\x19\x01\x2c")  # key 3, seq 300 in two bytes
    variants = {
        "long int head": body[:seq_at + 1] + b"\x1a\x00\x00\x01\x2c" + body[seq_at + 4:],
        "long map head": b"\xb8\x08" + body[1:],
        "unsorted keys": cbor2.dumps({k: base[k] for k in (2, 1, 3, 4, 5, 6, 7, 8)}),
        "unsorted registers": cbor2.dumps({**base, 6: dict(sorted(base[6].items(), reverse=True))}),
        "duplicate key": b"\xa9" + body[1:] + b"\x08\x00",
        "indefinite array": body.replace(b"\x07\x83", b"\x07\x9f", 1).replace(b"\x08\x00", b"\xff\x08\x00"),
        "bignum seq": body[:seq_at + 1] + b"\xc2\x42\x01\x2c" + body[seq_at + 4:],
        "trailing byte": body + b"\x00",
    }
    # (cbor2 itself ignores trailing bytes and accepts all the others: the key-order and re-encoding checks
    # refuse them)
    for name, v in variants.items():
        assert v != body, name
        assert reason_of(sign(v)) == "not-canonical", name


def test_non_canonical_envelope():
    f = sign(reading_payload(1))
    sig_at = len(f) - 66
    assert f[sig_at:sig_at + 2] == b"\x58\x40"
    long_sig = f[:sig_at] + b"\x59\x00\x40" + f[sig_at + 2:]
    with pytest.raises(P.NotCanonical, match="COSE_Sign1"):
        P.verify_and_decode(long_sig, LOOKUP)
    with pytest.raises(P.Malformed, match="after the COSE_Sign1"):
        P.verify_and_decode(f + b"\x00", LOOKUP)
    indefinite = b"\xd2\x9f" + f[2:] + b"\xff"
    assert reason_of(indefinite) == "not-canonical"


def test_not_a_sign1_and_bad_envelopes():
    body = cbor.encode(reading_payload(1))
    assert reason_of(envelope(tag=17, payload=body)) == "not-sign1"
    assert reason_of(cbor.encode([cose.PROTECTED_ES256, {4: DEV}, body, b"\x00" * 64])) == "not-sign1"
    assert reason_of(cbor.encode(Tag(18, [cose.PROTECTED_ES256, {4: DEV}, body]))) == "bad-envelope"
    assert reason_of(cbor.encode(Tag(18, {1: 2}))) == "bad-envelope"
    assert reason_of(envelope(protected=-7, payload=body)) == "bad-envelope"
    assert reason_of(envelope(unprotected={4: DEV, 1: -7}, payload=body)) == "bad-envelope"
    assert reason_of(envelope(unprotected={5: DEV}, payload=body)) == "bad-envelope"
    assert reason_of(envelope(unprotected={4: DEV[:7]}, payload=body)) == "bad-envelope"
    assert reason_of(envelope(unprotected={4: "device01"}, payload=body)) == "bad-envelope"
    assert reason_of(envelope(payload=reading_payload(1))) == "bad-envelope"  # payload not a bstr
    assert reason_of(envelope(payload=None)) == "bad-envelope"  # detached payload
    assert reason_of(envelope(payload=body, signature="sig")) == "bad-envelope"
    f = sign(reading_payload(1))
    short_sig = cbor.encode(Tag(18, [cose.PROTECTED_ES256, {4: DEV}, body, cbor.decode(f).value[3][:63]]))
    with pytest.raises(P.BadSignature, match="63 bytes"):
        P.verify_and_decode(short_sig, LOOKUP)
    assert reason_of(envelope(payload=body, signature=b"\x00" * 64)) == "bad-signature"  # r = s = 0
    assert reason_of(b"\xff\xff") == "malformed"
    head = b"\xd2\x84\x43\xa1\x01\x26\xa1\x04\x48" + DEV
    assert reason_of(head + b"\x62\xc3\x28" + body + b"\x40") == "malformed"  # bad UTF-8 (a text payload)
    assert reason_of(head + b"\x7f\xc3") == "not-canonical"  # an indefinite-length text string


def test_payload_not_cbor_or_not_a_map():
    assert reason_of(sign(b"\xff")) == "malformed"
    assert reason_of(sign(b"\x82\x01")) == "truncated"
    assert reason_of(sign(cbor.encode([1, 2, 3]))) == "wrong-type"
    assert reason_of(sign(b"")) == "truncated"


def mutate(payload: dict, **changes) -> dict:
    p = dict(payload)
    for k, v in changes.items():
        key = int(k[1:])
        if v is _DELETE:
            del p[key]
        else:
            p[key] = v
    return dict(sorted(p.items()))


_DELETE = object()


@pytest.mark.parametrize("payload, reason", [
    # wrong types
    (mutate(reading_payload(1), k3="7"), "wrong-type"),
    (mutate(reading_payload(1), k4=True), "wrong-type"),
    (mutate(reading_payload(1), k5=None), "wrong-type"),
    (mutate(reading_payload(1), k2="4d4b000000000001"), "wrong-type"),
    (mutate(reading_payload(1), k6=[10800, 1]), "wrong-type"),
    (mutate(reading_payload(1), k6={10800: "1", 20800: 2}), "wrong-type"),
    (mutate(reading_payload(1), k6={"1.8.0": 1}), "wrong-type"),
    (mutate(reading_payload(1), k7=[1, 2]), "wrong-type"),
    (mutate(reading_payload(1), k7=[1, -2, 3]), "out-of-range"),
    (mutate(reading_payload(1), k7={0: 1}), "wrong-type"),
    (mutate(intervals_payload(1, 2), k6=[[1, 2, 3]]), "wrong-type"),
    (mutate(intervals_payload(1, 2), k6=[[1, 2, 3, "x"]]), "wrong-type"),
    (mutate(intervals_payload(1, 2), k6=[5]), "wrong-type"),
    (mutate(hello_payload(1), k6=b"0.1.0"), "wrong-type"),
    (mutate(event_payload(), k8=b"bytes"), "wrong-type"),
    (mutate(event_payload(), k8=[1]), "wrong-type"),
    (mutate(billing_payload(), k8={10600: [1, 2, 3]}), "wrong-type"),
    (mutate(billing_payload(), k8={10600: 5}), "wrong-type"),
    (mutate(response_payload(), k7="ok"), "wrong-type"),
    (mutate(response_payload(), k8=3), "wrong-type"),
    (mutate(reading_payload(1), k10=[5]), "wrong-type"),  # demand: [current W, last W]
    (mutate(reading_payload(1), k10=[5, -1]), "out-of-range"),
    (mutate(reading_payload(1), k9="peak"), "wrong-type"),  # the tariff in force
    ({1: "reading"}, "wrong-type"),
    ({"1": 2}, "missing-key"),
    # missing keys
    (mutate(reading_payload(1), k8=_DELETE), "missing-key"),
    (mutate(reading_payload(1), k1=_DELETE), "missing-key"),
    (mutate(reading_payload(1), k6={10800: 1}), "missing-key"),  # no 2.8.0
    (mutate(reading_payload(1), k6={}), "missing-key"),
    (mutate(intervals_payload(1, 2), k6=[]), "missing-key"),
    (mutate(hello_payload(1), k12=_DELETE), "missing-key"),
    (mutate(billing_payload(), k7=_DELETE), "missing-key"),
    # unknown keys
    (mutate(reading_payload(1), k13=0), "unknown-key"),
    # K_CONTROL (key 12): [IC70 state, control mode, limit W], each uint32
    (mutate(reading_payload(1), k12=0), "wrong-type"),
    (mutate(reading_payload(1), k12=[0, 1]), "wrong-type"),
    (mutate(reading_payload(1), k12=[0, 1, -1]), "out-of-range"),
    (mutate(reading_payload(1), k12=[0, 2**32, 0]), "out-of-range"),
    (mutate(reading_payload(1), k0=0), "unknown-key"),
    (mutate(response_payload(), k9="x"), "unknown-key"),
    # out of range
    (mutate(reading_payload(1), k4=2**32), "out-of-range"),
    (mutate(reading_payload(1), k8=1_000_001), "out-of-range"),
    (mutate(reading_payload(1), k3=-1), "out-of-range"),
    (mutate(reading_payload(1), k2=DEV + b"\x00"), "out-of-range"),
    (mutate(reading_payload(1), k6={10800: 1, 20800: 2, 2560000: 3}), "out-of-range"),
    (mutate(hello_payload(1), k10=1_000_001), "out-of-range"),
    (mutate(intervals_payload(1, 2), k6=[[2**32, 1, 2, 0]]), "out-of-range"),
    (mutate(intervals_payload(1, 2), k7=-900), "out-of-range"),
    (mutate(billing_payload(), k8={10600: [1, 2**32]}), "out-of-range"),
    # kinds
    (mutate(reading_payload(1), k1=7), "unknown-kind"),
    (mutate(reading_payload(1), k1=0), "unknown-kind"),
    ({1: 16, 2: DEV, 3: 1, 4: T0, 9: T0 + 60, 10: 1}, "wrong-kind"),
    ({1: 17, 2: DEV, 3: 1, 4: T0, 9: T0 + 60, 12: 5}, "wrong-kind"),
    # the device id inside the payload is the signer's kid
    (mutate(reading_payload(1), k2=DEV2), "kid-mismatch"),
])
def test_payload_rejections(payload, reason):
    body = cbor2.dumps(payload) if any(type(k) is not int for k in payload) else cbor.encode(payload)
    with pytest.raises(P.ProtocolError) as ei:
        P.verify_and_decode(sign(body), LOOKUP)
    assert ei.value.reason == reason, str(ei.value)
    assert str(ei.value)


def test_float_anywhere_is_wrong_type():
    body = cbor2.dumps(mutate(reading_payload(1), k8=0.0))
    with pytest.raises(P.WrongType, match="float"):
        P.verify_and_decode(sign(body), LOOKUP)
    regs = cbor2.dumps(mutate(reading_payload(1), k6={10800: 1.5, 20800: 2}))
    assert reason_of(sign(regs)) == "wrong-type"


def test_kid_mismatch_message():
    f = sign(reading_payload(1, device=DEV2), kid=DEV)
    with pytest.raises(P.KidMismatch, match=f"{DEV2.hex()}.*{DEV.hex()}"):
        P.verify_and_decode(f, LOOKUP)


def test_replay_guard_rule():
    g = P.ReplayGuard(window=8)
    g.admit(DEV, 10)
    with pytest.raises(P.Replay, match="already accepted"):
        g.admit(DEV, 10)
    g.admit(DEV, 12)  # a gap (an unclean restart skips numbers)
    g.admit(DEV, 11)  # late but inside the window: accepted once
    with pytest.raises(P.Replay):
        g.check(DEV, 11)
    assert g.high(DEV) == 12
    g.admit(DEV, 5)  # 12 - 5 = 7 < 8: still inside the window
    with pytest.raises(P.Stale) as ei:
        g.admit(DEV, 4)  # 12 - 4 = 8: outside, too old to tell
    assert ei.value.reason == "stale" and isinstance(ei.value, P.Replay)
    g.admit(DEV2, 10)  # devices are independent
    assert len(g) == 2
    g.admit(DEV, 1000)  # a jump beyond the window forgets the bitmap ...
    assert g.seen(DEV, 12) and g.seen(DEV, 1000) and not g.seen(DEV, 999) and not g.seen(DEV, 1001)
    g.admit(DEV, 999)  # ... and numbers below the new mark are fresh inside the window
    with pytest.raises(P.Replay):
        g.check(DEV, 999)
    assert g.high(b"nobody!!") is None
    g.check(b"nobody!!", 0)
    with pytest.raises(ValueError):
        P.ReplayGuard(window=0)


def test_replay_guard_with_verified_frames():
    g = P.ReplayGuard()
    frames = [sign(reading_payload(s)) for s in (1, 2, 3)]
    for f in frames:
        g.admit(*_dev_seq(P.verify_and_decode(f, LOOKUP)))
    again = P.verify_and_decode(frames[1], LOOKUP)  # a replayed frame verifies: it is authentic ...
    with pytest.raises(P.Replay) as ei:
        g.admit(again.device_id, again.seq)  # ... and is refused by its sequence number
    assert ei.value.reason == "replay"
    # a malleated copy (r, n - s) is a different byte string with the same sequence number
    f = frames[2]
    s = int.from_bytes(f[-32:], "big")
    twin = f[:-32] + (p256.N - s).to_bytes(32, "big")
    assert twin != f and hashlib.sha256(twin).digest() != hashlib.sha256(f).digest()
    m = P.verify_and_decode(twin, LOOKUP)
    with pytest.raises(P.Replay):
        g.admit(m.device_id, m.seq)


def _dev_seq(m: P.Message) -> tuple[bytes, int]:
    return m.device_id, m.seq


def test_replay_guard_memory_is_bounded():
    g = P.ReplayGuard(window=64)
    for s in range(0, 10_000, 3):
        g.admit(DEV, s)
    st = g._state[DEV]
    assert st[1].bit_length() <= 64
    assert g.high(DEV) == 9999
    assert g.seen(DEV, 9996) and not g.seen(DEV, 9997)


# --- head-end messages -----------------------------------------------------------------------------------


def test_headend_key_id_and_lookup():
    he = P.HeadEnd(HOST_KEY)
    point = HOST_KEY.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
    assert he.public_bytes == point
    assert he.key_id == hashlib.sha256(point).digest()[:8]
    assert he.key_id == P.key_id(HOST_KEY.public_key()) == P.key_id(point)
    assert he.lookup(he.key_id) is he.public_key and he.lookup(DEV) is None
    with pytest.raises(TypeError):
        P.HeadEnd(ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]


def test_command_and_ack_verify_on_host():
    he = P.HeadEnd(HOST_KEY)
    cmd = he.sign_command(DEV, 5, 2, {1: 0, 2: [1, "two", b"3", None, True, {"k": -1}]}, T0, 300)
    m = P.verify_host_message(cmd, he.lookup, DEV, T0 + 10, last_counter=4)
    assert (m.kind, m.kind_name, m.device_id, m.counter, m.time) == (16, "command", DEV, 5, T0)
    assert m.expires == T0 + 300
    assert m.body == {9: T0 + 300, 10: 2, 11: {1: 0, 2: [1, "two", b"3", None, True, {"k": -1}]}}
    assert m.kid == he.key_id and m.raw == cmd
    bare = he.sign_command(DEV, 6, 1, None, T0, 60)
    assert P.verify_host_message(bare, he.lookup, DEV, T0).body == {9: T0 + 60, 10: 1}
    ack = he.sign_ack(DEV, 7, 12345, T0, 60)
    a = P.verify_host_message(ack, he.lookup, DEV, T0 + 60, last_counter=6)
    assert (a.kind_name, a.counter, a.body) == ("ack", 7, {9: T0 + 60, 12: 12345})
    # deterministic: the same command twice is the same bytes (a retransmission, not a new command)
    assert he.sign_ack(DEV, 7, 12345, T0, 60) == ack


def test_head_end_messages_may_carry_a_calendar_up_to_the_meter_limit():
    he = P.HeadEnd(HOST_KEY)
    big = he.sign_command(DEV, 8, 2, {1: {"name": "x" * 2000}, 2: T0 + 3600}, T0, 300)
    assert 1024 < len(big) <= P.MAX_HOST_MESSAGE
    assert P.verify_host_message(big, he.lookup, DEV, T0).body[11][1]["name"] == "x" * 2000
    huge = he.sign_command(DEV, 9, 2, {1: {"name": "x" * 3200}, 2: T0 + 3600}, T0, 300)
    with pytest.raises(P.ProtocolError, match="at most 3200"):
        P.verify_host_message(huge, he.lookup, DEV, T0)


def test_host_message_rejections():
    he = P.HeadEnd(HOST_KEY)
    cmd = he.sign_command(DEV, 5, 2, {1: 1}, T0, 300)

    def reason(frame, device=DEV, now=T0, last=None, lookup=he.lookup):
        with pytest.raises(P.ProtocolError) as ei:
            P.verify_host_message(frame, lookup, device, now, last)
        return ei.value.reason

    assert reason(cmd, now=T0 + 301) == "expired"
    assert reason(cmd, device=DEV2) == "wrong-device"
    assert reason(cmd, last=5) == "replay"
    assert reason(cmd, last=9) == "replay"
    assert reason(cmd, lookup=KEYS.get) == "unknown-kid"
    forged = P.sign1(ec.generate_private_key(ec.SECP256R1()), he.key_id, cbor.decode(cmd).value[2])
    assert reason(forged) == "bad-signature"
    # a meter frame is not a host message
    assert reason(sign(reading_payload(1)), lookup=LOOKUP) == "wrong-kind"
    # hand-made payloads, signed by the head-end key
    key = he.private_key

    def signed(payload):
        return P.sign1(key, he.key_id, payload if isinstance(payload, bytes) else cbor.encode(payload))

    base = {1: 16, 2: DEV, 3: 5, 4: T0, 9: T0 + 60, 10: 2}
    assert P.verify_host_message(signed(base), he.lookup, DEV, T0).counter == 5
    assert reason(signed({**base, 9: T0 - 1})) == "out-of-range"  # expires before issued
    assert reason(signed(cbor2.dumps({**base, 11: {1: 1.5}}))) == "wrong-type"
    assert reason(signed({**base, 11: {"a": 1}})) == "wrong-type"
    assert reason(signed({**base, 11: {1: nest(7)}})) == "too-deep"  # 2 maps + 7 arrays = 9 containers
    nested_ok = signed({**base, 11: {1: nest(6)}})
    assert P.verify_host_message(nested_ok, he.lookup, DEV, T0).body[11] == {1: nest(6)}
    with pytest.raises(ValueError, match="deeper"):
        he.sign_command(DEV, 1, 1, {1: nest(7)}, T0, 60)  # the head-end refuses to sign what it would refuse
    assert reason(signed({**base, 12: 1})) == "unknown-key"
    assert reason(signed({k: v for k, v in base.items() if k != 9})) == "missing-key"
    # command args with mixed key types: the deterministic order is bytewise (ints before text)
    args = {11: {1: {1: "a", "b": 2, b"c": 3, -1: 4, 24: 5, "": 6}}}
    ok = signed({**base, **args})
    assert P.verify_host_message(ok, he.lookup, DEV, T0).body[11] == args[11]
    # cbor2's canonical=True sorts length-first (RFC 7049): "" (1 byte) before 24 (2 bytes), which RFC 8949's
    # bytewise order puts the other way round
    length_first = signed(cbor2.dumps({**base, **args}, canonical=True))
    assert reason(length_first) == "not-canonical"


def test_headend_argument_checks():
    he = P.HeadEnd(HOST_KEY)
    with pytest.raises(ValueError, match="device_id"):
        he.sign_command(DEV[:7], 1, 1, None, T0, 60)
    with pytest.raises(ValueError, match="ttl_s"):
        he.sign_command(DEV, 1, 1, None, T0, 0)
    with pytest.raises(ValueError, match="counter"):
        he.sign_ack(DEV, -1, 5, T0, 60)
    with pytest.raises(ValueError, match="now"):
        he.sign_ack(DEV, 1, 5, 2**32, 60)
    with pytest.raises(ValueError, match="now \\+ ttl_s"):
        he.sign_ack(DEV, 1, 5, 2**32 - 10, 60)
    with pytest.raises(ValueError, match="float"):
        he.sign_command(DEV, 1, 1, {1: 0.5}, T0, 60)
    with pytest.raises(ValueError, match="argument key"):
        he.sign_command(DEV, 1, 1, {"x": 1}, T0, 60)
    with pytest.raises(ValueError, match="op"):
        he.sign_command(DEV, 1, -2, None, T0, 60)


def test_headend_messages_verify_with_firmware_code_in_cpython():
    he = P.HeadEnd(HOST_KEY)
    keys = {he.key_id: he.public_bytes}
    cmd = he.sign_command(DEV, 9, 3, {1: 1500, 2: "limit"}, T0, 120)
    kid, payload = cose.verify1(cmd, keys.get)
    assert kid == he.key_id
    assert cbor.decode(payload) == {1: 16, 2: DEV, 3: 9, 4: T0, 9: T0 + 120, 10: 3, 11: {1: 1500, 2: "limit"}}
    ack = he.sign_ack(DEV, 10, 777, T0, 120)
    assert cbor.decode(cose.verify1(ack, keys.get)[1]) == {1: 17, 2: DEV, 3: 10, 4: T0, 9: T0 + 120, 12: 777}
    # the firmware signs the same bytes with the same key (RFC 6979 on both sides)
    d = HOST_KEY.private_numbers().private_value.to_bytes(32, "big")
    assert cose.sign1(d, he.key_id, payload) == cmd
    tampered = bytearray(ack)
    tampered[-70] ^= 1
    with pytest.raises(cose.BadSignature):
        cose.verify1(bytes(tampered), keys.get)


MP_SCRIPT = textwrap.dedent("""
    import sys
    import json
    from meter import cbor, cose

    inp = json.load(open(sys.argv[1]))
    H = bytes.fromhex
    keys = {H(inp["kid"]): H(inp["pub"])}
    out = []
    for f in inp["frames"]:
        try:
            kid, payload = cose.verify1(H(f), keys.get)
            out.append(["ok", kid.hex(), payload.hex()])
        except cose.COSEError as e:
            out.append([type(e).__name__, "", ""])
    print(json.dumps(out))
""")


def test_headend_messages_verify_in_micropython(tmp_path):
    he = P.HeadEnd(HOST_KEY)
    cmd = he.sign_command(DEV, 21, 4, {1: 1, 2: [2, 3]}, T0, 600)
    ack = he.sign_ack(DEV, 22, 4096, T0, 600)
    forged = P.sign1(ec.generate_private_key(ec.SECP256R1()), he.key_id, cbor.decode(ack).value[2])
    other = P.HeadEnd(ec.generate_private_key(ec.SECP256R1())).sign_ack(DEV, 23, 1, T0, 60)
    script = tmp_path / "verify_host.py"
    script.write_text(MP_SCRIPT)
    data = tmp_path / "in.json"
    data.write_text(json.dumps({"kid": he.key_id.hex(), "pub": he.public_bytes.hex(),
                                "frames": [x.hex() for x in (cmd, ack, forged, other)]}))
    proc = run_micropython(script, str(data), timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res[0][:2] == ["ok", he.key_id.hex()]
    assert cbor.decode(bytes.fromhex(res[0][2])) == {1: 16, 2: DEV, 3: 21, 4: T0, 9: T0 + 600, 10: 4,
                                                     11: {1: 1, 2: [2, 3]}}
    assert res[1][0] == "ok" and cbor.decode(bytes.fromhex(res[1][2]))[12] == 4096
    assert res[2][0] == "BadSignature"
    assert res[3][0] == "UnknownKid"
