"""Torture scenario: several concentrators on one database behind HAProxy, one SIGKILLed mid-run and restarted
(issue 13, "Failover"; docs/concentrator.md, "Failover").

N `meterkit concentrator` processes (2; the long form also 3) share one database (a SQLite file, or PostgreSQL:
`db="pg"` starts a server of its own, or a postgresql:// URL) and one head-end key, behind a real HAProxy (leastconn,
health checks, redispatch, PROXY v2 headers read with --proxy-protocol-from). Protocol-level meters (SimMeter
frames, signed with `cryptography`, byte for byte what meter.cose makes) connect through HAProxy, each from its
own loopback address; every few hundred milliseconds each makes a signed reading, keeps it until it is
acknowledged, and sends everything unacknowledged again on each new connection. Every acknowledgement and
command is checked with the firmware's own meter.messages.verify_host (head-end key, this device, counter above
the last accepted, not expired): one that fails is a failure of the run. A command the meter takes is executed
(recorded with its counter) and answered OK in a signed response frame, which it sends again until acknowledged.

Mid-run the concentrator with the most meters is SIGKILLed. The scenario waits until HAProxy marks it down and
every meter holds an acknowledgement issued after the kill (they reconnected through HAProxy to the others),
then restarts it on the same port and waits until HAProxy has it up again; a quarter of the meters then drop
their connections, and leastconn lands them on the restarted process. Operator commands are queued meanwhile:
a billing reset for every meter before the kill, a set-time for every third meter just before it, a billing
reset for the meters that moved back after the restart.

At the end (the meters stop making frames, and wait until all is acknowledged and answered):

- every frame made is stored exactly once (tally: lost 0, nothing pending, no register decrease);
- no acknowledgement or command was refused by a meter (`refused` 0);
- every queued command is answered (OK), with exactly one answered attempt, and each meter executed it exactly
  once (the counters it executed, mapped to queue ids through the commands table: one per queued command);
- every concentrator ended as it should (the killed one by SIGKILL, the others and the restarted one on
  SIGTERM with 0).

Beside them, real firmware meters (the fleet's: the MicroPython Unix port, meterkit.sim.fleet) report over TCP
through the fleet's proxies pointed at HAProxy's address. Then everything runs on the fleet's clock (the
concentrators read its clock file, the protocol meters take their time from it); their frames are tallied from
their frames logs, their outboxes must be drained, and the billing reset queued for each must leave exactly one
billing snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from meter import messages as M
from meter.frame import Deframer
from meter.identity import key_id
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.sim.fleet import Fleet, MeterSpec, TcpProxy
from meterkit.store import is_url, open_store
from meterkit.store.records import NewMeter
from meterkit.testing.haproxy import HAProxy
from meterkit.testing.rig import SimMeter
from meterkit.torture import tally as T
from meterkit.wire.keys import load_private, new_key
from meterkit.wire.tlscerts import make_tls_dir

NAME = "failover"
ACK_TIMEOUT_S = 8.0  # a meter with frames unacknowledged this long on one connection drops it and reconnects
MOVE_TIMEOUT_S = 60.0  # real seconds the meters have to be served again after the kill
DRAIN_TIMEOUT_S = 90.0  # ... to have everything acknowledged and answered at the end


@dataclass(frozen=True)
class Plan:
    concentrators: int
    meters: int
    seconds: float  # real seconds the meters make frames
    period_s: float = 0.5  # real seconds between a meter's readings
    firmware: int = 2  # real firmware meters (the fleet's) beside them
    speed: float = 60.0  # the fleet clock's speed: a firmware meter's reading a minute is one a real second
    tls: bool = False  # every meter over TLS, passed through HAProxy untouched (mode tcp; PROXY header first)


SHORT = (Plan(concentrators=2, meters=40, seconds=20.0),)
LONG = (Plan(concentrators=2, meters=120, seconds=60.0), Plan(concentrators=3, meters=120, seconds=60.0))


# --- the meters ----------------------------------------------------------------------------------------------

class _HeadEndKey:
    """What meter.messages.verify_host wants of a meter's identity: its device id and the head-end key."""

    def __init__(self, device_id: bytes, headend_pub: bytes):
        self.device_id = device_id
        self.headend_pub = headend_pub
        self.headend_id = key_id(headend_pub)

    def headend_lookup(self, kid: bytes) -> bytes | None:
        return self.headend_pub if kid == self.headend_id else None


