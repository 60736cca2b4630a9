# Simulated hardware for the Unix port: what meter.hal builds from machine.* on an ESP32, built here from
# the simulator (virtual clock, I2C bus, register-level INA219 model, a relay that cuts the simulated load).
# Never deployed to a board: a firmware image freezes the `meter` package, never `sim`.
import os

from meter.board import BoardError, watchdog_settings
from meter.clock import EPOCH_2000_OFFSET, ticks_diff
from meter.hal import Button, Hardware, Output, slot_ota
from sim import scenarios
from sim.i2c import SimI2C
from sim.ina219 import INA219Model
from sim.vclock import DEFAULT_START_UNIX_S, PacedClock, VirtualClock

RESET_CAUSE_FILE = "sim-reset-cause"  # in the flash directory: why the simulated board restarted
# The share of the simulated load behind the load-control contactor unless the profile's sim section says: a
# water heater's part of a household's consumption.
DEFAULT_CONTROLLED_SHARE = 0.4


class WatchdogReset(Exception):
    """The simulated board's watchdog expired: the board resets (sim/run.py ends the run as a restart)."""


class Restart(Exception):
    """The simulated board restarts on command (a reboot): sim/run.py ends the run as a restart."""


def _restart():
    raise Restart("reboot command")


class LazyOta:
    """hw.ota: sim.ota's partitions as files, imported when first used (a meter never updated never loads it)."""

    def __init__(self, flash_dir):
        self._dir = flash_dir
        self._ota = None

    def __getattr__(self, name):
        o = self._ota
        if o is None:
            from sim import ota  # the partition the bootloader chose (sim/boot.py), else the one otadata names

            o = self._ota = ota.SimOta(self._dir, ota.running or ota.load_otadata(self._dir)["boot"])
        return getattr(o, name)


class SimPin:
    """An output pin (machine.Pin's init/value): level is what it drives, None until it is first driven."""

    OUT = 1

    def __init__(self):
        self.level = None
        self.changes = 0

    def init(self, mode, value=0):
        self.value(value)

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.changes += 1
        self.level = v


class SimRelayPin(SimPin):
    """The supply relay's pin: the relay closes at the active level; open, it cuts the simulated load (the
    chip's shunt carries no current, so the registers stop)."""

    def __init__(self, chip, active_high=True):
        SimPin.__init__(self)
        self.chip = chip
        self.active = 1 if active_high else 0

    def value(self, v=None):
        if v is None:
            return self.level
        SimPin.value(self, v)
        self.chip.load_connected = self.level == self.active


class SimLoadControlPin(SimPin):
    """The load-control contactor's pin: closed at the active level (meter.hal.Output: value(1) supplies the
    load). Open (a demand-response shed) it cuts the controlled share of the simulated load: an import through
    the chip's shunt is the scenario's times (1 - share). Until the meter first drives it the load is supplied."""

    def __init__(self, chip, share, active_high=True):
        SimPin.__init__(self)
        self.chip = chip
        self.share = share
        self.active = 1 if active_high else 0

    def value(self, v=None):
        if v is None:
            return self.level
        SimPin.value(self, v)
        self.chip.set_load_share(1.0 if self.level == self.active else 1.0 - self.share)


class SimButtonPin:
    """The push-button's input pin (machine.Pin's irq/value): press() is a press and release in virtual
    time, with `bounce` extra edges 1 ms apart at each end, as a real contact makes."""

    IRQ_FALLING = 1
    IRQ_RISING = 2

    def __init__(self, clock, active_low=True):
        self.clock = clock
        self.idle = 1 if active_low else 0
        self.level = self.idle
        self.handler = None
        self.presses = 0

    def irq(self, handler=None, trigger=3):
        self.handler = handler

    def value(self):
        return self.level

    def _set(self, level):
        if level != self.level:
            self.level = level
            if self.handler is not None:
                self.handler(self)

    def press(self, hold_ms=200, bounce=0):
        self.presses += 1
        for end in (1 - self.idle, self.idle):
            for _ in range(bounce):
                self._set(end)
                self.clock.advance_us(1000)
                self._set(1 - end)
                self.clock.advance_us(1000)
            self._set(end)
            self.clock.advance_us(hold_ms * 1000 if end != self.idle else 0)


