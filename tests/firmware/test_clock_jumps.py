# Clocks that jump (issue 11, finding 2): set years ahead or back, to 1970, beyond what the wire carries
# (uint32 seconds), or a year off at power-up, each then corrected. In every one: no billing period is
# snapshotted twice, the load profile resumes within one interval of the correction, no internal error is
# logged, and every frame carries a time the head-end takes (docs/protocol.md, "Clock changes").
# The RTC is moved behind the meter's back (hw.sim.clock.set_time: "anyone", noticed against the tick
# counter) and corrected by the head-end's signed set-time command (forced where the clock was set).
from meter import events, messages
from mptest import eq, fresh_dir, ge, gt, le, near
from sim.hardware import open_sim  # noqa: F401 - the simulated board (via test_timekeeping._meter)
from test_timekeeping import _answer, _events, _kind, _meter, _run_to, _set_time, utc

YEAR = 365 * 86400
TEN_YEARS = 3652 * 86400
U32 = 0xFFFFFFFF
QUARTER = 900


def _periods(sent):
    """Billing snapshots: {period end: [1.8.0 Wh, ...]}, one entry per snapshot made."""
    out = {}
    for p in _kind(sent, messages.BILLING):
        out.setdefault(p[messages.K_PERIOD_END], []).append(p[messages.K_BILLING_REGISTERS][messages.OBIS_IMPORT])
    return out


def _rows(sent):
    return [p[messages.K_ROWS][0] for p in _kind(sent, messages.INTERVALS)]


def _check(sent, what):
    """What every scenario must show: no period snapshotted twice, no internal error, every time a uint32."""
    twice = dict((end, wh) for end, wh in _periods(sent).items() if len(wh) > 1)
    eq(twice, {}, what + ": no billing period snapshotted twice")
    eq([e[messages.K_EVENT_VALUE] for e in _events(sent, events.INTERNAL)], [], what + ": no internal error")
    times = [p[messages.K_TIME] for p in sent] + [p[messages.K_EVENT_TIME] for p in _kind(sent, messages.EVENT)]
    eq([t for t in times if not 0 <= t <= U32], [], what + ": every time fits the wire (uint32)")


def _resumed(hw, m, sent, what):
    """After a correction: the next quarter hour's row is stored (with the right date), flagged."""
    t = hw.time()
    _run_to(hw, m, hw.sim.clock.world_time() + QUARTER + 120)
    new = [r for r in _rows(sent) if t < r[0] <= t + QUARTER]
    eq(len(new), 1, what + ": a row within one interval of the correction")
    eq(new[0][3] & messages.ROW_CLOCK_ADJUSTED, messages.ROW_CLOCK_ADJUSTED, what + ": flagged clock adjusted")
    eq([r[0] for r in m.profile.read(t, t + QUARTER)], [new[0][0]], what + ": stored in the profile")
    return new[0]


def _correct(hw, m, sent, counter):
    """The head-end sets the clock to the true time (forced: a set clock may be years off)."""
    _set_time(m, counter, hw.sim.clock.world_time(), force=True)
    eq(_answer(sent)[0], messages.RESULT_OK, "the set-time command is taken")
    eq(m.boundaries.clock_ok, True, "the clock is set")


def test_ten_years_ahead_for_half_an_hour_then_corrected():
    start = utc(2026, 11, 30, 22, 0)  # the billing period ends at 23:00 UTC (midnight CET)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 600)
    hw.sim.clock.set_time(hw.time() + TEN_YEARS)  # someone sets it ten years ahead
    _run_to(hw, m, start + 2400)
    [jump] = [e[messages.K_EVENT_VALUE] for e in _events(sent, events.CLOCK_SET)]
    near(jump, TEN_YEARS, 1, "the jump is an event: new - old (the set dropped a fraction of a second)")
    le(len(_kind(sent, messages.BILLING)), 1, "a jump forward closes the period in progress at most: no replay "
                                              "of the ten years it skipped")
    _correct(hw, m, sent, 1)
    row = _resumed(hw, m, sent, "ten years ahead")
    ge(row[0], start + 2400, "the row has the true date")
    _run_to(hw, m, utc(2026, 11, 30, 23, 30))  # past the true end of the billing period
    _check(sent, "ten years ahead")
    eq(len(_periods(sent)), 1, "one snapshot in all: the period in progress, once")
    gt(m.profile.count, 3, "rows before, during and after")


def _no_time_then_set(to, what, check=None):
    """The RTC is set to UTC second `to` (a time the meter cannot use) 10 minutes in; 30 minutes later the
    head-end sets it (an unset clock takes any valid time without force). check(hw, m, sent) runs before."""
    start = utc(2026, 11, 30, 22, 0)
    hw, m, sent = _meter(start)
    m.start()
    _run_to(hw, m, start + 600)
    hw.sim.clock.set_time(to)
    _run_to(hw, m, start + 2400)
    eq(m.boundaries.clock_ok, False, what + " is not a valid time: the meter runs as without one")
    flagged = [p for p in _kind(sent, messages.READING) if p[messages.K_STATUS] & messages.ST_CLOCK_NOT_SET]
    ge(len(flagged), 25, what + ": readings still flow, flagged clock not set, stamped with seconds since boot")
    if check is not None:
        check(hw, m, sent)
    _set_time(m, 1, hw.sim.clock.world_time())
    eq(_answer(sent)[0], messages.RESULT_OK, what + ": set")
    _resumed(hw, m, sent, what)
    _run_to(hw, m, utc(2026, 11, 30, 23, 30))
    _check(sent, what)
    eq(list(_periods(sent)), [utc(2026, 11, 30, 23, 0)], what + ": one snapshot, at the period's true end")