class ProtoMeter(asyncio.Protocol):
    """A protocol-level meter on TCP: frames made on a schedule, kept until acknowledged, sent again on every new
    connection; acks and commands checked by the firmware's verify_host."""

    def __init__(self, name: str, source: str, headend_pub: bytes, frames_log: Path, now=time.time,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None):
        self.name = name
        self.tls, self.server_name = tls, server_name
        self.source = source  # its own loopback address: the PROXY header names it
        self.now = now  # UTC seconds: the system clock, or the fleet's
        self.sim = SimMeter(time_fn=lambda: int(self.now()), period_s=60)
        self.device = self.sim.device_id
        self.ident = _HeadEndKey(self.device, headend_pub)
        self.frames_log = frames_log
        self._log = open(frames_log, "ab")  # noqa: SIM115 - closed in close()
        self.unacked: dict[int, bytes] = {}  # seq -> its frame, until acknowledged
        self.last_counter = 0  # the last counter accepted (acks and commands), across connections
        self.acked = -1
        self.executed: list[tuple[int, int]] = []  # (counter, op) of every command taken, in order
        self.refused: list[str] = []  # head-end messages this meter refused (each one a failure)
        self.acks = 0
        self.connections = 0
        self.last_ack_at = 0.0  # time.monotonic() of the latest verified ack
        self.transport: asyncio.Transport | None = None
        self.deframer = Deframer()
        self.progress_at = 0.0  # when the connection began or last moved the ack on
        self.lost = asyncio.Event()

    # -- making frames
    def make(self, frame: bytes) -> None:
        seq = self.sim.seq.next - 1
        self.unacked[seq] = frame
        self._log.write(frame)
        self._log.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def reading(self) -> None:
        self.make(self.sim.reading())

    # -- the connection
    async def connect(self, address: tuple[str, int]) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, *address, local_addr=(self.source, 0), ssl=self.tls,
                                         server_hostname=self.server_name if self.tls else None)
        except OSError:
            return False
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.deframer = Deframer()
        self.connections += 1
        self.lost.clear()
        self.progress_at = time.monotonic()
        if self.unacked:
            self.transport.write(b"".join(self.unacked.values()))  # the outbox first, oldest first

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost.set()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        for cose in self.deframer.feed(data):
            self.receive(cose)

    def receive(self, cose: bytes) -> None:
        try:
            kind, counter, m = M.verify_host(cose, self.ident, int(self.now()), self.last_counter)
        except M.HostMessageError as e:
            self.refused.append(f"{e.reason}: {e}")
            return
        self.last_counter = counter
        if kind == M.ACK:
            self.acks += 1
            self.last_ack_at = time.monotonic()
            w = m[M.K_ACK_SEQ]
            if w > self.acked:
                self.acked = w
                self.progress_at = time.monotonic()
            for s in [s for s in self.unacked if s <= w]:
                del self.unacked[s]
            return
        op = m[M.K_OP]
        self.executed.append((counter, op))
        if op == M.OP_BACKFILL:  # send what it still holds of the range again
            args = m.get(M.K_ARGS) or {}
            again = [f for s, f in self.unacked.items() if args.get(M.A_FIRST, 0) <= s <= args.get(M.A_LAST, -1)]
            if self.transport is not None and again:
                self.transport.write(b"".join(again))
        self.make(self.sim.response(counter, M.RESULT_OK))

    def stalled(self) -> bool:
        """Frames unacknowledged and no progress on this connection for ACK_TIMEOUT_S."""
        return bool(self.unacked) and time.monotonic() - self.progress_at > ACK_TIMEOUT_S

    def close(self) -> None:
        self.drop()
        self._log.close()


