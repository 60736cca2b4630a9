"""Torture scenario: the concentrator SIGKILLed mid-commit (issue 11; docs/concentrator.md, "Concentrator kills").

Real firmware meters (the Unix port, on the fleet clock) report over TCP through the fleet's proxies to a real
`meterkit concentrator` process on a real SQLite file. That process is SIGKILLed again and again, and restarted on
the same database; the proxies are pointed at each new one. Kills come three ways, in turn:

- random:    at a random instant;
- armed:     the moment the process's phase page (headend/faults.py) shows a batch's transaction open;
- injected:  the process kills itself at its N-th batch, before its COMMIT or after it, before any acknowledgement
             (METERKIT_FAULTS=...,kill=before-commit:N / after-commit:N).

Where each kill landed is read from the page the dead process left: in a batch's transaction, between its commit
and its acknowledgements, or idle. Every landing is checked against the database: integrity_check ok; the open
batch's frames all absent, or all present (a kill inside COMMIT can come after SQLite made it durable; never half
of them); all present after a commit; none after an injected kill before the commit. Two billing resets per meter
are queued while the kills go on; each must run exactly once. At the end every frame made is stored exactly once
(tally: lost 0, duplicates 0, no register decrease) and every meter's outbox is drained.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from meter import events
from meterkit.headend import commands as C
from meterkit.headend import faults
from meterkit.sim.fleet import Fleet, MeterSpec, TcpProxy
from meterkit.store import open_store
from meterkit.torture import tally as T
from meterkit.wire.keys import load_private, new_key

NAME = "concentrator_kills"
MODES = ("random", "armed", "before-commit", "after-commit")
RESETS_PER_METER = 2
SERVE_TIMEOUT_S = 30.0  # real seconds a restarted concentrator has to store the meters' frames again


@dataclass(frozen=True)
class Plan:
    kills: int
    hours: float  # virtual hours the meters run
    meters: int
    speed: float = 240.0  # a restart takes ~1-2 s of real time: at 240x, 4-8 virtual minutes without a head-end


SHORT = Plan(kills=4, hours=1.5, meters=2)
LONG = Plan(kills=24, hours=8.0, meters=3)


@dataclass
class Kill:
    mode: str
    phase: str = ""  # where the process died (faults.PHASES), from its page
    batches: int = 0  # batches with frames the process had begun
    open_frames: int = 0  # frames of the batch open when it died
    present: int = 0  # ... of them in the database after the kill
    returncode: int | None = None
    integrity: str = ""  # PRAGMA integrity_check right after the kill
    served: bool = False  # the process stored fresh frames before it was killed (the meters came back to it)


class ExternalConcentrator:
    """`meterkit concentrator` as a child process on the fleet's clock file. Fleet.run sets `clock` (unused: the
    process reads the clock file) and awaits stop() at the end."""

    def __init__(self, out: Path, db: Path, key: Path, clock_file: Path, offline_after: float):
        self.out, self.db, self.key, self.clock_file = out, db, key, clock_file
        self.offline_after = offline_after
        self.clock = None
        self.proc: asyncio.subprocess.Process | None = None
        self.page: Path | None = None
        self.starts = 0

    async def start(self, kill: tuple[str, int] | None = None) -> int:
        """A new process (a new phase page); returns the port it listens on."""
        self.starts += 1
        self.page = self.out / f"phase-{self.starts}"
        log = self.out / f"concentrator-{self.starts}.log"
        cmd = [sys.executable, "-m", "meterkit.cli", "concentrator", "--db", str(self.db), "--key", str(self.key),
               "--listen", "127.0.0.1:0", "--clock-file", str(self.clock_file), "--clock-drift-max", "off",
               "--offline-after", str(self.offline_after), "--stats-every", "3600"]
        env = {**os.environ, "METERKIT_FAULTS": faults.environment(self.page, kill)}
        with open(log, "wb") as f:
            self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=f, stderr=asyncio.subprocess.STDOUT,
                                                             env=env)
        return await self._port(log)

    async def _port(self, log: Path) -> int:
        for _ in range(600):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return int(line.rsplit(":", 1)[1])
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        raise RuntimeError(f"the concentrator did not start: {log.read_text(errors='replace')[-2000:]}")

    def sigkill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class KillFleet(Fleet):
    """A Fleet whose concentrator is an ExternalConcentrator, every meter on TCP through a proxy."""

    def __init__(self, out: Path, specs: list[MeterSpec], key_path: Path, **kw):
        super().__init__(out, specs, load_private(key_path), out / "db.sqlite", offline_after=15, **kw)
        self.key_path = key_path
        self.first_kill: tuple[str, int] | None = None  # an injected kill for the first process

    async def setup(self) -> None:
        await self.prepare()
        self._publish_clock()  # the concentrator's clock from its first instant
        self.conc = ExternalConcentrator(self.out, self.db_path, self.key_path, self.clock_file, self.offline_after)
        port = await self.conc.start(self.first_kill)
        for m in self.meters:
            m.proxy = TcpProxy("127.0.0.1", port)
            await m.proxy.start()

    async def restart(self, kill: tuple[str, int] | None) -> None:
        port = await self.conc.start(kill)
        for m in self.meters:
            m.proxy.target = ("127.0.0.1", port)


# --- the kills ---------------------------------------------------------------------------------------------------

def _arm_and_kill(page: Path, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """(A thread.) SIGKILL the process the moment its page shows a batch's transaction open (or at the timeout)."""
    with open(page, "rb") as f:
        mm = mmap.mmap(f.fileno(), 1, prot=mmap.PROT_READ)
    end = time.monotonic() + timeout_s
    try:
        while mm[0] != faults.IN_COMMIT and time.monotonic() < end:
            time.sleep(0.0002)
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        mm.close()


