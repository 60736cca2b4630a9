"""What a verified meter message says, as typed records: the head-end works with these, never with payload keys.

``records_of(message)`` turns one verified meter message (meterkit.wire.message.Message) into its records: one
per message, or one IntervalRow per row of a load-profile message. Every record carries the device and the
frame sequence number that carried it (the frame itself, the signed evidence, is a ``Frame``). Values are what
the meter signed, unchanged: integers may be as large as CBOR allows (a store decides how to keep those it
cannot hold).

Records are values: nothing changes one after records_of made it. They are not frozen dataclasses all the same
(hashable and comparable as if they were): a frozen dataclass is built by object.__setattr__ per field, four
times the cost, and the concentrator builds two per frame (about 2 us of a frame's ~100, meterkit bench).
"""

from __future__ import annotations

from dataclasses import dataclass

from meter import messages as M
from meterkit.wire.message import Message


@dataclass(slots=True, unsafe_hash=True)
class Frame:
    """A verified meter frame kept as evidence: the exact bytes received, with what identifies them."""

    device_id: bytes
    seq: int
    kind: int
    meter_time: int  # UTC seconds (seconds since boot while the status says the clock is not set)
    status: int
    raw: bytes

    @classmethod
    def of(cls, m: Message) -> Frame:
        return cls(m.device_id, m.seq, m.kind, m.time, m.status, m.raw)


@dataclass(slots=True, unsafe_hash=True)
class Hello:
    """Sent at boot: who the meter is and how it measures."""

    device_id: bytes
    seq: int
    meter_time: int
    status: int
    firmware: str
    board: str
    boot_count: int
    cycle_us: int
    shunt_duty_ppm: int
    shunt_uohm: int
    checkpoint_wh: int


@dataclass(slots=True, unsafe_hash=True)
class Reading:
    """Registers and instantaneous values at one instant."""

    device_id: bytes
    seq: int
    meter_time: int
    status: int
    registers: dict[int, int]  # OBIS register key (meter.messages.obis_key) -> Wh
    power_mw: int
    voltage_mv: int
    current_ma: int
    uncovered_ppm: int
    tariff: int | None = None  # the tariff in force, when the meter has more than one
    demand: tuple[int, int] | None = None  # (current average W, last period's average W)
    calibration: int | None = None  # the calibration in force (meter.calibration: its id; 0 none; None: not sent)
    control: tuple[int, int, int] | None = None  # K_CONTROL: (IC70 state, control mode, limit W); None: [1, 0, 0]

    @property
    def import_wh(self) -> int:
        return self.registers[M.OBIS_IMPORT]

    @property
    def export_wh(self) -> int:
        return self.registers[M.OBIS_EXPORT]


@dataclass(slots=True, unsafe_hash=True)
class IntervalRow:
    """One load-profile row (99.1.0): the cumulative registers at the end of an interval."""

    device_id: bytes
    end: int  # UTC seconds
    import_mwh: int
    export_mwh: int
    status: int  # meter.messages.ROW_* bits
    period_s: int
    seq: int  # the frame that carried it


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """One entry of the meter's event log (99.98.x)."""

    device_id: bytes
    seq: int
    event_seq: int
    code: int  # meter.events
    value: int | str
    time: int


@dataclass(slots=True, unsafe_hash=True)
class BillingSnapshot:
    """The registers and maximum demands frozen at the end of a billing period."""

    device_id: bytes
    seq: int
    period_end: int
    registers: dict[int, int]
    max_demand: dict[int, tuple[int, int]]  # 1.6.t key -> (W, end of the demand period it was reached in)


@dataclass(slots=True, unsafe_hash=True)
class CommandResponse:
    """A meter's answer to a head-end command."""

    device_id: bytes
    seq: int
    counter: int  # the command answered
    result: int  # meter.messages.RESULT_*
    reason: str | None


Record = Hello | Reading | IntervalRow | Event | BillingSnapshot | CommandResponse


def _hello(m: Message) -> list[Record]:
    b = m.body
    return [Hello(m.device_id, m.seq, m.time, m.status, b[M.K_FIRMWARE], b[M.K_BOARD], b[M.K_BOOT_COUNT],
                  b[M.K_CYCLE_US], b[M.K_SHUNT_DUTY_PPM], b[M.K_SHUNT_UOHM], b[M.K_CHECKPOINT_WH])]


def _reading(m: Message) -> list[Record]:
    b = m.body
    mw, mv, ma = b[M.K_INSTANT]
    demand = b.get(M.K_DEMAND)
    control = b.get(M.K_CONTROL)
    return [Reading(m.device_id, m.seq, m.time, m.status, b[M.K_REGISTERS], mw, mv, ma, b[M.K_UNCOVERED_PPM],
                    b.get(M.K_TARIFF), tuple(demand) if demand is not None else None, b.get(M.K_CALIBRATION),
                    tuple(control) if control is not None else None)]


def _intervals(m: Message) -> list[Record]:
    period = m.body[M.K_PERIOD]
    return [IntervalRow(m.device_id, end, imp, exp, st, period, m.seq) for end, imp, exp, st in m.body[M.K_ROWS]]


def _event(m: Message) -> list[Record]:
    b = m.body
    return [Event(m.device_id, m.seq, b[M.K_EVENT_SEQ], b[M.K_EVENT_CODE], b[M.K_EVENT_VALUE], b[M.K_EVENT_TIME])]


def _billing(m: Message) -> list[Record]:
    b = m.body
    md = b.get(M.K_MAX_DEMAND) or {}
    return [BillingSnapshot(m.device_id, m.seq, b[M.K_PERIOD_END], b[M.K_BILLING_REGISTERS],
                            {k: (v[0], v[1]) for k, v in md.items()})]


def _response(m: Message) -> list[Record]:
    b = m.body
    return [CommandResponse(m.device_id, m.seq, b[M.K_ANSWERED], b[M.K_RESULT], b.get(M.K_REASON))]


_DECODERS = {M.HELLO: _hello, M.READING: _reading, M.INTERVALS: _intervals, M.EVENT: _event, M.BILLING: _billing,
             M.RESPONSE: _response}


def records_of(m: Message) -> list[Record]:
    """The records a verified meter message holds (kinds 1-6)."""
    return _DECODERS[m.kind](m)
