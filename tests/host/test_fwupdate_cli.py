"""`meterkit firmware sign|push|status` as a person runs them: keys from `meterkit keys new --name firmware`, an
update file a meter's own manifest check accepts, a push refused before anything is queued when the update is
not signed by the firmware key the meters hold, and the status table."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit.cli import main as cli_main
from meterkit.firmware import image as I
from meterkit.store import open_store
from meterkit.wire.keys import load_public, public_bytes


def _keys(tmp_path, name):
    assert cli_main(["keys", "new", "--out", str(tmp_path / "keys"), "--name", name]) == 0
    return tmp_path / "keys" / f"{name}.key.pem", tmp_path / "keys" / f"{name}.pub.pem"


def test_sign_push_status(tmp_path, capsys):
    fw_key, fw_pub = _keys(tmp_path, "firmware")
    op_key, _ = _keys(tmp_path, "headend")
    (tmp_path / "fwimage.py").write_text("VERSION = 'v9'\n")
    out = tmp_path / "v9.mkfw"
    argv = ["firmware", "sign", "--seq", "9", "--class", "unix-sim/x64", "--version", "v9", "--files",
            str(tmp_path / "fwimage.py"), "--out", str(out)]
    assert cli_main([*argv[:2], "--key", str(fw_key), *argv[2:]]) == 0
    upd = I.load(out, load_public(fw_pub))  # verified as a meter verifies it (meter.fwupdate.parse_manifest)
    assert (upd.seq, upd.version, upd.board_class) == (9, "v9", "unix-sim/x64")
    assert upd.fields[M.FWM_SIZE] == len(upd.payload) and upd.payload.startswith(b"MKIM")
    forged = tmp_path / "forged.mkfw"
    assert cli_main([*argv[:2], "--key", str(op_key), *argv[2:-1], str(forged)]) == 0

    db = tmp_path / "db.sqlite"
    with open_store(db) as store:
        store.register_meter(None, public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key()), "house")
    capsys.readouterr()
    rc = cli_main(["firmware", "push", str(forged), "--firmware-pub", str(fw_pub), "--all", "--db", str(db)])
    assert rc == 2 and "does not verify" in capsys.readouterr().err
    with open_store(db, create=False, readonly=True) as store:
        assert store.queued_commands() == []  # nothing queued for a forged update
    assert cli_main(["firmware", "status", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "house" in shown and "last firmware event" in shown


@pytest.mark.parametrize("bad", [["--seq", "0"], ["--class", "unix-sim"], ["--version", ""]])
def test_sign_refuses_what_no_meter_takes(tmp_path, bad):
    fw_key, _ = _keys(tmp_path, "firmware")
    (tmp_path / "p.bin").write_bytes(b"x")
    opts = {"--seq": "1", "--class": "unix-sim/x64", "--version": "v1"}
    opts[bad[0]] = bad[1]
    argv = [sys.executable, "-m", "meterkit.cli", "firmware", "sign", "--key", str(fw_key), "--payload",
            str(tmp_path / "p.bin"), "--out", str(tmp_path / "u.mkfw")]
    for k, v in opts.items():
        argv += [k, v]
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "meterkit firmware sign:" in p.stderr, p.stderr
    assert not (tmp_path / "u.mkfw").exists()


def test_chunks_of_a_size_that_divides_the_block():
    upd = I.sign(ec.generate_private_key(ec.SECP256R1()), bytes(range(256)) * 10, 1, "unix-sim/x64", "v1")
    for size in (1024, 512, 256):
        chunks = upd.chunks(size)
        assert [o for o, _ in chunks] == list(range(0, 2560, size))
        assert b"".join(d for _, d in chunks) == upd.payload
        assert all(o // M.FW_BLOCK == (o + len(d) - 1) // M.FW_BLOCK for o, d in chunks)
    for bad in (0, 1000, 2048):  # 1000 does not divide the block; 2048 is above what a meter takes
        with pytest.raises(I.UpdateError):
            upd.chunks(bad)
