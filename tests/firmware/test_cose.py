# meter/cose.py on MicroPython: COSE_Sign1 / ES256 frames.
from mptest import eq, raises

from meter import cbor, cose, p256
from meter.cbor import Tag

D = bytes(range(1, 33))
PUB = p256.public_key(D)
KID = bytes.fromhex("0102030405060708")
D2 = bytes(range(2, 34))
PUB2 = p256.public_key(D2)
KID2 = b"headend1"
KEYS = {KID: PUB, KID2: PUB2}
PAYLOAD = cbor.encode({0: KID, 1: 2, 2: 781, 3: 1700000000, 4: 0, 5: {1: 123456, 2: -7}})


def frame():
    return cose.sign1(D, KID, PAYLOAD)


def parts(f):
    return cbor.decode(f).value


def rebuild(protected, unprotected, payload, signature, tag=18):
    return cbor.encode(Tag(tag, [protected, unprotected, payload, signature]))


def test_layout():
    f = frame()
    # d2 (tag 18) 84 (array 4) 43 a1 01 26 (protected {1: -7}) a1 04 48 <kid> (unprotected {4: kid})
    eq(f[:9].hex(), "d28443a10126a10448", "head")
    eq(f[9:17], KID, "kid")
    eq(cose.PROTECTED_ES256, b"\xa1\x01\x26", "protected header bytes")
    prot, unprot, payload, sig = parts(f)
    eq(prot, cose.PROTECTED_ES256, "protected")
    eq(unprot, {4: KID}, "unprotected")
    eq(payload, PAYLOAD, "payload")
    eq(len(sig), 64, "signature r || s")
    eq(f[-66:-64].hex(), "5840", "signature bstr head")
    eq(cbor.encode(cbor.decode(f)), f, "frame is deterministic CBOR")
    eq(frame(), f, "deterministic signature: same frame twice")


def test_sig_structure():
    ss = bytes(cose.sig_structure(cose.PROTECTED_ES256, b"\x01\x02", b""))
    want = "84" + "6a" + b"Signature1".hex() + "43a10126" + "40" + "420102"
    eq(ss.hex(), want, "Sig_structure bytes")
    f = frame()
    sig = parts(f)[3]
    assert p256.verify(PUB, cose.sig_structure(cose.PROTECTED_ES256, PAYLOAD), sig), "signature over it"


def test_verify_ok():
    eq(cose.verify1(frame(), KEYS.get), (KID, PAYLOAD), "verify1")
    eq(cose.verify1(bytearray(frame()), KEYS.get), (KID, PAYLOAD), "bytearray frame")
    f2 = cose.sign1(D2, KID2, b"")
    eq(cose.verify1(f2, KEYS.get), (KID2, b""), "empty payload, other key")
    big = cbor.encode(list(range(2000)))
    eq(cose.verify1(cose.sign1(D, KID, big), KEYS.get), (KID, big), "large payload")
    fa = cose.sign1(D, KID, PAYLOAD, aad=b"channel-1")
    eq(cose.verify1(fa, KEYS.get, aad=b"channel-1"), (KID, PAYLOAD), "external aad")
    e = raises(cose.BadSignature, cose.verify1, fa, KEYS.get)
    eq(e.kid, KID, "kid on the error")
    raises(cose.BadSignature, cose.verify1, fa, KEYS.get, aad=b"channel-2")


def test_not_sign1():
    prot, unprot, payload, sig = parts(frame())
    raises(cose.NotSign1, cose.verify1, cbor.encode([prot, unprot, payload, sig]), KEYS.get)
    for tag in (17, 98, 96, 61):
        raises(cose.NotSign1, cose.verify1, rebuild(prot, unprot, payload, sig, tag), KEYS.get)
    for obj in (0, b"", "x", {}, None, [1, 2, 3, 4]):
        raises(cose.NotSign1, cose.verify1, cbor.encode(obj), KEYS.get)


def test_structure():
    prot, unprot, payload, sig = parts(frame())
    bad = [
        cbor.encode(Tag(18, [prot, unprot, payload])),
        cbor.encode(Tag(18, [prot, unprot, payload, sig, b""])),
        cbor.encode(Tag(18, {1: 2})),
        rebuild({1: -7}, unprot, payload, sig),
        rebuild(prot, [4, KID], payload, sig),
        rebuild(prot, unprot, None, sig),  # detached payload
        rebuild(prot, unprot, "text", sig),
        rebuild(prot, unprot, payload, 0),
        rebuild(prot, {4: 1}, payload, sig),
        rebuild(prot, {4: "kid"}, payload, sig),
        rebuild(prot, {}, payload, sig),
        rebuild(prot, {4: KID, 5: b"\x00"}, payload, sig),  # the unprotected bucket is not signed
        rebuild(prot, {1: -7, 4: KID}, payload, sig),
        rebuild(cbor.encode({1: -7, 4: KID}), unprot, payload, sig),
        rebuild(cbor.encode([1, -7]), unprot, payload, sig),
    ]
    for f in bad:
        raises(cose.BadStructure, cose.verify1, f, KEYS.get)


