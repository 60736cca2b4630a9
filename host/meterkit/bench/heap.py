"""The heap a linked, signing meter needs on the 32-bit interpreter (mp32, docs/mp32.md): the board's numbers.

Two figures (docs/performance.md, "Heap on a board"):

    mpy     the meter's code loaded from .mpy files, as `mpremote cp` of an mpy-cross build would run it;
    frozen  beside its code: the meter package frozen (`micropython -X freeze=DIR`, device/port32/frozen.c),
            its code outside the heap as in a frozen firmware image. What a frozen image leaves in RAM.

"Needs" = the smallest heap cap (`-X heapsize=`, KiB) in which one run of the workload passes. The workload
is a simulated meter (firmware/sim, its own code frozen in both figures: it never goes on a board; a constant
18 W load) with a signing identity, linked over loopback TCP to a real concentrator, for `hours` of virtual
time at `speed`x:
a reading every minute, a profile row every 15 minutes, events, and three operator commands (a calendar,
a billing reset, a profile re-read queued half-way). It passes when the meter exits cleanly, its link saw no
error and logged no internal error, every frame it made was acknowledged and every command was answered OK.

May import: device, sim, headend, store, wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meter import events
from meterkit.device import mp32
from meterkit.device.toolchain import boards_dir, compiled_firmware, repo_root

MODES = ("mpy", "frozen")
# CI keeps both under these (tests/host/test_heap_budget.py); docs/performance.md quotes them and says why.
BUDGET_KIB = {"mpy": 229, "frozen": 88}
START_UNIX = 1793481300  # 2026-10-31 20:15 UTC: the night calendar's 22:00 CET switch falls 45 min in
NIGHT_CALENDAR = "examples/tariffs/night-2rate.calendar.json"
HEAPSTATS = "mp32: heapstats "


@dataclass
class Workload:
    hours: float = 1.0
    speed: float = 1440.0
    reading_s: int = 60
    start_unix: int = START_UNIX


@dataclass
class Provisioned:
    """A meter's flash after its first boot (its key made, the head-end key installed), copied for every run."""

    flash: Path
    device: bytes
    public_key: bytes
    headend_key: object
    firmware_key: object = None  # the firmware-signing key whose public half provisioning installed


@dataclass
class RunResult:
    ok: bool
    why: str = ""
    result: dict = field(default_factory=dict)


def provision(where: Path) -> Provisioned:
    """A fresh meter identity (random key, made by the firmware itself) in `where`, with a fresh head-end key and
    a fresh firmware-signing key installed (the latter is read only by an update: meterkit.bench.fwheap)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from meterkit.sim.runner import provision as first_boot
    from meterkit.wire.keys import public_bytes

    key, fw_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    where.mkdir(parents=True, exist_ok=True)
    ident = first_boot(where, public_bytes(key.public_key()), firmware_pub=public_bytes(fw_key.public_key()))
    return Provisioned(where, bytes.fromhex(ident["device_id"]), bytes.fromhex(ident["public_key"]), key, fw_key)


def meter_command(mode: str, heap_kib: int, args: list[str], heapstats: int = 0,
                  module: str = "sim.run") -> tuple[list[str], dict]:
    """The 32-bit interpreter running `module args` (sim.run, or sim.boot: the simulated bootloader first) in a
    heap of heap_kib KiB; the simulator's code is frozen in both modes, the meter's only in 'frozen'.
    heapstats=N: collect every N bytes allocated and report the live peak (the largest heap in use after a
    collection)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    x86 = compiled_firmware("x86")
    frozen = [x86 / "sim"] + ([x86 / "meter"] if mode == "frozen" else [])
    cmd = [str(mp32.ensure()), "-X", f"heapsize={heap_kib}K"]
    if heapstats:
        cmd += ["-X", f"heapstats={heapstats}"]
    for d in frozen:
        cmd += ["-X", f"freeze={d}"]
    env = dict(os.environ, MICROPYPATH=f".frozen:{x86}")
    return cmd + ["-m", module, *args], env


