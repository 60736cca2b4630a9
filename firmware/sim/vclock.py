# Virtual clock for the simulator: time passes only when someone sleeps or the simulated I2C bus charges wire
# time, so a simulated day runs in seconds. Runs unchanged under MicroPython and CPython.
#
# now_us is an unbounded Python int (microseconds since the clock was created, plus start_us); ticks_us()
# wraps at 2^30 exactly like the ESP32's counter (meter.clock.TICKS_PERIOD). Called millions of times per
# simulated day, so every method is a line or two.
#
# Two clocks of UTC: the simulated world's true time (world_time: what an NTP server answers, what the fleet
# steps by) and the board's RTC (time, time_us: what the meter reads and sets). They agree unless the board
# profile's 'sim' section says otherwise: rtc "unset" (the RTC starts at 2000-01-01, as an ESP32's does at
# power-up) or rtc_offset_s (a clock that is off by that much).
from meter.clock import TICKS_MASK

DEFAULT_START_UNIX_S = 1793491200  # 2026-11-01 00:00:00 UTC (the unix-sim board profile uses the same)


class VirtualClock:
    def __init__(self, start_unix_s=DEFAULT_START_UNIX_S, start_us=0, rtc_unix_s=None):
        # start_us lets a test start the tick counter just before the 2^30 wrap; time() still starts at
        # start_unix_s. rtc_unix_s: what the RTC reads at creation, if not the true time.
        self.world_unix_s = start_unix_s
        self.start_unix_s = start_unix_s if rtc_unix_s is None else rtc_unix_s  # the RTC at _rtc0_us
        self.now_us = start_us
        self._t0_us = start_us
        self._rtc0_us = start_us

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
        """The RTC: UTC seconds since 1970 (an int, like time.time() on the ESP32 once hal adds the 2000 epoch)."""
        return self.start_unix_s + (self.now_us - self._rtc0_us) // 1000000

    def time_us(self):
        """The RTC in UTC microseconds since 1970, on the same timeline as ticks_us()."""
        return self.start_unix_s * 1000000 + self.now_us - self._rtc0_us

    def set_time(self, t):
        """Set the RTC: it reads UTC second t from this instant on (as machine.RTC().datetime does)."""
        self.start_unix_s = t
        self._rtc0_us = self.now_us

    def world_time(self):
        """The simulated world's true UTC second: what a time server answers (the fake NTP source)."""
        return self.world_unix_s + (self.now_us - self._t0_us) // 1000000

    def elapsed_us(self):
        """Microseconds since the clock was created."""
        return self.now_us - self._t0_us
