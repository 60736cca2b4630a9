# GPIO facts per chip and the pin checks of a board profile (meter.board calls them). Pure: runs under
# MicroPython and CPython. Sources, cited in docs/hardware.md: ESP-IDF's GPIO reference per target
# (docs/en/api-reference/peripherals/gpio/esp32*.inc), the ESP32 module datasheet ("Strapping Pins"), esptool's
# "Boot Mode Selection", the ESP32-S3 and ESP32-C3 datasheets, ESP-IDF soc_caps.h (controller counts).
#
# A pin has a role: "out" (driven: relay, load control, UART TX; I2C lines are open-drain outputs) or "in"
# (UART RX, the button).
# check_pins() returns (problems, warnings): problems make a profile invalid (no such GPIO, a flash/PSRAM pin,
# an input-only pin driven, one GPIO used twice); warnings name a strapping, USB or console pin in use.

CHIP_NAMES = ("esp32", "esp32s3", "esp32c3")  # the order messages list them in (dicts are unordered here)

# chip -> facts. GPIO ranges are inclusive (first, last) pairs.
CHIPS = {
    "esp32": {
        "name": "ESP32", "arch": "xtensawin",
        "gpio": ((0, 19), (21, 23), (25, 27), (32, 39)),
        "flash": (6, 11),  # SPI0/1 to the module's flash
        "psram": (16, 17),  # SPI0/1 to the PSRAM of a module that has it (WROVER)
        "octal": None,
        "input_only": (34, 39),  # no output driver, no pull-up/down
        "usb": (),
        "console": (1, 3),  # UART0 TXD/RXD: boot log, REPL, esptool
        "i2c": 2, "uart": 3, "psram_ok": True,
        "strap": {
            0: ("low at reset starts the serial bootloader instead of the firmware", "low"),
            2: ("must be low or floating at reset for esptool to enter the serial bootloader", "high"),
            5: ("sets SDIO slave timing at reset, which the meter does not use", None),
            12: ("MTDI, high at reset selects 1.8 V flash, and a module with 3.3 V flash such as the WROOM-32 "
                 "then fails to boot", "high"),
            15: ("MTDO, low at reset silences the ROM boot log", "low"),
        },
    },
    "esp32s3": {
        "name": "ESP32-S3", "arch": "xtensawin",
        "gpio": ((0, 21), (26, 48)),
        "flash": (26, 32),  # SPI0/1: flash and quad PSRAM
        "psram": None,
        "octal": (33, 37),  # SPIIO4-7 and SPIDQS of octal flash or PSRAM (e.g. N8R8 modules)
        "input_only": None,
        "usb": (19, 20),  # native USB (USB-JTAG / USB serial)
        "console": (43, 44),  # UART0 TXD/RXD
        "i2c": 2, "uart": 3, "psram_ok": True,
        "strap": {
            0: ("low at reset starts the serial bootloader instead of the firmware", "low"),
            3: ("selects the JTAG signal source at reset", None),
            45: ("VDD_SPI voltage at reset: high selects 1.8 V, wrong for a 3.3 V flash", "high"),
            46: ("must be low or floating at reset to enter the serial bootloader; sets ROM log output", "high"),
        },
    },
    "esp32c3": {
        "name": "ESP32-C3", "arch": "rv32imc",
        "gpio": ((0, 21),),
        "flash": (12, 17),  # SPI0/1 to the flash
        "psram": None,
        "octal": None,
        "input_only": None,
        "usb": (18, 19),  # USB-JTAG / USB serial
        "console": (21, 20),  # UART0 TXD/RXD
        "i2c": 1, "uart": 2, "psram_ok": False,
        "strap": {
            2: ("must be high at reset for both flash and serial boot", "low"),
            8: ("must be high at reset to enter the serial bootloader", "low"),
            9: ("the BOOT button: low at reset starts the serial bootloader instead of the firmware", "low"),
        },
    },
}

# what a level that the circuit may force at reset means, per role: I2C lines have pull-ups (held high); a
# relay driver or UART is unknown ("any").
_ROLE_LEVEL = {"i2c": "high"}


def _within(r, n):
    return r is not None and r[0] <= n <= r[1]


def _span(r):
    lo, hi = min(r), max(r)
    return "GPIO%d-%d" % (lo, hi) if hi > lo + 1 else "GPIO%d and GPIO%d" % (lo, hi)


def valid_gpios(chip):
    return ", ".join("%d-%d" % r if r[1] > r[0] else "%d" % r[0] for r in CHIPS[chip]["gpio"])


def console_tx_rx(chip):
    """(TX, RX) of UART0, the console: boot log, REPL and esptool over a DevKit's USB-serial bridge."""
    return CHIPS[chip]["console"]


