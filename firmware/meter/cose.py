# COSE_Sign1 (RFC 9052 section 4.2) with ES256 (COSE alg -7): the envelope of every meterkit message.
# Pure: runs under MicroPython and CPython.
#
#   sign1(d, kid, payload, aad=b"") -> frame bytes
#   verify1(frame, lookup_pub_by_kid, aad=b"", max_len=cbor.MAX_LEN) -> (kid, payload)
#
# Frame = Tag(18, [protected, unprotected, payload, signature]) in deterministic CBOR, with
#   protected   = bstr .cbor {1: -7}          (alg: ES256) -> the 3 bytes a1 01 26
#   unprotected = {4: kid}                    (kid: bstr, the 8-byte device id or the head-end key id)
#   payload     = bstr (the message's own deterministic CBOR; never detached)
#   signature   = 64 bytes r || s over Sig_structure = ["Signature1", protected, external_aad, payload]
#
# Verification works on the bytes received: the protected header and the payload are checked exactly as
# sent (the Sig_structure wraps those byte strings; nothing is decoded and re-encoded). The frame must be the
# deterministic encoding, must carry exactly the headers above (anything else is refused, since the
# unprotected bucket is not covered by the signature), so an accepted frame is a byte-exact copy of what
# the signer produced, up to ECDSA's own malleability: (r, n - s) verifies as well as (r, s). Deduplicate
# and detect replays by the sequence number/counter inside the payload, never by a hash of the frame.

import hashlib

from meter import cbor, p256

TAG_SIGN1 = 18
ALG_ES256 = -7
HDR_ALG = 1
HDR_KID = 4

PROTECTED_ES256 = cbor.encode({HDR_ALG: ALG_ES256})  # b"\xa1\x01\x26"
KID_LEN = 8  # a device id, or a head-end key id
SIG_LEN = 64  # r || s

# The one deterministic encoding of a meterkit COSE_Sign1 (8-byte kid, 64-byte signature) is a fixed layout:
#   ENVELOPE_HEAD | kid (8) | bstr head of the payload | payload | SIG_HEAD | signature (64)
# split() slices it, envelope() assembles it: a fraction of a CBOR parse. Nothing else knows these offsets.
ENVELOPE_HEAD = b"\xd2\x84\x43\xa1\x01\x26\xa1\x04\x48"  # tag 18, array(4), bstr(3) {1: -7}, {4: bstr(8) ...
SIG_HEAD = b"\x58\x40"  # bstr(64)
SIG_STRUCTURE_HEAD = b"\x84\x6aSignature1\x43\xa1\x01\x26\x40"  # ["Signature1", protected, h'' (no aad), ...
_KID_AT = len(ENVELOPE_HEAD)
_PAYLOAD_HEAD_AT = _KID_AT + KID_LEN


