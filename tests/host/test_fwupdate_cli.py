"""`meterkit firmware sign|push|status` as a person runs them: keys from `meterkit keys new --name firmware`, an
update file a meter's own manifest check accepts, a push refused before anything is queued when the update is
not signed by the firmware key the meters hold, and the status table."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import archive
from meter import events as E
from meter import messages as M
from meterkit.cli import main as cli_main
from meterkit.device.build import write_manifest
from meterkit.firmware import image as I
from meterkit.store import open_store
from meterkit.wire.keys import key_id, load_public, public_bytes


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


def test_rotate_key_makes_a_rotation_the_current_key_signs_and_push_queues_it(tmp_path, capsys):
    fw_key, fw_pub = _keys(tmp_path, "firmware")
    _, next_pub = _keys(tmp_path, "firmware2")
    out = tmp_path / "rotate.mkfw"
    argv = ["firmware", "rotate-key", "--key", str(fw_key), "--seq", "5", "--class", "unix-sim/x64", "--out", str(out)]
    assert cli_main([*argv, "--new-pub", str(next_pub)]) == 0
    upd = I.load(out, load_public(fw_pub))  # the meter's own manifest check, against the current key
    new_point = public_bytes(load_public(next_pub))
    assert upd.is_key and upd.payload == new_point and upd.fields[M.FWM_PAYLOAD] == M.FW_KEY
    assert upd.done_event() == (E.FW_KEY_INSTALLED, key_id(new_point).hex())
    capsys.readouterr()
    for bad, why in ((["--new-pub", str(fw_key)], "PRIVATE key"),  # a private key where the public one goes
                     (["--new-pub", str(fw_pub)], "the signing key itself"),
                     (["--new-pub", str(next_pub), "--seq", "0"], "sequence number")):
        (tmp_path / "bad.mkfw").unlink(missing_ok=True)
        opts = [*argv[:-1], str(tmp_path / "bad.mkfw"), *bad]
        assert cli_main(opts) == 2, bad
        assert why in capsys.readouterr().err
        assert not (tmp_path / "bad.mkfw").exists()

    db = tmp_path / "db.sqlite"
    with open_store(db) as store:
        meter_pub = public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
        dev = store.register_meter(None, meter_pub, "house").device_id
    push = ["firmware", "push", str(out), "--all", "--db", str(db)]
    assert cli_main([*push, "--firmware-pub", str(next_pub)]) == 2  # checked against the key the meters hold
    assert "does not verify" in capsys.readouterr().err
    # no concentrator here: queued, then the wave times out at once and the rollout halts (its commands failed)
    assert cli_main([*push, "--firmware-pub", str(fw_pub), "--timeout", "0"]) == 1
    with open_store(db, create=False, readonly=True) as store:
        q = store.queued_commands(dev)
    assert [c.op for c in q] == [M.OP_FW_MANIFEST, M.OP_FW_CHUNK, M.OP_FW_ACTIVATE]
    assert q[1].args[M.A_DATA] == new_point.hex()  # the key in one chunk
    assert {c.note for c in q} == {f"firmware key {key_id(new_point).hex()} seq 5"}
    assert {c.state for c in q} == {"failed"}


def _bundle(d, files: dict[str, bytes], arch: str = "x64"):
    """A device bundle as `meterkit device build` lays it out (slot/, root/, MANIFEST.json), made by hand."""
    for rel, data in {**{f"slot/{k}": v for k, v in files.items()}, "root/main.py": b"# main\n"}.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return write_manifest(d, arch, 0x306)


def test_sign_a_bundle_for_a_b_slots_sends_only_what_changed(tmp_path, capsys):
    fw_key, fw_pub = _keys(tmp_path, "firmware")
    v1 = _bundle(tmp_path / "v1", {"meter/a.mpy": b"A1", "meter/b.mpy": b"B" * 3000})
    v2 = _bundle(tmp_path / "v2", {"meter/a.mpy": b"A2", "meter/b.mpy": b"B" * 3000})
    out = tmp_path / "v2.mkfw"
    argv = ["firmware", "sign", "--key", str(fw_key), "--seq", "2", "--version", "v2", "--bundle", str(v2.dir),
            "--out", str(out)]
    assert cli_main(argv) == 2 and "--board NAME" in capsys.readouterr().err
    other = _bundle(tmp_path / "xt", {"meter/a.mpy": b"A1"}, arch="xtensawin")
    assert cli_main([*argv, "--board", "unix-sim", "--base", str(other.dir)]) == 2
    assert "the base bundle is built for xtensawin" in capsys.readouterr().err
    assert cli_main([*argv, "--board", "unix-sim", "--base", str(v1.dir)]) == 0
    upd = I.load(out, load_public(fw_pub))
    assert (upd.fields[M.FWM_PAYLOAD], upd.board_class) == (M.FW_APP_FILES, "unix-sim/x64")
    p = upd.payload

    def read(pos, buf):
        assert pos + len(buf) <= len(p)
        buf[:] = p[pos:pos + len(buf)]

    items, end = archive.entries(read, archive.HASHED)  # the meter's own reader
    assert end == len(p) < 3000  # the unchanged file does not travel
    by = {e.name: e for e in items}
    assert list(by) == ["meter/a.mpy", "MANIFEST.json", "meter/b.mpy"]
    b = by["meter/b.mpy"]
    assert (b.pos, b.size, b.digest) == (None, 3000, hashlib.sha256(b"B" * 3000).digest())  # the running slot's
    a, m = by["meter/a.mpy"], by["MANIFEST.json"]
    assert p[a.pos:a.pos + a.size] == b"A2" and a.digest == hashlib.sha256(b"A2").digest()
    assert json.loads(p[m.pos:m.pos + m.size]) == {"id": v2.id, "arch": "x64", "profile": "unix-sim"}


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