def test_algorithm():
    _, unprot, payload, sig = parts(frame())
    for prot in (cbor.encode({1: -35}), cbor.encode({1: -8}), cbor.encode({1: "ES256"}), cbor.encode({}),
                 b"", cbor.encode({3: 0}), cbor.encode({1: 7})):
        raises(cose.BadAlgorithm, cose.verify1, rebuild(prot, unprot, payload, sig), KEYS.get)


def test_unknown_kid():
    f = cose.sign1(D, b"stranger", PAYLOAD)
    e = raises(cose.UnknownKid, cose.verify1, f, KEYS.get)
    eq(e.kid, b"stranger", "kid on the error")

    def raising(kid):
        return KEYS[kid]

    raises(cose.UnknownKid, cose.verify1, f, raising)
    eq(cose.verify1(frame(), raising), (KID, PAYLOAD), "KeyError-raising lookup works for known kids")


def test_bad_signature():
    f = frame()
    prot, unprot, payload, sig = parts(f)
    # payload changed, same length
    changed = bytearray(payload)
    changed[-1] ^= 1
    raises(cose.BadSignature, cose.verify1, rebuild(prot, unprot, bytes(changed), sig), KEYS.get)
    for i in (0, 31, 32, 63):
        s2 = bytearray(sig)
        s2[i] ^= 0x80
        raises(cose.BadSignature, cose.verify1, rebuild(prot, unprot, payload, bytes(s2)), KEYS.get)
    raises(cose.BadSignature, cose.verify1, rebuild(prot, unprot, payload, sig[:63]), KEYS.get)
    raises(cose.BadSignature, cose.verify1, rebuild(prot, unprot, payload, sig + b"\x00"), KEYS.get)
    raises(cose.BadSignature, cose.verify1, rebuild(prot, unprot, payload, bytes(64)), KEYS.get)
    # signed by KID2's key but labelled KID, and the other way round
    raises(cose.BadSignature, cose.verify1, cose.sign1(D2, KID, PAYLOAD), KEYS.get)
    raises(cose.BadSignature, cose.verify1, rebuild(prot, {4: KID2}, payload, sig), KEYS.get)
    # lookup returns garbage instead of a key
    raises(cose.BadSignature, cose.verify1, f, lambda kid: b"\x04" + bytes(64))


def test_malformed():
    f = frame()
    for cut in (0, 1, 5, 20, len(f) - 1):
        e = raises(cose.Malformed, cose.verify1, f[:cut], KEYS.get)
        assert isinstance(e.cause, cbor.Truncated), "cause kept"
    raises(cose.Malformed, cose.verify1, f + b"\x00", KEYS.get)
    # the same frame with a non-shortest payload length: not the bytes that were signed
    prot, unprot, payload, sig = parts(f)
    i = f.index(payload) - 2
    eq(f[i:i + 2], bytes([0x58, len(payload)]), "payload head")
    long_head = f[:i] + bytes([0x59, 0, len(payload)]) + f[i + 2:]
    e = raises(cose.Malformed, cose.verify1, long_head, KEYS.get)
    assert isinstance(e.cause, cbor.NotShortest), "NotShortest"
    # protected header not deterministic: alg -7 as 38 06
    raises(cose.Malformed, cose.verify1, rebuild(b"\xa1\x01\x38\x06", unprot, payload, sig), KEYS.get)
    raises(cose.Malformed, cose.verify1, b"\xd2\x84\xf9\x00\x00", KEYS.get)
    raises(cose.Malformed, cose.verify1, f, KEYS.get, max_len=len(f) - 1)


def test_errors():
    for cls in (cose.Malformed, cose.NotSign1, cose.BadStructure, cose.BadAlgorithm, cose.UnknownKid,
                cose.BadSignature):
        assert issubclass(cls, cose.COSEError) and issubclass(cls, ValueError), cls.__name__
    raises(TypeError, cose.sign1, D, "kid", PAYLOAD)
    raises(TypeError, cose.sign1, D, KID, {1: 2})
    raises(ValueError, cose.sign1, b"\x00" * 32, KID, PAYLOAD)
