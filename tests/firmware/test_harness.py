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
