"""Why a message is refused: one ProtocolError subclass per reason (its ``reason`` is the short code that
counters, logs and the rejects table use)."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that must be refused. `reason` is a short code for counters and logs."""

    reason = "invalid"


class Oversized(ProtocolError):
    reason = "oversized"


class Truncated(ProtocolError):
    reason = "truncated"


class Malformed(ProtocolError):
    reason = "malformed"


class TooDeep(ProtocolError):
    reason = "too-deep"


class NotSign1(ProtocolError):
    reason = "not-sign1"


class BadEnvelope(ProtocolError):
    reason = "bad-envelope"


class WrongAlgorithm(ProtocolError):
    reason = "wrong-alg"


class NotCanonical(ProtocolError):
    reason = "not-canonical"


class UnknownKid(ProtocolError):
    reason = "unknown-kid"


class BadSignature(ProtocolError):
    reason = "bad-signature"


class WrongType(ProtocolError):
    reason = "wrong-type"


class MissingKey(ProtocolError):
    reason = "missing-key"


class UnknownKey(ProtocolError):
    reason = "unknown-key"


class OutOfRange(ProtocolError):
    reason = "out-of-range"


class UnknownKind(ProtocolError):
    reason = "unknown-kind"


class WrongKind(ProtocolError):
    """A valid kind, but for the other direction (a command where a meter message is expected, or back)."""

    reason = "wrong-kind"


class KidMismatch(ProtocolError):
    reason = "kid-mismatch"


class Replay(ProtocolError):
    reason = "replay"


class Stale(Replay):
    """Too far below the device's newest sequence number for the replay window to tell (see ReplayGuard)."""

    reason = "stale"


class Expired(ProtocolError):
    reason = "expired"


class WrongDevice(ProtocolError):
    reason = "wrong-device"
