# Hardware abstraction: the ONLY module that imports machine / esp32 / network. Hardware only: the board
# profile's schema is meter.board, the simulated hardware of the Unix port sim.hardware (never on a board).
#
# Everything else in meter/ receives its hardware from here as plain objects:
#   i2c          an object with readfrom_mem_into / writeto_mem (machine.I2C or sim.i2c.SimI2C)
#   ticks_us     a microsecond counter wrapping at 2^30 (meter.clock.TICKS_PERIOD)
#   monotonic_s  seconds since boot (meter.clock.Uptime over ticks_ms): never set, never jumps
#   sleep_us     blocking microsecond sleep
#   time         UTC seconds since 1970 (the ESP32's own epoch is 2000; converted here, once)
#   time_us      UTC microseconds since 1970, from the same clock: where a boundary instant falls in ticks
#   relay        an object with on() / off() / value()
#   flash_dir    a directory for persistent state
from meter.clock import EPOCH_2000_OFFSET, Uptime


class Hardware:
    def __init__(self, board, i2c, ticks_us, ticks_ms, sleep_us, time, time_us, relay, flash_dir, sim=None):
        self.board = board
        self.i2c = i2c
        self.ticks_us = ticks_us
        self.monotonic_s = Uptime(ticks_ms)
        self.sleep_us = sleep_us
        self.time = time
        self.time_us = time_us
        self.reset_cause = None  # why the board last restarted, when it was not a power-up: e.g. "watchdog"
        self.relay = relay
        self.flash_dir = ensure_dir(flash_dir)
        self.sim = sim  # the simulator's handles (clock, chip, scenario) when sim.hardware built it


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
    relay = machine.Pin(board["relay"]["pin"], machine.Pin.OUT)

    def utc():
        return time.time() + EPOCH_2000_OFFSET  # ESP32 time.time() counts from 2000

    def utc_us():
        return time.time_ns() // 1000 + EPOCH_2000_OFFSET * 1000000  # a big int: called every few seconds only

    # On the ESP32 time.ticks_us() and ticks_ms() already wrap at 2^30, the period meter.clock assumes.
    hw = Hardware(board, i2c, time.ticks_us, time.ticks_ms, time.sleep_us, utc, utc_us, relay,
                  flash_dir or board["flash_dir"])
    hw.reset_cause = {machine.WDT_RESET: "watchdog", machine.SOFT_RESET: None}.get(machine.reset_cause())
    return hw


def open_transport(board, ticks_ms=None):
    """The link transport a board profile asks for (None without a 'link' section). On an ESP32: a UART, or
    Wi-Fi brought up here and a TCP client that waits for it; on the Unix port: TCP (a pty path is given to
    the simulator's runner instead)."""
    link = board.get("link")
    if link is None:
        return None
    from meter.transport import StreamTransport, TCPTransport

    kind = link["kind"]
    if kind == "uart":
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
        return TCPTransport(link["host"], link["port"], ticks_ms=ticks_ms, ready=wlan.isconnected)
    return TCPTransport(link["host"], link["port"], ticks_ms=ticks_ms)
