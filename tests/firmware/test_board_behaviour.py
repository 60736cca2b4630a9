# How the meter treats its board (issue 10, item 4): it waits for the INA219 in sleep_ms, where an ESP32's core
# can idle, instead of busy-waiting in sleep_us; its loop feeds the watchdog, and a stalled loop trips it; its
# device key comes only from the hardware's random source. On the simulated board (sim/hardware.py), whose
# virtual clock books every sleep as an ESP32 would spend it (sim/vclock.py: busy_us, idle_us).
import json

from meter import cbor, cose, events, messages, p256
from meter.app import Meter
from meter.board import validate_board
from meter.frame import Deframer
from meter.ina219 import INA219
from mptest import eq, fresh_dir, ge, gt, le, lt, raises
from sim import scenarios
from sim.hardware import WatchdogReset, open_sim
from sim.i2c import SimI2C
from sim.ina219 import INA219Model
from sim.vclock import VirtualClock

BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"


def _board(**sections):
    with open(BOARD) as f:
        b = json.loads(f.read())
    b.update(sections)
    return validate_board(b)


# -- sleeping, not busy-waiting ------------------------------------------------------------------------------

def _driver(tick_us, idle, osc_ppm=0):
    clock = VirtualClock(tick_us=tick_us)
    chip = INA219Model(clock, scenarios.make("constant", seed=1), shunt_ohms=0.1, osc_ppm=osc_ppm)
    bus = SimI2C(clock)
    bus.add(0x40, chip)
    drv = INA219(bus, sleep_us=clock.sleep_us, ticks_us=clock.ticks_us, sleep_ms=clock.sleep_ms if idle else None)
    drv.init()
    return clock, chip, drv


def _cycles(clock, drv, n):
    """Read n cycles after a warm-up; (busy us, idle us, elapsed us, read ticks) over those n."""
    for _ in range(100):
        drv.wait_cycle()
    b, i, t = clock.busy_us, clock.idle_us, clock.now_us
    ticks = []
    while len(ticks) < n:
        if drv.wait_cycle():
            ticks.append(drv.tick)
    return clock.busy_us - b, clock.idle_us - i, clock.now_us - t, ticks


def test_the_wait_for_a_cycle_idles_and_reads_at_the_same_instants():
    # The same chip read with and without sleep_ms: the reads land on the very same microseconds (the
    # last 1-2 ms are still slept exactly, then CNVR is polled), but the busy share falls from ~99 % to the
    # last partial FreeRTOS tick plus those milliseconds: < 11 % at ESP-IDF's default 100 Hz, < 3.5 % at 1 kHz.
    for osc in (0, -100000, 100000):
        for tick_us, most in ((10000, 110), (1000, 35)):  # per mille
            clock, chip, drv = _driver(tick_us, False, osc)
            busy0, idle0, el0, ticks0 = _cycles(clock, drv, 300)
            clock, chip, drv = _driver(tick_us, True, osc)
            busy, idle, el, ticks = _cycles(clock, drv, 300)
            what = "oscillator %d ppm, tick %d us" % (osc, tick_us)
            eq(ticks, ticks0, what + ": read at the same instants")
            eq(chip.cycles - drv.cycles, 0, what + ": no cycle missed")
            eq(idle0, 0, what + ": busy-waiting only, before")
            ge(busy0 * 100, 99 * el0, what + ": before, busy >= 99 %")
            lt(busy * 1000, most * el, what + ": busy share now (per mille)")
            gt(idle * 100, 85 * el, what + ": the core idles the rest")


def test_the_meter_sleeps_in_sleep_ms_when_the_board_has_it():
    hw = open_sim(_board(), flash_dir=fresh_dir("behaviour-duty"), overrides={"scenario": "constant"})
    m = Meter(hw)
    m.start()
    clock = hw.sim.clock
    end = clock.now_us + 120 * 1000000
    m.run_until(lambda: clock.now_us >= end)
    lt(clock.busy_us * 100, 11 * clock.elapsed_us(), "busy share of two minutes")
    hw = open_sim(_board(), flash_dir=fresh_dir("behaviour-duty"), overrides={"scenario": "constant", "absent": True})
    m = Meter(hw)
    m.start()
    end = hw.sim.clock.now_us + 20 * 1000000
    m.run_until(lambda: hw.sim.clock.now_us >= end)
    lt(hw.sim.clock.busy_us * 100, 11 * hw.sim.clock.elapsed_us(), "busy share while the chip is away")


# -- the watchdog ------------------------------------------------------------------------------------------

