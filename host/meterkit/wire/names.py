"""Names for people: message kinds, status bits, load-profile row flags, command operations (the numbers are
meter.messages')."""

from __future__ import annotations

from meter import messages as M

KIND_NAMES = {M.HELLO: "hello", M.READING: "reading", M.INTERVALS: "intervals", M.EVENT: "event", M.BILLING: "billing",
              M.RESPONSE: "response", M.COMMAND: "command", M.ACK: "ack"}
METER_KINDS = frozenset({M.HELLO, M.READING, M.INTERVALS, M.EVENT, M.BILLING, M.RESPONSE})
HOST_KINDS = frozenset({M.COMMAND, M.ACK})

STATUS_BITS = (
    (M.ST_SENSOR_FAULT, "sensor fault"),
    (M.ST_CLOCK_NOT_SET, "clock not set"),
    (M.ST_RELAY_OPEN, "relay open"),
    (M.ST_POWER_FAIL, "power failure"),
    (M.ST_CHIP_RESET, "chip reset"),
    (M.ST_I2C_ERRORS, "I2C errors"),
    (M.ST_OVERFLOW, "overflow"),
    (M.ST_MISSED, "conversions missed"),
    (M.ST_RESTORED, "registers restored"),
    (M.ST_RECONNECT_READY, "ready for reconnection"),
    (M.ST_LOAD_SHED, "load shed"),
    (M.ST_DR_ACTIVE, "demand response"),
)

# interval row status bits
ROW_STATUS_BITS = (
    (M.ROW_POWER_FAIL, "power failure"),
    (M.ROW_CLOCK_ADJUSTED, "clock adjusted"),
    (M.ROW_DST, "DST"),
    (M.ROW_RELAY_OPEN, "relay open"),
    (M.ROW_PARTIAL, "partial"),
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


OP_NAMES = {M.OP_BACKFILL: "back-fill", M.OP_CALENDAR: "calendar", M.OP_BILLING_RESET: "billing-reset",
            M.OP_PROFILE: "profile", M.OP_SET_TIME: "set-time", M.OP_DISCONNECT: "disconnect",
            M.OP_RECONNECT: "reconnect", M.OP_LIMITER: "limiter", M.OP_DR_EVENT: "dr-event", M.OP_CONFIG: "config",
            M.OP_REBOOT: "reboot", M.OP_KEY_ROTATE: "key-rotate", M.OP_FW_MANIFEST: "fw-manifest",
            M.OP_FW_CHUNK: "fw-chunk", M.OP_FW_ACTIVATE: "fw-activate"}


def op_name(op: int) -> str:
    return OP_NAMES.get(op, f"op {op}")
