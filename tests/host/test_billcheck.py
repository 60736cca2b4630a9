"""meterkit billcheck: the ground truth's tariff intervals on DST days (hand-computed), its money, and a short
simulated run across a billing boundary billed both ways (the real firmware under the MicroPython Unix port)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterkit.sim import billcheck as BC

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tariffs"
NIGHT = json.loads((EXAMPLES / "night-2rate.calendar.json").read_text())
CALIFORNIA = json.loads((EXAMPLES / "california-seasonal.calendar.json").read_text())


def utc(*a: int) -> int:
    return int(datetime(*a, tzinfo=timezone.utc).timestamp())


def show(ivs: list[tuple[int, int, int]]) -> list[tuple[str, str, int]]:
    return [(BC.utc_text(a), BC.utc_text(b), t) for a, b, t in ivs]


# --- local time: the POSIX TZ through zoneinfo ----------------------------------------------------------------


@pytest.mark.parametrize("posix, iana", [
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin"),
    ("PST8PDT,M3.2.0,M11.1.0", "America/Los_Angeles"),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),
    ("<+0530>-5:30", "Asia/Kolkata"),
])
def test_posix_zone_follows_the_tz_database(posix, iana):
    """The TZif-footer zone agrees with the IANA zone at every quarter hour of 2026 (DST changes included)."""
    mine, ref = BC.posix_zone(posix), ZoneInfo(iana)
    t = utc(2026, 1, 1)
    while t < utc(2027, 1, 1):
        a, b = datetime.fromtimestamp(t, mine), datetime.fromtimestamp(t, ref)
        assert (a.replace(tzinfo=None), a.utcoffset()) == (b.replace(tzinfo=None), b.utcoffset()), BC.utc_text(t)
        t += 900


def test_posix_zone_refuses_what_is_not_a_tz_string():
    for bad in ("", ":Europe/Berlin", "CET-1\nCEST"):
        with pytest.raises(BC.CheckError, match="tz"):
            BC.posix_zone(bad)


@pytest.mark.parametrize("tz, wall, expected", [
    # Central Europe, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 3, 29, 1, 59), (2026, 3, 29, 0, 59)),
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 3, 29, 2, 0), (2026, 3, 29, 1, 0)),  # does not exist: the jump
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 3, 29, 2, 30), (2026, 3, 29, 1, 0)),  # does not exist: the jump
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 3, 29, 3, 0), (2026, 3, 29, 1, 0)),
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:00..02:59 happen twice
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 10, 25, 2, 0), (2026, 10, 25, 0, 0)),  # first occurrence (CEST)
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 10, 25, 2, 30), (2026, 10, 25, 0, 30)),
    ("CET-1CEST,M3.5.0,M10.5.0/3", (2026, 10, 25, 3, 0), (2026, 10, 25, 2, 0)),  # after the repeated hour
    # California: 2026-03-08 02:00 PST -> 03:00 PDT at 10:00Z; 2026-11-01 02:00 PDT -> 01:00 PST at 09:00Z
    ("PST8PDT,M3.2.0,M11.1.0", (2026, 3, 8, 2, 30), (2026, 3, 8, 10, 0)),
    ("PST8PDT,M3.2.0,M11.1.0", (2026, 11, 1, 1, 30), (2026, 11, 1, 8, 30)),
    ("PST8PDT,M3.2.0,M11.1.0", (2026, 11, 1, 2, 0), (2026, 11, 1, 10, 0)),
])
def test_wall_instant_is_the_first_instant_the_clock_reads_it(tz, wall, expected):
    assert BC.utc_text(BC.wall_instant(BC.posix_zone(tz), datetime(*wall))) == BC.utc_text(utc(*expected))


# --- tariff intervals on DST days, by hand ----------------------------------------------------------------------


def test_night_tariff_on_the_day_dst_ends():
    """25-hour day: midnight is 22:00Z (CEST), 06:00 is 05:00Z (CET, 7 elapsed hours), 22:00 is 21:00Z, the next
    midnight 23:00Z. Night runs on into the next day (merged)."""
    cal = BC.TruthCalendar(NIGHT)
    assert show(cal.intervals(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))) == [
        ("2026-10-24T22:00:00Z", "2026-10-25T05:00:00Z", 2),
        ("2026-10-25T05:00:00Z", "2026-10-25T21:00:00Z", 1),
        ("2026-10-25T21:00:00Z", "2026-10-25T23:00:00Z", 2),
    ]


def test_night_tariff_on_the_day_dst_starts():
    """23-hour day: midnight 23:00Z (CET), 06:00 is 04:00Z (CEST, 5 elapsed hours), 22:00 is 20:00Z."""
    cal = BC.TruthCalendar(NIGHT)
    assert show(cal.intervals(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))) == [
        ("2026-03-28T23:00:00Z", "2026-03-29T04:00:00Z", 2),
        ("2026-03-29T04:00:00Z", "2026-03-29T20:00:00Z", 1),
        ("2026-03-29T20:00:00Z", "2026-03-29T22:00:00Z", 2),
    ]


# Switches at 02:30 and 03:00: inside the skipped hour in spring, inside and after the repeated hour in autumn.
ODD = {"name": "odd", "tz": "CET-1CEST,M3.5.0,M10.5.0/3", "tariffs": 3,
       "seasons": [{"start": [1, 1], "week": "w"}], "weeks": {"w": ["d"] * 7},
       "days": {"d": [[0, 1], [150, 2], [180, 3]]}}


def test_switches_inside_the_skipped_hour_happen_at_the_jump():
    # 02:30 and 03:00 both come at 01:00Z: tariff 2 lasts no time at all that day
    cal = BC.TruthCalendar(ODD)
    assert show(cal.intervals(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))) == [
        ("2026-03-28T23:00:00Z", "2026-03-29T01:00:00Z", 1),
        ("2026-03-29T01:00:00Z", "2026-03-29T22:00:00Z", 3),
    ]


def test_switches_in_the_repeated_hour_happen_once():
    # 02:30 at its first occurrence (00:30Z, CEST); 03:00 after the repetition (02:00Z, CET): tariff 2 lasts 90 min
    cal = BC.TruthCalendar(ODD)
    assert show(cal.intervals(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))) == [
        ("2026-10-24T22:00:00Z", "2026-10-25T00:30:00Z", 1),
        ("2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z", 2),
        ("2026-10-25T02:00:00Z", "2026-10-25T23:00:00Z", 3),
    ]


def test_california_seasons_special_days_and_weekdays():
    cal = BC.TruthCalendar(CALIFORNIA)
    # Labor Day 2026 (Monday Sep 7) follows the summer weekend profile: 16-21 h PDT is mid-peak (2), 23:00Z-04:00Z
    assert show(cal.intervals(utc(2026, 9, 7, 7), utc(2026, 9, 8, 7))) == [
        ("2026-09-07T07:00:00Z", "2026-09-07T23:00:00Z", 3),
        ("2026-09-07T23:00:00Z", "2026-09-08T04:00:00Z", 2),
        ("2026-09-08T04:00:00Z", "2026-09-08T07:00:00Z", 3),
    ]
    assert [t for _, _, t in cal.intervals(utc(2026, 9, 8, 7), utc(2026, 9, 9, 7))] == [3, 1, 3]  # a Tuesday
    # Winter starts again on Oct 1; Nov 1 is the 25-hour day: 08:00 PST is 16:00Z, midnight 07:00Z (PDT)
    assert show(cal.intervals(utc(2026, 11, 1, 7), utc(2026, 11, 2, 8))) == [
        ("2026-11-01T07:00:00Z", "2026-11-01T16:00:00Z", 5),
        ("2026-11-01T16:00:00Z", "2026-11-02T00:00:00Z", 6),
        ("2026-11-02T00:00:00Z", "2026-11-02T05:00:00Z", 4),
        ("2026-11-02T05:00:00Z", "2026-11-02T08:00:00Z", 5),
    ]
    # Before the first season start of the year (none before Jan 1 here) and a January day is winter
    assert [t for _, _, t in cal.intervals(utc(2026, 1, 5, 8), utc(2026, 1, 6, 8))] == [5, 6, 4, 5]


def test_passive_calendar_takes_over_at_its_activation():
    single = dict(NIGHT, days={"d": [[0, 1]]})
    act = utc(2026, 10, 10, 12)
    cal = BC.TruthCalendar({"active": single, "passive": NIGHT, "activation": act})
    assert show(cal.intervals(utc(2026, 10, 10), utc(2026, 10, 11))) == [
        ("2026-10-10T00:00:00Z", "2026-10-10T20:00:00Z", 1),  # tariff 1 all day, then day (HT) until 22:00 CEST
        ("2026-10-10T20:00:00Z", "2026-10-11T00:00:00Z", 2),
    ]


def test_billing_boundaries_and_start():
    cal = BC.TruthCalendar(NIGHT)
    t0 = BC.parse_start("2026-10-05", cal)
    assert BC.utc_text(t0) == "2026-10-04T22:00:00Z"
    assert BC.parse_start("2026-10-05T06:00Z", cal) == utc(2026, 10, 5, 6)
    assert [BC.utc_text(b) for b in BC.billing_boundaries(cal, t0, t0 + 35 * 86400, 1)] == ["2026-10-31T23:00:00Z"]
    assert [BC.utc_text(b) for b in BC.billing_boundaries(cal, t0, t0 + 60 * 86400, 15)] == [
        "2026-10-14T22:00:00Z", "2026-11-14T23:00:00Z"]


# --- the truth from a scenario, and its money --------------------------------------------------------------------


def test_ground_truth_of_a_constant_load_on_the_25_hour_day():
    """18 W for 25 hours from local midnight: night 7 + 2 h = 162 Wh, day 16 h = 288 Wh; demand 18 W."""
    t0 = utc(2026, 10, 24, 22)
    sc = BC.make_scenario("constant", 1, t0)
    tr = BC.ground_truth(sc, t0, utc(2026, 10, 25, 23), BC.TruthCalendar(NIGHT))
    assert tr.wh(1, 2) == pytest.approx(162.0, abs=1e-9)
    assert tr.wh(1, 1) == pytest.approx(288.0, abs=1e-9)
    assert tr.wh(2, 1) == tr.wh(2, 2) == 0.0
    assert tr.demand_w[0] == pytest.approx(18.0)
    assert tr.demand_at[0] == t0 + 900  # equal periods: the earliest stays
    assert set(tr.demand_w) == {0, 1, 2}


def test_demand_truth_finds_the_largest_quarter_hour():
    t0 = utc(2026, 10, 5, 0, 7)  # not on a quarter hour: the first period is clipped to the start
    sc = BC.make_scenario("steps", 3, t0)
    tr = BC.ground_truth(sc, t0, t0 + 6 * 3600, BC.TruthCalendar(NIGHT))
    ends = range((t0 // 900 + 1) * 900, t0 + 6 * 3600 + 1, 900)
    brute = max((sc.energy(max(b - 900, t0) - t0, b - t0)[0] / 900, -b) for b in ends)
    assert (tr.demand_w[0], tr.demand_at[0]) == (pytest.approx(brute[0], rel=1e-12), -brute[1])


def test_truth_money_is_the_worked_example():
    """docs/tariffs.md example 1: 84.3510090 exact, 84.35 rounded."""
    prices = json.loads((EXAMPLES / "night-2rate.prices.json").read_text(), parse_float=Decimal)
    lines, exact, total = BC.truth_money(prices, {"1.8.1": 134560, "1.8.2": 100007, "2.8.1": 11789, "2.8.2": 556}, {})
    assert [ln["amount"] for ln in lines] == [Decimal(x) for x in ("46.01952", "25.801806", "-0.9266154",
                                                                      "-0.0437016", "13.50")]
    assert (exact, total) == (Decimal("84.3510090"), Decimal("84.35"))


def test_cli_refuses_a_run_without_exactly_one_boundary():
    out = subprocess.run([sys.executable, "-m", "meterkit.cli", "billcheck", "--days", "3", "--start", "2026-10-05"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "exactly one billing boundary" in out.stderr and "none" in out.stderr


# --- a short simulated run across a billing boundary ------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """6 simulated hours of import and export from 2026-10-31 19:00 CET: day (HT) until 22:00, night (NT) after,
    the billing boundary 2026-11-01 00:00 CET, one more hour."""
    db = tmp_path_factory.mktemp("billcheck") / "headend.db"
    return BC.simulate(days=0.25, start="2026-10-31T19:00", scenario="mixed", seed=7, db=db)


@pytest.mark.slow
def test_short_run_bills_to_the_wh(short_run):
    r = BC.check(short_run)
    assert r["snapshots_sent"] == 1 and r["snapshots_stored"] == 1
    assert r["snapshot_period_end_utc"] == [utc(2026, 10, 31, 23)]
    assert r["period"] == "2026-10" and r["bill_end_utc"] == utc(2026, 10, 31, 23)
    assert "commissioning" in r["energy_source"]  # opened by the meter's first hello, from empty registers
    regs = {x["register"]: x for x in r["registers"]}
    for reg in ("1.8.1", "1.8.2", "2.8.1", "2.8.2"):
        assert regs[reg]["truth_wh"] > 3, reg  # both tariffs saw import and export
        assert abs(regs[reg]["diff_wh"]) <= 1, regs[reg]
    assert regs["1.8.0"]["meter_wh"] == regs["1.8.1"]["meter_wh"] + regs["1.8.2"]["meter_wh"]
    assert {x["register"] for x in r["demand"]} >= {"1.6.0"} and all(x["ok"] for x in r["demand"])
    assert r["ok"], BC.format_report(r)
    assert json.loads(json.dumps(r))["registers"] == r["registers"]  # what --json prints
    assert abs(Decimal(r["total_diff"])) <= Decimal("0.01")


@pytest.mark.slow
def test_short_run_check_fails_against_a_wrong_truth(short_run):
    """The same stored run, the truth computed with the night tariff starting 30 minutes later: the tariff
    registers no longer agree, and the check says so."""
    shifted = dict(NIGHT, days={"d": [[0, 2], [360, 1], [1350, 2]]})
    r = BC.check(short_run, truth_calendar=shifted)
    assert not r["ok"]
    bad = {x["register"] for x in r["registers"] if not x["ok"]}
    assert {"1.8.1", "1.8.2"} <= bad or {"2.8.1", "2.8.2"} <= bad
