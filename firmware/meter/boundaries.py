# The boundary planner: the instants at which energy must be cut, and what happens there. A boundary is a
# tariff switch (or a passive calendar's activation), the end of a demand period, of a load-profile interval,
# of a billing period. The reading whose conversion cycle contains the instant is cut there
# (Metrology.cut), so the energy before it goes to the tariff, demand period and profile row that end there,
# and the rest of the cycle to the next. The instant becomes a tick through TickMap once it is near
# (CUT_ARM_S); the meter's loop then compares each reading's tick with cut_tick: one comparison per cycle.
# Boundaries the readings did not reach (the sensor away, a stall) are done at the next settle without
# energy; a clock that moved against the tick counter was set, and metering resumes at the new time.
#
# The clock (docs/protocol.md, "Time"): a meter whose clock is not set (an ESP32 after power-up) meters from
# its first cycle into the registers (tariff 1: without a time there is no calendar to ask), but no row,
# demand period or billing period ends until the clock is set: by NTP, a set-time command (set_clock), or
# anything else check_clock notices. Then metering resumes at the new time: the first row after it is partial
# and clock-adjusted, the demand period partial; billing periods that ended before it get the registers as
# they stood when metering began without a clock (nothing is metered while the power is off).
#
# Boundaries also owns what decides the tariff in force: the calendars (meter/tou.py) and the demand registers
# (meter/demand.py), with their A/B stores ("calendar", "demand").
import json

from meter import events
from meter.clock import CLOCK_VALID_FROM, FREE_SHIFT_S, TickMap, clock_valid, next_multiple, ticks_diff
from meter.demand import Demand
from meter.store import Store
from meter.tou import CalendarSet, next_billing

CUT_ARM_S = 240  # a boundary this close has its tick worked out (meter.clock.TickMap reaches ~268 s)
LATE_S = 2  # a boundary this far behind the clock was not cut by a reading: it is done at the next settle
CATCH_UP_S = 3600  # further behind than this (a clock set forward, a long stall): restart, do not replay
CLOCK_SLIP_US = 2000000  # the clock and the tick counter disagree by more than this: the clock was set
BILLING_CATCH_UP = 13  # billing periods that ended while the meter was off, at most, get their snapshots
NEVER = 0xFFFFFFFF  # next_boundary while the clock is not set (the last u32 UTC second, in 2106)


