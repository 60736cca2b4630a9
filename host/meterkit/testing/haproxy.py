"""A real HAProxy (Debian's `haproxy`) in front of several concentrators, for tests, the scale demo and the bench.

Meters connect to one address; HAProxy passes each TCP connection whole to one live backend (mode tcp: it never
reads the frames), chosen by `balance` (leastconn by default: a meter's connection is long-lived, so the
backend with the fewest open ones gets the next). Every backend is health-checked by a TCP connect every
`check_ms`; one that fails `fall` checks is taken out, and a connection that arrives meanwhile is dispatched to
another (`option redispatch`, `retries`). When a concentrator dies its meters' connections drop with it, and
their reconnects land on the others.

With send_proxy each connection begins with a PROXY v2 header naming the meter's address (the concentrator
reads it with --proxy-protocol-from; headend/proxyheader.py). The listening socket is made here and handed to
HAProxy as an inherited descriptor (`bind fd@N`), so its port is known before HAProxy starts and no other
process can take it in between. The runtime API (a unix socket in the work directory) reports each backend's
state and sessions (`servers()`).

May import: the standard library only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from meterkit.testing.processes import end_process

BALANCES = ("leastconn", "roundrobin", "source")


class HAProxyUnavailable(RuntimeError):
    """HAProxy is not installed (or does not start)."""


@dataclass(frozen=True)
class Server:
    """One backend as HAProxy sees it now (its runtime API's `show stat`)."""

    name: str
    status: str  # "UP", "DOWN", "MAINT", "no check", or a transition such as "UP 1/2"
    current: int  # connections open now
    total: int  # connections passed to it so far

    @property
    def up(self) -> bool:
        return self.status.startswith("UP") or self.status == "no check"


def haproxy_bin() -> str:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if not found:
        raise HAProxyUnavailable("HAProxy is not installed: run `make deps` as root (Debian's `haproxy` package)")
    return found


class HAProxy:
    """HAProxy on 127.0.0.1:`port`, spreading connections over `backends` ((host, port) each, named c1, c2, ...)."""

    def __init__(self, workdir: str | os.PathLike, backends: list[tuple[str, int]], *, balance: str = "leastconn",
                 check_ms: int = 300, fall: int = 2, rise: int = 2, idle_timeout_s: float = 900.0,
                 send_proxy: bool = False):
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, not {balance!r}")
        if not backends:
            raise ValueError("HAProxy needs at least one backend")
        self.dir = Path(workdir)
        self.backends = list(backends)
        self.balance, self.check_ms, self.fall, self.rise = balance, check_ms, fall, rise
        self.idle_timeout_s = idle_timeout_s
        self.send_proxy = send_proxy  # a PROXY v2 header first on each connection (--proxy-protocol-from)
        self.admin = self.dir / "admin.sock"
        self.port = 0
        self._listener: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    def config(self, fd: int) -> str:
        idle = f"{int(self.idle_timeout_s * 1000)}ms"
        proxy = " send-proxy-v2" if self.send_proxy else ""
        servers = "\n".join(f"    server c{i} {host}:{port} check inter {self.check_ms}ms fall {self.fall} "
                            f"rise {self.rise}{proxy}" for i, (host, port) in enumerate(self.backends, 1))
        return f"""global
    stats socket {self.admin} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client {idle}
    timeout server {idle}
    retries 3
    option redispatch

frontend meters
    bind fd@{fd}
    default_backend concentrators

backend concentrators
    balance {self.balance}
{servers}
"""

    def start(self, timeout: float = 15.0) -> HAProxy:
        binary = haproxy_bin()
        self.dir.mkdir(parents=True, exist_ok=True)
        lst = self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = lst.getsockname()[1]
        fd = lst.fileno()
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self.config(fd))
        check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], pass_fds=(fd,), capture_output=True, text=True)
        if check.returncode != 0:
            raise HAProxyUnavailable(f"HAProxy refused its configuration: {check.stderr.strip() or check.stdout}")
        self._proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], pass_fds=(fd,), stdout=subprocess.DEVNULL,
                                      stderr=open(self.dir / "haproxy.log", "ab"), cwd=self.dir)
        end = time.monotonic() + timeout
        while not self.admin.exists() or not self._ask("show info"):
            if self._proc.poll() is not None:
                raise HAProxyUnavailable(f"HAProxy exited with {self._proc.returncode}: {self.log()[-800:]}")
            if time.monotonic() > end:
                self.stop()
                raise HAProxyUnavailable(f"HAProxy did not come up in {timeout:.0f} s: {self.log()[-800:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        end_process(self._proc)
        self._proc = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """HAProxy's process id while it runs (the bench reads its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "haproxy.log").read_text(errors="replace")
        return ""

    def servers(self) -> dict[str, Server]:
        """Each backend's state now, by name (c1, c2, ...)."""
        rows = csv.DictReader(io.StringIO(self._ask("show stat").lstrip("# ")))
        return {r["svname"]: Server(r["svname"], r["status"], int(r["scur"] or 0), int(r["stot"] or 0))
                for r in rows if r["pxname"] == "concentrators" and r["svname"] not in ("FRONTEND", "BACKEND")}

    def sessions(self) -> dict[tuple[str, int], str]:
        """The client connections open now: (client host, port) -> the backend it was passed to (c1, ...)."""
        out = {}
        for line in self._ask("show sess").splitlines():
            f = dict(x.split("=", 1) for x in line.split() if "=" in x)
            if f.get("fe") == "meters" and "src" in f and f.get("srv") not in (None, "<none>"):
                host, _, port = f["src"].rpartition(":")
                out[(host, int(port))] = f["srv"]
        return out

    def wait_servers(self, want: dict[str, bool], timeout: float = 20.0) -> dict[str, Server]:
        """Until each named backend is up (True) or out (False) as wanted; TimeoutError saying what it saw."""
        end = time.monotonic() + timeout
        while True:
            now = self.servers()
            if all(n in now and now[n].up == up for n, up in want.items()):
                return now
            if time.monotonic() > end:
                raise TimeoutError(f"HAProxy's backends did not become {want} in {timeout:.0f} s: {now}")
            time.sleep(0.05)

    def _ask(self, command: str) -> str:
        """One runtime-API command ('' while the socket does not answer yet)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(self.admin))
                s.sendall(command.encode() + b"\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
            return out.decode()
        except OSError:
            return ""
