# The meter's register model at work (meter.app): energy cut at the exact instant of a tariff switch, a demand
# period end, a load-profile interval end and a billing period end; billing snapshots; calendar commands.
# Everything runs on the simulated INA219 in virtual time, where the scenario gives the exact energy of any
# interval, so "exact instant" can be checked to a few µWh (one conversion cycle at 18 W is ~340 µWh).
import json

from meter import events, messages
from meter.app import Meter
from meter.board import validate_board
from meter.civil import seconds_from_civil
from meter.clock import EPOCH_2000_OFFSET, TICKS_MASK
from mptest import eq, fresh_dir
from sim.hardware import open_sim

BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"
UWH_PER_J = 1000000 / 3600.0

# Two rates, local time in Madrid/Berlin: tariff 2 from 22:00 to 06:00.
NIGHT = {"name": "two-rate night", "tz": "CET-1CEST,M3.5.0,M10.5.0/3", "tariffs": 2,
         "seasons": [{"name": "all year", "start": [1, 1], "week": "w"}],
         "weeks": {"w": ["d"] * 7}, "days": {"d": [[0, 2], [360, 1], [1320, 2]]}}


def utc(y, m, d, hh=0, mm=0, ss=0):
    return seconds_from_civil(y, m, d, hh, mm, ss) + EPOCH_2000_OFFSET


def _meter(start, flash=None, calendar=NIGHT, scenario="constant", **tariff):
    with open(BOARD) as f:
        board = json.loads(f.read())
    t = {"calendar": calendar}
    t.update(tariff)
    board["tariff"] = t
    hw = open_sim(validate_board(board), flash_dir=flash or fresh_dir("tariffing"),
                  overrides={"scenario": scenario, "start_unix_s": start})
    sent = []
    m = Meter(hw, sink=lambda seq, fr: None)
    frame = m.reporter.builder.frame

    def spy(kind, status, body):  # every message the meter builds, decoded: (kind, body)
        sent.append((kind, body))
        return frame(kind, status, body)

    m.reporter.builder.frame = spy
    return hw, m, sent


def _run_to(hw, m, t):
    """Run the meter until UTC instant t (seconds)."""
    clock = hw.sim.clock
    end = (t - clock.start_unix_s) * 1000000
    m.run_until(lambda: clock.now_us >= end)


def _exact_uwh(hw, m, t, us=0):
    """µWh the load drew from the meter's first conversion cycle to UTC instant t (+ us microseconds: the
    sum is taken in integers, as a single float cannot hold a UTC second to the microsecond) (scenario
    ground truth)."""
    t0 = m.sensor.t_config / 1000000.0  # the clock starts at 0 (below 2^30 us: no wrap yet)
    return hw.sim.scenario.energy(t0, ((t - hw.sim.clock.start_unix_s) * 1000000 + us) / 1000000.0)[0] * UWH_PER_J


def _bodies(sent, kind):
    return [b for k, b in sent if k == kind]


def test_tariff_switch_at_the_exact_instant():
    start = utc(2026, 11, 2, 20, 0)  # 21:00 CET
    switch = utc(2026, 11, 2, 21, 0)  # 22:00 CET: night rate
    hw, m, _ = _meter(start)
    m.start()
    eq(m.boundaries.tariff, 1, "day rate at 21:00 CET")
    eq(m.boundaries.next_boundary, utc(2026, 11, 2, 20, 15), "first boundary: the demand/profile quarter hour")
    _run_to(hw, m, switch + 1800)
    eq(m.boundaries.tariff, 2, "night rate after 22:00 CET")
    r = m.registers
    day = r.tariff_uwh("import", 1)
    before = _exact_uwh(hw, m, switch)
    # the cut is exact: tariff 1 holds the energy up to the switch, to within the ADC's resolution
    assert abs(day - before) < 40, "tariff 1 %d uWh, exact to the switch %.0f uWh" % (day, before)
    eq(r.wh("import", 1) + r.wh("import", 2), r.wh("import"), "tariff registers sum to the total")
    eq(r.tariff_uwh("import", 1) + r.tariff_uwh("import", 2), r.total_uwh("import"), "exactly, in µWh")