async def _meter_life(m: ProtoMeter, address: tuple[str, int], making: asyncio.Event, stop: asyncio.Event,
                      period_s: float, rng: random.Random) -> None:
    """Connect (again and again), make a reading every period while `making` is set, until `stop`."""
    next_at = time.monotonic() + rng.uniform(0, period_s)
    while not stop.is_set():
        if m.transport is None:
            if not await m.connect(address):
                await asyncio.sleep(rng.uniform(0.1, 0.4))
                continue
        if m.stalled():
            m.drop()
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            continue
        now = time.monotonic()
        if (making.is_set() or m.unacked) and now >= next_at:  # at the end, readings go on while frames wait
            # (a concentrator answers frames it already stored on a new connection only once it shows a fresh one)
            m.reading()
            next_at = now + period_s
        try:
            await asyncio.wait_for(m.lost.wait(), min(0.2, max(0.01, next_at - now)))
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # the link is gone: back off a little, then reconnect
        except asyncio.TimeoutError:
            pass


# --- the concentrators ---------------------------------------------------------------------------------------

class Node:
    """One `meterkit concentrator` child process on the shared database, listening on a fixed port once known."""

    def __init__(self, out: Path, index: int, db: str, key: Path, clock_file: Path | None = None,
                 tls: tuple[str, ...] = ()):
        self.out, self.index, self.db, self.key, self.clock_file = out, index, db, key, clock_file
        self.tls = tls  # --tls-cert/--tls-key options
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.returncodes: list[int] = []

    @property
    def name(self) -> str:
        return f"c{self.index}"  # HAProxy's name for it

    async def start(self) -> int:
        self.starts += 1
        log = self.out / f"{self.name}-{self.starts}.log"
        cmd = [sys.executable, "-m", "meterkit.cli", "concentrator", "--db", self.db, "--key", str(self.key),
               "--listen", f"127.0.0.1:{self.port}", "--proxy-protocol-from", "127.0.0.1",
               "--clock-drift-max", "off", "--offline-after", "15", "--stats-every", "3600"]
        if self.clock_file is not None:
            cmd += ["--clock-file", str(self.clock_file)]
        cmd += list(self.tls)
        with open(log, "wb") as f:
            self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=f, stderr=asyncio.subprocess.STDOUT)
        for _ in range(1500):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self.port
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start: {log.read_text(errors='replace')[-2000:]}")

    async def sigkill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        rc = await self.proc.wait()
        self.returncodes.append(rc)
        return rc

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), 30)
        except asyncio.TimeoutError:
            self.proc.kill()
            rc = await self.proc.wait()
        self.returncodes.append(rc)


# --- one round -------------------------------------------------------------------------------------------------

