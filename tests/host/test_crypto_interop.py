"""The firmware's CBOR, ECDSA P-256 and COSE_Sign1 against independent implementations.

The firmware side runs in the real MicroPython Unix port (one process, a script written to tmp_path); the
other side is `cryptography` (OpenSSL), `pycose` and `cbor2` in CPython.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import textwrap

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from meter import cbor, cose, p256
from meterkit.device.toolchain import run_micropython

FIXED_D = bytes.fromhex("8d8f1b1e6a7b0c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304a5")
KID_METER = bytes.fromhex("4d4b000000000001")
KID_HOST = b"headend1"

# Payload shapes like the protocol's (small unsigned int keys, integers only, nested maps and arrays).
PAYLOADS = [
    {},
    {0: KID_METER, 1: 1, 2: 0, 3: 1700000000, 4: 0},
    {0: KID_METER, 1: 2, 2: 781, 3: 1700000900, 4: 5,
     5: {1: 123456789, 2: 0, 3: 4567, 4: 12, 5: 230456, 6: -1500, 7: 345000}},
    {0: KID_METER, 1: 3, 2: 782, 3: 1700001800, 4: 0,
     6: [[1700000000, 900, 11, 0, 4294967296], [1700000900, 900, 12, 0, 18446744073709551615]]},
    {0: KID_METER, 1: 4, 2: 783, 3: 1700002700, 4: 1, 7: {1: 9, 2: "relay opened", 3: b"\x00" * 40}},
]

FIRMWARE_SCRIPT = """
import sys
import json
from meter import cbor, cose, p256

H = bytes.fromhex
inp = json.load(open(sys.argv[1]))
out = {}

d = H(inp["fixed_d"])
out["fixed_pub"] = p256.public_key(d).hex()
out["frames"] = [cose.sign1(d, H(inp["kid"]), H(p)).hex() for p in inp["payloads"]]
out["payload_reencode"] = [cbor.encode(cbor.decode(H(p))).hex() for p in inp["payloads"]]

d2, pub2 = p256.generate_key()
out["fresh_pub"] = pub2.hex()
out["fresh_frame"] = cose.sign1(d2, H(inp["kid"]), b"fresh key").hex()

out["det"] = [p256.sign(H(dd), H(m)).hex() for dd, m in inp["det"]]
out["det_pub"] = [p256.public_key(H(dd)).hex() for dd, m in inp["det"]]
out["host_verify"] = [p256.verify(H(pub), H(m), H(sig)) for pub, m, sig in inp["host_sigs"]]

def name(fn):
    try:
        return fn()
    except Exception as e:
        return type(e).__name__

out["cbor2_reencode"] = [name(lambda: cbor.encode(cbor.decode(H(h))).hex()) for h in inp["cbor2"]]
keys = {H(k): H(v) for k, v in inp["pycose_keys"].items()}
out["pycose_frames"] = [name(lambda: [x.hex() for x in cose.verify1(H(f), keys.get)])
                       for f in inp["pycose_frames"]]
