"""Plumbing for simulated fleets: one clock for meters and concentrator, and links that can be cut.

- FleetClock: virtual time = start + real elapsed × speed. Simulated meters throttle to it (`sim.run
  --speed`), so the concentrator's notion of "silent for too long" means the same thing as the meters' clocks.
- PtyBridge: a serial cable between a meter and the concentrator, made of two pty pairs joined by a relay:
  the meter opens one slave, the concentrator (pyserial) the other. `cut()` unplugs it: bytes are lost both
  ways, as on a real pulled cable, until `restore()`.
- TcpProxy: sits between TCP meters and the concentrator; `cut()` drops every connection and refuses new ones
  (a Wi-Fi outage), `restore()` lets them back in. `fault` sees every chunk and may drop one connection at
  any byte (a link that breaks mid-frame); `inject()` writes bytes towards the meters (a man in the middle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterkit.device.toolchain import firmware_dir
from meterkit.sim.runner import provision, sim_command, sim_env
from meterkit.store import is_url
from meterkit.wire.keys import private_dir

RESTART_EXIT = 3  # sim/run.py's exit status when the board restarts (a reboot command, its watchdog)

class FleetClock:
    """start + real elapsed x speed, but never ahead of the slowest running meter that reports its clock
    (`follow`), and held at `end` (if given). Simulated meters share a small machine: when they cannot keep
    up, the fleet waits for them, so a fault scheduled at 14:00 happens at 14:00 on the meter too, and the
    concentrator does not take a lagging meter for a silent one. Never goes backwards."""

    def __init__(self, start_unix: int, speed: float, end: float | None = None):
        self.start = start_unix
        self.speed = speed
        self.end = end
        self.follow: Callable[[], float | None] = lambda: None
        self._t0 = time.monotonic()
        self._last = float(start_unix)

    def __call__(self) -> float:
        t = self.start + (time.monotonic() - self._t0) * self.speed
        slowest = self.follow()
        if slowest is not None and slowest < t:
            t = slowest
        if self.end is not None and t > self.end:
            t = self.end
        if t > self._last:
            self._last = t
        return self._last

    def hours(self) -> float:
        return (self() - self.start) / 3600


async def follow_sim(proc: asyncio.subprocess.Process,
                     on_time: Callable[[float | None], None]) -> tuple[dict | None, bytes]:
    """Read a running `sim.run` to its end: each virtual time it reports (@@T) goes to on_time, None once it
    has exited; returns its result (@@RESULT, or None) and its stderr."""
    err_task = asyncio.create_task(proc.stderr.read())
    result = None
    async for raw in proc.stdout:
        line = raw.decode()
        if line.startswith("@@T "):
            on_time(float(line[4:]))
        elif line.startswith("@@RESULT "):
            result = json.loads(line[len("@@RESULT "):])
    await proc.wait()
    err = await err_task
    on_time(None)
    return result, err


def _raw_pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: a byte pipe like a USB serial port
    path = os.ttyname(slave)
    os.close(slave)  # reopened by whoever uses the path; the master keeps the pair alive
    os.set_blocking(master, False)
    return master, path


class PtyBridge:
    """meter_path <-> relay <-> host_path. Start with `await bridge.start()` inside a running loop.
    baud: the relay holds each byte for the time a UART at that rate (8N1: 10 bits a byte) takes to send it, each
    direction on its own line (a pty itself ignores the rate it is set to); None: as fast as the ptys go."""

    CHUNK = 4096

    def __init__(self, baud: int | None = None):
        self._meter_master, self.meter_path = _raw_pty()
        self._host_master, self.host_path = _raw_pty()
        self.is_cut = False
        self.dropped = 0
        self.relayed = 0
        self.baud = baud
        self._line_free: dict[int, float] = {}  # per destination: when its line has sent what it was given

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._meter_master, self._pump, self._meter_master, self._host_master)
        loop.add_reader(self._host_master, self._pump, self._host_master, self._meter_master)

    def _pump(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, self.CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # the other side has not opened its slave yet (EIO): nothing to move
        if not data:
            return
        if self.is_cut:
            self.dropped += len(data)
            return
        if self.baud:
            loop = asyncio.get_running_loop()
            done = max(loop.time(), self._line_free.get(dst, 0.0)) + len(data) * 10 / self.baud
            self._line_free[dst] = done
            loop.call_at(done, self._deliver, dst, data)
            return
        self._deliver(dst, data)

    def _deliver(self, dst: int, data: bytes) -> None:
        try:
            os.write(dst, data)
            self.relayed += len(data)
        except (BlockingIOError, OSError):
            self.dropped += len(data)  # the far side is not reading: a full line buffer drops bytes

    def cut(self) -> None:
        self.is_cut = True

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._meter_master)
            loop.remove_reader(self._host_master)
        for fd in (self._meter_master, self._host_master):
            with contextlib.suppress(OSError):
                os.close(fd)


class TcpProxy:
    """127.0.0.1:port -> target. Start with `await proxy.start()`; `port` is known after that."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.is_cut = False
        self.refused = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._to_meters: set[asyncio.StreamWriter] = set()
        # fault(chunk, upstream) -> None (pass it on) or an index: pass chunk[:index] on, then drop the connection
        self.fault: Callable[[bytes, bool], int | None] | None = None
        self.drops = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.close()
            return
        self.connections += 1
        self._pipes.update((writer, up_writer))
        self._to_meters.add(writer)
        await asyncio.gather(self._copy(reader, up_writer, writer, True),
                             self._copy(up_reader, writer, up_writer, False))
        self._pipes.difference_update((writer, up_writer))
        self._to_meters.discard(writer)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    other: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while not self.is_cut:
                data = await reader.read(65536)
                if not data:
                    break
                cut = self.fault(data, upstream) if self.fault is not None else None
                writer.write(data if cut is None else data[:cut])
                await writer.drain()
                if cut is not None:  # the link breaks here: both directions of this connection go
                    self.drops += 1
                    other.close()
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def inject(self, data: bytes) -> int:
        """Write data to every meter connected now, as if the concentrator had sent it; returns their count."""
        for w in list(self._to_meters):
            with contextlib.suppress(Exception):
                w.write(data)
        return len(self._to_meters)

    def cut(self) -> None:
        self.is_cut = True
        for w in list(self._pipes):
            with contextlib.suppress(Exception):
                w.close()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --- a fleet of simulated meters reporting to a concentrator ------------------------------------------------

