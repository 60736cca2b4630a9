# Time of use: POSIX TZ rules, local time, and a DLMS/COSEM-style activity calendar. Pure: runs unchanged
# under CPython and MicroPython (no datetime, no floats, no time.gmtime - see meter/civil.py).
#
# Times at the API are UTC seconds since 1970 (Unix time, what hal.time(), the protocol and the host speak).
# Inside, the module works in seconds since 2000-01-01 UTC ("t2") and day numbers since 2000-01-01: those stay
# small ints on the ESP32 (31-bit) until 2034 and keep cached values off the heap; one conversion per call.
#
# TZ(string)            POSIX TZ: std offset [dst [offset] [,start[/time],end[/time]]]
#                       offsets follow the POSIX sign (CET-1 is UTC+1); start/end are Jn, n or Mm.w.d;
#                       /time may be negative or beyond 24 h (-167..167 h, the RFC 8536 extension).
# Calendar(dict)        seasons -> week profiles -> day profiles, special days, tz; tariff_at / next_switch.
# CalendarSet           active + passive calendar with an activation instant (DLMS activity calendar).
#
# The calendar dict (plain JSON types, so it can arrive in a signed command or a JSON file):
#   {"name": "two-rate night",                  optional, free text
#    "tz": "CET-1CEST,M3.5.0,M10.5.0/3",        POSIX TZ of the local time the calendar is written in
#    "tariffs": 2,                              optional, 1..max_tariffs (the meter's tariff registers)
#    "seasons": [{"name": "all year", "start": [1, 1], "week": "wk"}],
#                   start [month, day], strictly ascending; a season runs until the next start, and before
#                   the first start of the year the last season (of the previous year) applies
#    "weeks": {"wk": ["d", "d", "d", "d", "d", "d", "d"]},          7 day-profile names, Monday first
#    "days": {"d": [[0, 2], [360, 1], [1320, 2]]},
#                   [minute of the local day 0..1439, tariff 1..tariffs]: strictly ascending, first at 0
#    "special": [{"date": [12, 25], "day": "d"}, {"date": [2025, 4, 18], "day": "d"}]}
#                   optional: [month, day] recurs every year, [year, month, day] once; a dated entry wins
#                   over a recurring one, and both win over the week profile
# Profile names are non-empty strings; unknown keys are rejected (a typo must not silently do nothing).
#
# Local-time semantics of a switch point (decided here, relied on by the registers):
#   A switch "at local hh:mm on day D" happens at the FIRST UTC instant at which the local wall clock reads
#   D hh:mm or later. So
#   - in a spring-forward gap (a local time that does not exist) it happens at the transition instant, the
#     first valid instant after it (at 02:30 on a day when 02:00 jumps to 03:00: at 03:00 DST);
#   - in a fall-back fold (a local time that occurs twice) it happens at the first occurrence only. While the
#     clock repeats times it has already shown, the tariff holds (it is the tariff of the latest local time
#     reached so far), so nothing switches twice and no hour is counted under two tariffs by mistake.
#   Equivalently: tariff(t) = day-profile value at max(local(u) for u <= t).
# Day profiles must start with a switch at minute 0: every local day is self-contained (nothing inherited
# from the previous day, so a calendar activation or a special day never depends on yesterday's profile).

from meter.civil import DAY, civil_from_days, days_from_civil, days_in_month, is_leap, time_tuple, weekday
from meter.clock import EPOCH_2000_OFFSET

_E = EPOCH_2000_OFFSET          # API (Unix) seconds - _E = internal seconds since 2000
MAX_TARIFFS = 8
_RULE_J, _RULE_N, _RULE_M = 0, 1, 2
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# ---------------------------------------------------------------------------------------------- POSIX TZ


def _tzerr(s, i, why):
    return ValueError("bad TZ %r at position %d: %s" % (s, i, why))


def _is_letter(ch):
    return ("A" <= ch <= "Z") or ("a" <= ch <= "z")


def _is_digit(ch):
    return "0" <= ch <= "9"