def test_profile_rows_and_demand_periods_end_exactly():
    start = utc(2026, 11, 2, 10, 7, 30)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, utc(2026, 11, 2, 11, 0, 30))
    rows = [b[6][0] for b in _bodies(sent, messages.INTERVALS)]
    eq([r[0] for r in rows], [utc(2026, 11, 2, 10, 15), utc(2026, 11, 2, 10, 30), utc(2026, 11, 2, 10, 45),
                              utc(2026, 11, 2, 11, 0)], "a row at every quarter hour")
    eq(rows[0][3] & messages.ROW_PARTIAL, messages.ROW_PARTIAL, "the first interval started late: partial")
    eq(rows[1][3] & messages.ROW_PARTIAL, 0, "the next one is whole")
    for row in rows:
        exact_mwh = _exact_uwh(hw, m, row[0]) / 1000
        assert abs(row[1] - exact_mwh) <= 1.05, "row %d: %d mWh, exact %.3f" % (row[0], row[1], exact_mwh)
    d = m.boundaries.demand
    eq(d.last_end, utc(2026, 11, 2, 11, 0), "the last closed demand period")
    exact = _exact_uwh(hw, m, d.last_end) - _exact_uwh(hw, m, d.last_end - 900)
    assert abs(d.last_uwh - exact) < 40, "period %d uWh, exact %.0f" % (d.last_uwh, exact)
    eq(d.maximum(0)[0], d.last_average, "constant load: the maximum is any whole period's average")
    assert d.maximum(1)[1] > 0 and d.maximum(2) == (0, 0), "maxima per tariff (1.6.1 only by day)"


def test_billing_snapshot_at_local_midnight_of_the_billing_day_then_demand_reset():
    start = utc(2026, 11, 30, 22, 0)  # 23:00 CET; billing day 1: the period ends 2026-12-01 00:00 CET
    end = utc(2026, 11, 30, 23, 0)
    hw, m, sent = _meter(start, billing_day=1)
    m.start()
    eq(m.boundaries.next_billing, end, "next billing period end: local midnight")
    _run_to(hw, m, end + 600)
    snaps = _bodies(sent, messages.BILLING)
    eq(len(snaps), 1, "one billing snapshot")
    s = snaps[0]
    eq(s[6], end, "period end (key 6)")
    exact = _exact_uwh(hw, m, end)
    assert abs(s[7][10800] * 1000000 - exact) < 1000040, "1.8.0 %d Wh, exact %.0f uWh" % (s[7][10800], exact)
    eq(s[7][10801] + s[7][10802], s[7][10800], "tariff registers in the snapshot sum to the total")
    assert 10803 not in s[7], "only the calendar's tariffs"
    eq(sorted(s[8]), [10600, 10601, 10602], "max demand 1.6.0..1.6.2")
    assert s[8][10600][1] in (utc(2026, 11, 30, 22, 15), utc(2026, 11, 30, 22, 30), utc(2026, 11, 30, 22, 45),
                              end), "1.6.0 timestamp: a period end of the billing period: %r" % s[8]
    assert s[8][10600][0] == max(s[8][10601][0], s[8][10602][0]) > 0, "1.6.0 is the largest tariff maximum"
    eq(m.boundaries.demand.resets, 1, "demand reset")
    eq(m.boundaries.demand.maximum(0), (0, 0), "the 10-minute period after the end has not closed yet")
    eq(m.boundaries.next_billing, utc(2026, 12, 31, 23, 0), "next: 2027-01-01 00:00 CET")
    evs = [b for b in _bodies(sent, messages.EVENT) if b[7] == events.BILLING_END]
    eq([(b[8], b[9]) for b in evs], [(end, end)], "BILLING_END logged at the period end")


def test_billing_period_that_ended_while_off_gets_its_snapshot_at_boot():
    flash = fresh_dir("tariffing-off")
    start = utc(2026, 11, 30, 20, 0)
    hw, m, sent = _meter(start, flash=flash)
    m.start()
    _run_to(hw, m, utc(2026, 11, 30, 21, 0))
    m.run_until(lambda: True)  # settle
    wh = m.registers.wh("import")
    hw2, m2, sent2 = _meter(utc(2026, 12, 1, 6, 0), flash=flash)  # power back 8 hours later
    m2.start()
    snaps = _bodies(sent2, messages.BILLING)
    eq([s[6] for s in snaps], [utc(2026, 11, 30, 23, 0)], "the missed period end, once")
    assert snaps[0][7][10800] in (wh, wh - 1, wh + 1) and snaps[0][7][10800] == m2.registers.wh("import"), \
        "nothing metered while off: the registers as they were"
    eq(m2.boundaries.next_billing, utc(2026, 12, 31, 23, 0), "next one planned")


