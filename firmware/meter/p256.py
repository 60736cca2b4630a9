# ECDSA over NIST P-256 with SHA-256 (ES256), deterministic nonces per RFC 6979. Pure: runs under
# MicroPython (ESP32 and Unix port) and CPython.
#
# Keys: the private key d is 32 bytes, big-endian, 1 <= d < n (the form that goes to flash). The public key
# is the 65-byte uncompressed SEC1 point 0x04 || x || y. Signatures are 64 bytes r || s (the COSE form).
#
#   generate_key(urandom=None -> os.urandom) -> (d, pub)      public_key(d) -> pub
#   sign(d, msg) -> sig                                       verify(pub, msg, sig) -> bool (never raises)
#   sign_digest(d, h32) / verify_digest(pub, h32, sig)        precompute() -> table bytes   build_table()
#
# Side channels: MicroPython integers are variable-length bignums, so every multiplication, reduction and
# branch here takes data-dependent time. Nothing in this module is constant time and it must not be sold as
# such. What it does guarantee: nonces never come from a random source (RFC 6979: a bad RNG cannot leak the
# key), inputs to verify are range- and curve-checked, and no secret is ever printed or stored by this module.
#
# Speed on the Unix port (x86-64), medians from `micropython firmware/sim/bench_crypto.py`: sign 0.9 ms,
# verify 4.1 ms, keygen 0.8 ms, comb table build 11.6 ms (once). The ESP32 is one to two orders of magnitude
# slower (16-bit bignum digits, 240 MHz).
#
# Arithmetic:
# - Field elements are Python ints reduced with `%` by the special prime p = 2^256 - 2^224 + 2^192 + 2^96 - 1.
#   Its special form was tried: a Solinas fold (2^256 = 2^224 - 2^192 - 2^96 + 1 mod p, folded until below
#   2^256) is several interpreted bignum operations per fold and needs several folds: measured 7.0 us per
#   512-bit reduction against 0.8 us for the single C-level `%` on the Unix port. So products are reduced by
#   `%`, sums and differences are left unreduced until the next product, and the curve's a = -3 gives the
#   cheaper doubling (alpha = 3 (X - Z^2)(X + Z^2)).
# - Points are Jacobian (X, Y, Z) = affine (X/Z^2, Y/Z^3); infinity has Z == 0.
# - k*G (signing, key generation) uses a fixed-base comb: 8 teeth 32 bits apart, table of the 255 non-empty
#   subset sums of {2^(32i) G}, stored as affine x||y (255 * 64 = 16320 bytes). One scalar multiplication is
#   32 doublings + at most 32 mixed additions. The table is a constant, meter/p256_table.py, imported on
#   first use (`precompute()` forces it): frozen into a firmware image it stays in flash and costs no heap
#   (docs/performance.md, "Heap on a board"); loaded from .mpy it is one 16 KB bytes object. build_table()
#   computes it (tests check that the two agree) with at most 16 Jacobian points alive besides it.
# - u1*G + u2*Q (verification) is one joint double-and-add pass (Shamir's trick): u2 in width-5 NAF over the
#   odd multiples Q, 3Q, ..., 15Q, and u1 by the same comb table, whose 32 columns land on the last 32
#   doublings. The result is compared projectively (X == r * Z^2), so verification needs no field inversion;
#   its one inversion is s^-1 mod n. Signing inverts twice (Z mod p, k mod n): the two moduli differ.
# - Inversion is the extended Euclidean algorithm on bignums (~70 us on the Unix port), faster than Fermat via
#   three-argument pow (~800 us), which some ports build without (MICROPY_PY_BUILTINS_POW3).
# - The hot loops are written out inline: on MicroPython a function call that returns a tuple of three
#   bignums can cost several microseconds in allocation, more than the arithmetic it wraps.

import hashlib
from array import array

try:
    import os

    _urandom = os.urandom
except (ImportError, AttributeError):  # pragma: no cover - every supported port has os.urandom
    _urandom = None