class Boundaries:
    """hw: the clocks (ticks_us, time, time_us) and flash_dir; registers and metrology: where energy is
    credited and cut; settings: meter.board.tariff_settings(board); event(code, value) logs an event;
    flush_checkpoint() writes the registers if they moved. `reporter` (set by the meter when it reports) gets
    the profile rows, billing snapshots and clock sets."""

    def __init__(self, hw, registers, metrology, settings, interval_s, event, flush_checkpoint):
        self.hw = hw
        self.registers = registers
        self.metrology = metrology
        self.settings = settings
        self.interval_s = interval_s
        self.event = event
        self.flush_checkpoint = flush_checkpoint
        self.reporter = None
        self.calendars = None  # CalendarSet: which tariff is in force (meter/tou.py)
        self.demand = None  # Demand: block demand and maxima (meter/demand.py)
        self.tariff = 1  # the tariff in force; all energy metered now is credited to it
        self.next_boundary = None  # the next instant at which energy must be cut (UTC s)
        self.next_billing = None  # the end of the current billing period (UTC s)
        self.ticks = TickMap()
        self.cut_tick = -1  # tick of next_boundary once it is near, else -1 (checked on every reading)
        self.row_partial = True  # the load-profile interval in progress was not metered throughout
        self.clock_ok = clock_valid(hw.time())  # False: the clock was never set (an ESP32 after power-up)
        self._held = None  # the registers when metering began without a clock (billing ends before the set)
        self.capture_next = None  # (capture period, done(t)): a new period from the top of the next hour

    # -- persistence ------------------------------------------------------------------------------------------
    def restore(self):
        """The calendars (as the last command or activation left them, else the board's) and the demand
        registers (as of the last closed period) from flash. Damage is reported and the defaults used."""
        d = self.hw.flash_dir
        cfg = self.settings
        n = self.registers.tariffs
        self.calendar_store = Store(d, "calendar", max_payload=6144)
        self.demand_store = Store(d, "demand", max_payload=512)
        cals = None
        loaded = self.calendar_store.load()
        if loaded is not None:
            try:
                cals = CalendarSet.from_dict(json.loads(loaded[1]), max_tariffs=n)
            except ValueError as e:
                self.event(events.STORE_CORRUPT, "calendar: %s" % e)
        if cals is None:
            cals = CalendarSet(cfg["calendar"], max_tariffs=n)  # the board's (validated here: a bad one raises)
        self.calendars = cals
        dem = None
        loaded = self.demand_store.load()
        if loaded is not None:
            try:
                dem = Demand.from_bytes(loaded[1])
            except ValueError as e:
                self.event(events.STORE_CORRUPT, "demand: %s" % e)
        if dem is None or dem.tariffs != n:
            dem = Demand(cfg["demand_period_s"], n)
        # (a stored demand of another period length goes on until a billing-period end: _new_demand_period)
        self.demand = dem
        self._trust_clock(self.hw.time())

    def _trust_clock(self, now):
        """At boot: a clock that reads a time the meter cannot use (from 2100), or more than FREE_SHIFT_S before
        what this meter already recorded (the end of its last demand period: a clock that lost a year across a
        power cut), is not trusted: the meter runs as without a clock until it is set (event 19;
        docs/protocol.md, "Clock changes")."""
        if now < CLOCK_VALID_FROM:
            return  # never set (an ESP32 after power-up): nothing to say
        seen = self.demand.reported_until or 0  # (a snapshot's period end may lie ahead: a jump forward ended it)
        if not clock_valid(now) or now < seen - FREE_SHIFT_S:
            self.clock_ok = False
            self.event(events.CLOCK_INVALID, now)

    def _save_calendars(self):
        self.calendar_store.save(json.dumps(self.calendars.to_dict()).encode())

    def _save_demand(self):
        self.demand_store.save(self.demand.to_bytes())

    def _next_billing(self, t):
        return next_billing(self.calendars.active.tz, t, self.settings["billing_day"])

    # -- planning -----------------------------------------------------------------------------------------------
    def resume(self, now, moved=False):
        """Metering (re)starts at `now` (boot, a clock set, a long stall): demand resumes, a passive calendar
        whose activation passed is applied, billing periods that ended meanwhile get their snapshots (nothing
        was metered since, so their registers are exact), and the next boundary is planned. `moved`: a set
        clock moved while metering (no time passed: the periods it skipped are not replayed)."""
        hw = self.hw
        self.ticks.anchor(hw.ticks_us(), hw.time_us())  # from here on a clock set shows (check_clock)
        if not self.clock_ok:
            self._wait()
            return
        held, self._held = self._held, None
        before = self.demand.reported_until
        in_progress = self.next_billing
        self._promote(now)
        if self.demand.resume(now) is not None:
            self._save_demand()
        if moved:
            self._bill_after_move(now, in_progress)
        else:
            self._bill_missed(now, before, held)
        self.tariff = self.calendars.tariff_at(now)
        self.row_partial = True
        self.plan(now)

    def _bill_missed(self, now, before, held):
        """Billing periods that ended while the meter was off (or without a clock) get their snapshots, with
        the registers as they stood (`held`), at most BILLING_CATCH_UP of them; none ends at or before the
        last snapshot's (billing is keyed by period end, demand.reset_time)."""
        last = self.demand.reset_time
        ref = last or before or now
        self.next_billing = self._next_billing(min(ref, now))
        n = 0
        while self.next_billing <= now and n < BILLING_CATCH_UP:
            self._bill(self.next_billing, held)
            n += 1
        if self.next_billing <= now:  # off for more than a year: the rest are not replayed
            self.next_billing = self._next_billing(now)
        if self.next_billing <= last:  # the clock is behind the last snapshot: nothing ends again until past it
            self.next_billing = self._next_billing(last)

    def _bill_after_move(self, now, in_progress):
        """A set clock moved to `now`. Forward past the end of the billing period in progress: that period
        ends, once (its snapshot at its own end); the periods the jump skipped get none. Back: nothing ends,
        and no period ends twice: the next end is the first after both `now` and the last snapshot."""
        last = self.demand.reset_time
        if in_progress is not None and last < in_progress <= now:
            self.next_billing = in_progress
            self._bill(in_progress)
            last = in_progress
        self.next_billing = self._next_billing(now if now > last else last)

    def _wait(self):
        """No clock: the registers go on (tariff 1), nothing ends until the clock is set."""
        if self._held is None:
            self._held = self.registers.snapshot()
        self.tariff = 1
        self.row_partial = True
        self.next_boundary = NEVER
        self.cut_tick = -1

    def stamp(self):
        """The time frames and events carry: UTC, or seconds since boot while the clock is not set (or reads a
        time the meter cannot use and has not noticed yet: no frame ever carries more than a uint32)."""
        t = self.hw.time()
        return t if self.clock_ok and clock_valid(t) else self.hw.monotonic_s()

    def clock_good(self):
        """Whether frames carry UTC now (stamp): False sets their status bit ST_CLOCK_NOT_SET."""
        return self.clock_ok and clock_valid(self.hw.time())

    def _promote(self, t):
        if self.calendars.promote(t):
            self._save_calendars()
            self.event(events.CALENDAR_ACTIVATED, self.calendars.active.name or "unnamed")
            self.next_billing = self._next_billing(t)
            return True
        return False

    def plan(self, t):
        """The first boundary after instant t."""
        c = self.calendars
        nb = c.next_switch(t)
        for x in (self.demand.next_boundary(t), next_multiple(t, self.interval_s), self.next_billing,
                  c.activation):
            if x is not None and t < x < nb:
                nb = x
        self.next_boundary = nb
        self.cut_tick = -1
        self.arm()

    def arm(self):
        """Once the next boundary is near, work out its tick (the clock is read afresh each time)."""
        if self.cut_tick < 0 and self.next_boundary - self.hw.time() <= CUT_ARM_S:
            hw = self.hw
            self.ticks.anchor(hw.ticks_us(), hw.time_us())
            tk = self.ticks.tick_of(self.next_boundary)
            if tk is not None:
                self.cut_tick = tk

    # -- energy and the work at a boundary ----------------------------------------------------------------------
    def credit(self, imp, exp, t_end):
        """Energy metered up to instant t_end, all under the tariff in force."""
        self.registers.add(imp, exp, self.tariff)
        if not self.clock_ok:
            return  # demand waits for the clock
        try:
            self.demand.add(imp, t_end, self.tariff)
        except ValueError as e:  # never expected (the batches are cut at the boundaries): say so, go on
            self.event(events.INTERNAL, "demand: %s" % e)
            self.demand.resume(t_end)

    def cut(self, s):
        """The reading of sensor s reached cut_tick: its energy up to the boundary is credited, the boundary's
        work done; the rest of its cycle is metered afterwards (Metrology.add)."""
        metro = self.metrology
        metro.cut(s.shunt, s.bus, self.cut_tick)
        imp, exp = metro.take_uwh()
        t = self.next_boundary
        self.credit(imp, exp, t)
        self._boundary(t)

    def _boundary(self, t):
        """Everything that happens at boundary instant t, once the energy before it has been credited."""
        closed = self.demand.close(t)
        promoted = self._promote(t)
        rep = self.reporter
        if rep is not None and t % self.interval_s == 0:
            rep.row(t, self.row_partial, self.calendars.calendar_at(t).tz.is_dst(t))
            self.row_partial = False
        if self.capture_next is not None and t % 3600 == 0:
            self._new_capture_period(t)
        if t == self.next_billing:
            self._bill(t)
        elif closed is not None or promoted:
            self._save_demand()
        self.tariff = self.calendars.tariff_at(t)
        self.plan(t)

    def _bill(self, t, snapshot=None):
        """The billing period ends at t: freeze the registers (or `snapshot` of them) and maximum demands into a
        signed snapshot, then reset demand. The registers are checkpointed with it, so they never restore below
        the snapshot."""
        maxima = self.demand.reset(t)
        self._new_demand_period(t)
        if self.reporter is not None:
            self.reporter.billing(t, maxima, snapshot)
        self.event(events.BILLING_END, t)
        if t == self.next_billing:
            self.next_billing = self._next_billing(t)
        self._save_demand()
        self.flush_checkpoint()

    def _new_capture_period(self, t):
        """A capture period set by a command takes effect at the top of an hour: a row of both periods ends
        there, so no row is cut short or stretched."""
        p, done = self.capture_next
        self.capture_next = None
        self.interval_s = p
        if self.reporter is not None:
            self.reporter.interval_s = p
        done(t)

    def _new_demand_period(self, t):
        """A demand period other than the one in force (a configuration command, or a board profile) starts at
        a billing-period end t that ends a period of both lengths (every period divides an hour): the maxima
        were just reset, so none of them mixes two period lengths. Elsewhere it waits for the next end."""
        p = self.settings["demand_period_s"]
        d = self.demand
        if d.period_s == p or t % 3600 or d.start != t:
            return
        new = Demand(p, d.tariffs)
        new.resets, new.reset_time = d.resets, d.reset_time
        new.resume(t)
        self.demand = new

    def settle(self, imp, exp, now):
        """A batch metered up to `now` (the clock just read). A clock that moved is noticed first: the batch is
        credited at the instant the tick counter says it ended (the old time; demand never sees time run
        backwards), the boundaries due before the move are done at the old time, then metering resumes at the
        new. Otherwise boundaries the readings did not cut are done now, or the next tick is worked out."""
        if self.next_boundary is None:  # start() not called: plan from here
            self.resume(now)
        moved = self._slip()
        t = now if moved is None else moved[0]
        nb = self.next_boundary
        self.credit(imp, exp, t if t < nb else nb)  # all of it came before the boundary's cut
        if moved is not None:
            self._moved(moved[0], moved[1])
        elif not self.clock_ok:
            return  # nothing ends without a clock
        elif now >= nb + LATE_S:
            self.catch_up(now)
        else:
            self.arm()

    def catch_up(self, now):
        """Boundaries the readings did not cut (the sensor away, a stall): done now, without energy."""
        if now - self.next_boundary > CATCH_UP_S:
            self.resume(now)
            return
        while self.next_boundary <= now:
            self._boundary(self.next_boundary)

    def _slip(self):
        """None while the clock keeps time with the tick counter, else (old, new): the UTC second by the tick
        counter since the anchor, and the clock's reading. Either way the anchor is kept fresh."""
        t = self.ticks
        if t.utc_us is None:
            return None
        hw = self.hw
        tick, us = hw.ticks_us(), hw.time_us()
        was = t.utc_us + ticks_diff(tick, t.tick)
        slip = us - was
        if -CLOCK_SLIP_US < slip < CLOCK_SLIP_US:
            if us - t.utc_us >= (1 << 28):
                t.anchor(tick, us)  # only the anchor was old
            return None
        t.anchor(tick, us)
        return was // 1000000, us // 1000000

    def check_clock(self):
        """A clock that moved against the tick counter was set (NTP, or anyone): metering resumes at the new
        time (the sensor away: there is no energy to credit first)."""
        moved = self._slip()
        if moved is not None:
            self._moved(moved[0], moved[1])

    def _moved(self, old, new):
        """The clock moved from `old` (by the tick counter) to `new`: boundaries due before the move are done at
        the old time, then metering resumes at the new."""
        if self.clock_ok and old >= self.next_boundary:
            self.catch_up(old)
        self._clock_moved(new - old, new)

    def _clock_moved(self, shift, now):
        """The clock moved by `shift` s to `now`: event 14 (stamped with the new time: the old one is time -
        value), the next row flagged, metering resumes at the new time (or waits, without a valid one)."""
        was = self.clock_ok
        self.clock_ok = clock_valid(now)
        self.event(events.CLOCK_SET, shift)
        if self.reporter is not None:
            self.reporter.clock_set()
        self.resume(now, was and self.clock_ok)

    def set_clock(self, t, force=False, min_shift=0):
        """Set the clock to UTC second t (a set-time command, NTP). A set clock moves by at most
        FREE_SHIFT_S without `force` (the DLMS clock object's rule); an unset one takes any valid time. A
        set clock is left alone when the shift is below min_shift. Returns None, or why it was refused
        (nothing changed)."""
        hw = self.hw
        if hw.set_time is None:
            return "this board cannot set its clock"
        if not clock_valid(t):
            return "%d is not a valid time (before 2025 or from 2100)" % t
        shift = t - hw.time()
        if self.clock_ok:
            if not force and not -FREE_SHIFT_S <= shift <= FREE_SHIFT_S:
                return "a shift of %d s needs force (more than %d s)" % (shift, FREE_SHIFT_S)
            if -min_shift < shift < min_shift:
                return None
        imp, exp = self.metrology.take_uwh()  # what was metered so far belongs to the old time
        old = hw.time()
        self.settle(imp, exp, old)  # (a move nobody has noticed yet is dealt with first)
        if self.clock_ok and old >= self.next_boundary:
            self.catch_up(old)  # boundaries due before the set are done at the old time
        old = hw.time()
        hw.set_time(t)
        self.ticks.anchor(hw.ticks_us(), hw.time_us())
        self._clock_moved(t - old, t)
        return None

    # -- what commands change (meter/commands.py) ---------------------------------------------------------------
    def bill_now(self):
        """A billing reset: everything metered so far belongs to the period that ends now."""
        imp, exp = self.metrology.take_uwh()
        now = self.hw.time()
        self.credit(imp, exp, min(now, self.next_boundary))
        self._bill(now)

    def arm_calendar(self, cal, at):
        """Arm calendar dict `cal` as the passive calendar, active from UTC instant `at`; ValueError (and
        nothing changed) if it is refused."""
        now = self.hw.time()
        self.calendars.activate_passive(cal, at, now)
        self._save_calendars()
        self.event(events.CALENDAR_PASSIVE, at)
        self.plan(min(now, self.next_boundary - 1))  # the activation may come before the planned boundary
