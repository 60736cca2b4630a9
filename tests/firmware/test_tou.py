# meter/tou.py and meter/civil.py inside MicroPython: POSIX TZ parsing, local time, the TOU calendar edge
# cases (midnight, seasons, special days, DST days, passive activation) and every calendar rejection.
import json

from mptest import eq, raises

from meter import civil
from meter.clock import EPOCH_2000_OFFSET
from meter.tou import TZ, Calendar, CalendarSet, validate

BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"
H = 3600


def utc(y, m, d, hh=0, mm=0, ss=0):
    """Unix seconds of a UTC civil time (meter.civil is checked against datetime in the host tests)."""
    return civil.seconds_from_civil(y, m, d, hh, mm, ss) + EPOCH_2000_OFFSET


def cal(days, weeks=None, seasons=None, special=None, tz=BERLIN, tariffs=None):
    d = {"tz": tz, "days": days,
         "weeks": weeks or {"w": ["d"] * 7},
         "seasons": seasons or [{"start": [1, 1], "week": "w"}]}
    if special is not None:
        d["special"] = special
    if tariffs is not None:
        d["tariffs"] = tariffs
    return d


NIGHT = {
    "name": "two-rate night",
    "tz": BERLIN,
    "tariffs": 2,
    "seasons": [{"name": "all year", "start": [1, 1], "week": "every day"}],
    "weeks": {"every day": ["d"] * 7},
    "days": {"d": [[0, 2], [360, 1], [1320, 2]]},
}


def copy(d):
    return json.loads(json.dumps(d))


# ---------------------------------------------------------------- civil


def test_civil():
    eq(civil.days_from_civil(2000, 1, 1), 0, "epoch day")
    eq(civil.weekday(0), 5, "2000-01-01 is a Saturday")
    eq(civil.days_from_civil(1970, 1, 1), -10957, "1970")
    eq(civil.days_from_civil(2024, 2, 29) + 1, civil.days_from_civil(2024, 3, 1), "leap day")
    eq(civil.days_from_civil(2100, 2, 28) + 1, civil.days_from_civil(2100, 3, 1), "2100 not leap")
    eq(civil.civil_from_days(civil.days_from_civil(2400, 2, 29)), (2400, 2, 29), "2400 leap")
    eq(civil.weekday(civil.days_from_civil(2024, 12, 25)), 2, "Christmas 2024 is a Wednesday")
    eq(civil.time_tuple(civil.seconds_from_civil(2024, 12, 31, 23, 59, 58)),
       (2024, 12, 31, 23, 59, 58, 1, 366), "time tuple")
    eq(utc(2024, 1, 1), 1704067200, "unix seconds")
    n = civil.days_from_civil(1969, 12, 1)
    end = civil.days_from_civil(2101, 3, 1)
    while n < end:
        y, m, d = civil.civil_from_days(n)
        assert 1 <= d <= civil.days_in_month(y, m), "day in month"
        eq(civil.days_from_civil(y, m, d), n, "roundtrip")
        n += 13


# ---------------------------------------------------------------- POSIX TZ


def test_tz_fields():
    tz = TZ(BERLIN)
    eq((tz.std_name, tz.std_offset, tz.dst_name, tz.dst_offset), ("CET", 3600, "CEST", 7200),
       "CET-1 is UTC+1")
    tz = TZ("<+0530>-5:30")
    eq((tz.std_name, tz.std_offset, tz.fixed), ("+0530", 19800, True), "quoted fixed")
    eq(tz.utc_to_local(utc(2024, 6, 1)), utc(2024, 6, 1, 5, 30), "fixed local")
    eq(tz.is_dst(utc(2024, 6, 1)), False, "fixed never DST")
    eq(tz.next_transition(utc(2024, 6, 1)), None, "fixed has no transitions")
    eq(TZ("UTC0").utcoffset(utc(2030, 1, 1)), 0, "UTC0")
    eq(TZ("<-03>3").std_offset, -3 * H, "west is positive in POSIX")
    eq(TZ("NST3:30NDT,M3.2.0,M11.1.0").std_offset, -(3 * H + 30 * 60), "half hour")
    eq(TZ("ABC+1:02:03").std_offset, -(H + 123), "seconds")
    eq(TZ("XXX0YYY-2,M3.5.0,M10.5.0").dst_offset, 2 * H, "explicit dst offset")


