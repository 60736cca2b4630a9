"""Signed firmware updates of a stock-firmware board's A/B application slots, end to end on the test board (the
Unix port behind a pty, meterkit.testing.board): build -> deploy -> provision, then `meterkit firmware push` of
a bundle update through a concentrator that holds the board's serial port. The update lands in the other slot,
runs on trial and confirms; a bundle whose code raises at boot is rolled back and its rollout halts."""

from __future__ import annotations

import binascii
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_device_board import _wait

from meter import events
from meterkit.cli import main as cli
from meterkit.device.build import build_bundle, load_bundle, write_manifest
from meterkit.device.provision import _PATH
from meterkit.device.session import Session
from meterkit.device.toolchain import mpy_cross_bin
from meterkit.firmware.rollout import status_rows
from meterkit.store import open_store
from meterkit.testing.board import PtyBoard, sim_profile
from meterkit.wire.keys import load_public, new_key, public_bytes

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys and /proc: Linux")

# The firmware key goes onto the board over its REPL here: `meterkit device provision --firmware-pub` is being
# added by another change.
_INSTALL_FIRMWARE_KEY = _PATH + """\
import binascii
from meter.board import load_board
from meter.fwupdate import install_key
_d = load_board(_s + '/board.json')['flash_dir']
try:
    os.mkdir(_d)
except OSError:
    pass
install_key(_d, binascii.unhexlify(%r))
print('installed')
"""


def _variant(base, out: Path, sources: dict[str, str]):
    """Another build: `base` with some modules compiled from other sources ({"meter/app": source})."""
    shutil.copytree(base.dir, out)
    for rel, src in sources.items():
        py = out / "src.py"
        py.write_text(src)
        subprocess.run([mpy_cross_bin(), f"-march={base.arch}", "-s", f"{rel}.py", "-o",
                        str(out / "slot" / f"{rel}.mpy"), str(py)], check=True)
        py.unlink()
    write_manifest(out, base.arch, base.mpy)
    return load_bundle(out)


def test_a_bundle_update_lands_in_the_other_slot_and_one_that_raises_at_boot_is_rolled_back(tmp_path):
    v1 = build_bundle("x64", tmp_path / "v1")
    v2 = _variant(v1, tmp_path / "v2", {"meter/__init__": "BUILD = 2\n"})
    v3 = _variant(v2, tmp_path / "v3", {"meter/app": "raise RuntimeError('v3 fails at boot')\n"})
    key, pub, _ = new_key(tmp_path / "keys")
    fw_key, fw_pub, _ = new_key(tmp_path / "keys", "firmware")
    db = tmp_path / "fleet.db"
    profile = sim_profile(tmp_path / "profile.json", speed=1, reading_s=2, rtc="unset")
    with PtyBoard(tmp_path / "board") as board:
        assert cli(["device", "deploy", "--port", board.port, "--board", str(profile), "--bundle", str(v1.dir)]) == 0
        with Session.open(board.port) as s:
            assert s.run(_INSTALL_FIRMWARE_KEY % binascii.hexlify(public_bytes(load_public(fw_pub))).decode()
                         ).strip() == "installed"
        # the default --backfill-after (30 s): an orderly restart into the new firmware leaves no gap in the
        # sequence numbers (meter.seqno.FrameSeq.close), so its first reading is acknowledged at once
        conc = subprocess.Popen([str(BIN / "meterkit"), "concentrator", "--db", str(db), "--key", str(key),
                                 "--serial", board.port, "--stats-every", "3600"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: Path(str(db.resolve()) + ".port").exists())
            assert cli(["device", "provision", "--port", board.port, "--db", str(db), "--headend-key", str(pub),
                        "--serial", "--release-via", str(db), "--name", "bench"]) == 0
            for seq, bundle in ((2, v2), (3, v3)):  # each built against the one the board runs: changes only
                base = v1 if bundle is v2 else v2
                assert cli(["firmware", "sign", "--key", str(fw_key), "--seq", str(seq), "--board", "unix-sim",
                            "--version", f"v{seq}", "--bundle", str(bundle.dir), "--base", str(base.dir),
                            "--out", str(tmp_path / f"v{seq}.mkfw")]) == 0
            mark = len(board.output)
            push = ["firmware", "push", "--firmware-pub", str(fw_pub), "--meter", "bench", "--timeout", "120",
                    "--db", str(db)]
            assert cli([*push[:2], str(tmp_path / "v2.mkfw"), *push[2:]]) == 0
            board.wait_output(rf"meterkit: firmware {v2.id} from /app.b on trial", since=mark)
            _assert_status(db, "v2", events.FW_CONFIRMED)
            mark = len(board.output)
            assert cli([*push[:2], str(tmp_path / "v3.mkfw"), *push[2:]]) == 1  # halted
            board.wait_output(rf"meterkit: firmware {v3.id} from /app.a on trial", since=mark)
            board.wait_output(r"v3 fails at boot[\s\S]*back to the previous slot[\s\S]*"
                              rf"meterkit: firmware {v2.id} from /app.b\r?\n", since=mark)
            _assert_status(db, "v2", events.FW_ROLLED_BACK)
        finally:
            conc.terminate()
            conc.wait(10)


def _assert_status(db: Path, version: str, event: int) -> None:
    store = open_store(db, readonly=True)
    with store:
        _wait(lambda: status_rows(store)[0]["firmware"] == version, timeout=30, state=lambda: status_rows(store))
        (dev,) = [m.device_id for m in store.meters()]
        assert store.events(dev, codes=(event,)), status_rows(store)