@dataclass
class Round:
    plan: Plan
    meters: list[ProtoMeter] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)  # queue ids
    fleet: Fleet | None = None  # the real firmware meters
    fw_resets: list[int] = field(default_factory=list)  # queue ids of their billing resets
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _source(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def _wait(cond, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step)
    return True


def _queue(db: str, devices: list[bytes], op: int, args: dict | None, now: float) -> list[int]:
    with contextlib.closing(open_store(db, create=False)) as store:
        return [C.queue(store, dev, op, args, now, by="failover torture") for dev in devices]


class _Elsewhere:
    """Fleet.run's concentrator: the real ones are child processes, stopped by the scenario."""

    clock = None

    async def stop(self) -> None:
        pass


def _quiet(text: str) -> None:
    pass


class _RoundRun:
    """One round's moving parts, in the order they happen: setup (key, firmware fleet, protocol meters registered,
    concentrators, HAProxy, meters started), serve (all acknowledged, billing resets queued), kill, restart,
    finish (drain), close. Failures go to round.failures, figures to round.figures; `say` narrates (the scale
    demo prints it)."""

    def __init__(self, out: Path, db: str, plan: Plan, seed: int, say=_quiet):
        self.out, self.db, self.plan, self.seed, self.say = out, db, plan, seed, say
        self.r = Round(plan)
        self.fig = self.r.figures
        self.rng = random.Random(seed)
        self.now = time.time  # UTC seconds: the system clock, or the fleet's
        self.clock_file: Path | None = None
        self.nodes: list[Node] = []
        self.lb: HAProxy | None = None
        self.victim: Node | None = None
        self.fleet_run: asyncio.Task | None = None
        self.lives: list[asyncio.Task] = []
        self.making, self.stop = asyncio.Event(), asyncio.Event()
        self.t0 = self.t_kill = 0.0
        self.tls = None  # the TLS files (wire.tlscerts) when the plan runs over TLS

    # -- setup
    async def setup(self) -> None:
        key_path, _, _ = new_key(self.out / "keys")
        headend = P.HeadEnd(load_private(key_path))
        tls, ctx, node_tls = None, None, ()
        if self.plan.tls:
            tls = self.tls = make_tls_dir(self.out / "tls", hosts=("127.0.0.1",))
            ctx = ssl.create_default_context(cafile=str(tls.ca))
            node_tls = ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
        if self.plan.firmware:
            await self._firmware_fleet(key_path)
        (self.out / "meters").mkdir(exist_ok=True)
        self.r.meters = [ProtoMeter(f"p{i}", _source(i), headend.public_bytes, self.out / "meters" / f"p{i}.frames",
                                    self.now, ctx, tls and tls.server_name) for i in range(self.plan.meters)]
        with contextlib.closing(open_store(self.db)) as store:
            store.register_meters([NewMeter(m.sim.public_key, m.name, 60) for m in self.r.meters])
            store.commit()
        self.say(f"{self.plan.meters} protocol meters and {self.plan.firmware} firmware meters registered")
        self.nodes = [Node(self.out, i + 1, self.db, key_path, self.clock_file, node_tls)
                      for i in range(self.plan.concentrators)]
        for n in self.nodes:
            await n.start()
        self.say("concentrators listening: " + ", ".join(f"{n.name} on 127.0.0.1:{n.port}" for n in self.nodes))
        self.lb = HAProxy(self.out / "haproxy", [("127.0.0.1", n.port) for n in self.nodes], send_proxy=True)
        await asyncio.to_thread(self.lb.start)
        self.say(f"HAProxy on {self.lb.address[0]}:{self.lb.address[1]} in front of them (leastconn, health checks)")
        await self._start_meters()

    async def _firmware_fleet(self, key_path: Path) -> None:
        """The real firmware meters provisioned and registered in the database (a SQLite file is made afresh, a
        PostgreSQL database taken as given); from now on everything runs on the fleet's clock."""
        plan, seed = self.plan, self.seed
        specs = [MeterSpec(f"fw{i}", ("random-walk", "constant")[i % 2], "tcp", seed=seed + i)
                 for i in range(plan.firmware)]
        hours = (plan.seconds + 10.0) * plan.speed / 3600
        fleet = self.r.fleet = Fleet(self.out / "fleet", specs, load_private(key_path), self.db, hours=hours,
                                     speed=plan.speed, start_unix=int(time.time()), offline_after=15,
                                     tls=plan.tls)
        fleet.tls_files = self.tls  # the CA the concentrators' certificate comes from
        await fleet.prepare()
        fleet.store.close()
        fleet.store = None
        fleet._publish_clock()
        self.now = lambda: fleet.clock()
        self.clock_file = fleet.clock_file

    async def _start_meters(self) -> None:
        """The firmware meters (through the fleet's proxies, pointed at HAProxy) and the protocol meters' lives."""
        if self.r.fleet is not None:
            for fm in self.r.fleet.meters:
                fm.proxy = TcpProxy(*self.lb.address)
                await fm.proxy.start()
            self.r.fleet.conc = _Elsewhere()
            self.fleet_run = asyncio.create_task(self.r.fleet.run(settle_s=3.0))
        self.making.set()
        self.lives = [asyncio.create_task(_meter_life(m, self.lb.address, self.making, self.stop,
                                                      self.plan.period_s, random.Random(self.seed + i)))
                      for i, m in enumerate(self.r.meters)]
        self.t0 = time.monotonic()

    async def _queue(self, devices: list[bytes], op: int, args: dict | None = None) -> list[int]:
        return await asyncio.to_thread(_queue, self.db, devices, op, args, self.now())

    async def _sessions(self) -> dict[str, int]:
        return {k: s.current for k, s in sorted((await asyncio.to_thread(self.lb.servers)).items())}

    # -- the phases
    async def serve(self) -> None:
        """Every meter connected and acknowledged once; a billing reset queued for every meter."""
        r = self.r
        if not await _wait(lambda: all(m.acks for m in r.meters), MOVE_TIMEOUT_S):
            r.failures.append(f"{sum(1 for m in r.meters if not m.acks)} meters never acknowledged at the start")
        self.say(f"all {len(r.meters)} protocol meters acknowledged; sessions {await self._sessions()}")
        await asyncio.sleep(0.15 * self.plan.seconds)
        r.queued += await self._queue([m.device for m in r.meters], M.OP_BILLING_RESET)
        if r.fleet is not None:
            r.fw_resets = await self._queue([m.device for m in r.fleet.meters], M.OP_BILLING_RESET)
        self.say(f"{len(r.queued) + len(r.fw_resets)} billing resets queued, one for every meter")
        await asyncio.sleep(0.2 * self.plan.seconds)

    async def kill(self) -> None:
        """SIGKILL the concentrator serving the most firmware meters (so that real firmware fails over too), then
        the most meters, right after a set-time was queued for every third meter; wait until HAProxy marks it
        down and every protocol meter is served again."""
        r, fig = self.r, self.fig
        before = await asyncio.to_thread(self.lb.servers)
        fig["sessions_before_kill"] = {k: s.current for k, s in sorted(before.items())}
        on = _firmware_on(r.fleet, self.lb) if r.fleet is not None else {}
        victim = self.victim = max(self.nodes, key=lambda n: (sum(1 for b in on.values() if b == n.name),
                                                              before[n.name].current))
        fig["firmware_on_killed"] = sum(1 for b in on.values() if b == victim.name)
        r.queued += await self._queue([m.device for m in r.meters[::3]], M.OP_SET_TIME, C.set_time_args(False))
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        fig["killed"] = victim.name
        self.say(f"SIGKILL {victim.name}, serving {before[victim.name].current} connections "
                 f"({fig['firmware_on_killed']} of them firmware meters)")
        self.t_kill = time.monotonic()
        fig["killed_returncode"] = await victim.sigkill()
        try:
            await asyncio.to_thread(self.lb.wait_servers, {victim.name: False}, 30.0)
            fig["marked_down_s"] = round(time.monotonic() - self.t_kill, 2)
            self.say(f"HAProxy marked {victim.name} down {fig['marked_down_s']} s after the kill")
        except TimeoutError as e:
            r.failures.append(str(e))
        moved = await _wait(lambda: all(m.last_ack_at > self.t_kill for m in r.meters), MOVE_TIMEOUT_S)
        fig["all_served_again_s"] = round(time.monotonic() - self.t_kill, 2)
        if not moved:
            r.failures.append(f"{sum(1 for m in r.meters if m.last_ack_at <= self.t_kill)} meters not served again "
                              f"within {MOVE_TIMEOUT_S:.0f} s of the kill")
        fig["sessions_after_kill"] = await self._sessions()
        self.say(f"every protocol meter served again {fig['all_served_again_s']} s after the kill; "
                 f"sessions {fig['sessions_after_kill']}")

    async def restart(self) -> None:
        """Restart the killed one on its port, wait until HAProxy has it up; a quarter of the meters drop their
        links (leastconn puts them on the restarted process) and get a billing reset each."""
        r, fig, victim = self.r, self.fig, self.victim
        await victim.start()
        try:
            await asyncio.to_thread(self.lb.wait_servers, {victim.name: True}, 30.0)
            fig["back_up_s"] = round(time.monotonic() - self.t_kill, 2)
            self.say(f"{victim.name} restarted; HAProxy had it up {fig['back_up_s']} s after the kill")
        except TimeoutError as e:
            r.failures.append(str(e))
        back = r.meters[1::4]
        t_back = time.monotonic()
        for m in back:
            m.drop()
        if not await _wait(lambda: all(m.last_ack_at > t_back for m in back), MOVE_TIMEOUT_S):
            r.failures.append("meters that dropped their links after the restart were not served again")
        r.queued += await self._queue([m.device for m in back], M.OP_BILLING_RESET)
        fig["sessions_after_restart"] = await self._sessions()
        self.say(f"{len(back)} meters reconnected; sessions {fig['sessions_after_restart']}")

    async def finish(self) -> None:
        """Make frames for the rest of plan.seconds, then wait until every frame is acknowledged and every queued
        command answered; the firmware meters run their hours out and drain their outboxes."""
        r, fig = self.r, self.fig
        rest = self.plan.seconds - (time.monotonic() - self.t0)
        if rest > 0:
            await asyncio.sleep(rest)
        self.making.clear()
        fig["making_s"] = round(time.monotonic() - self.t0, 1)
        self.say("the meters stop making frames; draining (everything acknowledged, every command answered)")
        drained = await _wait(lambda: not any(m.unacked for m in r.meters)
                              and _answered(self.db, r.queued + r.fw_resets), DRAIN_TIMEOUT_S, 0.25)
        if not drained:
            r.failures.append(f"not drained within {DRAIN_TIMEOUT_S:.0f} s: "
                              f"{sum(len(m.unacked) for m in r.meters)} frames unacknowledged")
        if self.fleet_run is not None:
            await asyncio.wait_for(self.fleet_run, 120)
            r.failures += [line for line in r.fleet.log if "exited with" in line]
        fig["servers_total"] = {k: s.total for k, s in sorted((await asyncio.to_thread(self.lb.servers)).items())}

    async def close(self) -> None:
        """Stop everything that was started; each concentrator must have ended as it should (the killed one by
        SIGKILL, then like the others on SIGTERM with 0)."""
        self.stop.set()
        for t in self.lives:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 5)
        for m in self.r.meters:
            m.close()
        if self.r.fleet is not None:
            if self.fleet_run is not None and not self.fleet_run.done():
                self.fleet_run.cancel()
            await self.r.fleet.close()
        for n in self.nodes:
            await n.stop()
        if self.lb is not None:
            await asyncio.to_thread(self.lb.stop)
        for n in self.nodes:
            want = [-signal.SIGKILL, 0] if n is self.victim else [0]
            if n.returncodes != want:
                self.r.failures.append(f"{n.name} ended with {n.returncodes}, not {want}")