# Curve constants: SEC 2 v2 section 2.4.2 (secp256r1) = FIPS 186-4 D.1.2.3 (P-256).
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

P = _P
N = _N

COMB_TEETH = 8
COMB_SPACING = 32  # COMB_TEETH * COMB_SPACING == 256
TABLE_BYTES = ((1 << COMB_TEETH) - 1) * 64
NAF_W = 5  # width of the NAF for the variable point in verify: odd multiples 1..15

_table = None  # the comb table (bytes): affine points, entry c (1..255) at offset (c - 1) * 64


# ---------------------------------------------------------------------------------------------------------
# modular arithmetic


def _inv(a, m):
    """a^-1 mod m for prime m and a not divisible by m (extended Euclid)."""
    r0 = m
    r1 = a % m
    if r1 == 0:
        raise ZeroDivisionError("no inverse")
    x0 = 0
    x1 = 1
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        x0, x1 = x1, x0 - q * x1
    return x0 % m


def _from_bytes(b):
    return int.from_bytes(b, "big")


def _to32(x):
    return x.to_bytes(32, "big")


# ---------------------------------------------------------------------------------------------------------
# group law (generic helpers: used off the hot paths and for the rare exceptional cases inside them)


def _dbl(X, Y, Z, P=_P):
    """2*(X, Y, Z) in Jacobian coordinates, a = -3 (dbl-2001-b: 3M + 5S)."""
    if Z == 0 or Y == 0:
        return [1, 1, 0]
    d = Z * Z % P
    g = Y * Y % P
    b = X * g % P
    a = 3 * (X - d) * (X + d) % P
    X3 = (a * a - 8 * b) % P
    Z3 = 2 * Y * Z % P
    Y3 = (a * (4 * b - X3) - 8 * g * g) % P
    return [X3, Y3, Z3]


def _add(X1, Y1, Z1, X2, Y2, Z2, P=_P):
    """(X1, Y1, Z1) + (X2, Y2, Z2), both Jacobian; handles doubling, inverses and infinity."""
    if Z1 == 0:
        return [X2, Y2, Z2]
    if Z2 == 0:
        return [X1, Y1, Z1]
    z1 = Z1 * Z1 % P
    z2 = Z2 * Z2 % P
    U1 = X1 * z2 % P
    U2 = X2 * z1 % P
    S1 = Y1 * z2 % P * Z2 % P
    S2 = Y2 * z1 % P * Z1 % P
    H = U2 - U1
    R = S2 - S1
    if H == 0:
        if R == 0:
            return _dbl(X1, Y1, Z1)
        return [1, 1, 0]
    HH = H * H % P
    HHH = H * HH % P
    V = U1 * HH % P
    X3 = (R * R - HHH - 2 * V) % P
    Y3 = (R * (V - X3) - S1 * HHH) % P
    Z3 = Z1 * Z2 % P * H % P
    return [X3, Y3, Z3]


def _to_affine(X, Y, Z, P=_P):
    zi = _inv(Z, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 % P * zi % P


def _on_curve(x, y, P=_P):
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + _B)) % P == 0


# ---------------------------------------------------------------------------------------------------------
# fixed-base comb table


def precompute():
    """Make the comb table ready now (otherwise on first use): meter/p256_table.py. Returns its size in bytes."""
    global _table
    if _table is None:
        from meter.p256_table import TABLE

        _table = TABLE
    return len(_table)


def build_table():
    """The comb table for G, computed (what meter/p256_table.py holds).

    Memory-lean: entries are made level by level (level h holds the entries whose highest tooth is h:
    T[c] = T[c - 2^h] + 2^(32 h) G, from affine entries already in the table) and normalised in batches of
    _BATCH with one inversion per batch (Montgomery's trick), so at most _BATCH Jacobian points are alive at a
    time besides the table itself.
    """
    table = bytearray(TABLE_BYTES)
    X, Y, Z = _GX, _GY, 1
    for h in range(COMB_TEETH):
        if h:
            for _ in range(COMB_SPACING):
                X, Y, Z = _dbl(X, Y, Z)
        bx, by = _to_affine(X, Y, Z)  # 2^(32 h) G
        first = 1 << h
        c = first
        while c < first << 1:
            stop = min(c + _BATCH, first << 1)
            jac = []
            for e in range(c, stop):
                if e == first:
                    jac.append([bx, by, 1])
                else:
                    o = (e - first - 1) << 6
                    jac.append(_add(_from_bytes(table[o:o + 32]), _from_bytes(table[o + 32:o + 64]), 1,
                                    bx, by, 1))
            _store_affine(table, c, jac)
            c = stop
    return table


