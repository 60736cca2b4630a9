"""The protocol on the head-end: verify, decode, sign, refuse replays. The schema itself (kinds, keys, ops,
status bits, OBIS packing) and the COSE envelope layout are the firmware's own (meter.messages, meter.cose):
this package imports them and declares no number of its own.

    message   verify_and_decode (meter -> host), verify_host_message (a command or ack, checked as a meter does)
    records   the typed records a verified message becomes (Reading, IntervalRow, Event, BillingSnapshot, ...)
    schema    the CDDL of every kind, checked
    envelope  COSE_Sign1 parse, signature check and ES256 signing with cryptography
    headend   HeadEnd: signs commands and cumulative acknowledgements
    replay    ReplayGuard: per-device sequence numbers in bounded memory
    keys      P-256 points, key ids, key files;   errors: one ProtocolError per refusal reason
    names     names for people (kinds, status bits, operations);   audit: a file of frames checked as a customer would
    obis_code, obis_key   register key <-> OBIS code text ('1.8.0'), as meter.messages packs them

May import: meter (cbor, cose, frame, messages), cbor2, cryptography, the standard library. Nothing else of meterkit.
"""

from meter.messages import obis_code, obis_key
from meterkit.wire.envelope import MAX_HOST_MESSAGE, MAX_MESSAGE, SIGNATURE_LEN, sig_structure, sign1
from meterkit.wire.errors import (
                                  BadEnvelope,
                                  BadSignature,
                                  Expired,
                                  KidMismatch,
                                  Malformed,
                                  MissingKey,
                                  NotCanonical,
                                  NotSign1,
                                  OutOfRange,
                                  Oversized,
                                  ProtocolError,
                                  Replay,
                                  Stale,
                                  TooDeep,
                                  Truncated,
                                  UnknownKey,
                                  UnknownKid,
                                  UnknownKind,
                                  WrongAlgorithm,
                                  WrongDevice,
                                  WrongKind,
                                  WrongType,
)
from meterkit.wire.headend import HeadEnd
from meterkit.wire.keys import key_id, point_of, public_bytes, public_from_bytes
from meterkit.wire.message import Message, verify_and_decode, verify_host_message
from meterkit.wire.names import HOST_KINDS, KIND_NAMES, METER_KINDS, op_name, row_status_names, status_names
from meterkit.wire.replay import ReplayGuard
from meterkit.wire.schema import DEVICE_ID_LEN, MAX_DEPTH

__all__ = [
    "BadEnvelope", "BadSignature", "DEVICE_ID_LEN", "Expired", "HOST_KINDS", "HeadEnd", "KIND_NAMES", "KidMismatch",
    "MAX_DEPTH", "MAX_HOST_MESSAGE", "MAX_MESSAGE", "METER_KINDS", "Malformed", "Message", "MissingKey",
    "NotCanonical", "NotSign1", "OutOfRange", "Oversized", "ProtocolError", "Replay", "ReplayGuard", "SIGNATURE_LEN",
    "Stale", "TooDeep", "Truncated", "UnknownKey", "UnknownKid", "UnknownKind", "WrongAlgorithm", "WrongDevice",
    "WrongKind", "WrongType", "key_id", "obis_code", "obis_key", "op_name", "point_of", "public_bytes",
    "public_from_bytes", "row_status_names", "sig_structure", "sign1", "status_names", "verify_and_decode",
    "verify_host_message",
]
