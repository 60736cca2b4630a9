"""The meterkit protocol on the head-end (docs/protocol.md is the contract; this module follows it).

Meter -> host: ``verify_and_decode(cose_bytes, lookup_pub) -> Message`` checks, in this order,

1. size (at most ``MAX_MESSAGE`` = 1024 bytes) and the COSE_Sign1 envelope, parsed with cbor2: tag 18, an
   array of 4, protected header exactly ``h'A10126'`` (alg ES256), unprotected header exactly ``{4: kid}``
   with an 8-byte kid, a byte-string payload, and the envelope's bytes must be its deterministic encoding;
2. the key: ``lookup_pub(kid)`` returns a P-256 ``EllipticCurvePublicKey``, or None for an unknown kid;
3. the 64-byte r||s signature over ``Sig_structure = ["Signature1", h'A10126', h'', payload]``, by
   ``cryptography`` (OpenSSL), on the payload bytes exactly as received;
4. the payload: cbor2-decoded (at most ``MAX_DEPTH`` nested containers), validated against the CDDL for its
   kind (required keys, no unknown keys, types, integer ranges, byte-string sizes), the device id in the
   payload equal to the kid, and deterministic: the received bytes must equal the deterministic re-encoding
   of what they decode to (RFC 8949 section 4.2.1).

Every failure raises its own subclass of ``ProtocolError`` (a ``ValueError``) whose ``reason`` is a short
code for counting ('oversized', 'truncated', 'malformed', 'too-deep', 'not-sign1', 'bad-envelope',
'wrong-alg', 'not-canonical', 'unknown-kid', 'bad-signature', 'wrong-type', 'missing-key', 'unknown-key',
'out-of-range', 'unknown-kind', 'wrong-kind', 'kid-mismatch', 'replay', 'stale', 'expired', 'wrong-device').

Verification is stateless; duplicates are the job of ``ReplayGuard`` (per device sequence numbers, never a
hash of the frame: ECDSA signatures are malleable). Host -> meter: ``HeadEnd`` signs commands and cumulative
acknowledgements (deterministic ES256, RFC 6979, byte-identical to the firmware's ``meter.cose.sign1`` with
the same key); ``verify_host_message`` is the matching check (the meter runs its own, in meter.cose).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from meter import cbor as mcbor
from meter import frame as mframe

# The wire schema is the meter's own (meter.messages): every kind, key, op, status bit and the OBIS packing.
from meter.messages import (
    ACK,
    BILLING,
    COMMAND,
    EVENT,
    HELLO,
    INTERVALS,
    K_ACK_SEQ,
    K_ANSWERED,
    K_ARGS,
    K_BILLING_REGISTERS,
    K_BOARD,
    K_BOOT_COUNT,
    K_CHECKPOINT_WH,
    K_COUNTER,
    K_CYCLE_US,
    K_DEMAND,
    K_DEVICE,
    K_EVENT_CODE,
    K_EVENT_SEQ,
    K_EVENT_TIME,
    K_EVENT_VALUE,
    K_EXPIRES,
    K_FIRMWARE,
    K_INSTANT,
    K_ISSUED,
    K_KIND,
    K_MAX_DEMAND,
    K_OP,
    K_PERIOD,
    K_PERIOD_END,
    K_REASON,
    K_REGISTERS,
    K_RESULT,
    K_ROWS,
    K_SEQ,
    K_SHUNT_DUTY_PPM,
    K_SHUNT_UOHM,
    K_STATUS,
    K_TARIFF,
    K_TIME,
    K_UNCOVERED_PPM,
    OBIS_CURRENT,  # noqa: F401 - re-exported
    OBIS_EXPORT,
    OBIS_IMPORT,
    OBIS_KEY_MAX,
    OBIS_POWER,  # noqa: F401 - re-exported
    OBIS_VOLTAGE,  # noqa: F401 - re-exported
    READING,
    RESPONSE,
    ROW_CLOCK_ADJUSTED,
    ROW_DST,
    ROW_PARTIAL,
    ROW_POWER_FAIL,
    ROW_RELAY_OPEN,
    ST_CHIP_RESET,
    ST_CLOCK_NOT_SET,
    ST_I2C_ERRORS,
    ST_MISSED,
    ST_OVERFLOW,
    ST_POWER_FAIL,
    ST_RELAY_OPEN,
    ST_RESTORED,
    ST_SENSOR_FAULT,
    obis_code,
    obis_key,  # noqa: F401 - re-exported
)

MAX_MESSAGE = 1024  # largest COSE_Sign1 from a meter, bytes (one frame)
MAX_HOST_MESSAGE = mframe.HOST_MAX_FRAME  # a head-end message may carry a whole TOU calendar
MAX_DEPTH = 8  # nested containers in a payload; the CDDL needs 3 (billing max demand, interval rows)
DEVICE_ID_LEN = 8
SIGNATURE_LEN = 64

UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
INT_MIN = -(1 << 64)  # CBOR's integer range is [-2^64, 2^64 - 1]
PPM = 1_000_000

# --- message kinds ------------------------------------------------------------------------------------------

KIND_NAMES = {HELLO: "hello", READING: "reading", INTERVALS: "intervals", EVENT: "event", BILLING: "billing",
              RESPONSE: "response", COMMAND: "command", ACK: "ack"}
METER_KINDS = frozenset({HELLO, READING, INTERVALS, EVENT, BILLING, RESPONSE})
HOST_KINDS = frozenset({COMMAND, ACK})

# --- status bits (key 5) ------------------------------------------------------------------------------------
STATUS_BITS = (
    (ST_SENSOR_FAULT, "sensor fault"),
    (ST_CLOCK_NOT_SET, "clock not set"),
    (ST_RELAY_OPEN, "relay open"),
    (ST_POWER_FAIL, "power failure"),
    (ST_CHIP_RESET, "chip reset"),
    (ST_I2C_ERRORS, "I2C errors"),
    (ST_OVERFLOW, "overflow"),
    (ST_MISSED, "conversions missed"),
    (ST_RESTORED, "registers restored"),
)

# interval row status bits
ROW_STATUS_BITS = (
    (ROW_POWER_FAIL, "power failure"),
    (ROW_CLOCK_ADJUSTED, "clock adjusted"),
    (ROW_DST, "DST"),
    (ROW_RELAY_OPEN, "relay open"),
    (ROW_PARTIAL, "partial"),
)


def _flag_names(value: int, table: tuple) -> list[str]:
    names = [name for bit, name in table if value & bit]
    known = 0
    for bit, _ in table:
        known |= bit
    rest = value & ~known
    b = 0
    while rest:
        if rest & 1:
            names.append(f"bit {b}")
        rest >>= 1
        b += 1
    return names


def status_names(status: int) -> list[str]:
    """Names of the status bits set in `status` (unknown bits as 'bit N')."""
    return _flag_names(status, STATUS_BITS)


def row_status_names(status: int) -> list[str]:
    return _flag_names(status, ROW_STATUS_BITS)


# --- errors -------------------------------------------------------------------------------------------------


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


# --- messages -----------------------------------------------------------------------------------------------


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


# --- payload schema (the CDDL of docs/protocol.md) ----------------------------------------------------------

_U64, _U32, _INT, _PPM, _TSTR, _DEVID, _REGS, _INST, _ROWS, _INT_TSTR, _MAXDEM, _ARGS, _DEMAND = range(13)

_COMMON = {K_KIND: _U64, K_DEVICE: _DEVID, K_SEQ: _U64, K_TIME: _U32, K_STATUS: _U64}
_HOST_COMMON = {K_KIND: _U64, K_DEVICE: _DEVID, K_COUNTER: _U64, K_ISSUED: _U32, K_EXPIRES: _U32}


class _Spec:
    """The CDDL of one kind: value type per key, which keys are required, and the key sequences a valid
    payload can have (ascending: the deterministic order), so the common case is one tuple lookup."""

    __slots__ = ("name", "fields", "required", "orders", "uint_max", "checkers")

    def __init__(self, kind: int, common: dict, extra: dict, optional: tuple = ()):
        self.name = KIND_NAMES[kind]
        self.fields = dict(common)
        self.fields.update(extra)
        self.required = tuple(k for k in sorted(self.fields) if k not in optional)
        orders = set()
        for mask in range(1 << len(optional)):
            present = set(self.required) | {o for i, o in enumerate(optional) if mask >> i & 1}
            orders.add(tuple(sorted(present)))
        self.orders = frozenset(orders)
        self.uint_max = {k: _RANGE[c] for k, c in self.fields.items() if c in _RANGE}
        self.checkers = {k: _CHECKERS[c] for k, c in self.fields.items()}


_RANGE = {_U64: UINT64_MAX, _U32: UINT32_MAX, _PPM: PPM}


def _type_name(v: Any) -> str:
    if type(v) is cbor2.CBORTag:
        return f"tag {v.tag}"
    names = {bool: "a boolean", int: "an integer", bytes: "a byte string", str: "a text string",
             list: "an array", dict: "a map", float: "a float", type(None): "null"}
    return names.get(type(v), type(v).__name__)


def _wrong(where: str, want: str, v: Any) -> WrongType:
    return WrongType(f"{where} must be {want}, got {_type_name(v)}")


def _uint(v: Any, where: str, hi: int) -> None:
    if type(v) is not int:
        raise _wrong(where, "an unsigned integer", v)
    if not 0 <= v <= hi:
        raise OutOfRange(f"{where} = {v} outside 0..{hi}")


def _int(v: Any, where: str) -> None:
    if type(v) is not int:
        raise _wrong(where, "an integer", v)
    if not INT_MIN <= v <= UINT64_MAX:
        raise OutOfRange(f"{where} = {v} outside CBOR's integer range")


# Checks are written for the path where everything is right: no message is formatted unless something
# failed (then the slow helpers above say what and where).


def _registers(v: Any, name: str, key: int, demand: bool = False) -> None:
    if type(v) is not dict:
        raise _wrong(f"{name} key {key}", "a map of OBIS register keys", v)
    if not v:
        raise MissingKey(f"{name} key {key} is empty (at least one register)")
    prev = -1
    for k, x in v.items():
        if type(k) is not int or not prev < k <= OBIS_KEY_MAX:
            if type(k) is not int:
                raise _wrong(f"{name} key {key}: register key", "an unsigned integer (C*10000+D*100+E)", k)
            if not 0 <= k <= OBIS_KEY_MAX:
                raise OutOfRange(f"{name} key {key}: register key {k} is not an OBIS C.D.E packing")
            raise NotCanonical(f"{name} key {key}: register keys not in ascending order")
        prev = k
        if demand:
            if type(x) is not list or len(x) != 2:
                raise _wrong(f"{name} key {key}[{obis_code(k)}]", "an array [W, time]", x)
            w, t = x
            if type(w) is not int or not 0 <= w <= UINT64_MAX:
                _uint(w, f"{name} key {key}[{obis_code(k)}] W", UINT64_MAX)
            if type(t) is not int or not 0 <= t <= UINT32_MAX:
                _uint(t, f"{name} key {key}[{obis_code(k)}] time", UINT32_MAX)
        elif type(x) is not int or not INT_MIN <= x <= UINT64_MAX:
            _int(x, f"{name} key {key}[{obis_code(k)}]")


def _any(v: Any, where: str, depth: int) -> None:
    t = type(v)
    if t is int:
        _int(v, where)
    elif t is bytes or t is str or t is bool or v is None:
        return
    elif t is list or t is dict:
        if depth >= MAX_DEPTH:
            raise TooDeep(f"{where}: nested deeper than {MAX_DEPTH}")
        if t is list:
            for i, x in enumerate(v):
                _any(x, f"{where}[{i}]", depth + 1)
        else:
            for k, x in v.items():
                if type(k) not in (int, str, bytes):
                    raise _wrong(f"{where}: map key", "an integer, text or byte string", k)
                if type(k) is int:
                    _int(k, f"{where}: map key")
                _any(x, f"{where}[{k!r}]", depth + 1)
    else:
        raise _wrong(where, "an integer, byte or text string, array, map, boolean or null", v)


def _c_uint(code: int) -> Callable[[Any, str, int], None]:
    hi = _RANGE[code]

    def check(v: Any, name: str, key: int) -> None:
        if type(v) is not int or not 0 <= v <= hi:
            _uint(v, f"{name} key {key}", hi)

    return check


def _c_devid(v: Any, name: str, key: int) -> None:
    if type(v) is not bytes:
        raise _wrong(f"{name} key {key}", "an 8-byte byte string", v)
    if len(v) != DEVICE_ID_LEN:
        raise OutOfRange(f"{name} key {key} is {len(v)} bytes, want {DEVICE_ID_LEN}")


def _c_int(v: Any, name: str, key: int) -> None:
    if type(v) is not int or not INT_MIN <= v <= UINT64_MAX:
        _int(v, f"{name} key {key}")


def _c_tstr(v: Any, name: str, key: int) -> None:
    if type(v) is not str:
        raise _wrong(f"{name} key {key}", "a text string", v)


def _c_maxdem(v: Any, name: str, key: int) -> None:
    _registers(v, name, key, True)


def _c_inst(v: Any, name: str, key: int) -> None:
    if type(v) is not list or len(v) != 3:
        raise _wrong(f"{name} key {key}", "an array [power mW, bus mV, current mA]", v)
    mw, mv, ma = v
    if (type(mw) is not int or type(mv) is not int or type(ma) is not int
            or not INT_MIN <= mw <= UINT64_MAX or not 0 <= mv <= UINT64_MAX
            or not INT_MIN <= ma <= UINT64_MAX):
        _int(mw, f"{name} key {key}: power mW")
        _uint(mv, f"{name} key {key}: voltage mV", UINT64_MAX)
        _int(ma, f"{name} key {key}: current mA")


def _c_demand(v: Any, name: str, key: int) -> None:
    if type(v) is not list or len(v) != 2:
        raise _wrong(f"{name} key {key}", "an array [current average W, last average W]", v)
    for i, w in enumerate(v):
        _uint(w, f"{name} key {key}[{i}]", UINT64_MAX)


def _c_rows(v: Any, name: str, key: int) -> None:
    if type(v) is not list:
        raise _wrong(f"{name} key {key}", "an array of interval rows", v)
    if not v:
        raise MissingKey(f"{name} key {key} holds no interval row")
    for i, row in enumerate(v):
        if type(row) is not list or len(row) != 4:
            raise _wrong(f"{name} row {i}", "an interval row [end, import mWh, export mWh, status]", row)
        end, imp, exp, st = row
        if (type(end) is not int or type(imp) is not int or type(exp) is not int or type(st) is not int
                or not 0 <= end <= UINT32_MAX or not 0 <= imp <= UINT64_MAX or not 0 <= exp <= UINT64_MAX
                or not 0 <= st <= UINT64_MAX):
            _uint(end, f"{name} row {i} end", UINT32_MAX)
            _uint(imp, f"{name} row {i} import mWh", UINT64_MAX)
            _uint(exp, f"{name} row {i} export mWh", UINT64_MAX)
            _uint(st, f"{name} row {i} status", UINT64_MAX)


def _c_int_tstr(v: Any, name: str, key: int) -> None:
    if type(v) is not str:
        if type(v) is not int:
            raise _wrong(f"{name} key {key}", "an integer or a text string", v)
        _int(v, f"{name} key {key}")


def _c_args(v: Any, name: str, key: int) -> None:
    if type(v) is not dict:
        raise _wrong(f"{name} key {key}", "a map of unsigned integers to values", v)
    for k, x in v.items():
        if type(k) is not int:
            raise _wrong(f"{name} argument key", "an unsigned integer", k)
        _uint(k, f"{name} argument key", UINT64_MAX)
        _any(x, f"{name} argument {k}", 2)


_CHECKERS = {_U64: _c_uint(_U64), _U32: _c_uint(_U32), _PPM: _c_uint(_PPM), _DEVID: _c_devid, _INT: _c_int,
             _TSTR: _c_tstr, _REGS: _registers, _MAXDEM: _c_maxdem, _INST: _c_inst, _ROWS: _c_rows,
             _INT_TSTR: _c_int_tstr, _ARGS: _c_args, _DEMAND: _c_demand}


_SPECS = {
    HELLO: _Spec(HELLO, _COMMON, {K_FIRMWARE: _TSTR, K_BOARD: _TSTR, K_BOOT_COUNT: _U64, K_CYCLE_US: _U64,
                                  K_SHUNT_DUTY_PPM: _PPM, K_SHUNT_UOHM: _U64, K_CHECKPOINT_WH: _U64}),
    READING: _Spec(READING, _COMMON, {K_REGISTERS: _REGS, K_INSTANT: _INST, K_UNCOVERED_PPM: _PPM,
                                      K_TARIFF: _U64, K_DEMAND: _DEMAND}, optional=(K_TARIFF, K_DEMAND)),
    INTERVALS: _Spec(INTERVALS, _COMMON, {K_ROWS: _ROWS, K_PERIOD: _U64}),
    EVENT: _Spec(EVENT, _COMMON, {K_EVENT_SEQ: _U64, K_EVENT_CODE: _U64, K_EVENT_VALUE: _INT_TSTR,
                                  K_EVENT_TIME: _U32}),
    BILLING: _Spec(BILLING, _COMMON, {K_PERIOD_END: _U32, K_BILLING_REGISTERS: _REGS, K_MAX_DEMAND: _MAXDEM},
                   optional=(K_MAX_DEMAND,)),
    RESPONSE: _Spec(RESPONSE, _COMMON, {K_ANSWERED: _U64, K_RESULT: _INT, K_REASON: _TSTR}, optional=(K_REASON,)),
    COMMAND: _Spec(COMMAND, _HOST_COMMON, {K_OP: _U64, K_ARGS: _ARGS}, optional=(K_ARGS,)),
    ACK: _Spec(ACK, _HOST_COMMON, {K_ACK_SEQ: _U64}),
}


def _validate(p: Any, allowed: frozenset) -> int:
    """Check payload p against the CDDL of its kind; returns the kind."""
    if type(p) is not dict:
        raise _wrong("the payload", "a map", p)
    kind = p.get(K_KIND)
    spec = _SPECS.get(kind) if type(kind) is int else None
    if spec is None or kind not in allowed or tuple(p) not in spec.orders:
        _explain_keys(p, kind, spec, allowed)
    uint_max = spec.uint_max
    checkers = spec.checkers
    for k, v in p.items():
        hi = uint_max.get(k)
        if hi is not None:
            if type(v) is not int or not 0 <= v <= hi:
                checkers[k](v, spec.name, k)
        else:
            checkers[k](v, spec.name, k)
    if kind == READING:
        regs = p[K_REGISTERS]
        if OBIS_IMPORT not in regs or OBIS_EXPORT not in regs:
            raise MissingKey("reading: registers must include 1.8.0 (10800) and 2.8.0 (20800)")
    return kind


def _explain_keys(p: dict, kind: Any, spec: _Spec | None, allowed: frozenset) -> None:
    """Raise the error that says why p's kind or keys are not those of a valid payload."""
    if kind is None:
        raise MissingKey("the payload has no kind (key 1)")
    if type(kind) is not int:
        raise _wrong("kind (key 1)", "an unsigned integer", kind)
    if spec is None:
        raise UnknownKind(f"unknown message kind {kind}")
    if kind not in allowed:
        side = "a head-end" if kind in HOST_KINDS else "a meter"
        raise WrongKind(f"{spec.name} is {side} message, not expected here")
    prev = -1
    for k in p:
        if type(k) is not int:
            raise _wrong(f"{spec.name} payload key", "an unsigned integer", k)
        if k not in spec.fields:
            raise UnknownKey(f"{spec.name}: unknown key {k}")
        if k <= prev:
            raise NotCanonical(f"{spec.name}: payload keys not in ascending order")
        prev = k
    for k in spec.required:
        if k not in p:
            raise MissingKey(f"{spec.name}: required key {k} missing")
    raise AssertionError(f"keys {list(p)} of {spec.name}")  # pragma: no cover - the checks above are complete


