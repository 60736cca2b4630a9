# A board that keeps time (meter.boundaries, meter.commands, meter.app): a meter whose clock was never set
# meters from its first cycle but stamps nothing with a wrong date; the set-time command (the DLMS clock
# object's +-900 s rule, force beyond it), NTP, and what the boundaries do after a jump. The simulated board's
# RTC starts unset or off the simulated world's true time ('sim' options rtc, rtc_offset_s, ntp).
import json

from meter import events, messages
from meter.app import Meter
from meter.board import BoardError, validate_board
from meter.civil import seconds_from_civil
from meter.clock import CLOCK_VALID_FROM, EPOCH_2000_OFFSET
from mptest import contains, eq, fresh_dir, ge, gt, le, near, raises
from sim.hardware import open_sim

BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"
NIGHT = {"name": "two-rate night", "tz": "CET-1CEST,M3.5.0,M10.5.0/3", "tariffs": 2,
         "seasons": [{"name": "all year", "start": [1, 1], "week": "w"}],
         "weeks": {"w": ["d"] * 7}, "days": {"d": [[0, 2], [360, 1], [1320, 2]]}}
SET_TIME = messages.OP_SET_TIME


def utc(y, m, d, hh=0, mm=0, ss=0):
    return seconds_from_civil(y, m, d, hh, mm, ss) + EPOCH_2000_OFFSET


def _board():
    with open(BOARD) as f:
        board = json.loads(f.read())
    board["tariff"] = {"calendar": NIGHT}
    return validate_board(board)


def _meter(start, flash=None, **sim):
    """A reporting meter on the simulated board; every payload it signs is kept (the whole map: time and status
    included)."""
    sim["scenario"] = "constant"
    sim["start_unix_s"] = start
    hw = open_sim(_board(), flash_dir=flash or fresh_dir("timekeeping"), overrides=sim)
    m = Meter(hw, sink=lambda seq, fr: None)
    return hw, m, spy_payloads(m)


def spy_payloads(m):
    """Every payload the reporting meter m signs from now on, in a list (the whole map: time, status)."""
    sent = []
    payload = m.reporter.builder.payload

    def spy(seq, kind, status, body):
        p = payload(seq, kind, status, body)
        sent.append(p)
        return p

    m.reporter.builder.payload = spy
    return sent


def _run_to(hw, m, t):
    """Run the meter until the simulated world's true time reaches UTC second t (whatever its clock says)."""
    clock = hw.sim.clock
    m.run_until(lambda: clock.world_time() >= t)


def _kind(sent, kind):
    return [p for p in sent if p[messages.K_KIND] == kind]


def _events(sent, code):
    return [p for p in _kind(sent, messages.EVENT) if p[messages.K_EVENT_CODE] == code]


def _set_time(m, counter, t, force=None):
    args = {messages.A_UTC: t}
    if force is not None:
        args[messages.A_FORCE] = force
    m.command(messages.COMMAND, counter, {messages.K_OP: SET_TIME, messages.K_ARGS: args})


def _answer(sent):
    r = _kind(sent, messages.RESPONSE)[-1]
    return r[messages.K_RESULT], r.get(messages.K_REASON)