def test_tz_rules():
    eq(TZ(BERLIN).transitions(2024), (1711846800, 1729990800), "Berlin 2024")
    eq(TZ("PST8PDT,M3.2.0,M11.1.0").transitions(2024), (1710064800, 1730624400), "Los Angeles 2024")
    eq(TZ("AEST-10AEDT,M10.1.0,M4.1.0/3").transitions(2024), (1728144000, 1712419200), "Sydney 2024")
    syd = TZ("AEST-10AEDT,M10.1.0,M4.1.0/3")
    eq(syd.is_dst(utc(2024, 1, 1)), True, "Sydney summer spans new year")
    eq(syd.is_dst(utc(2024, 7, 1)), False, "Sydney winter")
    eq(syd.next_transition(utc(2024, 1, 1)), 1712419200, "next is the April end")
    tz = TZ(BERLIN)
    eq(tz.is_dst(1711846799), False, "last CET second")
    eq(tz.is_dst(1711846800), True, "first CEST second")
    eq(tz.utc_to_local(1711846800) - tz.utc_to_local(1711846799), 3601, "clock jumps an hour")
    eq(tz.localtime(1729990799)[3:6], (2, 59, 59), "02:59:59 CEST")
    eq(tz.localtime(1729990800)[3:6], (2, 0, 0), "02:00:00 CET again")
    eq(tz.name(1729990800), "CET", "abbreviation")

    # Jn never counts February 29; n counts it.
    tz = TZ("AAA0BBB,J60/0,J300/0")
    eq(tz.transitions(2024)[0], utc(2024, 3, 1), "J60 is March 1 in a leap year")
    eq(tz.transitions(2023)[0], utc(2023, 3, 1), "J60 is March 1")
    tz = TZ("AAA0BBB,59/0,300/0")
    eq(tz.transitions(2024)[0], utc(2024, 2, 29), "59 is February 29 in a leap year")
    eq(tz.transitions(2023)[0], utc(2023, 3, 1), "59 is March 1 otherwise")

    # Negative and beyond-24h rule times (RFC 8536 / POSIX.1-2024): America/Nuuk and Gaza-style rules.
    tz = TZ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0")
    # last Sunday of March 2024 is the 31st; -1:00 local standard time = March 30 23:00 -02 = 31st 01:00 UTC
    eq(tz.transitions(2024)[0], utc(2024, 3, 31, 1), "negative time")
    tz = TZ("EET-2EEST,M3.4.4/50,M10.4.4/50")
    # 4th Thursday of March 2024 is the 28th; 50:00 = Saturday 30th 02:00 EET = 00:00 UTC
    eq(tz.transitions(2024)[0], utc(2024, 3, 30, 0), "time beyond 24 h")
    tz = TZ("EST5EDT,0/0,J365/25")
    eq(tz.is_dst(utc(2024, 1, 1, 12)), True, "permanent DST (RFC 8536 form)")
    eq(tz.is_dst(utc(2024, 12, 31, 23, 59)), True, "permanent DST at year end")


def test_gap_fold():
    tz = TZ(BERLIN)
    # 2024-03-31 02:30 local does not exist: the first instant reading >= 02:30 is the jump at 01:00 UTC
    eq(tz.local_to_utc(utc(2024, 3, 31, 2, 30)), 1711846800, "gap -> transition instant")
    eq(tz.local_to_utc(utc(2024, 3, 31, 3, 0)), 1711846800, "03:00 CEST")
    eq(tz.local_to_utc(utc(2024, 3, 31, 1, 59)), 1711846800 - 60, "01:59 CET")
    # 2024-10-27 02:30 local happens twice: first at 00:30 UTC
    eq(tz.local_to_utc(utc(2024, 10, 27, 2, 30)), 1729990800 - 1800, "fold -> first occurrence")
    eq(tz.local_to_utc(utc(2024, 10, 27, 3, 0)), 1729990800 + 3600, "03:00 CET happens once")


