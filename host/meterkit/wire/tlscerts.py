"""TLS certificates for the meter link (`meterkit keys tls`; docs/security.md, "What TLS adds"): a private CA that
only this head-end uses, the head-end's server certificate, and meter client certificates for mutual TLS. Every
key is ECDSA P-256 (what mbedTLS on an ESP32 verifies fastest, and what the frames are signed with already).

    make_tls_dir(DIR, server_name="headend.meterkit", hosts=("127.0.0.1",), meters=()) -> TlsFiles

writes, under DIR (0700; private keys 0600, never overwritten):

    ca.pem, ca.der           the CA certificate: what a meter pins (link.tls.ca), and the concentrator's
                             --tls-client-ca for mutual TLS
    ca.key.pem               the CA's key: keep it offline; it issues meter certificates
    headend.pem, headend.key.pem   the concentrator's --tls-cert / --tls-key (SAN: server_name and `hosts`)
    meters/NAME.der, meters/NAME.key.der   a meter's client certificate and key (DER: what the meter loads)

Validity runs from 2000-01-01 (an ESP32's RTC reads 2000 after a power-up until the head-end or NTP sets it,
and mbedTLS checks notBefore against it) to 9999-12-31 (RFC 5280's "no well-defined expiration"): the trust is
the pin, and it is withdrawn by replacing the CA (docs/security.md, key management), not by expiry.

May import: cryptography, the standard library.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meterkit.wire.keys import private_dir

NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
DEFAULT_SERVER_NAME = "headend.meterkit"


@dataclass
class TlsFiles:
    """Where make_tls_dir put everything."""

    dir: Path
    server_name: str
    ca: Path
    ca_der: Path
    ca_key: Path
    cert: Path
    key: Path
    meters: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (cert DER, key DER)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meterkit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(cn: str = "meterkit head-end CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(cn, _name(cn), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *, server_names: tuple[str, ...] = (),
          client: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate signed by the CA: a server's (SAN: server_names, DNS names or IP addresses) or a
    client's (a meter's, client=True)."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = (_builder(cn, ca_cert.subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                               else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if server_names:
        b = b.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def _general_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # an existing key is never overwritten
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make_tls_dir(out: str | os.PathLike, server_name: str = DEFAULT_SERVER_NAME, hosts: tuple[str, ...] = (),
                 meters: tuple[str, ...] = ()) -> TlsFiles:
    """A CA, the head-end's certificate and `meters` client certificates under `out` (see the module docstring).
    FileExistsError when `out` holds them already."""
    d = private_dir(out)
    ca_key, ca = make_ca()
    files = TlsFiles(d, server_name, d / "ca.pem", d / "ca.der", d / "ca.key.pem", d / "headend.pem",
                     d / "headend.key.pem")
    _write(files.ca_key, _key_pem(ca_key), 0o600)
    _write(files.ca, _pem(ca), 0o644)
    _write(files.ca_der, _der(ca), 0o644)
    key, cert = issue(ca_key, ca, server_name, server_names=(server_name, *hosts))
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, _pem(cert), 0o644)
    for name in meters:
        files.meters[name] = add_meter(files, ca_key, ca, name)
    return files


def add_meter(files: TlsFiles, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
              name: str) -> tuple[Path, Path]:
    """A meter's client certificate and key (DER, as the meter loads them) under DIR/meters/."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a meter name for a file name, not {name!r}")
    md = private_dir(files.dir / "meters")
    key, cert = issue(ca_key, ca, name, client=True)
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return _write(md / f"{name}.der", _der(cert), 0o644), _write(md / f"{name}.key.der", key_der, 0o600)


def load_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key}: not an EC private key")
    return key, x509.load_pem_x509_certificate(files.ca.read_bytes())


def tls_files(out: str | os.PathLike, server_name: str = DEFAULT_SERVER_NAME) -> TlsFiles:
    """The TlsFiles of a directory make_tls_dir wrote (its meters' certificates listed)."""
    d = Path(out)
    files = TlsFiles(d, server_name, d / "ca.pem", d / "ca.der", d / "ca.key.pem", d / "headend.pem",
                     d / "headend.key.pem")
    for cert in sorted((d / "meters").glob("*.der")):
        if not cert.name.endswith(".key.der"):
            files.meters[cert.stem] = (cert, cert.with_name(f"{cert.stem}.key.der"))
    return files
