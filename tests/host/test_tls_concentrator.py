"""The concentrator as a TLS server (headend/tls.py, headend/connections.py): what is not a good TLS client is
refused and counted, never crashes it, and a good one is served after it; the PROXY v2 header before TLS; the
settings checked at the edge. (The firmware meter over TLS: test_tls_e2e.py.)"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

import pytest

from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.proxyheader import SIGNATURE
from meterkit.testing.rig import LoopbackRig, SimMeter, until
from meterkit.wire.tlscerts import make_tls_dir


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_dir(tmp_path_factory.mktemp("tls") / "tls", hosts=("127.0.0.1",), meters=("m1",))


def _client_ctx(certs, cert=True):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert:
        c, k = certs.meters["m1"]
        pem_c, pem_k = c.with_suffix(".pem"), k.with_suffix(".pem")
        if not pem_c.exists():  # the meter's DER files, as PEM for CPython's ssl
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
            pem_c.write_bytes(x509.load_der_x509_certificate(c.read_bytes()).public_bytes(serialization.Encoding.PEM))
            key = serialization.load_der_private_key(k.read_bytes(), None)
            pem_k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        ctx.load_cert_chain(pem_c, pem_k)
    return ctx


def _client_hello(certs) -> bytes:
    """The first flight of a real TLS client (CPython's), taken off a memory BIO."""
    out = ssl.MemoryBIO()
    obj = _client_ctx(certs, cert=False).wrap_bio(ssl.MemoryBIO(), out, server_hostname=certs.server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def _send_and_wait_closed(rig, data: bytes, *, linger: float = 0.0) -> None:
    r, w = await asyncio.open_connection(rig.host, rig.port)
    w.write(data)
    await w.drain()
    if linger:
        await asyncio.sleep(linger)
        w.close()
        return
    try:
        while await asyncio.wait_for(r.read(4096), 10):  # an alert, perhaps, then the end
            pass
    except ConnectionError:
        pass  # or a reset
    w.close()


def _rejects(rig) -> dict:
    return rig.conc.stats()["rejects"]


def test_what_is_not_a_good_tls_client_is_refused_and_counted(tmp_path, certs):
    meter = SimMeter()

    async def main():
        async with LoopbackRig(tmp_path / "db.sqlite", tls_cert=str(certs.cert), tls_key=str(certs.key),
                               tls_handshake_timeout=0.5) as rig:
            rig.register(meter)
            # a plaintext meter: its hello frame on the TLS port
            hello_frame = meter.hello()  # sent again over TLS below: the concentrator never saw it
            plain = await rig.connect(meter)
            plain.send(hello_frame)
            await asyncio.wait_for(plain.closed.wait(), 10)
            await until(lambda: _rejects(rig).get("tls-plaintext") == 1)
            # garbage, then a TLS hello cut short and hung up, then one cut short left hanging (timed out)
            hello = _client_hello(certs)
            await _send_and_wait_closed(rig, b"", linger=0.1)  # a health check, a port scan: not counted
            await _send_and_wait_closed(rig, os.urandom(4096))
            await _send_and_wait_closed(rig, hello[:len(hello) // 2], linger=0.1)
            await _send_and_wait_closed(rig, hello[:7])  # the server gives up after tls_handshake_timeout
            await until(lambda: sum(_rejects(rig).get(r, 0) for r in ("tls-plaintext", "tls-handshake")) == 4)
            assert _rejects(rig).get("tls-handshake", 0) >= 2, _rejects(rig)
            assert rig.conc.conns.admission.total == 0 and not rig.conc.conns._starting
            # and then a meter over TLS is served: stored and acknowledged
            cl = await rig.connect(meter, tls=_client_ctx(certs, cert=False), server_name=certs.server_name)
            cl.send(hello_frame)
            await cl.wait_ack(0)
            assert rig.conc.stats()["tls_sessions"] == 1
            assert rig.store.frames_after(meter.device_id, -1, limit=None)
            cl.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_mutual_tls_wants_a_meter_certificate_from_its_ca(tmp_path, certs):
    meter = SimMeter()

    async def main():
        async with LoopbackRig(tmp_path / "db.sqlite", tls_cert=str(certs.cert), tls_key=str(certs.key),
                               tls_client_ca=str(certs.ca)) as rig:
            rig.register(meter)
            # TLS 1.3: the client learns of the refusal only on its first read after the handshake
            hello_frame = meter.hello()
            cl = await rig.connect(meter, tls=_client_ctx(certs, cert=False), server_name=certs.server_name)
            cl.send(hello_frame)
            await asyncio.wait_for(cl.closed.wait(), 10)
            await until(lambda: _rejects(rig).get("tls-handshake") == 1)
            assert not rig.store.frames_after(meter.device_id, -1, limit=None)
            good = await rig.connect(meter, tls=_client_ctx(certs), server_name=certs.server_name)
            good.send(hello_frame)
            await good.wait_ack(0)
            good.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_behind_a_load_balancer_the_proxy_header_comes_before_tls(tmp_path, certs):
    """The PROXY v2 header in clear, then TLS in the same segment: the header is read off the socket, the
    handshake gets every byte after it, and the meter is admitted under the header's address."""
    meter = SimMeter()

    async def main():
        async with LoopbackRig(tmp_path / "db.sqlite", tls_cert=str(certs.cert), tls_key=str(certs.key),
                               proxy_from=("127.0.0.1",)) as rig:
            rig.register(meter)
            header = SIGNATURE + b"\x21\x11\x00\x0c" + socket.inet_aton("10.9.8.7") + bytes(4) + bytes(4)
            ctx = _client_ctx(certs, cert=False)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname=certs.server_name)
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            r, w = await asyncio.open_connection(rig.host, rig.port)
            w.write(header + outgoing.read())  # one write: the header and the ClientHello together
            while True:
                incoming.write(await asyncio.wait_for(r.read(65536), 10))
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    w.write(outgoing.read())
            w.write(outgoing.read())
            tls.write(meter.hello())
            w.write(outgoing.read())
            await until(lambda: [ln.peer for ln in rig.conc.conns.links if ln.known] == ["10.9.8.7"])
            w.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_tls_settings_are_checked_at_the_edge(certs, tmp_path):
    with pytest.raises(ValueError, match="go together"):
        ConcentratorConfig(tls_cert=str(certs.cert))
    with pytest.raises(ValueError, match="needs tls_cert"):
        ConcentratorConfig(tls_client_ca=str(certs.ca))
    with pytest.raises(ValueError, match="headend.pem"):  # a key that is not the certificate's
        ConcentratorConfig(tls_cert=str(certs.cert), tls_key=str(certs.ca_key))
    with pytest.raises(ValueError, match="missing"):
        ConcentratorConfig(tls_cert=str(certs.cert), tls_key=str(certs.key), tls_client_ca=str(tmp_path / "missing"))
    assert ConcentratorConfig(tls_cert=str(certs.cert), tls_key=str(certs.key)).tls is not None
    assert ConcentratorConfig().tls is None
