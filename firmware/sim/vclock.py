# Virtual clock for the simulator: time passes only when someone sleeps or the simulated I2C bus charges wire
# time, so a simulated day runs in seconds. Runs unchanged under MicroPython and CPython.
#
# now_us is an unbounded Python int (microseconds since the clock was created, plus start_us); ticks_us()
# wraps at 2^30 exactly like the ESP32's counter (meter.clock.TICKS_PERIOD). Called millions of times per
# simulated day, so every method is a line or two.
from meter.clock import TICKS_MASK

DEFAULT_START_UNIX_S = 1793491200  # 2026-11-01 00:00:00 UTC (the unix-sim board profile uses the same)


class VirtualClock:
    def __init__(self, start_unix_s=DEFAULT_START_UNIX_S, start_us=0):
        # start_us lets a test start the tick counter just before the 2^30 wrap; time() still starts at
        # start_unix_s.
        self.start_unix_s = start_unix_s
        self.now_us = start_us
        self._t0_us = start_us

    def ticks_us(self):
        return self.now_us & TICKS_MASK

    def ticks_ms(self):
        return (self.now_us // 1000) & TICKS_MASK

    def sleep_us(self, n):
        if n > 0:
            self.now_us += n

    def sleep_ms(self, n):
        if n > 0:
            self.now_us += n * 1000

    def advance_us(self, n):
        if n > 0:
            self.now_us += n

    def time(self):
        """UTC seconds since 1970 (an int, like time.time() on the ESP32 once hal adds the 2000 epoch)."""
        return self.start_unix_s + (self.now_us - self._t0_us) // 1000000

    def time_us(self):
        """UTC microseconds since 1970, on the same timeline as ticks_us()."""
        return self.start_unix_s * 1000000 + self.now_us - self._t0_us

    def elapsed_us(self):
        """Microseconds since the clock was created."""
        return self.now_us - self._t0_us