class SimButton(Button):
    """meter.hal.Button on the simulated pin, plus the presses the profile's 'sim' section schedules
    (button_presses: virtual seconds after the start), made when the meter next asks. With press_when_ready the
    customer waits, from each scheduled time, until the meter shows it is ready for reconnection (ready(), given
    by sim.run), as a customer told to press once the ready light is on."""

    def __init__(self, pin, active_low, clock, schedule=(), when_ready=False):
        Button.__init__(self, pin, active_low, clock.ticks_ms)
        self.clock = clock
        self.schedule = sorted(clock.now_us + int(s * 1000000) for s in schedule)
        self.when_ready = when_ready
        self.ready = None

    def pressed(self):
        sch = self.schedule
        while sch and sch[0] <= self.clock.now_us and (not self.when_ready or (self.ready and self.ready())):
            sch.pop(0)
            self.pin.press()
        return Button.pressed(self)


class SimWatchdog:
    """machine.WDT for the simulator, in virtual time: every feed records the gap since the previous one
    (longest_ms). Armed and enabled, a gap beyond the board's timeout trips it (tripped): with reset=True it
    also leaves the reset cause for the next boot in flash (as the ESP32's reset reason survives the reset) and
    raises WatchdogReset, so a stalled loop ends the run the way a board would restart."""

    def __init__(self, clock, settings, flash_dir, reset=False):
        self.clock = clock
        self.enabled = settings["enabled"]
        self.timeout_ms = settings["timeout_ms"]
        self.flash_dir = flash_dir
        self.reset = reset
        self.armed = False
        self.tripped = False
        self.feeds = 0
        self.longest_ms = 0
        self._last = clock.ticks_ms()

    def arm(self):
        self.armed = self.enabled
        self._last = self.clock.ticks_ms()

    def feed(self):
        now = self.clock.ticks_ms()
        gap = ticks_diff(now, self._last)
        self._last = now
        self.feeds += 1
        if gap > self.longest_ms:
            self.longest_ms = gap
        if self.armed and gap > self.timeout_ms:
            self._trip(gap)

    def relax(self):
        pass

    def _trip(self, gap):
        self.tripped = True
        if self.reset:
            with open(self.flash_dir + "/" + RESET_CAUSE_FILE, "w") as f:
                f.write("watchdog")
            raise WatchdogReset("no feed for %d ms (timeout %d ms)" % (gap, self.timeout_ms))


def _take_reset_cause(flash_dir):
    path = flash_dir + "/" + RESET_CAUSE_FILE
    try:
        with open(path) as f:
            cause = f.read().strip()
    except OSError:
        return None
    os.remove(path)
    return cause or None


class SimHandles:
    def __init__(self, clock, bus, chip, scenario):
        self.clock = clock
        self.bus = bus
        self.chip = chip
        self.scenario = scenario


