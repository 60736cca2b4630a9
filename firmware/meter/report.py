# What the meter tells the head-end, and when: hello at boot, a reading every `reading_s`, a load-profile row
# at every `interval_s` boundary (UTC-aligned; meter.boundaries cuts the energy there and calls row()), a
# billing snapshot at the end of each billing period (billing()), and every event as it happens. Frames are
# signed and framed by meter.messages.Builder and handed to `sink(seq, frame_bytes)` (Link.send, or a file in
# the simulator).
#
# What it reads, each through a narrow object or callable (never the meter as a whole):
#   registers   Registers: snapshot(), total_uwh(kind)
#   metrology   coverage: covered_us, elapsed_us
#   sensor      the INA219 driver: power_mw(), bus_mv(), current_ua(), overflows, cycle_us, shunt_duty_ppm,
#               shunt_uohm
#   tariffing   Boundaries: tariff (in force), calendars.active.tariffs, demand (current_average, last_average),
#               clock_good() (False: frames carry ST_CLOCK_NOT_SET and seconds since boot, the builder's time)
#   sensor_ok(), relay   what the status bits say right now (sensor fault, relay open)
#   eventlog, profile    the 99.98.x and 99.1.0 rings: every event and row is stored before it is sent
#   checkpoint()         write the registers if they moved (a stored row must never restore above them)
#   event(code, value)   raise an event (the meter counts and logs it, then calls event() here)
from meter import events, messages
from meter.clock import next_multiple
from meter.messages import ST_CHIP_RESET, ST_CLOCK_NOT_SET, ST_I2C_ERRORS, ST_MISSED, ST_OVERFLOW, ST_POWER_FAIL, \
    ST_RELAY_OPEN, ST_RESTORED, ST_SENSOR_FAULT

FW_VERSION = "meterkit-0.1"

# Which events leave a mark in the status bits of the next frames.
_EVENT_STATUS = {events.CHIP_RESET: ST_CHIP_RESET, events.I2C_ERRORS: ST_I2C_ERRORS,
                 events.SENSOR_FAULT: ST_SENSOR_FAULT}


