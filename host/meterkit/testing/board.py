"""A MicroPython board on a pseudo-terminal, for the tools' tests without hardware (docs/hardware.md, "No board").

The real `mpremote` over a plain pty bridge to the Unix port works only with `resume`: a soft reset (Ctrl-D)
ends the Unix port and closes the pty, `os.stat('')` gives ENOENT on its host file system (which breaks
`cp -r dir :`), and Ctrl-C must reach the interpreter as SIGINT. PtyBoard makes the Unix port behave like a
board on a USB serial port:

- **Flash.** A LittleFS v2 image in a host file is mounted at `/` (board_rom.py, inside the interpreter),
  formatted on first use; the simulated hardware (`firmware/sim`, the part `machine` plays on an ESP32) is the
  board's ROM at `/rom`. Every block write reaches the file at once: killing the interpreter is a power cut.
- **Power-up.** /boot.py, then /main.py, then the REPL (`micropython -i`).
- **Soft reset.** When the interpreter ends (Ctrl-D, sys.exit), or boot.py or main.py ends with sys.exit()
  (board_rom.py says so: `-i` would go on to the REPL), the board prints `MPY: soft reboot` and starts
  again: from the friendly REPL with boot.py and main.py; from the raw REPL with boot.py only and back in
  the raw REPL, as a board does (mpremote waits for exactly that).
- **Ctrl-C.** A 0x03 from the host becomes SIGINT while the interpreter runs code with Ctrl-C enabled (its
  SIGINT handler is installed: /proc/PID/status SigCgt). At the REPL prompt, or after
  `micropython.kbd_intr(-1)`, the byte is passed on as data, as a board's UART does. The pinned Unix port
  runs inside a CPython process (a C extension), whose own SIGINT handler is in place while it starts: until
  board_rom.py has said the interpreter is up (UP, taken out of what the host sees), a Ctrl-C is passed on
  as data too.
- **The port.** `port` is a stable path (a symlink to the pty's /dev/pts/N). unplug() takes the board off
  (power and port); plug_in() brings it back on a new pty behind the same path. cut_after(n) cuts power and
  port once the host has sent n more bytes: a cable pulled in the middle of whatever the host was doing.

Run one by hand: `python -m meterkit.testing.board DIR` prints the port to use with mpremote or meterkit.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from pathlib import Path

from meterkit.device import toolchain

ROM_SCRIPT = Path(__file__).with_name("board_rom.py")
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
UP = b"\x1b[board-up]"  # board_rom.py's first output
RESET = b"\x1b[board-reset]"  # board_rom.py: boot.py or main.py ended with sys.exit(), a soft reset on a board
SIGINT_GAP_S = 0.1  # a second SIGINT while the first is pending would end the Unix port (it exits on it)


class PtyBoard:
    """One simulated board: `port` to talk to, `output` (everything it printed), power and cable controls."""

    def __init__(self, workdir: str | os.PathLike, blocks: int = 256, heap: str | None = None,
                 rom: dict[str, Path] | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.image = self.dir / "flash.img"
        if not self.image.exists():
            self.image.write_bytes(b"\xff" * 4096 * blocks)
        self.blocks = self.image.stat().st_size // 4096
        self.heap = heap
        self.rom = self._make_rom(rom)
        self.port = str(self.dir / "ttyBOARD")
        self.output = bytearray()
        self.boots = 0
        self.host_bytes = 0  # bytes the host has sent since plug-in
        self._cut_at: int | None = None
        self._lock = threading.Condition()
        self._child: subprocess.Popen | None = None
        self._cfd: int | None = None  # the interpreter's side: master of its own pty
        self._mfd: int | None = None  # the host's side: master of the pty behind `port`
        self._raw = False  # the interpreter is in its raw REPL
        self._enter_raw = False  # restarted from the raw REPL: put it back there at its first prompt
        self._sigint_at = 0.0
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._thread: threading.Thread | None = None

    def _make_rom(self, rom: dict[str, Path] | None) -> Path:
        d = self.dir / "rom"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        items = rom if rom is not None else {"sim": toolchain.compiled_firmware("x64") / "sim"}
        for name, src in items.items():
            (d / name).symlink_to(Path(src).resolve())
        return d

    # -- life cycle
    def start(self, run_main: bool = True) -> PtyBoard:
        """Plug the board in and power it up."""
        self._open_port()
        self._thread = threading.Thread(target=self._bridge, name="pty-board", daemon=True)
        self._thread.start()
        self._power_on(run_main)
        return self

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._power_off()
        self._close_port()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> PtyBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, run_main: bool = True) -> None:
        """The reset button: the interpreter starts again from power-up (the port stays)."""
        with self._lock:
            self._power_off()
            self._power_on(run_main)

    def cut_power(self) -> None:
        """Power off now (SIGKILL: no file is closed, no buffer flushed). The port stays open, silent."""
        with self._lock:
            self._power_off()

    def unplug(self) -> None:
        """Pull the USB cable: power and port gone (the host's reads fail)."""
        with self._lock:
            self._power_off()
            self._close_port()

    def plug_in(self, run_main: bool = True) -> None:
        """Plug the cable back in: a new pty behind the same `port` path, the board powered up."""
        with self._lock:
            if self._mfd is None:
                self._open_port()
            self._power_on(run_main)
        os.write(self._wake_w, b"x")

    def cut_after(self, nbytes: int | None) -> None:
        """Pull the cable once the host has sent `nbytes` more bytes (None: never)."""
        with self._lock:
            self._cut_at = None if nbytes is None else self.host_bytes + nbytes

    @property
    def powered(self) -> bool:
        return self._child is not None and self._child.poll() is None

    @property
    def plugged(self) -> bool:
        return self._mfd is not None

    def wait_output(self, pattern: bytes | str, timeout: float = 20.0, since: int = 0) -> re.Match:
        """Wait until the board has printed something matching the regular expression (after offset `since`)."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                m = rx.search(self.output, since)
                if m:
                    return m
                left = end - time.monotonic()
                if left <= 0:
                    tail = bytes(self.output[-2000:]).decode(errors="replace")
                    raise TimeoutError(f"the board did not print {rx.pattern!r} in {timeout} s; it printed:\n{tail}")
                self._lock.wait(min(left, 0.1))

    # -- port and power (called with the lock held, or before the bridge runs)
    def _open_port(self) -> None:
        mfd, sfd = pty.openpty()
        tty.setraw(sfd)  # no echo, no translation: the board's output must never come back as the host's input
        name = os.ttyname(sfd)
        os.close(sfd)
        os.set_blocking(mfd, False)
        self._mfd = mfd
        self.host_bytes = 0
        self._cut_at = None
        tmp = Path(self.port + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        os.replace(tmp, self.port)

    def _close_port(self) -> None:
        if self._mfd is not None:
            os.close(self._mfd)
            self._mfd = None

    def _power_on(self, run_main: bool) -> None:
        cfd, sfd = pty.openpty()
        tty.setraw(sfd)
        cmd = [toolchain.micropython_bin()]
        if self.heap:
            cmd += ["-X", f"heapsize={self.heap}"]
        cmd += ["-i", str(ROM_SCRIPT), str(self.image), str(self.blocks), str(self.rom), "1" if run_main else "0"]
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        self._child = subprocess.Popen(cmd, stdin=sfd, stdout=sfd, stderr=sfd, cwd=self.dir, env=env,
                                       start_new_session=True, close_fds=True)
        os.close(sfd)
        os.set_blocking(cfd, False)
        self._cfd = cfd
        self._raw = False
        self._up = False  # MicroPython runs (board_rom.py said UP): it, not its CPython host, handles SIGINT
        self.boots += 1
        if self._thread is not None:
            os.write(self._wake_w, b"x")

    def _power_off(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            if child.poll() is None:
                child.kill()
            child.wait()
        if self._cfd is not None:
            os.close(self._cfd)
            self._cfd = None
        self._enter_raw = False

    # -- the bridge
    def _bridge(self) -> None:
        while not self._stop:
            fds = [self._wake_r] + [fd for fd in (self._cfd, self._mfd) if fd is not None]
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):  # an fd closed under us by unplug(): look again
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            with self._lock:
                if self._cfd is not None and self._cfd in ready:
                    self._from_board()
                if self._mfd is not None and self._mfd in ready:
                    self._from_host()
                if self._child is not None and self._child.poll() is not None and self._cfd is not None:
                    self._drain_board()
                    self._restarted()

    def _from_board(self) -> None:
        try:
            data = os.read(self._cfd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the interpreter has gone; _restarted() follows
            return
        if not self._up and data.startswith(UP):
            self._up = True
            data = data[len(UP):]
        before, reset, _ = data.partition(RESET)
        self._to_host(before)
        if reset:
            self._power_off()
            self._to_host(SOFT_REBOOT)
            self._power_on(run_main=True)

    def _drain_board(self) -> None:
        while True:
            try:
                data = os.read(self._cfd, 65536)
            except OSError:
                return
            if not data:
                return
            self._to_host(data)

    def _to_host(self, data: bytes) -> None:
        self.output += data
        self._lock.notify_all()
        if RAW_BANNER in data:
            self._raw = True
        if self._enter_raw and data.endswith(b">>> "):
            self._enter_raw = False
            self._write_board(b"\x01")
        if self._mfd is not None:
            try:
                os.write(self._mfd, data)
            except OSError:  # nobody listening, or the pty full: a UART talking to nothing loses it
                pass

    def _from_host(self) -> None:
        try:
            data = os.read(self._mfd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no process has the port open now; look again shortly
            time.sleep(0.02)
            return
        if self._cut_at is not None and self.host_bytes + len(data) >= self._cut_at:
            data = data[:self._cut_at - self.host_bytes]
            self._deliver(data)
            self._cut_at = None
            self._power_off()
            self._close_port()
            return
        self.host_bytes += len(data)
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._raw and b"\x02" in data:  # Ctrl-B leaves the raw REPL
            self._raw = False
        parts = data.split(b"\x03")
        for i, part in enumerate(parts):
            if i:
                self._ctrl_c()
            if part:
                self._write_board(part)

    def _ctrl_c(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        if self._up and _catches_sigint(child.pid):
            now = time.monotonic()
            if now - self._sigint_at >= SIGINT_GAP_S:
                self._sigint_at = now
                os.kill(child.pid, signal.SIGINT)
        else:
            self._write_board(b"\x03")

    def _write_board(self, data: bytes) -> None:
        if self._cfd is None:
            return
        end = time.monotonic() + 2.0
        while data:
            try:
                n = os.write(self._cfd, data)
                data = data[n:]
            except BlockingIOError:
                if time.monotonic() > end:  # the interpreter reads nothing: a UART overrun drops it
                    return
                time.sleep(0.001)
            except OSError:
                return

    def _restarted(self) -> None:
        """The interpreter ended: a soft reset (exit status 0 or sys.exit) or a crash. Start it again."""
        rc = self._child.returncode
        was_raw = self._raw
        self._power_off()
        if rc == -signal.SIGINT:  # a Ctrl-C that met the prompt between our check and the signal
            self._power_on(run_main=False)
            return
        self._to_host(SOFT_REBOOT)
        self._power_on(run_main=not was_raw)
        self._enter_raw = was_raw


def sim_profile(path: str | os.PathLike, **sim: object) -> Path:
    """boards/unix-sim.json with its `sim` section updated (a constant load unless told), written to `path`:
    the profile to deploy to a PtyBoard."""
    import json

    prof = json.loads((toolchain.repo_root() / "boards" / "unix-sim.json").read_text())
    prof["sim"].update({"scenario": "constant", **sim})
    out = Path(path)
    out.write_text(json.dumps(prof))
    return out


def _catches_sigint(pid: int) -> bool:
    """Does the process have a SIGINT handler installed (the Unix port: only while it runs code with Ctrl-C on)?"""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    workdir = args[0] if args else "board"
    with PtyBoard(workdir) as board:
        print(f"a MicroPython board on {board.port} (flash image {board.image}); Ctrl-C here to switch it off",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
