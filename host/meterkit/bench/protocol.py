"""Protocol figures for `meterkit bench`: host verification rate and frame sizes.

    bench_host_verify(n=2000) -> dict   verify_and_decode vs bare `cryptography` ECDSA verify, side by side
    frame_sizes() -> dict               COSE and framed bytes of typical signed frames (meter.cbor/meter.cose)

Side by side: the same frames, in alternating blocks of 100 (bare, full, bare, full, ...), `rounds` times over
the n frames, so a change in machine load hits both sides alike; the ratio (full rate / bare rate) is taken
per pair of blocks and the median pair is reported, beside the ratio of the two fastest blocks.
"Bare" is the least any ES256 verifier does per frame: one OpenSSL ECDSA verify of a prepared DER signature
over the prepared Sig_structure. "Full" is meterkit.wire.protocol.verify_and_decode on the received COSE bytes:
envelope parse, key lookup, signature, payload decode, CDDL validation and the deterministic-encoding check.
"""

from __future__ import annotations

import statistics
import time

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meter import cbor, cose, frame
from meter import messages as M
from meterkit import wire as P
from meterkit.wire.envelope import ECDSA_SHA256, open_envelope

# A fixed, published test key: the bench needs reproducible frames, not secrets.
BENCH_D = bytes.fromhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
BENCH_DEVICE = bytes.fromhex("4d4b000000000001")
T0 = 1_700_000_000


def reading_payload(seq: int, t: int = T0, device: bytes = BENCH_DEVICE) -> dict:
    """A typical reading: two tariffs each way, instantaneous values, full coverage."""
    return {M.K_KIND: M.READING, M.K_DEVICE: device, M.K_SEQ: seq, M.K_TIME: t, M.K_STATUS: 0,
            M.K_REGISTERS: {M.OBIS_IMPORT: 1234567, M.OBIS_IMPORT + 1: 834567, M.OBIS_IMPORT + 2: 400000,
                            M.OBIS_EXPORT: 98765, M.OBIS_EXPORT + 1: 90000, M.OBIS_EXPORT + 2: 8765},
            M.K_INSTANT: [-1234567, 13125, -94062], M.K_UNCOVERED_PPM: 0}


def intervals_payload(seq: int, rows: int, t: int = T0, device: bytes = BENCH_DEVICE) -> dict:
    period = 900
    out = []
    for i in range(rows):
        out.append([t - (rows - 1 - i) * period, 1234567000 + 87654 * i, 98765000 + 1234 * i, 4 if i else 0])
    return {M.K_KIND: M.INTERVALS, M.K_DEVICE: device, M.K_SEQ: seq, M.K_TIME: t, M.K_STATUS: 0,
            M.K_ROWS: out, M.K_PERIOD: period}


def hello_payload(seq: int, t: int = T0, device: bytes = BENCH_DEVICE) -> dict:
    return {M.K_KIND: M.HELLO, M.K_DEVICE: device, M.K_SEQ: seq, M.K_TIME: t, M.K_STATUS: 0x108,
            6: "0.1.0", 7: "esp32-ina219", 8: 17, 9: 68630, 10: 992249, 11: 100000, 12: 10}


def _private_key(d: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())


def bench_host_verify(n: int = 2000, rounds: int = 5, distinct: int = 200, block: int = 100) -> dict:
    """Host verify_and_decode rate vs bare cryptography ECDSA verify rate on the same frames."""
    key = _private_key(BENCH_D)
    pub = key.public_key()
    m = max(1, min(n, distinct))
    # P.sign1 gives the bytes meter.cose.sign1 gives (RFC 6979 both), at OpenSSL speed
    frames = [P.sign1(key, BENCH_DEVICE, cbor.encode(reading_payload(1000 + i, T0 + 60 * i)))
              for i in range(m)]
    keys = {BENCH_DEVICE: pub}
    lookup = keys.get
    prepared = []
    for f in frames:
        kid, payload, _ = open_envelope(f, lookup)
        sig = f[-64:]
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        prepared.append((der, P.sig_structure(payload)))
    work = [frames[i % m] for i in range(n)]
    bare_work = [prepared[i % m] for i in range(n)]
    alg = ECDSA_SHA256
    verify = pub.verify
    decode = P.verify_and_decode

    for f in frames[:20]:  # warm up both paths
        decode(f, lookup)
    bare_us, full_us, ratios = [], [], []
    for _ in range(rounds):
        for j in range(0, n, block):
            bw = bare_work[j:j + block]
            fw = work[j:j + block]
            t0 = time.perf_counter()
            for der, ss in bw:
                verify(der, ss, alg)
            t1 = time.perf_counter()
            for f in fw:
                decode(f, lookup)
            t2 = time.perf_counter()
            bare_us.append((t1 - t0) * 1e6 / len(bw))
            full_us.append((t2 - t1) * 1e6 / len(fw))
            ratios.append((t1 - t0) / (t2 - t1))
    bare_med = statistics.median(bare_us)
    full_med = statistics.median(full_us)
    return {
        "n": n,
        "rounds": rounds,
        "block": block,
        "distinct_frames": m,
        "frame_cose_bytes": len(frames[0]),
        "host_verify_per_s": round(1e6 / full_med, 1),
        "bare_verify_per_s": round(1e6 / bare_med, 1),
        "host_verify_us": round(full_med, 1),
        "bare_verify_us": round(bare_med, 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_fastest_blocks": round(min(bare_us) / min(full_us), 3),
        "target_ratio": 0.8,
    }


def frame_sizes() -> dict:
    """Sizes of typical signed frames, built with the firmware's own meter.cbor / meter.cose / meter.frame."""
    shapes = {
        "hello": hello_payload(1),
        "reading": reading_payload(2),
        "intervals_1_row": intervals_payload(3, 1),
        "intervals_4_rows": intervals_payload(4, 4),
    }
    out = {}
    for name, payload in shapes.items():
        body = cbor.encode(payload)
        signed = cose.sign1(BENCH_D, BENCH_DEVICE, body)
        out[name] = {"payload_bytes": len(body), "cose_bytes": len(signed),
                     "envelope_bytes": len(signed) - len(body),
                     "framed_bytes": len(frame.encode_frame(signed))}
    return out


def format_protocol_bench(verify: dict, sizes: dict) -> str:
    lines = [
        f"host verify_and_decode: {verify['host_verify_per_s']:.0f} frames/s "
        f"({verify['host_verify_us']} us), "
        f"bare ECDSA verify: {verify['bare_verify_per_s']:.0f}/s ({verify['bare_verify_us']} us), "
        f"ratio {verify['ratio']:.3f} (fastest blocks {verify['ratio_fastest_blocks']:.3f}; "
        f"target >= {verify['target_ratio']})",
        "frame sizes (payload / COSE / framed bytes):",
    ]
    for name, s in sizes.items():
        lines.append(f"  {name:<17} {s['payload_bytes']:>4} / {s['cose_bytes']:>4} / {s['framed_bytes']:>4}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual run
    import json
    import sys

    v = bench_host_verify(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    s = frame_sizes()
    print(format_protocol_bench(v, s))
    print(json.dumps({"verify": v, "sizes": s}, indent=2))