# --- COSE_Sign1 ---------------------------------------------------------------------------------------------

PROTECTED_ES256 = b"\xa1\x01\x26"  # {1: -7}
_ENVELOPE_HEAD = b"\xd2\x84\x43\xa1\x01\x26\xa1\x04\x48"  # tag 18, array 4, protected, {4: bstr(8) ...
_SIG_HEAD = b"\x58\x40"
_SIG_STRUCTURE_HEAD = b"\x84\x6aSignature1\x43\xa1\x01\x26\x40"  # ["Signature1", protected, h'', ...
_ECDSA = ec.ECDSA(hashes.SHA256())
_ECDSA_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _bstr_head(n: int) -> bytes:
    if n < len(_BSTR_HEADS):
        return _BSTR_HEADS[n]
    return _make_bstr_head(n)


def _make_bstr_head(n: int) -> bytes:
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


_BSTR_HEADS = [_make_bstr_head(n) for n in range(MAX_MESSAGE + 1)]


def sig_structure(payload: bytes) -> bytes:
    """The bytes ES256 signs for a COSE_Sign1 with protected h'A10126' and no external AAD."""
    return _SIG_STRUCTURE_HEAD + _bstr_head(len(payload)) + payload


_DECODE_ERRORS = (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError)


def _decode_error(e: Exception, what: str) -> ProtocolError:
    """The ProtocolError for a cbor2 decoding failure of `what`."""
    if isinstance(e, cbor2.CBORDecodeEOF):
        return Truncated(f"{what} ends early: {e}")
    if isinstance(e, cbor2.CBORDecodeError) and "nesting depth" in str(e):
        return TooDeep(f"{what} nests containers deeper than {MAX_DEPTH}")
    return Malformed(f"{what} is not well-formed CBOR: {type(e).__name__}: {e}")


