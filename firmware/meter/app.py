# The meter: sensor -> metrology -> registers -> checkpoints -> signed frames. Hardware arrives through
# meter.hal (sim.hardware on the Unix port).
#
# One sampling cycle reads one INA219 conversion cycle (68.6 ms with the default ADC settings). Every batch
# (Metrology.batch cycles) the kernel integrates, whole µWh move into the registers, a checkpoint is written
# when one is due, and the reporter sends what has come due. Nothing in here lets an I2C failure or a chip
# reset stop the sampling loop.
import json
import struct

from meter import events
from meter.clock import TickMap, next_multiple, ticks_diff
from meter.demand import Demand
from meter.board import alarm_settings, tariff_settings
from meter.ina219 import INA219, SensorError
from meter.metrology import Metrology, reset_minmax
from meter.registers import Registers
from meter.store import Checkpointer, Store
from meter.tou import CalendarSet, next_billing

EV_SENSOR_FAULT = events.SENSOR_FAULT
EV_SENSOR_OK = events.SENSOR_OK
EV_CHIP_RESET = events.CHIP_RESET
EV_I2C_ERRORS = events.I2C_ERRORS
EV_RESTORED = events.RESTORED
EV_STORE_CORRUPT = events.STORE_CORRUPT
EV_INTERNAL = events.INTERNAL

SENSOR_RETRY_S = 5  # how often an absent or faulty chip is tried again
LINK_POLL_CYCLES = 8  # the link is polled every 8 conversion cycles (~0.55 s) while sampling
CUT_ARM_S = 240  # a boundary this close has its tick worked out (meter.clock.TickMap reaches ~268 s)
LATE_S = 2  # a boundary this far behind the clock was not cut by a reading: it is done at the next settle
CATCH_UP_S = 3600  # further behind than this (a clock set forward, a long stall): restart, do not replay
CLOCK_SLIP_US = 2000000  # the clock and the tick counter disagree by more than this: the clock was set
BILLING_CATCH_UP = 13  # billing periods that ended while the meter was off, at most, get their snapshots


