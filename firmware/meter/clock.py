# Time keeping shared by the whole meter. Pure: runs under CPython and MicroPython.
#
# The ESP32's ticks_us() wraps at 2^30 (about 17.9 minutes). The Unix port's own counter wraps at 2^62, so
# the meter never uses time.ticks_* directly: a tick source is injected, and differences go through here.
#
# On the ESP32 a small int has 31 bits: 2^30 - 1 is the largest, and a larger intermediate is a heap int,
# which the hot loop must never make (it raises MemoryError under heap_lock). So the tick arithmetic below
# never computes a value outside -2^30 .. 2^30 - 1 from ticks in 0 .. 2^30 - 1, and never touches
# TICKS_PERIOD itself (2^30 is a heap int there).

TICKS_PERIOD = 1 << 30
TICKS_MASK = 0x3FFFFFFF  # TICKS_PERIOD - 1, written out: the largest small int on a 32-bit port
_TICKS_HALF = 0x20000000

# Seconds between the Unix epoch (1970) and the ESP32/MicroPython embedded epoch (2000-01-01 UTC).
EPOCH_2000_OFFSET = 946684800

# A clock that reads before 2025-01-01 00:00 UTC was never set: an ESP32's RTC starts at 2000-01-01 at
# power-up, and keeps counting across a soft reset or deep sleep once it was set (docs/hardware.md).
CLOCK_VALID_FROM = 1735689600
# ... and one that reads 2100-01-01 or later is no time either: every time the meter stores or sends is a uint32
# (until 2106), and boundaries planned from the clock (billing periods, a month ahead) must fit one too.
CLOCK_VALID_UNTIL = 4102444800
FREE_SHIFT_S = 900  # a set clock moves by at most this without a force flag (the DLMS clock object's rule)


def clock_valid(t):
    """Whether UTC second t can be a set clock's time (rather than an RTC counting from its power-up, or one
    set beyond what the wire carries)."""
    return CLOCK_VALID_FROM <= t < CLOCK_VALID_UNTIL


def ticks_diff(a, b):
    """Signed a - b for tick values modulo 2^30, in -2^29 .. 2^29 - 1 (valid while |a - b| < 2^29 µs, about
    8.9 minutes)."""
    d = (a - b) & TICKS_MASK  # a - b is within +-2^30 for ticks
    return d - _TICKS_HALF - _TICKS_HALF if d >= _TICKS_HALF else d


def next_multiple(t, period):
    """The first multiple of `period` after t: readings, profile rows and demand periods align to the UTC clock."""
    return (t // period + 1) * period


def default_ticks_ms():
    """time.ticks_ms where there is one (MicroPython), else milliseconds of time.monotonic (CPython)."""
    import time
    return getattr(time, "ticks_ms", None) or (lambda: int(time.monotonic() * 1000))


def ticks_add(t, delta):
    """Tick t moved by delta (either sign) modulo 2^30."""
    d = delta & TICKS_MASK
    room = TICKS_MASK - d  # t + d wraps when t is beyond this
    t &= TICKS_MASK
    return t - room - 1 if t > room else t + d


class Uptime:
    """Seconds since boot from a millisecond counter that wraps at 2^30 (the ESP32's ticks_ms, ~12.4 days):
    a monotonic clock for what must not follow the wall clock (the checkpoint interval). Every value stays a
    small int. It must be called at least every 2^29 ms (~6 days; every batch does): a longer silence would be
    ambiguous, and counts as no time at all rather than as time going backwards."""

    def __init__(self, ticks_ms):
        self.ticks_ms = ticks_ms
        self._last = ticks_ms()
        self._ms = 0  # milliseconds past the last whole second
        self.s = 0

    def __call__(self):
        now = self.ticks_ms()
        d = ticks_diff(now, self._last)
        self._last = now
        if d > 0:
            ms = self._ms + d
            self.s += ms // 1000
            self._ms = ms % 1000
        return self.s


class TickMap:
    """Where a UTC instant falls on the tick counter: an anchor (tick, UTC µs) read back to back from the same
    clock, refreshed by the caller every few seconds. tick_of(t) is exact in the simulator and within the
    clock's own jitter on a board; it refuses instants more than HORIZON_US away from the anchor, where a
    2^30 tick counter could not tell them apart from others."""

    HORIZON_US = 1 << 28  # about 4.5 minutes: well inside ticks_diff's +-2^29 us

    def __init__(self):
        self.tick = 0
        self.utc_us = None

    def anchor(self, tick, utc_us):
        self.tick = tick & TICKS_MASK
        self.utc_us = utc_us

    def tick_of(self, t):
        """Tick at which UTC second t begins, or None when there is no anchor or t is beyond the horizon."""
        if self.utc_us is None:
            return None
        d = t * 1000000 - self.utc_us
        if not -self.HORIZON_US < d < self.HORIZON_US:
            return None
        return ticks_add(self.tick, d)
