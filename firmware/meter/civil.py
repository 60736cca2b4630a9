# Proleptic Gregorian calendar arithmetic on integer day numbers. Pure: runs under CPython and MicroPython.
#
# MicroPython has no datetime, and time.gmtime() counts from a port-dependent epoch, so the meter does its own
# civil-date arithmetic. Day numbers count days since 2000-01-01 (day 0, a Saturday): they stay small ints on
# the ESP32 (31-bit) for millions of years, and seconds since 2000 stay small until 2034. Integers only.
#
# days_from_civil / civil_from_days follow the well-known "days from civil" construction: shift the year to
# start on March 1 so the leap day is the last day of the year, then split into 400-year eras (146097 days),
# years of the era (365 days + leap rules) and a day of the year mapped to a month by (153 * m + 2) // 5.

DAY = 86400
# Days from 0000-03-01 to 2000-01-01 in the March-based count used below.
_DAY0 = 730425


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_in_month(y, m):
    if m == 2:
        return 29 if is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def days_from_civil(y, m, d):
    """Day number (days since 2000-01-01) of the date y-m-d; d may run past the month (it just adds days)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400                                     # 0..399
    mp = m - 3 if m > 2 else m + 9                          # March = 0 ... February = 11
    doy = (153 * mp + 2) // 5 + d - 1                       # 0..365
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy           # 0..146096
    return era * 146097 + doe - _DAY0


def civil_from_days(n):
    """(year, month, day) of day number n (days since 2000-01-01)."""
    z = n + _DAY0
    era = z // 146097
    doe = z - era * 146097                                  # 0..146096
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)         # 0..365, from March 1
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400
    if m <= 2:
        y += 1
    return y, m, d


def weekday(n):
    """Day of the week of day number n: 0 = Monday ... 6 = Sunday (as MicroPython's time.localtime)."""
    return (n + 5) % 7


def day_of_year(n):
    """1..366 for day number n."""
    y = civil_from_days(n)[0]
    return n - days_from_civil(y, 1, 1) + 1


def time_tuple(s):
    """Seconds since 2000 -> (year, month, mday, hour, minute, second, weekday, yearday) like gmtime()."""
    n, sod = s // DAY, s % DAY
    y, m, d = civil_from_days(n)
    return (y, m, d, sod // 3600, sod // 60 % 60, sod % 60, weekday(n), n - days_from_civil(y, 1, 1) + 1)


def seconds_from_civil(y, m, d, hh=0, mm=0, ss=0):
    """Seconds since 2000-01-01 00:00:00 of a civil date and time (no time zone involved)."""
    return days_from_civil(y, m, d) * DAY + hh * 3600 + mm * 60 + ss
