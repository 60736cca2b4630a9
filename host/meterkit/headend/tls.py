"""TLS on the concentrator's TCP listeners (docs/security.md, "What TLS adds"; certificates: wire.tlscerts).

    server_context(cert, key, client_ca=None) -> ssl.SSLContext   TLS 1.2 or later; with client_ca, mutual TLS:
        a meter without a certificate that CA issued is refused in the handshake
    refusal(exc) -> (reason, detail)   how a failed handshake is counted: "tls-plaintext" when the peer spoke
        no TLS at all (a plaintext meter, a port scan), "tls-handshake" otherwise (a certificate refused on
        either side, a truncated or garbled handshake, one that took too long)

A failed handshake never reaches the frame parser: asyncio closes the connection, and headend.connections
counts it as a reject of the peer's address.
"""

from __future__ import annotations

import ssl

# OpenSSL's reasons when the first bytes are not a TLS record at all
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
            "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "WRONG_SSL_VERSION", "UNSUPPORTED_PROTOCOL"}


class TlsSetupError(ValueError):
    """The certificate, key or CA files cannot make a server context (the message names the file)."""


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise TlsSetupError(f"certificate {cert} with key {key}: {e}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as e:
            raise TlsSetupError(f"client CA {client_ca}: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def refusal(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
        return "tls-plaintext", f"not TLS ({exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return "tls-handshake", exc.reason or str(exc)
    return "tls-handshake", str(exc) or type(exc).__name__