def _name(s, i, what):
    n = len(s)
    if i < n and s[i] == "<":
        j = s.find(">", i + 1)
        if j < 0:
            raise _tzerr(s, i, "unterminated '<' in the %s name" % what)
        for k in range(i + 1, j):
            ch = s[k]
            if not (_is_letter(ch) or _is_digit(ch) or ch == "+" or ch == "-"):
                raise _tzerr(s, k, "character %r not allowed in the quoted %s name" % (ch, what))
        if j - i - 1 < 3:
            raise _tzerr(s, i, "the %s name needs at least 3 characters" % what)
        return s[i + 1:j], j + 1
    j = i
    while j < n and _is_letter(s[j]):
        j += 1
    if j - i < 3:
        if j < n and (_is_digit(s[j]) or s[j] in "+-:,"):
            why = "the %s name needs at least 3 letters (use <...> for names like <+03>)" % what
        elif j < n:
            why = "character %r not allowed in the %s name" % (s[j], what)
        else:
            why = "the %s name needs at least 3 letters" % what
        raise _tzerr(s, i, why)
    return s[i:j], j


def _number(s, i, lo, hi, maxlen, what):
    j = i
    n = len(s)
    while j < n and _is_digit(s[j]) and j - i < maxlen:
        j += 1
    if j == i:
        raise _tzerr(s, i, "expected %s (digits)" % what)
    if j < n and _is_digit(s[j]):
        raise _tzerr(s, i, "%s has too many digits" % what)
    v = int(s[i:j])
    if v < lo or v > hi:
        raise _tzerr(s, i, "%s %d outside %d..%d" % (what, v, lo, hi))
    return v, j


def _hms(s, i, max_h, what):
    """[+|-]hh[:mm[:ss]] -> signed seconds. hh has 1..2 digits (3 when max_h > 99), mm and ss exactly 2."""
    n = len(s)
    sign = 1
    if i < n and (s[i] == "+" or s[i] == "-"):
        if s[i] == "-":
            sign = -1
        i += 1
    if i >= n or not _is_digit(s[i]):
        raise _tzerr(s, i, "expected the %s as [+|-]hh[:mm[:ss]]" % what)
    h, i = _number(s, i, 0, max_h, 3 if max_h > 99 else 2, what + " hours")
    v = h * 3600
    if i < n and s[i] == ":":
        m, i = _two(s, i + 1, what + " minutes")
        v += m * 60
        if i < n and s[i] == ":":
            sec, i = _two(s, i + 1, what + " seconds")
            v += sec
    return sign * v, i


def _two(s, i, what):
    if i + 2 > len(s) or not (_is_digit(s[i]) and _is_digit(s[i + 1])):
        raise _tzerr(s, i, "expected two digits for the %s" % what)
    v = int(s[i:i + 2])
    if v > 59:
        raise _tzerr(s, i, "%s %d outside 0..59" % (what, v))
    if i + 2 < len(s) and _is_digit(s[i + 2]):
        raise _tzerr(s, i, "%s has too many digits" % what)
    return v, i + 2


def _rule(s, i, what):
    """Jn | n | Mm.w.d, then optional /time -> (kind, a, b, c, seconds after local midnight)."""
    n = len(s)
    if i >= n:
        raise _tzerr(s, i, "missing the %s rule (Jn, n or Mm.w.d)" % what)
    ch = s[i]
    if ch == "J":
        a, i = _number(s, i + 1, 1, 365, 3, what + " Julian day Jn")
        r = [_RULE_J, a, 0, 0]
    elif ch == "M":
        m, i = _number(s, i + 1, 1, 12, 2, what + " month in Mm.w.d")
        if i >= n or s[i] != ".":
            raise _tzerr(s, i, "expected '.' after the month in the %s rule Mm.w.d" % what)
        w, i = _number(s, i + 1, 1, 5, 1, what + " week in Mm.w.d")
        if i >= n or s[i] != ".":
            raise _tzerr(s, i, "expected '.' after the week in the %s rule Mm.w.d" % what)
        d, i = _number(s, i + 1, 0, 6, 1, what + " weekday (0 = Sunday) in Mm.w.d")
        r = [_RULE_M, m, w, d]
    elif _is_digit(ch):
        a, i = _number(s, i, 0, 365, 3, what + " zero-based day n")
        r = [_RULE_N, a, 0, 0]
    else:
        raise _tzerr(s, i, "the %s rule must be Jn, n or Mm.w.d, not %r" % (what, ch))
    t = 7200                                                # POSIX default: 02:00:00 local
    if i < n and s[i] == "/":
        t, i = _hms(s, i + 1, 167, what + " time")
    r.append(t)
    return tuple(r), i


