"""Energy registers named by OBIS code. Pure: runs unchanged under CPython and MicroPython.

Every register is an integer number of Wh; nothing is ever rounded. The energy below one Wh is kept as a
µWh residual (0 <= residual < 1_000_000) per direction, so `Wh * 1_000_000 + residual` is exactly every
µWh the front-end ever handed over. No floats anywhere.

OBIS codes (value groups C.D.E, short form of 1-0:C.D.E*255):

    1.8.0   active energy import (+A), total     Wh
    1.8.t   active energy import (+A), tariff t   Wh   (t = 1..tariffs)
    2.8.0   active energy export (-A), total     Wh
    2.8.t   active energy export (-A), tariff t   Wh

Tariff bookkeeping works like pulse routing in a utility meter: each direction has ONE residual; when it
completes a whole Wh, that Wh is credited to the tariff in force at that moment (the `tariff` argument of
`add`). Consequently the tariff registers always sum exactly to the total (1.8.0 == sum of 1.8.t), and the
total is exactly floor(all energy / 1 Wh). The price is that at a tariff switch the sub-Wh energy metered
just before the switch (< 1 Wh) is credited to the new tariff: at most 1 Wh per direction per switch.

Binary form (`to_bytes`, little-endian, version 1), for N tariffs: 10 + 16 * N bytes

    u8  version (1)
    u8  N, number of tariffs (1..MAX_TARIFFS)
    u32 import residual µWh (< 1_000_000)
    u32 export residual µWh (< 1_000_000)
    N x u64 import Wh, tariffs 1..N
    N x u64 export Wh, tariffs 1..N

The totals are not stored: they are the sums, so they cannot disagree with the tariff registers.
"""

import struct

UWH_PER_WH = 1000000
FORMAT_VERSION = 1
MAX_TARIFFS = 16
U64_LIMIT = 1 << 64  # MicroPython's struct silently truncates bigger values: check before packing

IMPORT = 0
EXPORT = 1
KINDS = ("import", "export")
_OBIS_C = (1, 2)  # OBIS value group C: 1 = active power +A (import), 2 = active power -A (export)
_DESCRIPTION = ("Active energy import (+A)", "Active energy export (-A)")
_HEAD = "<BBII"
_HEAD_LEN = 10


def obis(kind, tariff=0):
    """OBIS code string of a register: obis(IMPORT) == "1.8.0", obis(EXPORT, 2) == "2.8.2"."""
    return "%d.8.%d" % (_OBIS_C[_kind_index(kind)], tariff)


def parse_obis(code):
    """(kind index, tariff) of an energy register code such as "1.8.0" or "2.8.3"; ValueError otherwise."""
    parts = code.split(".") if isinstance(code, str) else ()
    if len(parts) == 3 and parts[1] == "8" and parts[0] in ("1", "2") and parts[2].isdigit():
        return int(parts[0]) - 1, int(parts[2])
    raise ValueError("not an energy register OBIS code: %r (want 1.8.t or 2.8.t)" % (code,))


def obis_table(tariffs=1):
    """Every register a meter with `tariffs` tariffs holds: {code: (kind, tariff, unit, description)}.

    tariff 0 is the total. The TOU issue adds tariffs by raising `tariffs`; nothing else changes."""
    table = {}
    for k in (IMPORT, EXPORT):
        table[obis(k)] = (KINDS[k], 0, "Wh", _DESCRIPTION[k] + ", total")
        for t in range(1, tariffs + 1):
            table[obis(k, t)] = (KINDS[k], t, "Wh", "%s, tariff %d" % (_DESCRIPTION[k], t))
    return table


def _kind_index(kind):
    if kind == IMPORT or kind == "import":
        return IMPORT
    if kind == EXPORT or kind == "export":
        return EXPORT
    raise ValueError("unknown register kind %r (want 'import' or 'export')" % (kind,))


def _check_uwh(value, what):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("%s must be an int number of uWh, not %s" % (what, type(value).__name__))
    if value < 0:
        raise ValueError("%s must be >= 0, got %d" % (what, value))