async def _round(out: Path, db: str, plan: Plan, seed: int, say=_quiet) -> Round:
    run = _RoundRun(out, db, plan, seed, say)
    try:
        await run.setup()
        await run.serve()
        await run.kill()
        await run.restart()
        await run.finish()
    finally:
        await run.close()
    return run.r


def _firmware_on(fleet: Fleet, lb: HAProxy) -> dict[str, str]:
    """Which concentrator each firmware meter's connection is on now (its proxy's upstream port, in HAProxy's
    sessions)."""
    sessions = lb.sessions()
    out = {}
    for m in fleet.meters:
        for w in list(m.proxy._pipes):
            peer, me = w.get_extra_info("peername"), w.get_extra_info("sockname")
            if peer and me and tuple(peer[:2]) == lb.address and (me[0], me[1]) in sessions:
                out[m.spec.name] = sessions[(me[0], me[1])]
    return out


def _answered(db: str, ids: list[int]) -> bool:
    with contextlib.closing(open_store(db, create=False, readonly=True)) as store:
        return all(q.state not in ("queued", "sent") for q in store.queued_commands(ids=ids))


# --- the checks ------------------------------------------------------------------------------------------------

def _check(db: str, r: Round, result: T.Result, label: str) -> None:
    with contextlib.closing(open_store(db, create=False, readonly=True)) as store:
        for m in r.meters:
            t = T.tally(store, m.device, f"{label}{m.name}", m.frames_log, m.unacked.keys())
            result.tallies.append(t)
            if t.pending:
                result.failures.append(f"{label}{m.name}: {t.pending} frames still unacknowledged at the end")
            result.failures += [f"{label}{m.name} refused: {why}" for why in m.refused[:3]]
        if r.fleet is not None:
            result.failures += [label + f for f in _firmware_checks(store, r, result, label)]
        queued = {q.id: q for q in store.queued_commands(ids=r.queued)}
        by_meter = {m.device: m for m in r.meters}
        ran = Counter()  # queue id -> times a meter executed it
        for qid, q in queued.items():
            attempts = store.command_attempts(qid)
            answered = [a for a in attempts if a.answered_at is not None]
            if (q.state, q.result) != ("answered", 0) or len(answered) != 1:
                result.failures.append(f"{label}command {qid} ({C.op_name(q.op)}): {q.state}, result {q.result}, "
                                       f"{len(answered)} answered of {len(attempts)} attempts")
            counters = {a.counter for a in attempts}
            ran[qid] = sum(1 for c, _ in by_meter[q.device_id].executed if c in counters)
        twice = {qid: n for qid, n in ran.items() if n != 1}
        if twice:
            result.failures.append(f"{label}commands not executed exactly once (queue id: times): "
                                   f"{dict(list(twice.items())[:5])}")
        r.figures.update({
            "commands_queued": len(queued),
            "commands_answered_ok": sum(1 for q in queued.values() if (q.state, q.result) == ("answered", 0)),
            "commands_executed_once": sum(1 for n in ran.values() if n == 1),
            "command_attempts": sum(q.attempts for q in queued.values()),
        })


