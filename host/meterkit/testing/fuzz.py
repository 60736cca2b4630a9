"""Fuzzing the host's decoders (docs/security.md, "Decoders"), on demand:

    python -m meterkit.testing.fuzz atheris [DIR] [-runs=N ...]   coverage-guided (atheris/libFuzzer) over the
                                                                   host decoders; DIR keeps the corpus it grows
    python -m meterkit.testing.fuzz mutate [--n N] [--seed S]      seeded mutation fuzz, no atheris needed
    python -m meterkit.testing.fuzz differential DIR...            the inputs in DIR (an atheris corpus) through
                                                                   the host and the firmware in MicroPython

Each input goes through the host's three entry points (envelope.loads as a payload, open_envelope,
verify_and_decode) and must meet `check`'s properties; the differential mode then compares the verdicts with
the firmware's (meterkit.testing.decoders). Exit status 0: no finding; 1: a finding, printed with its input.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from meter import cbor as mcbor
from meter import cose as mcose
from meterkit import wire as P
from meterkit.testing import decoders as DX
from meterkit.wire.envelope import loads, open_envelope

_LOOKUP = {DX.KID: DX.HOST_PUB}.get


def check(data: bytes) -> None:
    """The properties of the host decoders on one input; raises AssertionError (or the unexpected exception)."""
    try:
        v = loads(data, "input")
    except P.ProtocolError:
        pass
    else:  # strict: what it accepts is the one deterministic encoding of the value
        assert mcbor.encode(v) == data, f"accepted a non-deterministic encoding {data.hex()}"
    try:
        kid, payload, _ = open_envelope(data, _LOOKUP)
    except P.ProtocolError:
        pass
    else:  # byte-exact: only the very frame that was signed
        assert mcose.verify1(data, {DX.KID: DX.PUB}.get) == (kid, payload), data.hex()
    # the fuzzed bytes as a payload, signed: verify_and_decode refuses with a ProtocolError or decodes what the
    # meter's decoder decodes
    try:
        msg = P.verify_and_decode(mcose.sign1(DX.D, DX.KID, data), _LOOKUP)
    except P.ProtocolError:
        return
    assert mcbor.decode(data)[2] == msg.device_id, data.hex()


def _atheris(argv: list[str]) -> int:
    import atheris  # an on-demand dependency (pyproject's dev extra)

    corpus = next((a for a in argv if not a.startswith("-")), None)
    if corpus is not None and not any(Path(corpus).glob("*")):  # a new corpus starts from the valid inputs
        Path(corpus).mkdir(parents=True, exist_ok=True)
        for i, x in enumerate(DX.payloads() + DX.frames() + DX.edge_cases() + DX.cose_edge_cases()):
            (Path(corpus) / f"seed-{i:03d}").write_bytes(x)
    atheris.instrument_all()  # coverage of every loaded module: meter.cbor, meter.cose, meterkit.wire...
    atheris.Setup([sys.argv[0], *argv], lambda data: check(bytes(data)))
    atheris.Fuzz()  # exits the process: 0 when -runs are done, non-zero with the crashing input on a finding
    return 0  # pragma: no cover


def _mutate(n: int, seed: int) -> int:
    rnd = random.Random(seed)
    seeds = DX.payloads() + DX.frames() + DX.edge_cases() + DX.cose_edge_cases()
    for i in range(n):
        data = DX.mutate(rnd, rnd.choice(seeds))
        try:
            check(data)
        except Exception as e:  # noqa: BLE001 - every unexpected exception is a finding
            print(f"finding at input {i}: {type(e).__name__}: {e}\ninput: {data.hex()}")
            return 1
    print(f"{n} mutated inputs (seed {seed}): no finding")
    return 0


def _differential(dirs: list[str]) -> int:
    inputs = [p.read_bytes() for d in dirs for p in sorted(Path(d).iterdir()) if p.is_file()]
    inputs = [x for x in inputs if len(x) <= 4 * P.MAX_MESSAGE]
    found = DX.disagreements(inputs, inputs, DX.meter_verdicts(inputs, inputs))
    for layer, data, host, meter in found:
        print(f"{layer}: host {host[:60]} meter {meter[:60]}: {data}")
    print(f"{len(inputs)} inputs, {len(found)} disagreements")
    return 1 if found else 0


USAGE = "usage: python -m meterkit.testing.fuzz atheris [DIR] [-runs=N ...] | mutate [--n N] [--seed S] | " \
        "differential DIR..."


def main(argv: list[str] | None = None) -> int:
    """The modes of the module docstring (argparse is the CLI's alone: a few options parsed here)."""
    argv = sys.argv[1:] if argv is None else argv
    mode, rest = (argv[0], argv[1:]) if argv else ("", [])
    if mode == "atheris":
        return _atheris(rest)
    if mode == "differential" and rest:
        return _differential(rest)
    if mode == "mutate" and len(rest) % 2 == 0:
        opts = dict(zip(rest[::2], rest[1::2], strict=True))
        if set(opts) <= {"--n", "--seed"} and all(v.isdigit() for v in opts.values()):
            return _mutate(int(opts.get("--n", 100_000)), int(opts.get("--seed", 1)))
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
