# Virtual clock for the simulator: time passes only when someone sleeps or the simulated I2C bus charges wire
# time, so a simulated day runs in seconds. Runs unchanged under MicroPython and CPython.
#
# now_us is an unbounded Python int (microseconds since the clock was created, plus start_us); ticks_us()
# wraps at 2^30 exactly like the ESP32's counter (meter.clock.TICKS_PERIOD). Called millions of times per
# simulated day, so every method is a line or two.
#
# Where the time goes, as an ESP32 would spend it (the CPU-duty proxy of docs/performance.md): sleep_us is a
# busy-wait there (busy_us); sleep_ms blocks the task tick by tick while a whole FreeRTOS tick still fits and
# busy-waits the rest (idle_us, busy_us), as MicroPython's ports/esp32/mphalport.c mp_hal_delay_ms does. The
# tick is tick_us (ESP-IDF's default CONFIG_FREERTOS_HZ is 100: 10 ms). The I2C bus's wire time is neither.
#
# Two clocks of UTC: the simulated world's true time (world_time: what an NTP server answers, what the fleet
# steps by) and the board's RTC (time, time_us: what the meter reads and sets). They agree unless the board
# profile's 'sim' section says otherwise: rtc "unset" (the RTC starts at 2000-01-01, as an ESP32's does at
# power-up) or rtc_offset_s (a clock that is off by that much).
from meter.clock import TICKS_MASK

DEFAULT_START_UNIX_S = 1793491200  # 2026-11-01 00:00:00 UTC (the unix-sim board profile uses the same)


class VirtualClock:
    def __init__(self, start_unix_s=DEFAULT_START_UNIX_S, start_us=0, tick_us=10000, rtc_unix_s=None):
        # start_us lets a test start the tick counter just before the 2^30 wrap; time() still starts at
        # start_unix_s. rtc_unix_s: what the RTC reads at creation, if not the true time.
        self.world_unix_s = start_unix_s
        self.start_unix_s = start_unix_s if rtc_unix_s is None else rtc_unix_s  # the RTC at _rtc0_us
        self.now_us = start_us
        self._t0_us = start_us
        self._rtc0_us = start_us
        self.tick_us = tick_us
        self.busy_us = 0
        self.idle_us = 0

    def ticks_us(self):
        return self.now_us & TICKS_MASK

    def ticks_ms(self):
        return (self.now_us // 1000) & TICKS_MASK

    def sleep_us(self, n):
        if n > 0:
            self.now_us += n
            self.busy_us += n

    def sleep_ms(self, n):
        if n > 0:
            t = self.now_us
            end = t + n * 1000
            tick = self.tick_us
            if t + tick < end:  # blocks until the first tick from which a whole tick no longer fits
                b = (end - 1) // tick * tick
                self.idle_us += b - t
                t = b
            self.busy_us += end - t
            self.now_us = end

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


class PacedClock(VirtualClock):
    """A virtual clock whose sleeps also take real time, divided by `speed`, spent as an ESP32 would: sleep_us
    and the busy tail of sleep_ms spin on the real clock, the idle part of sleep_ms sleeps in the OS. The
    process's CPU time over its wall time is then the CPU duty that the meter's waiting costs (the
    measurement of docs/performance.md). Unix port only (real time.ticks_us / sleep_us)."""

    def __init__(self, speed, **kw):
        VirtualClock.__init__(self, **kw)
        self.speed = speed

    def _spin(self, us):
        import time

        t0 = time.ticks_us()
        n = int(us / self.speed)
        while time.ticks_diff(time.ticks_us(), t0) < n:
            pass

    def sleep_us(self, n):
        VirtualClock.sleep_us(self, n)
        if n > 0:
            self._spin(n)

    def sleep_ms(self, n):
        import time

        idle, busy = self.idle_us, self.busy_us
        VirtualClock.sleep_ms(self, n)
        if self.idle_us > idle:
            time.sleep_us(int((self.idle_us - idle) / self.speed))
        self._spin(self.busy_us - busy)
