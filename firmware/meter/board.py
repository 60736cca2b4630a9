# Board profiles (boards/*.json): what a profile must hold, its optional sections (link, tariff, alarms,
# watchdog) with their defaults, and loading one from a file. An ESP32 profile also names its chip (esp32,
# esp32s3, esp32c3), the arch mpy-cross compiles for, and whether its module has PSRAM (and octal flash/PSRAM);
# its pins are checked against that chip and module (meter.pins). Pure: runs under MicroPython and CPython;
# the hardware a profile describes is built by meter.hal (a board) or sim.hardware (the Unix port).
import json

# What a board profile must hold: section -> {key: (type, lowest, highest)}.
_SCHEMA = {
    "i2c": {"id": (int, 0, 1), "scl": (int, 0, 48), "sda": (int, 0, 48), "freq": (int, 10000, 1000000)},
    "ina219": {"addr": (int, 0x40, 0x4F), "shunt_uohm": (int, 100, 10000000), "max_ma": (int, 1, 100000),
               "shunt_avg": (int, 1, 128), "bus_bits": (int, 9, 12)},
    "relay": {"pin": (int, 0, 48)},
    "checkpoint": {"quantum_wh": (int, 1, 1000), "max_interval_s": (int, 60, 86400)},
}
MCUS = ("esp32", "unix-sim")
_SHUNT_FULL_SCALE_UV = 320000  # INA219 shunt input range at PGA /8


class BoardError(ValueError):
    pass