def test_passive_calendar_activates_at_the_exact_instant():
    start = utc(2026, 11, 3, 9, 0)
    at = utc(2026, 11, 3, 9, 20, 0)
    hw, m, sent = _meter(start, calendar=None)  # single rate (the default calendar)
    m.start()
    _run_to(hw, m, start + 60)
    three = {"name": "peak", "tz": "UTC0", "tariffs": 3, "seasons": [{"start": [1, 1], "week": "w"}],
             "weeks": {"w": ["d"] * 7}, "days": {"d": [[0, 3], [600, 2]]}}  # tariff 2 from 10:00 UTC
    ok = m.command(messages.COMMAND, 5, {10: messages.OP_CALENDAR, 11: {1: three, 2: at}})
    assert ok, "a response frame"
    eq(_bodies(sent, messages.RESPONSE)[-1], {6: 5, 7: 0}, "accepted")
    eq(m.boundaries.next_boundary, utc(2026, 11, 3, 9, 15), "the quarter hour still comes first")
    _run_to(hw, m, at + 300)
    eq(m.boundaries.calendars.active.name, "peak", "active now")
    eq(m.boundaries.tariff, 3, "tariff 3 until 10:00")
    before = _exact_uwh(hw, m, at)
    got = m.registers.tariff_uwh("import", 1)
    assert abs(got - before) < 40, "tariff 1 %d uWh up to the activation, exact %.0f" % (got, before)
    ev = [b for b in _bodies(sent, messages.EVENT) if b[7] in (events.CALENDAR_PASSIVE, events.CALENDAR_ACTIVATED)]
    eq([(b[7], b[8]) for b in ev], [(events.CALENDAR_PASSIVE, at), (events.CALENDAR_ACTIVATED, "peak")], "events")
    eq(ev[1][9], at, "activated at the instant")
    # the calendar survives a restart
    again = Meter(hw, sink=lambda seq, fr: None)
    eq(again.boundaries.calendars.active.name, "peak", "persisted")


def test_bad_calendar_commands_are_rejected_and_change_nothing():
    start = utc(2026, 11, 3, 9, 0)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 30)
    before = m.boundaries.calendars.to_dict()
    good_day = [[0, 1], [480, 2]]
    cases = [
        ({1: dict(NIGHT, days={"d": [[0, 1], [480, 2], [420, 1]]}), 2: start + 3600}, -4, "not sorted"),
        ({1: dict(NIGHT, days={"d": [[0, 1], [480, 2], [480, 1]]}), 2: start + 3600}, -4, "duplicate switch time"),
        ({1: dict(NIGHT, days={"d": [[0, 1], [480, 9]]}), 2: start + 3600}, -4, "tariff"),
        ({1: dict(NIGHT, tz="CET-1CEST,M3.5.0"), 2: start + 3600}, -4, "TZ"),
        ({1: dict(NIGHT, days={"d": good_day}), 2: start - 60}, -4, "not in the future"),
        ({1: dict(NIGHT, tariffs=6, days={"d": [[0, 6]]}), 2: start + 3600}, -4, "tariff"),
        ({1: "not a map", 2: start + 3600}, -3, "bad arguments"),
        ({1: NIGHT}, -3, "bad arguments"),
    ]
    for i, (args, code, words) in enumerate(cases):
        m.command(messages.COMMAND, 10 + i, {10: messages.OP_CALENDAR, 11: args})
        r = _bodies(sent, messages.RESPONSE)[-1]
        eq((r[6], r[7]), (10 + i, code), "case %d result" % i)
        assert words in r[8], "case %d reason: %r" % (i, r[8])
        eq(m.boundaries.calendars.to_dict(), before, "case %d: calendars untouched" % i)
    m.command(messages.COMMAND, 30, {10: 99})
    eq(_bodies(sent, messages.RESPONSE)[-1][7], -2, "unknown operation")


def test_billing_reset_command_and_profile_re_read():
    start = utc(2026, 11, 4, 12, 0)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, utc(2026, 11, 4, 13, 0, 5))
    m.command(messages.COMMAND, 7, {10: messages.OP_BILLING_RESET, 11: {}})
    snaps = _bodies(sent, messages.BILLING)
    eq(len(snaps), 1, "a snapshot now")
    eq(snaps[0][7][10800], m.registers.wh("import"), "the registers as they stand")
    eq(m.boundaries.demand.maximum(0), (0, 0), "demand reset")
    n = len(_bodies(sent, messages.INTERVALS))
    a, b = utc(2026, 11, 4, 12, 30), utc(2026, 11, 4, 13, 0)
    m.command(messages.COMMAND, 8, {10: messages.OP_PROFILE, 11: {1: a, 2: b}})
    again = _bodies(sent, messages.INTERVALS)[n:]
    eq([r[0] for f in again for r in f[6]], [a, a + 900, b], "the stored rows in the range, sent again")
    eq(_bodies(sent, messages.RESPONSE)[-1], {6: 8, 7: 0, 8: "3 rows"}, "answered")
    m.command(messages.COMMAND, 9, {10: messages.OP_PROFILE, 11: {1: start - 7200, 2: start - 3600}})
    eq(_bodies(sent, messages.RESPONSE)[-1], {6: 9, 7: -1, 8: "no rows"}, "nothing there")
    m.command(messages.COMMAND, 10, {10: messages.OP_PROFILE, 11: {1: 5, 2: 4}})
    eq(_bodies(sent, messages.RESPONSE)[-1][7], -3, "from > to refused")