def _firmware_checks(store, r: Round, result: T.Result, label: str) -> list[str]:
    """The firmware meters: tallied from their frames logs, outboxes drained, each billing reset run once (one
    answered attempt, one billing snapshot in this run)."""
    out = []
    for m in r.fleet.meters:
        link = m.runs[-1]["link"] if m.runs else None
        pending = range(link["acked"] + 1, link["last_seq"] + 1) if link else ()
        t = T.tally(store, m.device, f"{label}{m.spec.name}", m.frames_log, pending)
        result.tallies.append(t)
        if link is None or t.pending or link["acked"] < link["last_seq"]:
            out.append(f"{m.spec.name}: outbox not drained at the end "
                       f"({link and link['last_seq'] - link['acked']} frames unacknowledged)")
        snaps = [s for s in store.billing_snapshots(m.device) if s.period_end > r.fleet.start_unix]
        if len(snaps) != 1:
            out.append(f"{m.spec.name}: {len(snaps)} billing snapshots for 1 billing reset")
    for q in store.queued_commands(ids=r.fw_resets):
        answered = [a for a in store.command_attempts(q.id) if a.answered_at is not None]
        if (q.state, q.result) != ("answered", 0) or len(answered) != 1:
            out.append(f"firmware billing reset {q.id}: {q.state}, result {q.result}, {len(answered)} answered")
    r.figures["firmware_meters"] = len(r.fleet.meters)
    r.figures["firmware_commands"] = len(r.fw_resets)
    r.figures["firmware_frames"] = sum(t.made for t in result.tallies[-len(r.fleet.meters):])
    return out


