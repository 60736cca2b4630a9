# Proves the harness: these run in MicroPython, not CPython.
import sys
from mptest import eq, raises


def test_runs_in_micropython():
    eq(sys.implementation.name, "micropython", "interpreter")


def test_viper_available():
    import micropython

    @micropython.viper
    def twice(x: int) -> int:
        return x * 2

    eq(twice(21), 42, "viper")


def test_raises_helper():
    e = raises(ValueError, int, "x")
    assert isinstance(e, ValueError)


def test_number_model_of_the_interpreter():
    # mp32 must be what the 32-bit suite claims (docs/mp32.md): an ESP32's 31-bit small ints (2^30 - 1 is the
    # largest; one more is a heap int, refused under heap_lock), single floats, 32-bit viper words, and the
    # meter loaded from .mpy files compiled for x86. The Unix port: 63-bit small ints and double floats.
    import micropython
    import meter.metrology

    def plus_one(x):
        micropython.heap_lock()
        try:
            x += 1
            return True
        except MemoryError:
            return False
        finally:
            micropython.heap_unlock()

    @micropython.viper
    def wraps(x: int) -> int:
        return x * 65536 * 65536 + 7  # x * 2^32 + 7: 7 in a 32-bit word

    big = (1 << 30) - 1
    eq(plus_one(big - 1), True, "2^30 - 1 is a small int everywhere")
    if sys.platform == "mp32":
        eq(plus_one(big), False, "2^30 is a heap int (31-bit small ints)")
        eq(1.0 + 2.0 ** -24 == 1.0, True, "single-precision floats (24-bit mantissa)")
        eq(wraps(3), 7, "32-bit viper words")
        eq(meter.metrology.__file__.endswith(".mpy"), True, "the meter from .mpy (mpy-cross -march=x86)")
    else:
        eq(plus_one(big), True, "2^30 is a small int on the 64-bit Unix port")
        eq(1.0 + 2.0 ** -24 == 1.0, False, "double-precision floats")
        eq(wraps(3), 3 * (1 << 32) + 7, "64-bit viper words")
