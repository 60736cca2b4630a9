# meter/clock.py: the monotonic seconds of Uptime across the 2^30 wrap of ticks_ms, and its guard against a
# silence too long to tell apart from a wrap.
from meter.clock import TICKS_MASK, Uptime
from mptest import eq, lt


class Ticks:
    def __init__(self, ms):
        self.ms = ms

    def __call__(self):
        return self.ms & TICKS_MASK


def test_uptime_counts_seconds_across_the_wrap():
    t = Ticks(TICKS_MASK - 2500)  # 2.5 s before the millisecond counter wraps (~12.4 days of uptime)
    up = Uptime(t)
    eq(up(), 0, "starts at 0")
    for _ in range(10):
        t.ms += 999  # an odd step: the milliseconds past the second carry over
        up()
    eq(up(), 9, "9.99 s, the wrap included")
    t.ms += 10
    eq(up(), 10, "10.000 s")
    for _ in range(3):
        t.ms += 5 * 86400 * 1000  # three calls five days apart: 15 days, past one more wrap
        up()
    eq(up(), 10 + 15 * 86400, "days")
    lt(up.s, 1 << 30, "a small int")


def test_uptime_never_goes_back():
    t = Ticks(1000)
    up = Uptime(t)
    t.ms += 5000
    eq(up(), 5, "5 s")
    t.ms += 7 * 86400 * 1000  # a week without a call: ambiguous across the wrap, counted as nothing
    eq(up(), 5, "no time rather than time going backwards")
    t.ms += 2000
    eq(up(), 7, "counting goes on")