class Registers:
    """Import/export energy registers, total and per tariff, in integer Wh plus a µWh residual."""

    def __init__(self, tariffs=1):
        if not isinstance(tariffs, int) or not 1 <= tariffs <= MAX_TARIFFS:
            raise ValueError("tariffs must be 1..%d, got %r" % (MAX_TARIFFS, tariffs))
        self.tariffs = tariffs
        # _wh[kind][t - 1]: whole Wh of tariff t. _res[kind]: µWh not yet making a whole Wh.
        self._wh = ([0] * tariffs, [0] * tariffs)
        self._res = [0, 0]

    # -- accumulation -------------------------------------------------------------------------------

    def add(self, import_uwh, export_uwh, tariff=1):
        """Add metered energy (non-negative int µWh per direction), credited to `tariff` (1..tariffs)."""
        _check_uwh(import_uwh, "import_uwh")
        _check_uwh(export_uwh, "export_uwh")
        if not isinstance(tariff, int) or not 1 <= tariff <= self.tariffs:
            raise ValueError("tariff must be 1..%d, got %r" % (self.tariffs, tariff))
        if import_uwh:
            self._carry(IMPORT, import_uwh, tariff - 1)
        if export_uwh:
            self._carry(EXPORT, export_uwh, tariff - 1)

    def _carry(self, k, uwh, t):
        r = self._res[k] + uwh
        if r >= UWH_PER_WH:
            wh = r // UWH_PER_WH
            r -= wh * UWH_PER_WH
            self._wh[k][t] += wh
        self._res[k] = r

    # -- reading --------------------------------------------------------------------------------------

    def wh(self, kind, tariff=0):
        """Whole Wh of a register: tariff 0 is the total (the sum of the tariff registers)."""
        k = _kind_index(kind)
        if tariff == 0:
            return sum(self._wh[k])
        if not isinstance(tariff, int) or not 1 <= tariff <= self.tariffs:
            raise ValueError("tariff must be 0..%d, got %r" % (self.tariffs, tariff))
        return self._wh[k][tariff - 1]

    def residual_uwh(self, kind):
        """µWh metered in direction `kind` that do not yet make a whole Wh (0..999_999)."""
        return self._res[_kind_index(kind)]

    def total_uwh(self, kind=None):
        """Every µWh ever added in direction `kind` ('import' or 'export'): Wh * 10^6 + residual.

        Without `kind`: import plus export, which grows whenever anything is metered (what the checkpoint
        policy watches)."""
        if kind is None:
            return self.total_uwh(IMPORT) + self.total_uwh(EXPORT)
        k = _kind_index(kind)
        return sum(self._wh[k]) * UWH_PER_WH + self._res[k]

    def metered_uwh(self):
        """Import plus export µWh, the same as total_uwh()."""
        return self.total_uwh()

    def get(self, code):
        """Wh held by the register with OBIS code `code` ("1.8.0", "2.8.1", ...)."""
        k, t = parse_obis(code)
        if t > self.tariffs:
            raise ValueError("no register %s: this meter has %d tariff(s)" % (code, self.tariffs))
        return self.wh(k, t)

    def __getitem__(self, code):
        return self.get(code)

    def table(self):
        return obis_table(self.tariffs)

    def snapshot(self):
        """{OBIS code: Wh} for every register, plus "residual_uwh": {"1.8.0": µWh, "2.8.0": µWh}."""
        snap = {}
        for k in (IMPORT, EXPORT):
            snap[obis(k)] = sum(self._wh[k])
            for t in range(self.tariffs):
                snap[obis(k, t + 1)] = self._wh[k][t]
        snap["residual_uwh"] = {obis(IMPORT): self._res[IMPORT], obis(EXPORT): self._res[EXPORT]}
        return snap

    def never_below(self, other):
        """True if no register of self is below the same register of `other` (exact, residual included).

        A register that one side lacks (fewer tariffs) counts as 0."""
        for k in (IMPORT, EXPORT):
            if self.total_uwh(k) < other.total_uwh(k):
                return False
            for t in range(1, max(self.tariffs, other.tariffs) + 1):
                mine = self._wh[k][t - 1] if t <= self.tariffs else 0
                theirs = other._wh[k][t - 1] if t <= other.tariffs else 0
                if mine < theirs:
                    return False
        return True

    def copy(self):
        c = Registers(self.tariffs)
        c._wh = (list(self._wh[IMPORT]), list(self._wh[EXPORT]))
        c._res = list(self._res)
        return c

    def __eq__(self, other):
        return isinstance(other, Registers) and self.tariffs == other.tariffs and \
            self._res == other._res and list(self._wh[0]) == list(other._wh[0]) and \
            list(self._wh[1]) == list(other._wh[1])

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Registers(tariffs=%d, 1.8.0=%d Wh + %d uWh, 2.8.0=%d Wh + %d uWh)" % (
            self.tariffs, sum(self._wh[IMPORT]), self._res[IMPORT], sum(self._wh[EXPORT]), self._res[EXPORT])

    # -- serialisation ------------------------------------------------------------------------------

    def to_bytes(self):
        n = self.tariffs
        for k in (IMPORT, EXPORT):
            for t in range(n):
                if self._wh[k][t] >= U64_LIMIT:
                    raise ValueError("register %s overflows u64" % obis(k, t + 1))
        buf = bytearray(_HEAD_LEN + 16 * n)
        struct.pack_into(_HEAD, buf, 0, FORMAT_VERSION, n, self._res[IMPORT], self._res[EXPORT])
        fmt = "<%dQ" % n
        struct.pack_into(fmt, buf, _HEAD_LEN, *self._wh[IMPORT])
        struct.pack_into(fmt, buf, _HEAD_LEN + 8 * n, *self._wh[EXPORT])
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data):
        """Registers from `to_bytes` output; ValueError naming the problem on anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("registers: expected bytes, got %s" % type(data).__name__)
        size = len(data)
        if size < _HEAD_LEN:
            raise ValueError("registers: truncated: %d bytes, the header alone is %d" % (size, _HEAD_LEN))
        version, n, res_i, res_e = struct.unpack_from(_HEAD, data, 0)
        if version != FORMAT_VERSION:
            raise ValueError("registers: unsupported format version %d (this firmware reads %d)"
                             % (version, FORMAT_VERSION))
        if not 1 <= n <= MAX_TARIFFS:
            raise ValueError("registers: tariff count %d out of range 1..%d" % (n, MAX_TARIFFS))
        want = _HEAD_LEN + 16 * n
        if size != want:
            raise ValueError("registers: wrong length: %d bytes, %d tariff(s) need exactly %d"
                             % (size, n, want))
        for what, res in (("import", res_i), ("export", res_e)):
            if res >= UWH_PER_WH:
                raise ValueError("registers: %s residual %d uWh out of range 0..%d"
                                 % (what, res, UWH_PER_WH - 1))
        fmt = "<%dQ" % n
        r = cls(n)
        imp = list(struct.unpack_from(fmt, data, _HEAD_LEN))
        r._wh = (imp, list(struct.unpack_from(fmt, data, _HEAD_LEN + 8 * n)))
        r._res = [res_i, res_e]
        return r
