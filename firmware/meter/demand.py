"""Block demand and maximum demand (OBIS 1.6.x). Pure: runs unchanged under CPython and MicroPython.

Block demand: the clock is cut into periods of `period_s` seconds (300, 900, 1800 or 3600), aligned to UTC:
a period is the interval (start, start + period_s] where start is a multiple of period_s in Unix seconds.
The period's average demand is the import energy metered in it divided by the period length.

Integers only. 3600 is a multiple of every allowed period, so with k = 3600 // period_s (12, 4, 2, 1) the
EXACT average is energy_uWh * k micro-watts: nothing is rounded in the state, which keeps µWh. Values given
out in W (last_average, current_average, maxima, snapshot) are rounded DOWN (floor of µW / 10^6), like the
energy registers (floor Wh): the meter never shows more than was measured. Every comparison (which period is
the maximum) uses the exact µWh, never the rounded W.

The caller's contract (meter.app):
- `resume(t)` whenever metering (re)starts: at boot, after a power cut, after a clock set, when the sensor
  comes back. Time between the last reported instant and t was not metered.
- `add(import_uwh, t_end, tariff)` reports the whole µWh metered over (last reported instant, t_end], all
  under `tariff`. The caller splits its batches exactly at period boundaries (multiples of period_s, see
  `next_boundary`) and at tariff switches, so a chunk never straddles either. A chunk that crosses a period
  boundary raises ValueError (energy is never guessed apart). A chunk lying wholly after the current period,
  which ended exactly at the chunk's start, closes that period first.
- `close(t)` once t reaches the end of the current period (the caller has added everything up to it):
  the period is closed, last_average and the maxima are updated. add(), close() and resume() return the
  closed period as (end, W, uWh, tariff, partial), else None.

Tariff attribution (DLMS practice): a period counts for the tariff in force at its END, i.e. the tariff of
the last chunk reported in it. In DLMS/COSEM the register activation object (IC 6) routes the period value,
when the period closes, to the maximum demand registers of the tariff active at that moment. Calendars
normally switch on the quarter hour, so with 5/15-minute periods a switch falls on a boundary and the rule
is exact; for a switch inside a period the whole period's average is compared with the maximum of the
tariff that ends it. (Splitting a period's energy per tariff and dividing each part by the whole period
would understate both tariffs' demand.) 1.6.0, the overall maximum, is the largest period of all.
A maximum is replaced only by a strictly larger exact average: among equal periods the earliest is kept.
Its timestamp is the end of the period. A register with no period counted since the reset shows [0, 0].

Partial periods (metering started late, a power cut, a clock set, the sensor absent): the period is flagged
`partial` (last_partial; the load profile's partial-interval bit) and its average is computed over the
NOMINAL period length, like every other period: it is the energy metered in that clock window divided by
the window, so it can only understate the window's true demand. It still competes for the maxima: a real
peak shortly before an outage is not lost, and a few seconds of metering can never produce a false peak
(averaging over the real elapsed time would turn a 10-second inrush into a 15-minute maximum). A period in
which nothing at all was reported (no tariff known) is closed but never enters the maxima. A clock set
backwards closes the current period at once (timestamp: its nominal end) and starts the period that
contains the new time. The current period is not restarted by a demand reset.

ESP32: Unix seconds exceed 2^30, so they are heap ints there and the time arithmetic in add() makes a few
big-int temporaries: add() runs once per settled batch (every few seconds), never per sample. The period
energy is a small int up to 2^30 µWh (1.07 kWh per period: 4.3 kW average over 15 min). On the Unix port
(62-bit small ints) add() + close() allocate nothing while the period stays open (tested under heap_lock).

Binary form (`to_bytes`, little-endian, version 1), N tariffs: 41 + 12 * (N + 1) bytes

    u8  version (1)          u8  N (1..MAX_TARIFFS)        u16 period_s
    u8  flags: 1 = started, 2 = current period partial, 4 = a last period exists, 8 = last period partial
    u8  tariff of the current period so far (0 = none)    u8  tariff of the last period (0 = none)
    u32 current period start    u16 seconds reported in it (0..period_s)    u64 its µWh so far
    u32 last period end         u64 last period µWh
    u32 demand resets           u32 time of the last reset (0 = never)
    (N + 1) x (u64 maximum µWh, u32 its period end; 0 = none): 1.6.0, 1.6.1 .. 1.6.N
"""

import struct

from meter.clock import next_multiple
from meter.registers import MAX_TARIFFS

PERIODS = (300, 900, 1800, 3600)
UW_PER_W = 1000000
FORMAT_VERSION = 1
T_LIMIT = 0xFFFFFFFF - 3600  # times are stored as u32 (until 2106)
U64_LIMIT = 1 << 64

