"""Host and meter decoders side by side: the corpus, the mutations and the verdicts of the differential test
(tests/host/test_decoder_differential.py) and of `python -m meterkit.testing.fuzz` (docs/security.md,
"Decoders").

Two layers, each judged on the same bytes by both sides:

- "cbor": one data item, as a payload is decoded. Host: meterkit.wire.envelope.loads (what verify_and_decode
  and verify_host_message use). Meter: meter.cbor.decode with the same limits.
- "cose": a whole COSE_Sign1. Host: meterkit.wire.envelope.open_envelope. Meter: meter.cose.verify1. Both know
  one key (KID, signed with D).

A verdict is "-" (refused) or "+" and a text form of the value that both interpreters print alike (see
MP_SCRIPT's show(); ints in decimal, strings as hex, map entries sorted, so dict order does not matter).
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from meter import cbor as mcbor
from meter import cose as mcose
from meter import p256
from meterkit import wire as P
from meterkit.device.toolchain import micropython_cmd, mp_env
from meterkit.wire.envelope import MAX_MESSAGE, loads, open_envelope

D = bytes(range(1, 33))
KID = bytes.fromhex("4d4b000000000001")
PUB = p256.public_key(D)
HOST_PUB = P.public_from_bytes(PUB)

# Runs in MicroPython (and CPython): reads the inputs from the file argv[1] (see main), prints one verdict a line.
MP_SCRIPT = """
import sys
import json
from meter import cbor, cose


def show(v):
    if v is None:
        return "n"
    if v is True:
        return "t"
    if v is False:
        return "f"
    if isinstance(v, int):
        return "i%d" % v
    if isinstance(v, bytes):
        return "b" + "".join("%02x" % x for x in v)
    if isinstance(v, str):
        return "s" + "".join("%02x" % x for x in v.encode("utf-8"))
    if isinstance(v, list):
        return "[" + ",".join(show(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(sorted(show(k) + ":" + show(x) for k, x in v.items())) + "}"
    if isinstance(v, cbor.Tag):
        return "T%d(%s)" % (v.number, show(v.value))
    return "?" + type(v).__name__


def main():
    # line 1: {"kid": hex, "pub": hex, "max_len": n}; then one input a line: "c HEX" (cbor) or "s HEX" (cose);
    # out: one verdict a line (streamed: the heap holds one input at a time)
    f = open(sys.argv[1])
    head = json.loads(f.readline())
    keys = {bytes.fromhex(head["kid"]): bytes.fromhex(head["pub"])}
    max_len = head["max_len"]
    for line in f:
        data = bytes.fromhex(line[2:].strip())
        try:
            if line[0] == "c":
                v = show(cbor.decode(data, max_len=max_len, max_depth=8))
            else:
                v = show(list(cose.verify1(data, keys.get, max_len=max_len)))
            print("+" + v)
        except (cbor.DecodeError, cose.COSEError):
            print("-")


if __name__ == "__main__":
    main()
"""

_ns: dict[str, Any] = {}
exec(compile(MP_SCRIPT, "decoders.MP_SCRIPT", "exec"), _ns)  # the very show() MicroPython runs
show = _ns["show"]


def host_cbor(data: bytes) -> str:
    try:
        return "+" + show(loads(data, "input"))
    except P.ProtocolError:
        return "-"


def host_cose(frame: bytes) -> str:
    try:
        kid, payload, _ = open_envelope(frame, {KID: HOST_PUB}.get, MAX_MESSAGE)
    except P.ProtocolError:
        return "-"
    return "+" + show([kid, payload])


# -- the corpus --------------------------------------------------------------------------------------------
def _h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


def payloads() -> list[bytes]:
    """Valid meter payloads (a reading, an event, a billing snapshot), encoded by the firmware's encoder."""
    common = {1: 2, 2: KID, 3: 7, 4: 1_700_000_000, 5: 0}
    reading = {**common, 6: {10800: 123456, 20800: 0}, 7: [1500, 230000, 6500], 8: 0}
    event = {**common, 1: 4, 6: 12, 7: 3, 8: "text", 9: 1_699_999_000}
    billing = {**common, 1: 5, 6: 1_700_000_000, 7: {10800: 5000, 20800: 10}, 8: {10600: [1500, 1_699_990_000]}}
    return [mcbor.encode(p) for p in (reading, event, billing)]


def frames() -> list[bytes]:
    return [mcose.sign1(D, KID, p) for p in payloads()]


def edge_cases() -> list[bytes]:
    """Hand-made inputs at the edges of the data model: each must be judged alike by both decoders."""
    reading = payloads()[0]
    cases = [
        "a1f501", "a1f401", "a1f601", "a1e801", "a1f82001", "a1f91c0001", "a18001", "a1a001", "a1c10101",
        "e8", "e0", "f7", "f820", "f810", "f5", "f4", "f6", "f93c00", "fa3f800000", "fb3ff0000000000000",
        "c24101", "c34101", "c1c20101", "d2a0", "d9ffff00", "dbffffffffffffffff00",
        "1bffffffffffffffff", "3bffffffffffffffff", "1b0000000100000000", "1800", "1817", "1818", "190001",
        "9fff", "5fff", "7fff", "bfff", "ff", "1c", "1d", "1e", "1f", "3f", "5c", "dc00",
        "a2010101 01".replace(" ", ""), "a2020001 00".replace(" ", ""), "a20100 2000".replace(" ", ""),
        "a2610001 4000".replace(" ", ""), "a2410001 6100".replace(" ", ""),
        "62c328", "63eda080", "64f4908080", "62c080", "63e08080", "61ff", "6161", "",
        "81" * 8 + "00", "81" * 7 + "00", "a101" + "81" * 6 + "00", "8a" + "00" * 9, "5a00000001",
        "82", "a1", "a101", "d2", "5818" + "00" * 23, "00 00".replace(" ", ""),
    ]
    out = [bytes.fromhex(c) for c in cases]
    # the findings: `true` (0xf5) for key 1 and simple(8) (0xe8) for key 8 of a real reading
    out.append(b"\xa8\xf5" + reading[2:])
    at8 = reading.rindex(b"\x08\x00")
    out.append(reading[:at8] + b"\xe8" + reading[at8 + 1:])
    out.append(reading[:at8] + b"\x08\xe8")  # simple(8) as a value
    out.extend(payloads())
    return out


def cose_edge_cases() -> list[bytes]:
    """Hand-made COSE_Sign1 frames: the issue's payload tricks, signed, and envelope tricks."""
    out = frames()
    for p in edge_cases():
        out.append(mcose.sign1(D, KID, p))
    f = out[0]
    kid_at = f.index(KID)
    out += [
        f[:kid_at - 3] + b"\xa1\xf5\x48" + f[kid_at:],  # {true: kid}
        f[:kid_at - 3] + b"\xa1\xe4\x48" + f[kid_at:],  # {simple(4): kid}
        f[:3] + b"\x43\xa1\xf5\x26" + f[7:],  # protected {true: -7}
        f + b"\x00", f[:-1], b"\xd2" + f, f[1:], b"\xd2\x9f" + f[2:] + b"\xff",
    ]
    return out


def mutate(rnd: random.Random, data: bytes) -> bytes:
    """1-3 edits of the kinds line errors and attackers make: bit flips, truncation, insertion, deletion,
    overwrite (often with a CBOR head of major type 7), duplication."""
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 3))):
        op = rnd.randrange(7)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del b[i:]
        elif op == 2:
            b[i:i] = rnd.randbytes(rnd.randrange(1, 5))
        elif op == 3 and b:
            del b[i % len(b):i % len(b) + rnd.randrange(1, 5)]
        elif op == 4 and b:
            b[i % len(b)] = rnd.choice((0xF4, 0xF5, 0xF6, 0xF7, 0xE8, 0xF8, 0xF9, 0xFF, rnd.randrange(256)))
        else:
            b[i:i] = b[i:i + rnd.randrange(1, 5)]
    return bytes(b)


