"""Port hand-over: the concentrator lets go of a serial port while a tool (meterkit device deploy, provision,
calibrate) uses the board behind it, and takes it back afterwards.

The concentrator serving DB listens on a Unix socket beside it, `control_path(DB)` (DB + ".port"). A tool
connects and sends `release PORT\\n`; if the concentrator reads that port (same device after resolving
links), it closes it and answers `released PORT\\n`, otherwise `not-serving PORT\\n`. The hold lasts exactly as
long as the tool's connection: when it closes (the tool finished, or died), the concentrator opens the port
again and the meter, restarted by the tool, reports on it as before. Nothing to clean up after a crash.

    with released("fleet.db", "/dev/ttyUSB0"):     # -> True (released) / False (no concentrator holds it)
        ...  # the port is free
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SUFFIX = ".port"
TIMEOUT_S = 10.0


class HandoverError(RuntimeError):
    pass


def control_path(db: str | os.PathLike) -> str:
    return str(Path(db).resolve()) + SUFFIX


class PortControl:
    """The concentrator's side: a Unix socket server that holds serial ports for its clients."""

    def __init__(self, conns: Any):
        self.conns = conns
        self.server: asyncio.AbstractServer | None = None
        self.path: str | None = None

    async def start(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a concentrator that died
        self.server = await asyncio.start_unix_server(self._client, path)
        self.path = path

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[str] = []
        try:
            while True:
                line = (await reader.readline()).decode(errors="replace").strip()
                if not line:
                    break
                verb, _, port = line.partition(" ")
                url = self.conns.serving(port) if verb == "release" else None
                if url is None:
                    writer.write(f"not-serving {port}\n".encode())
                else:
                    self.conns.hold(url)
                    held.append(url)
                    log.info("serial %s: released for %s", url, "a tool")
                    writer.write(f"released {port}\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for url in held:
                self.conns.unhold(url)
                log.info("serial %s: taken back", url)
            writer.close()


@contextlib.contextmanager
def released(db: str | os.PathLike, port: str, timeout: float = TIMEOUT_S) -> Iterator[bool]:
    """The tool's side: ask the concentrator serving `db` to let go of `port` for the duration of the block.
    Yields True when it did, False when no concentrator holds that port; HandoverError if one does not answer."""
    path = control_path(db)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            yield False  # no concentrator runs on that database
            return
        s.sendall(f"release {port}\n".encode())
        try:
            answer = s.makefile("rb").readline().decode(errors="replace").strip()
        except OSError as e:
            raise HandoverError(f"the concentrator of {db} did not answer the release of {port}: {e}") from None
        yield answer.startswith("released")
    finally:
        s.close()