@dataclass
class MeterSpec:
    name: str
    scenario: str
    link: str  # "serial" (a pty bridge) or "tcp" (a proxy in front of the concentrator)
    seed: int = 1
    calendar: str | Path | None = None  # a TOU calendar file (the board's 'tariff' section; docs/tariffs.md)
    billing_day: int | None = None  # local day of month the billing periods end on (the firmware's default: 1)
    rtc: str | None = None  # "unset": the board's clock starts at 2000-01-01, as an ESP32's after power-up
    rtc_offset_s: int | None = None  # ... or runs this far off the fleet's time
    ntp: bool = False  # a time server answers (the fleet's true time), as on Wi-Fi
    rtc_jump: str | None = None  # sim/run.py --rtc-jump for the first run: someone moves the RTC mid-run
    restart_rtc_offset_s: int | None = None  # after a power cut the board's clock comes back this far off
    button_presses: tuple[float, ...] = ()  # the customer presses the button this many fleet seconds into the run
    press_when_ready: bool = False  # each press waits until the meter is ready for reconnection (its light on)
    pace: float | None = None  # sim/run.py --pace: sleeps take real time (/ pace), the link polled as on a board
    baud: int | None = None  # a serial link's rate (PtyBridge), None: as fast as the ptys go


@dataclass
class FleetMeter:
    spec: MeterSpec
    flash: Path
    frames_log: Path  # every frame the meter produced, as it produced it (survives a kill): the ground truth
    device: bytes = b""
    public_key: bytes = b""
    proc: asyncio.subprocess.Process | None = None
    bridge: PtyBridge | None = None
    proxy: TcpProxy | None = None
    runs: list[dict] = field(default_factory=list)  # @@RESULT of every run that ended by itself
    vtime: float | None = None  # the meter's own clock, as it last reported it (@@T)
    power_cuts: int = 0
    link_cuts: int = 0
    restarts: int = 0  # the firmware ended its run as a board restart (exit status 3) and was started again
    _reader: asyncio.Task | None = None
    _power: asyncio.Task | None = None  # the last power action (cut, on): the next one waits for it

    def cut_link(self) -> None:
        self.link_cuts += 1
        (self.bridge or self.proxy).cut()

    def restore_link(self) -> None:
        (self.bridge or self.proxy).restore()


