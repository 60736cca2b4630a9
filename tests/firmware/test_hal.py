# Hardware: the simulated board (sim/hardware.py) opens and its chip answers; a board profile's link section
# becomes a transport (meter/hal.py); hal opens only an ESP32's hardware.
import json

from meter import hal
from meter.board import BoardError, validate_board
from mptest import contains, eq, ge, raises
from sim.hardware import open_sim

BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"
TMP = "/tmp/meterkit-test-hal"


def _good():
    with open(BOARDS + "unix-sim.json") as f:
        return json.loads(f.read())


def test_sim_hardware_opens_and_chip_answers():
    b = _good()
    hw = open_sim(b, flash_dir=TMP)
    eq(hw.i2c.scan(), [0x40], "scan")
    t0 = hw.ticks_us()
    hw.sleep_us(1000)
    ge((hw.ticks_us() - t0) & ((1 << 30) - 1), 1000, "virtual time advances")


def test_absent_chip_is_not_on_the_bus():
    hw = open_sim(_good(), flash_dir=TMP, overrides={"absent": True})
    eq(hw.i2c.scan(), [], "scan")


def test_tcp_transport_from_a_board_profile():
    from meter.transport import TCPTransport

    b = _good()
    eq(hal.open_transport(b), None, "no link section, no transport")
    b["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": 4840}
    t = hal.open_transport(validate_board(b))
    assert isinstance(t, TCPTransport), t
    eq((t.host, t.port), ("127.0.0.1", 4840), "address")


def test_hal_opens_only_an_esp32():
    e = raises(BoardError, hal.open_hardware, _good(), TMP)
    contains("sim/hardware.py", str(e), "says where simulated hardware comes from")


# -- the board's watchdog and random source, against stand-ins for machine and network ----------------------

class FakeWDT:
    made = []

    def __init__(self, timeout):
        FakeWDT.made.append(timeout)
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeMachine:
    WDT = FakeWDT


class FakeWLAN:
    log = []
    on = False

    def __init__(self, which):
        pass

    def active(self, v=None):
        if v is None:
            return FakeWLAN.on
        FakeWLAN.log.append(v)
        FakeWLAN.on = v
        return v


class FakeNetwork:
    STA_IF = 0
    WLAN = FakeWLAN


def _with_module(name, obj, fn):
    import sys

    saved = sys.modules.get(name)
    sys.modules[name] = obj
    try:
        return fn()
    finally:
        if saved is None:
            del sys.modules[name]
        else:
            sys.modules[name] = saved


def test_board_watchdog_follows_the_profile():
    b = _good()
    FakeWDT.made = []
    wd = hal.BoardWatchdog(validate_board(b))
    wd.feed()  # not armed yet: nothing to feed
    _with_module("machine", FakeMachine, wd.arm)
    _with_module("machine", FakeMachine, wd.arm)  # once only
    eq(FakeWDT.made, [30000], "armed once with the default timeout")
    wd.feed()
    wd.feed()
    eq(wd._wdt.feeds, 2, "fed")
    _with_module("machine", FakeMachine, wd.relax)
    eq(FakeWDT.made, [30000, hal.BoardWatchdog.RELAXED_MS], "relaxed for the REPL")
    b["watchdog"] = {"enabled": False}
    off = hal.BoardWatchdog(validate_board(b))
    _with_module("machine", FakeMachine, off.arm)
    eq(FakeWDT.made, [30000, hal.BoardWatchdog.RELAXED_MS], "a disabled watchdog is never made")


class FakeOs:
    draws = []

    @staticmethod
    def urandom(n):
        FakeOs.draws.append((n, FakeWLAN.on))
        return bytes(n)


def test_radio_random_turns_the_radio_on_for_the_draw_and_restores_it():
    FakeWLAN.log = []
    FakeWLAN.on = False
    FakeOs.draws = []
    got = _with_module("network", FakeNetwork, lambda: _with_module("os", FakeOs, lambda: hal.radio_random(32)))
    eq(len(got), 32, "32 bytes")
    eq(FakeOs.draws, [(32, True)], "drawn while the radio was on")
    eq(FakeWLAN.log, [True, False], "on for the draw, off again")
    FakeWLAN.log = []
    FakeWLAN.on = True  # Wi-Fi already up (a wifi-tcp link): left as it was
    _with_module("network", FakeNetwork, lambda: hal.radio_random(32))
    eq(FakeWLAN.log, [], "untouched")
