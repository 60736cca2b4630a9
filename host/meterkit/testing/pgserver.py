"""A real PostgreSQL server for tests and demos: a throw-away cluster in a temporary directory.

    with PgServer() as pg:          # initdb (trust auth, UTF8, C collation), postgres on 127.0.0.1:<free port>
        url = pg.create_database()  # postgresql://meterkit@127.0.0.1:<port>/<name>
    # stopped (pg_ctl stop -m fast) and removed
    pg.halt(); pg.kill(); pg.resume()  # an outage: stopped (or its postmaster SIGKILLed), started on the same port

The binaries come from `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin (Debian's `postgresql`
package; `make deps` installs it). PgUnavailable says so when there are none.

Root: initdb and postgres refuse to run as root. Run as root, the cluster belongs to an unprivileged user (the
`postgres` account the Debian package creates, else `nobody`) and every server binary runs as that user through
`setpriv --reuid --regid --clear-groups` (util-linux); the temporary directory is made in the system's temp
directory (not below a root-only one such as pytest's) and handed to that user. The Python side connects as the
cluster's superuser `meterkit` over TCP (trust authentication on 127.0.0.1 only), so it needs no privileges.

fast=True (the default: tests) turns off fsync, synchronous_commit and full_page_writes: a crash of this machine
loses the throw-away cluster anyway. The demos that show durability pass fast=False.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "meterkit"
INSTALL_HINT = "install PostgreSQL (Debian: `make deps`, or apt-get install postgresql)"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or none that can run here)."""


def find_bindir() -> Path:
    """The directory of initdb, pg_ctl and postgres: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/<version>/bin; PgUnavailable when neither has them."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version(p: str) -> tuple[int, ...]:
        v = Path(p).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for d in candidates:
        if all((d / b).is_file() and os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise PgUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root; then `postgres`, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PgUnavailable("running as root, and there is no unprivileged `postgres` or `nobody` account to run "
                        "PostgreSQL as")


class PgServer:
    """A PostgreSQL cluster of its own, started on a free port of 127.0.0.1 (see the module docstring)."""

    def __init__(self, fast: bool = True, bindir: str | os.PathLike | None = None, start_timeout_s: float = 60.0):
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.fast = fast
        self.start_timeout_s = start_timeout_s
        self.user = _server_user()
        self.root: Path | None = None
        self.port: int | None = None
        self._databases = 0

    # -- paths and commands
    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    def _cmd(self, *args: str) -> list[str]:
        argv = [str(self.bindir / args[0]), *args[1:]]
        if self.user is None:
            return argv
        if not shutil.which("setpriv"):
            raise PgUnavailable("running as root needs setpriv (util-linux) to run PostgreSQL unprivileged")
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *argv]

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        out = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.root / "server.log" if self.root else None
        if log and log.exists():
            return "\n--- server.log ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        return ""

    # -- life cycle
    def start(self) -> PgServer:
        if self.root is not None:
            return self
        self.root = Path(tempfile.mkdtemp(prefix="meterkit-pg-", dir=tempfile.gettempdir()))
        try:
            self.socket_dir.mkdir()
            if self.user is not None:
                for p in (self.root, self.socket_dir):
                    os.chown(p, self.user.pw_uid, self.user.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                      "--locale=C", "--no-instructions")
            self._start_server()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)  # should the owner forget (an interrupted test run): no server left behind
        return self

    def _start_server(self, attempts: int = 3, port: int | None = None) -> None:
        """postgres on a free port (another is tried if it was taken meanwhile), or on `port`."""
        opts = ["-c listen_addresses=127.0.0.1", f"-k {self.socket_dir}", "-c max_connections=200"]
        if self.fast:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for attempt in range(attempts):
            self.port = port or _free_port()
            try:
                self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                          "-t", str(int(self.start_timeout_s)), "-o", " ".join([f"-p {self.port}", *opts]),
                          timeout=self.start_timeout_s + 30)
                self._wait_ready()
                return
            except RuntimeError:
                if attempt == attempts - 1:  # another process may have taken the port in between
                    raise

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}"
                                       f"{self._log_tail()}") from None
                time.sleep(0.1)

    # -- outages (tests of what a client does while the server is gone): the cluster and its port are kept
    def halt(self, mode: str = "fast") -> None:
        """Stop the server (pg_ctl stop -m fast|smart|immediate), keeping the cluster: resume() starts it again."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", timeout=60)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends notice and exit. resume() recovers."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # dead, not yet reaped by its parent (init: pg_ctl let go of it)
            except (OSError, IndexError):
                return
            time.sleep(0.01)
        raise RuntimeError(f"postmaster {pid} still there 30 s after SIGKILL")

    def resume(self, timeout_s: float = 30.0) -> None:
        """Start the halted or killed server again on the same port (after a kill, once its backends are gone:
        until then the old shared memory is in use and postgres refuses to start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._start_server(attempts=1, port=self.port)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.root is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = self.port = None
            atexit.unregister(self.stop)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases
    def url(self, database: str) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """CREATE DATABASE (a copy of `template` when given: cheap, a file copy); returns its URL."""
        if name is None:
            self._databases += 1
            name = f"meterkit_{os.getpid()}_{self._databases}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database names here are letters, digits and _, not {name!r}")
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE, closing the connections still open to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