def _loads(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data, max_depth=MAX_DEPTH)
    except _DECODE_ERRORS as e:
        raise _decode_error(e, what) from None


def _split_canonical(cose: bytes, max_len: int = MAX_MESSAGE) -> tuple[bytes, bytes, bytes, bytes] | None:
    """(kid, payload head, payload, signature) when `cose` is byte for byte the one deterministic encoding of
    a meterkit COSE_Sign1 (fixed header, 8-byte kid, shortest payload head, 64-byte signature); else None,
    and the full parser below says what is wrong. Slicing the fixed layout costs a fraction of a CBOR parse."""
    n = len(cose)
    if n > max_len or not cose.startswith(_ENVELOPE_HEAD):
        return None
    h = cose[17] if n > 17 else -1
    if 0x40 <= h < 0x58:
        start, size = 18, h - 0x40
    elif h == 0x58 and n > 18 and cose[18] >= 24:
        start, size = 19, cose[18]
    elif h == 0x59 and n > 19 and cose[18] >= 1:
        start, size = 20, (cose[18] << 8) | cose[19]
    else:
        return None
    end = start + size
    if n != end + 2 + SIGNATURE_LEN or cose[end:end + 2] != _SIG_HEAD:
        return None
    return cose[9:17], cose[17:start], cose[start:end], cose[end + 2:]


