"""A verified, decoded message, and the two checks that make one: ``verify_and_decode`` for a meter's frame
(kinds 1-6) and ``verify_host_message`` for a head-end command or acknowledgement, checked the way a meter must.

Meter -> host: ``verify_and_decode(cose_bytes, lookup_pub) -> Message`` checks, in this order,

1. size (at most ``MAX_MESSAGE`` = 1024 bytes) and the COSE_Sign1 envelope: tag 18, an array of 4, protected
   header exactly ``h'A10126'`` (alg ES256), unprotected header exactly ``{4: kid}`` with an 8-byte kid, a
   byte-string payload, and the envelope's bytes must be its deterministic encoding;
2. the key: ``lookup_pub(kid)`` returns a P-256 ``EllipticCurvePublicKey``, or None for an unknown kid;
3. the 64-byte r||s signature over ``Sig_structure = ["Signature1", h'A10126', h'', payload]``, by
   ``cryptography`` (OpenSSL), on the payload bytes exactly as received;
4. the payload: decoded by the meter's own strict decoder (meter.cbor: only the deterministic encoding of RFC
   8949 section 4.2.1, at most ``MAX_DEPTH`` nested containers, no floats, map keys only int/text/bytes),
   validated against the CDDL for its kind (meterkit.wire.schema), the device id in the payload equal to the
   kid.

Every failure raises its own subclass of ``ProtocolError`` (meterkit.wire.errors). Verification is stateless;
duplicates are the job of ``ReplayGuard`` (per device sequence numbers, never a hash of the frame: ECDSA
signatures are malleable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meter import cbor as mcbor
from meter.messages import (
    COMMAND_MAX_ITEMS,
    COMMAND_MAX_PAYLOAD,
    K_COUNTER,
    K_DEVICE,
    K_EXPIRES,
    K_ISSUED,
    K_KIND,
    K_SEQ,
    K_STATUS,
    K_TIME,
)
from meterkit.wire.envelope import MAX_HOST_MESSAGE, loads, open_envelope
from meterkit.wire.errors import Expired, KidMismatch, NotCanonical, OutOfRange, Replay, WrongDevice
from meterkit.wire.names import HOST_KINDS, KIND_NAMES, METER_KINDS
from meterkit.wire.schema import MAX_DEPTH, validate


class Message:
    """A verified, decoded message.

    kind, device_id (the meter: sender of a meter message, target of a host message), seq (frame sequence
    number; for commands and acks the command counter), time (UTC seconds; for host messages the issue time),
    status (status bits; 0 for host messages), body (the kind-specific keys, >= 6 for meter messages, 9 and
    up for host messages), raw (the exact COSE bytes), kid (the signer's key id).
    """

    __slots__ = ("kind", "device_id", "seq", "time", "status", "body", "raw", "kid")

    def __init__(self, kind: int, device_id: bytes, seq: int, time: int, status: int, body: dict,
                 raw: bytes, kid: bytes):
        self.kind = kind
        self.device_id = device_id
        self.seq = seq
        self.time = time
        self.status = status
        self.body = body
        self.raw = raw
        self.kid = kid

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def counter(self) -> int:
        return self.seq

    @property
    def expires(self) -> int | None:
        return self.body.get(K_EXPIRES) if self.kind in HOST_KINDS else None

    def __repr__(self) -> str:
        return (f"Message({self.kind_name}, device={self.device_id.hex()}, seq={self.seq}, time={self.time}, "
                f"status={self.status:#x}, body={self.body!r})")


def verify_and_decode(cose_bytes: bytes, lookup_pub: Callable[[bytes], Any]) -> Message:
    """Verify and decode one meter -> host message (kinds 1-6); raise a ProtocolError subclass if refused.

    lookup_pub(kid) returns the meter's P-256 public key (cryptography EllipticCurvePublicKey), or None
    (or raises KeyError) for an unknown kid.
    """
    kid, payload, raw = open_envelope(cose_bytes, lookup_pub)
    # strict: whatever it accepts is the unique deterministic encoding of the value (nothing to re-encode)
    p = loads(payload, "the payload")
    kind = validate(p, METER_KINDS)
    device = p[K_DEVICE]
    if device != kid:
        raise KidMismatch(f"payload device id {device.hex()} is not the signer's kid {kid.hex()}")
    del p[K_KIND], p[K_DEVICE]
    seq = p.pop(K_SEQ)
    t = p.pop(K_TIME)
    return Message(kind, device, seq, t, p.pop(K_STATUS), p, raw, kid)


def verify_host_message(cose_bytes: bytes, lookup_pub: Callable[[bytes], Any], device_id: bytes, now: int,
                        last_counter: int | None = None) -> Message:
    """Verify a head-end command or acknowledgement the way a meter must (used in tests and tools).

    Refuses, besides everything verify_and_decode refuses: a message for another device ('wrong-device'),
    one that expired before `now` ('expired'), or one whose counter is not above `last_counter` ('replay').
    Message.seq is the command counter, Message.time the issue time, Message.kid the head-end key id.
    """
    kid, payload, raw = open_envelope(cose_bytes, lookup_pub, MAX_HOST_MESSAGE)
    # the limits the meter decodes a head-end payload with (meter.messages.verify_host)
    p = loads(payload, "the payload", COMMAND_MAX_PAYLOAD, MAX_DEPTH, COMMAND_MAX_ITEMS)
    kind = validate(p, HOST_KINDS)
    try:
        canonical = mcbor.encode(p)
    except mcbor.EncodeError as e:
        raise NotCanonical(f"the payload cannot be encoded deterministically: {e}") from None
    if canonical != payload:
        raise NotCanonical("the payload is not in deterministic CBOR encoding (RFC 8949 section 4.2.1)")
    target = p[K_DEVICE]
    if target != device_id:
        raise WrongDevice(f"{KIND_NAMES[kind]} is for device {target.hex()}, not {bytes(device_id).hex()}")
    issued, expires, counter = p[K_ISSUED], p[K_EXPIRES], p[K_COUNTER]
    if expires < issued:
        raise OutOfRange(f"{KIND_NAMES[kind]} expires ({expires}) before it was issued ({issued})")
    if now > expires:
        raise Expired(f"{KIND_NAMES[kind]} {counter} expired at {expires}, now {now}")
    if last_counter is not None and counter <= last_counter:
        raise Replay(f"{KIND_NAMES[kind]} counter {counter} not above the last accepted {last_counter}")
    del p[K_KIND], p[K_DEVICE], p[K_COUNTER], p[K_ISSUED]
    return Message(kind, target, counter, issued, 0, p, raw, kid)
