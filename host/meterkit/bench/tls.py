"""`meterkit bench --only tls`: what TLS on the TCP link costs, side by side with plaintext (docs/performance.md,
docs/security.md "What TLS adds").

- The meter (the real firmware's meter.transport.TLSTransport and meter.tls under the MicroPython Unix port,
  64-bit, mbedTLS): `handshakes` full handshakes against a CPython TLS server (the concentrator's settings:
  headend.tls.server_context) that counts every byte on the wire; the time of each, the MicroPython heap it
  allocates and holds; then real reading frames (signed by meter.cose's bytes) on one session: wire bytes per
  frame with TLS against the frame's own length (what plaintext TCP carries).
- The concentrator: the scale bench's setup (meterkit.bench.scale: a real `meterkit concentrator` process on
  SQLite, the load generator in a process of its own) run twice on the same frames, in clear and over TLS: its
  CPU per frame in the steady state, and its CPU while the meters connect, whose difference per meter is the
  server's share of a handshake.

The 32-bit interpreter (build/mp32) is MicroPython's core without extmod: it has no ssl, so the meter's figures
are the 64-bit Unix port's. mbedTLS's own memory (its record buffers, the handshake's state) is outside the
MicroPython heap there (libc malloc), as on an ESP32 (the IDF heap): the heap figures here are what the
MicroPython heap pays.
"""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meter.frame import encode_frame
from meterkit.bench.ingest import reading_frames
from meterkit.bench.scale import Setup, _Fixture, run_setup
from meterkit.device.toolchain import firmware_dir, micropython_cmd, mp_env
from meterkit.headend.tls import server_context
from meterkit.testing.rig import SimMeter
from meterkit.wire.tlscerts import make_tls_dir


class _CountingServer(threading.Thread):
    """A TLS server (CPython ssl on memory BIOs over a plain socket) that counts the bytes of each session: the
    handshake's both ways, then the records after it, and the application bytes they carried."""

    def __init__(self, ctx: ssl.SSLContext):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.ls = socket.create_server(("127.0.0.1", 0))
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.sessions: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.ls.accept()
            except TimeoutError:
                continue
            with conn:
                self._serve(conn)
        self.ls.close()

    def _serve(self, conn: socket.socket) -> None:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_side=True)
        s = {"hs_in": 0, "hs_out": 0, "in": 0, "app": 0}
        self.sessions.append(s)
        done = False
        conn.settimeout(10)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            s["in" if done else "hs_in"] += len(data)
            inc.write(data)
            if not done:
                try:
                    obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return
            if done:
                try:
                    while True:
                        s["app"] += len(obj.read(65536))
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
            pending = out.read()
            if pending:
                s["hs_out"] += len(pending)
                conn.sendall(pending)