def _open(cose: bytes, lookup_pub: Callable[[bytes], Any],
          max_len: int = MAX_MESSAGE) -> tuple[bytes, bytes, bytes]:
    """Check the envelope and the signature; return (kid, payload bytes, the message as bytes)."""
    if type(cose) is bytes:
        parts = _split_canonical(cose, max_len)
        if parts is not None:
            return _check_signature(cose, lookup_pub, *parts)
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
        env = cbor2.loads(cose, max_depth=MAX_DEPTH)
    except _DECODE_ERRORS as e:
        raise _decode_error(e, "the message") from None
    if type(env) is not cbor2.CBORTag or env.tag != 18:
        raise NotSign1("not a COSE_Sign1 (CBOR tag 18)")
    v = env.value  # cbor2 decodes a tag's content immutable: tuple, frozendict
    if type(v) is not tuple or len(v) != 4:
        raise BadEnvelope("a COSE_Sign1 is an array of 4 [protected, unprotected, payload, signature]")
    protected, unprotected, payload, signature = v
    if type(protected) is not bytes:
        raise BadEnvelope("the protected header must be a byte string")
    if protected != PROTECTED_ES256:
        try:
            prot = cbor2.loads(protected, max_depth=2) if protected else {}
        except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError):
            prot = None
        if type(prot) is dict and prot.get(1, None) != -7:
            raise WrongAlgorithm(f"algorithm {prot.get(1)!r} in the protected header, want ES256 (-7)")
        raise BadEnvelope(f"the protected header must be exactly h'A10126' (alg ES256), "
                          f"not h'{protected.hex()}'")
    if type(unprotected) is not cbor2.frozendict or len(unprotected) != 1 or 4 not in unprotected:
        raise BadEnvelope("the unprotected header must be exactly {4: kid}")
    kid = unprotected[4]
    if type(kid) is not bytes or len(kid) != DEVICE_ID_LEN:
        raise BadEnvelope(f"the kid must be an {DEVICE_ID_LEN}-byte byte string")
    if type(payload) is not bytes:
        raise BadEnvelope("the payload must be a byte string")
    if type(signature) is not bytes:
        raise BadEnvelope("the signature must be a byte string")
    payload_head = _bstr_head(len(payload))
    canonical = b"".join((_ENVELOPE_HEAD, kid, payload_head, payload, _bstr_head(len(signature)), signature))
    if canonical != cose:
        if len(cose) > len(canonical) and cose.startswith(canonical):
            raise Malformed(f"{len(cose) - len(canonical)} bytes after the COSE_Sign1")
        raise NotCanonical("the COSE_Sign1 is not in deterministic CBOR encoding")
    return _check_signature(cose, lookup_pub, kid, payload_head, payload, signature)