_F_STARTED = 1
_F_PARTIAL = 2
_F_LAST = 4
_F_LAST_PARTIAL = 8
_HEAD = "<BBHBBBIHQIQII"
_HEAD_LEN = 41
_MAX = "<QI"
_MAX_LEN = 12


def obis(tariff=0):
    """OBIS code of a maximum demand register: obis() == "1.6.0", obis(2) == "1.6.2"."""
    return "1.6.%d" % tariff


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_time(t, what):
    if not _is_int(t) or not 0 <= t <= T_LIMIT:
        raise ValueError("demand: %s must be an int of UTC seconds in 0..%d, got %r" % (what, T_LIMIT, t))
    return t


def _watts(uw):
    return uw // UW_PER_W


class Demand:
    """Block demand over clock-aligned periods; last/current average; maximum demand per tariff (1.6.x)."""

    def __init__(self, period_s=900, tariffs=1):
        if not _is_int(period_s) or period_s not in PERIODS:
            raise ValueError("demand: period must be one of %s seconds, got %r" % (PERIODS, period_s))
        if not _is_int(tariffs) or not 1 <= tariffs <= MAX_TARIFFS:
            raise ValueError("demand: tariffs must be 1..%d, got %r" % (MAX_TARIFFS, tariffs))
        self.period_s = period_s
        self.tariffs = tariffs
        self._k = 3600 // period_s  # exact average in µW = µWh * k
        self._start = None          # current period start (UTC s), None before the first resume()
        self._dt = 0                # seconds of the current period reported so far (0..period_s)
        self._uwh = 0               # µWh reported in the current period
        self._tariff = 0            # tariff of the last chunk in the current period, 0 = none yet
        self._partial = False       # the current period has a hole (started late, gap)
        self.last_end = 0           # end of the last closed period, 0 = none
        self.last_uwh = 0
        self.last_tariff = 0
        self.last_partial = False
        self.resets = 0
        self.reset_time = 0
        # index 0: 1.6.0 (overall); index t: tariff t. Exact µWh of the period and its end (0 = none).
        self._max_uwh = [0] * (tariffs + 1)
        self._max_t = [0] * (tariffs + 1)

    # -- the period ---------------------------------------------------------------------------------

    @property
    def start(self):
        """Start of the current period (UTC s), None before the first resume()."""
        return self._start

    @property
    def end(self):
        """End of the current period (UTC s), None before the first resume()."""
        return None if self._start is None else self._start + self.period_s

    @property
    def reported_until(self):
        """The last instant up to which energy has been reported (UTC s), None before the first resume()."""
        return None if self._start is None else self._start + self._dt

    @property
    def partial(self):
        """True if the current period already has a hole (it will close as partial)."""
        return self._partial

    @property
    def current_uwh(self):
        return self._uwh

    def next_boundary(self, t):
        """The first period boundary strictly after UTC instant t: where the caller must split a batch."""
        return next_multiple(t, self.period_s)

    # -- averages -----------------------------------------------------------------------------------

    @property
    def last_average_uw(self):
        """Exact average of the last closed period in µW (0 if none)."""
        return self.last_uwh * self._k

    @property
    def last_average(self):
        """Average of the last closed period in W, rounded down (0 if none)."""
        return _watts(self.last_uwh * self._k)

    @property
    def current_average(self):
        """Running average of the current period in W (rounded down): the energy reported so far divided
        by the time elapsed since the period start, up to the last reported instant. 0 when none elapsed."""
        if not self._dt:
            return 0
        return self._uwh * 3600 // (self._dt * UW_PER_W)

    # -- feeding --------------------------------------------------------------------------------------

    def resume(self, t):
        """Metering (re)starts at UTC instant t (boot, power back, clock set, sensor back).

        Nothing was metered between the last reported instant and t. If t lies in a later period, the
        current one is closed (partial if its end was not reached). If t lies before the last reported
        instant (a clock set backwards), the current period is closed at once. The period containing t
        is partial unless t is its start. Returns the closed period or None."""
        t = _check_time(t, "resume time")
        if self._start is None or t < self._start + self._dt:
            rec = None if self._start is None else self._finish()
            self._open(t - t % self.period_s)
            self._dt = t - self._start
            self._partial = self._dt != 0
            return rec
        rec = self.close(t)
        d = t - self._start
        if d > self._dt:
            self._dt = d
            self._partial = True
        return rec

    def add(self, import_uwh, t_end, tariff):
        """Whole µWh imported over (last reported instant, t_end], all under `tariff` (1..tariffs).

        ValueError (and no state change) if the chunk crosses a period boundary, runs backwards in time,
        comes before resume(), or any argument is malformed. Returns the period it closed, or None."""
        if not _is_int(import_uwh) or import_uwh < 0:
            raise ValueError("demand: import_uwh must be an int >= 0, got %r" % (import_uwh,))
        if not _is_int(tariff) or not 1 <= tariff <= self.tariffs:
            raise ValueError("demand: tariff must be 1..%d, got %r" % (self.tariffs, tariff))
        _check_time(t_end, "t_end")
        start = self._start
        if start is None:
            raise ValueError("demand: resume(t) must be called before add()")
        d = t_end - start
        p = self.period_s
        rec = None
        if d > p:
            if self._dt < p or d > 2 * p:
                b = start + p if self._dt < p else start + 2 * p
                raise ValueError("demand: chunk (%d, %d] crosses the period boundary at %d: split it there"
                                 % (start + self._dt, t_end, b))
            rec = self._finish()  # the current period ended exactly where this chunk starts
            self._open(start + p)
            d -= p
        elif d < self._dt:
            raise ValueError("demand: t_end %d is before the last reported instant %d "
                             "(a clock set backwards needs resume())" % (t_end, start + self._dt))
        self._uwh += import_uwh
        self._dt = d
        self._tariff = tariff
        return rec

    def close(self, t):
        """Close the current period if UTC instant t has reached its end (everything up to t added).

        The next period is the one that energy after t falls into; the time between the last reported
        instant and its start counts as not metered. Returns the closed period or None."""
        t = _check_time(t, "close time")
        if self._start is None or t - self._start < self.period_s:
            return None
        rec = self._finish()
        self._open(t - t % self.period_s)
        return rec

    def _open(self, start):
        self._start = start
        self._dt = 0
        self._uwh = 0
        self._tariff = 0
        self._partial = False

    def _finish(self):
        """Close the current period: last_* updated, maxima updated. Returns its record."""
        end = self._start + self.period_s
        uwh = self._uwh
        tariff = self._tariff
        partial = self._partial or self._dt < self.period_s
        self.last_end = end
        self.last_uwh = uwh
        self.last_tariff = tariff
        self.last_partial = partial
        if tariff:
            mu = self._max_uwh
            mt = self._max_t
            for i in (0, tariff):
                if not mt[i] or uwh > mu[i]:
                    mu[i] = uwh
                    mt[i] = end
        return (end, _watts(uwh * self._k), uwh, tariff, partial)

    # -- maxima ----------------------------------------------------------------------------------------

    def maximum(self, tariff=0):
        """(W rounded down, period end) of register 1.6.tariff; (0, 0) if no period counted since reset."""
        i = self._tariff_index(tariff)
        return _watts(self._max_uwh[i] * self._k), self._max_t[i]

    def maximum_uw(self, tariff=0):
        """(exact µW, period end) of register 1.6.tariff."""
        i = self._tariff_index(tariff)
        return self._max_uwh[i] * self._k, self._max_t[i]

    def _tariff_index(self, tariff):
        if not _is_int(tariff) or not 0 <= tariff <= self.tariffs:
            raise ValueError("demand: tariff must be 0..%d, got %r" % (self.tariffs, tariff))
        return tariff

    def snapshot(self):
        """{"1.6.0": [W, period end], "1.6.1": [...], ...}: the maximum demand registers (W rounded down)."""
        out = {}
        for i in range(self.tariffs + 1):
            out[obis(i)] = [_watts(self._max_uwh[i] * self._k), self._max_t[i]]
        return out

    def reset(self, t):
        """Demand reset (end of a billing period) at UTC instant t: the maxima are cleared, the reset is
        counted, and the maxima as they were before the reset are returned (snapshot() form). The current
        period goes on and will count for the new billing period."""
        t = _check_time(t, "reset time")
        before = self.snapshot()
        for i in range(self.tariffs + 1):
            self._max_uwh[i] = 0
            self._max_t[i] = 0
        self.resets += 1
        self.reset_time = t
        return before

    # -- comparison, persistence ---------------------------------------------------------------------

    def _state(self):
        return (self.period_s, self.tariffs, self._start, self._dt, self._uwh, self._tariff, self._partial,
                self.last_end, self.last_uwh, self.last_tariff, self.last_partial, self.resets,
                self.reset_time, list(self._max_uwh), list(self._max_t))

    def __eq__(self, other):
        return isinstance(other, Demand) and self._state() == other._state()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Demand(period_s=%d, tariffs=%d, start=%r, uwh=%d, last=%d W, 1.6.0=%r)" % (
            self.period_s, self.tariffs, self._start, self._uwh, self.last_average, self.maximum())

    def to_bytes(self):
        for v in [self._uwh, self.last_uwh] + self._max_uwh:
            if v >= U64_LIMIT:
                raise ValueError("demand: an energy value overflows u64")
        if self.resets > 0xFFFFFFFF:
            raise ValueError("demand: reset counter overflows u32")
        n = self.tariffs
        started = self._start is not None
        flags = ((_F_STARTED if started else 0) | (_F_PARTIAL if self._partial else 0)
                 | (_F_LAST if self.last_end else 0) | (_F_LAST_PARTIAL if self.last_partial else 0))
        buf = bytearray(_HEAD_LEN + _MAX_LEN * (n + 1))
        struct.pack_into(_HEAD, buf, 0, FORMAT_VERSION, n, self.period_s, flags, self._tariff,
                         self.last_tariff, self._start if started else 0, self._dt, self._uwh,
                         self.last_end, self.last_uwh, self.resets, self.reset_time)
        for i in range(n + 1):
            struct.pack_into(_MAX, buf, _HEAD_LEN + _MAX_LEN * i, self._max_uwh[i], self._max_t[i])
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data):
        """Demand from `to_bytes` output; ValueError naming the problem on anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("demand: expected bytes, got %s" % type(data).__name__)
        size = len(data)
        if size < _HEAD_LEN:
            raise ValueError("demand: truncated: %d bytes, the header alone is %d" % (size, _HEAD_LEN))
        (version, n, period, flags, tariff, last_tariff, start, dt, uwh, last_end, last_uwh, resets,
         reset_time) = struct.unpack_from(_HEAD, data, 0)
        if version != FORMAT_VERSION:
            raise ValueError("demand: unsupported format version %d (this firmware reads %d)"
                             % (version, FORMAT_VERSION))
        if not 1 <= n <= MAX_TARIFFS:
            raise ValueError("demand: tariff count %d out of range 1..%d" % (n, MAX_TARIFFS))
        if period not in PERIODS:
            raise ValueError("demand: period %d s is not one of %s" % (period, PERIODS))
        want = _HEAD_LEN + _MAX_LEN * (n + 1)
        if size != want:
            raise ValueError("demand: wrong length: %d bytes, %d tariff(s) need exactly %d" % (size, n, want))
        if flags & ~(_F_STARTED | _F_PARTIAL | _F_LAST | _F_LAST_PARTIAL):
            raise ValueError("demand: unknown flag bits 0x%02x" % flags)
        if tariff > n or last_tariff > n:
            raise ValueError("demand: tariff %d out of range 0..%d" % (max(tariff, last_tariff), n))
        started = bool(flags & _F_STARTED)
        if started:
            if start % period or start > T_LIMIT:
                raise ValueError("demand: period start %d is not a multiple of %d s in 0..%d"
                                 % (start, period, T_LIMIT))
            if dt > period:
                raise ValueError("demand: %d s reported in a %d s period" % (dt, period))
            if uwh and not tariff:
                raise ValueError("demand: %d uWh in the current period without a tariff" % uwh)
        elif start or dt or uwh or tariff or flags & _F_PARTIAL:
            raise ValueError("demand: a meter that never started has a current period")
        if flags & _F_LAST:
            if not last_end or last_end % period:
                raise ValueError("demand: last period end %d is not a multiple of %d s" % (last_end, period))
            if last_uwh and not last_tariff:
                raise ValueError("demand: %d uWh in the last period without a tariff" % last_uwh)
        elif last_end or last_uwh or last_tariff or flags & _F_LAST_PARTIAL:
            raise ValueError("demand: a last period is described but flagged absent")
        mu = []
        mt = []
        for i in range(n + 1):
            u, t = struct.unpack_from(_MAX, data, _HEAD_LEN + _MAX_LEN * i)
            if t % period or (not t and u):
                raise ValueError("demand: maximum %s at %d is not a period end" % (obis(i), t))
            mu.append(u)
            mt.append(t)
        # 1.6.0 is the first period that reached the largest tariff maximum: the same (value, time) as
        # that tariff's register, and none of the tariff maxima is larger (or all are empty together).
        top = None
        for i in range(1, n + 1):
            if mt[i] and (top is None or mu[i] > top):
                top = mu[i]
        if top is None:
            ok = not mt[0]
        else:
            ok = mt[0] != 0 and mu[0] == top and any(mu[i] == top and mt[i] == mt[0] for i in range(1, n + 1))
        if not ok:
            raise ValueError("demand: 1.6.0 (%d uWh at %d) is not the largest tariff maximum" % (mu[0], mt[0]))
        d = cls(period, n)
        if started:
            d._start = start
            d._dt = dt
            d._uwh = uwh
            d._tariff = tariff
            d._partial = bool(flags & _F_PARTIAL)
        d.last_end = last_end
        d.last_uwh = last_uwh
        d.last_tariff = last_tariff
        d.last_partial = bool(flags & _F_LAST_PARTIAL)
        d.resets = resets
        d.reset_time = reset_time
        d._max_uwh = mu
        d._max_t = mt
        return d