class Fleet:
    """Simulated meters (the real firmware under the Unix port) reporting to a real Concentrator.

    Meters are provisioned (keys made on the meter, head-end key installed, public keys registered), then run
    at `speed` times real time on one FleetClock. `at(hour, action)` schedules faults: cut_link/restore_link,
    power_cut/power_on (the process is SIGKILLed and later restarted on the same flash). A firmware run that ends
    as a board restart (a reboot command, its watchdog: exit status 3) is started again on its flash.
    """

    def __init__(self, out_dir: Path, specs: list[MeterSpec], headend_key: Any, db_path: Path | str, *,
                 hours: float = 24.0, speed: float = 1440.0, start_unix: int = 1793491200,
                 reading_s: int = 60, offline_after: float = 15, clock_drift_max_s: float | None = None,
                 clock_jitter_s: float = 2.0, tls: bool = False, mtls: bool = False, drain_ms: int = 30000):
        self.out = Path(out_dir)
        # TLS on every TCP link (the CA pinned on the meters, wire.tlscerts); mtls: meter certificates required
        self.tls = tls or mtls
        self.mtls = mtls
        self.tls_files: Any = None
        self.drain_ms = drain_ms  # real time a meter waits for its last acknowledgements at the end of its run
        self.specs = specs
        self.headend_key = headend_key
        self.db_path = db_path if is_url(db_path) else Path(db_path)  # a SQLite file or a postgresql:// URL
        self.hours = hours
        self.speed = speed
        self.start_unix = start_unix
        self.reading_s = reading_s
        # Silent for 15 reporting periods (15 min) = offline. At 1440x that is 0.6 s of real time: a tighter
        # threshold would see CPU scheduling jitter on a small machine as outages.
        self.offline_after = offline_after
        # The concentrator sets unset clocks, but by default leaves drift alone here: receive times on the fleet
        # clock step by ~18 virtual seconds (it follows the meters' @@T lines) and meters run up to two minutes
        # ahead of it (sim/run.py, FLEET_SLACK_S), too coarse to tell prompt frames from an outbox burst.
        self.clock_settings = {"clock_drift_max_s": clock_drift_max_s, "clock_jitter_s": clock_jitter_s}
        self.meters: list[FleetMeter] = []
        self.clock = FleetClock(start_unix, speed, start_unix + hours * 3600)
        self.store = None
        self.conc = None
        self.schedule: list[tuple[float, str, str]] = []
        self.clock_file = self.out / "fleet-clock"
        self.log: list[str] = []
        # attach(concentrator): called for every concentrator the fleet starts (at setup, after each restart),
        # listening and before the meters start; e.g. an MQTT bridge (integrations.mqtt) that stops and dies with it
        self.attach: Callable[[Any], Any] | None = None
        self.firmware_pub: bytes | None = None  # the firmware-signing public key provisioning installs, if any

    def at(self, hour: float, action: str, meter: str) -> None:
        self.schedule.append((hour, action, meter))
        self.schedule.sort()

    # -- set-up ------------------------------------------------------------------------------------------
    async def _provision(self, m: FleetMeter, headend_point: bytes) -> None:
        ident = await asyncio.to_thread(provision, m.flash, headend_point, None, self.firmware_pub)
        m.device = bytes.fromhex(ident["device_id"])
        m.public_key = bytes.fromhex(ident["public_key"])

    async def setup(self) -> None:
        await self.prepare()
        self.conc = self._concentrator()
        host, port = await self.conc.start_tcp()
        if self.attach is not None:
            self.attach(self.conc)
        for m in self.meters:
            if m.spec.link == "serial":
                m.bridge = PtyBridge(m.spec.baud)
                await m.bridge.start()
                self.conc.add_serial(m.bridge.host_path)
            else:
                m.proxy = TcpProxy(host, port)
                await m.proxy.start()

    async def prepare(self) -> None:
        """The meters provisioned and registered in a fresh database (self.store); no concentrator yet. A SQLite
        file is made afresh; a postgresql:// database is the caller's to give fresh (its schema made if missing)."""
        from cryptography.hazmat.primitives import serialization

        from meterkit.store import open_store
        self.out.mkdir(parents=True, exist_ok=True)
        point = self.headend_key.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)
        for spec in self.specs:
            flash = self.out / "meters" / spec.name
            if flash.exists():
                shutil.rmtree(flash)
            private_dir(flash)  # the meter's private key lives in its flash
            log = self.out / "meters" / f"{spec.name}.frames"
            log.unlink(missing_ok=True)
            self.meters.append(FleetMeter(spec, flash, log))
        await asyncio.gather(*(self._provision(m, point) for m in self.meters))
        if self.tls and self.tls_files is None:  # (given: the head-end's, made by whoever runs it)
            from meterkit.wire.tlscerts import make_tls_dir

            shutil.rmtree(self.out / "tls", ignore_errors=True)
            self.tls_files = make_tls_dir(self.out / "tls", hosts=("127.0.0.1",),
                                          meters=tuple(m.spec.name for m in self.meters) if self.mtls else ())
        if not is_url(self.db_path):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        self.store = open_store(self.db_path)
        for m in self.meters:
            self.store.register_meter(m.device, m.public_key, m.spec.name)

    def _concentrator(self) -> Any:
        from meterkit import wire as protocol
        from meterkit.headend.concentrator import Concentrator

        tls = {}
        if self.tls:
            f = self.tls_files
            tls = {"tls_cert": str(f.cert), "tls_key": str(f.key), "tls_client_ca": str(f.ca) if self.mtls else None}
        return Concentrator(self.store, protocol.HeadEnd(self.headend_key), clock=self.clock,
                            offline_after=self.offline_after, **self.clock_settings, **tls)

    def _install_tls(self, m: FleetMeter) -> list[str]:
        """Provision a meter for TLS: the CA (and its certificate, for mutual TLS) in its flash; the sim.run options
        that are its board's link.tls section."""
        f = self.tls_files
        d = private_dir(m.flash / "tls")
        shutil.copyfile(f.ca_der, d / "ca.der")
        opts = ["--tls-ca", "tls/ca.der", "--tls-name", f.server_name]
        if self.mtls:
            cert, key = f.meters[m.spec.name]
            shutil.copyfile(cert, d / "meter.der")
            shutil.copyfile(key, d / "meter.key.der")
            opts += ["--tls-cert", "tls/meter.der", "--tls-key", "tls/meter.key.der"]
        return opts

    async def restart_concentrator(self) -> None:
        """Kill the concentrator (nothing pending stored or acknowledged) and start a new one on the database."""
        from meterkit.store import open_store

        await self.conc.kill()
        self.store.close()
        self.store = open_store(self.db_path)
        self.conc = self._concentrator()
        host, port = await self.conc.start_tcp()
        if self.attach is not None:
            self.attach(self.conc)
        for m in self.meters:
            if m.bridge is not None:
                self.conc.add_serial(m.bridge.host_path)
            else:
                m.proxy.target = (host, port)

    # -- running -----------------------------------------------------------------------------------------
    async def _start_meter(self, m: FleetMeter) -> None:
        remaining = self.hours - self.clock.hours()
        link = f"serial:{m.bridge.meter_path}" if m.bridge else \
            f"{'tls' if self.tls else 'tcp'}:127.0.0.1:{m.proxy.port}"
        start = int(self.clock())
        cmd = sim_command(m.spec.scenario, max(remaining, 0.0), flash_dir=m.flash, seed=m.spec.seed, start=start)
        cmd += ["--speed", repr(self.speed), "--link", link, "--frames", str(m.frames_log),
                "--reading-s", str(self.reading_s), "--drain-ms", str(self.drain_ms),
                "--clock-file", str(self.clock_file)]
        if self.tls and not m.bridge:
            cmd += self._install_tls(m)
        if m.spec.calendar is not None:  # the firmware runs in the checkout: an absolute path
            cmd += ["--calendar", str(Path(m.spec.calendar).resolve())]
        if m.spec.billing_day is not None:
            cmd += ["--billing-day", str(int(m.spec.billing_day))]
        if m.spec.rtc is not None:  # every start is a power-up: an ESP32's RTC starts unset each time
            cmd += ["--rtc", m.spec.rtc]
        offset = m.spec.restart_rtc_offset_s if m.power_cuts else m.spec.rtc_offset_s
        if offset is not None:
            cmd += ["--rtc-offset", str(int(offset))]
        if m.spec.rtc_jump is not None and not m.power_cuts:
            cmd += ["--rtc-jump", m.spec.rtc_jump]
        if m.spec.ntp:
            cmd += ["--ntp"]
        if m.spec.pace is not None:
            cmd += ["--pace", repr(float(m.spec.pace))]
        ahead = [p - (start - self.start_unix) for p in m.spec.button_presses if p > start - self.start_unix]
        if ahead:  # sim/run.py counts from its own start: a press still ahead of this run
            cmd += ["--press", ",".join(repr(float(p)) for p in ahead)]
            if m.spec.press_when_ready:
                cmd += ["--press-when-ready"]
        m.vtime = float(start)  # followed from its launch: the fleet clock must not run ahead while it starts
        m.proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.PIPE, env=sim_env(),
                                                      cwd=str(firmware_dir().parent))
        m._reader = asyncio.create_task(self._collect(m, m.proc))

    async def _collect(self, m: FleetMeter, proc: asyncio.subprocess.Process) -> None:
        def follow(t: float) -> None:  # a killed process's buffered lines no longer move the clock
            if m.proc is proc:
                m.vtime = t

        result, err = await follow_sim(proc, follow)  # None at exit: not followed
        if result is not None:
            m.runs.append(result)
        elif proc.returncode == RESTART_EXIT and m.proc is proc:
            # the board restarted (a reboot command, its watchdog): it boots again from its flash
            m.restarts += 1
            self.log.append(f"{self.clock.hours():5.2f} h  {m.spec.name} restarted")
            await self._start_meter(m)
        elif proc.returncode not in (-signal.SIGKILL,):
            self.log.append(f"{m.spec.name} exited with {proc.returncode}: {err.decode()[-800:]}")

    def _slowest(self) -> float | None:
        running = [m.vtime for m in self.meters if m.vtime is not None]
        return min(running) if running else None

    def _apply(self, action: str, name: str) -> None:
        if action == "restart_concentrator":
            asyncio.get_running_loop().create_task(self.restart_concentrator())
            self.log.append(f"{self.clock.hours():5.2f} h  {action}")
            return
        m = next((x for x in self.meters if x.spec.name == name), None)
        if m is None:
            raise ValueError(f"no meter named {name!r} in this fleet")
        if action == "cut_link":
            m.cut_link()
        elif action == "restore_link":
            m.restore_link()
        elif action in ("power_cut", "power_on"):
            m._power = asyncio.get_running_loop().create_task(self._switch_power(m, action, m._power))
        self.log.append(f"{self.clock.hours():5.2f} h  {action} {name}")

    async def _switch_power(self, m: FleetMeter, action: str, before: asyncio.Task | None) -> None:
        """Cuts and power-ons of one meter happen in their order: a cut right after a power-on kills the
        process that power-on started (not the one before it), and a power-on starts once the killed process
        is gone, so two firmware processes never share one flash."""
        if before is not None:
            await before
        if action == "power_on":
            await self._start_meter(m)
            return
        m.power_cuts += 1
        proc = m.proc
        if proc is not None and proc.returncode is None:
            m.proc, m.vtime = None, None
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

    def _publish_clock(self) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{self.clock():.0f}")
        os.replace(tmp, self.clock_file)  # a meter never reads a half-written time

    async def run(self, progress: Callable[[float], None] | None = None, settle_s: float = 3.0) -> None:
        self.clock = FleetClock(self.start_unix, self.speed, self.start_unix + self.hours * 3600)
        self.clock.follow = self._slowest
        self.conc.clock = self.clock
        self._publish_clock()
        await asyncio.gather(*(self._start_meter(m) for m in self.meters))
        pending = list(self.schedule)
        while True:
            self._publish_clock()
            h = self.clock.hours()
            while pending and pending[0][0] <= h:
                _, action, name = pending.pop(0)
                self._apply(action, name)
            if progress:
                progress(min(h / self.hours, 1.0))
            running = [m for m in self.meters if m.proc is not None and m.proc.returncode is None]
            if not running and not pending and all((m._reader is None or m._reader.done())
                                                   and (m._power is None or m._power.done()) for m in self.meters):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle_s)  # the last acknowledgements and back-fills
        await self.conc.stop()

    async def close(self) -> None:
        for m in self.meters:  # no simulated meter outlives its fleet (it would keep dialling a reused pty)
            if m.proc is not None and m.proc.returncode is None:
                m.proc.kill()
                with contextlib.suppress(ProcessLookupError):
                    await m.proc.wait()
        for m in self.meters:
            if m.bridge is not None:
                m.bridge.close()
            if m.proxy is not None:
                await m.proxy.close()
        if self.store is not None:
            self.store.close()


def run_fleet(fleet: Fleet, timeout_s: float = 300.0, settle_s: float = 3.0,
              before: Callable[[Fleet], Any] | None = None,
              alongside: Callable[[Fleet], Awaitable[Any]] | None = None) -> Any:
    """Set the fleet up, run it to its end and close it, all within timeout_s of real time (tests, tools).
    before(fleet), when given, runs once the fleet is set up (meters provisioned and registered, concentrator
    listening) and before the meters start, e.g. to queue commands; its result is returned. alongside(fleet), a
    coroutine, runs beside the fleet (an operator acting at fleet times); then its result is returned."""

    async def scenario() -> Any:
        await fleet.setup()
        try:
            got = before(fleet) if before is not None else None
            task = asyncio.ensure_future(alongside(fleet)) if alongside is not None else None
            await fleet.run(settle_s=settle_s)
            if task is not None:
                got = await task
        finally:
            await fleet.close()
        return got

    return asyncio.run(asyncio.wait_for(scenario(), timeout_s))
