"""An update file: a firmware image and its manifest, signed with the firmware-signing key (not the head-end's);
or a firmware-key rotation: the next firmware public key as the payload (format FW_KEY), signed by the current one.

The manifest holds RFC 9124's information model as meter.messages names it (FWM_*): sequence number, vendor and
class id, payload digest (SHA-256) and size, payload format and the version text. The file is CBOR
[manifest COSE_Sign1, payload]. The meter checks the manifest with the very code used here (meter.fwupdate).
The payload format says what the meter does with it (meter.messages): FW_IMAGE, a partition image (on the Unix
port an MKIM archive of files, which sim/ota.py mounts at boot; on an ESP32 a MicroPython firmware .bin for an OTA
partition), or FW_APP_FILES, the application files of a `meterkit device build` bundle for the other A/B slot of
a stock-firmware board (an MKIH archive, unpacked by meter.appslots). meter.archive reads both archives.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from meter import archive
from meter import cbor as mcbor
from meter import events as E
from meter import messages as M
from meter.fwupdate import ManifestError, parse_manifest
from meterkit.wire.envelope import sign1
from meterkit.wire.keys import key_id, public_bytes, public_from_bytes

MKIM = archive.PLAIN
BUNDLE_MANIFEST = "MANIFEST.json"  # the slot's manifest (firmware/main.py prints its id at boot), last


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

    @property
    def is_key(self) -> bool:
        """A firmware-key rotation (its payload the next firmware public key), not an image."""
        return self.fields[M.FWM_PAYLOAD] == M.FW_KEY

    def done_event(self) -> tuple[int, object]:
        """The event (code, value) a meter reports once the update has taken: the image confirmed with its
        version, or the key installed with its key id (hex)."""
        if self.is_key:
            return E.FW_KEY_INSTALLED, key_id(self.payload).hex()
        return E.FW_CONFIRMED, self.version

    def landed(self) -> str:
        """What a meter that took the update does: 'runs v2', 'holds firmware key <kid>'."""
        return f"holds firmware {self.version}" if self.is_key else f"runs {self.version}"

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


def pack_app_files(files: dict[str, bytes], same: dict[str, bytes] | None = None) -> bytes:
    """An MKIH archive (application files for an A/B slot, meter.archive): `files` with their bytes, then `same`
    as references to the running slot's file: their size and SHA-256 travel, their bytes do not."""
    same = same or {}
    out = bytearray(archive.HASHED + struct.pack("<H", len(files) + len(same)))
    for name, data in list(files.items()) + list(same.items()):
        raw = name.encode()
        try:
            archive.check_name(raw)
        except ValueError:
            raise UpdateError(f"file name {name!r}: a relative path of 1..255 bytes without '', '.' or '..' "
                              "parts") from None
        kind = archive.SAME if name in same else archive.DATA
        out += bytes((len(raw),)) + raw + struct.pack("<BI", kind, len(data)) + hashlib.sha256(data).digest()
        out += data if kind == archive.DATA else b""
    return bytes(out)


def pack_slot(code: dict[str, bytes], slot_manifest: dict, base: dict[str, str] | None = None) -> bytes:
    """A device bundle's application files (`meterkit device build`'s slot/: name -> bytes) as an MKIH archive,
    the slot's MANIFEST.json (slot_manifest: which bundle; firmware/main.py prints its id) last. base: name ->
    SHA-256 hex of the files the boards run now; a file they hold unchanged is sent as a reference."""
    had = base or {}
    same = {rel: data for rel, data in sorted(code.items()) if had.get(rel) == hashlib.sha256(data).hexdigest()}
    files = {rel: data for rel, data in sorted(code.items()) if rel not in same}
    files[BUNDLE_MANIFEST] = (json.dumps(slot_manifest, indent=1, sort_keys=True) + "\n").encode()
    return pack_app_files(files, same)


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes, seq: int, board_class: str, version: str,
         payload_format: int = M.FW_IMAGE) -> Update:
    """The update file's content: the manifest over `payload`, signed with the firmware key."""
    if not M.is_uint(seq, M.UINT64_MAX) or seq == 0:
        raise UpdateError("the sequence number must be 1..2^64-1 (0 is the image flashed at the factory)")
    if not payload:
        raise UpdateError("an empty payload")
    if not version or len(version) > 32:
        raise UpdateError("the version text must be 1..32 characters")
    if payload_format not in (M.FW_IMAGE, M.FW_APP_FILES, M.FW_KEY):
        raise UpdateError(f"payload format {payload_format}: {M.FW_IMAGE} (a partition image), {M.FW_APP_FILES} "
                          f"(A/B files) or {M.FW_KEY} (a firmware key)")
    if "/" not in board_class:
        raise UpdateError(f"class id {board_class!r}: '<board profile name>/<arch>', e.g. unix-sim/x64")
    m = {M.FWM_FORMAT: 1, M.FWM_SEQ: seq, M.FWM_VENDOR: M.FW_VENDOR, M.FWM_CLASS: board_class,
         M.FWM_DIGEST: hashlib.sha256(payload).digest(), M.FWM_SIZE: len(payload), M.FWM_PAYLOAD: payload_format,
         M.FWM_VERSION: version}
    manifest = sign1(key, key_id(key.public_key()), mcbor.encode(m))
    if len(manifest) > M.FW_MANIFEST_MAX:
        raise UpdateError(f"the manifest is {len(manifest)} bytes; a meter takes {M.FW_MANIFEST_MAX}")
    return Update(manifest, payload, m)


def rotation(key: ec.EllipticCurvePrivateKey, new_pub: ec.EllipticCurvePublicKey | bytes, seq: int,
             board_class: str) -> Update:
    """A firmware-key rotation: the next firmware public key, signed by the current firmware key (`key`), which
    the meters of `board_class` install in its place (meter.fwkey). Its sequence number is used up like an
    image's: the next image (signed by the new key) needs a higher one."""
    point = new_pub if isinstance(new_pub, (bytes, bytearray)) else public_bytes(new_pub)
    try:
        public_from_bytes(bytes(point))
    except ValueError as e:
        raise UpdateError(f"the new firmware key: {e}") from None
    if bytes(point) == public_bytes(key.public_key()):
        raise UpdateError("the new firmware key is the signing key itself: nothing would change")
    return sign(key, bytes(point), seq, board_class, "key " + key_id(point).hex(), M.FW_KEY)


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
