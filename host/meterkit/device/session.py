"""A board's REPL through the real mpremote (its SerialTransport, in this process), with the checks and the
messages a newcomer needs: no port, a busy port, nothing answering, something that is not MicroPython, a
board that goes away in the middle.

    with Session.open("/dev/ttyUSB0") as s:      # DeviceError says what is wrong, in one sentence
        s.info                                    # platform, .mpy version and arch, frozen meter?
        s.run("print(1)"), s.eval("1+1"), s.write_file(path, data), s.hashes("/app.a"), s.restart()

Opening sends meter.console.ATTENTION first (a meter whose link shares the console has Ctrl-C switched off;
on any other board the bytes are harmless), then enters the raw REPL with a soft reset, as mpremote does by
default: a clean interpreter, the meter stopped, main.py not run again.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from meter.console import ATTENTION

WRITE_CHUNK = 1024  # bytes per exec when copying a file (mpremote's fs_writefile, raw-paste mode)
BOOT_WAIT_S = 10.0
ENTER_ATTEMPTS = 3  # a board that restarted while we asked for its REPL is asked again
# what a board running MicroPython prints (as opposed to an ESP32's ROM bootloader, or another device)
MICROPYTHON_SIGNS = re.compile(rb"MicroPython|soft reboot|meterkit: |>>> |Traceback")


class DeviceError(RuntimeError):
    """Why the board cannot be used as asked; the message is the whole story for the user."""


@dataclass
class BoardInfo:
    platform: str  # sys.platform: "esp32", "linux" (the Unix port) ...
    machine: str  # sys.implementation._machine
    version: str
    mpy: int  # .mpy version | sub-version << 8
    arch: int  # native architecture code (meterkit.device.build.ARCH_CODES), 0: none
    frozen_meter: bool  # the meter package is frozen into the firmware image


_PROBE = """\
import sys
_m = getattr(sys.implementation, '_mpy', 0)
_p = sys.path[:]
sys.path[:] = ['.frozen']
try:
    import meter
    _f = True
except ImportError:
    _f = False
sys.path[:] = _p
print(repr((sys.platform, getattr(sys.implementation, '_machine', ''), sys.version, _m & 0x3ff, _m >> 10, _f)))
"""

_HASHES = """\
import os, hashlib, binascii
def _h(p, b=bytearray(512)):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(b[:n])
    return binascii.hexlify(h.digest()).decode()
def _w(d, pre, out):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _w(p, pre + e[0] + '/', out)
        else:
            out[pre + e[0]] = _h(p)
_o = {}
for _n in %r:
    try:
        if os.stat(_n)[0] & 0x4000:
            _w(_n, _n + '/', _o)
        else:
            _o[_n] = _h(_n)
    except OSError:
        pass
print(repr(_o))
"""


def port_users(port: str) -> list[str]:
    """Other processes that hold the serial port open ('pid command'), from /proc (Linux; elsewhere [])."""
    try:
        target = os.path.realpath(port)
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    users = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    users.append(f"{pid} {cmd.strip()[:120]}")
                    break
            except OSError:
                continue
    return users


def check_port(port: str) -> None:
    """DeviceError unless `port` is a serial port that no other program holds."""
    if not os.path.exists(port):
        raise DeviceError(f"no serial port {port}: is the board plugged in? (ls /dev/ttyUSB* /dev/ttyACM* lists "
                          "the ports; a board that is not listed needs a data cable or its USB driver)")
    users = port_users(port)
    if users:
        raise DeviceError(f"{port} is busy: in use by {'; '.join(users)}. Close that program (a concentrator "
                          "gives the port up for a deploy with --release-via FLEET.db)")


class Session:
    """One connection to a board's raw REPL."""

    def __init__(self, port: str, transport: object, info: BoardInfo):
        self.port = port
        self.t = transport
        self.info = info

    @classmethod
    def open(cls, port: str, timeout: float = 10.0) -> Session:
        from mpremote.transport_serial import SerialTransport, TransportError

        check_port(port)
        try:
            t = SerialTransport(port, baudrate=115200)
        except TransportError as e:
            raise DeviceError(f"cannot open {port}: {e} (another program may hold it)") from None
        try:
            _enter_repl(t, port, timeout)
            info = BoardInfo(*ast.literal_eval(_exec(t, port, _PROBE).strip()))
        except BaseException:
            _close(t)
            raise
        return cls(port, t, info)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.t is not None:
            _close(self.t)
            self.t = None

    def run(self, code: str) -> str:
        """Execute code on the board; its output. An exception there raises DeviceError with its last line."""
        return _exec(self.t, self.port, code)

    def eval(self, expression: str) -> object:
        return self.eval_code(f"print(repr({expression}))")

    def eval_code(self, code: str) -> object:
        """Run code that prints a Python literal last; that value."""
        lines = self.run(code).strip().splitlines()
        try:
            return ast.literal_eval(lines[-1])
        except (IndexError, ValueError, SyntaxError):
            raise DeviceError(f"the board on {self.port} answered {lines[-1:]!r}, not a value") from None

    def hashes(self, *paths: str) -> dict[str, str]:
        """SHA-256 (hex) of every file at or below each path, keyed 'path/relative' (missing paths: none)."""
        return ast.literal_eval(self.run(_HASHES % (list(paths),)).strip())

    def write_file(self, path: str, data: bytes) -> None:
        self._guard(lambda: self.t.fs_writefile(path, data, chunk_size=WRITE_CHUNK))

    def _guard(self, op: object) -> object:
        from mpremote.transport import TransportError

        try:
            return op()
        except TransportError as e:
            raise DeviceError(_explain(self.port, e)) from None
        except OSError as e:
            raise DeviceError(_gone(self.port, e)) from None

    def restart(self, expect: str | None = None, wait_s: float = BOOT_WAIT_S) -> str:
        """Soft reset into main.py (exit the raw REPL, Ctrl-D), then read what the board prints for up to
        wait_s, or until a line matches the regular expression `expect`; returns what it printed."""
        ser = self.t.serial
        try:
            self.t.exit_raw_repl()
            ser.write(b"\x04")
            out = b""
            end = time.monotonic() + wait_s
            rx = re.compile(expect.encode()) if expect else None
            while time.monotonic() < end and not (rx and rx.search(out)):
                n = ser.in_waiting
                out += ser.read(n or 1)
        except OSError as e:
            raise DeviceError(_gone(self.port, e)) from None
        finally:
            self.close()
        return out.decode(errors="replace")


