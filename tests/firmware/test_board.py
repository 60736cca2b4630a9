# Board profiles (meter/board.py): the shipped ones load; missing or wrong ones fail with a message that names
# the problem.
import json
import os

from meter import board
from mptest import contains, eq, fresh_dir, raises

BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"
TMP = fresh_dir("board")


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


# The shipped ESP32 profiles: chip, arch and PSRAM as the issue asks for each board.
ESP32_BOARDS = {
    "esp32-devkitc": ("esp32", "xtensawin", False),  # ESP32-DevKitC, WROOM-32
    "esp32-wrover": ("esp32", "xtensawin", True),  # ESP32-WROVER
    "esp32s3-devkitc-n8r8": ("esp32s3", "xtensawin", True),  # ESP32-S3-DevKitC-1 N8R8
    "esp32c3-devkitm": ("esp32c3", "rv32imc", False),  # ESP32-C3-DevKitM-1
}


def test_shipped_boards_load():
    for name in ("unix-sim",) + tuple(ESP32_BOARDS):
        b = board.load_board(BOARDS + name + ".json")
        eq(b["name"], name, "name")
        eq(b["ina219"]["shunt_uohm"], 100000, "shunt")
    for name, (chip, arch, psram) in ESP32_BOARDS.items():
        b = board.load_board(BOARDS + name + ".json")
        eq((b["chip"], b["arch"], b["psram"]), (chip, arch, psram), name + ": chip, arch, PSRAM")
        eq(board.board_warnings(b), [], name + ": no strapping, USB or console pin in use")
        assert b["link"]["kind"] in ("wifi-tcp", "uart"), name


def test_shipped_pins_are_legal_for_their_chip():
    # Checked against the chip tables directly (not only through validate_board): every pin is a GPIO of the
    # chip, none is a flash, PSRAM or octal pin of its module, and the driven ones are not input-only.
    from meter import pins

    for name in ESP32_BOARDS:
        b = board.load_board(BOARDS + name + ".json")
        c = pins.CHIPS[b["chip"]]
        taken = [c["flash"]] + ([c["psram"]] if b["psram"] and c["psram"] else [])
        taken += [c["octal"]] if b.get("octal") else []
        used = pins.board_pins(b)
        eq(len(used), 3, name + ": SCL, SDA and the relay")
        for what, n, role in used:
            assert any(lo <= n <= hi for lo, hi in c["gpio"]), (name, what, n)
            assert not any(r[0] <= n <= r[1] for r in taken), (name, what, n)
            assert not (c["input_only"] and c["input_only"][0] <= n <= c["input_only"][1]), (name, what, n)
        eq(len(set(n for _, n, _ in used)), 3, name + ": three different GPIOs")


def _esp32(name="esp32-devkitc"):
    with open(BOARDS + name + ".json") as f:
        return json.loads(f.read())


def _problem(b):
    return str(raises(board.BoardError, board.validate_board, b))


def _refused(name, section, key, n, part):
    b = _esp32(name)
    b[section][key] = n
    contains(part, _problem(b))


def test_flash_psram_and_input_only_pins_are_refused():
    for name, section, key, n, part in (
            ("esp32-devkitc", "relay", "pin", 9,
             "relay.pin = 9: GPIO9 is wired to the module's SPI flash (GPIO6-11 on the ESP32)"),
            ("esp32-devkitc", "relay", "pin", 36,
             "relay.pin = 36: GPIO36 is input-only on the ESP32 (GPIO34-39 have no output driver)"),
            ("esp32-devkitc", "i2c", "sda", 39, "i2c.sda = 39: GPIO39 is input-only"),
            ("esp32-wrover", "relay", "pin", 16, "relay.pin = 16: GPIO16 is wired to the PSRAM"),
            ("esp32s3-devkitc-n8r8", "relay", "pin", 35, "GPIO35 carries the octal flash/PSRAM"),
            ("esp32s3-devkitc-n8r8", "relay", "pin", 30,
             "relay.pin = 30: GPIO30 is wired to the module's SPI flash (GPIO26-32 on the ESP32-S3)"),
            ("esp32c3-devkitm", "i2c", "scl", 14,
             "i2c.scl = 14: GPIO14 is wired to the module's SPI flash (GPIO12-17 on the ESP32-C3)")):
        _refused(name, section, key, n, part)
    b = _esp32("esp32-wrover")
    b["relay"]["pin"] = 16
    b["psram"] = False  # the same pin on a WROOM-32 (no PSRAM) is free
    eq(board.validate_board(b)["relay"]["pin"], 16, "GPIO16 without PSRAM")


