# Firmware test runner: the same file runs on the Unix port (under pytest or alone) and on a board.
#
#   micropython tests/firmware/mptest.py                  run every tests/firmware/test_*.py
#   micropython tests/firmware/mptest.py test_ina219       one module
#   micropython tests/firmware/mptest.py test_ina219:test_reset,test_absent
#   ... --json                                             one machine-readable line per test (for pytest)
#
# A test is a module-level function named test_*; it passes unless it raises. Ends with "N passed, N failed".
import sys
import time

try:
    import io
except ImportError:
    io = None

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
if _here not in sys.path:
    sys.path.insert(0, _here)
for _p in (_here + "/../../firmware", "/firmware"):
    if _p not in sys.path:
        sys.path.append(_p)

MARK = "@@MPTEST "
MP32 = sys.platform == "mp32"  # the 32-bit interpreter of the tests (build/mp32, docs/mp32.md)
NOT_MP32 = "not on mp32: "  # how a not_mp32 test's skip reason begins (the pytest plugin counts them)


class SkipTest(Exception):
    pass


_not_mp32 = {}
# why a test compares nothing in mp32: shared by the tests that check the meter against the simulator
SIM_TRUTH = ("compares with the simulator's ground truth, exact only in double precision (mp32 has the "
             "ESP32's single floats; sim/ never runs on a board)")


def not_mp32(reason):
    """Decorator for a test that the 32-bit interpreter cannot run, and why (e.g. it needs an extmod module
    that MicroPython's core does not have). It runs as usual everywhere else; on mp32 it is skipped with the
    reason, and the pytest plugin lists and counts it."""
    def mark(fn):
        _not_mp32[fn] = reason
        return fn
    return mark


def eq(got, want, what=""):
    """assert got == want, with both values in the message (MicroPython asserts carry no expression text)."""
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what or "eq", got, want))


def _cmp(ok, got, rel, want, what, name):
    if not ok:
        raise AssertionError("%s: got %r, want %s %r" % (what or name, got, rel, want))


def ne(got, other, what=""):
    _cmp(got != other, got, "!=", other, what, "ne")


def ge(got, low, what=""):
    _cmp(got >= low, got, ">=", low, what, "ge")


def gt(got, low, what=""):
    _cmp(got > low, got, ">", low, what, "gt")


def le(got, high, what=""):
    _cmp(got <= high, got, "<=", high, what, "le")


def lt(got, high, what=""):
    _cmp(got < high, got, "<", high, what, "lt")


def contains(item, container, what=""):
    """assert item in container (a substring in a string too), showing both."""
    if item not in container:
        raise AssertionError("%s: %r not in %r" % (what or "contains", item, container))


def same(got, want, what=""):
    """assert got is want."""
    _cmp(got is want, got, "the very object", want, what, "same")


def notnone(got, what=""):
    _cmp(got is not None, got, "not", None, what, "notnone")


def near(got, want, tol, what=""):
    if abs(got - want) > tol:
        raise AssertionError("%s: got %r, want %r +/- %r" % (what or "near", got, want, tol))


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception it raised; fail if it raised nothing or something else."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc.__name__))


_dirs = [0, None, []]  # count, this run's token, the directories made


def fresh_dir(tag):
    """An empty directory under $TMPDIR (or /tmp) for one test (a meter's flash), unique to this run: the
    name carries a random token, so runs side by side (several checkouts, pytest-xdist) never share one.
    run() removes them at its end."""
    if _dirs[1] is None:
        _dirs[1] = _token()
    _dirs[0] += 1
    d = "%s/meterkit-%s-%s-%d" % (_tmp_base(), tag, _dirs[1], _dirs[0])
    rmtree(d)
    _dirs[2].append(d)
    return d


def _token():
    try:
        import binascii
        import os
        return binascii.hexlify(os.urandom(4)).decode()
    except (ImportError, AttributeError):
        return "%x" % (time.ticks_us() & 0xFFFFFF)