def pin_problem(chip, board, what, n, role):
    """Why GPIO n cannot serve `what` (e.g. 'relay.pin') on this chip and module, or None."""
    c = CHIPS[chip]
    name = c["name"]
    if not any(lo <= n <= hi for lo, hi in c["gpio"]):
        return "%s = %d: the %s has no GPIO%d (its GPIOs are %s)" % (what, n, name, n, valid_gpios(chip))
    if _within(c["flash"], n):
        return ("%s = %d: GPIO%d is wired to the module's SPI flash (%s on the %s); using it crashes the board"
                % (what, n, n, _span(c["flash"]), name))
    if board.get("psram") and _within(c["psram"], n):
        return ("%s = %d: GPIO%d is wired to the PSRAM on an %s module with PSRAM (%s, e.g. WROVER)"
                % (what, n, n, name, _span(c["psram"])))
    if board.get("octal") and _within(c["octal"], n):
        return ("%s = %d: GPIO%d carries the octal flash/PSRAM on this %s module (%s on octal modules such as "
                "N8R8)" % (what, n, n, name, _span(c["octal"])))
    if role == "out" and _within(c["input_only"], n):
        return ("%s = %d: GPIO%d is input-only on the %s (%s have no output driver): it cannot drive %s"
                % (what, n, n, name, _span(c["input_only"]), what.split(".")[0]))
    return None


def pin_warning(chip, what, n):
    """A note on GPIO n when it is a strapping, USB or console pin of this chip, or None."""
    c = CHIPS[chip]
    strap = c["strap"].get(n)
    if strap is not None:
        meaning, bad = strap
        forced = _ROLE_LEVEL.get(what.split(".")[0], "any")
        note = ("" if forced == "any" else " Its pull-up holds it %s at reset, %s." %
                (forced, "the level to avoid: check that the board boots and flashes" if forced == bad
                 else "which is harmless"))
        return "%s = %d: GPIO%d is a strapping pin of the %s: %s.%s" % (what, n, n, c["name"], meaning, note)
    if n in c["usb"]:
        return ("%s = %d: GPIO%d is a native USB data line of the %s; using it turns USB (REPL, esptool) off"
                % (what, n, n, c["name"]))
    if n in c["console"]:
        return ("%s = %d: GPIO%d is UART0 of the %s: boot log, REPL and esptool over the USB-serial bridge"
                % (what, n, n, c["name"]))
    return None


def chip_problems(board):
    """The chip, arch, PSRAM and controller ids of an ESP32 board profile."""
    chip = board.get("chip")
    if chip not in CHIPS:
        return ["chip must be one of %s, not %r" % (", ".join(CHIP_NAMES), chip)]
    c = CHIPS[chip]
    out = []
    if board.get("arch") != c["arch"]:
        out.append("arch must be %r for the %s (mpy-cross -march), not %r" % (c["arch"], c["name"], board.get("arch")))
    for key in ("psram", "octal"):
        if not isinstance(board.get(key, False), bool):
            out.append("%s must be true or false" % key)
    if board.get("psram") and not c["psram_ok"]:
        out.append("psram: the %s has no PSRAM" % c["name"])
    if board.get("octal") and c["octal"] is None:
        out.append("octal: the %s has no octal flash/PSRAM interface" % c["name"])
    i2c_id = board.get("i2c", {}).get("id")
    if isinstance(i2c_id, int) and i2c_id >= c["i2c"]:
        out.append("i2c.id = %d: the %s has %d I2C controller(s) (id 0%s)"
                   % (i2c_id, c["name"], c["i2c"], "" if c["i2c"] == 1 else "-%d" % (c["i2c"] - 1)))
    link = board.get("link") or {}
    if link.get("kind") == "uart" and isinstance(link.get("id"), int) and link["id"] >= c["uart"]:
        out.append("link.id = %d: the %s has UARTs 0-%d" % (link["id"], c["name"], c["uart"] - 1))
    return out


def board_pins(board):
    """[(what, gpio, role)] of every pin a board profile uses."""
    i2c = board.get("i2c") or {}
    out = [("i2c.scl", i2c.get("scl"), "out"), ("i2c.sda", i2c.get("sda"), "out"),
           ("relay.pin", _pin(board, "relay"), "out"), ("load_control.pin", _pin(board, "load_control"), "out"),
           ("button.pin", _pin(board, "button"), "in")]
    link = board.get("link") or {}
    if link.get("kind") == "uart":
        out += [("link.tx", link.get("tx"), "out"), ("link.rx", link.get("rx"), "in")]
    return [p for p in out if isinstance(p[1], int) and not isinstance(p[1], bool)]


def _pin(board, section):
    sec = board.get(section)
    return sec.get("pin") if isinstance(sec, dict) else None


def check_pins(board):
    """(problems, warnings) for the pins of an ESP32 board profile whose chip is known."""
    chip = board["chip"]
    problems = []
    warnings = []
    seen = {}
    for what, n, role in board_pins(board):
        p = pin_problem(chip, board, what, n, role)
        if p is not None:
            problems.append(p)
        else:
            w = pin_warning(chip, what, n)
            if w is not None:
                warnings.append(w)
        if n in seen:
            problems.append("GPIO%d is used twice: %s and %s" % (n, seen[n], what))
        seen[n] = what
    return problems, warnings