print(json.dumps(out))
"""


def _der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _crypto_pub(pub: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)


def _raw_pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def _cryptography_verify(pub: bytes, msg: bytes, sig: bytes) -> bool:
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    try:
        _crypto_pub(pub).verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def _pycose_sign1(frame: bytes) -> Sign1Message:
    # pycose 1.1's Sign1Message.decode() expects cbor2 to hand it a list; cbor2 6 decodes the inside of a tag
    # as a tuple and a frozendict, so the decoded parts are passed to from_cose_obj() as mutable ones.
    tag = cbor2.loads(frame)
    assert tag.tag == 18
    prot, unprot, payload, sig = tag.value
    return Sign1Message.from_cose_obj([prot, dict(unprot), payload, sig], True)


def _canonical_corpus() -> list:
    """Values whose maps use one key type each: there cbor2's canonical (length-first, RFC 7049) order and
    the RFC 8949 bytewise order agree, so both encoders must produce the same bytes."""
    rnd = random.Random(8949)

    def leaf():
        kind = rnd.randrange(6)
        if kind == 0:
            return rnd.choice([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
        if kind == 1:
            return -rnd.choice([1, 24, 25, 256, 257, 65537, 2**32 + 1, 2**64])
        if kind == 2:
            return rnd.randbytes(rnd.choice([0, 1, 23, 24, 300]))
        if kind == 3:
            return "".join(rnd.choice("aZ09é水🙂") for _ in range(rnd.choice([0, 1, 5, 30])))
        if kind == 4:
            return rnd.choice([True, False, None])
        return rnd.randrange(-(2**63), 2**63)

    def value(depth):
        if depth > 3 or rnd.random() < 0.4:
            return leaf()
        if rnd.random() < 0.5:
            return [value(depth + 1) for _ in range(rnd.choice([0, 1, 3, 6]))]
        ktype = rnd.randrange(4)
        out = {}
        for _ in range(rnd.choice([0, 1, 3, 6])):
            if ktype == 0:
                k = rnd.choice([0, 1, 7, 23, 24, 100, 1000, 70000, 2**33])
            elif ktype == 1:
                k = -rnd.choice([1, 7, 24, 25, 1000, 2**33])
            elif ktype == 2:
                k = "".join(rnd.choice("abcxyz") for _ in range(rnd.randrange(0, 30)))
            else:
                k = rnd.randbytes(rnd.randrange(0, 30))
            out[k] = value(depth + 1)
        return out

    return [value(0) for _ in range(150)] + PAYLOADS


# cbor2 (length-first canonical order) and RFC 8949 (bytewise) disagree when a map mixes key types of
# different encoded lengths: the firmware refuses cbor2's order there.
MIXED_KEY_MAPS = [{-1: 0, 24: 0}, {"a": 1, 1000: 2}, {b"": 0, 1000: 1}]


@pytest.fixture(scope="module")
def host_keys():
    rnd = random.Random(6979)
    return [ec.derive_private_key(rnd.randrange(1, p256.N), ec.SECP256R1()) for _ in range(4)]


@pytest.fixture(scope="module")
def inputs(host_keys):
    rnd = random.Random(1)
    det = [(FIXED_D.hex(), b"sample".hex())]
    for i in range(12):
        d = rnd.randrange(1, p256.N)
        if i == 0:
            d = 1
        elif i == 1:
            d = p256.N - 1
        det.append((d.to_bytes(32, "big").hex(), rnd.randbytes(rnd.choice([0, 1, 32, 64, 200])).hex()))

    host_sigs, expect = [], []
    for i, key in enumerate(host_keys):
        pub = _raw_pub(key)
        msg = b"command %d" % i
        sig = _der_to_raw(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        host_sigs.append((pub.hex(), msg.hex(), sig.hex()))
        expect.append(True)
        host_sigs.append((pub.hex(), (msg + b"!").hex(), sig.hex()))  # other message
        expect.append(False)
        other = _raw_pub(host_keys[(i + 1) % len(host_keys)])
        host_sigs.append((other.hex(), msg.hex(), sig.hex()))  # other key
        expect.append(False)

    pycose_frames, pycose_expect = [], []
    hk = host_keys[0]
    hpub = _raw_pub(hk)
    hd = hk.private_numbers().private_value.to_bytes(32, "big")
    ckey = EC2Key(crv=P256, x=hpub[1:33], y=hpub[33:], d=hd)
    for payload in PAYLOADS:
        body = cbor2.dumps(payload, canonical=True)
        msg = Sign1Message(phdr={Algorithm: Es256}, uhdr={KID: KID_HOST}, payload=body)
        msg.key = ckey
        pycose_frames.append(msg.encode())
        pycose_expect.append([KID_HOST.hex(), body.hex()])
    tampered = bytearray(pycose_frames[2])
    tampered[-70] ^= 0x01  # inside the payload
    pycose_frames.append(bytes(tampered))
    pycose_expect.append("BadSignature")

    corpus = _canonical_corpus()
    return {
        "fixed_d": FIXED_D.hex(),
        "kid": KID_METER.hex(),
        "payloads": [cbor.encode(p).hex() for p in PAYLOADS],
        "det": det,
        "host_sigs": host_sigs,
        "_expect": expect,
        "cbor2": [cbor2.dumps(v, canonical=True).hex() for v in corpus]
        + [cbor2.dumps(m, canonical=True).hex() for m in MIXED_KEY_MAPS],
        "pycose_keys": {KID_HOST.hex(): hpub.hex()},
        "pycose_frames": [f.hex() for f in pycose_frames],
        "_pycose_expect": pycose_expect,
    }


@pytest.fixture(scope="module")
def fw(inputs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop")
    script = tmp / "interop.py"
    script.write_text(textwrap.dedent(FIRMWARE_SCRIPT))
    data = tmp / "inputs.json"
    data.write_text(json.dumps({k: v for k, v in inputs.items() if not k.startswith("_")}))
    proc = run_micropython(script, str(data), timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_firmware_frames_verify_with_cryptography(fw):
    pub = bytes.fromhex(fw["fixed_pub"])
    assert pub == p256.public_key(FIXED_D)  # same key under CPython
    for frame_hex, payload in zip(fw["frames"], PAYLOADS, strict=True):
        frame = bytes.fromhex(frame_hex)
        tag = cbor2.loads(frame)
        assert isinstance(tag, cbor2.CBORTag) and tag.tag == 18
        prot, unprot, body, sig = tag.value
        assert prot == b"\xa1\x01\x26" and dict(unprot) == {4: KID_METER} and len(sig) == 64
        assert cbor2.loads(body) == payload
        to_sign = cbor2.dumps(["Signature1", prot, b"", body])
        assert _cryptography_verify(pub, to_sign, sig)
        assert not _cryptography_verify(pub, to_sign + b"\x00", sig)
        assert not _cryptography_verify(pub, cbor2.dumps(["Signature1", prot, b"x", body]), sig)
    fresh = cbor2.loads(bytes.fromhex(fw["fresh_frame"])).value
    assert _cryptography_verify(bytes.fromhex(fw["fresh_pub"]),
                                cbor2.dumps(["Signature1", fresh[0], b"", fresh[2]]), fresh[3])


def test_firmware_frames_verify_with_pycose(fw):
    pub = bytes.fromhex(fw["fixed_pub"])
    key = EC2Key(crv=P256, x=pub[1:33], y=pub[33:])
    for frame_hex, payload in zip(fw["frames"], PAYLOADS, strict=True):
        msg = _pycose_sign1(bytes.fromhex(frame_hex))
        msg.key = key
        assert msg.phdr == {Algorithm: Es256}
        assert msg.uhdr == {KID: KID_METER}
        assert cbor2.loads(msg.payload) == payload
        assert msg.verify_signature()
        msg.payload = msg.payload + b"\x00"
        assert not msg.verify_signature()


def test_frames_are_identical_on_micropython_and_cpython(fw):
    for frame_hex, payload in zip(fw["frames"], PAYLOADS, strict=True):
        assert cose.sign1(FIXED_D, KID_METER, cbor.encode(payload)).hex() == frame_hex


def test_firmware_cbor_reencodes_identically_with_cbor2(fw):
    again = [cbor.encode(p).hex() for p in PAYLOADS]
    for payload, enc_hex, again_hex in zip(PAYLOADS, fw["payload_reencode"], again, strict=True):
        enc = bytes.fromhex(enc_hex)
        assert enc_hex == again_hex
        assert cbor2.loads(enc) == payload
        assert cbor2.dumps(cbor2.loads(enc), canonical=True) == enc
    for frame_hex in fw["frames"]:
        frame = bytes.fromhex(frame_hex)
        assert cbor2.dumps(cbor2.loads(frame), canonical=True) == frame


def test_cbor2_canonical_output_decodes_on_firmware(fw, inputs):
    n_mixed = len(MIXED_KEY_MAPS)
    same = inputs["cbor2"][:-n_mixed]
    for sent, back in zip(same, fw["cbor2_reencode"][:-n_mixed], strict=True):
        assert back == sent
    # the documented divergence: cbor2's canonical=True sorts length-first (RFC 7049)
    assert fw["cbor2_reencode"][-n_mixed:] == ["UnsortedKeys"] * n_mixed
    for m in MIXED_KEY_MAPS:
        assert cbor2.dumps(m, canonical=True) != cbor.encode(m)
        assert cbor2.loads(cbor.encode(m)) == m


def test_cryptography_signatures_verify_on_firmware(fw, inputs):
    assert fw["host_verify"] == inputs["_expect"]
    assert sum(fw["host_verify"]) == 4


def test_pycose_frames_verify_on_firmware(fw, inputs):
    assert fw["pycose_frames"] == inputs["_pycose_expect"]


def test_signatures_equal_cryptography_deterministic_rfc6979(fw, inputs):
    for (d_hex, m_hex), sig_hex, pub_hex in zip(inputs["det"], fw["det"], fw["det_pub"], strict=True):
        key = ec.derive_private_key(int(d_hex, 16), ec.SECP256R1())
        assert pub_hex == _raw_pub(key).hex()
        det = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        want = _der_to_raw(key.sign(bytes.fromhex(m_hex), det))
        assert sig_hex == want.hex()
        assert _cryptography_verify(bytes.fromhex(pub_hex), bytes.fromhex(m_hex), bytes.fromhex(sig_hex))


def _rfc6979_reference(x: int, h1: bytes, count: int) -> list[int]:
    """RFC 6979 section 3.2 with the standard library's hmac (qlen = hlen = 256)."""
    q = p256.N

    def mac(k, v):
        return hmac.new(k, v, hashlib.sha256).digest()

    xo = x.to_bytes(32, "big")
    ho = (int.from_bytes(h1, "big") % q).to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    k = mac(k, v + b"\x00" + xo + ho)
    v = mac(k, v)
    k = mac(k, v + b"\x01" + xo + ho)
    v = mac(k, v)
    out = []
    while len(out) < count:
        v = mac(k, v)
        cand = int.from_bytes(v, "big")
        if 1 <= cand < q:
            out.append(cand)
        k = mac(k, v + b"\x00")
        v = mac(k, v)
    return out


