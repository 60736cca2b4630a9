"""The concentrator: meters in over TCP and serial, signed frames verified, stored once, acknowledged after the
commit; what is missing asked for, outages noticed, operator commands delivered (docs/concentrator.md).

    Concentrator(store, headend, clock=time.time, offline_after=3, ...)  # or config=ConcentratorConfig(...)
    await c.start(listen=[("0.0.0.0", 4840)], serial=["/dev/ttyUSB0"]);  ...;  await c.stop()
    meterkit concentrator --db PATH [--listen HOST:PORT] [--serial PORT ...] --key HEADEND.key.pem

This module wires the parts and runs them:

    connections   TCP peers and serial ports, deframing, rate limit, backpressure, abuse limits
    ingest        verify -> dedupe -> records -> store (storage) -> commit -> acknowledge (acks)
    gaps          missing frames (back-fill) and load-profile rows (profile requests)
    outages       silent meters, matched with their own account afterwards
    dispatch      signed commands; the operator's queue
    clocks        meters' clock drift, and set-time commands for unset or drifted clocks
    devices       per-meter state, the registry of meter keys
    counters      counts and rejects, published and saved only with the commit that made them
    monitor       the security monitor: alerts from all of the above (docs/alerts.md)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from meterkit import wire as P
from meterkit.headend.clocks import Clocks
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.connections import Connections, Link
from meterkit.headend.counters import Counters
from meterkit.headend.devices import Device, Devices
from meterkit.headend.dispatch import Dispatch
from meterkit.headend.gaps import FrameGaps, IntervalGaps
from meterkit.headend.handover import PortControl
from meterkit.headend.ingest import Ingest
from meterkit.headend.keyring import KeyRing
from meterkit.headend.monitor import ActivatedUpdates, Monitor
from meterkit.headend.outages import Outages
from meterkit.store.api import Store, StoreUnavailable

log = logging.getLogger(__name__)

IDLE_SWEEP_MIN_S = 0.05


class Concentrator:
    """Meters in, verified frames stored once, acknowledged after commit.

    Settings: a ConcentratorConfig, or its fields as keywords (they replace those of `config`). `clock` is the
    time every decision is taken by (outages, gaps, expiry); it may be replaced while running (a simulated
    fleet's clock)."""

    def __init__(self, store: Store, headend: P.HeadEnd | KeyRing, clock: Callable[[], float] = time.time, *,
                 config: ConcentratorConfig | None = None, **settings: Any):
        cfg = self.config = dataclasses.replace(config or ConcentratorConfig(), **settings)
        self.store = store
        # every meter's commands and acks signed with the head-end key it holds (headend.keyring)
        headend = self.headend = headend if isinstance(headend, KeyRing) else KeyRing([headend], store)
        self.clock = clock
        self.addresses: list[tuple[str, int]] = []
        self.counters = Counters(store, self._now)
        self.guard = P.ReplayGuard(cfg.replay_window)
        self.devices = Devices(store, self.guard, cfg.registry_refresh_s)
        self.counters.known = self.devices.is_registered  # rejects naming unknown kids: per source, not per kid
        self.conns = Connections(cfg, self.counters, on_ready=self._frames_waiting, on_lost=self._link_lost)
        self.outages = Outages(cfg, store, self.counters, started=clock())
        self.frame_gaps = FrameGaps(cfg, store, headend, self.counters)
        self.interval_gaps = IntervalGaps(cfg, store, self.counters)
        self.dispatch = Dispatch(cfg, store, headend, self.counters, self.devices, self.frame_gaps)
        self.clocks = Clocks(cfg, store, self.counters, self.devices)
        self.ingest = Ingest(cfg, store, headend, self.counters, self.devices, self.conns, self.guard,
                             self.frame_gaps, self.outages, self.dispatch, self._now, self.clocks)
        self.monitor: Monitor | None = None
        if cfg.alert_rules is not None:
            self.monitor = self._monitor(Monitor(cfg.alert_rules, store, self._now, self.devices.is_registered,
                                                 cfg.limit_log_s))
        self._house: asyncio.Task | None = None
        self.port_control: PortControl | None = None
        self.northbound: list[Any] = []  # publishers attached (meterkit.integrations.mqtt): add_northbound

    def _monitor(self, m: Monitor) -> Monitor:
        """Attach the security monitor to the parts whose signals it takes; its alerts join every transaction."""
        m.watch.load(self.store)
        m.expect_firmware(ActivatedUpdates(self.store))  # a rollout's change is no intrusion
        self.counters.writers.append(m)
        self.counters.on_reject = m.rejected
        self.conns.on_connection = m.connected
        self.ingest.monitor = m
        return m

    def add_northbound(self, sink: Any) -> None:
        """Attach a publisher: sink.committed(frames, readings, hellos) after every ingest commit (it must not
        block or raise), sink.stop() when the concentrator stops, sink.kill() when it is killed."""
        self.northbound.append(sink)
        self.ingest.northbound = self.northbound

    def _now(self) -> float:
        return self.clock()

    def _frames_waiting(self) -> None:
        self.ingest.schedule()

    def _link_lost(self, link: Link) -> None:
        for d in self.devices:
            if d.link is link:
                d.link = None

    def stats(self) -> dict:
        """Counters since the database was created (persisted), plus the live connection figures."""
        out = self.counters.snapshot()
        devices = list(self.devices)
        out["connections_open"] = len(self.conns.links)
        out["meters_known"] = self.devices.registered
        out["meters_online"] = sum(1 for d in devices if d.online)
        out["gaps_open"] = sum(len(d.gaps) for d in devices)
        if self.monitor is not None:
            out.update(self.monitor.stats())
        return out

    # -- housekeeping (injected clock)
    def tick(self) -> None:
        """Outages, interval gaps, back-fill commands, the operator's queue; saves the counters. Runs every
        tick_s; tests call it."""
        now = self.clock()
        backfills: list[tuple] = []
        scanned: list[Device] = []
        try:
            with self.counters.transaction():
                self.devices.refresh()  # meters whose state a failed transaction left unread
                # in device order, as every process takes meters' rows (PostgreSQL: no deadlock between them)
                for d in sorted(self.devices, key=lambda d: d.id):
                    if d.gaps and d.connected:  # a back-fill may be signed: its counter as committed
                        self.devices.hold([d.id])
                        d = self.devices.get(d.id)
                    self.outages.check_silence(d, now)
                    self.outages.match_due(d, now)
                    if d.rows_from is not None:
                        self.interval_gaps.scan(d, now)
                        scanned.append(d)
                    backfills += self.frame_gaps.request_due(d, now)
                self.interval_gaps.check(self.devices, now)
        except StoreUnavailable as e:  # the database is down: said once a tick, no traceback
            log.warning("housekeeping not done: %s", e)
            self.devices.reload(self.devices.ids())
            return
        except Exception:  # noqa: BLE001 - logged; the next tick does it all again
            log.exception("housekeeping")
            self.devices.reload(self.devices.ids())
            return
        for d in scanned:
            d.rows_from = None  # scanned and committed: a failed tick scans again
        self.frame_gaps.send(backfills)
        self.dispatch.send_queued(now)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        sweep = min(cfg.tick_s, max(IDLE_SWEEP_MIN_S, min(cfg.idle_timeout, cfg.auth_timeout) / 4))
        next_tick = loop.time()
        while True:
            await asyncio.sleep(sweep)
            t = loop.time()
            self.conns.sweep_idle(t)
            if t >= next_tick:
                next_tick = t + self.config.tick_s
                self.tick()

    # -- life cycle
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024) -> tuple[str, int]:
        """Listen for meters on host:port (port 0: any free port); returns the address bound."""
        self._ensure_loop()
        addr = await self.conns.listen(host, port, backlog)
        self.addresses.append(addr)
        log.info("listening on %s:%d", *addr)
        return addr

    def add_serial(self, url: str) -> None:
        """Read meters on a serial port (pyserial URL or device path); reopened whenever it comes back."""
        self._ensure_loop()
        self.conns.add_serial(url)

    async def start(self, listen: Iterable[tuple[str, int]] = (), serial: Iterable[str] = ()) -> None:
        for host, port in listen:
            await self.start_tcp(host, port)
        for url in serial:
            self.add_serial(url)

    def _ensure_loop(self) -> None:
        if self.conns.loop is None:
            loop = asyncio.get_running_loop()
            self.conns.attach(loop)
            self._house = loop.create_task(self._housekeeping())

    def serial_open(self, url: str) -> bool:
        return self.conns.serial_open(url)

    async def start_port_control(self, path: str) -> None:
        """Lend serial ports to the tools that ask on the Unix socket `path` (headend.handover)."""
        self._ensure_loop()
        self.port_control = PortControl(self.conns)
        await self.port_control.start(path)

    async def stop(self) -> None:
        """Stop serving: close servers, serial ports and connections; store what is pending."""
        self.conns.stop_listening()
        if self.port_control is not None:
            await self.port_control.stop()
        self.ingest.drain()  # store and acknowledge what has arrived before hanging up
        self.conns.close_all()
        await self._end_tasks()
        await self.conns.wait_closed()
        self.ingest.cancel()
        self.conns.drop_waiting()
        try:
            with self.counters.transaction():
                pass  # the counts not saved yet
        except StoreUnavailable as e:
            log.warning("counters not stored at stop: %s", e)
        except Exception:  # noqa: BLE001
            log.exception("storing counters at stop")
        for sink in self.northbound:
            sink.stop()
        self._forget()

    async def kill(self) -> None:
        """Die as a SIGKILL would kill the process: frames received but not yet committed are neither stored
        nor acknowledged, connections are reset, the open transaction is rolled back. (Tests and the demo's
        fleet use it; the meters must resend what was lost, and the database must hold no half batch.)"""
        self.conns.stop_listening()
        self.ingest.cancel()
        self.conns.drop_waiting()
        self.conns.close_all(abort=True)  # unsent acknowledgements die with the process
        await self._end_tasks()
        self.store.rollback()
        for sink in self.northbound:
            sink.kill()
        self._forget()

    async def _end_tasks(self) -> None:
        """Cancel the serial readers and the housekeeping task, and wait until they are gone."""
        tasks = [*self.conns.serial_tasks(), *([self._house] if self._house else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _forget(self) -> None:
        self.conns.forget()
        self._house = None

    async def __aenter__(self) -> Concentrator:
        self._ensure_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
