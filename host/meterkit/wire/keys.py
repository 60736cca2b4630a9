"""P-256 keys: as points and key ids (the 65-byte uncompressed point meter.p256 uses; a key id is the first 8
bytes of its SHA-256, the COSE kid), and as files on disk.

new_key(DIR, name) (`meterkit keys new`) writes DIR/<name>.key.pem (PKCS#8, unencrypted, mode 0600, created
exclusively: an existing file is never overwritten) and DIR/<name>.pub.pem (SubjectPublicKeyInfo) and returns
the key id of the pair.

Directories made for keys (private_dir) are 0700 and private key files 0600 whatever the umask (issue 11: under
umask 000 they were 0777). load_private refuses a private key file that its group or others may read.

load_private(path) reads a P-256 private key (PEM, PKCS#8 or SEC1 "EC PRIVATE KEY"). load_public(path) reads
a P-256 public key as PEM (what meters export), as the raw 65-byte uncompressed point 0x04 || x || y, or as
that point in hex (130 hex digits, whitespace ignored). Every problem raises KeyFileError naming the file.
"""

from __future__ import annotations

import hashlib
import os
import string
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_KEY_FILE = 64 * 1024


def public_bytes(pub: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed SEC1 point 0x04 || x || y (the form meter.p256 uses)."""
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def public_from_bytes(point: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from its 65-byte uncompressed point (ValueError if not a point on the curve)."""
    if len(point) != 65 or point[0] != 4:
        raise ValueError("a P-256 public key is 65 bytes 0x04 || x || y")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(point))


def key_id(pub: ec.EllipticCurvePublicKey | bytes) -> bytes:
    """Head-end key id: the first 8 bytes of SHA-256 of the uncompressed public key."""
    point = pub if isinstance(pub, (bytes, bytearray)) else public_bytes(pub)
    return hashlib.sha256(bytes(point)).digest()[:8]


def point_of(public_key: Any) -> bytes:
    """The 65-byte uncompressed point of a P-256 public key given as a key object, the point, or PEM."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError(f"a meter key is a P-256 (secp256r1) public key, not {public_key.curve.name}")
        return public_bytes(public_key)
    if isinstance(public_key, str):
        public_key = public_key.encode()
    if isinstance(public_key, (bytes, bytearray, memoryview)):
        data = bytes(public_key)
        if data.startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in data:
                raise ValueError("that is a private key: register the meter's public key")
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("a meter key is a P-256 (secp256r1) public key")
            return public_bytes(key)
        public_from_bytes(data)  # ValueError unless a point on the curve
        return data
    raise TypeError(f"a public key is a P-256 key object, its 65-byte point or PEM, not {type(public_key).__name__}")


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, or not the kind of key asked for."""


def _read(path: str | os.PathLike) -> bytes:
    p = Path(path)
    try:
        if p.is_dir():
            raise KeyFileError(f"{p}: is a directory, not a key file")
        size = p.stat().st_size
        if size > MAX_KEY_FILE:
            raise KeyFileError(f"{p}: {size} bytes is too large for a key file")
        return p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no such key file") from None
    except PermissionError:
        raise KeyFileError(f"{p}: permission denied") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read: {e.strerror or e}") from None


def _require_p256(key: object, path: str | os.PathLike, what: str) -> None:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        kind = f"an EC key on {curve.name}" if curve is not None else type(key).__name__.lstrip("_")
        raise KeyFileError(f"{path}: {what} is {kind}, want P-256 (secp256r1, ES256)")


def load_private(path: str | os.PathLike) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in a PEM file."""
    data = _read(path)
    if b"-----BEGIN" not in data:
        raise KeyFileError(f"{path}: not a PEM file (want a '-----BEGIN PRIVATE KEY-----' block)")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path}: holds a public key; a private key (*.key.pem) is needed here")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path}: the private key is password-protected; meterkit keys are not") from None
    except ValueError as e:
        raise KeyFileError(f"{path}: not a readable private key ({e})") from None
    except UnsupportedAlgorithm as e:
        raise KeyFileError(f"{path}: unsupported private key ({type(e).__name__}: {e})") from None
    _require_p256(key, path, "the private key")
    _require_private_mode(path)
    return key  # type: ignore[return-value]


def _require_private_mode(path: str | os.PathLike) -> None:
    """Refuse a private key file readable or writable by its group or others (as ssh does): anyone who can
    read it can sign acknowledgements and commands for every meter."""
    if os.name != "posix":  # pragma: no cover - POSIX modes only
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"{path}: private key file has mode {mode:04o}: its group or others may read it; "
                           f"refusing to use it (chmod 600 {path}, and consider the key exposed)")


def private_dir(path: str | os.PathLike) -> Path:
    """Make directory `path` and any missing parents with mode 0700, whatever the umask; an existing one is
    left as it is. Returns it as a Path."""
    out = Path(path)
    missing = []
    p = out
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:  # made by someone else meanwhile
            continue
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask: narrowed, never what we want either
    return out


def load_public(path: str | os.PathLike) -> ec.EllipticCurvePublicKey:
    """The P-256 public key in a file: PEM, raw 65-byte uncompressed point, or that point in hex."""
    data = _read(path)
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" in data:
            raise KeyFileError(f"{path}: holds a PRIVATE key; give the public key (*.pub.pem) instead")
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise KeyFileError(f"{path}: not a readable public key ({e})") from None
        except UnsupportedAlgorithm as e:
            raise KeyFileError(f"{path}: unsupported public key ({type(e).__name__}: {e})") from None
        _require_p256(key, path, "the public key")
        return key  # type: ignore[return-value]
    point = data
    if len(data) != 65:
        text = data.decode("ascii", errors="replace")
        digits = "".join(text.split())
        if digits.lower().startswith("0x"):
            digits = digits[2:]
        if not digits or any(c not in string.hexdigits for c in digits):
            raise KeyFileError(f"{path}: not a public key (want PEM, 65 raw bytes or 130 hex digits)")
        if len(digits) != 130:
            raise KeyFileError(f"{path}: {len(digits)} hex digits, a P-256 public key 04||x||y has 130")
        point = bytes.fromhex(digits)
    try:
        return public_from_bytes(point)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a P-256 public key point ({e})") from None


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or widened nothing we want
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def new_key(out_dir: str | os.PathLike, name: str = "headend") -> tuple[Path, Path, bytes]:
    """Generate a P-256 key pair into out_dir; returns (private path, public path, key id).

    Refuses (FileExistsError) if either file exists; nothing is written then.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad key name {name!r}: a plain file name stem, like 'headend'")
    out = private_dir(out_dir)
    key_path = out / f"{name}.key.pem"
    pub_path = out / f"{name}.pub.pem"
    for p in (key_path, pub_path):
        if p.exists():
            raise FileExistsError(f"{p} already exists; refusing to overwrite a key "
                                  "(pick another --name or --out)")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_exclusive(key_path, pem, 0o600)
    try:
        _write_exclusive(pub_path, pub_pem, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path, key_id(public_bytes(key.public_key()))