def corpus(seed: int, n_cbor: int, n_cose: int) -> tuple[list[bytes], list[bytes]]:
    """Edge cases plus seeded mutations of valid payloads (n_cbor) and of valid signed frames (n_cose)."""
    rnd = random.Random(seed)
    valid_p, valid_f = payloads(), frames()
    cb = edge_cases() + [mutate(rnd, rnd.choice(valid_p)) for _ in range(n_cbor)]
    cs = cose_edge_cases() + [mutate(rnd, rnd.choice(valid_f)) for _ in range(n_cose)]
    return cb, cs


def meter_verdicts(cbor_inputs: list[bytes], cose_inputs: list[bytes], exe: str | Path | None = None,
                   timeout: float = 600) -> dict[str, list[str]]:
    """The firmware's verdicts, computed inside MicroPython (the Unix port, or the interpreter `exe`)."""
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        script, data = Path(d) / "decoders_mp.py", Path(d) / "inputs.txt"
        script.write_text(MP_SCRIPT)
        lines = [json.dumps({"kid": KID.hex(), "pub": PUB.hex(), "max_len": MAX_MESSAGE})]
        lines += ["c " + x.hex() for x in cbor_inputs] + ["s " + x.hex() for x in cose_inputs]
        data.write_text("\n".join(lines) + "\n")
        proc = subprocess.run(micropython_cmd(script, str(data), exe=exe), capture_output=True, text=True,
                              timeout=timeout, env=mp_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"MicroPython failed: {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
    out = proc.stdout.splitlines()
    if len(out) != len(cbor_inputs) + len(cose_inputs):
        raise RuntimeError(f"MicroPython gave {len(out)} verdicts for {len(cbor_inputs) + len(cose_inputs)} inputs")
    return {"cbor": out[:len(cbor_inputs)], "cose": out[len(cbor_inputs):]}


def disagreements(cbor_inputs: list[bytes], cose_inputs: list[bytes],
                  meter: dict[str, list[str]]) -> list[tuple[str, str, str, str]]:
    """(layer, input hex, host verdict, meter verdict) for every input the two sides judge differently."""
    out = []
    for layer, inputs, host in (("cbor", cbor_inputs, host_cbor), ("cose", cose_inputs, host_cose)):
        for data, theirs in zip(inputs, meter[layer], strict=True):
            ours = host(data)
            if ours != theirs:
                out.append((layer, data.hex(), ours, theirs))
    return out
