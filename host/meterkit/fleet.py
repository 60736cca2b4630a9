"""Plumbing for simulated fleets: one clock for meters and concentrator, and links that can be cut.

- FleetClock: virtual time = start + real elapsed × speed. Simulated meters throttle to it (`sim.run
  --speed`), so the concentrator's notion of "silent for too long" means the same thing as the meters' clocks.
- PtyBridge: a serial cable between a meter and the concentrator, made of two pty pairs joined by a relay:
  the meter opens one slave, the concentrator (pyserial) the other. `cut()` unplugs it: bytes are lost both
  ways, as on a real pulled cable, until `restore()`.
- TcpProxy: sits between TCP meters and the concentrator; `cut()` drops every connection and refuses new ones
  (a Wi-Fi outage), `restore()` lets them back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty


class FleetClock:
    def __init__(self, start_unix: int, speed: float):
        self.start = start_unix
        self.speed = speed
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed

    def hours(self) -> float:
        return (self() - self.start) / 3600


def _raw_pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: a byte pipe like a USB serial port
    path = os.ttyname(slave)
    os.close(slave)  # reopened by whoever uses the path; the master keeps the pair alive
    os.set_blocking(master, False)
    return master, path


class PtyBridge:
    """meter_path <-> relay <-> host_path. Start with `await bridge.start()` inside a running loop."""

    CHUNK = 4096

    def __init__(self):
        self._meter_master, self.meter_path = _raw_pty()
        self._host_master, self.host_path = _raw_pty()
        self.is_cut = False
        self.dropped = 0
        self.relayed = 0

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
        await asyncio.gather(self._copy(reader, up_writer), self._copy(up_reader, writer))
        self._pipes.difference_update((writer, up_writer))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self.is_cut:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

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
