"""Frames from the real firmware (Unix port, simulated chip) checked by independent tools on the host."""

import json
import signal
import subprocess
import sys

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from meter import frame
from meter import messages as M
from meterkit import wire as P
from meterkit.device.toolchain import firmware_dir
from meterkit.sim.runner import run_sim, sim_command, sim_env

MORNING = 1793527200  # 2026-11-01 10:00 UTC


def _frames(path):
    d = frame.Deframer()
    out = d.feed(path.read_bytes())
    assert d.noise == 0 and d.oversized == 0
    return out


def test_sim_frames_verify_everywhere(tmp_path):
    frames_path, pem = tmp_path / "meter.frames", tmp_path / "meter.pem"
    r = run_sim("steps", 1.0, start=MORNING, frames_out=frames_path, pubkey_out=pem)
    frames = _frames(frames_path)
    assert len(frames) == r["frames"] > 60  # hello + 60 readings + 4 profile rows
    pub = serialization.load_pem_public_key(pem.read_bytes())
    x = pub.public_numbers().x.to_bytes(32, "big")
    y = pub.public_numbers().y.to_bytes(32, "big")
    cose_key = EC2Key(crv=P256, x=x, y=y)
    device = bytes.fromhex(r["device_id"])
    msgs = []
    for f in frames:
        # 1. meterkit's host decoder (cbor2 + cryptography + schema)
        msgs.append(P.verify_and_decode(f, {device: pub}.get))
        # 2. bare cryptography over the Sig_structure, no meterkit code
        tag = cbor2.loads(f)
        prot, unprot, payload, sig = tag.value
        to_be_signed = cbor2.dumps(["Signature1", prot, b"", payload])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, to_be_signed, ec.ECDSA(hashes.SHA256()))
        # 3. pycose, an independent COSE implementation
        m = Sign1Message.from_cose_obj([prot, dict(unprot), payload, sig], True)
        m.key = cose_key
        assert m.verify_signature()
    kinds = [m.kind for m in msgs]
    assert kinds[0] == M.HELLO and kinds.count(M.READING) == 60 and kinds.count(M.INTERVALS) == 4
    seqs = [m.seq for m in msgs]
    assert seqs == sorted(set(seqs)), "sequence numbers strictly increase"
    last = [m for m in msgs if m.kind == M.READING][-1]
    assert last.body[6][10800] == r["registers"]["1.8.0"]
    # profile rows: cumulative import in mWh, rising
    rows = [m.body[6][0] for m in msgs if m.kind == M.INTERVALS]
    assert [row[0] % 900 for row in rows] == [0] * 4
    assert [row[1] for row in rows] == sorted(row[1] for row in rows)


def test_verify_cli_reports_tampering(tmp_path):
    frames_path, pem = tmp_path / "meter.frames", tmp_path / "meter.pem"
    run_sim("constant", 0.1, frames_out=frames_path, pubkey_out=pem)
    ok = subprocess.run([sys.executable, "-m", "meterkit.cli", "verify", str(frames_path), "--key", str(pem),
                         "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    n = len(report["frames"])
    assert n > 3 and all(f["valid"] for f in report["frames"])
    # change one byte inside the third frame's payload, then fix its CRC so only the signature can object
    frames = _frames(frames_path)
    bad = bytearray(frames[2])
    bad[30] ^= 0x01
    tampered = b"".join(frame.encode_frame(bytes(bad) if i == 2 else f) for i, f in enumerate(frames))
    (tmp_path / "tampered.frames").write_bytes(tampered)
    out = subprocess.run([sys.executable, "-m", "meterkit.cli", "verify", str(tmp_path / "tampered.frames"),
                          "--key", str(pem), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    verdicts = json.loads(out.stdout)["frames"]
    assert [f["valid"] for f in verdicts].count(False) == 1 and not verdicts[2]["valid"]


def test_sequence_numbers_never_repeat_across_power_cuts(tmp_path):
    """Kill the meter mid-run several times on one flash: one device key, every sequence number once."""
    flash = tmp_path / "flash"
    flash.mkdir()
    all_seqs = []
    devices = set()
    for run in range(4):
        frames_path = tmp_path / f"run{run}.frames"
        cmd = sim_command("constant", 24, flash_dir=flash, start=MORNING, flags=("trace",))
        cmd += ["--frames", str(frames_path), "--reading-s", "5"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=sim_env(),
                                cwd=str(firmware_dir().parent))
        batches = 0
        for line in proc.stdout:
            if line.startswith("@@BATCH"):
                batches += 1
                if batches == 30 + 17 * run:
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=60)
        for f in _frames(frames_path):
            tag = cbor2.loads(f)
            p = cbor2.loads(tag.value[2])
            devices.add(p[2])
            all_seqs.append(p[3])
    assert len(devices) == 1, "the device key survived the power cuts"
    assert len(all_seqs) > 100
    assert len(all_seqs) == len(set(all_seqs)), "a sequence number was reused"


def test_headend_key_installed_on_the_meter_matches_the_host_key_id(tmp_path):
    from meterkit.cli import keys as keys_cli
    from meterkit.wire import keys

    keys_cli.main(["new", "--out", str(tmp_path)])
    pub = keys.load_public(tmp_path / "headend.pub.pem")
    point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    head = P.HeadEnd(keys.load_private(tmp_path / "headend.key.pem"))
    r = run_sim("constant", 0.05, headend_pub=point)
    assert r["headend_id"] == head.key_id.hex()


def test_provision_makes_the_key_once(tmp_path):
    from meterkit.sim.runner import provision

    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    first = provision(tmp_path / "m", point, tmp_path / "m.pem")
    again = provision(tmp_path / "m", point)
    assert first["created"] and not again["created"]
    assert first["device_id"] == again["device_id"]
    pem = serialization.load_pem_public_key((tmp_path / "m.pem").read_bytes())
    assert pem.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint).hex() == first["public_key"]