def _parse_tz(s):
    if not isinstance(s, str):
        raise ValueError("bad TZ %r: must be a string" % (s,))
    if not s:
        raise ValueError("bad TZ '': empty string")
    if s[0] == ":":
        raise _tzerr(s, 0, "':' (an implementation-defined zone file name) is not supported; "
                           "give a POSIX rule")
    n = len(s)
    std, i = _name(s, 0, "std")
    if i >= n:
        raise _tzerr(s, i, "missing the UTC offset after the std name (e.g. CET-1, UTC0)")
    off, i = _hms(s, i, 24, "std offset")
    std_off = -off                                          # POSIX counts west of Greenwich as positive
    if i == n:
        return std, std_off, None, std_off, None, None
    dst, i = _name(s, i, "dst")
    dst_off = std_off + 3600                                # POSIX default: one hour ahead of standard time
    if i < n and s[i] != ",":
        off, i = _hms(s, i, 24, "dst offset")
        dst_off = -off
    if i == n:
        raise _tzerr(s, i, "dst name %r without ',start[/time],end[/time]' rules (POSIX leaves the default "
                           "implementation-defined; spell the rules out)" % dst)
    if s[i] != ",":
        raise _tzerr(s, i, "expected ',' before the DST start rule, found %r" % s[i])
    start, i = _rule(s, i + 1, "DST start")
    if i >= n or s[i] != ",":
        raise _tzerr(s, i, "expected ',' and the DST end rule" if i >= n else
                     "expected ',' before the DST end rule, found %r" % s[i])
    end, i = _rule(s, i + 1, "DST end")
    if i != n:
        raise _tzerr(s, i, "unexpected %r after the DST end rule" % s[i:])
    return std, std_off, dst, dst_off, start, end


def _rule_day(r, y):
    """Day number (since 2000) on which rule r falls in year y."""
    kind = r[0]
    jan1 = days_from_civil(y, 1, 1)
    if kind == _RULE_J:                                     # 1..365, February 29 never counted
        k = r[1] - 1
        if k >= 59 and is_leap(y):
            k += 1
        return jan1 + k
    if kind == _RULE_N:                                     # 0..365, February 29 counted
        return jan1 + r[1]
    m, w, d = r[1], r[2], r[3]
    first = days_from_civil(y, m, 1)
    day = first + (d - (first + 6) % 7) % 7 + 7 * (w - 1)   # (n + 6) % 7: 0 = Sunday
    if w == 5:
        last = first + days_in_month(y, m) - 1
        while day > last:
            day -= 7
    return day


