# Benchmark: the viper metrology kernel against its pure-Python twin, on the same data, in one run.
#
#   micropython firmware/sim/bench_metrology.py [samples] [repeats]
#
# Prints one JSON object: {"viper_us_per_sample", "pure_us_per_sample", "ratio", "equal", ...}.
# Data: a deterministic stream of INA219-like readings (68.63 ms cycles with jitter, a random-walk current of
# both signs, a noisy 12 V bus, 1 % gaps of several cycles, a few gaps beyond the hold limit, ticks starting
# just before the 2^30 wrap), cut into BATCH_MAX-sample batches like the front-end does. Between batches the
# state is drained as the front-end does, and both kernels' results (final state and drained totals) must be
# identical. A pass over all batches is timed as a whole with the host's ticks_us (a viper batch takes only a
# few us, too short to time one by one at 1 us resolution); the same pass with no kernel call (drain only) is
# timed too and subtracted, so the figures are kernel time per sample, call overhead included. Every pass is
# repeated and the best kept. Wall-clock timing here is benchmarking, not metering.
import gc
import sys
import time

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
if _here + "/.." not in sys.path:
    sys.path.append(_here + "/..")

from array import array  # noqa: E402

from meter.clock import TICKS_MASK, TICKS_PERIOD  # noqa: E402
from meter.metrology import (  # noqa: E402
    BATCH_MAX,
    HOLD_MAX_US,
    ST_CLAMPED,
    ST_COVERED_US,
    ST_ELAPSED_HI,
    ST_ELAPSED_LO,
    ST_EXP_TOP,
    ST_IMP_TOP,
    ST_MISSED,
    ST_SAMPLES,
    integrate,
    integrate_py,
    new_state,
)

CYCLE_US = 68630
GROWING = (ST_IMP_TOP, ST_EXP_TOP, ST_COVERED_US, ST_MISSED, ST_ELAPSED_LO, ST_ELAPSED_HI, ST_SAMPLES,
           ST_CLAMPED)


class _Rng:
    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x % n


def make_batches(samples, seed=12345):
    rng = _Rng(seed)
    batches = []
    t = TICKS_PERIOD - 7 * CYCLE_US
    cur = 5000
    left = samples
    while left > 0:
        n = BATCH_MAX if left > BATCH_MAX else left
        sh = array("h", bytes(2 * n))
        bus = array("H", bytes(2 * n))
        tk = array("i", bytes(4 * n))
        for i in range(n):
            k = rng.below(1000)
            if k < 10:
                dt = CYCLE_US * (2 + rng.below(8))
            elif k == 10:
                dt = HOLD_MAX_US + rng.below(60000000)
            else:
                dt = CYCLE_US - 200 + rng.below(401)
            t = (t + dt) & TICKS_MASK
            cur += rng.below(2001) - 1000
            if cur > 32000:
                cur = 32000
            elif cur < -32000:
                cur = -32000
            sh[i] = cur
            bus[i] = 2950 + rng.below(101)
            tk[i] = t
        batches.append((sh, bus, tk, n))
        left -= n
    return batches


def run(kernel, batches):
    """One timed pass over all batches (kernel None: drain only): (microseconds, final state, totals)."""
    st = new_state(CYCLE_US)
    totals = [0] * len(GROWING)
    grow = GROWING
    ng = len(grow)
    t0 = time.ticks_us()
    for sh, bus, tk, n in batches:
        if kernel is not None:
            kernel(st, sh, bus, tk, n)
        for j in range(ng):
            k = grow[j]
            totals[j] += st[k]
            st[k] = 0
    spent = time.ticks_diff(time.ticks_us(), t0)
    return spent, bytes(st), totals


def best(kernel, batches, repeats):
    out = None
    for _ in range(repeats):
        gc.collect()
        r = run(kernel, batches)
        if out is None or r[0] < out[0]:
            out = r
    return out


def main(argv):
    samples = int(argv[1]) if len(argv) > 1 else 50000
    repeats = int(argv[2]) if len(argv) > 2 else 7
    batches = make_batches(samples)
    d_us = best(None, batches, repeats)[0]
    v_us, v_state, v_tot = best(integrate, batches, repeats)
    p_us, p_state, p_tot = best(integrate_py, batches, repeats)
    v = (v_us - d_us) / samples
    p = (p_us - d_us) / samples
    # Written by hand, not json.dumps: MicroPython prints floats with binary noise (0.5377999999999999).
    print('{"viper_us_per_sample": %.4f, "pure_us_per_sample": %.4f, "ratio": %s, "equal": %s, '
          '"samples": %d, "batch": %d, "repeats": %d, "drain_us_per_sample": %.4f, "viper_is_native": %s}'
          % (v, p, "%.1f" % (p / v) if v > 0 else "null", _js(v_state == p_state and v_tot == p_tot),
             samples, BATCH_MAX, repeats, d_us / samples, _js(integrate is not integrate_py)))


def _js(flag):
    return "true" if flag else "false"


if __name__ == "__main__":
    main(sys.argv)