_BATCH = 16


def _store_affine(table, c, jac, P=_P):
    """Write Jacobian points jac (entries c, c+1, ...) into the table as affine x || y, one inversion."""
    prefix = []
    acc = 1
    for pt in jac:
        acc = acc * pt[2] % P
        prefix.append(acc)
    inv = _inv(acc, P)
    for j in range(len(jac) - 1, -1, -1):
        X, Y, Z = jac[j]
        zi = inv * prefix[j - 1] % P if j else inv
        inv = inv * Z % P
        zi2 = zi * zi % P
        o = (c + j - 1) << 6
        table[o:o + 32] = _to32(X * zi2 % P)
        table[o + 32:o + 64] = _to32(Y * zi2 % P * zi % P)


def _comb_columns(k):
    """Column c_j (j = 0..31) of scalar k: bit i of c_j is bit 32 i + j of k."""
    cols = [0] * COMB_SPACING
    kb = _to32(k)
    for bi in range(32):  # bi = little-endian byte index
        v = kb[31 - bi]
        if v:
            tooth = 1 << (bi >> 2)
            j = (bi & 3) << 3
            while v:
                if v & 1:
                    cols[j] |= tooth
                v >>= 1
                j += 1
    return cols


def _naf(k, w=NAF_W):
    """Width-w NAF digits of k >= 0, least significant first (odd digits in (-2^(w-1), 2^(w-1))), in an
    array('b') with at most 4 zero digits on top: one allocation of about as many bytes as k has bits. A list
    grown digit by digit ended in a 2 KiB block: in a fragmented heap (a board without PSRAM) the allocation
    that failed first when a command was verified (docs/performance.md, "Heap on a board")."""
    out = array("b", bytes(4 * len("%x" % k) + 1))  # >= k's bits + 1 (a carry out of the top): zeros above
    full = 1 << w
    half = full >> 1
    mask = full - 1
    i = 0
    while k:
        if k & 1:
            d = k & mask
            if d >= half:
                d -= full
            k -= d
            out[i] = d
        k >>= 1
        i += 1
    return out