def test_tz_errors():
    cases = [
        ("", "empty"),
        (":Europe/Berlin", "not supported"),
        ("CET", "missing the UTC offset"),
        ("CE-1", "at least 3"),
        ("C3T-1", "at least 3"),
        ("CET-25", "hours 25 outside 0..24"),
        ("CET-1:5", "two digits"),
        ("CET-1:60", "minutes 60 outside 0..59"),
        ("CET-1CEST", "without ',start[/time],end[/time]'"),
        ("CET-1CEST,M3.5.0", "DST end rule"),
        ("CET-1CEST;M3.5.0,M10.5.0", "expected the dst offset"),
        ("CET-1CEST,M13.5.0,M10.5.0", "position 11"),
        ("CET-1CEST,M3.6.0,M10.5.0", "week in Mm.w.d 6 outside 1..5"),
        ("CET-1CEST,M3.5.7,M10.5.0", "weekday (0 = Sunday) in Mm.w.d 7 outside 0..6"),
        ("CET-1CEST,M3-5.0,M10.5.0", "expected '.' after the month"),
        ("CET-1CEST,J0,J365", "Julian day Jn 0 outside 1..365"),
        ("CET-1CEST,366,0", "zero-based day n 366 outside 0..365"),
        ("CET-1CEST,M3.5.0/168,M10.5.0", "time hours 168 outside 0..167"),
        ("CET-1CEST,X3,M10.5.0", "must be Jn, n or Mm.w.d"),
        ("CET-1CEST,M3.5.0,M10.5.0/3x", "unexpected 'x'"),
        ("<+03-3", "unterminated"),
        ("<+3>-3", "at least 3"),
        ("<+0 3>-3", "not allowed in the quoted"),
        (None, "must be a string"),
    ]
    for s, frag in cases:
        e = raises(ValueError, TZ, s)
        assert frag in str(e), "TZ %r: %r lacks %r" % (s, str(e), frag)
        assert "bad TZ" in str(e), "names the TZ: %r" % str(e)
    e = raises(ValueError, TZ, "CET-1CEST,M13.5.0,M10.5.0")
    eq(str(e), "bad TZ 'CET-1CEST,M13.5.0,M10.5.0' at position 11: "
               "DST start month in Mm.w.d 13 outside 1..12", "full message")


# ---------------------------------------------------------------- calendar


def test_midnight():
    c = Calendar(NIGHT)
    midnight = utc(2024, 6, 30, 22)                     # 2024-07-01 00:00 CEST
    eq(c.tariff_at(midnight - 2 * H - 1), 1, "21:59:59")
    eq(c.tariff_at(midnight - 2 * H), 2, "22:00")
    eq(c.tariff_at(midnight - 1), 2, "23:59:59")
    eq(c.tariff_at(midnight), 2, "00:00")
    eq(c.tariff_at(midnight + 6 * H - 1), 2, "05:59:59")
    eq(c.tariff_at(midnight + 6 * H), 1, "06:00")
    eq(c.next_switch(midnight - 2 * H), midnight + 6 * H, "no-op midnight boundary skipped")
    eq(c.next_switch(midnight - 2 * H - 1), midnight - 2 * H, "one second before the switch")
    eq(c.next_switch(midnight + 6 * H), midnight + 22 * H, "next 22:00")
    eq(c.day_switches(2024, 7, 1), [(midnight, 2), (midnight + 6 * H, 1), (midnight + 22 * H, 2)], "day plan")
    # the same kind of day under a fixed offset
    c = Calendar(cal({"d": [[0, 1], [1050, 2]]}, tz="<+0530>-5:30", tariffs=2))
    eq(c.tariff_at(utc(2024, 1, 1, 12)), 2, "17:30 IST")
    eq(c.tariff_at(utc(2024, 1, 1, 12) - 1), 1, "17:29:59 IST")
    eq(c.next_switch(utc(2024, 1, 1, 0)), utc(2024, 1, 1, 12), "17:30 IST = 12:00 UTC")
    eq(c.next_switch(utc(2024, 1, 1, 12)), utc(2024, 1, 1, 18, 30), "midnight IST")


