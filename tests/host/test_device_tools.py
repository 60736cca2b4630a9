"""meterkit device without a chip and with bad input: esptool's arguments and offsets per chip, image-info and
merge-bin on images esptool itself builds, no chip and a busy port; a board without MicroPython, a wrong board
profile, a wrong calibration reference, each with its message and the board left as it was; calibration
bringing a shunt 3 % off with an offset back under 0.1 %."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest

from meterkit.cli import main as cli
from meterkit.device import calibrate as C
from meterkit.device import flash as F
from meterkit.device.build import build_bundle
from meterkit.device.deploy import deploy, load_profile
from meterkit.device.session import DeviceError, Session, check_port
from meterkit.testing.board import PtyBoard, sim_profile

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys and /proc: Linux")


def test_offsets_per_chip_are_micropythons():
    # micropython.org: ESP32 write_flash 0x1000, ESP32-S3 and ESP32-C3 write_flash 0 (esptool's own numbers)
    assert {c: F.flash_offset(c) for c in ("esp32", "esp32s3", "esp32c3", "esp32s2")} == {
        "esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32s2": 0x1000}
    cmds = F.esptool_commands("esp32c3", "/dev/ttyACM0", "fw.bin", baud=921600)
    assert cmds == [["--chip", "esp32c3", "--port", "/dev/ttyACM0", "--baud", "921600", "erase-flash"],
                    ["--chip", "esp32c3", "--port", "/dev/ttyACM0", "--baud", "921600", "write-flash", "-z", "0x0",
                     "fw.bin"]]
    assert F.esptool_commands("esp32", "P", "x.bin", erase=False)[0][-3:] == ["-z", "0x1000", "x.bin"]
    with pytest.raises(DeviceError, match="unknown chip"):
        F.flash_offset("esp8266")


def _image(tmp_path: Path, chip: str) -> Path:
    from esptool import bin_image
    from esptool.targets import CHIP_DEFS

    img = CHIP_DEFS[chip].BOOTLOADER_IMAGE()
    img.entrypoint = 0x40080000 if chip == "esp32" else 0x40380000
    dram = 0x3FFB0000 if chip == "esp32" else 0x3FC88000
    img.segments = [bin_image.ELFSection(b".dram0.data", dram, b"meterkit" * 64, flags=0)]
    path = tmp_path / f"{chip}.bin"
    img.save(str(path))
    return path


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
def test_image_info_and_merge_bin_on_an_image_we_make(tmp_path, chip):
    path = _image(tmp_path, chip)
    assert F.image_chip(path) == chip
    info = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "Checksum" in info.stdout and "valid" in info.stdout.lower()
    merged = tmp_path / "merged.bin"
    r = subprocess.run([sys.executable, "-m", "esptool", "--chip", chip, "merge-bin", "-o", str(merged),
                        hex(F.flash_offset(chip)), str(path), "0x10000", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    data = merged.read_bytes()
    off = F.flash_offset(chip)
    assert data[off:off + path.stat().st_size] == path.read_bytes()
    assert data[0x10000:0x10000 + path.stat().st_size] == path.read_bytes()


def test_wrong_chip_and_not_an_image(tmp_path):
    s3 = _image(tmp_path, "esp32s3")
    with pytest.raises(DeviceError, match="wrong chip: the board on P is an ESP32, and .* an ESP32S3"):
        F.flash("P", s3, chip="esp32", run=False)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(DeviceError, match="not an ESP32 firmware image"):
        F.flash("P", junk, chip="esp32", run=False)


@pytest.fixture
def port_pair(tmp_path):
    """A serial port (its name) and the far end of its cable (the pty master: what a board would write). The
    name is a link of its own as a USB serial adapter's (/dev/ttyUSB0): mpremote reads /dev/pts/N blocking."""
    m, s = pty.openpty()
    tty.setraw(s)
    name = tmp_path / "ttyUSB0"
    name.symlink_to(os.ttyname(s))
    os.close(s)
    os.set_blocking(m, False)
    yield str(name), m
    os.close(m)


@pytest.fixture
def silent_port(port_pair):
    """A serial port with nothing behind it (the far end never answers)."""
    return port_pair[0]


def test_no_chip_answers(silent_port):
    with pytest.raises(DeviceError, match="no ESP32 answers on .*No serial data received"):
        F.detect(silent_port, attempts=1)