class Reporter:
    def __init__(self, builder, sink, eventlog, profile, registers, metrology, sensor, tariffing, sensor_ok, relay,
                 checkpoint, event, reading_s=60, interval_s=900):
        self.builder = builder
        self.sink = sink
        self.eventlog = eventlog
        self.profile = profile
        self.registers = registers
        self.metrology = metrology
        self.sensor = sensor
        self.tariffing = tariffing
        self.sensor_ok = sensor_ok
        self.relay = relay
        self.checkpoint = checkpoint
        self.on_event = event
        self.time = builder.time
        self.reading_s = reading_s
        self.interval_s = interval_s
        self.sticky = 0  # status bits collected since the last reading
        self.calibration = None  # meter.calibration.Calibration: corrects the instantaneous current and power
        self.control = None  # meter.control.Control: IC70 state, load shed, demand response (status, K_CONTROL)
        self.frames = 0
        self.fw_version = FW_VERSION  # what the hello says runs (meter.fwupdate: an updated image's version)
        self.first_reading = None  # the sequence number of this boot's first reading (a trial image's proof)
        self._next_reading = None
        self._covered = 0
        self._elapsed = 0
        self._overflows = 0
        self._row_flags = 0
        self._clock_moved = False  # a clock set since the last stored row: a row may start a new run
        self.outage_s = self._outage_s()  # before this boot logs anything

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
        now = self.time()
        return now - last if last and now > last else 0

    def _status(self):
        s = self.sticky
        if not self.sensor_ok():
            s |= ST_SENSOR_FAULT
        relay = self.relay
        if relay is not None and not relay.value():
            s |= ST_RELAY_OPEN
        if not self.tariffing.clock_good():
            s |= ST_CLOCK_NOT_SET
        if self.control is not None:
            s |= self.control.status()
        return s

    def response(self, counter, result, reason=None):
        """(seq, a signed command response frame, kind 6) for the link to send: the link calls this."""
        return self.builder.frame(messages.RESPONSE, self._status(), messages.response_body(counter, result, reason))

    def send(self, kind, body, status=None):
        seq, fr = self.builder.frame(kind, self._status() if status is None else status, body)
        if kind == messages.READING and self.first_reading is None:
            self.first_reading = seq
        self.sink(seq, fr)
        self.frames += 1

    def boot(self, boots, restored, board_name, quantum_wh):
        """The hello frame. A restart that restored registers is flagged as a power failure until the next
        reading: the meter cannot tell a clean restart from a power cut, so it says what it knows."""
        if restored:
            self.sticky |= ST_RESTORED | ST_POWER_FAIL
            self._row_flags |= messages.ROW_POWER_FAIL
        s = self.sensor
        self.send(messages.HELLO, messages.hello_body(self.fw_version, board_name, boots, s.cycle_us, s.shunt_duty_ppm,
                                                      s.shunt_uohm, quantum_wh))
        self._next_reading = next_multiple(self.time(), self.reading_s)

    def event(self, code, value):
        """Log the event (durably, numbered by the event log) and send it. Events before boot() are logged and
        marked in the hello's status; the log keeps them for back-fill."""
        self.sticky |= _EVENT_STATUS.get(code, 0)
        if not isinstance(value, (int, str)):
            value = repr(value)
        t = self.time()
        try:
            seq = self.eventlog.log(code, value, t)
        except (OSError, ValueError):
            seq = self.eventlog.next_seq  # flash trouble: still sent, with the number it would have had
        if self._next_reading is None:
            return
        self.send(messages.EVENT, messages.event_body(seq, code, value, t))

    def settled(self):
        """Called after every batch: send a reading when one has come due."""
        if self._next_reading is None:
            return
        now = self.time()
        if now >= self._next_reading:
            self.checkpoint()  # a power cut must never restore registers below a reading sent (issue 11)
            self._send_reading()
            self._next_reading = next_multiple(now, self.reading_s)

    def reading_every(self, s):
        """Readings every s seconds from now on (a configuration command), on multiples of s."""
        self.reading_s = s
        if self._next_reading is not None:
            self._next_reading = next_multiple(self.time(), s)

    def clock_set(self):
        """The clock was set: the next load-profile row says so; readings follow the new time (a clock set back
        must not hold them back)."""
        self._row_flags |= messages.ROW_CLOCK_ADJUSTED
        self._clock_moved = True
        if self._next_reading is not None:
            self._next_reading = next_multiple(self.time(), self.reading_s)

    def row(self, end, partial=False, dst=False):
        """The load-profile row of the interval ending at `end` (the registers are exact at that instant):
        stored in flash, registers checkpointed, then sent."""
        regs = self.registers
        flags = self._row_flags
        if partial:
            flags |= messages.ROW_PARTIAL
        if dst:
            flags |= messages.ROW_DST
        if self._status() & ST_RELAY_OPEN:
            flags |= messages.ROW_RELAY_OPEN
        row = [end, regs.total_uwh("import") // 1000, regs.total_uwh("export") // 1000, flags]
        try:
            self.profile.append(row[0], row[1], row[2], row[3], self._clock_moved)
        except ValueError:
            # its end is already stored (the clock went back over it): skipped, the next one says so
            self._row_flags |= messages.ROW_CLOCK_ADJUSTED
            return
        except OSError as e:
            self.on_event(events.STORE_CORRUPT, "profile: %r" % (e,))
        self._row_flags = 0
        self._clock_moved = False
        self.checkpoint()  # registers must never restore below a stored row after a power cut
        self.send(messages.INTERVALS, messages.intervals_body([row], self.interval_s))

    def billing(self, period_end, maxima, snapshot=None):
        """The signed billing snapshot of the period ending at `period_end`: every register as it stands (or as
        `snapshot` holds them) and the period's maximum demands (Demand.reset's return)."""
        regs = snapshot if snapshot is not None else self.registers.snapshot()
        self.send(messages.BILLING, messages.billing_body(period_end, regs, maxima, self._tariffs()))

    def _tariffs(self):
        return self.tariffing.calendars.active.tariffs

    def _send_reading(self):
        metro = self.metrology
        covered, elapsed = metro.covered_us, metro.elapsed_us
        d_el = elapsed - self._elapsed
        uncovered = 1000000 - (covered - self._covered) * 1000000 // d_el if d_el > 0 else 0
        self._covered, self._elapsed = covered, elapsed
        if uncovered:
            self.sticky |= ST_MISSED
        s = self.sensor
        if s.overflows != self._overflows:
            self._overflows = s.overflows
            self.sticky |= ST_OVERFLOW
        ua, mw = s.current_ua(), s.power_mw()
        cal = self.calibration
        if cal is not None and cal.id:
            ua = cal.current_ua(ua)
            mw = s.bus_mv() * ua // 1000000 if ua >= 0 else -(s.bus_mv() * -ua // 1000000)
        ma = ua // 1000 if ua >= 0 else -(-ua // 1000)
        n = self._tariffs()
        tf = self.tariffing
        d = tf.demand
        self.send(messages.READING, messages.reading_body(
            self.registers.snapshot(), mw, s.bus_mv(), ma, uncovered, n, tf.tariff if n > 1 else None,
            [d.current_average, d.last_average], cal.id if cal is not None else 0,
            self.control.reading() if self.control is not None else None))
        self.sticky = 0
