"""The PROXY protocol, version 2 (HAProxy's proxy-protocol.txt, section 2.2): the binary header a load balancer
sends first on each connection it passes on, naming the client it came from. Behind HAProxy every meter's
connection comes from the proxy's address; with the header the concentrator's per-address limits and logs see
the meter's own address again. Only connections from configured proxy addresses are read this way
(ConcentratorConfig.proxy_from): anyone else could claim any address with it.

    parse_proxy_header(buf) -> None (not all of it yet) or (peer, length): the client's address ("" for
        LOCAL, the proxy's own connection, such as a health check), and how many bytes the header took;
        ProxyHeaderError when it is not a valid v2 header.

May import: the standard library only.
"""

from __future__ import annotations

import ipaddress

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEAD = 16  # signature, version/command, family/transport, length (2 bytes, big-endian)
MAX_LENGTH = 216 + 1024  # the largest address block (unix sockets) and a generous allowance for TLVs
CMD_LOCAL, CMD_PROXY = 0x0, 0x1
AF_INET_STREAM, AF_INET6_STREAM = 0x11, 0x21  # family << 4 | transport (STREAM)


class ProxyHeaderError(ValueError):
    """Not a valid PROXY v2 header (the connection is to be closed)."""


def parse_proxy_header(buf: bytes | bytearray | memoryview) -> tuple[str, int] | None:
    b = bytes(buf[:HEAD])
    if not SIGNATURE.startswith(b[:12]):
        raise ProxyHeaderError("no PROXY protocol v2 signature")
    if len(b) < HEAD:
        return None
    version, command = b[12] >> 4, b[12] & 0x0F
    if version != 2 or command not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyHeaderError(f"version/command byte {b[12]:#04x} (want 0x20 LOCAL or 0x21 PROXY)")
    length = int.from_bytes(b[14:16], "big")
    if length > MAX_LENGTH:
        raise ProxyHeaderError(f"an address block of {length} bytes")
    if len(buf) < HEAD + length:
        return None
    if command == CMD_LOCAL:
        return "", HEAD + length
    block = bytes(buf[HEAD:HEAD + length])
    family = b[13]
    if family == AF_INET_STREAM and length >= 12:
        return str(ipaddress.IPv4Address(block[:4])), HEAD + length
    if family == AF_INET6_STREAM and length >= 36:
        return str(ipaddress.IPv6Address(block[:16])), HEAD + length
    raise ProxyHeaderError(f"family/transport {family:#04x} with {length} address bytes (want TCP over IPv4 or IPv6)")