def _mul_joint(cols, naf, qtab, P=_P):
    """sum_j 2^j T[cols[j]] + sum_i 2^i naf[i] Q  (Jacobian list [X, Y, Z]).

    cols: comb columns of the G scalar (len 32); naf: NAF digits of the Q scalar or None; qtab: the odd
    multiples [Q, 3Q, 5Q, ...] as Jacobian [X, Y, Z] lists (or None). The doubling and both additions are
    inlined: this loop is the whole cost of signing and verifying.
    """
    table = _table
    mv = memoryview(table)
    X = Y = 1
    Z = 0
    top = len(naf) if naf else COMB_SPACING
    if top < COMB_SPACING:
        top = COMB_SPACING
    for t in range(top - 1, -1, -1):
        # --- double (a = -3) ---
        if Z:
            d = Z * Z % P
            g = Y * Y % P
            b = X * g % P
            a = 3 * (X - d) * (X + d) % P
            Z = 2 * Y * Z % P
            X = (a * a - 8 * b) % P
            Y = (a * (4 * b - X) - 8 * g * g) % P
        # --- add +-(2m+1)Q from the NAF (Jacobian + Jacobian) ---
        if naf and t < len(naf):
            dig = naf[t]
            if dig:
                q = qtab[(dig if dig > 0 else -dig) >> 1]
                X2 = q[0]
                Y2 = q[1] if dig > 0 else P - q[1]
                Z2 = q[2]
                if Z == 0:
                    X, Y, Z = X2, Y2, Z2
                else:
                    z1 = Z * Z % P
                    z2 = Z2 * Z2 % P
                    U1 = X * z2 % P
                    S1 = Y * z2 % P * Z2 % P
                    H = X2 * z1 % P - U1
                    R = Y2 * z1 % P * Z % P - S1
                    if H == 0:
                        X, Y, Z = _add(X, Y, Z, X2, Y2, Z2)
                    else:
                        HH = H * H % P
                        HHH = H * HH % P
                        V = U1 * HH % P
                        X = (R * R - HHH - 2 * V) % P
                        Y = (R * (V - X) - S1 * HHH) % P
                        Z = Z * Z2 % P * H % P
        # --- add the comb column T[c] (Jacobian + affine) ---
        if t < COMB_SPACING:
            c = cols[t]
            if c:
                o = (c - 1) << 6
                x2 = int.from_bytes(mv[o:o + 32], "big")
                y2 = int.from_bytes(mv[o + 32:o + 64], "big")
                if Z == 0:
                    X, Y, Z = x2, y2, 1
                else:
                    z1 = Z * Z % P
                    H = x2 * z1 % P - X
                    R = y2 * z1 % P * Z % P - Y
                    if H == 0:
                        X, Y, Z = _add(X, Y, Z, x2, y2, 1)
                    else:
                        HH = H * H % P
                        HHH = H * HH % P
                        V = X * HH % P
                        X3 = (R * R - HHH - 2 * V) % P
                        Y = (R * (V - X3) - Y * HHH) % P
                        X = X3
                        Z = Z * H % P
    return [X, Y, Z]


def _mul_g(k):
    """k*G as Jacobian [X, Y, Z] (k may be 0 or any value < 2^256)."""
    if _table is None:
        precompute()
    return _mul_joint(_comb_columns(k), None, None)


# ---------------------------------------------------------------------------------------------------------
# HMAC-SHA256 (RFC 2104) and the RFC 6979 nonce generator

_IPAD = int.from_bytes(b"\x36" * 64, "big")
_OPAD = int.from_bytes(b"\x5c" * 64, "big")


def hmac_sha256(key, msg):
    key = bytes(key)
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = int.from_bytes(key + b"\x00" * (64 - len(key)), "big")
    h = hashlib.sha256((k ^ _IPAD).to_bytes(64, "big"))
    h.update(msg)
    inner = h.digest()
    h = hashlib.sha256((k ^ _OPAD).to_bytes(64, "big"))
    h.update(inner)
    return h.digest()


def _bits2int(b):
    # qlen = hlen = 256 for P-256 with SHA-256: the whole 32-byte string is the integer
    return int.from_bytes(b, "big")


def rfc6979_nonces(x, h1):
    """Candidate nonces k in [1, n-1] for private key int x and message hash h1 (RFC 6979 section 3.2)."""
    xo = _to32(x)
    z = _bits2int(h1)
    if z >= _N:
        z -= _N
    ho = _to32(z)
    V = b"\x01" * 32
    K = b"\x00" * 32
    K = hmac_sha256(K, V + b"\x00" + xo + ho)
    V = hmac_sha256(K, V)
    K = hmac_sha256(K, V + b"\x01" + xo + ho)
    V = hmac_sha256(K, V)
    while True:
        V = hmac_sha256(K, V)  # tlen = qlen = 256: one block
        k = _bits2int(V)
        if 1 <= k < _N:
            yield k
        K = hmac_sha256(K, V + b"\x00")
        V = hmac_sha256(K, V)


# ---------------------------------------------------------------------------------------------------------
# keys


def _scalar(d):
    if not isinstance(d, (bytes, bytearray)) or len(d) != 32:
        raise ValueError("private key must be 32 bytes")
    x = _from_bytes(d)
    if not 1 <= x < _N:
        raise ValueError("private key out of range")
    return x