def _check_signature(cose: bytes, lookup_pub: Callable[[bytes], Any], kid: bytes, payload_head: bytes,
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
        pub.verify(der, b"".join((_SIG_STRUCTURE_HEAD, payload_head, payload)), _ECDSA)
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


def verify_and_decode(cose_bytes: bytes, lookup_pub: Callable[[bytes], Any]) -> Message:
    """Verify and decode one meter -> host message (kinds 1-6); raise a ProtocolError subclass if refused.

    lookup_pub(kid) returns the meter's P-256 public key (cryptography EllipticCurvePublicKey), or None
    (or raises KeyError) for an unknown kid.
    """
    kid, payload, raw = _open(cose_bytes, lookup_pub)
    try:
        p = cbor2.loads(payload, max_depth=MAX_DEPTH)
    except _DECODE_ERRORS as e:
        raise _decode_error(e, "the payload") from None
    kind = _validate(p, METER_KINDS)
    device = p[K_DEVICE]
    if device != kid:
        raise KidMismatch(f"payload device id {device.hex()} is not the signer's kid {kid.hex()}")
    # Every map in a meter payload has unsigned-integer keys, checked ascending above, and a dict keeps the
    # wire order: so cbor2's plain encoding (shortest heads, definite lengths, dict order) is the
    # deterministic encoding, and anything else on the wire (longer heads, indefinite lengths, duplicate
    # keys, bignum tags...) makes the bytes differ.
    try:
        again = cbor2.dumps(p)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as e:  # pragma: no cover - validated
        raise NotCanonical(f"the payload cannot be re-encoded: {e}") from None
    if again != payload:
        raise NotCanonical("the payload is not in deterministic CBOR encoding (RFC 8949 section 4.2.1)")
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
    kid, payload, raw = _open(cose_bytes, lookup_pub, MAX_HOST_MESSAGE)
    p = _loads(payload, "the payload")
    kind = _validate(p, HOST_KINDS)
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


# --- keys and signing ---------------------------------------------------------------------------------------


def public_bytes(pub: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed SEC1 point 0x04 || x || y (the form meter.p256 uses)."""
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def public_from_bytes(point: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from its 65-byte uncompressed point (ValueError if not a point on the curve)."""
    if len(point) != 65 or point[0] != 4:
        raise ValueError("a P-256 public key is 65 bytes 0x04 || x || y")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(point))


def key_id(pub: ec.EllipticCurvePublicKey | bytes) -> bytes:
    """Head-end key id: the first 8 bytes of SHA-256 of the uncompressed public key."""
    point = pub if isinstance(pub, (bytes, bytearray)) else public_bytes(pub)
    return hashlib.sha256(bytes(point)).digest()[:8]


def _check_p256_private(key: Any) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("an ES256 signer needs a P-256 (secp256r1) private key")


def sign1(private_key: ec.EllipticCurvePrivateKey, kid: bytes, payload: bytes) -> bytes:
    """COSE_Sign1 over payload (bytes), ES256 with RFC 6979 nonces: the bytes meter.cose.sign1 produces."""
    _check_p256_private(private_key)
    if len(kid) != DEVICE_ID_LEN:
        raise ValueError(f"kid must be {DEVICE_ID_LEN} bytes")
    payload = bytes(payload)
    der = private_key.sign(sig_structure(payload), _ECDSA_DETERMINISTIC)
    r, s = decode_dss_signature(der)
    return b"".join((_ENVELOPE_HEAD, bytes(kid), _bstr_head(len(payload)), payload, _SIG_HEAD,
                     r.to_bytes(32, "big"), s.to_bytes(32, "big")))


def _arg_uint(v: Any, what: str, hi: int = UINT64_MAX) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise ValueError(f"{what} must be an integer 0..{hi}, got {v!r}")
    return v


class HeadEnd:
    """The head-end's signing key: signs commands and cumulative acknowledgements for meters."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        _check_p256_private(private_key)
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.public_bytes = public_bytes(self.public_key)
        self.key_id = key_id(self.public_bytes)

    def lookup(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        """A lookup_pub for verify_host_message that knows this head-end's key."""
        return self.public_key if kid == self.key_id else None

    def _sign(self, kind: int, device_id: bytes, counter: int, now: int, ttl_s: int, extra: dict) -> bytes:
        if not isinstance(device_id, (bytes, bytearray)) or len(device_id) != DEVICE_ID_LEN:
            raise ValueError(f"device_id must be {DEVICE_ID_LEN} bytes")
        _arg_uint(counter, "counter")
        _arg_uint(now, "now", UINT32_MAX)
        if type(ttl_s) is not int or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive integer, got {ttl_s!r}")
        expires = _arg_uint(now + ttl_s, "now + ttl_s", UINT32_MAX)
        payload = {K_KIND: kind, K_DEVICE: bytes(device_id), K_COUNTER: counter, K_ISSUED: now,
                   K_EXPIRES: expires}
        payload.update(extra)
        return sign1(self.private_key, self.key_id, mcbor.encode(payload))

    def sign_command(self, device_id: bytes, counter: int, op: int, args: dict | None, now: int,
                     ttl_s: int) -> bytes:
        """COSE_Sign1 of a command (kind 16): operation `op` with `args` ({uint: value}; omitted if empty)."""
        extra: dict = {K_OP: _arg_uint(op, "op")}
        if args:
            if type(args) is not dict:
                raise ValueError("args must be a dict of unsigned integers to values")
            try:
                _c_args(args, "command", K_ARGS)
            except ProtocolError as e:
                raise ValueError(str(e)) from None
            extra[K_ARGS] = args
        return self._sign(COMMAND, device_id, counter, now, ttl_s, extra)

    def sign_ack(self, device_id: bytes, counter: int, ack_seq: int, now: int, ttl_s: int) -> bytes:
        """COSE_Sign1 of a cumulative acknowledgement (kind 17): every frame with seq <= ack_seq is stored."""
        return self._sign(ACK, device_id, counter, now, ttl_s, {K_ACK_SEQ: _arg_uint(ack_seq, "ack_seq")})


# --- replay guard -------------------------------------------------------------------------------------------


class ReplayGuard:
    """Refuses a meter's frame sequence number that was already accepted, in bounded memory per device.

    Per device: the high-water mark H (largest sequence number accepted) and a bitmap of the `window` numbers
    H, H-1, ..., H-window+1 (bit i set = H-i accepted). The rule for a sequence number s:

    - s > H: new; accepted, H becomes s (the bitmap shifts; numbers that fall out of it are forgotten);
    - H - window < s <= H: accepted once, refused as Replay when its bit is already set;
    - s <= H - window: refused as Stale (a subclass of Replay): too old to tell. A meter resends
      unacknowledged frames oldest first, so this only happens after `window` newer frames arrived first;
      a head-end with a store may look such a number up there instead of dropping it.

    check() raises without changing anything; record() marks a number accepted (call it once the frame is
    stored); admit() is both. Memory: one int of `window` bits per device (512 bytes for the default 4096).
    """

    def __init__(self, window: int = 4096):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._mask = (1 << window) - 1
        self._state: dict[bytes, list[int]] = {}  # device -> [H, bitmap]

    def high(self, device_id: bytes) -> int | None:
        st = self._state.get(bytes(device_id))
        return st[0] if st else None

    def seen(self, device_id: bytes, seq: int) -> bool:
        st = self._state.get(bytes(device_id))
        if st is None or seq > st[0]:
            return False
        d = st[0] - seq
        return d >= self.window or bool(st[1] >> d & 1)

    def check(self, device_id: bytes, seq: int) -> None:
        st = self._state.get(bytes(device_id))
        if st is None or seq > st[0]:
            return
        d = st[0] - seq
        if d >= self.window:
            raise Stale(f"sequence number {seq} is {d} below the newest ({st[0]}), outside the replay window "
                        f"of {self.window}")
        if st[1] >> d & 1:
            raise Replay(f"sequence number {seq} already accepted from {bytes(device_id).hex()}")

    def record(self, device_id: bytes, seq: int) -> None:
        key = bytes(device_id)
        st = self._state.get(key)
        if st is None:
            self._state[key] = [seq, 1]
            return
        if seq > st[0]:
            shift = seq - st[0]
            st[1] = ((st[1] << shift) | 1) & self._mask if shift < self.window else 1
            st[0] = seq
        else:
            d = st[0] - seq
            if d < self.window:
                st[1] |= 1 << d

    def admit(self, device_id: bytes, seq: int) -> None:
        """check() then record()."""
        self.check(device_id, seq)
        self.record(device_id, seq)

    def __len__(self) -> int:
        return len(self._state)
