"""Concentrator ingest figures, and the simulated meters that produce them (also used by the tests).

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
- where the time goes: per-frame cost of each stage measured alone on the same frames;
- memory per connected meter: 1000 idle TCP connections opened by a child process, the concentrator's
  Python heap (tracemalloc) and RSS before and after.

LoopbackRig is a concentrator on a database file serving 127.0.0.1 with a clock the caller sets
(ManualClock): what the bench and the tests drive. SimMeter signs with `cryptography` (RFC 6979: the very
bytes meter.cose.sign1 makes) or, given a firmware Identity, with the meter's own code (meter.identity +
meter.messages.Builder). MeterClient is a meter's link in miniature: it sends frames, verifies every
acknowledgement and command the way a meter must (protocol.verify_host_message: head-end key, this device,
counter increasing, not expired) and keeps them.
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

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meter import cbor as mcbor
from meter import messages
from meter.frame import Deframer, encode_frame
from meterkit import protocol as P

T0 = 1_700_000_000
BENCH_HEADEND_D = 0x5EED_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0001


class _Seq:
    """A frame sequence source with take(), as meter.seqno.FrameSeq, that tests can steer."""

    def __init__(self, start: int = 0):
        self.next = start

    def take(self) -> int:
        n = self.next
        self.next = n + 1
        return n


class SimMeter:
    """A simulated meter: its key, its frame sequence and time, and the frames it makes.

    Without `identity`, a fresh P-256 key signed with `cryptography` (fast: thousands of meters). With a
    meter.identity.Identity, frames are built and signed by the firmware's own code (meter.messages.Builder).
    """

    def __init__(self, identity: Any = None, seq: int = 0, time_fn: Any = None, period_s: int = 60):
        self.seq = _Seq(seq)
        self.t = T0
        self.time_fn = time_fn or (lambda: self.t)
        self.period_s = period_s
        self.identity = identity
        if identity is None:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.public_key = P.public_bytes(self.key.public_key())
            self.device_id = P.key_id(self.public_key)
            self.builder = None
        else:
            self.key = None
            self.public_key = bytes(identity.public_key)
            self.device_id = identity.device_id
            self.builder = messages.Builder(identity, self.seq, self.time_fn)
        self.energy_wh = 0

    def cose(self, kind: int, status: int, body: dict, seq: int | None = None) -> bytes:
        """The signed COSE_Sign1 of one message (seq: a given sequence number instead of the next one)."""
        if seq is not None:
            saved, self.seq.next = self.seq.next, seq
        try:
            if self.builder is not None:
                return self.builder.cose(kind, status, body)[1]
            payload = {1: kind, 2: self.device_id, 3: self.seq.take(), 4: self.time_fn(), 5: status}
            payload.update(body)
            return P.sign1(self.key, self.device_id, mcbor.encode(payload))
        finally:
            if seq is not None:
                self.seq.next = max(saved, seq + 1)

    def frame(self, kind: int, status: int, body: dict, seq: int | None = None) -> bytes:
        return encode_frame(self.cose(kind, status, body, seq))

    # message shapes a meter sends
    def hello(self, status: int = 0, boots: int = 1, seq: int | None = None) -> bytes:
        return self.frame(P.HELLO, status, messages.hello_body("meterkit-0.1", "unix-sim", boots, 68630, 992249,
                                                                100000, 10), seq)

    def reading(self, import_wh: int | None = None, export_wh: int = 0, status: int = 0,
                seq: int | None = None) -> bytes:
        if import_wh is None:
            self.energy_wh += 7
            import_wh = self.energy_wh
        body = {6: {P.OBIS_IMPORT: import_wh, P.OBIS_EXPORT: export_wh}, 7: [1500, 12000, 125], 8: 0}
        return self.frame(P.READING, status, body, seq)

    def intervals(self, rows: list[list[int]], period_s: int = 900, seq: int | None = None) -> bytes:
        return self.frame(P.INTERVALS, 0, messages.intervals_body(rows, period_s), seq)

    def event(self, code: int, value: int | str, event_time: int, event_seq: int = 0, status: int = 0,
              seq: int | None = None) -> bytes:
        return self.frame(P.EVENT, status, messages.event_body(event_seq, code, value, event_time), seq)

    def response(self, counter: int, result: int, reason: str | None = None, seq: int | None = None) -> bytes:
        return self.frame(P.RESPONSE, 0, messages.response_body(counter, result, reason), seq)


class MeterClient(asyncio.Protocol):
    """A meter's TCP link in miniature: sends frames, checks every head-end message as a meter must."""

    def __init__(self, meter: SimMeter, headend_lookup: Any, now: Any = None, verify: bool = True):
        self.meter = meter
        self.lookup = headend_lookup
        self.now = now or (lambda: int(time.time()))
        self.verify = verify
        self.deframer = Deframer()
        self.transport: Any = None
        self.last_counter = 0
        self.acks: list[int] = []  # ack_seq of every acknowledgement, in order
        self.commands: list[P.Message] = []
        self.refused: list[str] = []  # reasons for head-end messages this meter would refuse
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    @classmethod
    async def connect(cls, meter: SimMeter, host: str, port: int, headend_lookup: Any, **kw: Any) -> MeterClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(meter, headend_lookup, **kw), host, port)
        return proto

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for cose in self.deframer.feed(data):
            if self.verify:
                try:
                    m = P.verify_host_message(cose, self.lookup, self.meter.device_id, self.now(), self.last_counter)
                except P.ProtocolError as e:
                    self.refused.append(e.reason)
                    continue
                self.last_counter = m.counter
                if m.kind == P.ACK:
                    self.acks.append(m.body[P.K_ACK_SEQ])
                else:
                    self.commands.append(m)
            else:  # the bench: just read key 12 (the signature costs the concentrator, not the meter)
                payload = cbor2.loads(cbor2.loads(cose).value[2])
                if payload[1] == P.ACK:
                    self.acks.append(payload[12])
        self._changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._changed.set()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def acked(self) -> int | None:
        return max(self.acks) if self.acks else None

    async def wait_for(self, cond: Any, timeout: float = 10.0) -> None:
        """Wait until cond(self) is true (TimeoutError after `timeout` s)."""
        async def _wait() -> None:
            while not cond(self):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)

    async def wait_ack(self, seq: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda c: c.acked is not None and c.acked >= seq, timeout)


