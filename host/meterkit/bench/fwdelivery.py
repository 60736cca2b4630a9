"""How long a firmware update takes to reach a meter over its link, in real time (docs/firmware-updates.md,
"Measured"; docs/performance.md).

One real firmware meter (meterkit.sim.fleet: the MicroPython Unix port, simulated INA219, provisioned with a
firmware key) reports to a real concentrator at real-time speed (speed 1), over a serial line (two ptys joined by
the fleet's relay, which holds every byte for its time on a UART at `baud`, 8N1) or over loopback TCP. Once it
reports, a signed update of `payload_bytes` is queued as a rollout queues it (meterkit.firmware.rollout
.queue_update: the manifest, every chunk, the activation). The bench watches the concentrator's store and takes
the real time at which the manifest, each chunk and the activation were answered, then when FW_ACTIVATED and
FW_CONFIRMED arrived (the new image booted on trial, metered, and its first reading was acknowledged).

Two meters: `paced` runs as a board does (sim/run.py --pace 1: its sleeps take real time, so it polls the link
once every 8 conversion cycles, ~0.55 s, and verifies one head-end message per poll); `unpaced` is the simulator's
default at speed 1 (between its batches it idles in 2 ms steps, polling the link at each: the link's own cost,
not a board's).

May import: device, firmware, sim, headend, store, wire.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meter import events as E
from meter.messages import FW_CHUNK_MAX
from meterkit.bench.fwheap import bench_image
from meterkit.device.toolchain import micropython_cmd, mp_env

VERSION = "v2-bench"
BAUD = 115200


@functools.cache
def unix_class_id() -> str:
    """The class id a fleet meter names (meter.fwupdate.class_id under the Unix port, its mpy-cross build)."""
    code = "import meter.fwupdate as f; print(f.class_id('unix-sim'))"
    proc = subprocess.run(micropython_cmd("-c", code), capture_output=True, text=True, env=mp_env(compiled=True),
                          check=True)
    return proc.stdout.strip().splitlines()[-1]


async def _watch(fleet, update, chunk: int, timeout_s: float) -> dict:
    """Queue the update once the meter reports; the real time (s after queueing) of each answer and event."""
    from meterkit.firmware.rollout import queue_update

    m = fleet.meters[0]
    dev = m.device
    deadline = time.monotonic() + timeout_s
    while (fleet.store.meter(dev).firmware is None or m.proc is None) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # its hello stored: the meter is up and linked
    t0 = time.monotonic()
    ids = queue_update(fleet.store, dev, update, fleet.clock(), by="bench", chunk=chunk)
    answered: dict[int, float] = {}
    seen: dict[int, float] = {}
    while E.FW_CONFIRMED not in seen and time.monotonic() < deadline:
        now = time.monotonic() - t0
        for q in fleet.store.queued_commands(dev):
            if q.id in ids and q.state == "answered" and q.id not in answered:
                answered[q.id] = now
                if q.result != 0:
                    raise RuntimeError(f"the meter refused command #{q.id}: {q.reason}")
        for ev in fleet.store.events(dev, codes=(E.FW_ACTIVATED, E.FW_CONFIRMED, E.FW_ROLLED_BACK, E.FW_REFUSED)):
            seen.setdefault(ev.code, now)
        if E.FW_ROLLED_BACK in seen or E.FW_REFUSED in seen:
            raise RuntimeError(f"the update failed: events {sorted(seen)}")
        await asyncio.sleep(0.02)
    fleet._apply("power_cut", m.spec.name)  # measured: end the fleet
    if E.FW_CONFIRMED not in seen:
        raise RuntimeError(f"not confirmed within {timeout_s:.0f} s ({len(answered)} of {len(ids)} answered)")
    t = [answered[i] for i in ids]
    gaps = [b - a for a, b in zip(t[:-1], t[1:], strict=True)]
    n_chunks = len(ids) - 2
    return {"manifest_s": t[0], "chunks": n_chunks, "chunks_done_s": t[-2], "activate_answered_s": t[-1],
            "activated_event_s": seen[E.FW_ACTIVATED], "confirmed_s": seen[E.FW_CONFIRMED],
            "per_chunk_s_median": statistics.median(gaps[:n_chunks]),
            "per_chunk_s_max": max(gaps[:n_chunks]),
            "per_kb_s": (t[-2] - t[0]) / (len(update.payload) / 1024), "restarts": m.restarts}


def deliver(link: str, paced: bool, payload_bytes: int, baud: int | None = BAUD, chunk: int = FW_CHUNK_MAX,
            timeout_s: float = 900) -> dict:
    """One delivery to one fresh meter; the timings of _watch, and what ran."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from meterkit.firmware import image as I
    from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
    from meterkit.wire.keys import public_bytes

    fw_key = ec.generate_private_key(ec.SECP256R1())
    update = I.sign(fw_key, bench_image(VERSION, payload_bytes), 2, unix_class_id(), VERSION)
    spec = MeterSpec("m1", "constant", link, pace=1.0 if paced else None, baud=baud if link == "serial" else None)
    with tempfile.TemporaryDirectory(prefix="meterkit-fwdelivery-") as tmp:
        fleet = Fleet(Path(tmp), [spec], ec.generate_private_key(ec.SECP256R1()), Path(tmp) / "db.sqlite",
                      hours=2.0, speed=1.0, drain_ms=2000)
        fleet.firmware_pub = public_bytes(fw_key.public_key())
        out = run_fleet(fleet, timeout_s=timeout_s + 60, settle_s=0.2,
                        alongside=lambda f: _watch(f, update, chunk, timeout_s))
    out.update(link=link, paced=paced, payload_bytes=len(update.payload), chunk_bytes=chunk,
               baud=baud if link == "serial" else None)
    return out


def delivery_figures(quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Every combination of link (serial at BAUD, TCP) and meter (paced as a board, unpaced), one delivery each."""
    import os

    say = log or (lambda m: None)
    payload = 8 * 1024 if quick else 24 * 1024
    runs = []
    for paced in (True, False):
        for link in ("serial", "tcp"):
            say(f"fwupdate delivery: {payload // 1024} KiB over {link}, meter {'paced' if paced else 'unpaced'} ...")
            runs.append(deliver(link, paced, payload))
    return {"fwdelivery": runs, "fwdelivery_load": os.getloadavg()}


def format_delivery(f: dict) -> str:
    runs = f["fwdelivery"]
    lines = [f"firmware update delivery at real-time speed, one meter, {runs[0]['payload_bytes'] // 1024} KiB in "
             f"{runs[0]['chunks']} chunks of {runs[0]['chunk_bytes']} B (load {f['fwdelivery_load'][0]:.1f}):",
             "  link           meter     manifest  per chunk (median/max)  per KB   chunks done  activated  confirmed"]
    for r in runs:
        link = f"serial {r['baud']}" if r["baud"] else r["link"]
        lines.append(f"  {link:<14} {'paced' if r['paced'] else 'unpaced':<8} {r['manifest_s']:7.2f} s"
                     f"  {r['per_chunk_s_median']:7.3f} / {r['per_chunk_s_max']:.3f} s"
                     f"      {r['per_kb_s']:6.3f} s {r['chunks_done_s']:9.1f} s {r['activated_event_s']:8.1f} s"
                     f" {r['confirmed_s']:8.1f} s")
    lines.append("  (s after the update was queued; paced: polls as a board, every 8 conversion cycles; "
                 "docs/firmware-updates.md, \"Measured\")")
    return "\n".join(lines)
