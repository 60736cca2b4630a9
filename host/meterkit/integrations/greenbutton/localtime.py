"""LocalTimeParameters from the meter's POSIX TZ rule (the TZ of its TOU calendar, docs/tariffs.md).

ESPI's DstRuleType is a 32-bit map (espi.xsd): bits 0-11 seconds (0-3599), 12-16 hours (0-23), 17-19 day of the
week (0: not applicable, 1-7 Monday first), 20-24 day of the month (0: not applicable), 25-27 operator, 28-31 month.
Operators: 0 on the day of the month; 1 the weekday on or after the day of the month; 2..6 its first..fifth
occurrence in the month; 7 its last occurrence. 0xFFFFFFFF disables DST.

POSIX `Mm.w.d/time` maps to operator w+1 (w = 1..4) or 7 (w = 5, "last"), weekday d (0 = Sunday -> 7), hours and
seconds of /time; `Jn` (a fixed date, February 29 never counted) to operator 0 on that date. POSIX gives the start
time in local standard time and the end time in local summer time, as ESPI's examples do (US: 02:00 both).
"""

from __future__ import annotations

from meter import tou
from meter.civil import civil_from_days, days_from_civil
from meterkit.integrations.greenbutton.errors import GreenButtonError
from meterkit.integrations.greenbutton.espi import DST_RULE_DISABLED, LocalTimeParameters

_RULE_J, _RULE_N, _RULE_M = 0, 1, 2  # meter.tou's rule kinds: Jn, n, Mm.w.d


def dst_rule(rule: tuple, tz_text: str, what: str) -> int:
    """The DstRuleType bits of one parsed POSIX rule (meter.tou: (kind, a, b, c, seconds after local midnight))."""
    kind, a, b, c, t = rule
    if not 0 <= t < 86400:
        raise GreenButtonError(f"time zone {tz_text!r}: the DST {what} time {t} s after midnight is outside one day; "
                               "ESPI's DST rule holds hours 0-23 only")
    hours, seconds = divmod(t, 3600)
    if kind == _RULE_M:
        month, operator, weekday, day = a, (7 if b == 5 else b + 1), (c or 7), 0
    elif kind == _RULE_J:
        # Jn never counts February 29: day n of a common year is the same month and day every year
        _, month, day = civil_from_days(days_from_civil(2001, 1, 1) + a - 1)
        operator, weekday = 0, 0
    else:
        raise GreenButtonError(f"time zone {tz_text!r}: the DST {what} rule is a zero-based day of the year (n), "
                               "which falls on another date in leap years; ESPI cannot express it (use Mm.w.d or Jn)")
    return (month << 28) | (operator << 25) | (day << 20) | (weekday << 17) | (hours << 12) | seconds


def local_time_parameters(tz_text: str) -> LocalTimeParameters:
    """ESPI LocalTimeParameters of a POSIX TZ string (GreenButtonError for one ESPI cannot express).

    ESPI requires the end rule to fall after the start rule within a year. Where summer time spans New Year
    (southern hemisphere: AEST-10AEDT,M10.1.0,M4.1.0/3) the parameters are written the other way round: the
    summer offset as the zone's offset and a negative DST offset from April to October, which gives the same
    local time at every instant."""
    try:
        tz = tou.TZ(tz_text)
    except ValueError as e:
        raise GreenButtonError(str(e)) from None
    if tz.fixed:
        return LocalTimeParameters(tz.std_offset, 0, DST_RULE_DISABLED, DST_RULE_DISABLED, tz_text)
    # meter.tou keeps the parsed rules on the TZ (_start, _end): the same parse the meter runs
    start, end = tz._start, tz._end
    shift = tz.dst_offset - tz.std_offset
    first_start, first_end = _first_day(start), _first_day(end)
    if first_start < first_end:
        return LocalTimeParameters(tz.std_offset, shift, dst_rule(start, tz_text, "start"),
                                   dst_rule(end, tz_text, "end"), tz_text)
    return LocalTimeParameters(tz.dst_offset, -shift, dst_rule(end, tz_text, "end"),
                               dst_rule(start, tz_text, "start"), tz_text)


def _first_day(rule: tuple) -> int:
    """A day of the year the rule can fall on, enough to order a start and an end rule (month, then week)."""
    kind, a, b = rule[0], rule[1], rule[2]
    if kind == _RULE_M:
        return a * 100 + b
    if kind == _RULE_J:
        _, month, day = civil_from_days(days_from_civil(2001, 1, 1) + a - 1)
        return month * 100 + day // 7 + 1
    return 0  # n: refused by dst_rule anyway

