"""File descriptors under a flood (issue 11, finding 6): caps per source address and in total, a reserve for known
meters, a short timeout for connections that never authenticate, and accept errors logged once per interval.

The flood test runs the real `meterkit concentrator` in a subprocess with RLIMIT_NOFILE 256, opens 400 idle
connections, then a registered meter that must get every acknowledgement (meterkit.testing.flood). On 0d7e9d3 it
held all 400, the meter got no acknowledgement, and the log grew by 1.4 million lines (205,000 tracebacks) in
12 s. The other tests check the rules on an in-process concentrator."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from meterkit.headend.config import ConcentratorConfig
from meterkit.testing.flood import run_flood
from meterkit.testing.rig import LoopbackRig, SimMeter, until


@pytest.mark.parametrize(("sources", "held_max"), [(1, 32), (200, 160)])
def test_a_flood_of_idle_connections_leaves_a_registered_meter_its_acks(tmp_path, sources, held_max):
    r = run_flood(tmp_path, nofile=256, conns=400, sources=sources, seconds=4.0)
    assert r.exit_code == 0, (tmp_path / "concentrator.log").read_text()[-3000:]
    assert r.frames >= 8 and r.acked == r.frames, r  # every frame of the meter acknowledged
    # one address: its 32 unauthenticated connections; 200 addresses: 192 in all less the reserve of 32
    assert r.flood_held <= held_max, r
    assert r.server_fds_max < 256 - 16, r  # descriptors left over: no EMFILE
    assert r.tracebacks == 0 and r.log_lines <= 6, (tmp_path / "concentrator.log").read_text()[-3000:]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _raw(rig: LoopbackRig, source: str = "127.0.0.1"):
    return await asyncio.open_connection(rig.host, rig.port, local_addr=(source, 0))


async def _closed(reader: asyncio.StreamReader, wait_s: float = 2.0) -> bool:
    """Did the concentrator hang up (within wait_s)?"""
    try:
        return await asyncio.wait_for(reader.read(1), wait_s) == b""
    except ConnectionError:
        return True
    except asyncio.TimeoutError:
        return False


def test_unknown_connections_make_way_and_known_meters_keep_theirs(tmp_path, caplog):
    async def main():
        async with LoopbackRig(tmp_path / "head.db", max_connections=8, known_reserve=2, max_per_source=3,
                               limit_log_s=3600) as rig:
            meters = [SimMeter(time_fn=lambda: int(rig.clock())) for _ in range(4)]
            rig.register(*meters)
            adm = rig.conc.conns.admission
            one = [await _raw(rig) for _ in range(4)]  # a 4th from the same address: the 1st makes way
            await until(lambda: adm.total == 3)
            assert await _closed(one[0][0]) and len(adm.by_source["127.0.0.1"]) == 3
            others = [await _raw(rig, f"127.0.0.{2 + i}") for i in range(4)]  # unknown: 8 - 2 reserved: 1 goes
            await until(lambda: adm.total == 6 and len(adm.unknown) == 6)
            assert await _closed(one[1][0])
            assert not await _closed(one[2][0], 0.2) and not await _closed(others[0][0], 0.2)
            clients = []
            for m in meters:  # each arrives unknown (making way), sends, and is known
                cl = await rig.connect(m)
                cl.send(m.hello())
                await cl.wait_ack(0)
                clients.append(cl)
            assert len(adm.unknown) == 4 and adm.total == 8  # 4 known, 4 unknown, full
            more = [await _raw(rig, "127.0.0.9") for _ in range(5)]  # each makes way for the next
            await until(lambda: len(adm.unknown) == 4 and adm.total == 8)
            assert all(not c.closed.is_set() for c in clients)  # known meters keep their connections
            assert not await _closed(more[-1][0], 0.2)
            s = rig.conc.stats()
            # 1 (the address's 4th) + 1 (the 7th unknown) + 2 (meters 1 and 4) + 5 (each of `more`)
            assert s["connections_evicted"] == 9 and s.get("connections_refused", 0) == 0
            for _r, w in one + others + more:
                w.close()

    with caplog.at_level(logging.WARNING, "meterkit.headend.admission"):
        run(main())
    # a repeating warning: once per limit_log_s (one line per kind here), however often it happened
    assert len([r for r in caplog.records if r.name == "meterkit.headend.admission"]) == 2


def test_when_every_connection_is_known_a_new_one_is_refused(tmp_path):
    async def main():
        async with LoopbackRig(tmp_path / "head.db", max_connections=2, known_reserve=0) as rig:
            meters = [SimMeter(time_fn=lambda: int(rig.clock())) for _ in range(2)]
            rig.register(*meters)
            for m in meters:
                cl = await rig.connect(m)
                cl.send(m.hello())
                await cl.wait_ack(0)
            r, _w = await _raw(rig)
            assert await _closed(r)
            assert rig.conc.stats()["connections_refused"] == 1 and rig.conc.conns.admission.total == 2

    run(main())


def test_a_connection_without_a_verified_frame_has_auth_timeout_a_meter_idle_timeout(tmp_path):
    async def main():
        async with LoopbackRig(tmp_path / "head.db", auth_timeout=0.3, idle_timeout=30) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            cl = await rig.connect(m)
            cl.send(m.hello())
            await cl.wait_ack(0)
            r, _w = await _raw(rig)
            assert await _closed(r, 5)
            await asyncio.sleep(0.5)
            assert not cl.closed.is_set()  # known: its idle timeout is 30 s
            s = rig.conc.stats()
            assert s["auth_timeout_closed"] == 1 and s["connections_open"] == 1

    run(main())


def test_accept_errors_are_logged_once_per_interval_and_make_room(tmp_path, caplog):
    async def main():
        async with LoopbackRig(tmp_path / "head.db", limit_log_s=3600) as rig:
            idle, _w = await _raw(rig)
            await until(lambda: rig.conc.conns.admission.total == 1)
            [lsn] = rig.conc.conns._listeners
            real = lsn.sock

            class Exhausted:  # the descriptors are used up elsewhere: accept() fails as it does then
                def accept(self):
                    raise OSError(errno.EMFILE, "Too many open files")

                def fileno(self):
                    return real.fileno()

            lsn.sock = Exhausted()
            for _ in range(50):
                lsn.paused = False
                lsn._ready()
            lsn.sock = real
            lsn._resume()
            assert await _closed(idle)  # the oldest unauthenticated connection made room
            assert rig.conc.stats()["accept_errors"] == 50
            lsn.paused = True  # a pause was scheduled: it must take the listener up again
            lsn._resume()
            r, w = await _raw(rig)
            await until(lambda: rig.conc.conns.admission.total == 1)
            w.close()

    with caplog.at_level(logging.WARNING, "meterkit.headend.admission"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0]


def test_connection_limits_are_checked_where_they_are_given():
    for bad in ({"max_connections": 0}, {"max_per_source": 0}, {"known_reserve": -1}, {"auth_timeout": 0},
                {"limit_log_s": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ConcentratorConfig(**bad)
    with pytest.raises(TypeError, match="max_connections"):
        ConcentratorConfig(max_connections=2.5)
    assert ConcentratorConfig(max_per_source=None, max_connections=None).max_per_source is None
