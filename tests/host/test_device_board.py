"""meterkit device against a real MicroPython REPL without hardware: the Unix port behind a pty that behaves
like a board (meterkit.testing.board), driven by the real mpremote (its CLI, and its SerialTransport inside
meterkit device). End to end: build -> deploy -> provision, frames verified and stored by a running concentrator
that lends the board's port for the tools; deploys cut off at several points; the bad input of the issue."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterkit.cli import main as cli
from meterkit.device.build import build_bundle
from meterkit.device.deploy import deploy, load_profile
from meterkit.device.session import DeviceError
from meterkit.store import open_store
from meterkit.testing.board import PtyBoard
from meterkit.wire.keys import new_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys and /proc: Linux")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    # two different firmware builds that both run on the Unix port: x64 native code, and portable bytecode
    return build_bundle("x64", d / "x64"), build_bundle("none", d / "none")


def _profile(tmp_path: Path, **sim) -> Path:
    prof = json.loads((ROOT / "boards" / "unix-sim.json").read_text())
    prof["sim"].update({"scenario": "constant", "speed": 30, **sim})
    p = tmp_path / "profile.json"
    p.write_text(json.dumps(prof))
    return p


@pytest.fixture
def board(tmp_path):
    with PtyBoard(tmp_path / "board") as b:
        yield b


def _mpremote(port: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mpremote"), "connect", port, *args], capture_output=True, text=True,
                          timeout=60)


def test_the_real_mpremote_cli_works_with_the_board_as_with_a_real_one(board, tmp_path):
    # no `resume`: mpremote soft-resets on connect, and the board comes back in its raw REPL
    r = _mpremote(board.port, "exec", "print(6 * 7)")
    assert (r.returncode, r.stdout) == (0, "42\n")
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "m.py").write_text("X = 5\n")
    r = _mpremote(board.port, "fs", "cp", "-r", str(src), ":")  # os.stat('') works on the LittleFS root
    assert r.returncode == 0, r.stderr
    r = _mpremote(board.port, "soft-reset", "exec", "import pkg.m; print(pkg.m.X)")
    assert (r.returncode, r.stdout) == (0, "5\n"), r.stderr
    assert board.output.count(b"MPY: soft reboot") >= 2
    # Ctrl-C reaches a running program as KeyboardInterrupt, and the board stays up
    (tmp_path / "loop.py").write_text("import time\nwhile True:\n    time.sleep_ms(10)\n")
    _mpremote(board.port, "fs", "cp", str(tmp_path / "loop.py"), ":main.py")
    board.reset()
    time.sleep(0.5)
    r = _mpremote(board.port, "exec", "print('after')")
    assert (r.returncode, r.stdout) == (0, "after\n"), r.stderr
    assert b"KeyboardInterrupt" in board.output


def test_build_deploy_provision_and_the_frames_verify_at_a_concentrator_that_lends_the_port(board, bundles, tmp_path):
    x64, _ = bundles
    profile = _profile(tmp_path)
    assert cli(["device", "deploy", "--port", board.port, "--board", str(profile), "--bundle", str(x64.dir)]) == 0
    board.wait_output(rf"meterkit: firmware {x64.id} from /app.a")
    key, pub, _ = new_key(tmp_path / "keys")
    db = tmp_path / "fleet.db"
    conc = subprocess.Popen([str(BIN / "meterkit"), "concentrator", "--db", str(db), "--key", str(key),
                             "--serial", board.port, "--stats-every", "3600"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: Path(str(db.resolve()) + ".port").exists())
        # the concentrator holds the port: without --release-via the tool says so and changes nothing
        assert cli(["device", "provision", "--port", board.port, "--db", str(db), "--headend-key", str(pub),
                    "--serial"]) == 2
        assert cli(["device", "provision", "--port", board.port, "--db", str(db), "--headend-key", str(pub),
                    "--serial", "--release-via", str(db), "--name", "bench"]) == 0
        # the meter restarted with its link on the console; the concentrator took the port back
        store = open_store(db, readonly=True)
        with store:
            (meter,) = store.meters()
            assert meter.name == "bench"
            _wait(lambda: (store.max_seq(meter.device_id) or 0) >= 3, timeout=40)
        # a deploy while it reports: the port is lent again, the meter stops, restarts, reports on
        assert cli(["device", "deploy", "--port", board.port, "--board", str(profile), "--bundle", str(x64.dir),
                    "--release-via", str(db)]) == 0
        store = open_store(db, readonly=True)
        with store:
            seen = store.max_seq(meter.device_id)
            _wait(lambda: store.max_seq(meter.device_id) > seen + 2, timeout=40)
    finally:
        conc.terminate()
        conc.wait(10)


def test_a_deploy_cut_off_anywhere_leaves_a_board_that_boots_the_old_firmware_or_the_new(board, bundles, tmp_path):
    old, new = bundles
    profile = load_profile(_profile(tmp_path))
    deploy(board.port, old, profile)
    board.wait_output(rf"meterkit: firmware {old.id}")
    board.unplug()
    saved = tmp_path / "old.img"
    shutil.copyfile(board.image, saved)
    board.plug_in()
    start = board.host_bytes
    deploy(board.port, new, profile)
    total = board.host_bytes - start
    board.wait_output(rf"meterkit: firmware {new.id}")
    booted = []
    for share in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.995):
        board.unplug()
        shutil.copyfile(saved, board.image)
        mark = len(board.output)
        board.plug_in()
        board.wait_output(rf"meterkit: firmware {old.id}", since=mark)
        board.cut_after(int(total * share))
        # early cuts meet the connection, later ones the copy: either way the user hears the board went
        with pytest.raises(DeviceError, match="went away|stopped answering|nothing answers"):
            deploy(board.port, new, profile)
        mark = len(board.output)
        board.plug_in()
        m = board.wait_output(rb"meterkit: firmware (\w+) from", since=mark)
        running = m.group(1).decode()
        assert running in (old.id, new.id), (share, running)
        time.sleep(1.0)
        assert b"Traceback" not in board.output[mark:], (share, bytes(board.output[mark:]))
        booted.append(running)
    assert booted[0] == old.id  # cut early: the old firmware
    r = deploy(board.port, new, profile)  # and a whole deploy afterwards completes the new one
    board.wait_output(rf"meterkit: firmware {new.id}")
    assert r.bundle == new.id


def _wait(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)