def meter_figures(tmp: Path, handshakes: int = 10, frames: int = 60) -> dict:
    tls = make_tls_dir(tmp / "tls-meter", hosts=("127.0.0.1",))
    meter = SimMeter()
    frames_file = tmp / "frames.bin"
    framed = [encode_frame(c) for c in reading_frames([meter], frames, step_s=60)[0]]
    frames_file.write_bytes(b"".join(framed))
    srv = _CountingServer(server_context(str(tls.cert), str(tls.key)))
    srv.start()
    try:
        proc = subprocess.run(micropython_cmd(str(firmware_dir() / "sim" / "bench_tls.py"), str(srv.port),
                                              str(tls.dir), tls.server_name, str(handshakes), str(frames_file)),
                              capture_output=True, text=True, env=mp_env(), timeout=300, check=False)
    finally:
        srv.stop.set()
        srv.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_tls.py failed: {proc.stderr.strip()[-1500:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    last = srv.sessions[-1]
    plain = sum(len(f) for f in framed)
    return {
        "handshake_ms_median": round(statistics.median(got["handshake_us"]) / 1000, 2),
        "handshake_ms_max": round(max(got["handshake_us"]) / 1000, 2),
        "handshakes": handshakes,
        "context_heap_bytes": got["context_heap"],
        "handshake_alloc_bytes": int(statistics.median(got["handshake_alloc"])),
        "session_heap_bytes": int(statistics.median(got["session_heap"])),
        "handshake_bytes_to_server": int(statistics.median(s["hs_in"] for s in srv.sessions)),
        "handshake_bytes_to_meter": int(statistics.median(s["hs_out"] for s in srv.sessions)),
        "frames": frames,
        "frame_bytes_plain": round(plain / frames, 1),
        "frame_bytes_tls": round(last["in"] / frames, 1),
        "app_bytes_received": last["app"],
        "app_bytes_sent": got["frame_bytes"] + 1,  # the frames and the session's first byte (a delimiter)
    }


def concentrator_figures(tmp: Path, meters: int = 50, frames: int = 100, window: int = 8, rounds: int = 2) -> dict:
    """Plaintext and TLS in turn, `rounds` times each; the best round of each (the machine is shared)."""
    tls = make_tls_dir(tmp / "tls-headend", hosts=("127.0.0.1",))
    fx = _Fixture(tmp, meters, frames, window, pg=None)  # type: ignore[arg-type]
    out: dict[str, Any] = {"meters": meters, "frames": meters * frames, "rounds": rounds}
    conc = "concentrator c1"
    for _ in range(rounds):
        for name, files in (("plain", None), ("tls", tls)):
            r = run_setup(fx, Setup(f"sqlite-1-{name}", "sqlite", 1, False, tls=files))
            got = {"cpu_us_per_frame": r["cpu_us_per_frame"][conc], "steady_frames_per_s": r["steady_frames_per_s"],
                   "connect_cpu_ms_per_meter": round(r["connect_cpu_s"][conc] / meters * 1000, 2),
                   "stored": r["stored"], "acks_refused": r["acks_refused"]}
            best = out.setdefault(name, got)
            for k in ("cpu_us_per_frame", "connect_cpu_ms_per_meter"):
                best[k] = min(best[k], got[k])
            best["steady_frames_per_s"] = max(best["steady_frames_per_s"], got["steady_frames_per_s"])
            best["stored"] = min(best["stored"], got["stored"])
            best["acks_refused"] = max(best["acks_refused"], got["acks_refused"])
    out["handshake_cpu_ms"] = round(out["tls"]["connect_cpu_ms_per_meter"]
                                    - out["plain"]["connect_cpu_ms_per_meter"], 2)
    return out


def tls_figures(quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    say = log or (lambda s: None)
    with tempfile.TemporaryDirectory(prefix="meterkit-bench-tls-") as d:
        tmp = Path(d)
        say("tls: the firmware's TLS client (MicroPython Unix port, mbedTLS) against a counting TLS server")
        meter = meter_figures(tmp, 5 if quick else 20, 30 if quick else 60)
        say("tls: a concentrator process in clear and over TLS, the same frames (SQLite)")
        conc = concentrator_figures(tmp, 20 if quick else 50, 50 if quick else 200, rounds=1 if quick else 3)
    return {"tls": {"meter": meter, "concentrator": conc}}


def format_tls(f: dict) -> str:
    m, c = f["meter"], f["concentrator"]
    p, t = c["plain"], c["tls"]
    return "\n".join([
        "TLS on the TCP link (meterkit bench --only tls)",
        "  meter (MicroPython Unix port 64-bit, mbedTLS; the 32-bit interpreter has no ssl):",
        f"    handshake            {m['handshake_ms_median']} ms median, {m['handshake_ms_max']} ms max of "
        f"{m['handshakes']} (TLS 1.2 ECDHE-ECDSA P-256, loopback)",
        f"    wire, handshake      {m['handshake_bytes_to_server']} B to the head-end, "
        f"{m['handshake_bytes_to_meter']} B to the meter",
        f"    MicroPython heap     context {m['context_heap_bytes']} B (held), session {m['session_heap_bytes']} B "
        f"(held), {m['handshake_alloc_bytes']} B allocated by a handshake",
        f"    bytes per frame      {m['frame_bytes_plain']} plaintext, {m['frame_bytes_tls']} over TLS "
        f"({m['frames']} reading frames, a record each)",
        f"  concentrator ({c['meters']} meters, {c['frames']} frames, SQLite, best of {c['rounds']}):  plaintext  TLS",
        f"    CPU per frame, us                  {p['cpu_us_per_frame']:>12}  {t['cpu_us_per_frame']:>8}",
        f"    frames/s (steady)                  {p['steady_frames_per_s']:>12}  {t['steady_frames_per_s']:>8}",
        f"    CPU per connect, ms                {p['connect_cpu_ms_per_meter']:>12}  "
        f"{t['connect_cpu_ms_per_meter']:>8}   (a handshake: {c['handshake_cpu_ms']} ms)",
    ])