class _Run:
    """One run of the workload against a concentrator on loopback (a fresh database and a copy of the flash).
    A subclass may let the meter restart (`restarts`: how many exits as a board restart, status 3, start it
    again on its flash) and run it through `module`."""

    module = "sim.run"
    restarts = 0  # board restarts allowed (an update's restart into the new image)

    def __init__(self, prov: Provisioned, mode: str, heap_kib: int, work: Workload, tmp: Path, heapstats: int = 0):
        self.prov, self.mode, self.heap_kib, self.work, self.tmp = prov, mode, heap_kib, work, tmp
        self.heapstats = heapstats
        self.vtime: float | None = float(work.start_unix)  # where the meter starts: the clock waits for it
        self.queued: list[int] = []
        self.profile_queued = False
        self.restarted = 0
        self.heapstats_by_boot: list[dict] = []  # with heapstats: each process's (a restart starts another)

    async def setup(self) -> None:
        from meterkit import wire
        from meterkit.headend.concentrator import Concentrator
        from meterkit.sim.fleet import FleetClock
        from meterkit.store import open_store

        shutil.copytree(self.prov.flash, self.tmp / "flash")
        self.store = open_store(self.tmp / "db.sqlite")
        self.store.register_meter(self.prov.device, self.prov.public_key, "bench")
        w = self.work
        self.clock = FleetClock(w.start_unix, w.speed, w.start_unix + w.hours * 3600)
        self.clock.follow = lambda: self.vtime
        # no set-time for drift, as in meterkit.sim.fleet: the meter may run up to two minutes ahead of the fleet
        # clock (sim/run.py), which is no drift; a set-time queued by the head-end would delay the workload's own
        self.conc = Concentrator(self.store, wire.HeadEnd(self.prov.headend_key), clock=self.clock,
                                 clock_drift_max_s=None)
        self.addr = await self.conc.start_tcp()
        self._queue_first()

    def _queue_first(self) -> None:
        from meterkit.headend import commands as C

        t0 = self.work.start_unix
        night = json.loads((repo_root() / NIGHT_CALENDAR).read_text())
        self.queued.append(C.queue(self.store, self.prov.device, C.OP_CALENDAR,
                                   C.calendar_args(night, t0 + 900, t0), t0))
        self.queued.append(C.queue(self.store, self.prov.device, C.OP_BILLING_RESET, None, t0))

    def _queue_profile(self) -> None:
        from meterkit.headend import commands as C

        t0 = self.work.start_unix
        self.queued.append(C.queue(self.store, self.prov.device, C.OP_PROFILE,
                                   C.profile_args(t0, t0 + 3600), self.clock()))
        self.profile_queued = True

    def _args(self, start: int, hours: float) -> list[str]:
        w = self.work
        return ["--board", str(boards_dir() / "unix-sim.json"), "--scenario", "constant", "--hours",
                repr(float(hours)), "--start", str(start), "--flash", str(self.tmp / "flash"),
                "--reading-s", str(w.reading_s), "--speed", repr(float(w.speed)),
                "--link", f"tcp:{self.addr[0]}:{self.addr[1]}", "--drain-ms", "30000",
                "--clock-file", str(self.tmp / "clock")]

    def _publish_clock(self) -> None:
        tmp = self.tmp / "clock.tmp"
        tmp.write_text(f"{self.clock():.0f}")
        os.replace(tmp, self.tmp / "clock")

    async def _start(self):
        """The meter's process from the fleet clock's present to the workload's end (a restart: the rest)."""
        start = int(self.clock())
        end = self.work.start_unix + self.work.hours * 3600
        cmd, env = meter_command(self.mode, self.heap_kib, self._args(start, max(end - start, 0) / 3600),
                                 self.heapstats, self.module)
        self.vtime = float(start)
        self._publish_clock()
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env, cwd=str(repo_root()))
        return proc, asyncio.create_task(self._read(proc))

    async def run(self, timeout_s: float) -> RunResult:
        from meterkit.sim.fleet import RESTART_EXIT

        proc, reader = await self._start()
        deadline = time.monotonic() + timeout_s
        profile_at = self.work.start_unix + min(2100, self.work.hours * 1800)  # 35 min in (half of a short run)
        try:
            while True:
                while not reader.done():
                    self._publish_clock()
                    if not self.profile_queued and self.clock() >= profile_at:
                        self._queue_profile()
                    if time.monotonic() > deadline:
                        proc.kill()
                        return RunResult(False, f"did not finish within {timeout_s:.0f} s")
                    await asyncio.sleep(0.05)
                result, err = reader.result()
                self.heapstats_by_boot.append(_heapstats(err))
                if proc.returncode != RESTART_EXIT or self.restarted >= self.restarts:
                    break
                self.restarted += 1  # the board restarted: it boots again from its flash
                proc, reader = await self._start()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await self.conc.stop()
        return self._judge(proc.returncode, result, err)

    async def _read(self, proc) -> tuple[dict | None, str]:
        from meterkit.sim.fleet import follow_sim

        result, err = await follow_sim(proc, self._follow)
        return result, err.decode()

    def _follow(self, t: float | None) -> None:
        """The meter's time (@@T), None once it exited; while a restart may follow, the clock waits where the
        meter left it (a board restarts in seconds: at 1440x, the minutes the restart takes here are not
        virtual time, and the meter would skip its boundaries)."""
        if t is not None or self.restarted >= self.restarts:
            self.vtime = t

    def _judge(self, rc: int, result: dict | None, err: str) -> RunResult:
        if rc != 0 or result is None:
            last = (err.strip().splitlines() or [f"exit code {rc}"])[-1]
            return RunResult(False, f"exit code {rc}: {last}")
        if self.heapstats_by_boot[-1]:
            result.update(self.heapstats_by_boot[-1])
            result["live_peak"] = max(s.get("live_peak", 0) for s in self.heapstats_by_boot)
            result["live_peak_by_boot"] = [s.get("live_peak") for s in self.heapstats_by_boot]
        link = result.get("link", {})
        internal = result["events"].get(str(events.INTERNAL), 0)
        queued = self.store.queued_commands(ids=self.queued)
        problems = []
        if link.get("errors"):
            problems.append(f"{link['errors']} link errors")
        if internal:
            problems.append(f"{internal} internal-error events")
        if link.get("acked") != link.get("last_seq") or link.get("dropped"):
            problems.append(f"frames acknowledged up to {link.get('acked')} of {link.get('last_seq')}, "
                            f"dropped {link.get('dropped')}")
        bad = [f"#{q.id} op {q.op} {q.state} {q.result} {q.reason or ''}".strip() for q in queued
               if (q.state, q.result) != ("answered", 0)]
        if len(queued) < len(self.queued) or bad:
            problems.append(f"{len(bad)} of {len(self.queued)} commands not answered OK: " + "; ".join(bad[:3]))
        return RunResult(not problems, "; ".join(problems), result)

    def close(self) -> None:
        self.store.close()