def test_ten_years_back_then_corrected():
    _no_time_then_set(utc(2026, 11, 30, 22, 10) - TEN_YEARS, "2016 (ten years back)")


def test_set_to_1970_then_corrected():
    _no_time_then_set(0, "1970")


def test_a_clock_beyond_uint32_is_not_a_time_the_meter_uses():
    def refused(hw, m, sent):
        _check(sent, "beyond uint32")
        why = m.boundaries.set_clock(U32 + 2000, force=True)
        eq(why is not None and "not a valid time" in why, True, "a set-time beyond uint32 is refused: %r" % why)

    _no_time_then_set(U32 + 1000, "beyond uint32", refused)  # 2106 and beyond: no uint32 holds it


def test_every_set_back_credits_demand_after_noticing_it():
    start = utc(2026, 11, 6, 9, 0)
    hw, m, sent = _meter(start)
    m.start()
    for i in range(4):  # back by 2 minutes, four times, behind the meter's back
        _run_to(hw, m, start + 600 * (i + 1))
        hw.sim.clock.set_time(hw.time() - 120)
    _run_to(hw, m, start + 3000)
    shifts = [e[messages.K_EVENT_VALUE] for e in _events(sent, events.CLOCK_SET)]
    eq([s for s in shifts if s not in (-121, -120)], [], "each -120 s, less the fraction of a second the set dropped")
    eq(len(shifts), 4, "four sets logged")
    _check(sent, "set back four times")
    ends = [r[0] for r in _rows(sent)]
    eq(sorted(set(ends)), ends, "no row end twice, in order")


def test_a_year_behind_at_boot_is_not_trusted_until_set():
    flash = fresh_dir("clockjump-boot")
    start = utc(2026, 11, 30, 22, 0)
    hw0, m0, sent0 = _meter(start, flash=flash)
    m0.start()
    _run_to(hw0, m0, start + 4000)  # the billing period ends at 23:00 UTC: snapshot made
    m0.run_until(lambda: True)
    eq(list(_periods(sent0)), [utc(2026, 11, 30, 23, 0)], "the earlier life billed its period")
    boot = start + 4200
    hw, m, sent = _meter(boot, flash=flash, rtc_offset_s=-YEAR)  # power back, the clock a year behind
    m.start()
    _run_to(hw, m, boot + 600)
    eq(m.boundaries.clock_ok, False, "a clock behind what the meter already recorded is not trusted")
    hello = _kind(sent, messages.HELLO)[0]
    eq(hello[messages.K_STATUS] & messages.ST_CLOCK_NOT_SET, messages.ST_CLOCK_NOT_SET,
       "the hello says the clock is not set: the head-end sets it at once")
    le(hello[messages.K_TIME], 600, "stamped with seconds since boot, not a year back")
    eq([e[2:] for e in m.eventlog.read() if e[2] == events.CLOCK_INVALID], [(events.CLOCK_INVALID, boot - YEAR)],
       "the clock it did not trust is logged (before the hello: in the log, for back-fill)")
    _set_time(m, 1, hw.sim.clock.world_time())
    eq(_answer(sent)[0], messages.RESULT_OK, "set without force, like an unset clock")
    _resumed(hw, m, sent, "a year behind at boot")
    _check(sent0 + sent, "a year behind at boot")
    eq(_periods(sent), {}, "nothing billed again")


def test_a_period_snapshotted_before_a_power_cut_is_not_snapshotted_again():
    flash = fresh_dir("clockjump-key")
    start = utc(2026, 11, 30, 22, 0)
    hw, m, sent = _meter(start, flash=flash)
    m.start()
    _run_to(hw, m, start + 600)
    hw.sim.clock.set_time(hw.time() + TEN_YEARS)
    _run_to(hw, m, start + 900)
    _correct(hw, m, sent, 1)
    _run_to(hw, m, start + 1200)
    m.run_until(lambda: True)
    eq(list(_periods(sent)), [utc(2026, 11, 30, 23, 0)], "the period in progress ended at the jump")
    hw2, m2, sent2 = _meter(start + 1500, flash=flash)  # a power cut: back with the true time, before 23:00
    m2.start()
    eq(m2.boundaries.clock_ok, True, "the true time is trusted")
    _run_to(hw2, m2, utc(2026, 11, 30, 23, 30))
    _check(sent + sent2, "across a power cut")
    eq(_periods(sent2), {}, "the key (its end) was in flash: not snapshotted again")
    gt(len(_rows(sent2)), 3, "rows go on")