async def _served(conc: ExternalConcentrator, batches: int, timeout_s: float) -> bool:
    """Wait until the process has begun `batches` batches with fresh frames (the meters are back on it)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if faults.read_page(conc.page)[1] >= batches:
            return True
        if conc.proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    return faults.read_page(conc.page)[1] >= batches


async def _kill_once(fleet: KillFleet, kill: Kill, rng: random.Random) -> None:
    conc = fleet.conc
    # no kill before the meters are back on this process and it stores their frames again
    kill.served = await _served(conc, 1 if kill.mode in faults.POINTS else rng.randint(1, 3), SERVE_TIMEOUT_S)
    if kill.mode == "random":
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        conc.sigkill()
    elif kill.mode == "armed":
        await asyncio.to_thread(_arm_and_kill, conc.page, conc.proc, 20.0)
    try:  # an injected kill fires at its batch; give it time, then fall back to a plain kill
        await asyncio.wait_for(asyncio.shield(conc.proc.wait()), 30.0)
    except asyncio.TimeoutError:
        conc.sigkill()
    kill.returncode = await conc.proc.wait()
    kill.phase, kill.batches, frames = faults.read_page(conc.page)
    kill.open_frames = sum(len(s) for s in frames.values())
    kill.integrity = integrity(fleet.db_path)
    kill.present = _present(fleet.db_path, frames)


def integrity(db: Path) -> str:
    """PRAGMA integrity_check of the database as a new process finds it (the WAL of a killed one recovered)."""
    with open_store(db, create=False) as store:
        return store.integrity_check()


def store_delays(db: Path, devices: list[bytes]) -> dict:
    """How long frames waited between being made (meter time) and being stored (the concentrator's time, the
    fleet clock), in virtual seconds: the median and the longest. Meters run up to 2 min ahead of the fleet."""
    with open_store(db, create=False, readonly=True) as store:
        d = sorted(f.received_at - f.meter_time for dev in devices for f in store.frames_after(dev, -1, limit=None))
    return {"store_delay_median_s": round(d[len(d) // 2]), "store_delay_max_s": round(d[-1])} if d else {}


def _present(db: Path, frames: dict[bytes, list[int]]) -> int:
    """How many of these frames the database holds."""
    with open_store(db, create=False, readonly=True) as store:
        return sum(1 for dev, seqs in frames.items() for s in seqs if store.frame_raw(dev, s) is not None)


def _injected(mode: str | None, rng: random.Random) -> tuple[str, int] | None:
    return (mode, rng.randint(2, 6)) if mode in faults.POINTS else None


async def _kills(fleet: KillFleet, plan: Plan, modes: list[str], rng: random.Random, done: list[Kill]) -> None:
    """A kill per mode, spread over the first 70 % of the run (then the meters drain); after each, a restart."""
    step = 0.7 * plan.hours / plan.kills
    for i, mode in enumerate(modes):
        while fleet.clock.hours() < 0.1 + i * step:
            await asyncio.sleep(0.05)
        kill = Kill(mode)
        await _kill_once(fleet, kill, rng)
        done.append(kill)
        nxt = modes[i + 1] if i + 1 < len(modes) else None
        await fleet.restart(_injected(nxt, rng))


async def _queue_resets(fleet: KillFleet, at_hours: list[float], ids: list[int]) -> None:
    """Billing resets (state-changing: a snapshot, a demand reset) queued for every meter at these hours."""
    for h in at_hours:
        while fleet.clock.hours() < h:
            await asyncio.sleep(0.05)
        for m in fleet.meters:
            ids.append(C.queue(fleet.store, m.device, C.OP_BILLING_RESET, None, fleet.clock()))


async def _drive(fleet: KillFleet, plan: Plan, rng: random.Random, kills: list[Kill], resets: list[int]) -> None:
    modes = [MODES[i % len(MODES)] for i in range(plan.kills)]
    rng.shuffle(modes)
    fleet.first_kill = _injected(modes[0], rng)
    await fleet.setup()
    try:
        side = [asyncio.create_task(_kills(fleet, plan, modes, rng, kills)),
                asyncio.create_task(_queue_resets(fleet, [0.0, 0.35 * plan.hours], resets))]
        await fleet.run(settle_s=3.0)
        for t in side:  # they end long before the run does; an exception in them surfaces here
            await t
    finally:
        for t in side:
            t.cancel()
        await fleet.close()


def run(out: Path, long: bool, seed: int) -> T.Result:
    """The scenario: short form (CI) or long form (>= 20 kills)."""
    plan = LONG if long else SHORT
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_path, _, _ = new_key(out / "keys")
    specs = [MeterSpec(f"m{i}", ("random-walk", "constant", "export")[i % 3], "tcp", seed=seed + i)
             for i in range(plan.meters)]
    fleet = KillFleet(out, specs, key_path, hours=plan.hours, speed=plan.speed)
    rng = random.Random(seed)
    kills: list[Kill] = []
    resets: list[int] = []
    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(_drive(fleet, plan, rng, kills, resets), 600 if not long else 3600))
    result = T.Result(NAME, "long" if long else "short")
    result.failures += [line for line in fleet.log if "exited with" in line]
    result.failures += [f for k in kills for f in landing_failures(k)]
    result.failures += _final_checks(fleet, result, resets)
    result.figures = figures(kills, result, time.monotonic() - t0, plan, len(resets))
    result.figures.update(store_delays(fleet.db_path, [m.device for m in fleet.meters]))
    return result


def landing_failures(k: Kill) -> list[str]:
    """What a kill's landing says that it must not: the database damaged, or a batch half stored, or stored
    when it should not be (or not when it should)."""
    what = f"{k.mode} kill ({k.phase}, {k.present}/{k.open_frames} of the open batch stored)"
    out = []
    if not k.served:
        out.append(f"{what}: the process before it stored no fresh frame within {SERVE_TIMEOUT_S:.0f} s")
    if k.returncode != -signal.SIGKILL:
        out.append(f"{what}: the process ended with {k.returncode}, not by SIGKILL")
    if k.integrity != "ok":
        out.append(f"{what}: integrity_check {k.integrity}")
    if k.phase == "in-commit" and k.present not in (0, k.open_frames):
        out.append(f"{what}: half a batch stored")
    if k.phase == "after-commit-before-ack" and k.present != k.open_frames:
        out.append(f"{what}: a committed batch is not all stored")
    if k.mode == "before-commit" and (k.phase, k.present) != ("in-commit", 0):
        out.append(f"{what}: an injected kill before the commit must leave the open batch unstored")
    if k.mode == "after-commit" and (k.phase != "after-commit-before-ack" or not k.open_frames):
        out.append(f"{what}: an injected kill after the commit must land there, with frames")
    return out


def _final_checks(fleet: KillFleet, result: T.Result, resets: list[int]) -> list[str]:
    """Tally every meter (frames made == stored, no decrease, no duplicate), drained outboxes, resets once."""
    out = []
    check = integrity(fleet.db_path)
    if check != "ok":
        out.append(f"integrity_check at the end: {check}")
    with open_store(fleet.db_path, create=False, readonly=True) as db:
        for m in fleet.meters:
            link = m.runs[-1]["link"] if m.runs else None
            pending = range(link["acked"] + 1, link["last_seq"] + 1) if link else ()
            t = T.tally(db, m.device, m.spec.name, m.frames_log, pending)
            result.tallies.append(t)
            if link is None or t.pending or link["acked"] < link["last_seq"]:
                left = link and link["last_seq"] - link["acked"]
                out.append(f"{m.spec.name}: outbox not drained at the end ({left} frames unacknowledged)")
            out += _resets_once(db, m, fleet.start_unix)
        for q in db.queued_commands(ids=resets):
            answered = [a for a in db.command_attempts(q.id) if a.answered_at is not None]
            if (q.state, q.result) != ("answered", 0) or len(answered) != 1:
                out.append(f"billing reset {q.id}: {q.state}, result {q.result}, {len(answered)} answered attempts")
    return out


def _resets_once(db, m, start_unix: int) -> list[str]:
    """Each queued billing reset ran once on the meter: one snapshot and one billing-end event each."""
    snaps = [s for s in db.billing_snapshots(m.device) if s.period_end > start_unix]
    ends = [e for e in db.events(m.device, codes=(events.BILLING_END,)) if e.time > start_unix]
    if len(snaps) != RESETS_PER_METER or len(ends) != RESETS_PER_METER:
        return [f"{m.spec.name}: {len(snaps)} billing snapshots and {len(ends)} billing-end events for "
                f"{RESETS_PER_METER} resets"]
    return []


def figures(kills: list[Kill], result: T.Result, wall_s: float, plan: Plan, resets: int) -> dict:
    phases = [k.phase for k in kills]
    in_commit = [k for k in kills if k.phase == "in-commit"]
    return {
        "kills": len(kills),
        "kills_in_commit": len(in_commit),
        "kills_in_commit_rolled_back": sum(1 for k in in_commit if k.open_frames and not k.present),
        "kills_in_commit_durable": sum(1 for k in in_commit if k.open_frames and k.present == k.open_frames),
        "kills_after_commit_before_ack": phases.count("after-commit-before-ack"),
        "kills_idle": phases.count("idle"),
        "kills_by_mode": {mode: sum(1 for k in kills if k.mode == mode) for mode in MODES},
        "restarts": len(kills),
        "meters": plan.meters, "virtual_hours": plan.hours, "speed": plan.speed,
        "frames": sum(t.made for t in result.tallies),
        "stored": sum(t.stored for t in result.tallies),
        "lost": sum(t.lost for t in result.tallies),
        "duplicates": sum(len(t.duplicates) for t in result.tallies),
        "decreases": sum(len(t.decreases) for t in result.tallies),
        "pending": sum(t.pending for t in result.tallies),
        "billing_resets": resets,
        "wall_s": round(wall_s, 1),
        "landings": [(k.mode, k.phase, k.present, k.open_frames) for k in kills],
    }


def main(argv: list[str] | None = None) -> int:
    """python -m meterkit.torture.concentrator_kills [--long] [--seed N] [--out DIR]: the result as JSON (`meterkit
    torture` is the CLI; this runs the one scenario without it)."""
    import json
    import tempfile

    args = list(sys.argv[1:] if argv is None else argv)
    opt = {k: args[args.index(k) + 1] for k in ("--seed", "--out") if k in args}
    out = Path(opt["--out"]) if "--out" in opt else Path(tempfile.mkdtemp(prefix="meterkit-torture-"))
    result = run(out, "--long" in args, int(opt.get("--seed", 1)))
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
