"""The theft / bypass heuristic of the security monitor (rule consumption-drop, docs/alerts.md): a meter whose
import falls to near nothing while its voltage stays normal, against its own recent baseline.

A meter bypassed (the load wired around its shunt) still sees the supply's voltage but hardly any current.
Per meter, readings are summed into buckets of bucket_s seconds of meter time (the import register and the
voltage); when a bucket closes, the last window_s of buckets are compared with the baseline_s before them:

- both covered (90 % of the window's buckets, half the baseline's: an outage or a link cut leaves holes, and a
  meter without power imports nothing for a good reason);
- no bucket of the window flagged: relay open (a remote disconnect, the limiter), load shed or a
  demand-response event in force, a sensor fault, a chip reset, the clock not set;
- the window's average import at most drop_ratio of the baseline's, which was at least min_baseline_w;
- every bucket of the window at least voltage_ratio of the baseline's nominal voltage (the 90th percentile of
  its buckets): a solar panel at night, or a supply cut, shows no voltage and raises nothing.

The work per reading is a few additions; the comparison runs once per bucket_s of meter time per meter.
"""

from __future__ import annotations

import collections
import math

from meter import messages as M
from meterkit.headend.alertrules import ConsumptionRule
from meterkit.wire.records import Reading

# status bits under which a low import is expected (or the measurement cannot be trusted)
EXCUSED = (M.ST_RELAY_OPEN | M.ST_LOAD_SHED | M.ST_DR_ACTIVE | M.ST_SENSOR_FAULT | M.ST_CHIP_RESET
           | M.ST_CLOCK_NOT_SET | M.ST_I2C_ERRORS | M.ST_OVERFLOW)
WINDOW_COVER = 0.9
BASELINE_COVER = 0.5
NOMINAL_QUANTILE = 0.9


class _Bucket:
    __slots__ = ("index", "t0", "imp0", "t1", "imp1", "v_sum", "n", "flagged")

    def __init__(self, index: int, t: int, imp: int, v: int, flagged: bool):
        self.index = index
        self.t0 = self.t1 = t
        self.imp0 = self.imp1 = imp
        self.v_sum = v
        self.n = 1
        self.flagged = flagged


class Consumption:
    """One meter's buckets; add() returns the alert's detail when the rule holds at a bucket's close."""

    __slots__ = ("rule", "buckets", "cur", "last_t")

    def __init__(self, rule: ConsumptionRule):
        self.rule = rule
        self.buckets: collections.deque[_Bucket] = collections.deque(
            maxlen=int((rule.window_s + rule.baseline_s) // rule.bucket_s) + 1)
        self.cur: _Bucket | None = None
        self.last_t = -1

    def add(self, r: Reading) -> str | None:
        t = r.meter_time
        if t <= self.last_t or r.status & M.ST_CLOCK_NOT_SET:
            return None  # an older reading (a back-fill), or no time to place it by
        imp = r.registers.get(M.OBIS_IMPORT)
        if imp is None or r.voltage_mv is None:
            return None
        self.last_t = t
        index = int(t // self.rule.bucket_s)
        flagged = bool(r.status & EXCUSED) or (r.control is not None and r.control[0] != M.CONTROL_CONNECTED)
        b = self.cur
        if b is not None and b.index == index:
            b.t1, b.imp1 = t, imp
            b.v_sum += r.voltage_mv
            b.n += 1
            b.flagged = b.flagged or flagged
            return None
        self.cur = _Bucket(index, t, imp, r.voltage_mv, flagged)
        if b is None:
            return None
        self.buckets.append(b)
        return self._judge()

    def _judge(self) -> str | None:
        """The rule over the closed buckets: the detail of an alert, or None. The usual verdicts (not enough
        history, a flagged window, an import well above the drop) cost a walk over the window's buckets only."""
        rule = self.rule
        nw, nb = int(rule.window_s // rule.bucket_s), int(rule.baseline_s // rule.bucket_s)
        bs = self.buckets
        if len(bs) < nw * WINDOW_COVER + nb * BASELINE_COVER:
            return None  # not enough history yet
        end = bs[-1].index
        k = len(bs) - 1
        while k >= 0 and bs[k].index > end - nw:  # the window: the buckets after end - nw
            if bs[k].flagged:
                return None
            k -= 1
        i = 0
        while i < k and bs[i].index <= end - nw - nb:  # the baseline: from after end - nw - nb up to bs[k]
            i += 1
        if len(bs) - 1 - k < nw * WINDOW_COVER or k - i + 1 < nb * BASELINE_COVER:
            return None
        last, ref, first = bs[-1], bs[k], bs[i]  # the window runs from the baseline's last reading
        p_win = _power_w(last.imp1 - ref.imp1, last.t1 - ref.t1)
        p_base = _power_w(ref.imp1 - first.imp0, ref.t1 - first.t0)
        if p_win is None or p_base is None or p_base < rule.min_baseline_w or p_win > rule.drop_ratio * p_base:
            return None
        volts = sorted(b.v_sum / b.n for b in list(bs)[i:k + 1] if not b.flagged)
        if not volts:
            return None
        nominal = volts[min(len(volts) - 1, math.floor(NOMINAL_QUANTILE * len(volts)))]
        low = min(b.v_sum / b.n for b in list(bs)[k + 1:])
        if nominal <= 0 or low < rule.voltage_ratio * nominal:
            return None
        return (f"import {p_win:.2f} W over the last {rule.window_s / 3600:g} h against {p_base:.2f} W over the "
                f"{rule.baseline_s / 3600:g} h before, voltage normal ({low / 1000:.2f} V, nominal "
                f"{nominal / 1000:.2f} V): bypass or theft?")


def _power_w(wh: int, seconds: float) -> float | None:
    """Average power over an interval from the import register's Wh; None when it cannot be told (no time, or
    the register went back: a meter replaced or reset)."""
    if seconds <= 0 or wh < 0:
        return None
    return wh * 3600 / seconds