def bstr_head(n):
    """The shortest CBOR head of a byte string of n bytes."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return bytes((0x59, n >> 8, n & 0xFF))
    return bytes((0x5A, n >> 24, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


def claimed_kid(msg):
    """The kid a message claims (before any check), or b"" when it does not have the usual layout."""
    if len(msg) >= _PAYLOAD_HEAD_AT and msg[:_KID_AT] == ENVELOPE_HEAD:
        return bytes(msg[_KID_AT:_PAYLOAD_HEAD_AT])
    return b""


def split(msg, max_len=cbor.MAX_LEN):
    """(kid, payload head, payload, signature) when `msg` is byte for byte the canonical layout above (a
    payload shorter than 64 KiB); else None, and verify1 or a full parser says what is wrong."""
    n = len(msg)
    i = _PAYLOAD_HEAD_AT
    if n > max_len or n <= i or msg[:_KID_AT] != ENVELOPE_HEAD:
        return None
    h = msg[i]
    if 0x40 <= h < 0x58:
        start, size = i + 1, h - 0x40
    elif h == 0x58 and n > i + 1 and msg[i + 1] >= 24:
        start, size = i + 2, msg[i + 1]
    elif h == 0x59 and n > i + 2 and msg[i + 1] >= 1:
        start, size = i + 3, (msg[i + 1] << 8) | msg[i + 2]
    else:
        return None
    end = start + size
    if n != end + 2 + SIG_LEN or msg[end:end + 2] != SIG_HEAD:
        return None
    return msg[_KID_AT:i], msg[i:start], msg[start:end], msg[end + 2:]


def envelope(kid, payload, signature):
    """The deterministic COSE_Sign1 bytes of (8-byte kid, payload, signature): what sign1 produces."""
    return b"".join((ENVELOPE_HEAD, bytes(kid), bstr_head(len(payload)), bytes(payload),
                     bstr_head(len(signature)), bytes(signature)))


class COSEError(ValueError):
    pass


class Malformed(COSEError):
    """Not well-formed deterministic CBOR (the cbor.DecodeError is the `cause` attribute)."""


class NotSign1(COSEError):
    """The frame is not a CBOR tag 18 (COSE_Sign1)."""


class BadStructure(COSEError):
    """Tag 18, but not [bstr protected, {4: bstr kid}, bstr payload, bstr signature]."""


class BadAlgorithm(COSEError):
    """The protected header does not say exactly alg = ES256 (-7)."""


class UnknownKid(COSEError):
    """No public key for this kid (the `kid` attribute)."""


class BadSignature(COSEError):
    """The signature does not verify (or is not 64 bytes); the `kid` attribute names the claimed signer."""


def _hex(b):
    return "".join("%02x" % x for x in b[:32])


def _error(cls, msg, **attrs):
    # attributes set after construction: MicroPython exception subclasses cannot chain __init__ portably
    e = cls(msg)
    for k in attrs:
        setattr(e, k, attrs[k])
    return e


def sig_structure(protected, payload, aad=b""):
    """Deterministic encoding of the Sig_structure for COSE_Sign1 (RFC 9052 section 4.4)."""
    buf = bytearray()
    cbor.encode_into(buf, ["Signature1", protected, aad, payload])
    return buf


def _sig_digest(protected, payload, aad):
    # SHA-256 of sig_structure(protected, payload, aad) with the payload hashed where it lies: a command's
    # payload (up to 3 KB: a TOU calendar) is not copied into a Sig_structure on a board's small heap
    head = bytearray(b"\x84")
    cbor.encode_into(head, "Signature1")
    cbor.encode_into(head, protected)
    cbor.encode_into(head, aad)
    head.extend(bstr_head(len(payload)))
    h = hashlib.sha256(head)
    h.update(payload)
    return h.digest()


def sign1(d, kid, payload, aad=b""):
    """COSE_Sign1 frame over payload (bytes), signed with private key d (32 bytes), labelled with kid."""
    if not isinstance(kid, (bytes, bytearray)) or not isinstance(payload, (bytes, bytearray)):
        raise TypeError("kid and payload must be bytes")
    signature = p256.sign(d, sig_structure(PROTECTED_ES256, payload, aad))
    out = bytearray()
    cbor.encode_into(out, cbor.Tag(TAG_SIGN1, [PROTECTED_ES256, {HDR_KID: bytes(kid)}, payload, signature]))
    return bytes(out)


def _parse(frame, max_len):
    try:
        obj = cbor.decode(frame, max_len=max_len, max_depth=4, max_items=16)
    except cbor.DecodeError as e:
        raise _error(Malformed, "frame is not deterministic CBOR: %s: %s" % (type(e).__name__, e), cause=e)
    if not isinstance(obj, cbor.Tag) or obj.number != TAG_SIGN1:
        raise NotSign1("not a COSE_Sign1 (CBOR tag 18)")
    msg = obj.value
    if not isinstance(msg, list) or len(msg) != 4:
        raise BadStructure("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = msg
    if not isinstance(protected, bytes):
        raise BadStructure("protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise BadStructure("unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise BadStructure("payload must be a byte string (detached payloads are not used)")
    if not isinstance(signature, bytes):
        raise BadStructure("signature must be a byte string")
    try:
        # a zero-length protected bstr stands for an empty map (RFC 9052 section 3)
        prot = cbor.decode(protected, max_len=64, max_depth=2, max_items=16) if protected else {}
    except cbor.DecodeError as e:
        raise _error(Malformed, "protected header is not deterministic CBOR: %s: %s" % (type(e).__name__, e),
                     cause=e)
    if not isinstance(prot, dict):
        raise BadStructure("protected header must encode a map")
    if prot.get(HDR_ALG) != ALG_ES256:
        raise BadAlgorithm("algorithm %r, want ES256 (-7)" % (prot.get(HDR_ALG),))
    if len(prot) != 1:
        raise BadStructure("protected header may carry only alg")
    if len(unprotected) != 1 or HDR_KID not in unprotected:
        raise BadStructure("unprotected header must be exactly {4: kid}")
    kid = unprotected[HDR_KID]
    if not isinstance(kid, bytes):
        raise BadStructure("kid must be a byte string")
    return protected, kid, payload, signature


def verify1(frame, lookup_pub_by_kid, aad=b"", max_len=cbor.MAX_LEN):
    """Check a COSE_Sign1 frame; return (kid, payload) or raise a COSEError subclass.

    lookup_pub_by_kid(kid) returns the signer's 65-byte public key, or None (KeyError also counts) if the kid
    is unknown. Order of checks: CBOR, tag, structure, alg, kid, signature.
    """
    protected, kid, payload, signature = _parse(frame, max_len)
    try:
        pub = lookup_pub_by_kid(kid)
    except KeyError:
        pub = None
    if pub is None:
        raise _error(UnknownKid, "unknown kid %s" % _hex(kid), kid=kid)
    if len(signature) != 64:
        raise _error(BadSignature, "signature is %d bytes, want 64" % len(signature), kid=kid)
    if not p256.verify_digest(pub, _sig_digest(protected, payload, aad), signature):
        raise _error(BadSignature, "signature does not verify for kid %s" % _hex(kid), kid=kid)
    return kid, payload
