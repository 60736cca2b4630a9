"""Energy registers named by OBIS code. Pure: runs unchanged under CPython and MicroPython.

Every register is an integer number of Wh; nothing is ever rounded. The energy below one Wh is kept as a
µWh residual (0 <= residual < 1_000_000) per direction, so `Wh * 1_000_000 + residual` is exactly every
µWh the front-end ever handed over. No floats anywhere.

OBIS codes (value groups C.D.E, short form of 1-0:C.D.E*255):

    1.8.0   active energy import (+A), total     Wh
    1.8.t   active energy import (+A), tariff t   Wh   (t = 1..tariffs)
    2.8.0   active energy export (-A), total     Wh
    2.8.t   active energy export (-A), tariff t   Wh

Tariff bookkeeping: every tariff register keeps its own µWh residual, so each tariff register is exactly
floor(energy metered under that tariff / 1 Wh): a tariff switch moves nothing from one tariff to another
(the meter splits its batches at the exact switch instant, meter/app.py). The totals are the sums of the
tariff registers, so 1.8.0 == sum of 1.8.t always, exactly; the price is that with N tariffs the total can
show up to N - 1 Wh less than floor(all energy), the sub-Wh parts of the tariffs not yet completed
(`total_uwh` is exact all the same: it adds the residuals).

Binary form (`to_bytes`, little-endian, version 2), for N tariffs: 2 + 24 * N bytes

    u8  version (2)
    u8  N, number of tariffs (1..MAX_TARIFFS)
    N x u64 import Wh, tariffs 1..N
    N x u64 export Wh, tariffs 1..N
    N x u32 import residual µWh (< 1_000_000), tariffs 1..N
    N x u32 export residual µWh (< 1_000_000), tariffs 1..N

Version 1 (earlier firmware: one residual per direction, credited to the tariff that completed a Wh) is
still read: its residuals become tariff 1's.
The totals are not stored: they are the sums, so they cannot disagree with the tariff registers.
"""

import struct

UWH_PER_WH = 1000000
FORMAT_VERSION = 2
MAX_TARIFFS = 16
U64_LIMIT = 1 << 64  # MicroPython's struct silently truncates bigger values: check before packing