def _meter(tag, watchdog=None, reset=False):
    b = _board(watchdog=watchdog) if watchdog is not None else _board()
    hw = open_sim(b, flash_dir=fresh_dir(tag), overrides={"scenario": "constant", "watchdog_reset": reset})
    return hw, Meter(hw, sink=lambda seq, fr: None)


def _run_s(hw, m, seconds):
    end = hw.sim.clock.now_us + seconds * 1000000
    m.run_until(lambda: hw.sim.clock.now_us >= end)


def test_every_cycle_feeds_the_watchdog():
    hw, m = _meter("behaviour-wdt")
    wd = hw.watchdog
    eq(wd.armed, False, "not armed before the loop starts (first boot: key, restore)")
    m.start()
    eq(wd.armed, True, "armed by start()")
    _run_s(hw, m, 300)
    ge(wd.feeds, 300 * 1000000 // m.sensor.cycle_us, "fed every cycle")
    le(wd.longest_ms, 80, "longest gap between feeds: one conversion cycle (68.6 ms)")
    eq(wd.tripped, False, "never tripped")


def test_a_stalled_loop_trips_the_watchdog_and_the_next_boot_reports_it():
    flash = fresh_dir("behaviour-stall")
    b = _board(watchdog={"enabled": True, "timeout_ms": 5000})
    hw = open_sim(b, flash_dir=flash, overrides={"scenario": "constant", "watchdog_reset": True})
    m = Meter(hw, sink=lambda seq, fr: None)
    m.start()
    _run_s(hw, m, 10)
    hw.sim.bus.stall_at(hw.sim.clock.now_us, 6000000)  # the bus hangs for 6 s inside one cycle
    e = raises(WatchdogReset, _run_s, hw, m, 10)
    eq(hw.watchdog.tripped, True, "tripped")
    ge(hw.watchdog.longest_ms, 6000, "the gap it saw")
    assert "timeout 5000 ms" in str(e), str(e)
    # the board restarts: the reset cause survives in flash, and the new boot logs and sends it
    frames = []
    hw2 = open_sim(b, flash_dir=flash, overrides={"scenario": "constant"})
    eq(hw2.reset_cause, "watchdog", "reset cause after the restart")
    m2 = Meter(hw2, sink=lambda seq, fr: frames.append(bytes(fr)))
    m2.start()
    eq(m2.event_counts.get(events.WATCHDOG_RESET), 1, "WATCHDOG_RESET logged")
    pub = m2.identity.public_key
    sent = [cbor.decode(cose.verify1(fr, lambda kid: pub)[1]) for fr in Deframer().feed(b"".join(frames))]
    ev = [p for p in sent if p[messages.K_KIND] == messages.EVENT
          and p[messages.K_EVENT_CODE] == events.WATCHDOG_RESET]
    eq(len(ev), 1, "one signed WATCHDOG_RESET event frame")
    eq(ev[0][messages.K_EVENT_VALUE], "watchdog", "its value: the reset cause")
    eq(open_sim(b, flash_dir=flash, overrides={"scenario": "constant"}).reset_cause, None, "reported once")


def test_a_disabled_watchdog_is_never_armed():
    hw, m = _meter("behaviour-wdt-off", watchdog={"enabled": False}, reset=True)
    m.start()
    eq(hw.watchdog.armed, False, "disabled in the profile")
    _run_s(hw, m, 5)
    hw.sim.bus.stall_at(hw.sim.clock.now_us, 60000000)
    _run_s(hw, m, 65)
    eq(hw.watchdog.tripped, False, "a minute's stall, no reset")
    ge(hw.watchdog.longest_ms, 60000, "but the gap was seen")


# -- the device key ------------------------------------------------------------------------------------------

class Source:
    """A random source that records what it was asked for and hands out known bytes."""

    def __init__(self, seed):
        self.calls = []
        self.seed = seed

    def __call__(self, n):
        self.calls.append(n)
        return bytes((self.seed + i * 7) & 0xFF for i in range(n))


def test_the_device_key_comes_from_the_hardware_random_source_only():
    src = Source(11)
    hw = open_sim(_board(), flash_dir=fresh_dir("behaviour-key"), overrides={"scenario": "constant",
                                                                             "random_bytes": src})
    m = Meter(hw, sink=lambda seq, fr: None)
    eq(src.calls, [32], "one 32-byte draw")
    eq(m.identity.public_key, p256.public_key(src(32)), "the key is exactly the source's bytes")
    eq(m.identity.created, True, "made on this first boot")
    again = Source(99)
    hw2 = open_sim(_board(), flash_dir=hw.flash_dir, overrides={"scenario": "constant", "random_bytes": again})
    eq(Meter(hw2, sink=lambda seq, fr: None).identity.public_key, m.identity.public_key, "kept across boots")
    eq(again.calls, [], "no draw once a key exists")
