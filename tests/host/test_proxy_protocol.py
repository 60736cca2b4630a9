"""Meters behind a load balancer: the PROXY v2 header (headend/proxyheader.py) parsed byte by byte, and the real
HAProxy (send-proxy-v2) in front of the real concentrator, whose per-address limits then see each meter's own
address (meters connect from different loopback addresses, 127.0.0.2, .3, ...)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.proxyheader import SIGNATURE, ProxyHeaderError, parse_proxy_header
from meterkit.testing.haproxy import HAProxy
from meterkit.testing.rig import LoopbackRig, SimMeter, until


def _v2(command: int, family: int, block: bytes) -> bytes:
    return SIGNATURE + bytes((0x20 | command, family)) + len(block).to_bytes(2, "big") + block


def _v4(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 7000, tlv: bytes = b"") -> bytes:
    block = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + sport.to_bytes(2, "big")
             + dport.to_bytes(2, "big") + tlv)
    return _v2(1, 0x11, block)


def test_the_header_gives_the_clients_address_and_its_length():
    h = _v4("10.1.2.3", tlv=b"\x04\x00\x01\x00")  # a TLV after the addresses (skipped whole)
    assert parse_proxy_header(h + b"frame bytes") == ("10.1.2.3", len(h))
    v6 = _v2(1, 0x21, ipaddress.IPv6Address("2001:db8::7").packed + bytes(16) + bytes(4))
    assert parse_proxy_header(v6) == ("2001:db8::7", len(v6))
    assert parse_proxy_header(_v2(0, 0x00, b"")) == ("", 16)  # LOCAL: the balancer's own connection
    for cut in range(len(h)):  # any prefix: not all of it yet
        assert parse_proxy_header(h[:cut]) is None, cut


@pytest.mark.parametrize("bad, why", [
    (b"\x16\x03\x01\x02\x00" + bytes(11), "signature"),  # a TLS hello
    (b"PROXY TCP4 1.2.3.4 ", "signature"),  # the text version 1
    (SIGNATURE[:12] + b"\x11\x11\x00\x0c" + bytes(12), "version"),
    (SIGNATURE[:12] + b"\x22\x11\x00\x0c" + bytes(12), "command"),
    (SIGNATURE[:12] + b"\x21\x11\xff\xff", "address block"),
    (SIGNATURE[:12] + b"\x21\x31\x00\xd8" + bytes(216), "family"),  # a unix socket
    (SIGNATURE[:12] + b"\x21\x11\x00\x04" + bytes(4), "family"),  # too short for IPv4
])
def test_what_is_not_a_v2_header_is_refused(bad, why):
    with pytest.raises(ProxyHeaderError, match=why.split()[0]):
        parse_proxy_header(bad)


def test_proxy_addresses_are_checked():
    assert ConcentratorConfig(proxy_from=("::0001",)).proxy_from == ("::1",)
    with pytest.raises(ValueError, match="proxy_from"):
        ConcentratorConfig(proxy_from=("haproxy.local",))


def _raw(address: tuple[str, int], source: str) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(address)
    return s


def test_behind_haproxy_the_limits_see_each_meters_address(tmp_path, store_db, haproxy_available):
    async def main():
        async with LoopbackRig(store_db, max_per_source=2, proxy_from=("127.0.0.1",)) as rig:
            with HAProxy(tmp_path / "lb", [(rig.host, rig.port)], send_proxy=True) as lb:
                lb.wait_servers({"c1": True})
                adm = rig.conc.conns.admission
                # three silent connections from .2 and two from .3, all through the one balancer
                silent = [_raw(lb.address, "127.0.0.2") for _ in range(3)] + [_raw(lb.address, "127.0.0.3")
                                                                              for _ in range(2)]
                await until(lambda: sorted((p, len(ls)) for p, ls in adm.by_source.items())
                            == [("127.0.0.2", 2), ("127.0.0.3", 2)])
                assert rig.conc.stats()["connections_evicted"] == 1  # the oldest of .2 made way, not .3's
                # a meter at .4 reports through the balancer: verified, stored, acknowledged
                m = SimMeter()
                rig.register(m)
                cl = await rig.connect(m, via=lb.address, source="127.0.0.4")
                cl.send(m.hello())
                await cl.wait_ack(0)
                assert [ln.peer for ln in rig.conc.conns.links if ln.known] == ["127.0.0.4"]
                for s in silent:
                    s.close()
                cl.close()
            # straight to the concentrator from the balancer's address, without a header: refused
            direct = await rig.connect(SimMeter(), source="127.0.0.1")
            direct.send(b"\x00" * 20)
            await asyncio.wait_for(direct.closed.wait(), 10)
            assert rig.conc.stats()["rejects"].get("proxy-header") == 1, rig.conc.stats()["rejects"]

    asyncio.run(asyncio.wait_for(main(), 60))

