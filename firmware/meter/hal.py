# Hardware abstraction: the ONLY module that imports machine / esp32 / network. Hardware only: the board
# profile's schema is meter.board, the simulated hardware of the Unix port sim.hardware (never on a board).
#
# Everything else in meter/ receives its hardware from here as plain objects:
#   i2c          an object with readfrom_mem_into / writeto_mem (machine.I2C or sim.i2c.SimI2C)
#   ticks_us     a microsecond counter wrapping at 2^30 (meter.clock.TICKS_PERIOD)
#   monotonic_s  seconds since boot (meter.clock.Uptime over ticks_ms): never set, never jumps
#   sleep_us     blocking microsecond sleep (a busy-wait on an ESP32)
#   sleep_ms     blocking millisecond sleep that lets the core idle (FreeRTOS ticks); None: busy-wait only
#   time         UTC seconds since 1970 (the ESP32's own epoch is 2000; converted here, once)
#   time_us      UTC microseconds since 1970, from the same clock: where a boundary instant falls in ticks
#   set_time     set_time(t): the clock reads UTC second t from now on (the RTC on a board), or None
#   ntp_time     ntp_time() -> UTC seconds from the network, or None (no answer); None on a board without Wi-Fi
#   relay        Output: value(1) closes the supply relay, value(0) opens it (at the board's active level)
#   button       Button (the customer's push-button: pressed() once per debounced press), or None
#   load_control Output: a second relay for a load demand response may shed (a water heater), or None
#   flash_dir    a directory for persistent state
#   watchdog     arm() / feed() / relax(): machine.WDT from the board profile (sim.hardware: SimWatchdog)
#   random_bytes random_bytes(n): true-random bytes, for the device key (on an ESP32: radio_random below)
#   ota          where meter.fwupdate writes an update: the OTA partitions (EspOta below; sim.ota on the Unix
#                port), the A/B application slots of a stock-firmware board (meter.appslots), or None
from meter.clock import EPOCH_2000_OFFSET, Uptime, ticks_add, ticks_diff


class NoWatchdog:
    """The watchdog of a board whose profile disables it: armed and fed, it does nothing."""

    def arm(self):
        pass

    def feed(self):
        pass

    def relax(self):
        pass


class Hardware:
    def __init__(self, board, i2c, ticks_us, ticks_ms, sleep_us, time, time_us, relay, flash_dir, sim=None,
                 sleep_ms=None, watchdog=None, random_bytes=None):
        self.board = board
        self.i2c = i2c
        self.ticks_us = ticks_us
        self.monotonic_s = Uptime(ticks_ms)
        self.sleep_us = sleep_us
        self.time = time
        self.time_us = time_us
        self.reset_cause = None  # why the board last restarted, when it was not a power-up: e.g. "watchdog"
        self.set_time = None  # the time sources (see above): set by open_hardware / sim.hardware
        self.ntp_time = None
        self.relay = relay
        self.flash_dir = ensure_dir(flash_dir)
        self.sim = sim  # the simulator's handles (clock, chip, scenario) when sim.hardware built it
        self.sleep_ms = sleep_ms
        self.watchdog = watchdog or NoWatchdog()
        self.random_bytes = random_bytes
        self.button = None
        self.load_control = None
        self.restart = None  # restart the board (a reboot command): machine.reset; the simulator's ends its run
        self.ota = None


class Output:
    """A relay or contactor on an output pin: value(1) closes it (the load is supplied), value(0) opens it,
    value() says which. The pin is driven at the board's active level: active_high false for a driver that
    closes the relay on a low pin. The pin is left alone until the first value(v) (meter.disconnect drives it
    to the stored state at boot: a disconnected meter's relay never closes for a moment)."""

    def __init__(self, pin, active_high=True):
        self.pin = pin
        self.active_high = active_high
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self.pin.init(self.pin.OUT, value=self._v if self.active_high else 1 - self._v)


class Button:
    """The customer's push-button on an input pin with a pull-up (active_low) or pull-down. Every edge runs
    the pin's interrupt handler, which only notes the time; a press is an edge to the active level after the
    pin rested DEBOUNCE_MS: contact bounce (a few ms of edges at the press and at the release) makes one press.
    pressed() is True once per press (the meter asks once per batch: the interrupt holds the press till then)."""

    DEBOUNCE_MS = 50

    def __init__(self, pin, active_low, ticks_ms):
        self.pin = pin
        self.active = 0 if active_low else 1
        self.ticks_ms = ticks_ms
        self._last = ticks_add(ticks_ms(), -self.DEBOUNCE_MS)  # at rest since boot
        self._press = False
        pin.irq(handler=self._edge, trigger=pin.IRQ_FALLING | pin.IRQ_RISING)

    def _edge(self, pin):
        t = self.ticks_ms()
        d = ticks_diff(t, self._last)
        quiet = not 0 <= d < self.DEBOUNCE_MS  # (negative: a rest longer than ticks_diff reaches, ~6 days)
        self._last = t
        if quiet and pin.value() == self.active:
            self._press = True

    def pressed(self):
        p = self._press
        self._press = False
        return p
