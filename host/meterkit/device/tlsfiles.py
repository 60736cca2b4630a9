"""The TLS files `meterkit device provision` puts on a board for a TLS link (meter/tls.py; docs/security.md, "What
TLS adds"): the head-end's CA to pin, the name its certificate must carry, and for mutual TLS the meter's
certificate and key (`meterkit keys tls` makes them all).

Everything is checked here, on the host, before the board is touched: the CA and the meter's certificate parse
as X.509 (DER or PEM, as mbedTLS reads both), the key is a P-256 private key whose public half is the
certificate's, and the link.tls section they make passes meter.tls's own check. On the board each file is
named after its content (`tls/ca-<sha256 prefix>.der`), so writing a new one never touches a file the running
link names: provision writes the files, checks their hashes on the board, renames each into place, and only then
switches /link.json (one rename) to name them. A cut anywhere leaves the old link with its old files, or the
new link with all of its files.

The meter's TLS private key is made on this host and copied: MicroPython does not expose mbedTLS's key
generation, so the board cannot make it itself (docs/security.md says so among the limits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meterkit.device.session import DeviceError

DIR = "tls"  # under the board's flash_dir, where the device key lives


@dataclass
class TlsBundle:
    server_name: str
    files: dict[str, bytes] = field(default_factory=dict)  # link.tls key (ca, cert, key) -> the file's bytes

    def names(self) -> dict[str, str]:
        """link.tls key -> the file's path relative to flash_dir (content-named: see the module docstring)."""
        out = {}
        for role, data in self.files.items():
            ext = ".der" if data[:1] == b"\x30" else ".pem"
            out[role] = f"{DIR}/{role}-{hashlib.sha256(data).hexdigest()[:12]}{ext}"
        return out

    def section(self) -> dict:
        """The link.tls section naming these files (meter.tls)."""
        return {**self.names(), "server_name": self.server_name}


def _read(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DeviceError(f"{what} {path}: {e.strerror or e}") from None
    if not data:
        raise DeviceError(f"{what} {path}: empty file")
    return data


def _certificate(data: bytes, path: str | Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise DeviceError(f"{what} {path}: not an X.509 certificate (DER or PEM)") from None


def _private_key(data: bytes, path: str | Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = (serialization.load_pem_private_key(data, None) if b"-----BEGIN" in data
               else serialization.load_der_private_key(data, None))
    except (ValueError, TypeError):
        raise DeviceError(f"--tls-key {path}: not an unencrypted private key (DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise DeviceError(f"--tls-key {path}: a P-256 (secp256r1) key is what the meter's mbedTLS is set up for")
    return key


def load_tls(ca: str | Path, server_name: str | None, cert: str | Path | None = None,
             key: str | Path | None = None) -> TlsBundle:
    """The files of a TLS link, checked (DeviceError says what is wrong; nothing has been sent anywhere)."""
    from meter.tls import tls_problems

    if not server_name:
        raise DeviceError("--tls-ca needs --tls-server-name: the name the head-end's certificate carries "
                          "(meterkit keys tls --name; default headend.meterkit)")
    if (cert is None) != (key is None):
        raise DeviceError("--tls-cert and --tls-key go together (mutual TLS)")
    b = TlsBundle(server_name)
    b.files["ca"] = _read(ca, "--tls-ca")
    _certificate(b.files["ca"], ca, "--tls-ca")
    if cert is not None and key is not None:
        b.files["cert"] = _read(cert, "--tls-cert")
        b.files["key"] = _read(key, "--tls-key")
        c = _certificate(b.files["cert"], cert, "--tls-cert")
        k = _private_key(b.files["key"], key)
        if k.public_key().public_numbers() != c.public_key().public_numbers():
            raise DeviceError(f"--tls-key {key} is not the key of --tls-cert {cert}")
    problems = tls_problems(b.section())
    if problems:
        raise DeviceError("; ".join(problems))
    return b