def _heapstats(err: str) -> dict:
    """mp32's heap statistics (-X heapstats=N) from a process's stderr: {} without them."""
    for line in err.splitlines():
        if line.startswith(HEAPSTATS):
            return {k: int(v) for k, v in (kv.split("=") for kv in line[len(HEAPSTATS):].split())}
    return {}


def run_once(prov: Provisioned, mode: str, heap_kib: int, work: Workload, timeout_s: float = 600,
             heapstats: int = 0, kind: type[_Run] = _Run) -> RunResult:
    """One run of the workload in a heap of heap_kib KiB (mode 'mpy' or 'frozen'); with heapstats, its
    result has live_peak and collections (see meter_command). kind: the workload (_Run, or a variant of it)."""
    async def go() -> RunResult:
        with tempfile.TemporaryDirectory(prefix="meterkit-heap-") as tmp:
            r = kind(prov, mode, heap_kib, work, Path(tmp), heapstats)
            await r.setup()
            try:
                return await r.run(timeout_s)
            finally:
                r.close()

    # a meter that runs out of heap goes silent: the concentrator's warnings about it are the expected outcome
    quiet = logging.getLogger("meterkit.headend")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return asyncio.run(go())
    finally:
        quiet.setLevel(level)


def smallest_kib(prov: Provisioned, mode: str, work: Workload, lo: int = 16, hi: int = 512,
                 log: Callable[[str], None] | None = None, kind: type[_Run] = _Run) -> int | None:
    """Binary search for the smallest heap cap (KiB) in which the workload passes (None: not even in `hi`).
    The meter's memory does not grow with time (fixed buffers and rings; checkpoints overwrite), so a short run
    finds the edge; confirm it with a longer one."""
    say = log or (lambda m: None)
    if not run_once(prov, mode, hi, work, kind=kind).ok:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = run_once(prov, mode, mid, work, kind=kind)
        say(f"  {mode} {mid} KiB: {'passes' if r.ok else 'fails: ' + r.why[-160:]}")
        if r.ok:
            hi = mid
        else:
            lo = mid
    return hi