def test_pins_that_the_chip_does_not_have():
    _refused("esp32-devkitc", "relay", "pin", 24,
             "relay.pin = 24: the ESP32 has no GPIO24 (its GPIOs are 0-19, 21-23, 25-27, 32-39)")
    _refused("esp32c3-devkitm", "relay", "pin", 26, "the ESP32-C3 has no GPIO26 (its GPIOs are 0-21)")  # ESP32: yes
    _refused("esp32s3-devkitc-n8r8", "i2c", "scl", 23, "the ESP32-S3 has no GPIO23")


def test_wrong_chip_arch_and_controllers():
    b = _esp32()
    b["chip"] = "esp8266"
    contains("chip must be one of esp32, esp32s3, esp32c3, not 'esp8266'", _problem(b))
    b = _esp32("esp32c3-devkitm")
    b["arch"] = "xtensawin"
    contains("arch must be 'rv32imc' for the ESP32-C3", _problem(b))
    b = _esp32("esp32c3-devkitm")
    b["psram"] = True
    b["i2c"]["id"] = 1
    msg = _problem(b)
    contains("psram: the ESP32-C3 has no PSRAM", msg)
    contains("i2c.id = 1: the ESP32-C3 has 1 I2C controller(s) (id 0)", msg)
    b = _esp32()
    b["octal"] = True
    contains("octal: the ESP32 has no octal flash/PSRAM interface", _problem(b))
    b = _esp32()
    del b["chip"]
    contains("chip must be one of", _problem(b))


def test_uart_link_pins_and_a_pin_used_twice():
    b = _esp32()
    b["link"] = {"kind": "uart", "id": 2, "tx": 25, "rx": 34, "baud": 115200}
    eq(board.validate_board(b)["link"]["rx"], 34, "an input-only pin can receive")
    b["link"]["tx"] = 35
    contains("link.tx = 35: GPIO35 is input-only", _problem(b))
    b["link"]["tx"] = 26
    contains("GPIO26 is used twice: relay.pin and link.tx", _problem(b))
    b = _esp32("esp32c3-devkitm")
    b["link"] = {"kind": "uart", "id": 2, "tx": 4, "rx": 3, "baud": 115200}
    contains("link.id = 2: the ESP32-C3 has UARTs 0-1", _problem(b))


def test_strapping_usb_and_console_pins_are_warned_about():
    b = _esp32()
    b["i2c"]["scl"] = 12
    w = board.board_warnings(board.validate_board(b))
    eq(len(w), 1, "one warning")
    contains("i2c.scl = 12: GPIO12 is a strapping pin of the ESP32: MTDI, high at reset selects 1.8 V flash", w[0])
    contains("the level to avoid", w[0])
    b = _esp32("esp32c3-devkitm")
    b["i2c"]["scl"], b["i2c"]["sda"] = 9, 8  # MicroPython's default I2C pins on a C3: both want to be high
    w = board.board_warnings(board.validate_board(b))
    eq(len(w), 2, "two strapping pins")
    for x in w:
        contains("which is harmless", x)
    b = _esp32("esp32s3-devkitc-n8r8")
    b["relay"]["pin"] = 19
    contains("native USB data line", board.board_warnings(board.validate_board(b))[0])
    b = _esp32()
    b["relay"]["pin"] = 1
    contains("UART0 of the ESP32", board.board_warnings(board.validate_board(b))[0])
    eq(board.board_warnings(_good()), [], "the simulator has no pins")


def test_watchdog_section():
    b = _esp32()
    eq(board.watchdog_settings(board.validate_board(b)), {"enabled": True, "timeout_ms": 30000}, "as shipped")
    del b["watchdog"]
    eq(board.watchdog_settings(board.validate_board(b)), board.WATCHDOG_DEFAULTS, "defaults")
    b["watchdog"] = {"enabled": "yes", "timeout_ms": 500, "feed_from_timer": True}
    msg = _problem(b)
    for part in ("watchdog.enabled must be true or false", "watchdog.timeout_ms must be an integer 1000..3600000",
                 "watchdog: unknown key 'feed_from_timer'"):
        contains(part, msg)


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
