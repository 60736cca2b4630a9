# The meter: sensor -> metrology -> registers -> checkpoints -> signed frames. Hardware arrives through
# meter.hal (sim.hardware on the Unix port). This module wires the parts and runs the loop:
#   meter.boundaries  tariff switches, demand periods, profile intervals, billing periods: where energy is cut
#   meter.report      what is sent when (and the event log and load profile behind it)
#   meter.commands    the authenticated head-end commands;  meter.alarms  over-current/over-voltage events
#   meter.control     disconnect control (relay), limiter, demand response, the customer's button
#
# One sampling cycle reads one INA219 conversion cycle (68.6 ms with the default ADC settings). Every batch
# (Metrology.batch cycles) the kernel integrates, whole µWh move into the registers, a checkpoint is written
# when one is due (store.Checkpointer, on the monotonic clock), and the reporter sends what has come due.
# Nothing in here lets an I2C failure or a chip reset stop the sampling loop.
import struct

from meter import events
from meter.alarms import Alarms
from meter.board import alarm_settings, tariff_settings
from meter.boundaries import Boundaries
from meter.calibration import Calibration
from meter.clock import ticks_diff
from meter.ina219 import INA219, SensorError
from meter.metrology import Metrology
from meter.registers import Registers
from meter.store import Checkpointer, Store, exists

EV_SENSOR_FAULT = events.SENSOR_FAULT
EV_SENSOR_OK = events.SENSOR_OK
EV_CHIP_RESET = events.CHIP_RESET
EV_I2C_ERRORS = events.I2C_ERRORS
EV_STORE_CORRUPT = events.STORE_CORRUPT
EV_INTERNAL = events.INTERNAL