def test_seasons():
    d = cal({"peak": [[0, 2], [480, 3], [1320, 2]], "off": [[0, 1]], "wkend": [[0, 2]]},
            weeks={"summer": ["peak"] * 5 + ["wkend"] * 2, "winter": ["off"] * 5 + ["wkend"] * 2},
            seasons=[{"name": "winter", "start": [1, 1], "week": "winter"},
                     {"name": "summer", "start": [6, 1], "week": "summer"},
                     {"name": "winter", "start": [10, 1], "week": "winter"}],
            tz="PST8PDT,M3.2.0,M11.1.0", tariffs=3)
    c = Calendar(d)
    eq(c.day_profile(2024, 5, 31), "off", "last day of winter (Friday)")
    eq(c.day_profile(2024, 6, 1), "wkend", "June 1 2024 is a Saturday")
    eq(c.day_profile(2024, 6, 3), "peak", "first summer Monday")
    eq(c.day_profile(2024, 10, 1), "off", "winter again")
    start_june3 = utc(2024, 6, 3, 7)                    # 00:00 PDT
    eq(c.tariff_at(start_june3 - 1), 2, "Sunday night")
    eq(c.tariff_at(start_june3 + 8 * H), 3, "Monday 08:00 peak")
    eq(c.next_switch(start_june3 - 1), start_june3 + 8 * H, "Sunday 2 -> Monday 2 is no switch")
    end_summer = utc(2024, 10, 1, 7)                    # Tuesday Oct 1 00:00 PDT
    eq(c.tariff_at(end_summer - 1), 2, "Monday 23:59:59 (after 22:00)")
    eq(c.tariff_at(end_summer), 1, "winter weekday")
    eq(c.next_switch(end_summer - 2 * H), end_summer, "season change at local midnight")
    # Before the first season start the last season of the previous year applies (wraps around new year).
    d2 = copy(d)
    d2["seasons"] = d2["seasons"][1:]
    eq(Calendar(d2).day_profile(2024, 3, 4), "off", "wraps to the October season")


def test_special():
    d = cal({"work": [[0, 1], [420, 2]], "holiday": [[0, 3]], "xmas24": [[0, 4]]},
            weeks={"w": ["work"] * 7},
            special=[{"date": [12, 25], "day": "holiday"}, {"date": [2024, 12, 25], "day": "xmas24"},
                     {"date": [2, 29], "day": "holiday"}],
            tariffs=4)
    c = Calendar(d)
    eq(c.day_profile(2024, 12, 24), "work", "ordinary Tuesday")
    eq(c.day_profile(2024, 12, 25), "xmas24", "dated special wins over recurring")
    eq(c.day_profile(2025, 12, 25), "holiday", "recurring special")
    eq(c.day_profile(2024, 2, 29), "holiday", "recurring leap day")
    xmas = utc(2024, 12, 24, 23)                        # 2024-12-25 00:00 CET
    eq(c.tariff_at(xmas - 1), 2, "Christmas Eve")
    eq(c.tariff_at(xmas), 4, "Christmas")
    eq(c.next_switch(xmas - 1), xmas, "switch at midnight into the special day")
    eq(c.next_switch(xmas), xmas + 24 * H, "back to the weekday profile at midnight")
    eq(c.tariff_at(xmas + 24 * H), 1, "Dec 26 00:00")


def test_spring():
    # Berlin 2024-03-31: 02:00 CET -> 03:00 CEST at 01:00 UTC. A switch at 02:30 does not exist locally:
    # it happens at the first valid instant after it, the jump itself.
    jump = 1711846800
    c = Calendar(cal({"d": [[0, 1], [150, 2], [240, 3]]}, tariffs=3))
    eq(c.tariff_at(jump - 1), 1, "01:59:59 CET")
    eq(c.tariff_at(jump), 2, "03:00 CEST")
    eq(c.next_switch(jump - 3600), jump, "02:30 switch at the jump")
    eq(c.next_switch(jump), jump + 3600, "04:00 CEST = 02:00 UTC")
    day = utc(2024, 3, 30, 23)
    eq(c.day_switches(2024, 3, 31), [(day, 1), (jump, 2), (jump + 3600, 3)], "23-hour day")
    eq(c.next_switch(jump + 3600), utc(2024, 3, 31, 22), "midnight CEST")
    # Two switches inside the gap collapse onto the jump: the later one wins, nothing in between.
    c = Calendar(cal({"d": [[0, 1], [130, 2], [150, 3], [240, 1]]}, tariffs=3))
    eq(c.tariff_at(jump), 3, "later of the collapsed switches")
    eq(c.next_switch(jump - 10), jump, "one switch instant")
    eq(c.next_switch(jump), jump + 3600, "then 04:00")
    eq(c.day_switches(2024, 3, 31), [(day, 1), (jump, 3), (jump + 3600, 1)], "collapsed plan")


