"""A flood of idle TCP connections against a real concentrator, with a legitimate meter beside it (issue 11,
finding 6). `meterkit concentrator` runs in a subprocess with its file-descriptor limit lowered (RLIMIT_NOFILE);
this process opens `conns` connections from `sources` loopback addresses (127.0.0.2 ...) and leaves them idle,
then a registered meter (the rig's SimMeter and MeterClient: it checks every acknowledgement as a meter must)
connects from 127.0.0.1, reconnects when it is hung up on, and sends a frame every `every_s` seconds. Measured:
the concentrator's open descriptors (/proc), the flood connections it still holds, the meter's frames and
acknowledgements, and the concentrator's log lines and tracebacks.

    python -m meterkit.testing.flood [nofile=256] [conns=400] [sources=1] [seconds=12] [pythonpath=DIRS]
                                     [-- FLAGS...]

FLAGS go to `meterkit concentrator` (e.g. --max-per-source 8); pythonpath runs the concentrator of another
checkout (DIRS: its host:firmware directories), for a before-and-after measurement. Prints the FloodResult as
JSON. Used by tests/host/test_fd_flood.py and for the figures of docs/security.md ("Connection limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from meterkit import wire as P
from meterkit.store.sqlite import SQLiteStore
from meterkit.testing.rig import MeterClient, SimMeter
from meterkit.wire.keys import load_public, new_key

_CLI = "import sys; from meterkit.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class FloodResult:
    conns: int  # flood connections opened
    flood_held: int  # ... still open at the end (the concentrator did not hang up on them)
    server_fds_max: int  # the most descriptors the concentrator held at once
    frames: int  # frames the meter made
    acked: int  # ... of them acknowledged (the highest ack + 1: the meter's frames are numbered from 0)
    meter_connects: int  # connections the meter needed
    log_lines: int  # the concentrator's log (stderr) lines
    tracebacks: int  # ... of them starting a traceback
    exit_code: int | None


def _limit(nofile: int):
    def set_limit() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    return set_limit


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def still_open(sock: socket.socket) -> bool:
    """Is a flood connection still open (not closed or reset by the concentrator)?"""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def open_idle(port: int, conns: int, sources: int) -> list[socket.socket]:
    out = []
    for i in range(conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.0.{2 + i % sources}", 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


class _Meter:
    """A registered meter that keeps reconnecting and resends what is not acknowledged, as the firmware does."""

    def __init__(self, meter: SimMeter, port: int, lookup):
        self.meter, self.port, self.lookup = meter, port, lookup
        self.frames: list[bytes] = []
        self.acked = -1
        self.connects = 0
        self.client: MeterClient | None = None

    def _alive(self) -> bool:
        return self.client is not None and not self.client.closed.is_set()

    async def _connect(self) -> None:
        try:
            self.client = await asyncio.wait_for(MeterClient.connect(self.meter, "127.0.0.1", self.port,
                                                                     self.lookup, now=lambda: int(time.time())), 2)
        except (OSError, asyncio.TimeoutError):
            self.client = None
            return
        self.connects += 1
        for seq, fr in enumerate(self.frames):
            if seq > self.acked:
                self.client.send(fr)

    async def run(self, seconds: float, every_s: float) -> None:
        end = time.monotonic() + seconds
        next_frame = 0.0
        while time.monotonic() < end or (self.acked < len(self.frames) - 1 and time.monotonic() < end + 5):
            if not self._alive():
                await self._connect()
            now = time.monotonic()
            if now >= next_frame and now < end:
                self.meter.t = int(time.time())
                fr = self.meter.hello() if not self.frames else self.meter.reading()
                self.frames.append(fr)
                next_frame = now + every_s
                if self._alive():
                    self.client.send(fr)
            if self.client is not None and self.client.acked is not None:
                self.acked = max(self.acked, self.client.acked)
            await asyncio.sleep(0.1)
        if self._alive():
            self.client.close()


async def _run(tmp: Path, nofile: int, conns: int, sources: int, seconds: float, every_s: float,
               flags: list[str], pythonpath: str | None) -> FloodResult:
    key, pub, _kid = new_key(tmp / "keys")
    meter = SimMeter(time_fn=lambda: int(time.time()))
    db = tmp / "head.db"
    with SQLiteStore(db) as s:
        s.register_meter(meter.device_id, meter.public_key, "legit")
        s.commit()
    headend_pub = load_public(pub)
    lookup = {P.key_id(headend_pub): headend_pub}.get
    log_path = tmp / "concentrator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLI, "concentrator", "--db", str(db), "--key", str(key), "--listen",
             "127.0.0.1:0", "--stats-every", "3600", *flags],
            stdout=subprocess.PIPE, stderr=log, preexec_fn=_limit(nofile),
            env={**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line.startswith(b"listening on "):
            raise RuntimeError(f"concentrator did not start: {line!r} {log_path.read_text()[-2000:]}")
        port = int(line.split(b":")[-1])
        flood = open_idle(port, conns, sources)
        m = _Meter(meter, port, lookup)
        peak = [0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], _fds(proc.pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        await asyncio.sleep(1.0)  # the flood is in (or in the kernel's accept queue) before the meter comes
        await m.run(seconds, every_s)
        sampler.cancel()
        held = sum(still_open(s) for s in flood)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for s in locals().get("flood", []):
            s.close()
    text = log_path.read_text(errors="replace")
    return FloodResult(conns, held, peak[0], len(m.frames), m.acked + 1, m.connects, text.count("\n"),
                       text.count("Traceback (most recent call last)"), proc.returncode)


def run_flood(tmp: str | os.PathLike, nofile: int = 256, conns: int = 400, sources: int = 1, seconds: float = 12.0,
              every_s: float = 0.5, flags: list[str] | None = None, pythonpath: str | None = None) -> FloodResult:
    """One flood (see the module's docstring); tmp: a directory for the keys, the database and the log."""
    return asyncio.run(_run(Path(tmp), nofile, conns, sources, seconds, every_s, list(flags or []), pythonpath))


def main(argv: list[str] | None = None) -> int:
    """NAME=VALUE settings (no argparse outside meterkit.cli), then -- and the concentrator's flags."""
    args = sys.argv[1:] if argv is None else argv
    cut = args.index("--") if "--" in args else len(args)
    opts = dict(a.split("=", 1) for a in args[:cut])
    kw = {k: int(opts.pop(k)) for k in ("nofile", "conns", "sources") if k in opts}
    if "seconds" in opts:
        kw["seconds"] = float(opts.pop("seconds"))
    pythonpath = opts.pop("pythonpath", None)
    if opts:
        print(f"unknown settings {sorted(opts)}; see the module's docstring", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        r = run_flood(tmp, flags=args[cut + 1:], pythonpath=pythonpath, **kw)
    print(json.dumps(asdict(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