SENSOR_RETRY_S = 5  # how often an absent or faulty chip is tried again
NTP_RETRY_S = 60  # a board with NTP (hw.ntp_time) asks this often while its clock is not set (uptime seconds)
NTP_EVERY_S = 21600  # ... and this often once it is: an ESP32's crystal keeps the RTC within ~1 s a day
NTP_MIN_SHIFT_S = 2  # NTP answers in whole seconds: a smaller shift is its resolution, not a clock to set
LINK_POLL_CYCLES = 8  # the link is polled every 8 conversion cycles (~0.55 s) while sampling


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
                             ticks_us=hw.ticks_us, on_event=self.event, sleep_ms=hw.sleep_ms)
        self.metrology = Metrology(self.sensor.cycle_us, ina["shunt_uohm"])
        self.store = Store(hw.flash_dir, "registers")
        self.calibration = Calibration(hw.flash_dir)  # meterkit device calibrate; applied once per batch
        self._cal_elapsed = 0  # metrology.elapsed_us at the last settle (the offset's time base)
        ck = b["checkpoint"]
        self.checkpointer = Checkpointer(self.store, quantum_uwh=ck["quantum_wh"] * 1000000,
                                         max_interval_s=ck["max_interval_s"])
        limits = alarm_settings(b)
        tariffing = tariff_settings(b)
        self.stored_settings = None  # meter.settings.Settings once loaded: at boot when one was ever stored, else
        # when first used (the settings property)
        if Store(hw.flash_dir, "settings").load() is not None:
            reading_s, interval_s = self.settings.override(reading_s, interval_s, limits, tariffing)
        self.alarms = Alarms(limits, self.event)
        self._restart_at = None  # uptime second of a commanded restart (meter.configure, op 11)
        self.registers = Registers(tariffing["tariffs"])
        self.sensor_ok = False
        self._next_sensor_try = 0
        self.reporter = None
        self._commands = None  # meter.commands.Commands, made when the first command arrives
        self._updater = None  # meter.fwupdate.Updater: made by the first update command, or at boot after one
        self.link = None
        self._poll_countdown = 0
        self._feed = hw.watchdog.feed  # every cycle feeds it (armed by start())
        self._next_ntp = 0
        self._restored = self._restore()
        self.boundaries = Boundaries(hw, self.registers, self.metrology, tariffing, interval_s, self.event,
                                     self.flush_checkpoint)
        if sink is not None:
            self._open_reporting(sink, reading_s, interval_s)  # first: the signing key's 16 KB table in one piece
        self.boundaries.restore()
        # The relay goes to its stored state here, before the first conversion is metered. A meter whose flash
        # holds no disconnect, limiter or demand-response state is connected, and loads meter.control only when
        # a command or the customer's button first asks for it (controls()).
        self.control = None
        d = hw.flash_dir
        if exists(d, "disconnect") or exists(d, "limiter") or exists(d, "dr"):
            self.controls()
        else:
            hw.relay.value(1)
            if hw.load_control is not None:
                hw.load_control.value(1)

    def _open_reporting(self, sink, reading_s, interval_s):
        from meter.identity import Identity
        from meter.messages import Builder
        from meter.report import Reporter
        from meter.seqno import FrameSeq

        from meter.profile import EventLog, LoadProfile

        d = self.hw.flash_dir
        # the device key is created on first boot, from the hardware's true-random source, and never leaves flash
        self.identity = Identity(d, urandom=self.hw.random_bytes)
        self.frame_seq = FrameSeq(Store(d, "frame-seq", max_payload=16))
        self.profile = LoadProfile(d)  # 99.1.0: every row in flash before it is sent
        self.eventlog = EventLog(d)  # 99.98.x: every event in flash, numbered, before it is sent
        if self.stored_settings is not None:
            last = self.profile.last()
            self.stored_settings.capture_in_force(interval_s, last[0] if last else 0)
        rep = Reporter(Builder(self.identity, self.frame_seq, self.boundaries.stamp), sink, self.eventlog, self.profile,
                       self.registers, self.metrology, self.sensor, self.boundaries, lambda: self.sensor_ok,
                       self.hw.relay, self.flush_checkpoint, self.event, reading_s, interval_s)
        self.reporter = self.boundaries.reporter = rep
        rep.calibration = self.calibration
        torn = self.profile.torn + self.eventlog.torn
        if torn:
            self.event(EV_STORE_CORRUPT, "%d torn profile/event records at boot" % torn)

    @property
    def settings(self):
        """What configuration commands set (meter.settings): loaded at boot when there is any, else when first
        used (a configuration command; another part registering a setter)."""
        s = self.stored_settings
        if s is None:
            from meter.settings import Settings

            s = self.stored_settings = Settings(self.hw.flash_dir)
            if s.corrupt:
                self.event(EV_STORE_CORRUPT, s.corrupt)
        return s

    def updater(self):
        """meter.fwupdate.Updater (signed firmware updates), made on first use; None on a board without OTA
        partitions (hw.ota)."""
        u = self._updater
        if u is None and self.hw.ota is not None:
            from meter.fwupdate import Updater, class_id

            u = self._updater = Updater(self.hw.ota, self.hw.flash_dir, class_id(self.hw.board["name"]), self.event)
        return u

    def _firmware_booted(self):
        """At boot, after an update: a trial image reports its version; a rollback's event (code, value), raised
        once the hello is out."""
        if self.hw.ota is None or not exists(self.hw.flash_dir, "fw-state"):
            return None
        u = self.updater()
        got = u.booted()
        v = u.running_version()
        if v is not None:
            self.reporter.fw_version = v
        return got

    def controls(self):
        """meter.control.Control (disconnect control, limiter, demand response), made on first use; the
        configuration command sets its control mode and groups (set_mode, set_groups)."""
        c = self.control
        if c is None:
            from meter.control import Control

            c = self.control = Control(self.hw, self.event, lambda: self.boundaries.clock_ok)
            if self.reporter is not None:
                self.reporter.control = c
        return c

    def command(self, kind, counter, m):
        """A head-end command the link verified -> the response (seq, frame). meter.commands is loaded with the
        first one: a meter that is never sent a command never holds it in RAM."""
        c = self._commands
        if c is None:
            from meter.commands import Commands

            c = self._commands = Commands(self.boundaries, self.profile, self.reporter, self.controls, self)
        return c.handle(kind, counter, m)

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
        self.checkpointer.mark(regs.total_uwh(), self.hw.monotonic_s())
        self.event(events.RESTORED, seq)
        return True

    def _count_boot(self):
        st = Store(self.hw.flash_dir, "boots", max_payload=8)
        loaded = st.load()
        boots = struct.unpack("<I", loaded[1])[0] + 1 if loaded is not None and len(loaded[1]) == 4 else 1
        st.save(struct.pack("<I", boots))
        return boots

    def checkpoint(self):
        """Write the registers if a checkpoint is due (meter.store.Checkpointer). True when it wrote."""
        r = self.registers
        return self.checkpointer.maybe_save(r.total_uwh(), self.hw.monotonic_s(), r.to_bytes)

    def flush_checkpoint(self):
        """Write the registers now if they moved since the last checkpoint (a stored row, a billing snapshot,
        the end of a run). True when it wrote."""
        r = self.registers
        return self.checkpointer.flush(r.total_uwh(), self.hw.monotonic_s(), r.to_bytes)

    # -- sampling ---------------------------------------------------------------------------------------------
    def start(self):
        self._try_sensor()
        rep = self.reporter
        if rep is not None:
            b = self.hw.board
            fw_event = self._firmware_booted()
            rep.boot(self._count_boot(), self._restored, b["name"], b["checkpoint"]["quantum_wh"])
            self.event(events.POWER_UP, rep.outage_s)
            cause = self.hw.reset_cause
            if cause:
                self.event(events.WATCHDOG_RESET, cause)
            if fw_event is not None:
                self.event(*fw_event)
        self.boundaries.resume(self.hw.time())
        self.hw.watchdog.arm()  # from here on a cycle that does not come back within its timeout resets the board

    def _try_sensor(self):
        try:
            self.sensor.init()
        except SensorError as e:
            if self.sensor_ok or not self.event_counts.get(EV_SENSOR_FAULT):
                self.event(EV_SENSOR_FAULT, str(e))
            self.sensor_ok = False
            self.boundaries.row_partial = True
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
        b = self.boundaries
        self.link = Link(transport, outbox, self.identity, on_command=self.command, respond=rep.response,
                         on_event=self.event, time=self.hw.time, ticks_ms=ticks_ms,
                         clock_ok=b.clock_good, **link_options)
        rep.sink = self.link.send
        return self.link

    def poll_link(self):
        """Let the link do its bounded, non-blocking share of work (also called while the meter idles)."""
        try:
            self.link.poll()
        except Exception as e:  # noqa: BLE001 - the link must never stop the meter
            self.event(EV_INTERNAL, repr(e))
        r = self._restart_at
        if r is not None and (self.link.outbox.acked >= r[1] or self.hw.monotonic_s() >= r[0]):
            self.restart()
        u = self._updater
        if u is not None and u.trial:  # a new image on trial: confirmed once it has metered and reported
            first = self.reporter.first_reading
            if first is not None and self.link.outbox.acked >= first:
                u.confirm()

    def restart_at(self, uptime_s, seq):
        """Restart once frame `seq` (a reboot command's answer, in the outbox) is acknowledged, or the uptime
        reaches uptime_s."""
        self._restart_at = (uptime_s, seq)

    def restart(self):
        """An orderly restart: the registers, the link's counter and acknowledged mark written, then the
        board restarts (machine.reset; the simulator ends the run as a restart)."""
        self.flush_checkpoint()
        self.link.flush()
        self.frame_seq.close()  # the next boot numbers on from here: no gap for the head-end to settle
        self.hw.restart()

    def cycle(self):
        """Read one conversion cycle; integrate a batch when it fills. Returns True when a batch settled."""
        self._feed()
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
        ct = self.boundaries.cut_tick
        if ct >= 0 and ticks_diff(s.tick, ct) >= 0:
            self.boundaries.cut(s)
        if self.metrology.add(s.shunt, s.bus, s.tick):
            self.settle()
            self.alarms.check(self.metrology)
            c = self.control
            if c is not None:
                c.check(s.shunt, s.bus, self.metrology)
            elif self.hw.button is not None and self.hw.button.pressed():
                self.controls().press()
            s.check()  # a chip that reset on a load transient is re-initialised (and the event logged)
            return True
        return False

    def _sensor_away(self):
        # Kept out of cycle(): the hot path stays short (MicroPython runs it measurably faster so).
        now = self.hw.time()
        b = self.boundaries
        if b.next_boundary is None:
            b.resume(now)
        else:
            b.check_clock()
            if b.clock_ok and now >= b.next_boundary:
                b.catch_up(now)  # rows, demand periods and billing go on without readings
        self._tend_clock()
        if now >= self._next_sensor_try:
            self._try_sensor()
        elif self.hw.sleep_ms is not None:
            self.hw.sleep_ms(100)
        else:
            self.hw.sleep_us(100000)
        return False

    def settle(self):
        imp, exp = self.metrology.take_uwh()
        cal = self.calibration
        if cal.id:  # once per batch, where raw energy has become uWh (meter/calibration.py says why here)
            el = self.metrology.elapsed_us
            imp, exp = cal.energy(imp, exp, self.sensor.bus_mv(), el - self._cal_elapsed)
            self._cal_elapsed = el
        self.boundaries.settle(imp, exp, self.hw.time())  # a clock that moved is noticed before crediting
        self.checkpoint()
        self._tend_clock()
        if self.reporter is not None:
            self.reporter.settled()

    def _tend_clock(self):
        """NTP, where the board has it (hw.ntp_time): it sets an unset clock, and moves a set one by at most
        messages.SET_TIME_FREE_S: only a signed set-time command may force a larger jump (docs/security.md)."""
        ntp = self.hw.ntp_time
        if ntp is None:
            return
        up = self.hw.monotonic_s()
        if up < self._next_ntp:
            return
        b = self.boundaries
        t = ntp()
        if t is not None:
            why = b.set_clock(t, False, NTP_MIN_SHIFT_S)
            if why is not None:
                self.log("ntp: %s" % why)
        self._next_ntp = up + (NTP_EVERY_S if b.clock_ok and t is not None else NTP_RETRY_S)

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


def main(board):
    """Run the meter on a board, forever: sample, keep registers, and report over the board's link. board: a
    profile (validated by firmware/main.py) or the path of one."""
    import time

    from meter import hal
    from meter.board import board_warnings, load_board

    if isinstance(board, str):
        board = load_board(board)
    for note in board_warnings(board):
        print("board:", note)  # legal but worth knowing: a strapping, USB or console pin in use
    hw = hal.open_hardware(board)
    transport = hal.open_transport(board, ticks_ms=time.ticks_ms)
    meter = Meter(hw, log=print, sink=(lambda seq, frame: None) if transport is not None else None)
    if transport is not None:
        meter.attach_link(transport, ticks_ms=time.ticks_ms)
    meter.start()
    try:
        meter.run_until(lambda: False)
    except KeyboardInterrupt:  # Ctrl-C for the REPL: an armed watchdog cannot be stopped, only given time
        hw.watchdog.relax()
        raise
