# Energy registers (meter/registers.py), run inside MicroPython.
# Test names are kept short: the harness passes every selected name in one argv element, and the Unix
# port aborts ("FATAL: uncaught NLR") on an argument of 256 characters or more.
import random
import struct

from mptest import eq, raises
from meter.registers import (
    EXPORT, FORMAT_VERSION, IMPORT, MAX_TARIFFS, UWH_PER_WH, Registers, obis, obis_table, parse_obis,
)

MPTEST_HEAP = "96K"  # an ESP32 leaves about this much heap to the application


def _random_registers(tariffs, steps, seed):
    """Registers fed `steps` random additions; returns (registers, exact µWh per direction, per tariff)."""
    rng = random.Random(seed) if hasattr(random, "Random") else None
    if rng is None:
        random.seed(seed)
        rng = random
    r = Registers(tariffs)
    fed = [[0] * (tariffs + 1), [0] * (tariffs + 1)]
    for _ in range(steps):
        t = rng.randint(1, tariffs)
        imp = rng.getrandbits(24) if rng.getrandbits(1) else rng.getrandbits(10)
        exp = rng.getrandbits(20) if rng.getrandbits(2) == 0 else 0
        r.add(imp, exp, t)
        fed[0][0] += imp
        fed[0][t] += imp
        fed[1][0] += exp
        fed[1][t] += exp
    return r, fed


def test_zero():
    r = Registers(3)
    for code in obis_table(3):
        eq(r.get(code), 0, code)
    eq(r.residual_uwh("import"), 0, "import residual")
    eq(r.residual_uwh("export"), 0, "export residual")
    eq(r.total_uwh(), 0, "metered")


def test_carry():
    r = Registers()
    r.add(999999, 0)
    eq(r.get("1.8.0"), 0, "below one Wh stays in the residual")
    eq(r.residual_uwh("import"), 999999, "residual")
    r.add(2, 0)
    eq(r.get("1.8.0"), 1, "Wh after carry")
    eq(r.residual_uwh("import"), 1, "residual after carry")
    eq(r.total_uwh("import"), 999999 + 2, "nothing lost")
    eq(r.get("2.8.0"), 0, "export untouched")


