"""Concentrator ingest figures: `meterkit bench` measures the head-end with them.

    bench_ingest(n=5000) -> dict

End to end over real TCP on 127.0.0.1, one event loop (one core for the concentrator; the senders are cheap
asyncio clients in the same loop): n signed reading frames from `meters` simulated meters, every byte through
deframe -> verify -> decode -> dedupe -> store (SQLite WAL, synchronous=FULL) -> commit -> signed ack; the
clock stops when every meter holds an ack for its last frame. Beside it, in the same run and on the same
frames, the bare `cryptography` ECDSA verify rate (prepared DER signature, prepared Sig_structure: the least
any ES256 verifier does), measured before and after each ingest run. The ingest runs `rounds` times (a fresh
database each time); each round's ratio is its ingest rate over the mean of the bare rates measured just
before and after it, and the median round is reported (a busy machine slows both sides of a pair alike).
Also:

- the same ingest with one transaction and one ack per frame (batch_frames=1), to show what batching buys;
- the same ingest without the security monitor (alert_rules=None), in interleaved pairs with it: what the
  monitor costs (the 5 000 frames from one address within a second raise its frame-flood alert, so the alert
  path is part of the figure);
- where the time goes: per-frame cost of each stage measured alone on the same frames;
- memory per connected meter: 1000 idle TCP connections opened by a child process, the concentrator's
  Python heap (tracemalloc) and RSS before and after.

The meters and the concentrator are the test rig's (meterkit.testing.rig).
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meter import messages as M
from meter.frame import Deframer, encode_frame
from meterkit import wire as P
from meterkit.store.records import NewMeter
from meterkit.testing.rig import T0, LoopbackRig, ManualClock, SimMeter
from meterkit.wire.envelope import ECDSA_SHA256, open_envelope
from meterkit.wire.records import Frame, records_of

BENCH_HEADEND_D = 0x5EED_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0001


# --- the bench ----------------------------------------------------------------------------------------------


def reading_frames(meters: list[SimMeter], n: int, step_s: int = 60) -> list[list[bytes]]:
    """n reading frames (COSE bytes), spread evenly over the meters, each meter's in sequence order, its meter
    time `step_s` on from the one before."""
    out: list[list[bytes]] = [[] for _ in meters]
    for i in range(n):
        m = meters[i % len(meters)]
        m.t += step_s
        out[i % len(meters)].append(m.cose(M.READING, 0, {
            M.K_REGISTERS: {M.OBIS_IMPORT: 1234567 + i, M.OBIS_IMPORT + 1: 834567, M.OBIS_IMPORT + 2: 400000,
                            M.OBIS_EXPORT: 98765, M.OBIS_EXPORT + 1: 90000, M.OBIS_EXPORT + 2: 8765},
            M.K_INSTANT: [-1234567, 13125, -94062], M.K_UNCOVERED_PPM: 0}))
    return out


def prepare_bare(meters: list[SimMeter], frames: list[bytes]) -> list[tuple[Any, bytes, bytes]]:
    """(public key, DER signature, Sig_structure) of each frame: what a bare ECDSA verify is given."""
    keys = {m.device_id: P.public_from_bytes(m.public_key) for m in meters}
    prepared = []
    for c in frames:
        kid, payload, _ = open_envelope(c, keys.get)
        sig = c[-64:]
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        prepared.append((keys[kid], der, P.sig_structure(payload)))
    return prepared


def bare_rate(prepared: list[tuple[Any, bytes, bytes]], rounds: int = 3) -> float:
    alg = ECDSA_SHA256
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for pub, der, ss in prepared:
            pub.verify(der, ss, alg)
        best.append(len(prepared) / (time.perf_counter() - t0))
    return statistics.median(best)


async def _ingest(meters: list[SimMeter], per_meter: list[list[bytes]], headend: P.HeadEnd, db: str,
                  batch_frames: int, synchronous: str, monitor: bool = True) -> dict:
    # all meters on 127.0.0.1, connected before any sends: no per-address cap (as behind one NAT address)
    # the concentrator's clock at the meters' newest time: their frames are late, never from the future
    clock = ManualClock(max(m.t for m in meters))
    rig = LoopbackRig(db, headend, clock, synchronous=synchronous, max_rate=None, batch_frames=batch_frames,
                      backlog_limit=1 << 30, max_per_source=None, **({} if monitor else {"alert_rules": None}))
    await rig.start()
    rig.register(*meters)
    try:
        clients = [await rig.connect(m, verify=False) for m in meters]
        blobs = [b"".join(encode_frame(c) for c in frames) for frames in per_meter]
        last = [len(f) - 1 for f in per_meter]
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        for cl, blob in zip(clients, blobs, strict=True):
            cl.send(blob)
        await asyncio.wait_for(asyncio.gather(*(cl.wait_ack(s, 600) for cl, s in zip(clients, last, strict=True))),
                               600)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = rig.conc.stats()
        for cl in clients:
            cl.close()
    finally:
        await rig.stop()
    n = sum(len(f) for f in per_meter)
    return {"frames": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "frames_per_s": round(n / wall, 1),
            "frames_per_cpu_s": round(n / cpu, 1), "stored": stats.get("frames_stored", 0),
            "acks_sent": stats.get("acks_sent", 0), "batches": stats.get("batches", 0)}


def _stages(meters: list[SimMeter], per_meter: list[list[bytes]], headend: P.HeadEnd, db: str) -> dict:
    """Per-frame cost (us) of each stage alone, on the same frames."""
    from meterkit.store import open_store

    frames = [c for fr in per_meter for c in fr]
    n = len(frames)
    keys = {m.device_id: P.public_from_bytes(m.public_key) for m in meters}
    wire = b"".join(encode_frame(c) for c in frames)
    df = Deframer()
    t0 = time.perf_counter()
    for i in range(0, len(wire), 16384):
        df.feed(wire[i:i + 16384])
    deframe = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    msgs = [P.verify_and_decode(c, keys.get) for c in frames]
    verify = (time.perf_counter() - t0) / n
    store = open_store(db)
    store.register_meters([NewMeter(m.public_key) for m in meters])
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        chunk = msgs[i:i + 1000]
        store.add_frames([Frame.of(m) for m in chunk], 1.0)
        store.add_readings([r for m in chunk for r in records_of(m)])
        store.commit()
    db_us = (time.perf_counter() - t0) / n
    store.close()
    dev = meters[0].device_id
    t0 = time.perf_counter()
    for i in range(200):
        encode_frame(headend.sign_ack(dev, i + 1, i, T0, 600))
    ack = (time.perf_counter() - t0) / 200
    monitor = _monitor_stage(msgs, db, max(m.t for m in meters))
    return {"deframe_us": round(deframe * 1e6, 1), "verify_and_decode_us": round(verify * 1e6, 1),
            "db_insert_commit_us": round(db_us * 1e6, 1), "sign_ack_us": round(ack * 1e6, 1),
            "security_monitor_us": round(monitor * 1e6, 2)}


def _monitor_stage(msgs: list, db: str, now: float) -> float:
    """Seconds per frame the security monitor spends on the frames of a batch (as the ingest hands them over:
    a call per connection chunk of 64, one after each batch of 1024), its alerts not written."""
    from meterkit.headend.alertrules import AlertRules
    from meterkit.headend.monitor import Monitor
    from meterkit.store import open_store

    with open_store(db) as store:
        mon = Monitor(AlertRules(), store, lambda: now)
        mon.watch.load(store)
        batches = []  # what the ingest has built anyway: the batch's sequence numbers, frames and records
        for i in range(0, len(msgs), 1024):
            chunk = msgs[i:i + 1024]
            seqs: dict[bytes, list[int]] = {}
            for m in chunk:
                seqs.setdefault(m.device_id, []).append(m.seq)
            batches.append((len(chunk), seqs, [Frame.of(m) for m in chunk], [r for m in chunk for r in records_of(m)]))
        best = []
        for _ in range(3):
            t0 = time.perf_counter()
            for n, seqs, frames, readings in batches:
                for j in range(0, n, 64):
                    mon.frames("127.0.0.1", min(64, n - j))
                mon.committed(seqs, frames, readings, [], [], [], now)
            best.append((time.perf_counter() - t0) / len(msgs))
    return min(best)


_IDLE_CLIENT = textwrap.dedent("""
    import socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    socks = [socket.create_connection((host, port)) for _ in range(n)]
    print("up", flush=True)
    sys.stdin.read()