def test_no_board_on_the_port(silent_port, bundle, capsys):
    with pytest.raises(DeviceError, match="no serial port /dev/ttyNOPE: is the board plugged in"):
        check_port("/dev/ttyNOPE")
    assert cli(["device", "deploy", "--port", "/dev/ttyNOPE", "--board", str(ROOT / "boards" / "unix-sim.json"),
                "--bundle", str(bundle.dir)]) == 2
    assert "no serial port /dev/ttyNOPE" in capsys.readouterr().err
    # a USB serial adapter with no board behind it, or a board held in its bootloader
    with pytest.raises(DeviceError, match="nothing answers on .*: no MicroPython REPL"):
        Session.open(silent_port, timeout=1)


def test_a_busy_port_changes_nothing_on_the_board(tmp_path, bundle, capsys):
    profile = _profile(tmp_path)
    with PtyBoard(tmp_path / "board") as board:
        deploy(board.port, bundle, load_profile(profile))
        board.wait_output(f"meterkit: firmware {bundle.id}")
        sent = board.host_bytes
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nf = open(sys.argv[1], 'rb')\n"
                                   "print('open', flush=True)\ntime.sleep(60)", board.port], stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"open\n"
            with pytest.raises(DeviceError, match=rf"{board.port} is busy: in use by {holder.pid} "):
                F.detect(board.port)
            for cmd in (["deploy", "--board", str(profile), "--bundle", str(bundle.dir)], ["calibrate"]):
                assert cli(["device", cmd[0], "--port", board.port, *cmd[1:]]) == 2
                assert f"{board.port} is busy: in use by {holder.pid}" in capsys.readouterr().err
        finally:
            holder.kill()
            holder.wait()
        assert board.host_bytes == sent  # not a byte reached the board
        with Session.open(board.port) as s:  # and once the port is free it works as before
            assert s.eval("open('/app.slot').read()") == "a"


def test_a_board_without_micropython(port_pair):
    # what an erased ESP32 prints on its UART at every reset: the ROM bootloader, looking for an image
    port, m = port_pair
    stop = threading.Event()

    def rom():
        while not stop.wait(0.2):
            try:
                os.write(m, b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x10 (RTCWDT_RTC_RESET),boot:0x13\r\n"
                            b"invalid header: 0xffffffff\r\n")
            except BlockingIOError:  # nobody reads the port: a UART talking to nothing
                continue
            except OSError:
                return

    t = threading.Thread(target=rom, daemon=True)
    t.start()
    try:
        with pytest.raises(DeviceError, match="a device answers on .* not with a MicroPython REPL .*invalid header"):
            Session.open(port, timeout=2)
    finally:
        stop.set()
        t.join()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle("x64", tmp_path_factory.mktemp("bundle") / "x64")


def _profile(tmp_path: Path, **sim) -> Path:
    return sim_profile(tmp_path / "profile.json", **{"speed": 20, **sim})


def test_a_wrong_board_profile_changes_nothing(tmp_path, bundle):
    with PtyBoard(tmp_path / "board") as board:
        deploy(board.port, bundle, load_profile(_profile(tmp_path)))
        board.wait_output(f"meterkit: firmware {bundle.id}")
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**json.loads(_profile(tmp_path).read_text()), "ina219": {"addr": 3}}))
        with pytest.raises(DeviceError, match="wrong board profile: .*ina219.addr = 3 is outside 64..79"):
            load_profile(bad)
        esp = load_profile(ROOT / "boards" / "esp32-devkitc.json")
        with pytest.raises(DeviceError, match="wrong board profile: 'esp32-devkitc' is for an esp32 board, and the "
                                              "board on .* is a linux"):
            deploy(board.port, bundle, esp)
        mark = len(board.output)
        board.reset()
        board.wait_output(f"meterkit: firmware {bundle.id} from /app.a", since=mark)  # as it was