def test_big_add():
    r = Registers()
    big = (1 << 40) + 123457  # far beyond the ESP32's 31-bit small ints: a heap int, which is fine here
    r.add(big, big + 1)
    eq(r.get("1.8.0"), big // UWH_PER_WH, "import Wh")
    eq(r.residual_uwh("import"), big % UWH_PER_WH, "import residual")
    eq(r.get("2.8.0"), (big + 1) // UWH_PER_WH, "export Wh")
    eq(r.residual_uwh("export"), (big + 1) % UWH_PER_WH, "export residual")


def test_exact():
    r, fed = _random_registers(1, 3000, 7)
    for kind, k in (("import", IMPORT), ("export", EXPORT)):
        eq(r.total_uwh(kind), fed[k][0], kind + " total µWh")
        eq(r.wh(kind), fed[k][0] // UWH_PER_WH, kind + " Wh")
        eq(r.residual_uwh(kind), fed[k][0] % UWH_PER_WH, kind + " residual")
        assert 0 <= r.residual_uwh(kind) < UWH_PER_WH, "residual range"
    eq(r.total_uwh(), fed[0][0] + fed[1][0], "metered = import + export")
    eq(r.total_uwh(), r.total_uwh("import") + r.total_uwh("export"), "total_uwh() without a kind: import + export")


def test_reject():
    r = Registers(2)
    raises(ValueError, r.add, -1, 0)
    raises(ValueError, r.add, 0, -5)
    raises(TypeError, r.add, 1.5, 0)
    raises(TypeError, r.add, 0, "3")
    raises(ValueError, r.add, 1, 0, 0)
    raises(ValueError, r.add, 1, 0, 3)
    eq(r.total_uwh(), 0, "a rejected add changes nothing")
    raises(ValueError, Registers, 0)
    raises(ValueError, Registers, MAX_TARIFFS + 1)


def test_tariff_sum():
    for tariffs in (1, 2, 4):
        r, fed = _random_registers(tariffs, 2000, tariffs)
        for k in (IMPORT, EXPORT):
            parts = sum(r.wh(k, t) for t in range(1, tariffs + 1))
            eq(parts, r.wh(k), "sum of tariffs, kind %d, %d tariffs" % (k, tariffs))
            eq(r.total_uwh(k), fed[k][0], "total_uwh is exact")
            # each tariff keeps its own residual: the total lags floor(all energy) by less than N Wh
            lag = fed[k][0] // UWH_PER_WH - r.wh(k)
            assert 0 <= lag < tariffs, "total lags by %d Wh with %d tariffs" % (lag, tariffs)


def test_tariff_exact():
    # Each tariff register is exactly floor(energy metered under it): a switch moves nothing between tariffs.
    r = Registers(3)
    random.seed(11)
    fed = [[0, 0, 0, 0], [0, 0, 0, 0]]
    t = 1
    for _ in range(1500):
        if random.getrandbits(3) == 0:
            t = random.randint(1, 3)
        e = random.getrandbits(19)
        x = random.getrandbits(17)
        r.add(e, x, t)
        fed[0][t] += e
        fed[1][t] += x
    for k in (IMPORT, EXPORT):
        for tt in (1, 2, 3):
            eq(r.wh(k, tt), fed[k][tt] // UWH_PER_WH, "tariff %d Wh" % tt)
            eq(r.residual_uwh(k, tt), fed[k][tt] % UWH_PER_WH, "tariff %d residual" % tt)
            eq(r.tariff_uwh(k, tt), fed[k][tt], "tariff %d exact" % tt)


def test_tariff_route():
    r = Registers(2)
    half = UWH_PER_WH // 2 + 1
    r.add(half, 0, 1)
    r.add(half, 0, 2)
    eq(r.get("1.8.1"), 0, "tariff 1 has not completed a Wh")
    eq(r.get("1.8.2"), 0, "nor has tariff 2: the energy before the switch stays with tariff 1")
    eq(r.get("1.8.0"), 0, "total = sum of the tariff registers")
    eq(r.residual_uwh("import"), 2 * half, "residual (sum)")
    r.add(UWH_PER_WH - half, 0, 1)
    eq(r.get("1.8.1"), 1, "tariff 1 completes its own Wh")
    eq(r.total_uwh("import"), 2 * half + UWH_PER_WH - half, "exact total")


def test_reads_format_1():
    # firmware before per-tariff residuals wrote version 1: one residual per direction (now tariff 1's)
    data = struct.pack("<BBII2Q2Q", 1, 2, 123, 456, 7, 8, 9, 10)
    r = Registers.from_bytes(data)
    eq((r.wh("import", 1), r.wh("import", 2), r.wh("export", 1), r.wh("export", 2)), (7, 8, 9, 10), "Wh")
    eq((r.residual_uwh("import", 1), r.residual_uwh("import", 2)), (123, 0), "import residuals")
    eq((r.residual_uwh("export", 1), r.residual_uwh("export", 2)), (456, 0), "export residuals")
    eq(Registers.from_bytes(r.to_bytes()), r, "rewritten as format %d" % FORMAT_VERSION)
    e = raises(ValueError, Registers.from_bytes, data + b"\x00")
    assert "format 1" in str(e), str(e)


def test_obis():
    eq(obis(IMPORT), "1.8.0", "import total")
    eq(obis(EXPORT, 3), "2.8.3", "export tariff 3")
    eq(parse_obis("2.8.4"), (EXPORT, 4), "parse")
    for bad in ("1.7.0", "3.8.0", "1.8", "1.8.x", "", None, "1.8.0.255"):
        e = raises(ValueError, parse_obis, bad)
        assert "OBIS" in str(e), str(e)
    table = obis_table(2)
    eq(sorted(table), ["1.8.0", "1.8.1", "1.8.2", "2.8.0", "2.8.1", "2.8.2"], "codes")
    eq(table["1.8.0"][:3], ("import", 0, "Wh"), "1.8.0 entry")
    eq(table["2.8.2"][:3], ("export", 2, "Wh"), "2.8.2 entry")
    assert "total" in table["2.8.0"][3], table["2.8.0"][3]


def test_get_bad():
    r = Registers(2)
    e = raises(ValueError, r.get, "1.8.3")
    assert "2 tariff" in str(e), str(e)
    raises(ValueError, r.get, "15.8.0")
    raises(ValueError, r.total_uwh, "reactive")


def test_snapshot():
    r = Registers(2)
    r.add(3 * UWH_PER_WH + 17, 5, 1)
    r.add(2 * UWH_PER_WH, UWH_PER_WH + 1, 2)
    s = r.snapshot()
    want_keys = sorted(list(obis_table(2)) + ["residual_uwh"])
    eq(sorted(s), want_keys, "keys")
    eq(s["1.8.0"], r.wh("import"), "1.8.0")
    eq(s["1.8.1"] + s["1.8.2"], s["1.8.0"], "import tariffs sum")
    eq(s["2.8.1"] + s["2.8.2"], s["2.8.0"], "export tariffs sum")
    eq(s["residual_uwh"], {"1.8.0": r.residual_uwh("import"), "2.8.0": r.residual_uwh("export")}, "residuals")
    for code in obis_table(2):
        eq(s[code], r[code], code)
    eq(s["1.8.0"] * UWH_PER_WH + s["residual_uwh"]["1.8.0"], r.total_uwh("import"), "snapshot is exact")


def test_round_trip():
    for tariffs in (1, 2, MAX_TARIFFS):
        r, _ = _random_registers(tariffs, 400, 100 + tariffs)
        r.add(1 << 45, 1 << 33, tariffs)  # registers beyond 32 bits survive
        data = r.to_bytes()
        eq(len(data), 2 + 24 * tariffs, "length for %d tariffs" % tariffs)
        eq(data[0], FORMAT_VERSION, "version byte")
        back = Registers.from_bytes(data)
        assert back == r, "round trip %d tariffs: %r != %r" % (tariffs, back, r)
        eq(back.snapshot(), r.snapshot(), "snapshot after round trip")
        eq(Registers.from_bytes(bytearray(data)).to_bytes(), data, "bytearray input")
        eq(Registers.from_bytes(memoryview(data)).to_bytes(), data, "memoryview input")


def test_truncated():
    data = Registers(2).to_bytes()
    for n in range(len(data)):
        e = raises(ValueError, Registers.from_bytes, data[:n])
        msg = str(e)
        assert msg.startswith("registers:"), msg
        assert "truncated" in msg or "length" in msg, msg


def _bad_version():
    data = bytearray(Registers(1).to_bytes())
    data[0] = FORMAT_VERSION + 1
    e = raises(ValueError, Registers.from_bytes, bytes(data))
    assert "version %d" % (FORMAT_VERSION + 1) in str(e), str(e)


def _bad_length():
    data = Registers(2).to_bytes()
    e = raises(ValueError, Registers.from_bytes, data + b"\x00")
    assert "wrong length" in str(e) and "2 tariff" in str(e), str(e)
    # a 1-tariff header in front of 2-tariff data
    e = raises(ValueError, Registers.from_bytes, data[:1] + b"\x01" + data[2:])
    assert "wrong length" in str(e), str(e)


def _bad_fields():
    data = bytearray(Registers(1).to_bytes())
    for n in (0, MAX_TARIFFS + 1):
        bad = bytearray(data)
        bad[1] = n
        e = raises(ValueError, Registers.from_bytes, bytes(bad))
        assert "tariff count %d" % n in str(e), str(e)
    for off, what in ((18, "import"), (22, "export")):
        bad = bytearray(data)
        struct.pack_into("<I", bad, off, UWH_PER_WH)
        e = raises(ValueError, Registers.from_bytes, bytes(bad))
        assert what + " residual" in str(e), str(e)
    e = raises(ValueError, Registers.from_bytes, "not bytes")
    assert "expected bytes" in str(e), str(e)


def test_malformed():
    # wrong version, wrong length, out-of-range fields, not bytes: each a ValueError naming the problem
    _bad_version()
    _bad_length()
    _bad_fields()


def test_u64():
    r = Registers()
    r.add(((1 << 64) - 1) * UWH_PER_WH, 0)
    Registers.from_bytes(r.to_bytes())  # the largest u64 still fits
    r.add(UWH_PER_WH, 0)
    e = raises(ValueError, r.to_bytes)
    assert "1.8.1" in str(e), str(e)


def test_never_below():
    a, _ = _random_registers(2, 100, 5)
    b = a.copy()
    assert b.never_below(a) and a.never_below(b), "equal registers"
    b.add(1, 0, 1)
    assert b.never_below(a), "one more µWh of import"
    assert not a.never_below(b), "a is behind b by one µWh"
    c = a.copy()
    c.add(0, UWH_PER_WH, 2)
    assert not c.never_below(b) and not b.never_below(c), "each is ahead in a different register"
    # per-tariff: same totals, a Wh moved from tariff 1 to tariff 2 is still a decrease of 1.8.1
    d1, d2 = Registers(2), Registers(2)
    d1.add(UWH_PER_WH, 0, 1)
    d2.add(UWH_PER_WH, 0, 2)
    assert not d2.never_below(d1) and not d1.never_below(d2), "tariff registers compared one by one"
    # different tariff counts: a missing register counts as zero
    one = Registers(1)
    assert d1.never_below(one), "2-tariff meter vs empty 1-tariff"
    assert not one.never_below(d1), "empty vs metered"


def test_copy():
    a = Registers(2)
    a.add(5, 5, 2)
    b = a.copy()
    b.add(UWH_PER_WH, 0, 2)
    eq(a.total_uwh("import"), 5, "original untouched")
    assert a != b, "differ after add"