def ensure_dir(path):
    import os
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists already
    return path


def open_hardware(board, flash_dir=None):
    """Build the Hardware of an ESP32 board profile (validated by meter.board)."""
    if board["mcu"] != "esp32":
        from meter.board import BoardError
        raise BoardError("mcu %r: no hardware to open here (the simulator builds its own: sim/hardware.py)"
                         % (board["mcu"],))
    import machine
    import time

    c = board["i2c"]
    i2c = machine.I2C(c["id"], scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]), freq=c["freq"])
    r = board["relay"]
    relay = Output(machine.Pin(r["pin"]), r.get("active_high", True))  # an input until meter.disconnect drives it

    def utc():
        return time.time() + EPOCH_2000_OFFSET  # ESP32 time.time() counts from 2000

    def utc_us():
        return time.time_ns() // 1000 + EPOCH_2000_OFFSET * 1000000  # a big int: called every few seconds only

    # On the ESP32 time.ticks_us() and ticks_ms() already wrap at 2^30, the period meter.clock assumes.
    hw = Hardware(board, i2c, time.ticks_us, time.ticks_ms, time.sleep_us, utc, utc_us, relay,
                  flash_dir or board["flash_dir"], sleep_ms=time.sleep_ms, watchdog=BoardWatchdog(board),
                  random_bytes=radio_random)
    hw.reset_cause = {machine.WDT_RESET: "watchdog", machine.SOFT_RESET: None}.get(machine.reset_cause())
    hw.restart = machine.reset  # a software reset: reset_cause() says SOFT_RESET at the next boot
    hw.set_time = set_rtc
    b = board.get("button")
    if b is not None:
        low = b.get("active_low", True)
        pin = machine.Pin(b["pin"], machine.Pin.IN, machine.Pin.PULL_UP if low else machine.Pin.PULL_DOWN)
        hw.button = Button(pin, low, time.ticks_ms)
    lc = board.get("load_control")
    if lc is not None:
        hw.load_control = Output(machine.Pin(lc["pin"]), lc.get("active_high", True))
    link = board.get("link")
    if link is not None and link.get("kind") == "wifi-tcp":
        hw.ntp_time = ntp_source(link.get("ntp") or "pool.ntp.org")
    hw.ota = esp_ota() or slot_ota()
    return hw


def reset_board():
    """Restart the board now (firmware/main.py, after a firmware on trial failed): machine.reset on a board; the
    Unix port's test board has machine.soft_reset only."""
    import machine

    (getattr(machine, "reset", None) or machine.soft_reset)()


def esp_ota():
    """EspOta when the firmware runs from an OTA app partition (a build with two: ESP32_GENERIC's OTA variant),
    else None: such a board cannot take a firmware image over the link."""
    from esp32 import Partition

    running = Partition(Partition.RUNNING)
    return EspOta(Partition) if running.info()[4].startswith("ota_") else None


def slot_ota(root="/"):
    """meter.appslots.AppSlots when firmware/main.py runs the application from an A/B slot (/app.slot names
    one), else None. Nothing is loaded on a board without slots."""
    import os

    try:
        os.stat(root.rstrip("/") + "/app.slot")
    except OSError:
        return None
    from meter.appslots import AppSlots

    return AppSlots.at(root)


class EspOta:
    """meter.fwupdate's view of an ESP32's OTA partitions (esp32.Partition). Rollback needs ESP-IDF's
    CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE: without it mark_valid raises OSError and the board never rolls back."""

    def __init__(self, partition):
        from meter.messages import FW_IMAGE

        self._P = partition
        self.format = FW_IMAGE  # the payload format it takes: a partition image

    def running(self):
        return self._P(self._P.RUNNING).info()[4]

    def next_update(self):
        return EspPartition(self._P(self._P.RUNNING).get_next_update())

    def partition(self, name):
        found = self._P.find(self._P.TYPE_APP, label=name)
        return EspPartition(found[0]) if found else None

    def set_boot(self, part):
        part.p.set_boot()

    def mark_valid(self):
        self._P.mark_app_valid_cancel_rollback()


class EspPartition:
    """One app partition as 4096-byte blocks: erase(block) (ioctl 6), write and read at an offset inside one."""

    def __init__(self, p):
        self.p = p
        info = p.info()
        self.name = info[4]
        self.size = info[3]

    def erase(self, block):
        self.p.ioctl(6, block)

    def write(self, block, offset, data):
        self.p.writeblocks(block, data, offset)  # with an offset: no erase (done above, per block)

    def read(self, block, offset, buf):
        self.p.readblocks(block, buf, offset)


