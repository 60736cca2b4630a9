# Hardware: the simulated board (sim/hardware.py) opens and its chip answers; a board profile's link section
# becomes a transport (meter/hal.py); hal opens only an ESP32's hardware.
import json

from meter import hal
from meter.board import BoardError, validate_board
from mptest import contains, eq, fresh_dir, ge, raises
from sim.hardware import open_sim

BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"


def _good():
    with open(BOARDS + "unix-sim.json") as f:
        return json.loads(f.read())


def test_sim_hardware_opens_and_chip_answers():
    b = _good()
    hw = open_sim(b, flash_dir=fresh_dir("hal"))
    eq(hw.i2c.scan(), [0x40], "scan")
    t0 = hw.ticks_us()
    hw.sleep_us(1000)
    ge((hw.ticks_us() - t0) & ((1 << 30) - 1), 1000, "virtual time advances")


def test_absent_chip_is_not_on_the_bus():
    hw = open_sim(_good(), flash_dir=fresh_dir("hal"), overrides={"absent": True})
    eq(hw.i2c.scan(), [], "scan")


def test_tcp_transport_from_a_board_profile():
    from meter.transport import TCPTransport

    b = _good()
    eq(hal.open_transport(b), None, "no link section, no transport")
    b["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": 4840}
    t = hal.open_transport(validate_board(b))
    assert isinstance(t, TCPTransport), t
    eq((t.host, t.port), ("127.0.0.1", 4840), "address")


def test_a_uart_link_on_the_console_pins_shares_the_repls_port():
    from meter.console import Console

    with open(BOARDS + "esp32c3-devkitm.json") as f:
        b = json.loads(f.read())
    b["link"] = {"kind": "uart", "id": 0, "tx": 21, "rx": 20, "baud": 115200}  # the C3's UART0
    t = hal.open_transport(validate_board(b))
    assert t.open_fn is Console, t.open_fn
    b["link"] = {"kind": "uart", "id": 1, "tx": 3, "rx": 2, "baud": 115200}  # another UART: machine.UART
    t = _with_modules(lambda: hal.open_transport(validate_board(b)), machine=_Module())
    assert t.open_fn is not Console


def test_hal_opens_only_an_esp32():
    e = raises(BoardError, hal.open_hardware, _good(), fresh_dir("hal"))
    contains("sim/hardware.py", str(e), "says where simulated hardware comes from")


# -- the board's watchdog and random source, against stand-ins for machine and network ----------------------

class _Module:
    """A stand-in for a board-only module (machine, network, ntptime) in sys.modules."""

    def __init__(self, **attrs):
        for k, v in attrs.items():
            setattr(self, k, v)


def _with_modules(fn, **mods):
    import sys

    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        return fn()
    finally:
        for k, v in saved.items():
            if v is None:
                del sys.modules[k]
            else:
                sys.modules[k] = v


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


def test_board_watchdog_follows_the_profile():
    b = _good()
    FakeWDT.made = []
    wd = hal.BoardWatchdog(validate_board(b))
    wd.feed()  # not armed yet: nothing to feed
    _with_modules(wd.arm, machine=FakeMachine)
    _with_modules(wd.arm, machine=FakeMachine)  # once only
    eq(FakeWDT.made, [30000], "armed once with the default timeout")
    wd.feed()
    wd.feed()
    eq(wd._wdt.feeds, 2, "fed")
    _with_modules(wd.relax, machine=FakeMachine)
    eq(FakeWDT.made, [30000, hal.BoardWatchdog.RELAXED_MS], "relaxed for the REPL")
    b["watchdog"] = {"enabled": False}
    off = hal.BoardWatchdog(validate_board(b))
    _with_modules(off.arm, machine=FakeMachine)
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
    got = _with_modules(lambda: hal.radio_random(32), network=FakeNetwork, os=FakeOs)
    eq(len(got), 32, "32 bytes")
    eq(FakeOs.draws, [(32, True)], "drawn while the radio was on")
    eq(FakeWLAN.log, [True, False], "on for the draw, off again")
    FakeWLAN.log = []
    FakeWLAN.on = True  # Wi-Fi already up (a wifi-tcp link): left as it was
    _with_modules(lambda: hal.radio_random(32), network=FakeNetwork)
    eq(FakeWLAN.log, [], "untouched")


class _FakeRTC:
    set_to = None

    def datetime(self, tup):
        _FakeRTC.set_to = tup


def test_the_rtc_is_set_in_the_esp32s_datetime_form():
    machine = _Module(RTC=_FakeRTC)
    _with_modules(lambda: hal.set_rtc(1796114096), machine=machine)  # 2026-12-01 08:34:56 UTC, a Tuesday
    eq(_FakeRTC.set_to, (2026, 12, 1, 2, 8, 34, 56, 0), "(year, month, day, weekday 1 = Monday, h, m, s, subs)")


def test_ntp_answers_in_unix_seconds_only_while_wifi_is_up():
    up = [False]
    wlan = _Module(isconnected=lambda: up[0])
    network = _Module(STA_IF=0, WLAN=lambda i: wlan)
    answer = [849429296]  # what ntptime.time() gives on an ESP32: seconds since 2000 (2026-12-01 08:34:56)

    def ntp_time():
        if answer[0] is None:
            raise OSError(110)  # ETIMEDOUT: no answer within ntptime.timeout
        return answer[0]

    ntptime = _Module(time=ntp_time, host=None)
    ask = hal.ntp_source("192.168.1.1")

    def run():
        out = [ask()]
        up[0] = True
        out.append(ask())
        answer[0] = None
        out.append(ask())
        return out

    eq(_with_modules(run, network=network, ntptime=ntptime), [None, 1796114096, None],
       "no Wi-Fi: none; an answer: Unix seconds; a timeout: none")
    eq(ntptime.host, "192.168.1.1", "the board's server")
