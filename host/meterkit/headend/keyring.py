"""The head-end keys a concentrator signs with, and which one each meter trusts (key rotation, docs/security.md).

A meter verifies commands and acknowledgements under the one head-end key it holds. During a rotation some
meters hold the old key and some the new, so the concentrator is given both (`--key` more than once) and signs
for each meter with the key it holds: the store's meter_keys entry, else the first key given. A meter moves to
the new key exactly when its answer to the rotation (result 0) is stored (Dispatch); a meter offline during the
rotation gets the command when it returns, signed with the old key it still holds.

KeyRing signs like meterkit.wire.HeadEnd (sign_command, sign_ack: the device id picks the key), so the
concentrator's parts take either. Given key_dir (the directory of the concentrator's first key), a key a meter
holds that it was not given is looked for there (`meterkit keys rotate` writes the new key next to the
current one): a running concentrator signs for a meter that just rotated without a restart.

rotate() queues a rotation for every registered meter; status() says who holds which key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit.headend import commands as opcmds
from meterkit.store.api import QUEUE_PENDING, HeadEndKeys, Store
from meterkit.wire.headend import HeadEnd
from meterkit.wire.keys import KeyFileError, key_id, load_private

log = logging.getLogger(__name__)


class KeyRing:
    def __init__(self, keys: Sequence[HeadEnd], store: HeadEndKeys | None = None,
                 key_dir: str | Path | None = None):
        if not keys:
            raise ValueError("a key ring needs at least one head-end key")
        self.keys = {k.key_id: k for k in keys}
        self.key_dir = key_dir
        self.default = keys[0]  # what a meter with no meter_keys entry holds
        self._held: dict[bytes, bytes] = {}
        self._warned: set[bytes] = set()
        if store is not None:
            self._held = {dev: kid for dev, (kid, _since) in store.meter_keys().items()}

    # HeadEnd's attributes: the default key's (what the log and a new meter's provisioning show)
    @property
    def key_id(self) -> bytes:
        return self.default.key_id

    @property
    def public_bytes(self) -> bytes:
        return self.default.public_bytes

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self.default.private_key

    def lookup(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        k = self.keys.get(kid)
        return None if k is None else k.public_key

    def add(self, key: HeadEnd) -> None:
        """Another key to sign with (a rotation's new key, given to a running concentrator)."""
        self.keys.setdefault(key.key_id, key)

    def held(self, device_id: bytes) -> bytes:
        """The kid of the key the meter holds."""
        return self._held.get(bytes(device_id), self.default.key_id)

    def for_device(self, device_id: bytes) -> HeadEnd:
        """The key to sign for this meter with; ValueError when the concentrator was not given it."""
        kid = self.held(device_id)
        k = self.keys.get(kid) or self._look_for(kid)
        if k is None:
            raise ValueError(f"meter {bytes(device_id).hex()} holds head-end key {kid.hex()}, which this "
                             "concentrator was not given (--key)")
        return k

    def _look_for(self, kid: bytes) -> HeadEnd | None:
        """The private keys in key_dir (*.key.pem) are loaded; the one with this kid, if there."""
        if self.key_dir is None:
            return None
        for path in sorted(Path(self.key_dir).glob("*.key.pem")):
            try:
                k = HeadEnd(load_private(path))
            except (KeyFileError, ValueError) as e:
                log.warning("head-end key %s not usable: %s", path, e)
                continue
            if k.key_id not in self.keys:
                log.info("head-end key %s (%s) loaded", k.key_id.hex(), path)
                self.keys[k.key_id] = k
        return self.keys.get(kid)

    def moved(self, device_id: bytes, kid: bytes) -> None:
        """The meter now holds key `kid` (its rotation answer was stored)."""
        self._held[bytes(device_id)] = bytes(kid)

    def sign_command(self, device_id: bytes, counter: int, op: int, args: dict | None, now: int,
                     ttl_s: int) -> bytes:
        return self.for_device(device_id).sign_command(device_id, counter, op, args, now, ttl_s)

    def sign_ack(self, device_id: bytes, counter: int, ack_seq: int, now: int, ttl_s: int) -> bytes:
        """A command without its key fails (it is not sent); an ack is signed with the first key all the same and
        the error logged (once per meter): the meter refuses it and keeps its frames until the key is given."""
        try:
            k = self.for_device(device_id)
        except ValueError as e:
            if bytes(device_id) not in self._warned:
                self._warned.add(bytes(device_id))
                log.error("%s: its acknowledgements are refused until the concentrator is given that key", e)
            k = self.default
        return k.sign_ack(device_id, counter, ack_seq, now, ttl_s)


def rotate(store: Store, current_kid: bytes, new_point: bytes, now: float, expires: int | None = None,
           by: str | None = None) -> list[int]:
    """Queue a rotation to the key `new_point` for every registered meter (one transaction) for `by` (default:
    the OS user); a meter with no meter_keys entry is recorded as holding `current_kid` (the concentrator's
    first key), so each entry says what its meter holds whatever order the keys are given in later. Returns
    the queue ids."""
    args = opcmds.key_rotate_args(new_point)
    by = opcmds.operator() if by is None else by
    ids = []
    try:
        for m in store.meters():
            if store.meter_key(m.device_id) is None:
                store.set_meter_key(m.device_id, current_kid, now)
            ids.append(opcmds.queue_in(store, m.device_id, M.OP_KEY_ROTATE, args, now, expires,
                                       note="meterkit keys rotate", by=by))
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return ids


def status(store: Store, default_kid: bytes | None = None) -> list[dict]:
    """Per registered meter: the key it holds (None: no entry, the concentrator's first key, `default_kid` when
    known), since when, and the key of a rotation still on its way to it."""
    held = store.meter_keys()
    out = []
    for m in store.meters():
        kid, since = held.get(m.device_id, (default_kid, None))
        pending = [q for q in store.queued_commands(m.device_id, QUEUE_PENDING) if q.op == M.OP_KEY_ROTATE]
        to = None
        if pending:
            to = key_id(opcmds.signed_args(M.OP_KEY_ROTATE, pending[-1].args, 0)[M.A_KEY]).hex()
        out.append({"device": m.device_id.hex(), "meter": m.name, "kid": kid.hex() if kid else None,
                    "since": since, "rotating_to": to, "online": m.online})
    return out
