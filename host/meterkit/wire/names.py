"""Names for people: message kinds, status bits, load-profile row flags, command operations (the numbers are
meter.messages')."""

from __future__ import annotations

from meter.messages import (
    ACK,
    BILLING,
    COMMAND,
    EVENT,
    HELLO,
    INTERVALS,
    OP_BACKFILL,
    OP_BILLING_RESET,
    OP_CALENDAR,
    OP_PROFILE,
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
)

KIND_NAMES = {HELLO: "hello", READING: "reading", INTERVALS: "intervals", EVENT: "event", BILLING: "billing",
              RESPONSE: "response", COMMAND: "command", ACK: "ack"}
METER_KINDS = frozenset({HELLO, READING, INTERVALS, EVENT, BILLING, RESPONSE})
HOST_KINDS = frozenset({COMMAND, ACK})

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


OP_NAMES = {OP_BACKFILL: "back-fill", OP_CALENDAR: "calendar", OP_BILLING_RESET: "billing-reset",
            OP_PROFILE: "profile"}


def op_name(op: int) -> str:
    return OP_NAMES.get(op, f"op {op}")