def validate_board(board):
    """Raise BoardError naming every problem in a board profile dict; return it unchanged when valid."""
    if not isinstance(board, dict):
        raise BoardError("board profile must be a JSON object")
    problems = []
    for key in ("name", "mcu", "flash_dir"):
        if not isinstance(board.get(key), str) or not board.get(key):
            problems.append("missing or empty string '%s'" % key)
    if board.get("mcu") not in MCUS:
        problems.append("mcu must be one of %s, not %r" % (", ".join(MCUS), board.get("mcu")))
    for section, fields in _SCHEMA.items():
        sec = board.get(section)
        if not isinstance(sec, dict):
            problems.append("missing section '%s'" % section)
            continue
        for key, (typ, lo, hi) in fields.items():
            v = sec.get(key)
            if not isinstance(v, typ) or isinstance(v, bool):
                problems.append("%s.%s must be an integer, got %r" % (section, key, v))
            elif not lo <= v <= hi:
                problems.append("%s.%s = %d is outside %d..%d" % (section, key, v, lo, hi))
    ina = board.get("ina219")
    if not problems and ina["max_ma"] * ina["shunt_uohm"] // 1000 > _SHUNT_FULL_SCALE_UV:
        problems.append("ina219: max_ma x shunt = %d uV exceeds the chip's 320 mV shunt range; use a smaller shunt"
                        % (ina["max_ma"] * ina["shunt_uohm"] // 1000))
    link = board.get("link")
    if link is not None:
        problems.extend(_link_problems(link))
    tariff = board.get("tariff")
    if tariff is not None:
        problems.extend(_tariff_problems(tariff))
    alarms = board.get("alarms")
    if alarms is not None:
        problems.extend(_alarm_problems(alarms))
    problems.extend(_io_problems(board))
    watchdog = board.get("watchdog")
    if watchdog is not None:
        problems.extend(_watchdog_problems(watchdog))
    if board.get("mcu") == "unix-sim" and not isinstance(board.get("sim"), dict):
        problems.append("a unix-sim board needs a 'sim' section (scenario, seed, start_unix_s)")
    if board.get("mcu") == "esp32":
        problems.extend(_esp32_problems(board))
    if problems:
        raise BoardError("board profile %r is invalid: %s" % (board.get("name", "?"), "; ".join(problems)))
    return board


def _esp32_problems(board):
    # The chip's facts (meter.pins) are loaded only for a board: the simulator never needs them.
    from meter import pins

    out = pins.chip_problems(board)
    if board.get("chip") in pins.CHIPS:
        out.extend(pins.check_pins(board)[0])
    return out


def board_warnings(board):
    """Notes on a valid ESP32 profile's pins that do not make it invalid: strapping, USB and console pins in
    use (meter.pins). Empty for the simulator."""
    if board.get("mcu") != "esp32":
        return []
    from meter import pins

    return pins.check_pins(board)[1]


# The relay's level, and the optional 'button' and 'load_control' sections (docs/hardware.md, "Relay, button
# and load-control output"): {key: default}; the pins are checked against the chip by meter.pins.
_IO = {"relay": {"pin": None, "active_high": True}, "button": {"pin": None, "active_low": True},
       "load_control": {"pin": None, "active_high": True}}


def _io_problems(board):
    out = []
    for name, keys in _IO.items():
        sec = board.get(name)
        if sec is None and name != "relay":
            continue
        if not isinstance(sec, dict):
            if name != "relay":
                out.append("%s must be an object" % name)
            continue
        for key in sec:
            if key not in keys:
                out.append("%s: unknown key %r" % (name, key))
        pin = sec.get("pin")
        if not isinstance(pin, int) or isinstance(pin, bool) or not 0 <= pin <= 48:
            if name != "relay":  # (the relay's pin is checked with the required sections)
                out.append("%s.pin must be an integer 0..48, not %r" % (name, pin))
        for key in keys:
            if key != "pin" and not isinstance(sec.get(key, True), bool):
                out.append("%s.%s must be true or false" % (name, key))
    return out


# The optional 'watchdog' section: machine.WDT, armed as the meter loop starts and fed by every cycle. Once
# armed an ESP32's watchdog cannot be stopped (docs/hardware.md).
WATCHDOG_DEFAULTS = {"enabled": True, "timeout_ms": 30000}
_WATCHDOG_TIMEOUT_MS = (1000, 3600000)


def _watchdog_problems(w):
    if not isinstance(w, dict):
        return ["watchdog must be an object"]
    out = ["watchdog: unknown key %r" % k for k in w if k not in WATCHDOG_DEFAULTS]
    if not isinstance(w.get("enabled", True), bool):
        out.append("watchdog.enabled must be true or false")
    t = w.get("timeout_ms", WATCHDOG_DEFAULTS["timeout_ms"])
    lo, hi = _WATCHDOG_TIMEOUT_MS
    if not isinstance(t, int) or isinstance(t, bool) or not lo <= t <= hi:
        out.append("watchdog.timeout_ms must be an integer %d..%d, not %r" % (lo, hi, t))
    return out


def watchdog_settings(board):
    """{"enabled": bool, "timeout_ms": int}, defaults filled in."""
    out = dict(WATCHDOG_DEFAULTS)
    out.update(board.get("watchdog") or {})
    return out


_LINKS = {
    # kind: {key: (type, lowest, highest)} -- strings have (str, min length, max length)
    "uart": {"id": (int, 0, 2), "tx": (int, 0, 48), "rx": (int, 0, 48), "baud": (int, 9600, 3000000)},
    "tcp": {"host": (str, 1, 64), "port": (int, 1, 65535)},
    "wifi-tcp": {"host": (str, 1, 64), "port": (int, 1, 65535), "ssid": (str, 1, 32), "password": (str, 0, 64)},
}


# The optional 'tariff' section (docs/tariffs.md): tariff registers, the calendar used until a calendar command
# replaces it (a calendar dict, or the path of a JSON file on the board), billing day, demand period.
TARIFF_DEFAULTS = {"tariffs": 4, "calendar": None, "billing_day": 1, "demand_period_s": 900}
_TARIFF_LIMITS = {"tariffs": (1, 8), "billing_day": (1, 28)}


def _tariff_problems(t):
    if not isinstance(t, dict):
        return ["tariff must be an object"]
    problems = []
    for key in t:
        if key not in TARIFF_DEFAULTS:
            problems.append("tariff: unknown key %r" % key)
    for key, (lo, hi) in _TARIFF_LIMITS.items():
        v = t.get(key, TARIFF_DEFAULTS[key])
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            problems.append("tariff.%s must be an integer %d..%d, not %r" % (key, lo, hi, v))
    why = setting_problem("demand_period_s", t.get("demand_period_s", 900))
    if why:
        problems.append("tariff.demand_period_s " + why)
    cal = t.get("calendar")
    if cal is not None and not isinstance(cal, (dict, str)):
        problems.append("tariff.calendar must be a calendar object or the path of a JSON file")
    return problems


# What a board profile sets and a configuration command (meter.settings, op 10) may change: one home for the
# values the meter can honour. A tuple lists the values allowed, a pair (lo, hi) is a range. Demand and
# capture periods divide an hour, so every period ends on the clock and the top of an hour ends both kinds.
SETTING_VALUES = {
    "demand_period_s": (300, 900, 1800, 3600),  # meter.demand.PERIODS
    "capture_period_s": (60, 300, 600, 900, 1800, 3600),
    "reading_s": [10, 86400],
    "over_current_ma": [1, 100000],
    "over_voltage_mv": [1, 32000],
}


def setting_problem(name, v):
    """None when v is a value setting `name` may take, else why not ("must be ..., not v")."""
    ok = SETTING_VALUES[name]
    good = isinstance(v, int) and not isinstance(v, bool)
    if isinstance(ok, tuple):
        if good and v in ok:
            return None
        return "must be one of %s, not %r" % (", ".join([str(x) for x in ok]), v)
    if good and ok[0] <= v <= ok[1]:
        return None
    return "must be an integer %d..%d, not %r" % (ok[0], ok[1], v)


# The optional 'alarms' section: thresholds that raise an event (over-current defaults to the sensor's range).
_ALARMS = ("over_current_ma", "over_voltage_mv")


def _alarm_problems(a):
    if not isinstance(a, dict):
        return ["alarms must be an object"]
    problems = []
    for key, v in a.items():
        if key not in _ALARMS:
            problems.append("alarms: unknown key %r" % key)
        elif v is not None and setting_problem(key, v):
            problems.append("alarms.%s %s (or null)" % (key, setting_problem(key, v)))
    return problems


def alarm_settings(board):
    """{"over_current_ma": mA or None, "over_voltage_mv": mV or None}, defaults filled in."""
    out = {"over_current_ma": board["ina219"]["max_ma"], "over_voltage_mv": None}
    out.update(board.get("alarms") or {})
    return out


def tariff_settings(board):
    """The board's tariff section with defaults filled in; a calendar given as a path is read here."""
    out = dict(TARIFF_DEFAULTS)
    out.update(board.get("tariff") or {})
    cal = out["calendar"]
    if isinstance(cal, str):
        try:
            with open(cal) as f:
                out["calendar"] = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise BoardError("tariff.calendar %s cannot be read: %s" % (cal, e))
    return out


def _link_problems(link):
    """The optional 'link' section: how the meter reaches its head-end (docs/hardware.md)."""
    if not isinstance(link, dict) or link.get("kind") not in _LINKS:
        return ["link.kind must be one of %s" % ", ".join(sorted(_LINKS))]
    out = []
    for key, (typ, lo, hi) in _LINKS[link["kind"]].items():
        v = link.get(key)
        if not isinstance(v, typ) or isinstance(v, bool):
            out.append("link.%s must be %s" % (key, "a string" if typ is str else "an integer"))
        elif not lo <= (len(v) if typ is str else v) <= hi:
            out.append("link.%s is out of range" % key)
    tls = link.get("tls")  # optional: TLS over a TCP link, the head-end's CA pinned (meter.tls)
    if tls is not None:
        if link["kind"] == "uart":
            out.append("link.tls is for a TCP link, not a UART")
        else:
            from meter.tls import tls_problems

            out.extend(tls_problems(tls))
    ntp = link.get("ntp")  # optional: the NTP server of a wifi-tcp board (meter.hal.ntp_source)
    if ntp is not None and (not isinstance(ntp, str) or not 1 <= len(ntp) <= 64):
        out.append("link.ntp must be a host name or IP address")
    return out


def load_board(path):
    """Read and validate a board profile JSON file. Errors name the file and the problem."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise BoardError("cannot read board profile %s: %s" % (path, e))
    try:
        board = json.loads(text)
    except ValueError as e:
        raise BoardError("board profile %s is not valid JSON: %s" % (path, e))
    return validate_board(board)