def _encode_point(x, y):
    return b"\x04" + _to32(x) + _to32(y)


def decode_point(pub):
    """(x, y) of a 65-byte uncompressed public key, or None if it is not a point on P-256."""
    if not isinstance(pub, (bytes, bytearray, memoryview)) or len(pub) != 65 or pub[0] != 4:
        return None
    x = _from_bytes(bytes(pub[1:33]))
    y = _from_bytes(bytes(pub[33:65]))
    if not _on_curve(x, y):
        return None  # also rules out infinity: (0, 0) is not on the curve since b != 0
    return x, y


def public_key(d):
    """65-byte uncompressed public key 0x04 || x || y of private key d (32 bytes)."""
    X, Y, Z = _mul_g(_scalar(d))
    x, y = _to_affine(X, Y, Z)
    return _encode_point(x, y)


def generate_key(urandom=None):
    """New key pair (d, pub): d uniform in [1, n-1] by rejection sampling from urandom(32)."""
    rnd = urandom or _urandom
    if rnd is None:
        raise RuntimeError("no random source: pass urandom=")
    while True:
        d = rnd(32)
        if len(d) != 32:
            raise ValueError("urandom returned %d bytes" % len(d))
        x = _from_bytes(d)
        if 1 <= x < _N:
            d = bytes(d)
            return d, public_key(d)


# ---------------------------------------------------------------------------------------------------------
# ECDSA


def sign_digest(d, h1):
    """ECDSA signature r || s (64 bytes) over a 32-byte SHA-256 digest, k by RFC 6979."""
    x = _scalar(d)
    if len(h1) != 32:
        raise ValueError("digest must be 32 bytes")
    z = _bits2int(h1)
    for k in rfc6979_nonces(x, h1):
        X, Y, Z = _mul_g(k)
        r = _to_affine(X, Y, Z)[0] % _N
        if r == 0:
            continue
        s = _inv(k, _N) * (z + r * x) % _N
        if s == 0:
            continue
        return _to32(r) + _to32(s)


def sign(d, msg):
    """ES256: ECDSA P-256 signature r || s (64 bytes) over SHA-256(msg), deterministic (RFC 6979)."""
    return sign_digest(d, hashlib.sha256(msg).digest())


def verify_digest(pub, h1, sig):
    """True iff sig (64 bytes r || s) is a valid signature of the 32-byte digest h1 by pub."""
    if not isinstance(sig, (bytes, bytearray, memoryview)) or len(sig) != 64:
        return False
    if not isinstance(h1, (bytes, bytearray, memoryview)) or len(h1) != 32:
        return False
    q = decode_point(pub)
    if q is None:
        return False
    r = _from_bytes(bytes(sig[:32]))
    s = _from_bytes(bytes(sig[32:]))
    if not (0 < r < _N and 0 < s < _N):
        return False
    if _table is None:
        precompute()
    w = _inv(s, _N)
    u1 = _bits2int(bytes(h1)) * w % _N
    u2 = r * w % _N
    # odd multiples Q, 3Q, ..., 15Q (Jacobian)
    qx, qy = q
    q2 = _dbl(qx, qy, 1)
    qtab = [[qx, qy, 1]]
    for _ in range((1 << (NAF_W - 2)) - 1):
        a = qtab[-1]
        qtab.append(_add(a[0], a[1], a[2], q2[0], q2[1], q2[2]))
    X, Y, Z = _mul_joint(_comb_columns(u1), _naf(u2), qtab)
    if Z == 0:
        return False
    # x(R) mod n == r  <=>  X == r Z^2 (mod p), or X == (r + n) Z^2 when r + n < p
    zz = Z * Z % _P
    if (X - r * zz) % _P == 0:
        return True
    return r + _N < _P and (X - (r + _N) * zz) % _P == 0


def verify(pub, msg, sig):
    """ES256 verification of sig (64 bytes r || s) over msg by the 65-byte public key pub. Never raises."""
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        return False
    return verify_digest(pub, hashlib.sha256(msg).digest(), sig)
