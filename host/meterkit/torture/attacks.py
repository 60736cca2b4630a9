"""Hostile bytes for the floods scenario, made from what a man in the middle saw on a live link: the meter's
frames forged (a signature bit flipped) and replayed, noise, oversized frames; and head-end messages towards
the meter forged (another key under the head-end's kid), replayed (a captured command and acks), signed by the
head-end's own key but not exactly the schema (issue 11, finding 3), and oversized."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import cose
from meter import messages as M
from meter.frame import Deframer, encode_frame
from meterkit.headend.commands import OP_BILLING_RESET
from meterkit.wire.envelope import sign1

OVERSIZED = 70_000  # bytes without a delimiter: beyond any frame either side accepts


class Capture:
    """A TcpProxy fault that breaks nothing: it keeps the whole frames seen in each direction."""

    def __init__(self):
        self.up, self.down = Deframer(), Deframer()
        self.meter_frames: list[bytes] = []
        self.headend_frames: list[tuple[int, bytes]] = []  # (kind, COSE bytes)

    def __call__(self, chunk: bytes, upstream: bool) -> None:
        if upstream:
            self.meter_frames += self.up.feed(chunk)
            return None
        for msg in self.down.feed(chunk):
            parts = cose.split(msg)
            if parts is not None:
                self.headend_frames.append((mcbor.decode(parts[2])[M.K_KIND], bytes(msg)))
        return None


def upstream(frames: list[bytes], rng: random.Random, n: int) -> dict[str, bytes]:
    """Streams for the concentrator, each on a connection of its own: replays, forgeries, noise, oversized."""
    forged = []
    for msg in rng.choices(frames, k=n):
        b = bytearray(msg)
        b[-1 - rng.randrange(64)] ^= 1 << rng.randrange(8)  # a bit of the signature
        forged.append(encode_frame(bytes(b)))
    noise = b"".join(rng.randbytes(rng.randint(1, 300)).replace(b"\x00", b"\x01") + b"\x00" for _ in range(n))
    return {"replayed": b"".join(encode_frame(m) for m in rng.choices(frames, k=n)), "forged": b"".join(forged),
            "malformed": noise, "oversized": b"\x01" * OVERSIZED + b"\x00"}


def _payload(device: bytes, counter: int, now: int, extra: dict, expires: int | None = None) -> bytes:
    p = {M.K_KIND: M.COMMAND, M.K_DEVICE: device, M.K_COUNTER: counter, M.K_ISSUED: now,
         M.K_EXPIRES: now + 300 if expires is None else expires}
    p.update(extra)
    return mcbor.encode(p)


def downstream(headend, device: bytes, counter: int, now: int, captured: list[tuple[int, bytes]],
               rng: random.Random, n: int) -> dict[str, list[bytes]]:
    """Frames for the meter: each list must be refused whole, none may change the meter's state. `counter`: the
    next command counter the head-end would use; the malformed ones take the few after it (fresh when they
    arrive, as a head-end bug's would be: the meter takes their counters, and refuses the head-end's own next
    acknowledgements until its counter passes them)."""
    reset = {M.K_OP: OP_BILLING_RESET}
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = [sign1(stranger, headend.key_id, _payload(device, counter + i, now, reset)) for i in range(n)]
    malformed = [sign1(headend.private_key, headend.key_id, _payload(device, counter + 4 + i, now, extra, expires))
                 for i, (extra, expires) in enumerate((({**reset, 13: 1}, None),  # an unknown key
                                        (reset, now - 10),  # expiring before it was issued
                                        ({**reset, M.K_ARGS: [1, 2]}, None),  # arguments not a map
                                        ({M.K_OP: 99}, None)))]  # no such operation
    return {"malformed": [encode_frame(m) for m in malformed],  # first: while `counter` is still fresh
            "forged": [encode_frame(m) for m in forged],
            "replayed": [encode_frame(m) for _k, m in rng.choices(captured, k=n)] if captured else [],
            "oversized": [b"\x01" * OVERSIZED + b"\x00"]}
