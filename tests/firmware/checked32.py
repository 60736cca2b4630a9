# A 32-bit checker for the metrology kernel's pure twin, shared by the firmware test (run inside MicroPython)
# and the host property test (CPython): every arithmetic result must fit a signed 32-bit machine word, which is
# what an ESP32 viper int is. (The x86-64 Unix port's viper words are 64-bit: agreement alone proves nothing.)

I32_MIN = -(1 << 31)
I32_END = 1 << 31


class Chk:
    """Wraps an int; each operation checks that its result is inside [-2^31, 2^31)."""

    def __init__(self, v):
        if not I32_MIN <= v < I32_END:
            raise AssertionError("32-bit overflow: %d" % v)
        self.v = v

    def __add__(self, o):
        return Chk(self.v + _v(o))

    def __radd__(self, o):
        return Chk(o + self.v)

    def __sub__(self, o):
        return Chk(self.v - _v(o))

    def __rsub__(self, o):
        return Chk(o - self.v)

    def __mul__(self, o):
        return Chk(self.v * _v(o))

    def __rmul__(self, o):
        return Chk(o * self.v)

    def __and__(self, o):
        return Chk(self.v & _v(o))

    def __rshift__(self, o):
        return Chk(self.v >> _v(o))

    def __floordiv__(self, o):
        return Chk(self.v // _v(o))

    def __neg__(self):
        return Chk(-self.v)

    def __lt__(self, o):
        return self.v < _v(o)

    def __gt__(self, o):
        return self.v > _v(o)

    def __bool__(self):
        return self.v != 0


def _v(o):
    return o.v if isinstance(o, Chk) else o


class ChkSeq:
    """An array seen through Chk: reads give checked ints, writes must be 32-bit values."""

    def __init__(self, arr):
        self.arr = arr

    def __getitem__(self, i):
        return Chk(self.arr[i])

    def __setitem__(self, i, v):
        self.arr[i] = Chk(_v(v)).v