class BoardWatchdog:
    """machine.WDT as the board profile's 'watchdog' section says (meter.board.watchdog_settings). arm() starts
    it (the meter does so as its loop starts: a first boot's key generation and restore come before);
    feed() is called by every meter cycle, never by a timer, which would keep feeding a hung loop. Once armed
    an ESP32's watchdog cannot be stopped, not even by a soft reset; relax() stretches its timeout when the
    meter is interrupted for the REPL (MicroPython's ESP32 port reconfigures on every WDT() call)."""

    RELAXED_MS = 3600000  # an hour at the REPL before the watchdog resets the board

    def __init__(self, board):
        from meter.board import watchdog_settings

        self.settings = watchdog_settings(board)
        self._wdt = None

    def arm(self):
        if self.settings["enabled"] and self._wdt is None:
            import machine

            self._wdt = machine.WDT(timeout=self.settings["timeout_ms"])

    def feed(self):
        w = self._wdt
        if w is not None:
            w.feed()

    def relax(self):
        if self._wdt is not None:
            import machine

            try:
                machine.WDT(timeout=self.RELAXED_MS).feed()
            except (OSError, ValueError):
                pass  # an older port that cannot reconfigure: the armed timeout stands


def radio_random(n):
    """n true-random bytes. ESP-IDF documents the ESP32 family's RNG as true-random only while the RF subsystem
    (Wi-Fi or Bluetooth) is on, or while the bootloader's entropy source is (docs/security.md), so the radio
    is turned on for the draw (WLAN.active(True) returns once Wi-Fi has started) and left as it was found."""
    import network
    import os

    wlan = network.WLAN(network.STA_IF)
    was_on = wlan.active()
    if not was_on:
        wlan.active(True)
    try:
        return os.urandom(n)
    finally:
        if not was_on:
            wlan.active(False)
def set_rtc(t):
    """The RTC reads UTC second t (Unix) from now on. It keeps counting across a soft reset and deep sleep; a
    power-up starts it at 2000-01-01 (meter.clock.clock_valid)."""
    import machine

    from meter.civil import time_tuple

    tm = time_tuple(t - EPOCH_2000_OFFSET)  # (not time.gmtime: its epoch depends on the port)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))  # weekday 1..7, subseconds


def ntp_source(host):
    """ntp_time() for a Wi-Fi board: UTC seconds from `host` (micropython-lib's ntptime, frozen into the
    ESP32 port), or None while Wi-Fi is down or no answer came. It blocks for the DNS lookup and up to a
    second for the answer: the meter asks every few hours (meter.app), and counts the cycles it missed."""
    def ntp_time():
        import network

        if not network.WLAN(network.STA_IF).isconnected():
            return None
        try:
            import ntptime

            ntptime.host = host
            return ntptime.time() + EPOCH_2000_OFFSET  # ntptime answers in the port's epoch: 2000 here
        except Exception:  # noqa: BLE001 - a timeout, DNS, no ntptime: no time this round
            return None

    return ntp_time


def open_transport(board, ticks_ms=None):
    """The link transport a board profile asks for (None without a 'link' section). On an ESP32: a UART, or
    Wi-Fi brought up here and a TCP client that waits for it; on the Unix port: TCP (a pty path is given to
    the simulator's runner instead)."""
    link = board.get("link")
    if link is None:
        return None
    from meter.transport import StreamTransport

    kind = link["kind"]
    if kind == "uart":
        from meter.pins import console_tx_rx

        if (link["tx"], link["rx"]) == console_tx_rx(board.get("chip", "esp32")):
            # the REPL's own port (meterkit device provision --serial): shared with the REPL, Ctrl-C off, and
            # the tools take it back with meter.console.ATTENTION; it runs at the console's baud rate
            from meter.console import Console

            return StreamTransport(Console, ticks_ms=ticks_ms, chunk=1100)
        import machine

        def open_uart():
            # timeout=0: reads return what has arrived; the link polls. rxbuf holds a whole frame.
            return machine.UART(link["id"], baudrate=link["baud"], tx=link["tx"], rx=link["rx"], timeout=0,
                                rxbuf=2048, txbuf=2048)

        return StreamTransport(open_uart, ticks_ms=ticks_ms, chunk=1100)
    if kind == "wifi-tcp":
        import network

        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(link["ssid"], link["password"])  # completes in the background; the link waits for it
        return _tcp(board, ticks_ms=ticks_ms, ready=wlan.isconnected)
    return _tcp(board, ticks_ms=ticks_ms)


def _tcp(board, **kw):
    """The TCP client of a board's link: with TLS (meter.tls) when the profile's link has a 'tls' section."""
    from meter.transport import TCPTransport, TLSTransport

    link = board["link"]
    if link.get("tls") is None:
        return TCPTransport(link["host"], link["port"], **kw)
    from meter.tls import client_wrap

    return TLSTransport(link["host"], link["port"], client_wrap(link["tls"], board["flash_dir"]), **kw)