def test_a_board_without_a_clock_meters_and_flags_its_readings_but_ends_nothing():
    start = utc(2026, 11, 30, 22, 40)  # the billing period ends at 23:00 UTC (local midnight, CET)
    hw, m, sent = _meter(start, rtc="unset")
    eq(hw.time(), EPOCH_2000_OFFSET, "the RTC starts at 2000-01-01, as an ESP32's after power-up")
    eq(m.boundaries.clock_ok, False, "not set")
    m.start()
    _run_to(hw, m, start + 1800)  # across two quarter hours, a demand period and the billing period end
    gt(m.registers.total_uwh("import"), 8000000, "metered from the first cycle (18 W for 30 minutes)")
    eq(m.registers.tariff_uwh("import", 2), 0, "all of it under tariff 1: no time, no calendar to ask")
    hello = _kind(sent, messages.HELLO)[0]
    eq(hello[messages.K_STATUS] & messages.ST_CLOCK_NOT_SET, messages.ST_CLOCK_NOT_SET, "the hello says so")
    readings = _kind(sent, messages.READING)
    ge(len(readings), 29, "a reading every minute")
    for r in readings:
        eq(r[messages.K_STATUS] & messages.ST_CLOCK_NOT_SET, messages.ST_CLOCK_NOT_SET, "every reading flagged")
        le(r[messages.K_TIME], 1801, "stamped with seconds since boot, not a date")
    eq([r[messages.K_TIME] // 60 for r in readings[:3]], [1, 2, 3], "one a minute of uptime")
    eq(_kind(sent, messages.INTERVALS), [], "no load-profile row without a clock")
    eq(_kind(sent, messages.BILLING), [], "no billing snapshot")
    eq(m.boundaries.demand.start, None, "no demand period")
    eq(m.profile.count, 0, "nothing in the load profile either")


def test_the_energy_of_a_meter_without_a_clock_is_the_same_as_with_one():
    start = utc(2026, 11, 3, 9, 0)
    hw, unset, _ = _meter(start, rtc="unset")
    hw2, ok, _ = _meter(start)
    unset.start()
    ok.start()
    _run_to(hw, unset, start + 1200)
    _run_to(hw2, ok, start + 1200)
    near(unset.registers.total_uwh("import"), ok.registers.total_uwh("import"), 1000, "the same µWh, within 1 mWh")


def test_set_time_sets_an_unset_clock_and_rows_demand_billing_follow():
    flash = fresh_dir("timekeeping-billing")
    hw0, m0, _ = _meter(utc(2026, 11, 30, 20, 0), flash=flash)  # an earlier life, clock set
    m0.start()
    _run_to(hw0, m0, utc(2026, 11, 30, 21, 0))
    m0.run_until(lambda: True)
    before = m0.registers.wh("import")
    start = utc(2026, 12, 1, 6, 0)  # power back after the billing period's end (23:00 UTC), clock lost
    hw, m, sent = _meter(start, flash=flash, rtc="unset")
    m.start()
    _run_to(hw, m, start + 600)
    eq(_kind(sent, messages.BILLING), [], "no snapshot while the clock is not set")
    gt(m.registers.wh("import"), before + 2, "ten minutes metered without a clock")
    rtc = hw.time()
    now = hw.sim.clock.world_time()
    _set_time(m, 40, now)
    eq(_answer(sent), (messages.RESULT_OK, "set; expiry not checked: the clock was not set"), "set, and said how")
    eq(m.boundaries.clock_ok, True, "set")
    eq(hw.time(), now, "the clock reads the time sent")
    [ev] = _events(sent, events.CLOCK_SET)
    eq((ev[messages.K_EVENT_VALUE], ev[messages.K_EVENT_TIME]), (now - rtc, now), "shift, stamped new: old = t - v")
    eq(ev[messages.K_STATUS] & messages.ST_CLOCK_NOT_SET, 0, "the event frame carries the new time")
    [snap] = _kind(sent, messages.BILLING)
    eq(snap[messages.K_PERIOD_END], utc(2026, 11, 30, 23, 0), "the period that ended while off")
    eq(snap[messages.K_BILLING_REGISTERS][messages.OBIS_IMPORT], before,
       "frozen as the registers stood at boot: the energy metered without a clock is the next period's")
    _run_to(hw, m, start + 2600)
    rows = [p[messages.K_ROWS][0] for p in _kind(sent, messages.INTERVALS)]
    eq([r[0] for r in rows], [utc(2026, 12, 1, 6, 15), utc(2026, 12, 1, 6, 30)], "rows on the quarter hour")
    eq(rows[0][3] & (messages.ROW_PARTIAL | messages.ROW_CLOCK_ADJUSTED),
       messages.ROW_PARTIAL | messages.ROW_CLOCK_ADJUSTED, "the first one: partial and clock adjusted")
    eq(rows[1][3] & (messages.ROW_PARTIAL | messages.ROW_CLOCK_ADJUSTED), 0, "the next one whole")
    gt(rows[0][1], before * 1000 + 2000, "the energy metered without a clock is in the first row's register")
    d = m.boundaries.demand
    eq(d.last_end, utc(2026, 12, 1, 6, 30), "demand periods close on the quarter hour")
    readings = _kind(sent, messages.READING)
    eq(readings[-1][messages.K_STATUS] & messages.ST_CLOCK_NOT_SET, 0, "readings no longer flagged")
    near(readings[-1][messages.K_TIME], hw.sim.clock.world_time(), 60, "and stamped with UTC")


def test_a_shift_within_900_s_needs_no_force_a_larger_one_does():
    start = utc(2026, 11, 6, 9, 0)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 2400)  # rows 09:15 and 09:30
    t = hw.time()
    _set_time(m, 1, t + 600)  # to ~09:50: within 900 s
    eq(_answer(sent), (messages.RESULT_OK, None), "no force needed")
    eq(hw.time(), t + 600, "set")
    eq([e[messages.K_EVENT_VALUE] for e in _events(sent, events.CLOCK_SET)], [600], "event: the shift")
    t = hw.time()
    _set_time(m, 2, t - 3600)
    result, reason = _answer(sent)
    eq(result, messages.RESULT_REJECTED, "an hour back without force: refused")
    contains("needs force", reason, "why")
    eq(hw.time(), t, "the clock is unchanged")
    eq(len(_events(sent, events.CLOCK_SET)), 1, "no event for a refused set")
    _set_time(m, 3, t - 3600, force=False)
    eq(_answer(sent)[0], messages.RESULT_REJECTED, "force false is no force")
    _set_time(m, 4, t, force="yes")
    eq(_answer(sent)[0], messages.RESULT_BAD_ARGS, "force must be true or false")
    _set_time(m, 5, 1000)
    eq(_answer(sent)[0], messages.RESULT_REJECTED, "a time before 2025 is no time")
    _set_time(m, 6, -5)
    eq(_answer(sent)[0], messages.RESULT_BAD_ARGS, "not UTC seconds")
    eq(hw.time(), t, "nothing changed the clock")
    _run_to(hw, m, start + 3300)  # the clock reads ~10:05 now: the 10:00 row is made
    _set_time(m, 7, hw.time() - 3600, force=True)  # back to ~09:05, with force
    eq(_answer(sent), (messages.RESULT_OK, None), "forced")
    eq([e[messages.K_EVENT_VALUE] for e in _events(sent, events.CLOCK_SET)], [600, -3600], "both sets logged")
    d = m.boundaries.demand
    eq((d.last_end, d.last_partial), (utc(2026, 11, 6, 10, 15), True), "the period of the jump closed at once")
    _run_to(hw, m, start + 3300 + 4500)  # the clock reads ~10:20 again
    rows = [p[messages.K_ROWS][0] for p in _kind(sent, messages.INTERVALS)]
    ends = [r[0] for r in rows]
    eq(ends[:3], [utc(2026, 11, 6, 9, 15), utc(2026, 11, 6, 9, 30), utc(2026, 11, 6, 10, 0)],
       "after the jump forward: no row for the quarter hour skipped, 10:00 next")
    eq(rows[2][3] & (messages.ROW_PARTIAL | messages.ROW_CLOCK_ADJUSTED),
       messages.ROW_PARTIAL | messages.ROW_CLOCK_ADJUSTED, "10:00: partial, clock adjusted")
    eq(ends[3:], [utc(2026, 11, 6, 10, 15)], "after the jump back: no end time twice; 10:15 is the next")
    eq(rows[3][3] & messages.ROW_CLOCK_ADJUSTED, messages.ROW_CLOCK_ADJUSTED, "and it says the clock moved")
    eq([r[0] for r in m.profile.read()], ends, "the profile holds the same rows")


def test_boundaries_planned_before_a_jump_follow_the_new_time():
    start = utc(2026, 11, 2, 20, 50)  # 21:50 CET: tariff 2 (night) from 22:00 CET = 21:00 UTC
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 60)
    eq(m.boundaries.next_boundary, utc(2026, 11, 2, 21, 0), "the switch and quarter hour at 21:00 UTC")
    _set_time(m, 1, hw.time() + 900, force=True)  # ~21:06
    eq(m.boundaries.tariff, 2, "the jump went past the switch: the night tariff is in force")
    eq(m.boundaries.next_boundary, utc(2026, 11, 2, 21, 15), "planned from the new time")
    night = m.registers.tariff_uwh("import", 2)
    _run_to(hw, m, start + 600)
    gt(m.registers.tariff_uwh("import", 2), night, "metered under tariff 2 after the jump")
    eq(_kind(sent, messages.INTERVALS), [], "the 21:00 row never came: the clock jumped past it")