def test_a_profile_for_another_chip_is_refused(bundle):
    from meterkit.device.deploy import board_chip, check_fit
    from meterkit.device.session import BoardInfo

    # sys.implementation._machine as MicroPython's ESP32 port builds it: "<board name> with <SoC>"
    assert board_chip("Generic ESP32S3 module with ESP32S3") == "esp32s3"
    assert board_chip("ESP32C3 module with ESP32C3") == "esp32c3"
    assert board_chip("linux [GCC 14.2.1] version") is None
    s3 = Session("/dev/ttyACM0", None, BoardInfo("esp32", "Generic ESP32S3 module with ESP32S3", "1.26", 6, 10, True))
    with pytest.raises(DeviceError, match="wrong board profile: 'esp32-devkitc' is for an ESP32, and the board on "
                                          "/dev/ttyACM0 is an ESP32S3"):
        check_fit(bundle, load_profile(ROOT / "boards" / "esp32-devkitc.json"), s3)
    check_fit(bundle, load_profile(ROOT / "boards" / "esp32s3-devkitc-n8r8.json"), s3)  # frozen: no .mpy check


def test_calibration_brings_a_shunt_3_percent_off_with_an_offset_under_0_1_percent(tmp_path, bundle):
    # the real shunt is 3 % above the profile's, and the chip reads 2.5 LSB (25 uV) high
    profile = load_profile(_profile(tmp_path, shunt_error_ppm=30000, offset_lsb=2.5))
    with PtyBoard(tmp_path / "board") as board:
        deploy(board.port, bundle, profile)
        before = _error(board.port)
        loads = (0.25, 2.5)  # the reference meter reads the true current at each of two loads

        def reference(i, s):
            return {"reference_ma": loads[i] * 1000, "sim": {"amps": loads[i]}}

        fit = C.calibrate(board.port, reference, cycles=128)
        after = _error(board.port)
        bad = C.calibrate  # a mistyped reference (amps for milliamps) is refused and the board keeps its fit
        with pytest.raises(DeviceError, match="wrong reference value: .*nothing was changed"):
            bad(board.port, lambda i, s: {"reference_ma": (250.0, 2.5)[i], "sim": {"amps": loads[i]}}, cycles=16)
        with Session.open(board.port) as s:
            kept = s.eval_code(_KEPT)
    assert abs(before) > 0.02, before
    assert abs(after) < 0.001, (before, after, fit)
    assert tuple(kept) == (fit.id, fit.gain_ppm, fit.offset_ua)


_KEPT = """\
import sys
with open('/app.slot') as f: sys.path.insert(0, '/app.' + f.read().strip())
from meter.calibration import Calibration
c = Calibration('flash')
print(repr((c.id, c.gain_ppm, c.offset_ua)))
"""

# 20 virtual minutes of the real meter (meter.app.Meter, calibration from the board's flash) at 1.5 A on the
# board: (metered - exact) / exact of the imported energy
_RUN = """\
import sys, json
with open('/app.slot') as f: sys.path.insert(0, '/app.' + f.read().strip())
from meter.board import load_board
from sim.hardware import open_sim
from meter.app import Meter
b = load_board(sys.path[0] + '/board.json')
hw = open_sim(b, overrides={'amps': 1.5})
m = Meter(hw)
t0 = m.registers.total_uwh('import')
end = hw.sim.clock.now_us + 1200 * 1000000
m.start()
m.run_until(lambda: hw.sim.clock.now_us >= end)
got = m.registers.total_uwh('import') - t0
print(repr((got - hw.sim.chip.exact_import_uwh) / hw.sim.chip.exact_import_uwh))
"""


def _error(port: str) -> float:
    with Session.open(port) as s:
        s.t.exec_raw_no_follow(_RUN)
        out, err = s.t.follow(120)
    assert not err, err
    return float(out.decode().strip().splitlines()[-1])


_RESTARTS_ONCE = """\
import os, sys, time, micropython
try:
    os.stat('/restarted')
except OSError:
    open('/restarted', 'w').close()
    micropython.kbd_intr(-1)  # deaf to Ctrl-C for a second, then it restarts (a watchdog, a crash, DTR)
    time.sleep_ms(1000)
    sys.exit()
while True:
    time.sleep_ms(10)
"""


def test_a_board_that_restarts_while_asked_is_asked_again(tmp_path):
    with PtyBoard(tmp_path / "board") as board:
        with Session.open(board.port) as s:
            s.write_file("/main.py", _RESTARTS_ONCE.encode())
        mark = len(board.output)
        board.reset()
        with Session.open(board.port, timeout=2) as s:
            assert s.eval("6 * 7") == 42
        assert board.output.count(b"MPY: soft reboot", mark) >= 1
