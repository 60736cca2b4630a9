# meter/clock.py: tick arithmetic modulo 2^30 that never leaves the 31-bit small ints of a 32-bit port, the
# monotonic seconds of Uptime across the 2^30 wrap of ticks_ms, and its guard against a silence too long to
# tell apart from a wrap.
from array import array

import micropython

from meter.clock import TICKS_MASK, TICKS_PERIOD, Uptime, ticks_add, ticks_diff
from mptest import eq, lt

H = TICKS_PERIOD // 2
# ticks at and around the edges: 0, the half period, the wrap
EDGES = (0, 1, 2, 4321, H - 2, H - 1, H, H + 1, H + 2, TICKS_MASK - 68632, TICKS_MASK - 1, TICKS_MASK)


def test_tick_arithmetic_is_modulo_2_30_without_big_ints():
    # Every pair of edge ticks, under heap_lock: on a 32-bit port (mp32, an ESP32) any intermediate past
    # 2^30 - 1 would be a heap int and raise MemoryError here. The results go into a preallocated array.
    e = EDGES
    n = len(e)
    out = array("i", bytes(4 * 3 * n * n))
    micropython.heap_lock()
    try:
        i = k = 0
        while i < n:
            j = 0
            while j < n:
                out[k] = ticks_diff(e[i], e[j])
                out[k + 1] = ticks_add(e[i], e[j])
                out[k + 2] = ticks_add(e[i], -e[j])
                k += 3
                j += 1
            i += 1
    finally:
        micropython.heap_unlock()
    k = 0
    for a in e:
        for b in e:
            what = "a=%d b=%d" % (a, b)
            eq(out[k], (a - b + H) % TICKS_PERIOD - H, what + ": ticks_diff, signed, in -2^29 .. 2^29 - 1")
            eq(out[k + 1], (a + b) % TICKS_PERIOD, what + ": ticks_add")
            eq(out[k + 2], (a - b) % TICKS_PERIOD, what + ": ticks_add of a negative delta")
            k += 3


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