class ManualClock:
    """An injectable clock that moves only when told to."""

    def __init__(self, t: float = T0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class LoopbackRig:
    """A Concentrator on a database file, serving 127.0.0.1 on a free port, with a manual clock.

    restart() stops it and starts a new Concentrator on the same file (what a head-end restart does).
    """

    def __init__(self, db_path: str | os.PathLike, headend: P.HeadEnd | None = None, clock: Any = None,
                 synchronous: str = "FULL", **conc_kw: Any):
        self.db_path = db_path
        self.headend = headend or P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
        self.clock = clock if clock is not None else ManualClock()
        self.synchronous = synchronous
        self.conc_kw = {"tick_s": 3600.0, "registry_refresh_s": 0.0, **conc_kw}
        self.store: Any = None
        self.conc: Any = None
        self.host, self.port = "127.0.0.1", 0

    async def start(self, **conc_kw: Any) -> LoopbackRig:
        from meterkit.concentrator import Concentrator
        from meterkit.db import SQLiteStore

        self.store = SQLiteStore(self.db_path, synchronous=self.synchronous)
        self.conc = Concentrator(self.store, self.headend, clock=self.clock, **{**self.conc_kw, **conc_kw})
        self.host, self.port = await self.conc.start_tcp("127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.conc is not None:
            await self.conc.stop()
            self.conc = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def restart(self, **conc_kw: Any) -> LoopbackRig:
        await self.stop()
        return await self.start(**conc_kw)

    def register(self, *meters: SimMeter, period_s: int | None = None) -> None:
        self.store.register_meters([(m.public_key, None, period_s or m.period_s) for m in meters])

    async def connect(self, meter: SimMeter, last_counter: int = 0, **kw: Any) -> MeterClient:
        cl = await MeterClient.connect(meter, self.host, self.port, self.headend.lookup,
                                       now=lambda: int(self.clock()), **kw)
        cl.last_counter = last_counter
        return cl

    async def __aenter__(self) -> LoopbackRig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def until(cond: Any, timeout: float = 10.0, step: float = 0.005) -> None:
    """Poll cond() on the running loop until it is true (TimeoutError after `timeout` s)."""
    async def _poll() -> None:
        while not cond():
            await asyncio.sleep(step)
    await asyncio.wait_for(_poll(), timeout)


# --- the bench ----------------------------------------------------------------------------------------------


def _frames(meters: list[SimMeter], n: int) -> list[list[bytes]]:
    """n reading frames (COSE bytes), spread evenly over the meters, each meter's in sequence order."""
    out: list[list[bytes]] = [[] for _ in meters]
    for i in range(n):
        m = meters[i % len(meters)]
        m.t += 60
        out[i % len(meters)].append(m.cose(P.READING, 0, {6: {10800: 1234567 + i, 10801: 834567, 10802: 400000,
                                                               20800: 98765, 20801: 90000, 20802: 8765},
                                                           7: [-1234567, 13125, -94062], 8: 0}))
    return out


def _bare_rate(prepared: list[tuple[Any, bytes, bytes]], rounds: int = 3) -> float:
    alg = P._ECDSA
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for pub, der, ss in prepared:
            pub.verify(der, ss, alg)
        best.append(len(prepared) / (time.perf_counter() - t0))
    return statistics.median(best)


async def _ingest(meters: list[SimMeter], per_meter: list[list[bytes]], headend: P.HeadEnd, db: str,
                  batch_frames: int, synchronous: str) -> dict:
    rig = LoopbackRig(db, headend, synchronous=synchronous, max_rate=None, batch_frames=batch_frames,
                      backlog_limit=1 << 30)
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
    from meterkit.db import SQLiteStore

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
    store = SQLiteStore(db)
    for m in meters:
        store.register_meter(m.device_id, m.public_key)
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        chunk = msgs[i:i + 1000]
        store.insert_frames([(m.device_id, m.seq, m.kind, m.time, m.status, 1.0, m.raw) for m in chunk])
        store.insert_readings([(m.device_id, m.seq, m.time, m.status, m.body[6][10800], m.body[6][20800], "{}",
                                m.body[7][0], m.body[7][1], m.body[7][2], m.body[8]) for m in chunk])
        store.commit()
    db_us = (time.perf_counter() - t0) / n
    store.close()
    dev = meters[0].device_id
    t0 = time.perf_counter()
    for i in range(200):
        encode_frame(headend.sign_ack(dev, i + 1, i, T0, 600))
    ack = (time.perf_counter() - t0) / 200
    return {"deframe_us": round(deframe * 1e6, 1), "verify_and_decode_us": round(verify * 1e6, 1),
            "db_insert_commit_us": round(db_us * 1e6, 1), "sign_ack_us": round(ack * 1e6, 1)}


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

    from meterkit.concentrator import Concentrator
    from meterkit.db import SQLiteStore

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256 and (hard == resource.RLIM_INFINITY or hard >= n + 256):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, hard))
    store = SQLiteStore(db)
    conc = Concentrator(store, headend, idle_timeout=3600, tick_s=3600)
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


