# TLS for the meter's TCP link (docs/security.md, "What TLS adds"): the client context a board profile's
# link.tls section asks for, and the wrap meter.transport.TLSTransport calls on each new TCP connection.
#
#   link.tls = {"ca": "tls/ca.der",              the head-end's CA (or its self-signed certificate): pinned
#               "server_name": "headend.meterkit",  the name the head-end's certificate must carry (SAN)
#               "cert": "tls/meter.der", "key": "tls/meter.key.der"}   optional: mutual TLS
#
# Paths are relative to the board's flash directory (where the device key lives; `meterkit keys tls` makes
# the files, provisioning copies them). DER or PEM, as mbedTLS reads both.
#
# MicroPython's ssl.SSLContext starts at CERT_NONE (micropython-lib's ssl.py sets it): a context that is not
# told otherwise accepts any server. So verify_mode is set to CERT_REQUIRED here, explicitly, and checked back.
# The server name is then required (modtls_mbedtls refuses CERT_REQUIRED without server_hostname) and checked
# against the certificate: only the pinned CA's certificate for that name is accepted.
#
# `ssl` is imported only when a context is made: this module's checks run in every interpreter (the 32-bit
# one of the tests has no ssl), and a board without TLS never loads mbedTLS's Python side.

KEYS = ("ca", "server_name", "cert", "key")
REQUIRED = ("ca", "server_name")


def tls_problems(tls):
    """The problems of a link.tls section (a list of strings; empty when valid)."""
    if not isinstance(tls, dict):
        return ["link.tls must be an object"]
    out = ["link.tls: unknown key %r" % k for k in tls if k not in KEYS]
    for k in REQUIRED:
        if k not in tls:
            out.append("link.tls.%s is required" % k)
    for k in KEYS:
        v = tls.get(k)
        if v is not None and (not isinstance(v, str) or not 1 <= len(v) <= 128):
            out.append("link.tls.%s must be a non-empty string" % k)
    if ("cert" in tls) != ("key" in tls):
        out.append("link.tls: cert and key go together (mutual TLS)")
    return out


def _read(base, path):
    if not path.startswith("/") and base:
        path = base + "/" + path
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OSError(e.args[0] if e.args else 2, "link.tls: cannot read %s" % path)


def client_context(tls, base=""):
    """An ssl.SSLContext for the head-end: its CA pinned, CERT_REQUIRED, the meter's certificate when given."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # not the helper's default (CERT_NONE): see the top of this file
    if ctx.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("this ssl module will not require the server's certificate")
    ctx.load_verify_locations(cadata=_read(base, tls["ca"]))
    if tls.get("cert"):
        ctx.load_cert_chain(_read(base, tls["cert"]), _read(base, tls["key"]))
    return ctx


def client_wrap(tls, base=""):
    """wrap(sock) -> the TLS socket for one connection, its handshake not started (the transport drives it
    without blocking). The context (the parsed CA, the meter's key) is made once and kept across reconnects."""
    ctx = client_context(tls, base)
    name = tls["server_name"]

    def wrap(sock):
        return ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)

    return wrap
