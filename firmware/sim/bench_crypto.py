# Crypto benchmark: ECDSA P-256 (meter/p256.py), COSE_Sign1 and CBOR, timed on whatever interpreter runs it.
#
#   micropython firmware/sim/bench_crypto.py [samples]      (MICROPYPATH=firmware, or run from firmware/)
#   python firmware/sim/bench_crypto.py [samples]           (CPython, for comparison)
#
# Prints ONE JSON object. Every *_ms / *_us value is the median of `samples` (default 25) individually timed
# operations (*_min_ms: the fastest one); precompute_ms is the one-off build of the comb table, timed once on
# a fresh import. Run it several times and take the median of the medians.
import sys

try:
    from time import ticks_diff, ticks_us

    def _now_us():
        return ticks_us()

    def _elapsed_us(t0):
        return ticks_diff(ticks_us(), t0)
except ImportError:  # CPython
    from time import perf_counter_ns

    def _now_us():
        return perf_counter_ns() // 1000

    def _elapsed_us(t0):
        return perf_counter_ns() // 1000 - t0

if "/" in __file__:
    _fw = __file__.rsplit("/", 2)[0]
    if _fw not in sys.path:
        sys.path.append(_fw)

import json  # noqa: E402

from meter import cbor, cose, p256  # noqa: E402


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2


def _times(fn, samples):
    out = []
    for i in range(samples):
        t0 = _now_us()
        fn(i)
        out.append(_elapsed_us(t0))
    return _median(out) / 1000, min(out) / 1000


def _time(fn, samples):
    return _times(fn, samples)[0]


def main(argv):
    samples = int(argv[1]) if len(argv) > 1 else 25
    t0 = _now_us()
    table = p256.precompute()
    precompute_ms = _elapsed_us(t0) / 1000

    d = bytes(range(1, 33))
    pub = p256.public_key(d)
    msgs = [b"meterkit bench %d" % i for i in range(samples)]
    sigs = [p256.sign(d, m) for m in msgs]
    for m, s in zip(msgs, sigs):
        if not p256.verify(pub, m, s):
            raise SystemExit("self-check failed")

    payload = cbor.encode({0: b"\x01" * 8, 1: 2, 2: 123456, 3: 1700000000, 4: 0,
                           5: {1: 123456789, 2: 987654, 3: [230000, 1500, 345000]}})
    frame = cose.sign1(d, b"\x01" * 8, payload)
    keys = {b"\x01" * 8: pub}

    sign = _times(lambda i: p256.sign(d, msgs[i]), samples)
    verify = _times(lambda i: p256.verify(pub, msgs[i], sigs[i]), samples)
    keygen = _times(lambda i: p256.generate_key(), samples)
    fields = [
        ("impl", sys.implementation.name),
        ("samples", samples),
        ("precompute_ms", precompute_ms),
        ("table_bytes", table),
        ("sign_ms", sign[0]),
        ("verify_ms", verify[0]),
        ("keygen_ms", keygen[0]),
        # the fastest sample: what an operation costs when nothing else competes for the CPU
        ("sign_min_ms", sign[1]),
        ("verify_min_ms", verify[1]),
        ("keygen_min_ms", keygen[1]),
        ("cose_sign1_ms", _time(lambda i: cose.sign1(d, b"\x01" * 8, payload), samples)),
        ("cose_verify1_ms", _time(lambda i: cose.verify1(frame, keys.get), samples)),
        ("cbor_encode_us", 1000 * _time(lambda i: cbor.encode({1: i, 2: [i, i + 1, b"abc"]}), samples)),
        ("cbor_decode_us", 1000 * _time(lambda i: cbor.decode(payload), samples)),
        ("frame_bytes", len(frame)),
    ]
    # written by hand so that floats print as %.3f on every port (MicroPython's repr of 0.935 is noisy)
    parts = []
    for key, value in fields:
        if isinstance(value, float):
            text = "%.3f" % value
        elif isinstance(value, int):
            text = "%d" % value
        else:
            text = json.dumps(value)
        parts.append('"%s": %s' % (key, text))
    print("{" + ", ".join(parts) + "}")


main(sys.argv)
