"""Finding 4 of issue 11: the host's decoding accepted CBOR the meter refuses (`true` or simple(8) as a map key:
Python's True == 1). Now both decode with the same strict rules; checked by running the very same inputs
through the host (CPython) and the firmware (MicroPython, both interpreters) and comparing the verdicts and the
decoded values. `python -m meterkit.testing.fuzz` is the long, coverage-guided form (docs/security.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import cose as mcose
from meter.frame import encode_frame
from meterkit import wire as P
from meterkit.device import mp32
from meterkit.testing import decoders as DX

SEED = 11_04


def _reading_with(swap: bytes) -> bytes:
    """A valid reading payload whose key 1 (kind) is replaced by `swap` (a one-byte data item)."""
    p = DX.payloads()[0]
    assert p[:2] == b"\xa8\x01"
    return p[:1] + swap + p[2:]


@pytest.mark.parametrize("swap", [b"\xf5", b"\xe8", b"\xf7"], ids=["true", "simple8", "undefined"])
def test_verify_and_decode_refuses_a_simple_value_as_map_key(swap):
    frame = mcose.sign1(DX.D, DX.KID, _reading_with(swap))
    with pytest.raises(mcbor.BadKey):
        mcbor.decode(mcose.split(frame)[2])  # the meter refuses it
    with pytest.raises(P.Malformed, match="BadKey"):
        P.verify_and_decode(frame, {DX.KID: DX.HOST_PUB}.get)


def test_simple_value_where_an_int_belongs_is_refused():
    p = DX.payloads()[0]
    at8 = p.rindex(b"\x08\x00")  # key 8 (uncovered ppm) = 0
    for bad in (p[:at8] + b"\x08\xe8", p[:at8] + b"\xe8\x00"):
        with pytest.raises(P.ProtocolError):
            P.verify_and_decode(mcose.sign1(DX.D, DX.KID, bad), {DX.KID: DX.HOST_PUB}.get)


def test_meterkit_verify_says_invalid(tmp_path):
    good = mcose.sign1(DX.D, DX.KID, DX.payloads()[0])
    bad = mcose.sign1(DX.D, DX.KID, _reading_with(b"\xf5"))
    key = tmp_path / "meter.pub"
    key.write_text(DX.PUB.hex())
    for name, frame in (("good", good), ("bad", bad)):
        (tmp_path / name).write_bytes(encode_frame(frame))
    run = [sys.executable, "-m", "meterkit.cli", "verify", "--key", str(key)]
    ok = subprocess.run(run + [str(tmp_path / "good")], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "VALID" in ok.stdout, ok.stdout + ok.stderr
    no = subprocess.run(run + [str(tmp_path / "bad")], capture_output=True, text=True, check=False)
    assert no.returncode == 1 and "INVALID (malformed)" in no.stdout, no.stdout + no.stderr


def test_host_message_limits_are_the_meters():
    # the meter decodes a head-end payload with at most 512 data items: the host's check of one too
    he = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    base = {1: 16, 2: DX.KID, 3: 5, 4: 1_700_000_000, 9: 1_700_000_060, 10: 2}
    many = mcbor.encode({**base, 11: {1: list(range(520))}})
    frame = P.sign1(he.private_key, he.key_id, many)
    with pytest.raises(P.Oversized, match="TooManyItems"):
        P.verify_host_message(frame, he.lookup, DX.KID, 1_700_000_000)


INTERPRETERS = [pytest.param(None, id="unix"), pytest.param("mp32", id="mp32")]


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_host_and_meter_decoders_agree(interp):
    exe = None
    if interp == "mp32":
        try:
            exe = mp32.ensure()
        except mp32.Unavailable as e:
            pytest.skip(f"the 32-bit interpreter is not available: {e}")
    n_cbor, n_cose = (3000, 600) if interp is None else (1000, 200)
    cb, cs = DX.corpus(SEED, n_cbor, n_cose)
    meter = DX.meter_verdicts(cb, cs, exe=exe)
    assert DX.disagreements(cb, cs, meter) == []
    # the corpus reaches both sides of each layer
    assert sum(v != "-" for v in meter["cbor"]) > 100 and sum(v == "-" for v in meter["cbor"]) > 900
    assert sum(v != "-" for v in meter["cose"]) > 70 and sum(v == "-" for v in meter["cose"]) > 200


def test_fuzz_smoke(tmp_path):
    """The short, seeded form of `python -m meterkit.testing.fuzz`: mutation fuzz in process, a few hundred
    coverage-guided atheris runs, and the corpus they grew through the differential (docs/security.md)."""
    from meterkit.testing import fuzz

    assert fuzz.main(["mutate", "--n", "1500", "--seed", "7"]) == 0
    corpus = tmp_path / "corpus"
    run = subprocess.run([sys.executable, "-m", "meterkit.testing.fuzz", "atheris", str(corpus), "-runs=400",
                          "-seed=11"], capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Done 400 runs" in run.stderr
    assert len(list(corpus.iterdir())) > 60
    assert fuzz.main(["differential", str(corpus)]) == 0
