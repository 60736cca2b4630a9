"""UTC instants as people read and type them: the one formatter and the one parser of the host toolkit.

Meters and the head-end keep time as integer UTC seconds (Unix epoch); local time belongs to billing
(meterkit.billing, with the meter's own POSIX TZ rules).
"""

from __future__ import annotations

import datetime as _dt

UINT32_MAX = 0xFFFFFFFF  # the meter's time range: 1970..2106


def utc_text(t: float | None) -> str:
    """1793491200 -> '2026-11-01T00:00:00Z'; None -> ''."""
    if t is None:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> int:
    """'2026-12-01T00:00Z', '2026-12-01 00:00' (no offset: UTC), '2026-12-01T01:00+01:00' or Unix seconds ->
    Unix seconds within the meter's range. ValueError says what is wrong."""
    t = text.strip()
    if t.isdigit():
        v = int(t)
    else:
        try:
            dt = _dt.datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in ("Z", "z") else t)
        except ValueError:
            raise ValueError(f"not a UTC time: {text!r} (give ISO 8601, e.g. 2026-12-01T00:00Z, or Unix "
                             "seconds)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=_dt.timezone.utc)
        v = int(dt.timestamp())
        if v != dt.timestamp():
            raise ValueError(f"{text!r}: give whole seconds")
    if not 0 <= v <= UINT32_MAX:
        raise ValueError(f"{text!r} is outside the meter's time range (1970..2106)")
    return v


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90', '90s', '15m', '2h', '1d', '1h30m' -> whole seconds (0..2^32-1). ValueError says what is wrong."""
    t = text.strip().lower()
    if t.isdigit():
        v = int(t)
    else:
        v, num = 0, ""
        for ch in t:
            if ch.isdigit():
                num += ch
            elif ch in _UNITS and num:
                v, num = v + int(num) * _UNITS[ch], ""
            else:
                num = "?"
                break
        if num or not t:
            raise ValueError(f"not a duration: {text!r} (give seconds, or e.g. 90s, 15m, 2h, 1d, 1h30m)")
    if v > UINT32_MAX:
        raise ValueError(f"{text!r} is longer than a meter can hold (2^32-1 s)")
    return v