def bench_ingest(n: int = 5000, meters: int = 50, idle_connections: int = 1000, per_frame_n: int | None = None,
                 synchronous: str = "FULL", rounds: int = 3, log: Any = None) -> dict:
    """End-to-end concentrator ingest rate beside the bare verify rate (same frames, same run), per-frame
    acks for comparison, stage costs and memory per connected meter. See the module docstring."""
    say = log or (lambda _m: None)
    headend = P.HeadEnd(ec.derive_private_key(BENCH_HEADEND_D, ec.SECP256R1()))
    sims = [SimMeter() for _ in range(meters)]
    say(f"signing {n} frames for {meters} meters ...")
    per_meter = _frames(sims, n)
    prepared = []
    keys = {m.device_id: P.public_from_bytes(m.public_key) for m in sims}
    for fr in per_meter:
        for c in fr:
            kid, payload, _ = P._open(c, keys.get)
            sig = c[-64:]
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            prepared.append((keys[kid], der, P.sig_structure(payload)))
    out: dict[str, Any] = {"n": n, "meters": meters, "synchronous": synchronous, "rounds": max(1, rounds)}
    with tempfile.TemporaryDirectory(prefix="meterkit-bench-") as tmp:
        say("bare verify ...")
        bares = [_bare_rate(prepared)]
        runs = []
        for r in range(max(1, rounds)):
            say(f"ingest over TCP, round {r + 1} ...")
            runs.append(asyncio.run(_ingest(sims, per_meter, headend, os.path.join(tmp, f"a{r}.db"), 1024,
                                            synchronous)))
            bares.append(_bare_rate(prepared))
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
        f"insert+commit {s['db_insert_commit_us']} us; per ack: sign {s['sign_ack_us']} us",
    ]
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