def test_fall_back():
    # Berlin 2024-10-27: 03:00 CEST -> 02:00 CET at 01:00 UTC; local 02:00..02:59 happens twice.
    back = 1729990800
    c = Calendar(cal({"d": [[0, 1], [150, 2], [180, 3], [600, 1]]}, tariffs=3))
    eq(c.tariff_at(back - 1801), 1, "02:29:59 CEST")
    eq(c.tariff_at(back - 1800), 2, "02:30 CEST: first occurrence switches")
    eq(c.tariff_at(back), 2, "02:00 CET: clock went back, tariff holds")
    eq(c.tariff_at(back + 1800), 2, "02:30 CET: no second switch")
    eq(c.tariff_at(back + 3599), 2, "02:59:59 CET")
    eq(c.tariff_at(back + 3600), 3, "03:00 CET (happens once)")
    eq(c.next_switch(back - 3600), back - 1800, "first 02:30")
    eq(c.next_switch(back - 1800), back + 3600, "the repeated 02:30 is not a switch")
    eq(c.next_switch(back + 3600), utc(2024, 10, 27, 9), "10:00 CET")
    start = utc(2024, 10, 26, 22)
    eq(c.day_switches(2024, 10, 27),
       [(start, 1), (back - 1800, 2), (back + 3600, 3), (utc(2024, 10, 27, 9), 1)], "25-hour day")
    # Total time per tariff over the 25-hour day: every second counted once.
    spent = {1: 0, 2: 0, 3: 0}
    t = start
    end = utc(2024, 10, 27, 23)
    while t < end:
        n = min(c.next_switch(t), end)
        spent[c.tariff_at(t)] += n - t
        t = n
    eq(spent, {1: 2 * H + 1800 + 14 * H, 2: 5400, 3: 7 * H}, "tariff seconds over the 25-hour day")
    # DST ending at local midnight (America/Nuuk: M10.5.0/0): the clock reads Saturday 23:59:59 -01, then
    # Saturday 23:00 -02 again. Sunday 00:00 -01 is never shown, so Sunday starts at 00:00 -02, once.
    tz = "<-02>2<-01>,M3.5.0/-1,M10.5.0/0"
    days = {"sat": [[0, 1], [1380, 2]], "sun": [[0, 3], [60, 1]], "wk": [[0, 1]]}
    weeks = {"w": ["wk"] * 5 + ["sat", "sun"]}
    c = Calendar(cal(days, weeks=weeks, tz=tz, tariffs=3))
    back = TZ(tz).transitions(2024)[1]
    eq(back, utc(2024, 10, 27, 1), "Nuuk transition")
    eq(c.tariff_at(back - 1), 2, "Saturday 23:59:59 -01")
    eq(c.tariff_at(back), 2, "Saturday 23:00 -02: holds")
    eq(c.tariff_at(back + 3600), 3, "Sunday 00:00 -02")
    eq(c.next_switch(back - 3600), back + 3600, "Sunday starts once")
    # DST ending at 00:30: Sunday 00:00..00:29 is shown first, then Saturday 23:30 again. Sunday has begun,
    # the repeated Saturday half hour keeps Sunday's tariff and Sunday 00:00 does not start the day twice.
    tz = "AAA3BBB,M3.5.0,M10.5.0/0:30"
    c = Calendar(cal(days, weeks=weeks, tz=tz, tariffs=3))
    sun = utc(2024, 10, 27, 2)                          # Sunday 00:00 BBB (-02)
    eq(c.tariff_at(sun - 1), 2, "Saturday 23:59:59 BBB")
    eq(c.tariff_at(sun), 3, "Sunday 00:00 BBB")
    eq(c.tariff_at(sun + 1800), 3, "Saturday 23:30 AAA again: still Sunday")
    cold = Calendar(cal(days, weeks=weeks, tz=tz, tariffs=3))
    eq(cold.tariff_at(sun + 1800), 3, "the same from a cold cache")
    eq(cold.next_switch(sun + 1800), sun + 7200, "cold next_switch")
    eq(c.tariff_at(sun + 3600), 3, "Sunday 00:00 AAA")
    eq(c.tariff_at(sun + 7200), 1, "Sunday 01:00 AAA")
    eq(c.next_switch(sun), sun + 7200, "no switch at the repeated midnight")
    eq(c.day_switches(2024, 10, 27), [(sun, 3), (sun + 7200, 1)], "Sunday plan")
    eq(c.day_profile(2024, 10, 27), "sun", "profile")