def test_nonce_retry_sequence_matches_reference():
    for x, msg in ((0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, b"sample"),
                   (1, b""), (p256.N - 1, b"retry")):
        h1 = hashlib.sha256(msg).digest()
        gen = p256.rfc6979_nonces(x, h1)
        assert [next(gen) for _ in range(4)] == _rfc6979_reference(x, h1, 4)


def test_hmac_matches_stdlib():
    rnd = random.Random(2104)
    for _ in range(50):
        key = rnd.randbytes(rnd.choice([0, 1, 32, 63, 64, 65, 200]))
        msg = rnd.randbytes(rnd.randrange(0, 300))
        assert p256.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_r_plus_n_branch_agrees_with_openssl():
    # A signature whose R has x >= n (r = x - n): build it backwards, then both verifiers must accept it.
    n, p = p256.N, p256.P
    x = n + 1
    while True:
        rhs = (x ** 3 - 3 * x + p256._B) % p
        y = pow(rhs, (p + 1) // 4, p)
        if y * y % p == rhs:
            break
        x += 1
    r, s = x - n, 0x1D2C3B4A
    msg = b"x(R) >= n"
    z = int.from_bytes(hashlib.sha256(msg).digest(), "big")
    w = pow(s, -1, n)
    u1, u2 = z * w % n, r * w % n
    # Q = u2^-1 (R - u1 G), with cryptography's scalar multiplications: u1 G from a key, the rest by hand
    u1g = ec.derive_private_key(u1, ec.SECP256R1()).public_key().public_numbers()
    diff = p256._add(x, y, 1, u1g.x, (p - u1g.y) % p, 1)
    rx, ry = p256._to_affine(*diff)
    acc = [1, 1, 0]
    for bit in bin(pow(u2, -1, n))[2:]:
        acc = p256._dbl(*acc)
        if bit == "1":
            acc = p256._add(*acc, rx, ry, 1)
    qx, qy = p256._to_affine(*acc)
    pub = b"\x04" + qx.to_bytes(32, "big") + qy.to_bytes(32, "big")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert _cryptography_verify(pub, msg, sig)
    assert p256.verify(pub, msg, sig)
    bad = (r + 1).to_bytes(32, "big") + s.to_bytes(32, "big")
    assert not _cryptography_verify(pub, msg, bad)
    assert not p256.verify(pub, msg, bad)