def smallest_kib_near(prov: Provisioned, mode: str, work: Workload, guess: int, step: int = 16, lo: int = 16,
                      hi: int = 512, log: Callable[[str], None] | None = None, kind: type[_Run] = _Run) -> int | None:
    """smallest_kib, with its bracket found by steps of `step` KiB from a guess (a budget): about half the runs
    when the edge is near the guess. lo is taken to fail, as in smallest_kib; None: not even `hi` passes."""
    say = log or (lambda m: None)

    def passes(kib: int) -> bool:
        r = run_once(prov, mode, kib, work, kind=kind)
        say(f"  {mode} {kib} KiB: {'passes' if r.ok else 'fails: ' + r.why[-160:]}")
        return r.ok

    if passes(guess):
        top, bottom = guess, max(guess - step, lo)
        while bottom > lo and passes(bottom):
            top, bottom = bottom, max(bottom - step, lo)
    else:
        bottom, top = guess, min(guess + step, hi)
        while not passes(top):
            if top >= hi:
                return None
            bottom, top = top, min(top + step, hi)
    while top - bottom > 1:
        mid = (top + bottom) // 2
        if passes(mid):
            top = mid
        else:
            bottom = mid
    return top


_SHARE_SNIPPET = """
import gc
gc.collect(); a = gc.mem_alloc()
import meter.app, meter.board, meter.hal  # hal: a board imports it too
gc.collect(); b = gc.mem_alloc()
import sim.run, sim.hardware, sim.transports
from meter.board import load_board
hw = sim.hardware.open_sim(load_board(%r), flash_dir=%r)
gc.collect(); c = gc.mem_alloc()
print(c - b)
"""


def simulator_share() -> int:
    """Bytes of heap that the simulator's own objects hold (everything frozen): the runner's and the simulated
    board's, which a board replaces by its real hardware objects. Part of both figures."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="meterkit-heap-") as tmp:
        cmd, env = meter_command("frozen", 1024, [])
        cmd = cmd[:cmd.index("-m")] + ["-c", _SHARE_SNIPPET % (str(boards_dir() / "unix-sim.json"), tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=tmp)
    return int(proc.stdout.strip().splitlines()[-1])


_CODE_SNIPPET = """
import gc, mp32
gc.collect(); a = gc.mem_alloc()
import meter.app, meter.hal, meter.identity, meter.messages, meter.report, meter.seqno, meter.p256, meter.link
import meter.commands, meter.outbox, meter.transport
gc.collect()
print(gc.mem_alloc() - a, mp32.frozen_code_bytes())
"""


def import_heap() -> dict:
    """Heap taken by importing the linked meter's modules, loaded from .mpy and frozen (the code region's size
    besides): what freezing moves out of RAM."""
    import subprocess

    out = {}
    for mode in MODES:
        cmd, env = meter_command(mode, 1024, [])
        cmd = cmd[:cmd.index("-m")] + ["-c", _CODE_SNIPPET]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=str(repo_root()))
        used, code = (int(x) for x in proc.stdout.split())
        out[f"heap_import_{mode}_bytes"] = used
        if mode == "frozen":
            out["heap_frozen_code_region_bytes"] = code
    return out


def breakdown(prov: Provisioned) -> list[list]:
    """[[step, bytes], ...]: what the linked meter keeps on the heap, step by step (firmware/sim/bench_heap.py,
    everything frozen)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="meterkit-heap-") as tmp:
        shutil.copytree(prov.flash, Path(tmp) / "flash")
        cmd, env = meter_command("frozen", 1024, [])
        script = repo_root() / "firmware" / "sim" / "bench_heap.py"
        cmd = cmd[:cmd.index("-m")] + [str(script), str(boards_dir() / "unix-sim.json"), str(Path(tmp) / "flash")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=tmp)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _edges(provs: list[Provisioned], mode: str, probe: Workload, confirm: Workload, say) -> dict:
    out: dict = {}
    edges = []
    for i, prov in enumerate(provs):
        say(f"heap ({mode}), key {i + 1}/{len(provs)} ...")
        edges.append(smallest_kib(prov, mode, probe, log=say))
    out[f"heap_{mode}_kib"] = edges[0]
    out[f"heap_{mode}_kib_by_key"] = edges
    if edges[0] is not None:
        r = run_once(provs[0], mode, edges[0], confirm, timeout_s=1800)
        out[f"heap_{mode}_confirmed"] = r.ok
        out[f"heap_{mode}_confirm_why"] = r.why
        # the live peak: the most in use after any collection, one every 4 KiB allocated (no cap to speak of)
        r = run_once(provs[0], mode, 1024, probe, heapstats=4096)
        out[f"heap_{mode}_live_peak_bytes"] = r.result.get("live_peak")
        out[f"heap_{mode}_resident_bytes"] = r.result.get("heap_after_gc")
    return out


