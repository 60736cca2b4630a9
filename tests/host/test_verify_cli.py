"""`meterkit keys new` and `meterkit verify` (the transparency tool), through their entry points and through
an argparse tree built the way cli.py will build it (add_parser)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor, cose, frame, p256
from meter import messages as M
from meter.seqno import BLOCK
from meterkit import wire as P
from meterkit.bench.protocol import hello_payload, intervals_payload, reading_payload
from meterkit.cli import keys as keys_cli
from meterkit.cli import verify as verify_cli
from meterkit.wire import keys

D = bytes.fromhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
DEV = bytes.fromhex("4d4b000000000001")
T0 = 1_700_000_000


def meter_pub_pem(tmp_path, d: bytes = D) -> str:
    pub = P.public_from_bytes(p256.public_key(d))
    path = tmp_path / "meter.pub.pem"
    path.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def signed(payload: dict, d: bytes = D, kid: bytes = DEV) -> bytes:
    return cose.sign1(d, kid, cbor.encode(payload))


def frames_file(tmp_path, cose_list: list[bytes], name: str = "frames.bin", noise: bytes = b"") -> str:
    path = tmp_path / name
    path.write_bytes(noise + b"".join(frame.encode_frame(c) for c in cose_list))
    return str(path)


def good_frames() -> list[bytes]:
    return [
        signed(hello_payload(1)),
        signed(reading_payload(2)),
        signed(intervals_payload(3, 4)),
        signed({1: 4, 2: DEV, 3: 4, 4: T0, 5: 4, 6: 17, 7: 3, 8: "relay opened", 9: T0 - 2}),
        signed({1: 5, 2: DEV, 3: 5, 4: T0, 5: 0, 6: T0, 7: {10800: 5000, 10801: 3000, 20800: 7},
                8: {10600: [1500, T0 - 3600]}}),
        signed({1: 6, 2: DEV, 3: 6, 4: T0, 5: 0, 6: 41, 7: -3, 8: "relay locked"}),
        signed({**reading_payload(7), 4: 3600, 5: M.ST_CLOCK_NOT_SET}),
    ]


def run_verify(capsys, *argv) -> tuple[int, str, str]:
    rc = verify_cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- meterkit keys new -----------------------------------------------------------------------------------


def test_keys_new_writes_a_pair(tmp_path, capsys):
    out_dir = tmp_path / "keys"
    assert keys_cli.main(["new", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    key_path = out_dir / "headend.key.pem"
    pub_path = out_dir / "headend.pub.pem"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    priv = keys.load_private(key_path)
    pub = keys.load_public(pub_path)
    assert P.public_bytes(priv.public_key()) == P.public_bytes(pub)
    kid = P.HeadEnd(priv).key_id
    assert f"key id:      {kid.hex()}" in out
    # the key signs commands a meter accepts
    cmd = P.HeadEnd(priv).sign_command(DEV, 1, 1, None, T0, 60)
    assert cose.verify1(cmd, {kid: P.public_bytes(pub)}.get)[0] == kid


def test_keys_new_refuses_to_overwrite(tmp_path, capsys):
    assert keys_cli.main(["new", "--out", str(tmp_path), "--name", "hq"]) == 0
    before = (tmp_path / "hq.key.pem").read_bytes()
    capsys.readouterr()
    assert keys_cli.main(["new", "--out", str(tmp_path), "--name", "hq"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "refusing to overwrite" in err
    assert (tmp_path / "hq.key.pem").read_bytes() == before
    # only the public half left over also blocks (nothing half-written)
    (tmp_path / "hq.key.pem").unlink()
    assert keys_cli.main(["new", "--out", str(tmp_path), "--name", "hq"]) == 1
    assert not (tmp_path / "hq.key.pem").exists()
    with pytest.raises(ValueError, match="bad key name"):
        keys.new_key(tmp_path, "../evil")
    assert keys_cli.main(["new", "--out", str(tmp_path), "--name", "a/b"]) == 2


def test_keys_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as ei:
        keys_cli.main(["new"])  # --out is required
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        keys_cli.main([])
    assert ei.value.code == 2
    capsys.readouterr()


def test_load_public_formats(tmp_path):
    point = p256.public_key(D)
    pem = meter_pub_pem(tmp_path)
    (tmp_path / "raw.bin").write_bytes(point)
    (tmp_path / "point.hex").write_text(point.hex()[:64] + "\n  " + point.hex()[64:].upper() + "\n")
    (tmp_path / "prefixed.hex").write_text("0x" + point.hex())
    for name in (pem, "raw.bin", "point.hex", "prefixed.hex"):
        assert P.public_bytes(keys.load_public(tmp_path / name)) == point


def test_load_key_errors(tmp_path):
    priv = ec.generate_private_key(ec.SECP256R1())
    priv_pem = tmp_path / "k.key.pem"
    priv_pem.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_pub = tmp_path / "p384.pub.pem"
    p384_pub.write_bytes(p384.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    p384_key = tmp_path / "p384.key.pem"
    p384_key.write_bytes(p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    enc_key = tmp_path / "enc.key.pem"
    enc_key.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"pw")))
    (tmp_path / "junk.txt").write_text("hello world")
    (tmp_path / "short.hex").write_text("04" + "00" * 10)
    (tmp_path / "offcurve.bin").write_bytes(b"\x04" + b"\x01" * 64)
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    cases_pub = {
        "missing.pem": "no such key file",
        "k.key.pem": "PRIVATE key",
        "p384.pub.pem": "secp384r1",
        "junk.txt": "not a public key",
        "short.hex": "22 hex digits",
        "offcurve.bin": "not a P-256 public key point",
        "bad.pem": "not a readable public key",
        ".": "is a directory",
    }
    for name, msg in cases_pub.items():
        with pytest.raises(keys.KeyFileError, match=msg):
            keys.load_public(tmp_path / name)
    cases_priv = {
        "missing.pem": "no such key file",
        "p384.key.pem": "secp384r1",
        "enc.key.pem": "password-protected",
        "junk.txt": "not a PEM file",
        "p384.pub.pem": "holds a public key",
    }
    for name, msg in cases_priv.items():
        with pytest.raises(keys.KeyFileError, match=msg):
            keys.load_private(tmp_path / name)
    os.chmod(priv_pem, 0o600)
    assert keys.load_private(priv_pem).private_numbers() == priv.private_numbers()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_private_key_open_to_others_is_refused(tmp_path, mode):
    """Issue 11 finding 9: a 0644 private key was used silently."""
    key_path, _, _ = keys.new_key(tmp_path)
    os.chmod(key_path, mode)
    with pytest.raises(keys.KeyFileError, match=f"mode {mode:04o}: its group or others may read it.*chmod 600"):
        keys.load_private(key_path)
    os.chmod(key_path, 0o400)
    keys.load_private(key_path)


def test_concentrator_refuses_a_readable_private_key(tmp_path):
    key_path, _, _ = keys.new_key(tmp_path)
    os.chmod(key_path, 0o644)
    proc = subprocess.run([sys.executable, "-m", "meterkit.cli", "concentrator", "--db", str(tmp_path / "h.db"),
                           "--listen", "127.0.0.1:0", "--key", str(key_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "its group or others may read it" in proc.stderr, proc.stderr
    assert not (tmp_path / "h.db").exists()


def test_keys_new_under_umask_000(tmp_path):
    """Key directories were created 0777 under umask 000; now 0700 (every one made), the key 0600."""
    before = stat.S_IMODE(os.stat(tmp_path).st_mode)
    old = os.umask(0)
    try:
        assert keys_cli.main(["new", "--out", str(tmp_path / "a" / "b"), "--name", "hq"]) == 0
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "hq.key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "hq.pub.pem").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == before  # an existing directory is left alone


# --- meterkit verify -------------------------------------------------------------------------------------


def test_verify_all_valid(tmp_path, capsys):
    path = frames_file(tmp_path, good_frames())
    rc, out, err = run_verify(capsys, path, "--key", meter_pub_pem(tmp_path))
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 8
    assert all(" VALID " in line for line in lines[:7])
    assert lines[0].startswith("#0 ") and "hello" in lines[0]
    assert "firmware 0.1.0 on board esp32-ina219, boot #17" in lines[0]
    assert lines[0].endswith("[status: power failure, registers restored]")
    reading = lines[1]
    assert "seq 2 " in reading and "2023-11-14T22:13:20Z" in reading
    assert "1.8.0 import 1234567 Wh" in reading and "1.8.1 import T1 834567 Wh" in reading
    assert "2.8.0 export 98765 Wh" in reading
    assert "power -1234.567 W (export), voltage 13.125 V, current -94.062 A" in reading
    assert "coverage 100.0000 %" in reading
    assert "4 row(s)" in lines[2] and "until 2023-11-14T22:13:20Z: import 1234829.962 Wh" in lines[2]
    assert "[DST]" in lines[2]
    assert "event #17 code 3 value 'relay opened'" in lines[3] and "[status: relay open]" in lines[3]
    assert "max demand 1.6.0 1500 W" in lines[4] and "1.8.1 import T1 3000 Wh" in lines[4]
    assert "answer to command 41: rejected (-3): relay locked" in lines[5]
    assert "t=3600 s since boot" in lines[6] and "clock not set" in lines[6]
    assert lines[7] == "7 valid, 0 invalid, 0 noise bytes"


def test_verify_flags_invalid_replays_and_noise(tmp_path, capsys):
    good = good_frames()
    forged = bytearray(good[1])
    forged[-1] ^= 1  # good CRC (re-framed), bad signature
    other_meter = signed(reading_payload(8), d=bytes(range(1, 33)))
    stream = [good[0], good[1], bytes(forged), good[1], other_meter, signed(reading_payload(9))]
    path = tmp_path / "mixed.bin"
    damaged = bytearray(frame.encode_frame(good[2]))
    damaged[20] ^= 0x40  # line noise: bad CRC, not a frame at all
    path.write_bytes(b"boot log\r\n" + b"".join(frame.encode_frame(c) for c in stream) + bytes(damaged))
    rc, out, err = run_verify(capsys, str(path), "--key", meter_pub_pem(tmp_path))
    assert rc == 1
    lines = out.splitlines()
    assert [(" VALID " in x) for x in lines[:6]] == [True, True, False, False, False, True]
    assert "INVALID (bad-signature)" in lines[2]
    assert "INVALID (replay)" in lines[3] and "already seen in frame #1 (an identical copy)" in lines[3]
    assert "INVALID (bad-signature)" in lines[4]
    assert lines[6] == f"GAP     seq 3..8 of device {DEV.hex()}: 6 frame(s) missing"  # seq 1, 2, 9 valid
    assert lines[7].startswith("3 valid, 3 invalid, ") and "noise bytes" in lines[7]
    assert f"{10 + len(damaged) - 2} noise bytes (in 2 segment(s)" in lines[7]


def test_verify_json(tmp_path, capsys):
    good = good_frames()
    path = frames_file(tmp_path, [good[1], good[1], good[2]], noise=b"junk")
    rc, out, _ = run_verify(capsys, path, "--key", meter_pub_pem(tmp_path), "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["file"] == path
    assert doc["summary"] == {"frames": 3, "valid": 2, "invalid": 1, "noise_bytes": 4, "noise_segments": 1,
                              "oversized_segments": 0, "gaps": [], "missing": 0}
    f0, f1, f2 = doc["frames"]
    assert f0["valid"] and f0["kind"] == "reading" and f0["seq"] == 2 and f0["device"] == DEV.hex()
    assert f0["time_utc"] == "2023-11-14T22:13:20Z" and f0["status_flags"] == []
    assert f0["readings"]["registers_wh"] == {"1.8.0": 1234567, "1.8.1": 834567, "1.8.2": 400000,
                                              "2.8.0": 98765, "2.8.1": 90000, "2.8.2": 8765}
    assert f0["readings"]["power_mw"] == -1234567 and f0["readings"]["uncovered_ppm"] == 0
    assert f0["cose"] == good[1].hex()
    assert f1 == {"index": 1, "bytes": len(good[1]), "valid": False, "reason": "replay",
                  "error": "sequence number 2 already seen in frame #0 (an identical copy)",
                  "cose": good[1].hex()}
    assert f2["kind"] == "intervals" and len(f2["readings"]["rows"]) == 4
    assert f2["readings"]["rows"][0]["flags"] == [] and f2["readings"]["rows"][1]["flags"] == ["DST"]


def test_verify_strict_noise_and_empty(tmp_path, capsys):
    pem = meter_pub_pem(tmp_path)
    noisy = frames_file(tmp_path, [good_frames()[1]], noise=b"log line\n")
    assert run_verify(capsys, noisy, "--key", pem)[0] == 1  # noise fails by default (issue 11 finding 8)
    assert run_verify(capsys, noisy, "--key", pem, "--allow-noise")[0] == 0  # a serial capture with log text
    assert run_verify(capsys, noisy, "--key", pem, "--strict")[0] == 1
    assert run_verify(capsys, noisy, "--key", pem, "--strict", "--allow-noise")[0] == 1
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    rc, out, err = run_verify(capsys, str(empty), "--key", pem)
    assert rc == 1 and "no frames" in err and out.strip() == "0 valid, 0 invalid, 0 noise bytes"


def test_verify_fails_on_deleted_frames_and_damage_by_default(tmp_path, capsys):
    """Issue 11 finding 8: frames deleted from a file, or one damaged frame, passed with exit 0."""
    pem = meter_pub_pem(tmp_path)
    good = good_frames()  # seq 1..7
    cut = frames_file(tmp_path, good[:2] + good[4:], name="cut.bin")  # seq 3 and 4 deleted
    rc, out, _ = run_verify(capsys, cut, "--key", pem)
    assert rc == 1
    assert f"GAP     seq 3..4 of device {DEV.hex()}: 2 frame(s) missing" in out.splitlines()
    assert out.splitlines()[-1] == "5 valid, 0 invalid, 0 noise bytes, 2 frame(s) missing in 1 gap(s)"
    assert run_verify(capsys, cut, "--key", pem, "--allow-gaps")[0] == 0
    rc, out, _ = run_verify(capsys, cut, "--key", pem, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ok"] is False and doc["summary"]["missing"] == 2
    assert doc["summary"]["gaps"] == [{"device": DEV.hex(), "first": 3, "last": 4, "missing": 2, "restart": False}]
    one = frames_file(tmp_path, good[:1] + good[2:3], name="one.bin")  # a single missing frame
    assert f"GAP     seq 2 of device {DEV.hex()}: 1 frame(s) missing" in run_verify(capsys, one, "--key", pem)[1]
    # one damaged frame (a bit flipped on the line: bad CRC) in an otherwise complete file
    damaged = bytearray(frame.encode_frame(good[6]))
    damaged[20] ^= 0x40
    path = tmp_path / "damaged.bin"
    path.write_bytes(b"".join(frame.encode_frame(c) for c in good[:6]) + bytes(damaged))
    rc, out, _ = run_verify(capsys, str(path), "--key", pem)
    assert rc == 1 and "1 segment(s) that were not frames" in out


def test_verify_restart_skip_is_no_gap(tmp_path, capsys):
    """After a restart the meter resumes at the next multiple of meter.seqno.BLOCK, flagged ST_RESTORED."""
    pem = meter_pub_pem(tmp_path)
    restored = signed({**reading_payload(BLOCK), 5: M.ST_RESTORED})
    path = frames_file(tmp_path, [signed(reading_payload(5)), restored], name="restart.bin")
    rc, out, _ = run_verify(capsys, path, "--key", pem)
    assert rc == 0 and f"skipped seq 6..{BLOCK - 1} of device {DEV.hex()}" in out
    # the same jump without the restart flag, or not to a block boundary, is a gap
    for p in (reading_payload(BLOCK), {**reading_payload(BLOCK + 1), 5: M.ST_RESTORED}):
        path = frames_file(tmp_path, [signed(reading_payload(5)), signed(p)], name="jump.bin")
        rc, out, _ = run_verify(capsys, path, "--key", pem)
        assert rc == 1 and "GAP     seq 6.." in out


def test_verify_device_filter(tmp_path, capsys):
    path = frames_file(tmp_path, good_frames()[:2])
    pem = meter_pub_pem(tmp_path)
    assert run_verify(capsys, path, "--key", pem, "--device", DEV.hex())[0] == 0
    rc, out, _ = run_verify(capsys, path, "--key", pem, "--device", "4d4b000000000009")
    assert rc == 1 and out.count("INVALID (unknown-kid)") == 2
    rc, _, err = run_verify(capsys, path, "--key", pem, "--device", "xyz")
    assert rc == 2 and "--device wants 16 hex digits" in err


def test_verify_usage_errors(tmp_path, capsys):
    pem = meter_pub_pem(tmp_path)
    path = frames_file(tmp_path, good_frames()[:1])
    rc, _, err = run_verify(capsys, str(tmp_path / "nope.bin"), "--key", pem)
    assert rc == 2 and "no such file" in err
    rc, _, err = run_verify(capsys, str(tmp_path), "--key", pem)
    assert rc == 2 and "cannot read" in err
    rc, _, err = run_verify(capsys, path, "--key", str(tmp_path / "missing.pem"))
    assert rc == 2 and "bad --key" in err and "no such key file" in err
    (tmp_path / "garbage.pem").write_text("not a key")
    rc, _, err = run_verify(capsys, path, "--key", str(tmp_path / "garbage.pem"))
    assert rc == 2 and "bad --key" in err
    with pytest.raises(SystemExit) as ei:
        verify_cli.main([path])  # --key is required
    assert ei.value.code == 2
    capsys.readouterr()


def test_verify_wrong_meter_key(tmp_path, capsys):
    path = frames_file(tmp_path, good_frames()[:3])
    other = tmp_path / "other"
    other.mkdir()
    rc, out, _ = run_verify(capsys, path, "--key", meter_pub_pem(other, bytes(range(1, 33))))
    assert rc == 1 and out.count("INVALID (bad-signature)") == 3


def test_add_parser_in_a_meterkit_tree(tmp_path, capsys):
    # what cli.py does: one `meterkit` parser, each module adds its command
    parser = argparse.ArgumentParser(prog="meterkit")
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cli.add_parser(sub)
    verify_cli.add_parser(sub)
    args = parser.parse_args(["keys", "new", "--out", str(tmp_path / "k")])
    assert args.func(args) == 0
    path = frames_file(tmp_path, good_frames()[:2])
    args = parser.parse_args(["verify", path, "--key", meter_pub_pem(tmp_path), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 3)[-1])["summary"]["valid"] == 2


def test_verify_reads_stdin_as_a_module(tmp_path):
    data = b"".join(frame.encode_frame(c) for c in good_frames()[:2])
    proc = subprocess.run([sys.executable, "-m", "meterkit.cli.verify", "-", "--key", meter_pub_pem(tmp_path)],
                          input=data, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[-1] == "2 valid, 0 invalid, 0 noise bytes"
