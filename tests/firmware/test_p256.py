# meter/p256.py on MicroPython: ECDSA P-256 / SHA-256 with RFC 6979 nonces.
import hashlib

from mptest import eq, raises

from meter import p256

MPTEST_HEAP = "160K"  # a tight heap (the 64-bit Unix port needs about 1.5x the ESP32's bytes per bignum)

H = bytes.fromhex
P = p256.P
N = p256.N
G = (p256._GX, p256._GY)

# RFC 6979 A.2.5 (ECDSA, 256 bits, prime field: P-256), with SHA-256
RFC_D = H("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
RFC_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC_VECTORS = [
    (b"sample",
     0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
     0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test",
     0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
     0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
]


def b32(x):
    return x.to_bytes(32, "big")


def affine(pt):
    return p256._to_affine(pt[0], pt[1], pt[2])


def ref_mul(k, x, y):
    """k * (x, y) by plain left-to-right double-and-add on the generic helpers (the reference)."""
    acc = [1, 1, 0]
    for i in range(255, -1, -1):
        acc = p256._dbl(acc[0], acc[1], acc[2])
        if (k >> i) & 1:
            acc = p256._add(acc[0], acc[1], acc[2], x, y, 1)
    return acc


def pub_of(x, y):
    return b"\x04" + b32(x) + b32(y)


def test_curve():
    assert p256._on_curve(G[0], G[1]), "G on the curve"
    eq(p256._mul_g(N)[2], 0, "n G is the point at infinity")
    eq(affine(p256._mul_g(N - 1)), (G[0], P - G[1]), "(n-1) G = -G")
    eq(affine(p256._mul_g(1)), G, "1 G")
    eq(p256._mul_g(0)[2], 0, "0 G")
    assert not p256._on_curve(G[0], G[1] + 1), "off the curve"
    assert not p256._on_curve(G[0] + P, G[1]), "x >= p is not a field element"


def test_table():
    eq(p256.precompute(), 16320, "table bytes")
    eq(p256.TABLE_BYTES, 16320, "TABLE_BYTES")
    t = p256._table
    for c in range(1, 256):
        o = (c - 1) * 64
        x = int.from_bytes(t[o:o + 32], "big")
        y = int.from_bytes(t[o + 32:o + 64], "big")
        assert p256._on_curve(x, y), "entry %d on the curve" % c
    eq(int.from_bytes(t[0:32], "big"), G[0], "T[1] = G")
    two32 = affine(ref_mul(1 << 32, G[0], G[1]))
    eq(int.from_bytes(t[64:96], "big"), two32[0], "T[2] = 2^32 G")
    full = affine(ref_mul(sum(1 << (32 * i) for i in range(8)), G[0], G[1]))
    eq(int.from_bytes(t[254 * 64:254 * 64 + 32], "big"), full[0], "T[255] = sum of all teeth")


def test_comb_vs_ref():
    ks = [1, 2, 3, 255, 256, (1 << 32) - 1, 1 << 32, 1 << 255, N - 1, N - 2, (1 << 256) - 1 - (1 << 200),
          0x0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF]
    for k in ks:
        eq(affine(p256._mul_g(k)), affine(ref_mul(k, G[0], G[1])), "k = %x" % k)


def test_joint_edges():
    qtab = [[G[0], G[1], 1]]
    g2 = p256._dbl(G[0], G[1], 1)
    for _ in range(7):
        a = qtab[-1]
        qtab.append(p256._add(a[0], a[1], a[2], g2[0], g2[1], g2[2]))
    cols = p256._comb_columns
    # 1 G + 1 G: the last comb addition meets an equal point and must double
    eq(affine(p256._mul_joint(cols(1), p256._naf(1), qtab)), affine(ref_mul(2, G[0], G[1])), "G + G")
    # 1 G + (n-1) G = infinity
    eq(p256._mul_joint(cols(1), p256._naf(N - 1), qtab)[2], 0, "G - G")
    for a, b in ((5, 7), (N - 3, 3), (12345, N - 12345), (1 << 200, 1 << 31), (N - 1, N - 1)):
        got = p256._mul_joint(cols(a), p256._naf(b), qtab)
        want = ref_mul((a + b) % N, G[0], G[1])
        if want[2] == 0:
            eq(got[2], 0, "infinity for %d + %d" % (a, b))
        else:
            eq(affine(got), affine(want), "%d G + %d G" % (a, b))


def test_naf_inverse():
    for k in (0, 1, 2, 15, 16, 17, 31, 0xFFFF, N - 1, (1 << 256) - 1):
        digits = p256._naf(k)
        eq(sum(d << i for i, d in enumerate(digits)), k, "naf value of %x" % k)
        for i, d in enumerate(digits):
            assert d == 0 or (d & 1 and -16 < d < 16), "digit %d" % d
            if d:
                assert all(x == 0 for x in digits[i + 1:i + 5]), "zeros after a digit"
    for a in (1, 2, 3, N - 1, 0x1234567890ABCDEF, P - 1):
        eq(a * p256._inv(a, N) % N, 1, "inverse mod n")
        eq(a * p256._inv(a, P) % P, 1, "inverse mod p")
    raises(ZeroDivisionError, p256._inv, 0, P)
    raises(ZeroDivisionError, p256._inv, N, N)


def test_hmac():
    # RFC 4231 test cases 1, 2 and 6 (key longer than the block)
    eq(p256.hmac_sha256(b"\x0b" * 20, b"Hi There").hex(),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", "case 1")
    eq(p256.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex(),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "case 2")
    eq(p256.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First").hex(),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", "case 6")


def test_rfc6979():
    eq(p256.public_key(RFC_D), pub_of(RFC_UX, RFC_UY), "public key U")
    x = int.from_bytes(RFC_D, "big")
    for msg, k, r, s in RFC_VECTORS:
        h1 = hashlib.sha256(msg).digest()
        gen = p256.rfc6979_nonces(x, h1)
        eq(next(gen), k, "k for %s" % msg)
        k2 = next(gen)
        assert 1 <= k2 < N and k2 != k, "the retry candidate differs and is in range"
        sig = p256.sign(RFC_D, msg)
        eq(sig, b32(r) + b32(s), "r || s for %s" % msg)
        eq(p256.sign_digest(RFC_D, h1), sig, "sign_digest")
        assert p256.verify(pub_of(RFC_UX, RFC_UY), msg, sig), "vector verifies"
        assert p256.verify_digest(pub_of(RFC_UX, RFC_UY), h1, sig), "verify_digest"


def test_roundtrip():
    keys = [b32(1), b32(2), b32(N - 1), b32(0x1234), bytes(range(1, 33)), RFC_D]
    msgs = [b"", b"x", b"meterkit" * 125, bytearray(b"bytearray message")]
    for d in keys:
        pub = p256.public_key(d)
        for m in msgs:
            sig = p256.sign(d, m)
            eq(len(sig), 64, "signature length")
            eq(p256.sign(d, m), sig, "deterministic")
            assert p256.verify(pub, m, sig), "round trip"
            assert p256.verify(bytearray(pub), memoryview(bytes(m)), bytearray(sig)), "bytes-like inputs"
    eq(p256.public_key(b32(1)), pub_of(G[0], G[1]), "d = 1 gives G")


def test_rejects():
    d = bytes(range(1, 33))
    pub = p256.public_key(d)
    msg = b"reading 42"
    sig = p256.sign(d, msg)
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    assert p256.verify(pub, msg, sig), "baseline"
    assert not p256.verify(pub, b"reading 43", sig), "modified message"
    for bit in (0, 7, 100, 255, 256, 300, 511):
        bad = bytearray(sig)
        bad[bit >> 3] ^= 1 << (bit & 7)
        assert not p256.verify(pub, msg, bytes(bad)), "flipped signature bit %d" % bit
    assert not p256.verify(p256.public_key(b32(7)), msg, sig), "wrong key"
    top = (1 << 256) - 1
    for rr, ss in ((0, s), (r, 0), (N, s), (r, N), (r, N + 1), (N + 5, s), (top, s), (r, top)):
        assert not p256.verify(pub, msg, b32(rr) + b32(ss)), "out of range r, s"
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:], "big")
    assert not p256.verify(pub_of(x, (y + 1) % P), msg, sig), "off-curve key"
    assert not p256.verify(pub_of(x, P - y), msg, sig), "negated key (on the curve) does not verify"
    assert not p256.verify(b"\x04" + b32(P) + pub[33:], msg, sig), "x = p"
    for prefix in (b"\x02", b"\x03", b"\x00", b"\x05", b"\x06"):
        assert not p256.verify(prefix + pub[1:], msg, sig), "prefix %r" % prefix
    for junk in (b"", b"\x00", pub[:33], pub[:64], pub + b"\x00", b"\x04" + bytes(64), None, "04", 4, [pub]):
        assert not p256.verify(junk, msg, sig), "garbage key %r" % (junk,)
    for junk in (b"", sig[:63], sig + b"\x00", bytes(64), None, sig.hex(), 0):
        assert not p256.verify(pub, msg, junk), "garbage signature"
    for junk in (None, "reading 42", 42):
        assert not p256.verify(pub, junk, sig), "garbage message"
    assert not p256.verify_digest(pub, b"\x00" * 31, sig), "short digest"


def test_malleable():
    # ECDSA itself: (r, n - s) is valid too. Replay/dedupe must never key on signature or frame bytes.
    d = bytes(range(1, 33))
    sig = p256.sign(d, b"m")
    s = int.from_bytes(sig[32:], "big")
    assert p256.verify(p256.public_key(d), b"m", sig[:32] + b32(N - s)), "(r, n - s) verifies"


def test_r_plus_n():
    # A signature whose R has x in [n, p): r = x - n, so verify must also try X == (r + n) Z^2.
    # Built backwards: pick R with such an x, any s, then the key Q = u2^-1 (R - u1 G) that makes it valid.
    t = 1
    while True:
        x = N + t
        rhs = (x * x * x - 3 * x + p256._B) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            break
        t += 1
    r = x - N
    s = 0x3A5F
    msg = b"x(R) >= n"
    z = int.from_bytes(hashlib.sha256(msg).digest(), "big")
    w = p256._inv(s, N)
    u1 = z * w % N
    u2 = r * w % N
    minus_u1g = ref_mul(N - u1, G[0], G[1])
    rp = p256._add(minus_u1g[0], minus_u1g[1], minus_u1g[2], x, y, 1)
    rx, ry = affine(rp)
    q = affine(ref_mul(p256._inv(u2, N), rx, ry))
    pub = pub_of(q[0], q[1])
    sig = b32(r) + b32(s)
    assert p256.verify(pub, msg, sig), "accepted through the r + n branch"
    assert not p256.verify(pub, msg, b32(r + 1) + b32(s)), "neighbouring r rejected"


def test_keygen():
    queue = [b"\xff" * 32, b"\x00" * 32, b32(N), b32(12345)]

    def fake(n):
        eq(n, 32, "asks for 32 bytes")
        return queue.pop(0)

    d, pub = p256.generate_key(fake)
    eq(d, b32(12345), "rejection sampling skips 2^256-1, 0 and n")
    eq(pub, p256.public_key(d), "pub matches d")
    eq(queue, [], "consumed all")
    d2, pub2 = p256.generate_key()
    assert d2 != d and len(d2) == 32, "real urandom"
    assert p256.verify(pub2, b"k", p256.sign(d2, b"k")), "fresh key works"
    raises(ValueError, p256.generate_key, lambda n: b"\x01" * 31)


def test_bad_private():
    for d in (b32(0), b32(N), b32(N + 1), b"\x01" * 31, b"\x01" * 33, 5, None, "01" * 32):
        raises(ValueError, p256.public_key, d)
        raises(ValueError, p256.sign, d, b"m")
    raises(ValueError, p256.sign_digest, b32(5), b"\x00" * 31)