def heap_figures(quick: bool = False, keys: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Both figures with one key (binary search on short runs, confirmed by a long run at the edge), then the
    edge for further keys (the device key is random: measured spread); the live peaks; where the heap goes."""
    say = log or (lambda m: None)
    probe = Workload(hours=1.0)
    confirm = Workload(hours=3.0 if quick else 24.0)
    n_keys = keys or (1 if quick else 4)
    out: dict = {"heap_probe_hours": probe.hours, "heap_confirm_hours": confirm.hours, "heap_keys": n_keys}
    with tempfile.TemporaryDirectory(prefix="meterkit-heap-keys-") as tmp:
        provs = [provision(Path(tmp) / f"key{i}") for i in range(n_keys)]
        for mode in MODES:
            out.update(_edges(provs, mode, probe, confirm, say))
        out["heap_breakdown"] = breakdown(provs[0])
    out["heap_simulator_share_bytes"] = simulator_share()
    out.update(import_heap())
    return out


def format_heap(f: dict) -> str:
    share = f["heap_simulator_share_bytes"] / 1024
    lines = [f"heap of the linked, signing meter on the 32-bit interpreter (workload {f['heap_probe_hours']:g} h, "
             f"confirmed by {f['heap_confirm_hours']:g} h; the simulator's objects, {share:.1f} KiB, included):"]
    for mode, what in (("mpy", "code loaded from .mpy"), ("frozen", "beside its code (frozen)")):
        kib = f.get(f"heap_{mode}_kib")
        conf = "confirmed" if f.get(f"heap_{mode}_confirmed") else f"NOT confirmed: {f.get(f'heap_{mode}_confirm_why')}"
        by_key = ", ".join(str(k) for k in f.get(f"heap_{mode}_kib_by_key", []))
        lines.append(f"  {what:<28} {kib} KiB ({conf}); by key: {by_key}; budget {BUDGET_KIB[mode]} KiB; "
                     f"live peak {f.get(f'heap_{mode}_live_peak_bytes', 0) / 1024:.1f} KiB")
    lines.append("  (needs: the smallest -X heapsize in which the workload passes against a real concentrator; "
                 "frozen: the meter's .mpy in mp32's code region, -X freeze, off the heap as a firmware image keeps "
                 "it in flash; docs/performance.md, \"Heap on a board\")")
    lines.append(f"  importing the meter's modules: {f['heap_import_mpy_bytes'] / 1024:.1f} KiB from .mpy, "
                 f"{f['heap_import_frozen_bytes'] / 1024:.1f} KiB frozen (code region "
                 f"{f['heap_frozen_code_region_bytes'] / 1024:.1f} KiB)")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    figs = heap_figures(quick="--quick" in sys.argv, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(figs, indent=1))
    print(format_heap(figs))