# Tariff 2 from 02:30 to 03:00 local time: both switch times fall into the hour that DST adds or removes.
DST_EDGE = dict(NIGHT, name="dst edge", days={"d": [[0, 1], [150, 2], [180, 1]]})


def test_fall_back_day_never_counts_an_hour_twice():
    # 2026-10-25, 03:00 CEST (01:00 UTC) -> 02:00 CET. 02:30 first comes at 00:30 UTC; 03:00 only at 03:00 CET
    # (02:00 UTC): the tariff holds through the repeated hour, which is counted once.
    hw, m, sent = _meter(utc(2026, 10, 25, 0, 0), calendar=DST_EDGE)
    m.start()
    _run_to(hw, m, utc(2026, 10, 25, 2, 10))
    r = m.registers
    peak = r.tariff_uwh("import", 2)
    exact = _exact_uwh(hw, m, utc(2026, 10, 25, 2, 0)) - _exact_uwh(hw, m, utc(2026, 10, 25, 0, 30))
    assert abs(peak - exact) < 60, "tariff 2 %d uWh, exact 00:30-02:00 UTC %.0f" % (peak, exact)
    eq(r.tariff_uwh("import", 1) + peak, r.total_uwh("import"), "nothing counted twice or lost")
    rows = [b[6][0] for b in _bodies(sent, messages.INTERVALS)]
    dst = [row[0] for row in rows if row[3] & messages.ROW_DST]
    eq(max(dst), utc(2026, 10, 25, 0, 45), "the DST bit ends with the fall-back (01:00 UTC is CET)")


def test_spring_forward_day_never_loses_energy():
    # 2026-03-29, 02:00 CET (01:00 UTC) -> 03:00 CEST: 02:30 and 03:00 do not exist or come at once: both
    # switches fall on the jump, tariff 2 never runs, and every µWh is still in a register.
    hw, m, sent = _meter(utc(2026, 3, 29, 0, 40), calendar=DST_EDGE)
    m.start()
    _run_to(hw, m, utc(2026, 3, 29, 1, 20))
    r = m.registers
    eq(r.tariff_uwh("import", 2), 0, "the half hour that does not exist is not metered as tariff 2")
    clock = hw.sim.clock
    last_read = clock.now_us - ((clock.now_us - m.sensor.tick) & TICKS_MASK)  # the last reading metered
    exact = _exact_uwh(hw, m, clock.start_unix_s, last_read)
    assert abs(r.total_uwh("import") - exact) < 60, "all of it metered: %d vs %.0f" % (r.total_uwh("import"), exact)


def test_sensor_absent_across_a_boundary_still_closes_rows_and_periods():
    start = utc(2026, 11, 5, 8, 5)
    with open(BOARD) as f:
        board = json.loads(f.read())
    board["tariff"] = {"calendar": NIGHT}
    hw = open_sim(validate_board(board), flash_dir=fresh_dir("tariffing-absent"),
                  overrides={"scenario": "constant", "start_unix_s": start, "absent": True})
    rows = []
    m = Meter(hw, sink=lambda seq, fr: None)

    def rows_only(kind, status, body):
        if kind == messages.INTERVALS:
            rows.append(body[6][0])
        return 0, b""

    m.reporter.builder.frame = rows_only
    m.start()
    _run_to(hw, m, utc(2026, 11, 5, 8, 40))
    eq([r[0] for r in rows], [utc(2026, 11, 5, 8, 15), utc(2026, 11, 5, 8, 30)], "rows on time without readings")
    assert all(r[3] & messages.ROW_PARTIAL for r in rows), "flagged partial"
    eq(m.boundaries.demand.last_end, utc(2026, 11, 5, 8, 30), "demand periods closed")
    assert m.boundaries.demand.last_partial, "as partial"


def test_clock_set_is_detected_and_metering_resumes_at_the_new_time():
    start = utc(2026, 11, 6, 9, 0)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 600)
    hw.sim.clock.start_unix_s += 3600  # someone sets the clock an hour forward (NTP, a time command)
    _run_to(hw, m, start + 3600 + 1200)
    evs = [b for b in _bodies(sent, messages.EVENT) if b[7] == events.CLOCK_SET]
    eq(len(evs), 1, "one clock-set event")
    assert 3598 <= evs[0][8] <= 3601, "moved by an hour: %r" % evs[0][8]
    rows = [b[6][0] for b in _bodies(sent, messages.INTERVALS)]
    after = [r for r in rows if r[0] > start + 3600]
    eq(after[0][3] & messages.ROW_CLOCK_ADJUSTED, messages.ROW_CLOCK_ADJUSTED, "the next row says so")
    assert after[0][3] & messages.ROW_PARTIAL, "and is partial"
    eq([r[0] for r in rows], [start + 4500], "no rows for the hour the clock skipped: 10:15 is the first")
