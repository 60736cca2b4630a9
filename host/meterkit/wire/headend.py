"""The head-end's signing key: commands and cumulative acknowledgements for meters, ES256 with RFC 6979
nonces (byte-identical to meter.cose.sign1 with the same key)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter.messages import ACK, COMMAND, K_ACK_SEQ, K_ARGS, K_COUNTER, K_DEVICE, K_EXPIRES, K_ISSUED, K_KIND, K_OP
from meterkit.wire.envelope import check_p256_private, sign1
from meterkit.wire.errors import ProtocolError
from meterkit.wire.keys import key_id, public_bytes
from meterkit.wire.schema import DEVICE_ID_LEN, UINT32_MAX, UINT64_MAX, check_args


def _arg_uint(v: Any, what: str, hi: int = UINT64_MAX) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise ValueError(f"{what} must be an integer 0..{hi}, got {v!r}")
    return v


class HeadEnd:
    """The head-end's signing key: signs commands and cumulative acknowledgements for meters."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        check_p256_private(private_key)
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.public_bytes = public_bytes(self.public_key)
        self.key_id = key_id(self.public_bytes)

    def lookup(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        """A lookup_pub for verify_host_message that knows this head-end's key."""
        return self.public_key if kid == self.key_id else None

    def _sign(self, kind: int, device_id: bytes, counter: int, now: int, ttl_s: int, extra: dict) -> bytes:
        if not isinstance(device_id, (bytes, bytearray)) or len(device_id) != DEVICE_ID_LEN:
            raise ValueError(f"device_id must be {DEVICE_ID_LEN} bytes")
        _arg_uint(counter, "counter")
        _arg_uint(now, "now", UINT32_MAX)
        if type(ttl_s) is not int or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive integer, got {ttl_s!r}")
        expires = _arg_uint(now + ttl_s, "now + ttl_s", UINT32_MAX)
        payload = {K_KIND: kind, K_DEVICE: bytes(device_id), K_COUNTER: counter, K_ISSUED: now,
                   K_EXPIRES: expires}
        payload.update(extra)
        return sign1(self.private_key, self.key_id, mcbor.encode(payload))

    def sign_command(self, device_id: bytes, counter: int, op: int, args: dict | None, now: int,
                     ttl_s: int) -> bytes:
        """COSE_Sign1 of a command (kind 16): operation `op` with `args` ({uint: value}; omitted if empty)."""
        extra: dict = {K_OP: _arg_uint(op, "op")}
        if args:
            if type(args) is not dict:
                raise ValueError("args must be a dict of unsigned integers to values")
            try:
                check_args(args, "command", K_ARGS)
            except ProtocolError as e:
                raise ValueError(str(e)) from None
            extra[K_ARGS] = args
        return self._sign(COMMAND, device_id, counter, now, ttl_s, extra)

    def sign_ack(self, device_id: bytes, counter: int, ack_seq: int, now: int, ttl_s: int) -> bytes:
        """COSE_Sign1 of a cumulative acknowledgement (kind 17): every frame with seq <= ack_seq is stored."""
        return self._sign(ACK, device_id, counter, now, ttl_s, {K_ACK_SEQ: _arg_uint(ack_seq, "ack_seq")})
