"""The demo's link-fault injectors: a pty bridge (serial cable) and a TCP proxy (Wi-Fi) that can be cut."""

import asyncio
import os

import serial

from meterkit.sim.fleet import FleetClock, PtyBridge, TcpProxy


def test_fleet_clock_runs_at_speed():
    c = FleetClock(1_000_000, 3600.0)
    assert c() >= 1_000_000
    assert c.hours() < 1  # a few microseconds of real time are well under an hour of fleet time


async def _read_exactly(read, n, timeout=5.0):
    async def loop():
        out = b""
        while len(out) < n:
            out += await asyncio.to_thread(read, n - len(out))
        return out

    return await asyncio.wait_for(loop(), timeout)


def test_pty_bridge_carries_bytes_and_can_be_cut():
    async def main():
        bridge = PtyBridge()
        await bridge.start()
        meter = os.open(bridge.meter_path, os.O_RDWR | os.O_NOCTTY)
        host = serial.Serial(bridge.host_path, timeout=0.2)
        try:
            os.write(meter, b"\x00frame-1\x00")
            got = await _read_exactly(host.read, 9)
            assert got == b"\x00frame-1\x00"
            host.write(b"ack")
            back = await _read_exactly(lambda n: os.read(meter, n), 3)
            assert back == b"ack"
            bridge.cut()
            os.write(meter, b"lost-in-the-outage")
            await asyncio.sleep(0.2)
            assert host.read(100) == b""
            assert bridge.dropped >= len(b"lost-in-the-outage")
            bridge.restore()
            os.write(meter, b"back")
            assert await _read_exactly(host.read, 4) == b"back"
        finally:
            host.close()
            os.close(meter)
            bridge.close()

    asyncio.run(main())


def test_tcp_proxy_relays_and_cuts():
    async def echo(reader, writer):
        while data := await reader.read(100):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        proxy = TcpProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        await proxy.start()
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"hello")
        assert await asyncio.wait_for(r.readexactly(5), 5) == b"HELLO"
        proxy.cut()
        assert await asyncio.wait_for(r.read(100), 5) == b""  # dropped
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(r2.read(100), 5) == b""  # refused while cut
        assert proxy.refused == 1
        proxy.restore()
        r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        w3.write(b"again")
        assert await asyncio.wait_for(r3.readexactly(5), 5) == b"AGAIN"
        for wr in (w, w2, w3):
            wr.close()
        await proxy.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_tcp_proxy_fault_breaks_one_connection_at_a_byte_and_inject_reaches_the_meter_side():
    got = []

    async def sink(reader, writer):
        while data := await reader.read(100):
            got.append(data)
        writer.close()

    async def main():
        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        proxy = TcpProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        await proxy.start()
        proxy.fault = lambda chunk, upstream: chunk.index(0) + 1 if upstream and 0 in chunk else None
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"one\x00two")  # the frame delimiter passes, the rest is lost with the connection, both ways
        assert await asyncio.wait_for(r.read(100), 5) == b""
        assert b"".join(got) == b"one\x00" and proxy.drops == 1
        proxy.fault = None
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)  # a new connection is not broken
        w2.write(b"x")
        await asyncio.sleep(0.2)
        assert b"".join(got) == b"one\x00x"
        assert proxy.inject(b"from the middle") == 1
        assert await asyncio.wait_for(r2.readexactly(15), 5) == b"from the middle"
        for wr in (w, w2):
            wr.close()
        await proxy.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_cut_while_a_meter_is_being_started_kills_it(tmp_path):
    """A power-up and a cut applied in one step of the fleet (the cut finds no process yet): the new process
    is killed as soon as it exists, so no meter runs on beside the next power-up on the same flash."""
    from meterkit.sim.fleet import MeterSpec
    from meterkit.torture import fleetrun

    fleet = fleetrun.new_fleet(tmp_path, [MeterSpec("m", "constant", "tcp")], hours=0.5, speed=1440.0)
    for hour, action in ((0.1, "power_cut"), (0.1001, "power_on"), (0.1002, "power_cut"), (0.2, "power_on")):
        fleet.at(hour, action, "m")
    fleetrun.run(fleet)
    [m] = fleet.meters
    assert m.power_cuts == 2
    assert len(m.runs) == 1, (m.runs, fleet.log)  # only the last power-up ran to the end by itself


def test_pty_bridge_holds_bytes_for_their_time_on_a_uart():
    """baud: each direction is a line of its own, 10 bits a byte (8N1); what arrives is what was sent, in order."""
    async def main():
        bridge = PtyBridge(baud=9600)
        await bridge.start()
        meter = os.open(bridge.meter_path, os.O_RDWR | os.O_NOCTTY)
        host = serial.Serial(bridge.host_path, timeout=0.2)
        try:
            sent = bytes(range(256)) * 2  # 512 bytes: 0.53 s on a 9600-baud line
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(0, len(sent), 64):
                os.write(meter, sent[i:i + 64])
            got = await _read_exactly(host.read, len(sent), timeout=10)
            took = loop.time() - t0
            assert got == sent
            assert took >= len(sent) * 10 / 9600 * 0.95, took  # never faster than the line (only slower)
        finally:
            host.close()
            os.close(meter)
            bridge.close()

    asyncio.run(main())
