# Time keeping shared by the whole meter. Pure: runs under CPython and MicroPython.
#
# The ESP32's ticks_us() wraps at 2^30 (about 17.9 minutes). The Unix port's own counter wraps at 2^62, so
# the meter never uses time.ticks_* directly: a tick source is injected, and differences go through here.

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD >> 1

# Seconds between the Unix epoch (1970) and the ESP32/MicroPython embedded epoch (2000-01-01 UTC).
EPOCH_2000_OFFSET = 946684800


def ticks_diff(a, b):
    """Signed a - b for tick values modulo 2^30 (valid while |a - b| < 2^29 µs, about 8.9 minutes)."""
    return ((a - b + _TICKS_HALF) & TICKS_MASK) - _TICKS_HALF


def ticks_add(t, delta):
    return (t + delta) & TICKS_MASK
