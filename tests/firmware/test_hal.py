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
