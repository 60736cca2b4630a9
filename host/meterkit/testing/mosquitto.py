"""A real Mosquitto (Debian's `mosquitto`) on a free loopback port, for tests and the demo's walkthrough: users
from a password file (mosquitto_passwd), an ACL, no anonymous clients, no persistence (a restart loses every
retained message, as a broker without a disk would: what the publisher must survive).

    with Mosquitto(tmp_path, users={"meterkit": "pw1", "homeassistant": "pw2"}) as broker:
        broker.url("meterkit")      # mqtt://meterkit:pw1@127.0.0.1:PORT

The default ACL is the one docs/home-assistant.md recommends: the concentrator's user writes its own topics
and discovery and reads the command topics; Home Assistant's user reads everything of meterkit's and writes
only the command topics (and its own status).

May import: the standard library only.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from meterkit.testing.processes import end_process


class MosquittoUnavailable(RuntimeError):
    """Mosquitto is not installed (or does not start)."""


def acl_text(prefix: str = "meterkit", discovery: str = "homeassistant", concentrator: str = "meterkit",
             home_assistant: str = "homeassistant") -> str:
    """The ACL of docs/home-assistant.md for these user names and prefixes."""
    return f"""# the concentrator: its states and will, Home Assistant's discovery, the commands it takes
user {concentrator}
topic readwrite {prefix}/#
topic readwrite {discovery}/#

# Home Assistant: reads meterkit's states, writes nothing of them but the command topics
user {home_assistant}
topic read {prefix}/#
topic write {prefix}/+/relay/set
topic write {prefix}/+/shed/press
topic readwrite {discovery}/#
"""


def mosquitto_bin() -> tuple[str, str]:
    """(mosquitto, mosquitto_passwd), or MosquittoUnavailable saying how to install them."""
    found = [shutil.which(n) or next((p for p in (f"/usr/sbin/{n}", f"/usr/bin/{n}") if os.access(p, os.X_OK)),
                                     None) for n in ("mosquitto", "mosquitto_passwd")]
    if not all(found):
        raise MosquittoUnavailable("Mosquitto is not installed: run `make deps` as root (Debian's `mosquitto` "
                                   "package)")
    return found[0], found[1]  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """Mosquitto on 127.0.0.1:`port` (0: a free one), users {name: password}, the ACL text given (default:
    acl_text())."""

    def __init__(self, workdir: str | os.PathLike, users: dict[str, str], acl: str | None = None, port: int = 0):
        self.dir = Path(workdir)
        self.users = dict(users)
        self.acl = acl_text() if acl is None else acl
        self.port = port
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        binary, passwd = mosquitto_bin()
        self.dir.mkdir(parents=True, exist_ok=True)
        pw = self.dir / "passwd"
        pw.write_text("")
        pw.chmod(0o600)
        for user, password in self.users.items():
            subprocess.run([passwd, "-b", str(pw), user, password], check=True, capture_output=True)
        (self.dir / "acl").write_text(self.acl)
        (self.dir / "acl").chmod(0o600)
        for _ in range(5):  # a free port may be taken between the check and the bind: try another
            port = self.port or free_port()
            conf = self.dir / "mosquitto.conf"
            # `user`: when started as root, stay this user (else mosquitto becomes `mosquitto`, which cannot
            # read the files of a private test directory); as anyone else it is ignored
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                            f"acl_file {self.dir / 'acl'}\npersistence false\nuser {getpass.getuser()}\n"
                            f"log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
                            f"log_type information\nconnection_messages true\n")
            with open(self.dir / "mosquitto.log", "ab") as log:
                self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log,
                                              cwd=self.dir)
            if self._wait(port, timeout):
                self.port = port
                return self
            if self.port:
                break
        raise MosquittoUnavailable(f"Mosquitto did not start: {self.log()[-800:]}")

    def _wait(self, port: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        end_process(self._proc)
        self._proc = None

    def restart(self) -> Mosquitto:
        """Stop and start again on the same port (everything retained is lost: no persistence)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "mosquitto.log").read_text(errors="replace")
        return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
