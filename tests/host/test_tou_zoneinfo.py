"""meter.tou's POSIX TZ rules against CPython's zoneinfo (IANA tzdata) — in CPython, and inside MicroPython.

Oracle: zoneinfo with the system tzdata (/usr/share/zoneinfo on Debian) or the `tzdata` wheel. The transitions
are found from zoneinfo alone (hourly scan, then bisection to the second), so a wrong rule in meter.tou cannot
hide by moving the sampling points with it.
"""

from __future__ import annotations

import json
import random
import zoneinfo
from datetime import datetime, timedelta, timezone
from pathlib import Path

from meter.tou import TZ, Calendar
from meterkit.device.toolchain import run_micropython

# (POSIX TZ, IANA zone, first year, last year): years in which tzdata's rules equal the POSIX rule.
DST_ZONES = [
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin", 2008, 2040),
    ("PST8PDT,M3.2.0,M11.1.0", "America/Los_Angeles", 2008, 2040),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney", 2009, 2040),     # southern: DST spans new year
    ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "Australia/Lord_Howe", 2009, 2030),  # 30-minute DST
    ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "America/Nuuk", 2024, 2032),  # negative time, ends at midnight
]
FIXED_ZONES = [
    ("<+0530>-5:30", "Asia/Kolkata"),
    ("IST-5:30", "Asia/Kolkata"),
    ("UTC0", "UTC"),
    ("<-03>3", "America/Sao_Paulo"),
]
UTC = timezone.utc


def unix(y, m=1, d=1):
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


def zone_transitions(zone: zoneinfo.ZoneInfo, y: int) -> list[int]:
    """Every UTC instant in year y at which zoneinfo's offset changes, to the second."""
    out = []
    t0 = unix(y)
    end = unix(y + 1)
    prev = datetime.fromtimestamp(t0, zone).utcoffset()
    t = t0
    while t < end:
        nxt = t + 3600
        off = datetime.fromtimestamp(nxt, zone).utcoffset()
        if off != prev:
            lo, hi = t, nxt
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, zone).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
            prev = off
        t = nxt
    return out


def expected(zone: zoneinfo.ZoneInfo, t: int) -> tuple:
    dt = datetime.fromtimestamp(t, zone)
    off = int(dt.utcoffset().total_seconds())
    fields = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.weekday(), dt.timetuple().tm_yday)
    return off, bool(dt.dst()), dt.tzname(), fields


def instants_around(trs: list[int], rng: random.Random) -> list[int]:
    """Every second of +-10 s, every 2 minutes of +-3 h, 40 random instants of +-4 h around each change."""
    ts = []
    for tr in trs:
        ts += range(tr - 10, tr + 11)
        ts += range(tr - 3 * 3600, tr + 3 * 3600 + 1, 120)
        ts += [tr + rng.randint(-4 * 3600, 4 * 3600) for _ in range(40)]
    return ts


def test_tzdata_is_available():
    # The oracle needs IANA data: Debian's tzdata package (/usr/share/zoneinfo) or the PyPI `tzdata` wheel.
    assert "Europe/Berlin" in zoneinfo.available_timezones(), "no tzdata for zoneinfo: install tzdata"


def test_dst_zones_agree_with_zoneinfo():
    rng = random.Random(20240331)
    checked = 0
    for posix, name, y0, y1 in DST_ZONES:
        tz, zone = TZ(posix), zoneinfo.ZoneInfo(name)
        for y in range(y0, y1 + 1):
            trs = zone_transitions(zone, y)
            assert len(trs) == 2, (name, y, trs)
            mine = sorted(tz.transitions(y))
            assert mine == trs, f"{name} {y}: tou {mine} != zoneinfo {trs}"
            for tr in trs:
                assert tz.next_transition(tr - 1) == tr and tz.next_transition(tr - 86400) == tr, (name, tr)
            mid_month = [unix(y, m, 15) + rng.randint(0, 86399) for m in range(1, 13)]
            for t in instants_around(trs, rng) + mid_month:
                want = expected(zone, t)
                got = (tz.utcoffset(t), tz.is_dst(t), tz.name(t), tz.localtime(t))
                assert got == want, f"{name} t={t}: tou {got} != zoneinfo {want}"
                off = want[0]
                assert tz.utc_to_local(t) == t + off
                checked += 1
    assert checked >= 10_000, checked


def test_fixed_offsets_agree_with_zoneinfo():
    rng = random.Random(5)
    for posix, name in FIXED_ZONES:
        tz, zone = TZ(posix), zoneinfo.ZoneInfo(name)
        assert tz.fixed and tz.next_transition(unix(2030)) is None
        for _ in range(1500):
            t = rng.randint(unix(2020), unix(2060))
            off, dst, abbr, fields = expected(zone, t)
            assert (tz.utcoffset(t), tz.is_dst(t), tz.localtime(t)) == (off, dst, fields), (posix, t)
            assert tz.local_to_utc(t + off) == t


def _first_utc_reading(zone: zoneinfo.ZoneInfo, local: datetime, trs: list[int]) -> int:
    """zoneinfo's answer to 'first UTC instant at which the local clock reads `local` or later'."""
    valid = []
    for fold in (0, 1):
        u = int(local.replace(tzinfo=zone, fold=fold).timestamp())
        if datetime.fromtimestamp(u, zone).replace(tzinfo=None) == local:
            valid.append(u)
    if valid:
        return min(valid)                                   # PEP 495 fold=0 is the earlier occurrence
    u0 = int(local.replace(tzinfo=zone, fold=0).timestamp())
    u1 = int(local.replace(tzinfo=zone, fold=1).timestamp())
    (tr,) = [tr for tr in trs if min(u0, u1) <= tr <= max(u0, u1)]  # a skipped time: the jump itself
    return tr


