# Board profiles (meter/board.py): the shipped ones load; missing or wrong ones fail with a message that names
# the problem.
import json
import os

from meter import board
from mptest import eq, raises

BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"
TMP = "/tmp/meterkit-test-board-%d" % os.getpid() if hasattr(os, "getpid") else "/tmp/meterkit-test-board"


def _write(name, text):
    try:
        os.mkdir(TMP)
    except OSError:
        pass
    path = TMP + "/" + name
    with open(path, "w") as f:
        f.write(text)
    return path


def _good():
    with open(BOARDS + "unix-sim.json") as f:
        return json.loads(f.read())


def test_shipped_boards_load():
    for name in ("esp32-devkitc", "unix-sim"):
        b = board.load_board(BOARDS + name + ".json")
        eq(b["name"], name, "name")
        eq(b["ina219"]["shunt_uohm"], 100000, "shunt")


def test_missing_profile_names_the_file():
    e = raises(board.BoardError, board.load_board, TMP + "/no-such-board.json")
    assert "no-such-board.json" in str(e), str(e)


def test_not_json():
    e = raises(board.BoardError, board.load_board, _write("bad.json", "{ not json"))
    assert "not valid JSON" in str(e), str(e)


def test_every_problem_is_named():
    b = _good()
    del b["i2c"]
    b["ina219"]["addr"] = 7
    b["ina219"]["max_ma"] = "lots"
    b["mcu"] = "esp8266"
    e = raises(board.BoardError, board.validate_board, b)
    msg = str(e)
    for part in ("missing section 'i2c'", "ina219.addr = 7", "ina219.max_ma must be an integer", "esp8266"):
        assert part in msg, (part, msg)


def test_shunt_range_checked():
    b = _good()
    b["ina219"]["max_ma"] = 10000  # 10 A on 0.1 ohm = 1 V: far beyond the 320 mV input range
    e = raises(board.BoardError, board.validate_board, b)
    assert "320 mV" in str(e), str(e)


def test_bool_is_not_an_integer():
    b = _good()
    b["i2c"]["freq"] = True
    raises(board.BoardError, board.validate_board, b)


def test_link_section_is_checked():
    b = _good()
    b["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": 4840}
    eq(board.validate_board(b)["link"]["port"], 4840, "a tcp link is fine")
    b["link"] = {"kind": "carrier-pigeon"}
    assert "link.kind" in str(raises(board.BoardError, board.validate_board, b))
    b["link"] = {"kind": "uart", "id": 1, "tx": 17, "rx": "16", "baud": 115200}
    assert "link.rx must be an integer" in str(raises(board.BoardError, board.validate_board, b))
    b["link"] = {"kind": "wifi-tcp", "host": "10.0.0.2", "port": 0, "ssid": "x", "password": ""}
    assert "link.port is out of range" in str(raises(board.BoardError, board.validate_board, b))
    b["link"] = {"kind": "wifi-tcp", "host": "10.0.0.2", "port": 4840, "ssid": "x", "password": "", "ntp": 123}
    assert "link.ntp must be a host name" in str(raises(board.BoardError, board.validate_board, b))
    b["link"]["ntp"] = "192.168.1.1"
    eq(board.validate_board(b)["link"]["ntp"], "192.168.1.1", "an NTP server of its own")