def test_other_commands_wait_for_the_clock():
    hw, m, sent = _meter(utc(2026, 11, 3, 9, 0), rtc="unset")
    m.start()
    _run_to(hw, m, utc(2026, 11, 3, 9, 1))
    m.command(messages.COMMAND, 1, {messages.K_OP: messages.OP_BILLING_RESET, messages.K_ARGS: {}})
    eq(_answer(sent), (messages.RESULT_REJECTED, "rejected: the clock is not set"), "no billing reset")
    m.command(messages.COMMAND, 2, {messages.K_OP: messages.OP_PROFILE, messages.K_ARGS: {1: 0, 2: 5}})
    eq(_answer(sent)[0], messages.RESULT_REJECTED, "no profile")
    eq(_kind(sent, messages.BILLING), [], "nothing billed")


def test_ntp_sets_an_unset_clock_and_moves_a_set_one_only_a_little():
    start = utc(2026, 11, 3, 9, 0)
    hw, m, sent = _meter(start, rtc="unset", ntp=True)
    m.start()
    _run_to(hw, m, start + 30)
    eq(m.boundaries.clock_ok, True, "NTP set it at the first batch")
    near(hw.time(), hw.sim.clock.world_time(), 1, "to the true time (NTP and the RTC: whole seconds)")
    eq(len(_events(sent, events.CLOCK_SET)), 1, "logged")
    hw, m, sent = _meter(start, rtc_offset_s=300, ntp=True)
    m.start()
    _run_to(hw, m, start + 30)
    near(hw.time(), hw.sim.clock.world_time(), 1, "five minutes fast: NTP corrects it")
    eq([e[messages.K_EVENT_VALUE] for e in _events(sent, events.CLOCK_SET)], [-300], "logged with the shift")
    hw, m, sent = _meter(start, rtc_offset_s=-3600, ntp=True)
    m.start()
    _run_to(hw, m, start + 30)
    eq(hw.time() - hw.sim.clock.world_time(), -3600, "an hour: NTP may not force that (only a signed command)")
    eq(_events(sent, events.CLOCK_SET), [], "nothing logged")


def test_the_simulated_clock_options_are_checked():
    for bad, words in (({"rtc": "lost"}, "sim.rtc"), ({"rtc_offset_s": 1.5}, "sim.rtc_offset_s"),
                       ({"ntp": 1}, "sim.ntp"), ({"rtc": "unset", "rtc_offset_s": 60}, "for a set clock")):
        e = raises(BoardError, open_sim, _board(), fresh_dir("timekeeping-bad"), bad)
        contains(words, str(e), "the message names the option")
    ge(CLOCK_VALID_FROM, utc(2025, 1, 1), "valid from 2025")
    eq(CLOCK_VALID_FROM, utc(2025, 1, 1), "exactly 2025-01-01")