# ---------------------------------------------------------------- active / passive


FLAT3 = cal({"d": [[0, 3]]}, tz="UTC0", tariffs=3)


def test_activation():
    cs = CalendarSet(NIGHT)
    a = utc(2024, 7, 1, 10, 0, 7)                       # day tariff 1 under NIGHT
    now = a - 100
    cs.activate_passive(FLAT3, a, now)
    eq(cs.activation, a, "pending")
    eq(cs.tariff_at(a - 1), 1, "active until the instant")
    eq(cs.tariff_at(a), 3, "passive from the instant")
    eq(cs.next_switch(now), a, "activation is a switch")
    eq(cs.next_switch(a), cs.passive.next_switch(a), "after it, the passive calendar's switches")
    eq(cs.promote(a - 1), False, "not yet")
    eq(cs.active.name, "two-rate night", "still active")
    eq(cs.promote(a), True, "exactly at the instant")
    eq(cs.tariff_at(a), 3, "now active")
    eq(cs.passive, None, "no passive left")
    eq(cs.activation, None, "no activation left")
    # An activation where the tariff stays the same is not reported as a switch.
    cs = CalendarSet(NIGHT)
    a = utc(2024, 7, 1, 12)
    p = copy(NIGHT)
    p["days"]["d"] = [[0, 2], [360, 1], [1200, 2]]      # passive: night from 20:00 instead of 22:00
    cs.activate_passive(p, a, a - 5)
    eq(cs.next_switch(a - 1), utc(2024, 7, 1, 18), "tariff 1 on both sides: next is 20:00 CEST")
    eq(cs.tariff_at(utc(2024, 7, 1, 19)), 2, "passive rules apply after activation")
    eq(CalendarSet(NIGHT).next_switch(a - 1), utc(2024, 7, 1, 20), "without the passive: 22:00 CEST")
    # A second activate_passive replaces the pending one; cancel_passive drops it.
    cs.activate_passive(FLAT3, a + 50, a - 5)
    eq((cs.activation, cs.tariff_at(a + 50)), (a + 50, 3), "replaced")
    cs.cancel_passive()
    eq((cs.passive, cs.activation, cs.tariff_at(a + 50)), (None, None, 1), "cancelled")


def test_past():
    cs = CalendarSet(NIGHT)
    before = cs.active
    now = utc(2024, 7, 1)
    for at in (now, now - 1, now - 86400):
        e = raises(ValueError, cs.activate_passive, FLAT3, at, now)
        assert "not in the future" in str(e), str(e)
        assert cs.active is before, "active untouched"
        eq(cs.passive, None, "no passive stored")
    raises(ValueError, cs.activate_passive, FLAT3, "soon", now)
    eq(cs.tariff_at(now), 2, "night tariff still in force")


