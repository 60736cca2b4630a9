"""The heap the whole firmware-update path needs on the 32-bit interpreter (docs/firmware-updates.md, "Measured";
docs/performance.md, "Heap on a board"): meterkit.bench.heap's workload with a signed update on top.

The update workload is the plain one (a linked, signing meter on mp32, a real concentrator on loopback, three
operator commands; meterkit.bench.heap) plus, queued behind the calendar and the billing reset, a signed
firmware update delivered as a real concentrator delivers one (meterkit.firmware.rollout.queue_update): the
manifest (op 13), every 1 KB chunk (op 14) and the activation (op 15). The meter runs under the simulated
bootloader (`-m sim.boot`, sim/ota.py's partitions as files), so activation ends its process as a board
restart; it is started again on its flash, boots the new image on trial and confirms it once its first reading
is acknowledged. A run passes when the plain workload's checks hold and, besides: every update command was
answered OK, the meter restarted exactly once, reported FW_ACTIVATED (the sequence number) and FW_CONFIRMED
(the version), its last hello names the new version, and no internal-error event reached the store from either
boot.

May import: device, firmware, sim, headend, store, wire.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from meter import events as E
from meter.messages import FW_CHUNK_MAX
from meterkit.bench import heap as H
from meterkit.device.toolchain import repo_root

# CI keeps the update workload under this, frozen (tests/host/test_heap_budget.py; docs/performance.md says why):
# above the plain budget (meterkit.bench.heap.BUDGET_KIB), as measured over 8 keys: 92-101 KiB
UPDATE_BUDGET_KIB = {"frozen": 108}
PAYLOAD_BYTES = 16 * 1024  # the image: 16 chunks (the heap per chunk does not grow with their number)
UPDATE_SEQ = 2
UPDATE_VERSION = "v2-bench"


@functools.cache
def mp32_class_id() -> str:
    """The class id the meter names in mp32 (meter.fwupdate.class_id: the board profile and mp32's .mpy arch)."""
    cmd, env = H.meter_command("frozen", 1024, [])
    cmd = cmd[:cmd.index("-m")] + ["-c", "import meter.fwupdate as f; print(f.class_id('unix-sim'))"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=str(repo_root()))
    return proc.stdout.strip().splitlines()[-1]


def bench_image(version: str, payload_bytes: int) -> bytes:
    """An MKIM image of about payload_bytes: its fwimage module (the version) and incompressible padding."""
    from meterkit.firmware import image as I

    code = f"VERSION = {version!r}\n".encode()
    pad = max(payload_bytes - len(I.pack_files({"fwimage.py": code, "pad.bin": b""})), 0)
    return I.pack_files({"fwimage.py": code, "pad.bin": os.urandom(pad)})


class UpdateRun(H._Run):
    """meterkit.bench.heap's run with a signed firmware update delivered, activated and confirmed."""

    module = "sim.boot"
    restarts = 1
    payload_bytes = PAYLOAD_BYTES
    chunk = FW_CHUNK_MAX  # bytes a chunk command carries (the concentrator's choice, up to FW_CHUNK_MAX)

    def _queue_first(self) -> None:
        from meterkit.firmware import image as I
        from meterkit.firmware.rollout import queue_update

        super()._queue_first()
        self.update = I.sign(self.prov.firmware_key, bench_image(UPDATE_VERSION, self.payload_bytes), UPDATE_SEQ,
                             mp32_class_id(), UPDATE_VERSION)
        self.queued += queue_update(self.store, self.prov.device, self.update, self.work.start_unix, by="bench",
                                    chunk=self.chunk)

    def _judge(self, rc: int, result: dict | None, err: str) -> H.RunResult:
        r = super()._judge(rc, result, err)
        problems = [r.why] if r.why else []
        dev = self.prov.device
        evs = self.store.events(dev, codes=(E.FW_REFUSED, E.FW_ACTIVATED, E.FW_CONFIRMED, E.FW_ROLLED_BACK,
                                            E.INTERNAL))
        got = [(e.code, e.value) for e in evs]
        want = [(E.FW_ACTIVATED, UPDATE_SEQ), (E.FW_CONFIRMED, UPDATE_VERSION)]
        if got != want:
            problems.append(f"firmware and internal-error events {got}, want {want}")
        if self.restarted != 1:
            problems.append(f"{self.restarted} restarts, want 1 (into the new image)")
        meter = self.store.meter(dev)
        if meter is None or meter.firmware != UPDATE_VERSION:
            problems.append(f"its last hello names {meter and meter.firmware!r}, not {UPDATE_VERSION!r}")
        return H.RunResult(not problems, "; ".join(problems), r.result)


def edges(provs: list[H.Provisioned], work: H.Workload, say: Callable[[str], None]) -> dict:
    """Per mode, the smallest heap (KiB) of the plain workload and of the update workload, for every key (the
    same meters: the update's cost is the difference, key by key)."""
    out: dict = {}
    for mode in H.MODES:
        for name, kind in (("plain", H._Run), ("update", UpdateRun)):
            by_key = []
            for i, prov in enumerate(provs):
                say(f"{name} workload ({mode}), key {i + 1}/{len(provs)} ...")
                by_key.append(H.smallest_kib_near(prov, mode, work, H.BUDGET_KIB[mode], step=8, log=say,
                                                  kind=kind))
            out[f"{name}_{mode}_kib_by_key"] = by_key
            # the live peak (the most in use after any collection, one every 4 KiB allocated), first key
            r = H.run_once(provs[0], mode, 1024, work, heapstats=4096, kind=kind)
            out[f"{name}_{mode}_live_peak_bytes"] = r.result.get("live_peak") if r.ok else None
    return out


def heap_update_figures(keys: int = 8, log: Callable[[str], None] | None = None) -> dict:
    """Both workloads' edges over `keys` fresh meters (device, head-end and firmware keys each new)."""
    import tempfile

    say = log or (lambda m: None)
    work = H.Workload(hours=1.0)
    out: dict = {"heap_keys": keys, "heap_probe_hours": work.hours, "update_payload_bytes": PAYLOAD_BYTES,
                 "class_id": mp32_class_id(), "budget_kib": dict(H.BUDGET_KIB), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="meterkit-fwheap-") as tmp:
        provs = [H.provision(Path(tmp) / f"key{i}") for i in range(keys)]
        out.update(edges(provs, work, say))
    out["load_after"] = os.getloadavg()
    return out


def format_heap_update(f: dict) -> str:
    def spread(xs: list) -> str:
        known = [x for x in xs if x is not None]
        if not known:
            return "none passed"
        return f"{min(known)}–{max(known)} KiB (median {sorted(known)[len(known) // 2]}; by key " + \
            ", ".join(str(x) for x in xs) + ")"

    lines = [f"smallest heap of the linked, signing meter on mp32, {f['heap_keys']} fresh keys, "
             f"{f['heap_probe_hours']:g}-h workload; update: {f['update_payload_bytes'] // 1024} KiB image "
             f"({f['class_id']}) delivered, activated, restarted into, confirmed:"]
    for mode in H.MODES:
        b = f["budget_kib"][mode]
        for name in ("plain", "update"):
            xs = f[f"{name}_{mode}_kib_by_key"]
            over = [x for x in xs if x is None or x > b]
            peak = f.get(f"{name}_{mode}_live_peak_bytes")
            lines.append(f"  {mode:<6} {name:<6} {spread(xs)}; budget {b} KiB"
                         + (f": {len(over)} of {len(xs)} keys OVER it" if over else ": all within")
                         + (f"; live peak {peak / 1024:.1f} KiB" if peak else ""))
    lines.append(f"  (machine load {f['load_before'][0]:.1f} before, {f['load_after'][0]:.1f} after; "
                 "docs/performance.md, \"Heap on a board\")")
    return "\n".join(lines)