def run(out: Path, long: bool, seed: int, db: str | None = None) -> T.Result:
    """The scenario: short form (CI: 2 concentrators, 40 meters) or long form (2, then 3 concentrators, 120
    meters each). db: the database (see run_plans)."""
    return run_plans(Path(out), LONG if long else SHORT, seed, db, "long" if long else "short")


def run_plans(out: Path, plans: tuple[Plan, ...], seed: int, db: str | None = None, form: str = "custom",
              say=_quiet) -> T.Result:
    """Each plan a round in its own directory under out. db: None, a SQLite file in each round's directory;
    "pg", a PostgreSQL server of its own (meterkit.testing.pgserver, in a temporary directory) with a fresh
    database for each round; a postgresql:// URL (or a file), used by every round as it is."""
    result = T.Result(NAME, form)
    t0 = time.monotonic()
    rounds = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(_pg_server(say)) if db == "pg" else None
        for i, plan in enumerate(plans):
            rdir = out / f"n{plan.concentrators}"
            rdir.mkdir(parents=True, exist_ok=True)
            rdb = server.create_database() if server is not None else db or str(rdir / "db.sqlite")
            r = asyncio.run(asyncio.wait_for(_round(rdir, rdb, plan, seed + 1000 * i, say), 900))
            label = f"n{plan.concentrators}/" if len(plans) > 1 else ""
            result.failures += [label + f for f in r.failures]
            _check(rdb, r, result, label)
            rounds.append(r)
    result.figures = figures(rounds, result, time.monotonic() - t0)
    result.figures["database"] = "postgresql" if server is not None or is_url(db) else "sqlite"
    return result