IMPORT = 0
EXPORT = 1
KINDS = ("import", "export")
_OBIS_C = (1, 2)  # OBIS value group C: 1 = active power +A (import), 2 = active power -A (export)
_DESCRIPTION = ("Active energy import (+A)", "Active energy export (-A)")
_HEAD_V1 = "<BBII"
_HEAD_V1_LEN = 10


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
    """Import/export energy registers, total and per tariff, in integer Wh plus a µWh residual per tariff."""

    def __init__(self, tariffs=1):
        if not isinstance(tariffs, int) or not 1 <= tariffs <= MAX_TARIFFS:
            raise ValueError("tariffs must be 1..%d, got %r" % (MAX_TARIFFS, tariffs))
        self.tariffs = tariffs
        # _wh[kind][t - 1]: whole Wh of tariff t. _res[kind][t - 1]: its µWh not yet making a whole Wh.
        self._wh = ([0] * tariffs, [0] * tariffs)
        self._res = ([0] * tariffs, [0] * tariffs)

    # -- accumulation -------------------------------------------------------------------------------

    def add(self, import_uwh, export_uwh, tariff=1):
        """Add metered energy (non-negative int µWh per direction), all of it metered under `tariff`."""
        _check_uwh(import_uwh, "import_uwh")
        _check_uwh(export_uwh, "export_uwh")
        if not isinstance(tariff, int) or not 1 <= tariff <= self.tariffs:
            raise ValueError("tariff must be 1..%d, got %r" % (self.tariffs, tariff))
        if import_uwh:
            self._carry(IMPORT, import_uwh, tariff - 1)
        if export_uwh:
            self._carry(EXPORT, export_uwh, tariff - 1)

    def _carry(self, k, uwh, t):
        res = self._res[k]
        r = res[t] + uwh
        if r >= UWH_PER_WH:
            wh = r // UWH_PER_WH
            r -= wh * UWH_PER_WH
            self._wh[k][t] += wh
        res[t] = r

    # -- reading --------------------------------------------------------------------------------------

    def wh(self, kind, tariff=0):
        """Whole Wh of a register: tariff 0 is the total (the sum of the tariff registers)."""
        k = _kind_index(kind)
        if tariff == 0:
            return sum(self._wh[k])
        return self._wh[k][self._index(tariff)]

    def _index(self, tariff):
        if not isinstance(tariff, int) or not 1 <= tariff <= self.tariffs:
            raise ValueError("tariff must be 0..%d, got %r" % (self.tariffs, tariff))
        return tariff - 1

    def residual_uwh(self, kind, tariff=0):
        """µWh metered in direction `kind` under `tariff` that do not yet make a whole Wh (0..999_999);
        tariff 0: the sum over the tariffs (below N * 10^6)."""
        k = _kind_index(kind)
        if tariff == 0:
            return sum(self._res[k])
        return self._res[k][self._index(tariff)]

    def total_uwh(self, kind=None):
        """Every µWh ever added in direction `kind` ('import' or 'export'): Wh * 10^6 + residuals.

        Without `kind`: import plus export, which grows whenever anything is metered (what the checkpoint
        policy watches)."""
        if kind is None:
            return self.total_uwh(IMPORT) + self.total_uwh(EXPORT)
        k = _kind_index(kind)
        return sum(self._wh[k]) * UWH_PER_WH + sum(self._res[k])

    def tariff_uwh(self, kind, tariff):
        """Every µWh ever added in direction `kind` under `tariff`: exact."""
        k = _kind_index(kind)
        t = self._index(tariff)
        return self._wh[k][t] * UWH_PER_WH + self._res[k][t]

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
        """{OBIS code: Wh} for every register, plus "residual_uwh": {"1.8.0": µWh, "2.8.0": µWh} (the sums of
        the tariff residuals, so Wh * 10^6 + residual is exact for the totals)."""
        snap = {}
        for k in (IMPORT, EXPORT):
            snap[obis(k)] = sum(self._wh[k])
            for t in range(self.tariffs):
                snap[obis(k, t + 1)] = self._wh[k][t]
        snap["residual_uwh"] = {obis(IMPORT): sum(self._res[IMPORT]), obis(EXPORT): sum(self._res[EXPORT])}
        return snap

    def never_below(self, other):
        """True if no register of self is below the same register of `other` (exact, residuals included).

        A register that one side lacks (fewer tariffs) counts as 0."""
        for k in (IMPORT, EXPORT):
            if self.total_uwh(k) < other.total_uwh(k):
                return False
            for t in range(1, max(self.tariffs, other.tariffs) + 1):
                mine = self.tariff_uwh(k, t) if t <= self.tariffs else 0
                theirs = other.tariff_uwh(k, t) if t <= other.tariffs else 0
                if mine < theirs:
                    return False
        return True

    def widened(self, tariffs):
        """A copy with `tariffs` tariff registers (at least as many as now): the new ones start at 0."""
        if not isinstance(tariffs, int) or not self.tariffs <= tariffs <= MAX_TARIFFS:
            raise ValueError("can widen %d tariffs to %d..%d only, not %r"
                             % (self.tariffs, self.tariffs, MAX_TARIFFS, tariffs))
        c = Registers(tariffs)
        for k in (IMPORT, EXPORT):
            for t in range(self.tariffs):
                c._wh[k][t] = self._wh[k][t]
                c._res[k][t] = self._res[k][t]
        return c

    def copy(self):
        c = Registers(self.tariffs)
        c._wh = (list(self._wh[IMPORT]), list(self._wh[EXPORT]))
        c._res = (list(self._res[IMPORT]), list(self._res[EXPORT]))
        return c

    def __eq__(self, other):
        return isinstance(other, Registers) and self.tariffs == other.tariffs and \
            all(list(self._res[k]) == list(other._res[k]) and list(self._wh[k]) == list(other._wh[k])
                for k in (IMPORT, EXPORT))

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Registers(tariffs=%d, 1.8.0=%d Wh + %d uWh, 2.8.0=%d Wh + %d uWh)" % (
            self.tariffs, sum(self._wh[IMPORT]), sum(self._res[IMPORT]), sum(self._wh[EXPORT]),
            sum(self._res[EXPORT]))

    # -- serialisation ------------------------------------------------------------------------------

    def to_bytes(self):
        n = self.tariffs
        for k in (IMPORT, EXPORT):
            for t in range(n):
                if self._wh[k][t] >= U64_LIMIT:
                    raise ValueError("register %s overflows u64" % obis(k, t + 1))
        buf = bytearray(2 + 24 * n)
        buf[0] = FORMAT_VERSION
        buf[1] = n
        q = "<%dQ" % n
        i = "<%dI" % n
        struct.pack_into(q, buf, 2, *self._wh[IMPORT])
        struct.pack_into(q, buf, 2 + 8 * n, *self._wh[EXPORT])
        struct.pack_into(i, buf, 2 + 16 * n, *self._res[IMPORT])
        struct.pack_into(i, buf, 2 + 20 * n, *self._res[EXPORT])
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data):
        """Registers from `to_bytes` output (format 2, or 1 from earlier firmware); ValueError naming the
        problem on anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("registers: expected bytes, got %s" % type(data).__name__)
        size = len(data)
        if size < 2:
            raise ValueError("registers: truncated: %d bytes, the header alone is 2" % size)
        version, n = data[0], data[1]
        if version not in (1, FORMAT_VERSION):
            raise ValueError("registers: unsupported format version %d (this firmware reads 1 and %d)"
                             % (version, FORMAT_VERSION))
        if not 1 <= n <= MAX_TARIFFS:
            raise ValueError("registers: tariff count %d out of range 1..%d" % (n, MAX_TARIFFS))
        q = "<%dQ" % n
        if version == 1:
            want, off = _HEAD_V1_LEN + 16 * n, _HEAD_V1_LEN
        else:
            want, off = 2 + 24 * n, 2
        if size != want:
            raise ValueError("registers: wrong length: %d bytes, %d tariff(s) need exactly %d (format %d)"
                             % (size, n, want, version))
        r = cls(n)
        r._wh = (list(struct.unpack_from(q, data, off)), list(struct.unpack_from(q, data, off + 8 * n)))
        if version == 1:
            _v, _n, res_i, res_e = struct.unpack_from(_HEAD_V1, data, 0)
            r._res[IMPORT][0] = res_i
            r._res[EXPORT][0] = res_e
        else:
            i = "<%dI" % n
            r._res = (list(struct.unpack_from(i, data, off + 16 * n)),
                      list(struct.unpack_from(i, data, off + 20 * n)))
        for k in (IMPORT, EXPORT):
            for t in range(n):
                if r._res[k][t] >= UWH_PER_WH:
                    raise ValueError("registers: %s residual %d uWh of tariff %d out of range 0..%d"
                                     % (KINDS[k], r._res[k][t], t + 1, UWH_PER_WH - 1))
        return r
