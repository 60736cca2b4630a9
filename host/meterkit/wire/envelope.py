"""The COSE_Sign1 envelope (RFC 9052) on the head-end, checked and made with ``cryptography`` (OpenSSL).

The layout is meter.cose's: ``split`` slices a canonical message, ``envelope`` assembles one; this module adds
the strict parse that says what is wrong with any other bytes, the signature check and ES256 signing with
RFC 6979 nonces (byte-identical to the firmware's ``meter.cose.sign1`` with the same key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from meter import cbor as mcbor
from meter import cose as mcose
from meter import frame as mframe
from meterkit.wire.errors import (
    BadEnvelope,
    BadSignature,
    Malformed,
    NotCanonical,
    NotSign1,
    Oversized,
    ProtocolError,
    TooDeep,
    Truncated,
    UnknownKid,
    WrongAlgorithm,
    WrongType,
)
from meterkit.wire.schema import DEVICE_ID_LEN, MAX_DEPTH

MAX_MESSAGE = 1024  # largest COSE_Sign1 from a meter, bytes (one frame)
MAX_HOST_MESSAGE = mframe.HOST_MAX_FRAME  # a head-end message may carry a whole TOU calendar
SIGNATURE_LEN = mcose.SIG_LEN
PROTECTED_ES256 = mcose.PROTECTED_ES256

ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_ECDSA_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


_BSTR_HEADS = [mcose.bstr_head(n) for n in range(MAX_MESSAGE + 1)]  # the common sizes, made once


def _bstr_head(n: int) -> bytes:
    return _BSTR_HEADS[n] if n < len(_BSTR_HEADS) else mcose.bstr_head(n)


def sig_structure(payload: bytes) -> bytes:
    """The bytes ES256 signs for a COSE_Sign1 with protected h'A10126' and no external AAD."""
    return mcose.SIG_STRUCTURE_HEAD + _bstr_head(len(payload)) + payload


# The meter's own decoder decodes on the head-end too (meter.cbor, pure Python): what one accepts, the other
# does (tests/host/test_decoder_differential.py checks it in MicroPython). Every accepted input is the unique
# deterministic encoding of what it decodes to; ints only in CBOR's range; no floats; simple values only
# false, true and null; map keys only int, text or byte strings (never `true`, which Python would take for 1).
# Each refusal becomes the ProtocolError that says why.
_DECODE_REASONS = (
    (mcbor.TooLong, Oversized, "is too long"), (mcbor.Truncated, Truncated, "ends early"),
    (mcbor.TooManyItems, Oversized, "has too many data items"), (mcbor.FloatRejected, WrongType, "has a float"),
    (mcbor.NotShortest, NotCanonical, "is not in deterministic CBOR encoding"),
    (mcbor.UnsortedKeys, NotCanonical, "is not in deterministic CBOR encoding"),
    (mcbor.DuplicateKey, NotCanonical, "is not in deterministic CBOR encoding"),
    (mcbor.TrailingBytes, NotCanonical, "is not in deterministic CBOR encoding"),
    (mcbor.IndefiniteLength, NotCanonical, "is not in deterministic CBOR encoding"),
)
ENVELOPE_DEPTH, ENVELOPE_ITEMS = 4, 16  # what meter.cose allows a COSE_Sign1: [bstr, {4: bstr}, bstr, bstr]


def decode_error(e: mcbor.DecodeError, what: str, max_depth: int = MAX_DEPTH) -> ProtocolError:
    """The ProtocolError for the meter decoder's refusal `e` of `what`."""
    if isinstance(e, mcbor.TooDeep):
        return TooDeep(f"{what} nests containers deeper than {max_depth}")
    if isinstance(e, mcbor.IndefiniteLength) and str(e).startswith("break byte"):
        return Malformed(f"{what} is not well-formed CBOR: a stray break byte: {e}")  # no indefinite item
    for cls, error, words in _DECODE_REASONS:
        if isinstance(e, cls):
            return error(f"{what} {words}: {type(e).__name__}: {e}")
    return Malformed(f"{what} is not well-formed CBOR: {type(e).__name__}: {e}")  # BadKey, BadSimple, UTF-8...


def loads(data: bytes, what: str, max_len: int = MAX_MESSAGE, max_depth: int = MAX_DEPTH,
          max_items: int = mcbor.MAX_ITEMS) -> Any:
    """Decode one data item exactly as the meter's decoder does (meter.cbor.decode, the same limits)."""
    try:
        return mcbor.decode(data, max_len=max_len, max_depth=max_depth, max_items=max_items)
    except mcbor.DecodeError as e:
        raise decode_error(e, what, max_depth) from None