def _bad_calendars():
    out = []

    def bad(frag, fn):
        d = copy(NIGHT)
        fn(d)
        out.append((frag, d))

    def setday(v):
        def f(d):
            d["days"]["d"] = v
        return f

    def setwk(i, v):
        def f(d):
            d["weeks"]["every day"][i] = v
        return f

    def setkey(obj, key, v):
        def f(d):
            obj(d)[key] = v
        return f

    def top(d):
        return d

    def season0(d):
        return d["seasons"][0]

    bad("switch times not sorted: minute 360 after minute 1320", setday([[0, 2], [1320, 2], [360, 1]]))
    bad("duplicate switch time 360", setday([[0, 2], [360, 1], [360, 2]]))
    bad("minute 1440 outside 0..1439", setday([[0, 2], [1440, 1]]))
    bad("minute -5 outside 0..1439", setday([[0, 2], [-5, 1]]))
    bad("tariff 0 outside 1..2", setday([[0, 0]]))
    bad("tariff 3 outside 1..2", setday([[0, 3]]))
    bad("first switch must be at minute 0", setday([[60, 1], [120, 2]]))
    bad("non-empty list", setday([]))
    bad("[minute, tariff] integers", setday([[0, 1, 2]]))
    bad("[minute, tariff] integers", setday([[0, True]]))
    bad("[minute, tariff] integers", setday([[0.0, 1]]))
    bad("tariffs: 9 outside 1..8", setkey(top, "tariffs", 9))
    bad("tariffs: 0 outside 1..8", setkey(top, "tariffs", 0))
    bad("unknown day profile 'zz'", setwk(3, "zz"))
    bad("weeks['every day'][3] (Thursday)", setwk(3, "zz"))
    bad("unknown day profile", setwk(0, ["d"]))
    bad("7 day profile names", lambda d: d["weeks"]["every day"].pop())
    bad("unknown week profile 'summer'", setkey(season0, "week", "summer"))
    bad("season starts not sorted: 03-01 after 06-01",
        lambda d: d["seasons"].extend([{"start": [6, 1], "week": "every day"},
                                       {"start": [3, 1], "week": "every day"}]))
    bad("duplicate season start 01-01", lambda d: d["seasons"].append({"start": [1, 1], "week": "every day"}))
    bad("start day 30 outside 1..29", setkey(season0, "start", [2, 30]))
    bad("start month 13 outside 1..12", setkey(season0, "start", [13, 1]))
    bad("unknown key 'weak'", setkey(season0, "weak", "x"))
    bad("non-empty list", setkey(top, "seasons", []))
    bad("calendar tz: bad TZ", setkey(top, "tz", "CET-1CEST"))
    bad("unknown day profile 'holiday'", setkey(top, "special", [{"date": [12, 25], "day": "holiday"}]))
    bad("date 2023-02-29 does not exist", setkey(top, "special", [{"date": [2023, 2, 29], "day": "d"}]))
    bad("already listed at special[0]",
        setkey(top, "special", [{"date": [5, 1], "day": "d"}, {"date": [5, 1], "day": "d"}]))
    bad("date must be [year, month, day] or [month, day]",
        setkey(top, "special", [{"date": "2024-05-01", "day": "d"}]))
    bad("unknown key 'sesons'", lambda d: d.update({"sesons": d.pop("seasons")}))
    bad("missing key 'days'", lambda d: d.pop("days"))
    return out


def test_bad_calendars():
    cs = CalendarSet(NIGHT)
    now = utc(2024, 7, 1)
    pending = cs.activate_passive(FLAT3, now + 3600, now)
    active = cs.active
    cases = _bad_calendars()
    for frag, d in cases:
        e = raises(ValueError, cs.activate_passive, d, now + 7200, now)
        assert frag in str(e), "%r lacks %r" % (str(e), frag)
        assert str(e).startswith("calendar"), "says it is the calendar: %r" % str(e)
        raises(ValueError, validate, d)
        assert cs.active is active, "active untouched after: " + frag
        assert cs.passive is pending, "pending passive untouched after: " + frag
        eq(cs.activation, now + 3600, "activation untouched after: " + frag)
        eq(cs.tariff_at(now), 2, "still the night tariff at midnight")
    eq(len(cases), 31, "all cases ran")
    # a declared tariff count of 3 on a meter configured with 2 tariff registers
    e = raises(ValueError, CalendarSet, FLAT3, None, None, 2)
    assert "tariffs: 3 outside 1..2" in str(e), str(e)
    validate(NIGHT)


def test_persist():
    cs = CalendarSet(NIGHT)
    now = utc(2024, 7, 1)
    cs.activate_passive(FLAT3, now + 10, now)
    s = json.dumps(cs.to_dict())
    back = CalendarSet.from_dict(json.loads(s))
    eq(back.activation, now + 10, "activation kept")
    eq(back.tariff_at(now), 2, "active")
    eq(back.tariff_at(now + 10), 3, "passive")
    # loading after the activation passed while the meter was off: promote applies it
    eq(back.promote(now + 99999), True, "late activation applied on promote")
    eq(back.active.to_dict(), FLAT3, "passive became active")
    eq(CalendarSet().tariff_at(now), 1, "default single-rate calendar")
    eq(CalendarSet().next_switch(now), now + 9 * 86400, "constant tariff: a no-op boundary after 8 days")


def test_ints():
    # The ESP32's small ints are 31-bit: what the calendar caches (seconds since 2000) stays below 2^30
    # until 2034, so a warm tariff_at allocates no big ints inside the module.
    c = Calendar(NIGHT)
    t = utc(2033, 12, 31, 12)
    eq(c.tariff_at(t), 1, "noon")
    day = c._cur
    for v in [day[0], day[1]] + list(day[2]) + list(c.tz._year(2033)):
        assert -(1 << 30) <= v < (1 << 30), "small int: %d" % v