def _tmp_base():
    return (_getenv("TMPDIR") or "/tmp").rstrip("/")


def rmtree(d):
    """Remove directory d and everything in it; a missing d is fine."""
    import os
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    for e in entries:
        p = d + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


class TempDir:
    """`with TempDir("tag") as d:` a fresh, randomly named directory under $TMPDIR (or /tmp), removed with its
    files on exit. make=False leaves creating it to the code under test."""

    def __init__(self, tag, make=True):
        self.tag = tag
        self.make = make

    def __enter__(self):
        import binascii
        import os
        self.path = "%s/mk_%s_%s" % (_tmp_base(), self.tag, binascii.hexlify(os.urandom(6)).decode())
        if self.make:
            os.mkdir(self.path)
        return self.path

    def __exit__(self, *exc):
        rmtree(self.path)
        return False


def _traceback(e):
    if io is not None and hasattr(sys, "print_exception"):
        buf = io.StringIO()
        sys.print_exception(e, buf)
        return buf.getvalue()
    return repr(e)


def _getenv(name):
    try:
        import os
        return os.getenv(name)
    except (ImportError, AttributeError):
        return None


def _list_modules():
    import os
    return sorted(n[:-3] for n in os.listdir(_here) if n.startswith("test_") and n.endswith(".py"))


def _quote(s):
    # JSON string without depending on the json module's presence on small builds.
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def run(specs, as_json=False):
    # The tests import `mptest`, a second copy of this file when it runs as __main__: its SkipTest and its
    # not_mp32 marks are the ones that count.
    import mptest
    passed = failed = skipped = 0
    for spec in specs:
        modname, _, names = spec.partition(":")
        wanted = names.split(",") if names else None
        try:
            mod = __import__(modname)
        except Exception as e:  # noqa: BLE001 - an import failure fails every test of the module
            failed += 1
            tb = _traceback(e)
            if as_json:
                print(MARK + '{"mod": %s, "test": "<import>", "ok": 0, "ms": 0, "tb": %s}'
                      % (_quote(modname), _quote(tb)))
            else:
                print("FAIL %s (import)\n%s" % (modname, tb))
            continue
        tests = wanted or sorted(n for n in dir(mod) if n.startswith("test_"))
        for name in tests:
            fn = getattr(mod, name, None)
            t0 = time.ticks_ms()
            status, tb = 1, ""
            if fn is None:
                status, tb = 0, "no such test: %s.%s" % (modname, name)
            elif MP32 and fn in mptest._not_mp32:
                status, tb = 2, NOT_MP32 + mptest._not_mp32[fn]
            else:
                try:
                    fn()
                except mptest.SkipTest as e:
                    status, tb = 2, str(e)
                except Exception as e:  # noqa: BLE001 - a test fails by raising anything
                    status, tb = 0, _traceback(e)
            ms = time.ticks_diff(time.ticks_ms(), t0)
            if status == 1:
                passed += 1
            elif status == 2:
                skipped += 1
            else:
                failed += 1
            if as_json:
                print(MARK + '{"mod": %s, "test": %s, "ok": %d, "ms": %d, "tb": %s}'
                      % (_quote(modname), _quote(name), status, ms, _quote(tb)))
            else:
                print("%s %s.%s (%d ms)" % (("FAIL", "ok", "skip")[status], modname, name, ms))
                if status == 0:
                    print(tb)
            try:
                import gc
                gc.collect()
            except ImportError:
                pass
    while mptest._dirs[2]:
        rmtree(mptest._dirs[2].pop())
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return failed


def main(argv):
    as_json = "--json" in argv
    specs = [a for a in argv if not a.startswith("--")]
    only = _getenv("MPTEST_ONLY")
    if only and len(specs) == 1 and ":" not in specs[0]:
        specs = [specs[0] + ":" + only]  # the pytest plugin's selection (see mpytest.py)
    return run(specs or _list_modules(), as_json)


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