def open_envelope(cose: bytes, lookup_pub: Callable[[bytes], Any],
                  max_len: int = MAX_MESSAGE) -> tuple[bytes, bytes, bytes]:
    """Check the envelope and the signature; return (kid, payload bytes, the message as bytes)."""
    if type(cose) is bytes:
        parts = mcose.split(cose, max_len)  # the canonical layout: sliced, not parsed
        if parts is not None:
            return check_signature(cose, lookup_pub, *parts)
    if type(cose) is not bytes:
        if not isinstance(cose, (bytes, bytearray, memoryview)):
            raise TypeError("a COSE message is bytes")
        cose = bytes(cose)
    n = len(cose)
    if n > max_len:
        raise Oversized(f"message is {n} bytes, at most {max_len}")
    if n == 0:
        raise Truncated("empty message")
    try:
        env = mcbor.decode(cose, max_len=max_len, max_depth=ENVELOPE_DEPTH, max_items=ENVELOPE_ITEMS)
    except mcbor.TrailingBytes as e:
        raise Malformed(f"bytes after the COSE_Sign1: {e}") from None
    except mcbor.TooManyItems:
        raise BadEnvelope(f"more than {ENVELOPE_ITEMS} data items: a COSE_Sign1 is [bstr, {{4: bstr}}, bstr, "
                          "bstr]") from None
    except mcbor.DecodeError as e:
        raise decode_error(e, "the COSE_Sign1", ENVELOPE_DEPTH) from None
    if type(env) is not mcbor.Tag or env.number != mcose.TAG_SIGN1:
        raise NotSign1("not a COSE_Sign1 (CBOR tag 18)")
    v = env.value
    if type(v) is not list or len(v) != 4:
        raise BadEnvelope("a COSE_Sign1 is an array of 4 [protected, unprotected, payload, signature]")
    protected, unprotected, payload, signature = v
    if type(protected) is not bytes:
        raise BadEnvelope("the protected header must be a byte string")
    if protected != PROTECTED_ES256:
        try:
            prot = mcbor.decode(protected, max_len=64, max_depth=2, max_items=16) if protected else {}
        except mcbor.DecodeError:
            prot = None
        if type(prot) is dict and prot.get(1, None) != -7:
            raise WrongAlgorithm(f"algorithm {prot.get(1)!r} in the protected header, want ES256 (-7)")
        raise BadEnvelope(f"the protected header must be exactly h'A10126' (alg ES256), "
                          f"not h'{protected.hex()}'")
    if type(unprotected) is not dict or len(unprotected) != 1 or mcose.HDR_KID not in unprotected:
        raise BadEnvelope("the unprotected header must be exactly {4: kid}")
    kid = unprotected[mcose.HDR_KID]
    if type(kid) is not bytes or len(kid) != DEVICE_ID_LEN:
        raise BadEnvelope(f"the kid must be an {DEVICE_ID_LEN}-byte byte string")
    if type(payload) is not bytes:
        raise BadEnvelope("the payload must be a byte string")
    if type(signature) is not bytes:
        raise BadEnvelope("the signature must be a byte string")
    payload_head = _bstr_head(len(payload))
    canonical = mcose.envelope(kid, payload, signature)
    if canonical != cose:
        if len(cose) > len(canonical) and cose.startswith(canonical):
            raise Malformed(f"{len(cose) - len(canonical)} bytes after the COSE_Sign1")
        raise NotCanonical("the COSE_Sign1 is not in deterministic CBOR encoding")
    return check_signature(cose, lookup_pub, kid, payload_head, payload, signature)


def check_signature(cose: bytes, lookup_pub: Callable[[bytes], Any], kid: bytes, payload_head: bytes,
                     payload: bytes, signature: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        pub = lookup_pub(kid)
    except KeyError:
        pub = None
    if pub is None:
        raise UnknownKid(f"no public key for kid {kid.hex()}")
    if len(signature) != SIGNATURE_LEN:
        raise BadSignature(f"signature is {len(signature)} bytes, want {SIGNATURE_LEN} (r || s)")
    # r = 0, s = 0 or >= n never verify (OpenSSL checks the ranges)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        pub.verify(der, b"".join((mcose.SIG_STRUCTURE_HEAD, payload_head, payload)), ECDSA_SHA256)
    except InvalidSignature:
        _check_p256_public(pub, kid)  # a key of another curve never verifies: say so instead
        raise BadSignature(f"signature does not verify for kid {kid.hex()}") from None
    except (AttributeError, TypeError):
        _check_p256_public(pub, kid)
        raise
    return kid, payload, cose


def _check_p256_public(pub: Any, kid: bytes) -> None:
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise TypeError(f"lookup_pub({kid.hex()}) must return a P-256 public key, got {type(pub).__name__}")


def check_p256_private(key: Any) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("an ES256 signer needs a P-256 (secp256r1) private key")


def sign1(private_key: ec.EllipticCurvePrivateKey, kid: bytes, payload: bytes) -> bytes:
    """COSE_Sign1 over payload (bytes), ES256 with RFC 6979 nonces: the bytes meter.cose.sign1 produces."""
    check_p256_private(private_key)
    if len(kid) != DEVICE_ID_LEN:
        raise ValueError(f"kid must be {DEVICE_ID_LEN} bytes")
    payload = bytes(payload)
    der = private_key.sign(sig_structure(payload), _ECDSA_DETERMINISTIC)
    r, s = decode_dss_signature(der)
    return mcose.envelope(kid, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big"))