@contextlib.contextmanager
def _pg_server(say):
    from meterkit.testing.pgserver import PgServer

    with PgServer() as server:
        say(f"PostgreSQL started on 127.0.0.1:{server.port} (a throw-away cluster in {server.root})")
        yield server


def figures(rounds: list[Round], result: T.Result, wall_s: float) -> dict:
    ts = result.tallies
    out = {
        "concentrators": [r.plan.concentrators for r in rounds],
        "meters": sum(r.plan.meters for r in rounds),
        "firmware_meters": sum(r.plan.firmware for r in rounds),
        "kills": len(rounds), "restarts": len(rounds),
        "frames": sum(t.made for t in ts), "stored": sum(t.stored for t in ts),
        "lost": sum(t.lost for t in ts), "duplicates": sum(len(t.duplicates) for t in ts),
        "decreases": sum(len(t.decreases) for t in ts), "pending": sum(t.pending for t in ts),
        "acks_verified": sum(m.acks for r in rounds for m in r.meters),
        "refused": sum(len(m.refused) for r in rounds for m in r.meters),
        "connections": sum(m.connections for r in rounds for m in r.meters),
        "commands_queued": sum(r.figures.get("commands_queued", 0) for r in rounds),
        "commands_executed_once": sum(r.figures.get("commands_executed_once", 0) for r in rounds),
        "firmware_commands": sum(r.figures.get("firmware_commands", 0) for r in rounds),
        "wall_s": round(wall_s, 1),
        "rounds": [{"concentrators": r.plan.concentrators, "meters": r.plan.meters, **r.figures} for r in rounds],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """python -m meterkit.torture.failover [--long] [--seed N] [--out DIR] [--db pg|URL]: the result as JSON
    (--db pg: on a PostgreSQL server of its own; default: SQLite)."""
    import json
    import tempfile

    args = list(sys.argv[1:] if argv is None else argv)
    opt = {k: args[args.index(k) + 1] for k in ("--seed", "--out", "--db") if k in args}
    out = Path(opt["--out"]) if "--out" in opt else Path(tempfile.mkdtemp(prefix="meterkit-failover-"))
    result = run(out, "--long" in args, int(opt.get("--seed", 1)), opt.get("--db"))
    print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