""")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _memory_per_connection(headend: P.HeadEnd, db: str, n: int) -> dict:
    import resource

    from meterkit.headend.concentrator import Concentrator
    from meterkit.store import open_store

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256 and (hard == resource.RLIM_INFINITY or hard >= n + 256):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, hard))
    store = open_store(db)
    # idle connections from one address that never authenticate, measured for their memory: kept
    conc = Concentrator(store, headend, idle_timeout=3600, auth_timeout=3600, max_per_source=None, tick_s=3600)
    proc = None
    try:
        host, port = await conc.start_tcp("127.0.0.1", 0)
        gc.collect()
        tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
        rss0 = _rss()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _IDLE_CLIENT, host, str(port), str(n),
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 60)
        for _ in range(600):
            if conc.stats()["connections_open"] >= n:
                break
            await asyncio.sleep(0.05)
        gc.collect()
        heap1 = tracemalloc.get_traced_memory()[0]
        rss1 = _rss()
        tracemalloc.stop()
        open_now = conc.stats()["connections_open"]
    finally:
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
        await conc.stop()
        store.close()
    return {"connections": open_now, "heap_bytes_per_connection": round((heap1 - heap0) / max(1, open_now)),
            "rss_bytes_per_connection": round((rss1 - rss0) / max(1, open_now))}


def _monitor_cost(sims: list[SimMeter], per_meter: list[list[bytes]], headend: P.HeadEnd, tmp: str,
                  synchronous: str, pairs: int, say: Any) -> dict:
    """Ingest with and without the security monitor, in interleaved pairs (the order alternating): the median of
    each pair's ratio (with / without), of frames per CPU-second (what other work on the machine disturbs least)
    and per wall second."""
    cpu, wall, on_rates, off_rates = [], [], [], []
    for r in range(pairs):
        say(f"ingest with and without the security monitor, pair {r + 1} ...")
        runs = {}
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            runs[on] = asyncio.run(_ingest(sims, per_meter, headend, os.path.join(tmp, f"m{r}{int(on)}.db"), 1024,
                                           synchronous, monitor=on))
        on_rates.append(runs[True]["frames_per_cpu_s"])
        off_rates.append(runs[False]["frames_per_cpu_s"])
        cpu.append(round(runs[True]["frames_per_cpu_s"] / runs[False]["frames_per_cpu_s"], 3))
        wall.append(round(runs[True]["frames_per_s"] / runs[False]["frames_per_s"], 3))
    return {"pairs": pairs, "with_frames_per_cpu_s": statistics.median(on_rates),
            "without_frames_per_cpu_s": statistics.median(off_rates), "ratios": cpu, "ratio": statistics.median(cpu),
            "wall_ratios": wall, "wall_ratio": statistics.median(wall)}


def bench_ingest(n: int = 5000, meters: int = 50, idle_connections: int = 1000, per_frame_n: int | None = None,
                 synchronous: str = "FULL", rounds: int = 3, log: Any = None, monitor_pairs: int = 3) -> dict:
    """End-to-end concentrator ingest rate beside the bare verify rate (same frames, same run), per-frame
    acks for comparison, stage costs and memory per connected meter. See the module docstring."""
    say = log or (lambda _m: None)
    headend = P.HeadEnd(ec.derive_private_key(BENCH_HEADEND_D, ec.SECP256R1()))
    sims = [SimMeter() for _ in range(meters)]
    say(f"signing {n} frames for {meters} meters ...")
    per_meter = reading_frames(sims, n)
    prepared = prepare_bare(sims, [c for fr in per_meter for c in fr])
    out: dict[str, Any] = {"n": n, "meters": meters, "synchronous": synchronous, "rounds": max(1, rounds)}
    with tempfile.TemporaryDirectory(prefix="meterkit-bench-") as tmp:
        say("bare verify ...")
        bares = [bare_rate(prepared)]
        runs = []
        for r in range(max(1, rounds)):
            say(f"ingest over TCP, round {r + 1} ...")
            runs.append(asyncio.run(_ingest(sims, per_meter, headend, os.path.join(tmp, f"a{r}.db"), 1024,
                                            synchronous)))
            bares.append(bare_rate(prepared))
        for r, run in enumerate(runs):
            bare = (bares[r] + bares[r + 1]) / 2
            run["bare_verify_per_s"] = round(bare, 1)
            run["ratio"] = round(run["frames_per_s"] / bare, 3)
            run["ratio_cpu"] = round(run["frames_per_cpu_s"] / bare, 3)
        med = sorted(runs, key=lambda x: x["ratio"])[len(runs) // 2]
        out["rounds_ratio"] = [x["ratio"] for x in runs]
        out["bare_verify_per_s"] = med["bare_verify_per_s"]
        out["ingest"] = med
        out["ingest_frames_per_s"] = med["frames_per_s"]
        out["ratio"] = med["ratio"]
        out["ratio_cpu"] = med["ratio_cpu"]
        if monitor_pairs:
            out["monitor"] = _monitor_cost(sims, per_meter, headend, tmp, synchronous, monitor_pairs, say)
        k = per_frame_n or max(meters, n // 5)
        say(f"ingest with one commit and one ack per frame ({k} frames) ...")
        sub = [fr[: max(1, k // meters)] for fr in per_meter]
        out["ingest_ack_per_frame"] = asyncio.run(_ingest(sims, sub, headend, os.path.join(tmp, "b.db"), 1,
                                                          synchronous))
        say("stages ...")
        out["stages"] = _stages(sims, per_meter, headend, os.path.join(tmp, "c.db"))
        if idle_connections:
            say(f"memory with {idle_connections} idle connections ...")
            out["memory"] = asyncio.run(_memory_per_connection(headend, os.path.join(tmp, "d.db"),
                                                               idle_connections))
    out["targets"] = {"frames_per_s": 5000, "ratio": 0.6}
    return out


def format_ingest(f: dict) -> str:
    i, a, s = f["ingest"], f["ingest_ack_per_frame"], f["stages"]
    lines = [
        f"ingest over TCP, {f['n']} frames from {f['meters']} meters (synchronous={f['synchronous']}): "
        f"{i['frames_per_s']:.0f} frames/s wall, {i['frames_per_cpu_s']:.0f} per CPU-second "
        f"({i['batches']} commits, {i['acks_sent']} acks)",
        f"bare ECDSA verify, same frames, same time: {f['bare_verify_per_s']:.0f}/s -> ratio {f['ratio']:.3f} "
        f"(per CPU-second {f['ratio_cpu']:.3f}; median of {f['rounds']} rounds: "
        f"{', '.join(f'{x:.3f}' for x in f['rounds_ratio'])}; "
        f"targets >= {f['targets']['frames_per_s']}/s and >= {f['targets']['ratio']})",
        f"one commit + one ack per frame: {a['frames_per_s']:.0f} frames/s ({a['frames']} frames)",
        f"stages per frame: deframe {s['deframe_us']} us, verify_and_decode {s['verify_and_decode_us']} us, "
        f"insert+commit {s['db_insert_commit_us']} us, security monitor {s['security_monitor_us']} us; "
        f"per ack: sign {s['sign_ack_us']} us",
    ]
    if "monitor" in f:
        m = f["monitor"]
        lines.append(f"security monitor: {m['with_frames_per_cpu_s']:.0f} frames per CPU-second with it, "
                     f"{m['without_frames_per_cpu_s']:.0f} without (median of {m['pairs']} interleaved pairs; "
                     f"with/without {m['ratio']:.3f}: {', '.join(f'{x:.3f}' for x in m['ratios'])}; wall "
                     f"{m['wall_ratio']:.3f})")
    if "memory" in f:
        m = f["memory"]
        lines.append(f"memory per connected meter ({m['connections']} idle connections): "
                     f"{m['heap_bytes_per_connection']} B Python heap, {m['rss_bytes_per_connection']} B RSS")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual run
    import json

    res = bench_ingest(int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
                       log=lambda m: print(m, file=sys.stderr))
    print(format_ingest(res))
    print(json.dumps(res, indent=2))
