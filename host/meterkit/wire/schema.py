"""The payload schema (the CDDL of docs/protocol.md), checked: every kind's keys with their types and ranges,
built from meter.messages' names. ``validate(payload, allowed_kinds)`` returns the kind or raises the
ProtocolError that says what is wrong and where; the common, valid case costs one tuple lookup per payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meter import cbor as mcbor
from meter import messages as M
from meterkit.wire.errors import (
    MissingKey,
    NotCanonical,
    OutOfRange,
    ProtocolError,
    TooDeep,
    UnknownKey,
    UnknownKind,
    WrongKind,
    WrongType,
)
from meterkit.wire.names import HOST_KINDS, KIND_NAMES

MAX_DEPTH = 8  # nested containers in a payload; the CDDL needs 3 (billing max demand, interval rows)
DEVICE_ID_LEN = 8
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
INT_MIN = -(1 << 64)  # CBOR's integer range is [-2^64, 2^64 - 1]
PPM = 1_000_000

_U64, _U32, _INT, _PPM, _TSTR, _DEVID, _REGS, _INST, _ROWS, _INT_TSTR, _MAXDEM, _ARGS, _DEMAND, _CONTROL = range(14)

_COMMON = {M.K_KIND: _U64, M.K_DEVICE: _DEVID, M.K_SEQ: _U64, M.K_TIME: _U32, M.K_STATUS: _U64}
_HOST_COMMON = {M.K_KIND: _U64, M.K_DEVICE: _DEVID, M.K_COUNTER: _U64, M.K_ISSUED: _U32, M.K_EXPIRES: _U32}


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
    if type(v) is mcbor.Tag:
        return f"tag {v.number}"
    names = {bool: "a boolean", int: "an integer", bytes: "a byte string", str: "a text string",
             list: "an array", dict: "a map", float: "a float", type(None): "null"}
    return names.get(type(v), type(v).__name__)


def _wrong(where: str, want: str, v: Any) -> WrongType:
    return WrongType(f"{where} must be {want}, got {_type_name(v)}")


def _not_int(where: str, want: str, v: Any) -> ProtocolError:
    # a bignum (tag 2/3) is never the deterministic encoding of an integer in CBOR's range: the plain integer is
    if type(v) is mcbor.Tag and v.number in (2, 3) and type(v.value) is bytes:
        return NotCanonical(f"{where} is a bignum (tag {v.number}): an integer is encoded as a plain integer")
    return _wrong(where, want, v)


def _uint(v: Any, where: str, hi: int) -> None:
    if type(v) is not int:
        raise _not_int(where, "an unsigned integer", v)
    if not 0 <= v <= hi:
        raise OutOfRange(f"{where} = {v} outside 0..{hi}")


def _int(v: Any, where: str) -> None:
    if type(v) is not int:
        raise _not_int(where, "an integer", v)
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
        if type(k) is not int or not prev < k <= M.OBIS_KEY_MAX:
            if type(k) is not int:
                raise _wrong(f"{name} key {key}: register key", "an unsigned integer (C*10000+D*100+E)", k)
            if not 0 <= k <= M.OBIS_KEY_MAX:
                raise OutOfRange(f"{name} key {key}: register key {k} is not an OBIS C.D.E packing")
            raise NotCanonical(f"{name} key {key}: register keys not in ascending order")
        prev = k
        if demand:
            if type(x) is not list or len(x) != 2:
                raise _wrong(f"{name} key {key}[{M.obis_code(k)}]", "an array [W, time]", x)
            w, t = x
            if type(w) is not int or not 0 <= w <= UINT64_MAX:
                _uint(w, f"{name} key {key}[{M.obis_code(k)}] W", UINT64_MAX)
            if type(t) is not int or not 0 <= t <= UINT32_MAX:
                _uint(t, f"{name} key {key}[{M.obis_code(k)}] time", UINT32_MAX)
        elif type(x) is not int or not INT_MIN <= x <= UINT64_MAX:
            _int(x, f"{name} key {key}[{M.obis_code(k)}]")


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


def _c_control(v: Any, name: str, key: int) -> None:
    if type(v) is not list or len(v) != 3:
        raise _wrong(f"{name} key {key}", "an array [disconnect control state, control mode, limit W]", v)
    for i, w in enumerate(v):
        _uint(w, f"{name} key {key}[{i}]", UINT32_MAX)


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


def check_args(v: Any, name: str, key: int) -> None:
    if type(v) is not dict:
        raise _wrong(f"{name} key {key}", "a map of unsigned integers to values", v)
    for k, x in v.items():
        if type(k) is not int:
            raise _wrong(f"{name} argument key", "an unsigned integer", k)
        _uint(k, f"{name} argument key", UINT64_MAX)
        _any(x, f"{name} argument {k}", 2)


_CHECKERS = {_U64: _c_uint(_U64), _U32: _c_uint(_U32), _PPM: _c_uint(_PPM), _DEVID: _c_devid, _INT: _c_int,
             _TSTR: _c_tstr, _REGS: _registers, _MAXDEM: _c_maxdem, _INST: _c_inst, _ROWS: _c_rows,
             _INT_TSTR: _c_int_tstr, _ARGS: check_args, _DEMAND: _c_demand, _CONTROL: _c_control}


_SPECS = {
    M.HELLO: _Spec(M.HELLO, _COMMON, {
        M.K_FIRMWARE: _TSTR, M.K_BOARD: _TSTR, M.K_BOOT_COUNT: _U64, M.K_CYCLE_US: _U64,
        M.K_SHUNT_DUTY_PPM: _PPM, M.K_SHUNT_UOHM: _U64, M.K_CHECKPOINT_WH: _U64}),
    M.READING: _Spec(M.READING, _COMMON, {
        M.K_REGISTERS: _REGS, M.K_INSTANT: _INST, M.K_UNCOVERED_PPM: _PPM, M.K_TARIFF: _U64,
        M.K_DEMAND: _DEMAND, M.K_CALIBRATION: _U32, M.K_CONTROL: _CONTROL},
        optional=(M.K_TARIFF, M.K_DEMAND, M.K_CALIBRATION, M.K_CONTROL)),
    M.INTERVALS: _Spec(M.INTERVALS, _COMMON, {M.K_ROWS: _ROWS, M.K_PERIOD: _U64}),
    M.EVENT: _Spec(M.EVENT, _COMMON, {
        M.K_EVENT_SEQ: _U64, M.K_EVENT_CODE: _U64, M.K_EVENT_VALUE: _INT_TSTR, M.K_EVENT_TIME: _U32}),
    M.BILLING: _Spec(M.BILLING, _COMMON, {
        M.K_PERIOD_END: _U32, M.K_BILLING_REGISTERS: _REGS, M.K_MAX_DEMAND: _MAXDEM}, optional=(M.K_MAX_DEMAND,)),
    M.RESPONSE: _Spec(M.RESPONSE, _COMMON, {
        M.K_ANSWERED: _U64, M.K_RESULT: _INT, M.K_REASON: _TSTR}, optional=(M.K_REASON,)),
    M.COMMAND: _Spec(M.COMMAND, _HOST_COMMON, {M.K_OP: _U64, M.K_ARGS: _ARGS}, optional=(M.K_ARGS,)),
    M.ACK: _Spec(M.ACK, _HOST_COMMON, {M.K_ACK_SEQ: _U64}),
}


def validate(p: Any, allowed: frozenset) -> int:
    """Check payload p against the CDDL of its kind; returns the kind."""
    if type(p) is not dict:
        raise _wrong("the payload", "a map", p)
    kind = p.get(M.K_KIND)
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
    if kind == M.READING:
        regs = p[M.K_REGISTERS]
        if M.OBIS_IMPORT not in regs or M.OBIS_EXPORT not in regs:
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