def test_local_to_utc_gap_and_fold_agree_with_zoneinfo():
    checked = 0
    for posix, name, y0, y1 in DST_ZONES:
        tz, zone = TZ(posix), zoneinfo.ZoneInfo(name)
        for y in range(y0, y1 + 1, 3):
            trs = zone_transitions(zone, y)
            for tr in trs:
                base = datetime.fromtimestamp(tr, UTC).replace(tzinfo=None) + timedelta(
                    seconds=tz.std_offset)
                for k in range(-150, 151):
                    local = base + timedelta(minutes=k)
                    want = _first_utc_reading(zone, local, trs)
                    l_unix = int(local.replace(tzinfo=UTC).timestamp())
                    assert tz.local_to_utc(l_unix) == want, (name, local, want)
                    checked += 1
    assert checked > 5000


def test_every_tzdata_zone_footer_agrees():
    """Every zone's own POSIX footer (the TZif file's last line) parses, and matches zoneinfo in 2100..2104,
    after every explicit transition in tzdata (so zoneinfo evaluates the footer too)."""
    footers = {}
    for name in sorted(zoneinfo.available_timezones()):
        path = next((Path(p) / name for p in zoneinfo.TZPATH if (Path(p) / name).is_file()), None)
        if path is None:
            import importlib.resources
            path = importlib.resources.files("tzdata").joinpath("zoneinfo", *name.split("/"))
        data = path.read_bytes()
        if data.startswith(b"TZif") and data[4:5] >= b"2":
            footers[name] = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
    assert len(footers) > 300
    kinds = set()
    for name, footer in footers.items():
        tz, zone = TZ(footer), zoneinfo.ZoneInfo(name)
        kinds.add(footer)
        ts = [unix(2102, 6, 1)]
        for y in (2100, 2101, 2104):
            if not tz.fixed:
                for tr in tz.transitions(y):
                    ts += [tr + d for d in (-3601, -1801, -1, 0, 1, 1799, 3599)]
        for t in ts:
            off, dst, abbr, _ = expected(zone, t)
            assert (tz.utcoffset(t), tz.is_dst(t), tz.name(t)) == (off, dst, abbr), (name, footer, t)
    assert len(kinds) > 50


# ------------------------------------------------------------------ the same instants inside MicroPython

MP_SCRIPT = r"""
import json, sys
from meter.tou import TZ, Calendar
cases = json.loads(open(sys.argv[1]).read())
bad = []
n = 0
for posix, rows in cases["tz"]:
    tz = TZ(posix)
    for t, off, dst, abbr, fields in rows:
        first = tz.local_to_utc(t + off)
        got = [tz.utcoffset(t), tz.is_dst(t), tz.name(t), list(tz.localtime(t)), first <= t]
        if got != [off, dst, abbr, fields, True]:
            bad.append([posix, t, got])
        n += 1
cal = Calendar(cases["calendar"])
out = []
for t in cases["instants"]:
    out.append([cal.tariff_at(t), cal.next_switch(t)])
print(json.dumps({"n": n, "bad": bad[:20], "nbad": len(bad), "calendar": out}))
"""

SPANISH = {
    "name": "2.0TD-style 3 periods",
    "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
    "tariffs": 3,
    "seasons": [{"name": "all year", "start": [1, 1], "week": "week"}],
    "weeks": {"week": ["laborable"] * 5 + ["weekend"] * 2},
    "days": {"laborable": [[0, 3], [480, 2], [600, 1], [840, 2], [1080, 1], [1320, 2]],
             "weekend": [[0, 3]]},
    "special": [{"date": [1, 1], "day": "weekend"}, {"date": [12, 25], "day": "weekend"}],
}


def test_firmware_under_micropython_agrees(tmp_path):
    rng = random.Random(77)
    cases = {"tz": [], "calendar": SPANISH, "instants": []}
    total = 0
    for posix, name, y0, y1 in DST_ZONES[:3] + [DST_ZONES[4]]:
        zone = zoneinfo.ZoneInfo(name)
        rows = []
        for y in (y0, (y0 + y1) // 2, y1):
            trs = zone_transitions(zone, y)
            pick = [t for tr in trs for t in range(tr - 5, tr + 6)]
            pick += rng.sample(instants_around(trs, rng), 250)
            for t in pick:
                off, dst, abbr, fields = expected(zone, t)
                rows.append([t, off, dst, abbr, list(fields)])
        cases["tz"].append([posix, rows])
        total += len(rows)
    fixed_rows = []
    for _ in range(300):
        t = rng.randint(unix(2020), unix(2050))
        off, dst, abbr, fields = expected(zoneinfo.ZoneInfo("Asia/Kolkata"), t)
        fixed_rows.append([t, off, dst, "+0530", list(fields)])
    cases["tz"].append(["<+0530>-5:30", fixed_rows])
    total += len(fixed_rows)
    tz = TZ(SPANISH["tz"])
    for y in (2024, 2031):
        for tr in tz.transitions(y):
            cases["instants"] += [tr + rng.randint(-3 * 86400, 3 * 86400) for _ in range(100)]
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    script = tmp_path / "tz_check.py"
    script.write_text(MP_SCRIPT)
    proc = run_micropython(script, str(data), timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["n"] == total >= 2000
    assert res["nbad"] == 0, res["bad"]
    cal = Calendar(SPANISH)
    assert res["calendar"] == [[cal.tariff_at(t), cal.next_switch(t)] for t in cases["instants"]]