def _enter_repl(t: object, port: str, timeout: float) -> None:
    """The raw REPL after a soft reset, or DeviceError saying what answered instead. A board that restarts
    while we ask (a Ctrl-C that met it booting, a watchdog, a reset by the port's DTR/RTS lines) is asked again."""
    for _ in range(ENTER_ATTEMPTS):
        heard = _try_raw_repl(t, port, timeout)
        if heard is None:
            return
        if not MICROPYTHON_SIGNS.search(heard):
            break
    if not heard:
        raise DeviceError(f"nothing answers on {port}: no MicroPython REPL. Is MicroPython on the board "
                          "(`meterkit device flash`)? Is it the right port? A board held in its bootloader "
                          "needs a press of its reset (EN) button")
    if MICROPYTHON_SIGNS.search(heard):
        raise DeviceError(f"the board on {port} runs MicroPython but did not give its REPL (it says: "
                          f"{_printable(heard)!r}). Press its reset (EN) button and try again")
    raise DeviceError(f"a device answers on {port}, but not with a MicroPython REPL (it says: "
                      f"{_printable(heard)!r}). Flash MicroPython with `meterkit device flash`")


def _try_raw_repl(t: object, port: str, timeout: float) -> bytes | None:
    """One attempt: None once in the raw REPL, else what the device printed meanwhile."""
    from mpremote.transport import TransportError

    heard = bytearray()  # what mpremote read while it waited for the REPL (it prints it; we quote it)
    read_until = t.read_until

    def recorded(*args: object, **kw: object) -> bytes:
        data = read_until(*args, **kw)
        heard.extend(data[-400:])
        return data

    t.read_until = recorded
    try:
        t.serial.write(ATTENTION)
        time.sleep(0.05)
        with contextlib.redirect_stdout(io.StringIO()):
            t.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        return None
    except TransportError:
        return bytes(heard) + _drain(t)
    except OSError as e:
        raise DeviceError(_gone(port, e)) from None
    finally:
        del t.read_until


def _drain(t: object) -> bytes:
    try:
        n = t.serial.in_waiting
        return t.serial.read(n) if n else b""
    except OSError:
        return b""


def _exec(t: object, port: str, code: str) -> str:
    from mpremote.transport import TransportError, TransportExecError

    try:
        return t.exec(code).decode(errors="replace")
    except TransportExecError as e:
        last = e.error_output.strip().splitlines()[-1:] or ["?"]
        raise DeviceError(f"the board on {port} reports: {last[0]}") from None
    except TransportError as e:
        raise DeviceError(_explain(port, e)) from None
    except OSError as e:
        raise DeviceError(_gone(port, e)) from None


def _explain(port: str, e: Exception) -> str:
    return f"the board on {port} stopped answering ({e}): unplugged, reset, or out of memory?"


def _gone(port: str, e: Exception) -> str:
    return f"the board on {port} went away ({e.__class__.__name__}: {e}): unplugged?"


def _printable(data: bytes) -> str:
    return re.sub(r"[^\x20-\x7e\n]", ".", data.decode("latin-1"))[-200:]


def _close(t: object) -> None:
    try:
        if t.in_raw_repl:
            t.exit_raw_repl()
    except OSError:
        pass
    try:
        t.close()
    except OSError:
        pass