def open_sim(board, flash_dir=None, overrides=None):
    """The Hardware of a unix-sim board profile (its 'sim' section, with `overrides` applied): scenario, seed,
    start_unix_s (the true time), osc_ppm, absent (no chip on the bus); the clock's: rtc ("set", the default,
    or "unset": it starts at 2000-01-01 like an ESP32's after power-up), rtc_offset_s (a set clock this far off
    the true time), ntp (true: a time server answers the true time, as on Wi-Fi); for the CPU-duty measurement
    (docs/performance.md) pace (sleeps take real time: sleep_us spins, sleep_ms sleeps, both divided by this
    speed-up) and busy_wait (no sleep_ms: every wait busy, as before the driver slept); watchdog_reset (a
    tripped watchdog raises WatchdogReset, as sim/run.py wants); for calibration, shunt_error_ppm (the real
    shunt is that far off the profile's shunt_uohm) and offset_lsb (the chip's shunt offset, 10 uV counts);
    with the constant scenario, amps and volts set its load; controlled_share (0..1, default
    DEFAULT_CONTROLLED_SHARE) the share of the load behind the load-control contactor."""
    cfg = dict(board["sim"])
    cfg.update(overrides or {})
    start = cfg.get("start_unix_s", DEFAULT_START_UNIX_S)
    pace = cfg.get("pace")
    kw = {"start_unix_s": start, "rtc_unix_s": _rtc_start(cfg, start)}
    clock = PacedClock(pace, **kw) if pace else VirtualClock(**kw)
    # The sun follows the simulated clock (UTC time of day); other scenarios ignore it.
    scenario = scenarios.make(cfg.get("scenario", "constant"), seed=cfg.get("seed", 1), tod_s=start % 86400)
    if "amps" in cfg and scenario.name == "constant":  # a load of its own (calibration points)
        scenario = scenarios.Constant(cfg.get("seed", 1), volts=cfg.get("volts", 12.0), amps=cfg["amps"])
    ina = board["ina219"]
    shunt_ohms = ina["shunt_uohm"] * (1000000 + cfg.get("shunt_error_ppm", 0)) / 1e12
    chip = INA219Model(clock, scenario, shunt_ohms=shunt_ohms, osc_ppm=cfg.get("osc_ppm", 0),
                       offset_lsb=cfg.get("offset_lsb", 0))
    bus = SimI2C(clock, freq=board["i2c"]["freq"])
    if not cfg.get("absent"):
        bus.add(ina["addr"], chip)
    flash = flash_dir or board["flash_dir"]
    high = board["relay"].get("active_high", True)
    relay = Output(SimRelayPin(chip, high), high)
    hw = Hardware(board, bus, clock.ticks_us, clock.ticks_ms, clock.sleep_us, clock.time, clock.time_us,
                  relay, flash, sim=SimHandles(clock, bus, chip, scenario),
                  sleep_ms=None if cfg.get("busy_wait") else clock.sleep_ms,
                  watchdog=SimWatchdog(clock, watchdog_settings(board), flash, reset=cfg.get("watchdog_reset")),
                  random_bytes=cfg.get("random_bytes") or os.urandom)
    hw.reset_cause = _take_reset_cause(hw.flash_dir)
    _controls(hw, board, clock, cfg, chip)
    hw.set_time = clock.set_time
    hw.restart = _restart
    hw.ota = slot_ota() or LazyOta(hw.flash_dir)  # the test board runs its application from A/B slots
    if cfg.get("ntp"):
        hw.ntp_time = clock.world_time
    return hw


def _controls(hw, board, clock, cfg, chip):
    """The board's button and load-control output, simulated; button_presses and controlled_share from the
    'sim' section."""
    b = board.get("button")
    presses = cfg.get("button_presses", [])
    if not isinstance(presses, list) or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0
                                            for s in presses):
        raise BoardError("sim.button_presses must be a list of seconds after the start, not %r" % (presses,))
    when_ready = cfg.get("press_when_ready", False)
    if not isinstance(when_ready, bool):
        raise BoardError("sim.press_when_ready must be true or false, not %r" % (when_ready,))
    if b is not None:
        low = b.get("active_low", True)
        hw.button = SimButton(SimButtonPin(clock, low), low, clock, presses, when_ready)
    elif presses:
        raise BoardError("sim.button_presses needs a 'button' section")
    lc = board.get("load_control")
    share = cfg.get("controlled_share", DEFAULT_CONTROLLED_SHARE)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise BoardError("sim.controlled_share must be a share of the load from 0 to 1, not %r" % (share,))
    if lc is not None:
        high = lc.get("active_high", True)
        hw.load_control = Output(SimLoadControlPin(chip, share, high), high)
    elif "controlled_share" in cfg:
        raise BoardError("sim.controlled_share needs a 'load_control' section")


def _rtc_start(cfg, start):
    """What the simulated RTC reads at power-up (None: the true time); BoardError for bad clock options."""
    rtc, offset, ntp = cfg.get("rtc", "set"), cfg.get("rtc_offset_s", 0), cfg.get("ntp", False)
    if rtc not in ("set", "unset"):
        raise BoardError("sim.rtc must be \"set\" or \"unset\", not %r" % (rtc,))
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise BoardError("sim.rtc_offset_s must be whole seconds, not %r" % (offset,))
    if ntp is not True and ntp is not False:
        raise BoardError("sim.ntp must be true or false, not %r" % (ntp,))
    if rtc == "unset":
        if offset:
            raise BoardError("sim.rtc_offset_s is for a set clock: an unset one starts at 2000-01-01")
        return EPOCH_2000_OFFSET
    return start + offset if offset else None
