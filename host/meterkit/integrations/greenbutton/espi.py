"""The ESPI (NAESB REQ.21) resources a Green Button export is made of, and the codes they carry.

Codes are the enumerations of the public espi.xsd: UnitSymbolKind (uom), UnitMultiplierKind, FlowDirectionKind,
AccumulationKind, CommodityKind, MeasurementKind, DataQualifierKind, QualityOfReading, ServiceKind, Currency
(ISO 4217 numeric). docs/green-button.md says which of them meterkit writes and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meterkit.integrations.greenbutton.errors import GreenButtonError

ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"

UOM_WH = 72  # UnitSymbolKind: real energy, watt-hours
MULTIPLIER_MILLI = -3  # UnitMultiplierKind: values are mWh, the profile's own unit, so nothing is rounded
FLOW_FORWARD = 1  # FlowDirectionKind: delivered to the customer (import, OBIS 1.8.0)
FLOW_REVERSE = 19  # ... received from the customer (export, OBIS 2.8.0)
ACCUMULATION_DELTA = 4  # AccumulationKind deltaData: end-of-interval register minus start-of-interval register
COMMODITY_ELECTRICITY = 1  # CommodityKind: electricity, secondary metered
KIND_ENERGY = 12  # MeasurementKind
QUALIFIER_NORMAL = 12  # DataQualifierKind
SERVICE_ELECTRICITY = 0  # ServiceKind of the UsagePoint's ServiceCategory
COST_UNITS_PER_CURRENCY = 100_000  # IntervalReading.cost is in hundred-thousandths of the currency

# QualityOfReading codes meterkit writes on a reading (docs/green-button.md, "Irregular intervals")
QUALITY_QUESTIONABLE = 10  # the meter's clock was set during the interval: its length is uncertain
QUALITY_DERIVED = 11  # the reading spans missing rows: one register difference over several intervals
QUALITY_OTHER = 16  # not metered throughout (a power cut, or the meter started inside it)

DST_RULE_DISABLED = 0xFFFFFFFF  # DstRuleType: "rule processing/DST correction is disabled"

# ISO 4217 alphabetic -> numeric, for ReadingType.currency (a price file names its currency alphabetically)
CURRENCY_NUMBERS = {
    "AUD": 36, "BRL": 986, "CAD": 124, "CHF": 756, "CNY": 156, "CZK": 203, "DKK": 208, "EUR": 978, "GBP": 826,
    "HUF": 348, "INR": 356, "JPY": 392, "KRW": 410, "MXN": 484, "NOK": 578, "NZD": 554, "PLN": 985, "RON": 946,
    "SEK": 752, "USD": 840, "ZAR": 710,
}


def currency_number(code: str) -> int:
    """The ISO 4217 numeric code of an alphabetic one (EUR -> 978)."""
    n = CURRENCY_NUMBERS.get(code)
    if n is None:
        raise GreenButtonError(f"currency {code!r}: its ISO 4217 number is not in meterkit's table "
                               f"({', '.join(sorted(CURRENCY_NUMBERS))}); ESPI names currencies by number")
    return n


@dataclass(frozen=True)
class ReadingType:
    """What every reading of one MeterReading measures: energy in mWh per interval, in one flow direction."""

    flow: int  # FLOW_FORWARD or FLOW_REVERSE
    interval_s: int  # the profile's capture period (ReadingType.intervalLength)
    currency: int | None = None  # ISO 4217 number when readings carry a cost

    @property
    def title(self) -> str:
        return "energy delivered (import, 1.8.0)" if self.flow == FLOW_FORWARD else "energy received (export, 2.8.0)"


@dataclass(frozen=True)
class IntervalReading:
    """One interval: start (UTC s), duration (s), the energy (mWh), qualities, cost (1e-5 currency) or None."""

    start: int
    duration: int
    value: int
    qualities: tuple[int, ...] = ()
    cost: int | None = None

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass
class IntervalBlock:
    """The readings of one local day (the block's interval spans exactly its readings)."""

    readings: list[IntervalReading] = field(default_factory=list)
    label: str = ""  # the local date, the entry's title

    @property
    def start(self) -> int:
        return self.readings[0].start

    @property
    def duration(self) -> int:
        return self.readings[-1].end - self.readings[0].start


@dataclass(frozen=True)
class LocalTimeParameters:
    """ESPI's time configuration: UTC offset of standard time, DST offset, and the two DstRuleType bit maps."""

    tz_offset: int  # seconds east of UTC, standard time
    dst_offset: int  # seconds added while DST is in force
    dst_start_rule: int
    dst_end_rule: int
    source: str  # the POSIX TZ string it came from (the entry's title)


@dataclass
class MeterReadingSet:
    """One MeterReading: its ReadingType and its interval blocks."""

    reading_type: ReadingType
    blocks: list[IntervalBlock]

    @property
    def readings(self) -> list[IntervalReading]:
        return [r for b in self.blocks for r in b.readings]