class TZ:
    """A POSIX TZ rule. Offsets are seconds EAST of UTC (so 'CET-1' has std_offset 3600)."""

    def __init__(self, s):
        self.string = s
        (self.std_name, self.std_offset, self.dst_name, self.dst_offset,
         self._start, self._end) = _parse_tz(s)
        self._years = {}

    def __repr__(self):
        return "TZ(%r)" % self.string

    @property
    def fixed(self):
        return self._start is None

    # ----- internal, seconds since 2000

    def _year(self, y):
        """(DST start, DST end) of year y in seconds since 2000 UTC."""
        v = self._years.get(y)
        if v is None:
            if len(self._years) > 8:
                self._years = {}
            a = _rule_day(self._start, y) * DAY + self._start[4] - self.std_offset
            b = _rule_day(self._end, y) * DAY + self._end[4] - self.dst_offset
            v = self._years[y] = (a, b)
        return v

    def _events(self, y0, y1):
        # Every year's DST start and end as (t2, year, order, dst_after), sorted. At equal instants the
        # earlier year's event comes first and a year's start precedes its end, so 'the last event at or
        # before t' gives the state: permanent DST written as 0/0,J365/25 stays DST, a zero-length DST
        # stays standard.
        ev = []
        for y in range(y0, y1 + 1):
            a, b = self._year(y)
            ev.append((a, y, 0, True))
            ev.append((b, y, 1, False))
        ev.sort()
        return ev

    def _dst2(self, t2):
        if self._start is None:
            return False
        y = civil_from_days(t2 // DAY)[0]
        state = None
        for e in self._events(y - 1, y + 1):
            if e[0] > t2:
                break
            state = e[3]
        if state is None:                                   # rules with huge /time late in December
            for e in self._events(y - 2, y - 2):
                if e[0] <= t2:
                    state = e[3]
        return bool(state)

    def _offset2(self, t2):
        return self.dst_offset if self._dst2(t2) else self.std_offset

    def _next_transition2(self, t2):
        """First instant > t2 at which DST starts or ends (t2 seconds), None if none within ~2 years."""
        if self._start is None:
            return None
        cur = self._dst2(t2)
        y = civil_from_days(t2 // DAY)[0]
        ev = self._events(y - 1, y + 2)
        n = len(ev)
        for i in range(n):
            t = ev[i][0]
            if t <= t2 or (i + 1 < n and ev[i + 1][0] == t):
                continue                                    # only the last event at one instant counts
            if ev[i][3] != cur:
                return t
        return None

    def _local_to_utc2(self, l2):
        """First UTC instant (t2) at which the local clock reads l2 or later."""
        if self._start is None:
            return l2 - self.std_offset
        u = l2 - (self.dst_offset if self.dst_offset > self.std_offset else self.std_offset)
        # Invariant: local(v) < l2 for all v < u, and local(u) <= l2.
        for _ in range(8):
            off = self._offset2(u)
            cand = l2 - off
            nt = self._next_transition2(u)
            if nt is None or cand < nt:
                return cand
            if nt + self._offset2(nt) >= l2:
                return nt                                   # the clock jumps over (or onto) l2 at nt
            u = nt
        return cand

    # ----- public, Unix seconds

    def utcoffset(self, t):
        """Seconds east of UTC in effect at UTC instant t."""
        return self._offset2(t - _E)

    def is_dst(self, t):
        return self._dst2(t - _E)

    def name(self, t):
        return self.dst_name if self._dst2(t - _E) else self.std_name

    def utc_to_local(self, t):
        """Local wall-clock seconds ('Unix-like' count of the local date and time) at UTC instant t."""
        return t + self._offset2(t - _E)

    def local_to_utc(self, t_local):
        """The first UTC instant at which the local clock reads t_local or later: the earlier of two
        occurrences in a fall-back fold; the transition instant for a time skipped by spring-forward."""
        return self._local_to_utc2(t_local - _E) + _E

    def next_transition(self, t):
        """First UTC instant > t at which the offset (DST state) changes; None for a fixed offset."""
        r = self._next_transition2(t - _E)
        return None if r is None else r + _E

    def transitions(self, year):
        """(DST start, DST end) UTC instants of the rules for that year, or None for a fixed offset."""
        if self._start is None:
            return None
        a, b = self._year(year)
        return a + _E, b + _E

    def localtime(self, t):
        """(year, month, mday, hour, minute, second, weekday 0=Monday, yearday) of the local time at t."""
        t2 = t - _E
        return time_tuple(t2 + self._offset2(t2))


# ---------------------------------------------------------------------------------------------- calendar


def _cerr(path, why):
    return ValueError("calendar%s: %s" % (" " + path if path else "", why))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(d, path, allowed, required):
    if not isinstance(d, dict):
        raise _cerr(path, "must be an object/dict, not %s" % type(d).__name__)
    for k in sorted(d.keys(), key=str):
        if k not in allowed:
            raise _cerr(path, "unknown key %r (allowed: %s)" % (k, ", ".join(allowed)))
    for k in required:
        if k not in d:
            raise _cerr(path, "missing key %r" % k)


def _check_id(v, path):
    if not isinstance(v, str) or not v:
        raise _cerr(path, "profile name must be a non-empty string, not %r" % (v,))


def _ref(v, table, path, what):
    if not isinstance(v, str) or v not in table:
        raise _cerr(path, "unknown %s %r" % (what, v))
    return v


def _month_day(v, path, what):
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not _is_int(v[0]) or not _is_int(v[1]):
        raise _cerr(path, "%s must be [month, day], not %r" % (what, v))
    m, d = v
    if not 1 <= m <= 12:
        raise _cerr(path, "%s month %d outside 1..12" % (what, m))
    if not 1 <= d <= days_in_month(2000, m):                # 2000 is leap: February 29 may recur
        raise _cerr(path, "%s day %d outside 1..%d for month %d" % (what, d, days_in_month(2000, m), m))
    return m, d


def _build(d, max_tariffs):
    """Validate a calendar dict; return its compiled form. Raises ValueError naming the failing element."""
    _check_keys(d, "", ("name", "tz", "tariffs", "seasons", "weeks", "days", "special"),
                ("tz", "seasons", "weeks", "days"))
    if "name" in d and not isinstance(d["name"], str):
        raise _cerr("name", "must be a string")
    try:
        tz = TZ(d["tz"])
    except ValueError as e:
        raise _cerr("tz", str(e))
    ntar = d.get("tariffs", max_tariffs)
    if not _is_int(ntar) or not 1 <= ntar <= max_tariffs:
        raise _cerr("tariffs", "%r outside 1..%d (the meter has %d tariff registers)"
                    % (ntar, max_tariffs, max_tariffs))

    days = d["days"]
    if not isinstance(days, dict) or not days:
        raise _cerr("days", "must be a non-empty object of day profiles")
    cdays = {}
    for did in sorted(days.keys(), key=str):
        _check_id(did, "days")
        sw = days[did]
        path = "days[%r]" % did
        if not isinstance(sw, (list, tuple)) or not sw:
            raise _cerr(path, "must be a non-empty list of [minute, tariff] switch points")
        secs, tars = [], []
        prev = -1
        for k in range(len(sw)):
            p = sw[k]
            where = "%s[%d]" % (path, k)
            if not isinstance(p, (list, tuple)) or len(p) != 2 or not _is_int(p[0]) or not _is_int(p[1]):
                raise _cerr(where, "switch point must be [minute, tariff] integers, not %r" % (p,))
            minute, tar = p
            if not 0 <= minute <= 1439:
                raise _cerr(where, "minute %d outside 0..1439" % minute)
            if not 1 <= tar <= ntar:
                raise _cerr(where, "tariff %d outside 1..%d" % (tar, ntar))
            if k == 0 and minute != 0:
                raise _cerr(where, "the first switch must be at minute 0 (each day starts with its own "
                                   "tariff), not %d" % minute)
            if minute == prev:
                raise _cerr(where, "duplicate switch time %d (two switches at one minute)" % minute)
            if minute < prev:
                raise _cerr(where, "switch times not sorted: minute %d after minute %d" % (minute, prev))
            prev = minute
            secs.append(minute * 60)
            tars.append(tar)
        cdays[did] = (tuple(secs), tuple(tars))

    weeks = d["weeks"]
    if not isinstance(weeks, dict) or not weeks:
        raise _cerr("weeks", "must be a non-empty object of week profiles")
    cweeks = {}
    for wid in sorted(weeks.keys(), key=str):
        _check_id(wid, "weeks")
        wk = weeks[wid]
        path = "weeks[%r]" % wid
        if not isinstance(wk, (list, tuple)) or len(wk) != 7:
            raise _cerr(path, "must list 7 day profile names, Monday first")
        for k in range(7):
            _ref(wk[k], cdays, "%s[%d] (%s)" % (path, k, _WEEKDAYS[k]), "day profile")
        cweeks[wid] = tuple(wk)

    seasons = d["seasons"]
    if not isinstance(seasons, (list, tuple)) or not seasons:
        raise _cerr("seasons", "must be a non-empty list of {start: [month, day], week: name}")
    cseasons = []
    prev = None
    for k in range(len(seasons)):
        se = seasons[k]
        path = "seasons[%d]" % k
        _check_keys(se, path, ("name", "start", "week"), ("start", "week"))
        if "name" in se and not isinstance(se["name"], str):
            raise _cerr(path, "name must be a string")
        m, dd = _month_day(se["start"], path, "start")
        _ref(se["week"], cweeks, path, "week profile")
        key = m * 32 + dd
        if prev is not None:
            if key == prev:
                raise _cerr(path, "duplicate season start %02d-%02d" % (m, dd))
            if key < prev:
                raise _cerr(path, "season starts not sorted: %02d-%02d after %02d-%02d"
                            % (m, dd, prev // 32, prev % 32))
        prev = key
        cseasons.append((key, se["week"]))

    special = d.get("special", [])
    if not isinstance(special, (list, tuple)):
        raise _cerr("special", "must be a list of {date: [year, month, day] or [month, day], day: name}")
    sdate, smd, seen = {}, {}, {}
    for k in range(len(special)):
        sp = special[k]
        path = "special[%d]" % k
        _check_keys(sp, path, ("date", "day", "name"), ("date", "day"))
        _ref(sp["day"], cdays, path, "day profile")
        dt = sp["date"]
        if isinstance(dt, (list, tuple)) and len(dt) == 3:
            y = dt[0]
            if not _is_int(y) or not 1970 <= y <= 9999:
                raise _cerr(path, "year %r outside 1970..9999" % (y,))
            m, dd = _month_day(dt[1:], path, "date")
            if dd > days_in_month(y, m):
                raise _cerr(path, "date %04d-%02d-%02d does not exist" % (y, m, dd))
            key, table, shown = days_from_civil(y, m, dd), sdate, "%04d-%02d-%02d" % (y, m, dd)
        elif isinstance(dt, (list, tuple)) and len(dt) == 2:
            m, dd = _month_day(dt, path, "date")
            key, table, shown = m * 32 + dd, smd, "every %02d-%02d" % (m, dd)
        else:
            raise _cerr(path, "date must be [year, month, day] or [month, day] (recurring), not %r" % (dt,))
        if shown in seen:
            raise _cerr(path, "date %s already listed at special[%d]" % (shown, seen[shown]))
        seen[shown] = k
        table[key] = sp["day"]
    return tz, ntar, cdays, cweeks, cseasons, sdate, smd


def validate(d, max_tariffs=MAX_TARIFFS):
    """Raise ValueError (with the failing element named) unless d is a valid calendar dict."""
    _build(d, max_tariffs)


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_copy(x) for x in v]
    return v


class Calendar:
    """An activity calendar (see the module header for the dict format and the local-time rules)."""

    def __init__(self, d, max_tariffs=MAX_TARIFFS):
        (self.tz, self.tariffs, self._days, self._weeks, self._seasons,
         self._sdate, self._smd) = _build(d, max_tariffs)
        self._src = _copy(d)
        self.name = d.get("name", "")
        self._cache = {}
        self._cur = None

    def to_dict(self):
        return _copy(self._src)

    def _profile(self, dn):
        p = self._sdate.get(dn)
        if p is not None:
            return p
        y, m, d = civil_from_days(dn)
        k = m * 32 + d
        p = self._smd.get(k)
        if p is not None:
            return p
        week = self._seasons[-1][1]                         # before the first start: last year's last season
        for key, w in self._seasons:
            if key > k:
                break
            week = w
        return self._weeks[week][weekday(dn)]

    def _day(self, dn):
        # (start t2, end t2, [switch instants t2], [tariffs], day number, profile) of local day dn.
        c = self._cache.get(dn)
        if c is None:
            if len(self._cache) > 10:
                self._cache = {}
            pid = self._profile(dn)
            secs, tars = self._days[pid]
            l2u = self.tz._local_to_utc2
            base = dn * DAY
            c = (l2u(base), l2u(base + DAY), [l2u(base + s) for s in secs], tars, dn, pid)
            self._cache[dn] = c
        return c

    def _locate(self, t2):
        c = self._cur
        if c is not None and c[0] <= t2 < c[1]:
            return c
        dn = (t2 + self.tz._offset2(t2)) // DAY
        c = self._day(dn)
        if t2 >= c[1]:                                      # still holding after a fall-back across midnight
            c = self._day(dn + 1)
        self._cur = c
        return c

    @staticmethod
    def _pick(c, t2):
        b = c[2]
        i = len(b) - 1
        while b[i] > t2:
            i -= 1
        return c[3][i]

    def tariff_at(self, t):
        """Tariff (1..tariffs) in effect at UTC instant t."""
        t2 = t - _E
        return self._pick(self._locate(t2), t2)

    def next_switch(self, t, horizon_days=8):
        """The first UTC instant > t at which the tariff changes. If it does not change within the next
        horizon_days local days, returns the local midnight after them (a no-op boundary: call again)."""
        t2 = t - _E
        c = self._locate(t2)
        cur = self._pick(c, t2)
        dn = c[4]
        for _ in range(horizon_days + 1):
            b, tars, end = c[2], c[3], c[1]
            n = len(b)
            for i in range(n):
                bi = b[i]
                if bi <= t2 or bi >= end or (i + 1 < n and b[i + 1] == bi):
                    continue
                if tars[i] != cur:
                    return bi + _E
            dn += 1
            c = self._day(dn)
        return c[0] + _E

    def day_profile(self, y, m, d):
        """Name of the day profile that applies on local date y-m-d."""
        return self._profile(days_from_civil(y, m, d))

    def day_switches(self, y, m, d):
        """[(UTC instant, tariff)] switch points of local date y-m-d as they happen (collapsed ones gone)."""
        c = self._day(days_from_civil(y, m, d))
        out = []
        b = c[2]
        for i in range(len(b)):
            if b[i] < c[1] and not (i + 1 < len(b) and b[i + 1] == b[i]):
                out.append((b[i] + _E, c[3][i]))
        return out


def billing_instant(tz, year, month, day):
    """UTC instant of local midnight starting day `day` (1..28) of year-month: a billing period end."""
    return tz._local_to_utc2(days_from_civil(year, month, day) * DAY) + _E


def next_billing(tz, t, day):
    """The first billing period end strictly after UTC instant t: local midnight (TZ `tz`) at the start of day
    `day` (1..28, so every month has it) of a month."""
    if not _is_int(day) or not 1 <= day <= 28:
        raise ValueError("billing day must be 1..28, got %r" % (day,))
    y, m = tz.localtime(t)[:2]
    b = billing_instant(tz, y, m, day)
    if b <= t:
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        b = billing_instant(tz, y, m, day)
    return b


DEFAULT_CALENDAR = {
    "name": "single-rate",
    "tz": "UTC0",
    "tariffs": 1,
    "seasons": [{"name": "all year", "start": [1, 1], "week": "all"}],
    "weeks": {"all": ["all"] * 7},
    "days": {"all": [[0, 1]]},
}


class CalendarSet:
    """Active and passive calendar (DLMS activity calendar): the passive one becomes active at a future
    activation instant. tariff_at/next_switch already follow a pending activation; promote(now) makes it
    permanent (call it from the meter loop, then persist to_dict())."""

    def __init__(self, active=None, passive=None, activation=None, max_tariffs=MAX_TARIFFS):
        self.max_tariffs = max_tariffs
        self.active = self._calendar(DEFAULT_CALENDAR if active is None else active)
        self.passive = None
        self.activation = None
        if passive is not None:
            if not _is_int(activation):
                raise ValueError("calendar set: a passive calendar needs an integer activation instant")
            self.passive = self._calendar(passive)
            self.activation = activation

    def _calendar(self, c):
        if isinstance(c, Calendar):
            if c.tariffs > self.max_tariffs:
                raise _cerr("tariffs", "%d outside 1..%d (the meter has %d tariff registers)"
                            % (c.tariffs, self.max_tariffs, self.max_tariffs))
            return c
        return Calendar(c, self.max_tariffs)

    def activate_passive(self, calendar, at, now):
        """Load a passive calendar (dict or Calendar) to become active at UTC instant `at`, which must lie
        strictly after `now`. On any error raises ValueError and changes nothing (active and any pending
        passive calendar stay as they were). A later call replaces a pending passive calendar."""
        if not _is_int(at) or not _is_int(now):
            raise ValueError("calendar activation: instants must be integers (UTC seconds)")
        if at <= now:
            raise ValueError("calendar activation: activation time %d is not in the future (now %d); "
                             "passive calendar rejected, active calendar unchanged" % (at, now))
        cal = self._calendar(calendar)
        self.passive = cal
        self.activation = at
        return cal

    def cancel_passive(self):
        self.passive = None
        self.activation = None

    def promote(self, now):
        """If the activation instant has come, make the passive calendar active. True when it did."""
        if self.passive is not None and now >= self.activation:
            self.active = self.passive
            self.passive = None
            self.activation = None
            return True
        return False

    def calendar_at(self, t):
        if self.passive is not None and t >= self.activation:
            return self.passive
        return self.active

    def tariff_at(self, t):
        return self.calendar_at(t).tariff_at(t)

    def next_switch(self, t):
        """First UTC instant > t at which the tariff changes, the activation instant included (it is returned
        only if the passive calendar's tariff there differs from the current one)."""
        a = self.activation
        if self.passive is None or t >= a:
            return self.calendar_at(t).next_switch(t)
        n = self.active.next_switch(t)
        if n < a:
            return n
        if self.passive.tariff_at(a) != self.active.tariff_at(t):
            return a
        return self.passive.next_switch(a)

    def to_dict(self):
        return {"active": self.active.to_dict(),
                "passive": None if self.passive is None else self.passive.to_dict(),
                "activation": self.activation}

    @classmethod
    def from_dict(cls, d, max_tariffs=MAX_TARIFFS):
        """Restore persisted state. An activation instant already past (the meter was off) is kept: the next
        promote(now) applies it."""
        if not isinstance(d, dict) or "active" not in d:
            raise ValueError("calendar set: persisted state must be a dict with 'active'")
        return cls(d["active"], d.get("passive"), d.get("activation"), max_tariffs)