PROFILE_ROWS_MAX = 96  # rows one profile command sends again (a day at 15 min; ask again for more)
PROFILE_ROWS_PER_FRAME = 16


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class Meter:
    """sink: None (no frames: sampling and registers only) or a callable taking each signed, framed message
    with its sequence number: sink(seq, frame)."""

    def __init__(self, hw, log=None, sink=None, reading_s=60, interval_s=900):
        self.hw = hw
        self.log = log or (lambda msg: None)
        self.event_counts = {}
        b = hw.board
        ina = b["ina219"]
        self.sensor = INA219(hw.i2c, addr=ina["addr"], shunt_uohm=ina["shunt_uohm"], max_ma=ina["max_ma"],
                             shunt_avg=ina["shunt_avg"], bus_bits=ina["bus_bits"], sleep_us=hw.sleep_us,
                             ticks_us=hw.ticks_us, on_event=self.event)
        self.metrology = Metrology(self.sensor.cycle_us, ina["shunt_uohm"])
        self.store = Store(hw.flash_dir, "registers")
        ck = b["checkpoint"]
        self.checkpointer = Checkpointer(self.store, quantum_uwh=ck["quantum_wh"] * 1000000,
                                         max_interval_s=ck["max_interval_s"])
        self.alarms = alarm_settings(b)
        self._alarmed = [False, False]  # over-current, over-voltage: raised and not yet 10 % below again
        self.tariffing = tariff_settings(b)
        self.registers = Registers(self.tariffing["tariffs"])
        self.interval_s = interval_s
        self.calendars = None  # CalendarSet: which tariff is in force (meter/tou.py)
        self.demand = None  # Demand: block demand and maxima (meter/demand.py)
        self.tariff = 1  # the tariff in force; all energy metered now is credited to it
        self.next_boundary = None  # the next instant at which energy must be cut (UTC s)
        self.next_billing = None  # the end of the current billing period (UTC s)
        self.ticks = TickMap()
        self._cut_tick = -1  # tick of next_boundary once it is near, else -1 (checked on every reading)
        self._row_partial = True  # the load-profile interval in progress was not metered throughout
        self.sensor_ok = False
        self._next_sensor_try = 0
        self.reporter = None
        self.link = None
        self._poll_countdown = 0
        self._restored = self._restore()
        if sink is not None:
            self._open_reporting(sink, reading_s, interval_s)  # first: the signing key's 16 KB table in one piece
        self._restore_tariffing()

    def _open_reporting(self, sink, reading_s, interval_s):
        from meter.identity import Identity
        from meter.messages import Builder
        from meter.report import Reporter
        from meter.seqno import FrameSeq

        from meter.profile import EventLog, LoadProfile

        d = self.hw.flash_dir
        self.identity = Identity(d)  # the device key is created on first boot and never leaves flash
        self.frame_seq = FrameSeq(Store(d, "frame-seq", max_payload=16))
        self.profile = LoadProfile(d)  # 99.1.0: every row in flash before it is sent
        self.eventlog = EventLog(d)  # 99.98.x: every event in flash, numbered, before it is sent
        self._outage = self._outage_s()  # before this boot logs anything
        self.reporter = Reporter(self, Builder(self.identity, self.frame_seq, self.hw.time), sink,
                                 reading_s, interval_s)
        torn = self.profile.torn + self.eventlog.torn
        if torn:
            self.event(EV_STORE_CORRUPT, "%d torn profile/event records at boot" % torn)

    # -- events -----------------------------------------------------------------------------------------------
    def event(self, code, value=0):
        self.event_counts[code] = self.event_counts.get(code, 0) + 1
        self.log("event %d value %r" % (code, value))
        if self.reporter is not None:
            self.reporter.event(code, value)

    # -- persistence ------------------------------------------------------------------------------------------
    def _restore(self):
        loaded = self.store.load()
        if self.store.corrupt:
            self.event(EV_STORE_CORRUPT, self.store.corrupt)
        if loaded is None:
            return False
        seq, payload = loaded
        try:
            regs = Registers.from_bytes(payload)
        except ValueError as e:
            self.event(EV_STORE_CORRUPT, str(e))
            return False
        if regs.tariffs < self.registers.tariffs:  # the board now has more tariff registers
            regs = regs.widened(self.registers.tariffs)
        self.registers = regs
        self.checkpointer.mark(self.registers.total_uwh(), self.hw.time())
        self.event(EV_RESTORED, seq)
        return True

    def _count_boot(self):
        st = Store(self.hw.flash_dir, "boots", max_payload=8)
        loaded = st.load()
        boots = struct.unpack("<I", loaded[1])[0] + 1 if loaded is not None and len(loaded[1]) == 4 else 1
        st.save(struct.pack("<I", boots))
        return boots

    def _restore_tariffing(self):
        """The calendars (as the last command or activation left them, else the board's) and the demand
        registers (as of the last closed period) from flash. Damage is reported and the defaults used."""
        d = self.hw.flash_dir
        cfg = self.tariffing
        n = self.registers.tariffs
        self.calendar_store = Store(d, "calendar", max_payload=6144)
        self.demand_store = Store(d, "demand", max_payload=512)
        cals = None
        loaded = self.calendar_store.load()
        if loaded is not None:
            try:
                cals = CalendarSet.from_dict(json.loads(loaded[1]), max_tariffs=n)
            except ValueError as e:
                self.event(EV_STORE_CORRUPT, "calendar: %s" % e)
        if cals is None:
            cals = CalendarSet(cfg["calendar"], max_tariffs=n)  # the board's (validated here: a bad one raises)
        self.calendars = cals
        dem = None
        loaded = self.demand_store.load()
        if loaded is not None:
            try:
                dem = Demand.from_bytes(loaded[1])
            except ValueError as e:
                self.event(EV_STORE_CORRUPT, "demand: %s" % e)
        if dem is None or dem.period_s != cfg["demand_period_s"] or dem.tariffs != n:
            dem = Demand(cfg["demand_period_s"], n)
        self.demand = dem

    def _save_calendars(self):
        self.calendar_store.save(json.dumps(self.calendars.to_dict()).encode())

    def _save_demand(self):
        self.demand_store.save(self.demand.to_bytes())

    def checkpoint(self, force=False):
        """Write the registers if a checkpoint is due (or forced). Returns True when it wrote."""
        total = self.registers.total_uwh()
        now = self.hw.time()
        if force or self.checkpointer.due(total, now):
            self.store.save(self.registers.to_bytes())
            self.checkpointer.mark(total, now)
            return True
        return False

    # -- sampling ---------------------------------------------------------------------------------------------
    def start(self):
        self._try_sensor()
        if self.reporter is not None:
            self.reporter.boot(self._count_boot(), self._restored)
            self.event(events.POWER_UP, self._outage)
            cause = self.hw.reset_cause
            if cause:
                self.event(events.WATCHDOG_RESET, cause)
        self._resume(self.hw.time())

    # -- tariffs, demand, billing: the boundaries ---------------------------------------------------------
    #
    # A boundary is an instant at which energy must be cut: a tariff switch (or a passive calendar's
    # activation), the end of a demand period, of a load-profile interval, of a billing period. The reading
    # whose conversion cycle contains the instant is cut there (Metrology.cut), so the energy before it goes
    # to the tariff, demand period and profile row that end there, and the rest of the cycle to the next.
    # The instant becomes a tick through TickMap once it is near (CUT_ARM_S); every reading then compares
    # its tick with it: one comparison per cycle.

    def _resume(self, now):
        """Metering (re)starts at `now` (boot, a clock set, a long stall): demand resumes, a passive calendar
        whose activation passed is applied, billing periods that ended meanwhile get their snapshots (nothing
        was metered since, so their registers are exact), and the next boundary is planned."""
        before = self.demand.reported_until
        hw = self.hw
        self.ticks.anchor(hw.ticks_us(), hw.time_us())  # from here on a clock set shows (_check_clock)
        self._promote(now)
        if self.demand.resume(now) is not None:
            self._save_demand()
        ref = self.demand.reset_time or before or now
        self.next_billing = next_billing(self.calendars.active.tz, min(ref, now), self.tariffing["billing_day"])
        n = 0
        while self.next_billing <= now and n < BILLING_CATCH_UP:
            self._bill(self.next_billing)
            n += 1
        if self.next_billing <= now:  # off for more than a year: the rest are not replayed
            self.next_billing = next_billing(self.calendars.active.tz, now, self.tariffing["billing_day"])
        self.tariff = self.calendars.tariff_at(now)
        self._row_partial = True
        self._plan(now)

    def _promote(self, t):
        if self.calendars.promote(t):
            self._save_calendars()
            self.event(events.CALENDAR_ACTIVATED, self.calendars.active.name or "unnamed")
            self.next_billing = next_billing(self.calendars.active.tz, t, self.tariffing["billing_day"])
            return True
        return False

    def _plan(self, t):
        """The first boundary after instant t."""
        c = self.calendars
        nb = c.next_switch(t)
        for x in (self.demand.next_boundary(t), next_multiple(t, self.interval_s), self.next_billing,
                  c.activation):
            if x is not None and t < x < nb:
                nb = x
        self.next_boundary = nb
        self._cut_tick = -1
        self._arm()

    def _arm(self):
        """Once the next boundary is near, work out its tick (the clock is read afresh each time)."""
        if self._cut_tick < 0 and self.next_boundary - self.hw.time() <= CUT_ARM_S:
            hw = self.hw
            self.ticks.anchor(hw.ticks_us(), hw.time_us())
            tk = self.ticks.tick_of(self.next_boundary)
            if tk is not None:
                self._cut_tick = tk

    def _credit(self, imp, exp, t_end):
        """Energy metered up to instant t_end, all under the tariff in force."""
        self.registers.add(imp, exp, self.tariff)
        try:
            self.demand.add(imp, t_end, self.tariff)
        except ValueError as e:  # never expected (the batches are cut at the boundaries): say so, go on
            self.event(EV_INTERNAL, "demand: %s" % e)
            self.demand.resume(t_end)

    def _boundary(self, t):
        """Everything that happens at boundary instant t, once the energy before it has been credited."""
        closed = self.demand.close(t)
        promoted = self._promote(t)
        rep = self.reporter
        if rep is not None and t % self.interval_s == 0:
            rep.row(t, self._row_partial, self.calendars.calendar_at(t).tz.is_dst(t))
            self._row_partial = False
        if t == self.next_billing:
            self._bill(t)
        elif closed is not None or promoted:
            self._save_demand()
        self.tariff = self.calendars.tariff_at(t)
        self._plan(t)

    def _bill(self, t):
        """The billing period ends at t: freeze the registers and maximum demands into a signed snapshot, then
        reset demand. The registers are checkpointed with it, so they never restore below the snapshot."""
        maxima = self.demand.reset(t)
        if self.reporter is not None:
            self.reporter.billing(t, maxima)
        self.event(events.BILLING_END, t)
        if t == self.next_billing:
            self.next_billing = next_billing(self.calendars.active.tz, t, self.tariffing["billing_day"])
        self._save_demand()
        self.checkpoint(force=self.registers.total_uwh() != self.checkpointer.last_uwh)

    def _catch_up(self, now):
        """Boundaries the readings did not cut (the sensor away, a stall): done now, without energy."""
        if now - self.next_boundary > CATCH_UP_S:
            self._resume(now)
            return
        while self.next_boundary <= now:
            self._boundary(self.next_boundary)

    def _check_clock(self):
        """A clock that moved against the tick counter was set: metering resumes at the new time."""
        t = self.ticks
        if t.utc_us is None:
            return
        hw = self.hw
        tick, us = hw.ticks_us(), hw.time_us()
        slip = us - t.utc_us - ticks_diff(tick, t.tick)
        if -CLOCK_SLIP_US < slip < CLOCK_SLIP_US and us - t.utc_us < (1 << 28):
            return
        t.anchor(tick, us)
        if -CLOCK_SLIP_US < slip < CLOCK_SLIP_US:
            return  # only the anchor was old
        self.event(events.CLOCK_SET, slip // 1000000)
        if self.reporter is not None:
            self.reporter.clock_set()
        self._resume(us // 1000000)

    def _outage_s(self):
        """Seconds since the last thing this meter is known to have done before it started (its newest
        profile row or logged event): the most it can say about how long the power was off. 0 if unknown."""
        last = 0
        row = self.profile.last()
        if row is not None:
            last = row[0]
        ev = self.eventlog.last()
        if ev is not None and ev[1] > last:
            last = ev[1]
        now = self.hw.time()
        return now - last if last and now > last else 0

    def _try_sensor(self):
        try:
            self.sensor.init()
        except SensorError as e:
            if self.sensor_ok or not self.event_counts.get(EV_SENSOR_FAULT):
                self.event(EV_SENSOR_FAULT, str(e))
            self.sensor_ok = False
            self._row_partial = True
            self._next_sensor_try = self.hw.time() + SENSOR_RETRY_S
            return False
        if not self.sensor_ok:
            self.event(EV_SENSOR_OK)
            self.metrology.start_at(self.sensor.t_config)  # the chip's first cycle began at its configuration
        self.sensor_ok = True
        return True

    def attach_link(self, transport, ticks_ms=None, outbox_bytes=131072, **link_options):
        """Send every frame through a Link (durable outbox first) over `transport` instead of the sink."""
        from meter.link import Link
        from meter.outbox import Outbox

        rep = self.reporter
        if rep is None:
            raise ValueError("a link needs a reporting meter (Meter(..., sink=...))")
        outbox = Outbox(self.hw.flash_dir, max_bytes=outbox_bytes,
                        on_drop=lambda first, last, count: self.event(events.OUTBOX_DROP, count))
        self.link = Link(transport, outbox, self.identity, on_command=self.command, respond=rep.response,
                         on_event=self.event, time=self.hw.time, ticks_ms=ticks_ms, **link_options)
        rep.sink = self.link.send
        return self.link

    # -- head-end commands (verified by meter.link; op 1, back-fill, is the link's own) -------------------------
    def command(self, kind, counter, m):
        """A verified head-end command -> the framed response (kind 6). Nothing changes unless it is accepted."""
        from meter.messages import K_ARGS, K_OP, OP_BILLING_RESET, OP_CALENDAR, OP_PROFILE

        op = m[K_OP]
        args = m.get(K_ARGS, {})
        rep = self.reporter
        if not isinstance(args, dict):
            return rep.response(counter, -3, "bad arguments: not a map")
        if op == OP_CALENDAR:
            return self._cmd_calendar(counter, args)
        if op == OP_BILLING_RESET:
            imp, exp = self.metrology.take_uwh()  # everything metered so far belongs to the ending period
            now = self.hw.time()
            self._credit(imp, exp, min(now, self.next_boundary))
            self._bill(now)
            return rep.response(counter, 0, None)
        if op == OP_PROFILE:
            return self._cmd_profile(counter, args)
        return rep.response(counter, -2, "unknown operation")

    def _cmd_calendar(self, counter, args):
        rep = self.reporter
        cal, at = args.get(1), args.get(2)
        if not isinstance(cal, dict) or not _uint(at):
            return rep.response(counter, -3, "bad arguments: want {1: calendar map, 2: activation UTC}")
        now = self.hw.time()
        try:
            self.calendars.activate_passive(cal, at, now)
        except ValueError as e:
            return rep.response(counter, -4, ("rejected: %s" % e)[:120])
        self._save_calendars()
        self.event(events.CALENDAR_PASSIVE, at)
        self._plan(min(now, self.next_boundary - 1))  # the activation may come before the planned boundary
        return rep.response(counter, 0, None)

    def _cmd_profile(self, counter, args):
        from meter import messages

        rep = self.reporter
        a, b = args.get(1), args.get(2)
        if not (_uint(a) and _uint(b)) or a > b:
            return rep.response(counter, -3, "bad arguments: want {1: from, 2: to} UTC, from <= to")
        rows = []
        more = False
        for r in self.profile.read(a, b):
            if len(rows) == PROFILE_ROWS_MAX:
                more = True
                break
            rows.append(r)
        if not rows:
            return rep.response(counter, -1, "no rows")
        for i in range(0, len(rows), PROFILE_ROWS_PER_FRAME):
            chunk = [list(r) for r in rows[i:i + PROFILE_ROWS_PER_FRAME]]
            rep.send(messages.INTERVALS, messages.intervals_body(chunk, self.interval_s))
        reason = "%d rows" % len(rows)
        if more:
            reason += "; more after %d: ask again" % rows[-1][0]
        return rep.response(counter, 0, reason)

    def poll_link(self):
        """Let the link do its bounded, non-blocking share of work (also called while the meter idles)."""
        try:
            self.link.poll()
        except Exception as e:  # noqa: BLE001 - the link must never stop the meter
            self.event(EV_INTERNAL, repr(e))

    def cycle(self):
        """Read one conversion cycle; integrate a batch when it fills. Returns True when a batch settled."""
        if self.link is not None:
            self._poll_countdown -= 1
            if self._poll_countdown <= 0:
                self._poll_countdown = LINK_POLL_CYCLES
                self.poll_link()
        if not self.sensor_ok:
            return self._sensor_away()
        s = self.sensor
        if not s.wait_cycle():
            return False
        ct = self._cut_tick
        if ct >= 0 and ticks_diff(s.tick, ct) >= 0:
            self.metrology.cut(s.shunt, s.bus, ct)
            imp, exp = self.metrology.take_uwh()
            t = self.next_boundary
            self._credit(imp, exp, t)
            self._boundary(t)
        if self.metrology.add(s.shunt, s.bus, s.tick):
            self.settle()
            self._check_alarms()
            s.check()  # a chip that reset on a load transient is re-initialised (and the event logged)
            return True
        return False

    def _sensor_away(self):
        # Kept out of cycle(): the hot path stays short (MicroPython runs it measurably faster so).
        now = self.hw.time()
        if self.next_boundary is None:
            self._resume(now)
        elif now >= self.next_boundary:
            self._catch_up(now)  # rows, demand periods and billing go on without readings
        if now >= self._next_sensor_try:
            self._try_sensor()
        else:
            self.hw.sleep_us(100000)
        return False

    def settle(self):
        imp, exp = self.metrology.take_uwh()
        now = self.hw.time()
        if self.next_boundary is None:  # start() not called: plan from here
            self._resume(now)
        b = self.next_boundary
        self._credit(imp, exp, now if now < b else b)  # all of it came before the boundary's cut
        self.checkpoint()
        self._check_clock()
        if now >= self.next_boundary + LATE_S:
            self._catch_up(now)
        else:
            self._arm()
        if self.reporter is not None:
            self.reporter.settled()

    def _check_alarms(self):
        """After each batch: its extreme current and voltage against the board's alarm thresholds."""
        metro = self.metrology
        mm = metro.minmax()  # of this batch (reset below after every batch)
        if mm is None:
            return
        reset_minmax(metro.state)
        lim = self.alarms
        ma = max(abs(metro.ma(mm[0])), abs(metro.ma(mm[1])))
        self._alarm(0, events.OVER_CURRENT, ma, lim["over_current_ma"])
        self._alarm(1, events.OVER_VOLTAGE, metro.mv(mm[3]), lim["over_voltage_mv"])

    def _alarm(self, i, code, value, limit):
        if limit is None:
            return
        if not self._alarmed[i] and value > limit:
            self._alarmed[i] = True
            self.event(code, value)
        elif self._alarmed[i] and value <= limit * 9 // 10:
            self._alarmed[i] = False

    def run_until(self, stop, on_batch=None):
        """Sample until stop() is true; on_batch(meter) after every settled batch."""
        while not stop():
            try:
                settled = self.cycle()
            except (OSError, ValueError) as e:  # never let one bad cycle end the loop
                self.event(EV_INTERNAL, repr(e))
                settled = False
            if settled and on_batch is not None:
                on_batch(self)
        self.metrology.flush()
        self.settle()


def main(board_path):
    """Run the meter on a board, forever: sample, keep registers, and report over the board's link."""
    import time

    from meter import hal
    from meter.board import load_board

    board = load_board(board_path)
    hw = hal.open_hardware(board)
    transport = hal.open_transport(board, ticks_ms=time.ticks_ms)
    meter = Meter(hw, log=print, sink=(lambda seq, frame: None) if transport is not None else None)
    if transport is not None:
        meter.attach_link(transport, ticks_ms=time.ticks_ms)
    meter.start()
    meter.run_until(lambda: False)
