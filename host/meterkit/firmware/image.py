"""An update file: a firmware image and its manifest, signed with the firmware-signing key (not the head-end's).

The manifest holds RFC 9124's information model as meter.messages names it (FWM_*): sequence number, vendor and
class id, payload digest (SHA-256) and size, payload format and the version text. The file is CBOR
[manifest COSE_Sign1, payload]. The meter checks the manifest with the very code used here (meter.fwupdate).
On the Unix port an image is an MKIM archive of files (sim/ota.py unpacks it at boot); on an ESP32 it is a
MicroPython firmware .bin for an OTA partition.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import messages as M
from meter.fwupdate import ManifestError, parse_manifest
from meterkit.wire.envelope import sign1
from meterkit.wire.keys import key_id, public_bytes

MKIM = b"MKIM"


class UpdateError(ValueError):
    pass


@dataclass(frozen=True)
class Update:
    manifest: bytes  # the COSE_Sign1
    payload: bytes
    fields: dict  # {FWM_*: value}, as the meter reads them

    @property
    def seq(self) -> int:
        return self.fields[M.FWM_SEQ]

    @property
    def version(self) -> str:
        return self.fields[M.FWM_VERSION]

    @property
    def board_class(self) -> str:
        return self.fields[M.FWM_CLASS]

    def chunks(self, size: int = M.FW_CHUNK_MAX) -> list[tuple[int, bytes]]:
        """(offset, bytes) of `size` each (a divisor of FW_BLOCK up to FW_CHUNK_MAX: never across a block)."""
        if not 0 < size <= M.FW_CHUNK_MAX or M.FW_BLOCK % size:
            raise UpdateError(f"a chunk size must divide {M.FW_BLOCK} and be at most {M.FW_CHUNK_MAX}, not {size}")
        return [(o, self.payload[o:o + size]) for o in range(0, len(self.payload), size)]

    def to_bytes(self) -> bytes:
        return cbor2.dumps([self.manifest, self.payload])


def pack_files(files: dict[str, bytes]) -> bytes:
    """An MKIM archive (the Unix port's image): magic, u16 count, per file u8 name length, name, u32 length,
    bytes."""
    out = bytearray(MKIM + struct.pack("<H", len(files)))
    for name, data in files.items():
        raw = name.encode()
        if not raw or len(raw) > 255 or "/" in name:
            raise UpdateError(f"image file name {name!r}: a plain name of 1..255 bytes")
        out += bytes((len(raw),)) + raw + struct.pack("<I", len(data)) + data
    return bytes(out)


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes, seq: int, board_class: str, version: str) -> Update:
    """The update file's content: the manifest over `payload`, signed with the firmware key."""
    if not M.is_uint(seq, M.UINT64_MAX) or seq == 0:
        raise UpdateError("the sequence number must be 1..2^64-1 (0 is the image flashed at the factory)")
    if not payload:
        raise UpdateError("an empty payload")
    if not version or len(version) > 32:
        raise UpdateError("the version text must be 1..32 characters")
    if "/" not in board_class:
        raise UpdateError(f"class id {board_class!r}: '<board profile name>/<arch>', e.g. unix-sim/x64")
    m = {M.FWM_FORMAT: 1, M.FWM_SEQ: seq, M.FWM_VENDOR: M.FW_VENDOR, M.FWM_CLASS: board_class,
         M.FWM_DIGEST: hashlib.sha256(payload).digest(), M.FWM_SIZE: len(payload), M.FWM_PAYLOAD: M.FW_IMAGE,
         M.FWM_VERSION: version}
    manifest = sign1(key, key_id(key.public_key()), mcbor.encode(m))
    if len(manifest) > M.FW_MANIFEST_MAX:
        raise UpdateError(f"the manifest is {len(manifest)} bytes; a meter takes {M.FW_MANIFEST_MAX}")
    return Update(manifest, payload, m)


def load(path: str | Path, firmware_pub: ec.EllipticCurvePublicKey | None = None) -> Update:
    """An update file; with the firmware public key, its manifest verified as a meter verifies it."""
    try:
        manifest, payload = cbor2.loads(Path(path).read_bytes())
    except (OSError, ValueError, cbor2.CBORDecodeError) as e:
        raise UpdateError(f"{path}: not an update file: {e}") from None
    try:
        if firmware_pub is not None:
            fields = parse_manifest(manifest, public_bytes(firmware_pub))
        else:
            fields = mcbor.decode(cbor2.loads(manifest).value[2])
    except (ManifestError, ValueError, AttributeError, IndexError) as e:
        raise UpdateError(f"{path}: the manifest does not verify: {e}") from None
    return Update(manifest, payload, fields)
