"""The concentrator end to end: real TCP on 127.0.0.1, a real SQLite file, meters simulated by the firmware's
own code under CPython (meter.identity + meter.messages.Builder) or by `cryptography` with the same bytes.
Acknowledgements and commands are checked as a meter checks them (protocol.verify_host_message, and the
firmware's meter.messages.verify_host). Time for outages and back-fill comes from a manual clock."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meter import events, messages
from meter import messages as M
from meter.frame import Deframer
from meter.identity import Identity
from meterkit import wire as P
from meterkit.store import open_store
from meterkit.store.api import Store
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until

PERIOD = 60


def real_meter(tmp_path, name: str, rig: LoopbackRig) -> SimMeter:
    """A meter whose frames the firmware's own code builds and signs; it knows the head-end's key."""
    ident = Identity(str(tmp_path / f"flash-{name}"))
    ident.install_headend(rig.headend.public_bytes)
    return SimMeter(identity=ident, time_fn=lambda: int(rig.clock()))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def rows_of(store: Store, table: str, dev: bytes) -> list[dict]:
    names, rows = store.export(table, dev)
    return [dict(zip(names, r, strict=True)) for r in rows]


def count(store: Store, table: str, dev: bytes) -> int:
    return len(rows_of(store, table, dev))


def seqs(store: Store, dev: bytes) -> list[int]:
    return store.seqs_above(dev, -1)


# --- storage and acknowledgement ----------------------------------------------------------------------------


def test_every_frame_stored_once_and_acknowledged(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            meters = [real_meter(tmp_path, f"m{i}", rig) for i in range(3)]
            rig.register(*meters)
            sent = {}
            clients = []
            for i, m in enumerate(meters):
                frames = [m.hello(status=M.ST_RESTORED, boots=3)]
                frames += [m.reading(import_wh=1000 * i + k, export_wh=k) for k in range(5)]
                frames.append(m.intervals([[T0 - 900, 5000, 0, 0], [T0, 6000, 10, M.ROW_DST]]))
                frames.append(m.event(events.CHIP_RESET, 7, T0 - 5, event_seq=1))
                frames.append(m.event(events.SENSOR_FAULT, "no chip", T0 - 4, event_seq=2))
                sent[m.device_id] = len(frames)
                cl = await rig.connect(m)
                blob = b"".join(frames)
                if i == 0:  # one meter's bytes arrive in small pieces: frames cut across reads
                    for j in range(0, len(blob), 7):
                        cl.send(blob[j:j + 7])
                        await asyncio.sleep(0)
                else:
                    cl.send(blob)
                clients.append(cl)
            for cl, m in zip(clients, meters, strict=True):
                await cl.wait_ack(sent[m.device_id] - 1)
            st = rig.store
            for cl, m in zip(clients, meters, strict=True):
                dev = m.device_id
                assert seqs(st, dev) == list(range(sent[dev]))
                assert count(st, "readings", dev) == 5 and count(st, "intervals", dev) == 2
                assert count(st, "events", dev) == 2
                assert cl.refused == [] and cl.acked == sent[dev] - 1
                assert cl.acks == sorted(cl.acks)  # cumulative, never backwards
                rec = st.meter(dev)
                assert (rec.firmware, rec.board, rec.boot_count) == ("meterkit-0.1", "unix-sim", 3)
                assert rec.ack_seq == sent[dev] - 1 and rec.frames_stored == sent[dev] and rec.online
                assert rec.last_counter == cl.last_counter >= 1
                raw = st.frame_raw(dev, 0)
                assert P.verify_and_decode(raw, {dev: P.public_from_bytes(m.public_key)}.get).kind == M.HELLO
            rows = rows_of(st, "readings", meters[2].device_id)
            assert [r["import_wh"] for r in rows] == [2000, 2001, 2002, 2003, 2004]
            assert json.loads(rows[0]["registers"]) == {"1.8.0": 2000, "2.8.0": 0}
            assert rows[0]["power_mw"] == 1500 and rows[0]["uncovered_ppm"] == 0
            assert [(r.end, r.period_s, r.seq, r.status) for r in st.interval_rows(meters[1].device_id, 0)] == [
                (T0 - 900, 900, 6, 0), (T0, 900, 6, M.ROW_DST)]
            ev = list(st.export("events", meters[0].device_id)[1])
            assert [(e[3], e[4]) for e in ev] == [(events.CHIP_RESET, 7), (events.SENSOR_FAULT, "no chip")]
            s = rig.conc.stats()
            total = sum(sent.values())
            assert s["frames_stored"] == s["frames_received"] == total and s.get("rejected", 0) == 0
            assert s["acks_sent"] >= 3
            assert "meters_moved_elsewhere" not in s  # one process: its memory is never stale (headend/devices.py)

    run(main())


def test_duplicates_and_replays_rejected_counted_and_reacknowledged(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            frames = [m.reading() for _ in range(4)]
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await cl.wait_ack(3)
            # the meter's ack was "lost": it resends everything; stored nothing new, acknowledged again
            n_acks = len(cl.acks)
            cl.send(b"".join(frames))
            await cl.wait_for(lambda c: len(c.acks) > n_acks)
            assert cl.acks[-1] == 3 and cl.refused == []
            # an eavesdropper replays captured frames from its own connection: no signed reply (issue 11)
            spy = await rig.connect(m)
            spy.send(frames[1] + frames[2] + frames[1])
            await until(lambda: rig.conc.stats()["duplicates"] == 7)
            assert rig.conc.stats()["replays_unanswered"] == 3
            # the same sequence number with other content (a meter whose numbering was reset) is not acked
            other = m.reading(import_wh=999_999, seq=2)
            n_acks = len(cl.acks)
            cl.send(other)
            await until(lambda: rig.conc.stats()["rejects"].get("seq-reuse") == 1)
            cl.send(m.reading())  # seq 4: new
            await cl.wait_ack(4)
            assert seqs(rig.store, m.device_id) == [0, 1, 2, 3, 4]
            s = rig.conc.stats()
            assert s["rejects"]["replay"] == 4 and s["rejects"]["replay-unanswered"] == 3
            assert s["frames_stored"] == 5 and spy.acks == [] and s.get("recovery_acks", 0) == 0
            rej = {(r.reason, r.device_id) for r in rig.store.rejects()}
            assert ("replay", m.device_id) in rej and ("seq-reuse", m.device_id) in rej
            assert len(cl.acks) == n_acks + 1  # only seq 4 brought an ack
            assert rig.store.meter(m.device_id).frames_stored == 5

    run(main())


def test_restart_mid_run_loses_nothing_and_counters_persist(store_db):
    async def main():
        rig = await LoopbackRig(store_db).start()
        meters = [SimMeter(time_fn=lambda: int(rig.clock())) for _ in range(4)]
        rig.register(*meters)
        outbox = {m.device_id: [m.reading() for _ in range(30)] for m in meters}
        clients = [await rig.connect(m) for m in meters]
        for cl, m in zip(clients, meters, strict=True):
            cl.send(b"".join(outbox[m.device_id][:10]))
        for cl in clients:
            await cl.wait_ack(9)
        bad = SimMeter()  # unregistered: rejected, counted
        (await rig.connect(bad)).send(bad.reading())
        await until(lambda: rig.conc.stats().get("rejected", 0) == 1)
        for cl, m in zip(clients, meters, strict=True):  # more frames, then the head-end goes down at once
            cl.send(b"".join(outbox[m.device_id][10:20]))
        await rig.stop()
        for cl in clients:
            await asyncio.wait_for(cl.closed.wait(), 10)
        counters = [cl.last_counter for cl in clients]

        await rig.start()  # a new Concentrator on the same file
        assert rig.conc.stats()["rejects"] == {"unknown-kid": 1}
        again = []
        for m, last in zip(meters, counters, strict=True):
            cl = await rig.connect(m, last_counter=last)
            acked = max(c.acked for c in clients if c.meter is m)
            cl.send(b"".join(outbox[m.device_id][acked + 1:]))  # the meter resends what is not acknowledged
            again.append(cl)
        for cl in again:
            await cl.wait_ack(29)
            assert cl.refused == []  # counters kept increasing across the restart
        for m in meters:
            assert seqs(rig.store, m.device_id) == list(range(30))
            assert count(rig.store, "readings", m.device_id) == 30
        s = rig.conc.stats()
        assert s["frames_stored"] == 120 and s["rejected"] >= 1 and s["rejects"]["unknown-kid"] == 1
        assert s["connections"] >= 9
        await rig.stop()

    run(main())


def test_no_acknowledgement_without_a_commit(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            good = rig.store.commit

            def failing_commit():
                raise OSError("disk full")

            rig.store.commit = failing_commit
            frames = [m.reading() for _ in range(3)]
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await asyncio.wait_for(cl.closed.wait(), 10)  # the concentrator hangs up: the meter will resend
            assert cl.acks == []
            assert rig.conc.stats()["commit_failures"] == 1
            other = open_store(rig.db_path)
            assert seqs(other, m.device_id) == []
            rig.store.commit = good
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await cl.wait_ack(2)
            assert seqs(other, m.device_id) == [0, 1, 2]
            assert other.counters()["commit_failures"] == 1
            other.close()

    run(main())


def test_failed_housekeeping_commit_counts_nothing_twice(store_db):
    """A housekeeping tick whose commit fails leaves no trace, in the database or in the counters: the next tick
    declares the outage, fills and settles the interval gaps again, and each is counted once."""
    async def main():
        async with LoopbackRig(store_db, offline_after=3) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m, period_s=PERIOD)
            rows = [m.intervals([[end, end // 90, 0, 0]]) for end in (900, 1800, 2700, 4500)]
            cl = await rig.connect(m)
            cl.send(rows[0] + rows[2])  # the frame with row 1800 is late
            await cl.wait_ack(0)
            await until(lambda: seqs(rig.store, m.device_id) == [0, 2])
            rig.conc.tick()
            assert [(g.first, g.state) for g in rig.store.gaps(m.device_id, "intervals")] == [(1800, "open")]
            cl.send(rows[1] + rows[3])  # row 1800 comes; after 2700 the meter made no rows until 4500 (it was off)
            await cl.wait_ack(3)
            rig.clock.advance(3 * PERIOD + 1)  # silent for more than 3 periods: an outage
            good = rig.store.commit

            def fail_once():
                rig.store.commit = good
                raise OSError("disk full")

            rig.store.commit = fail_once
            rig.conc.tick()  # outage, filled gap, new gap: found, then the commit fails and all is rolled back
            assert rig.store.commit == good
            assert rig.store.outages() == []
            assert [(g.first, g.state) for g in rig.store.gaps(m.device_id, "intervals")] == [(1800, "open")]
            rig.conc.tick()
            assert len(rig.store.outages(m.device_id)) == 1
            gaps = rig.store.gaps(m.device_id, "intervals")
            assert [(g.first, g.last, g.state) for g in gaps] == [(1800, 1800, "filled"), (3600, 3600, "not-sent")]
            names = ("outages", "interval_gaps_detected", "interval_gaps_filled", "interval_gaps_not_sent")
            s = rig.conc.stats()
            saved = rig.store.counters()
            assert [s.get(k) for k in names] == [1, 2, 1, 1]
            assert [saved.get(k) for k in names] == [1, 2, 1, 1]

    run(main())


# --- gaps and back-fill -------------------------------------------------------------------------------------


def test_gap_triggers_backfill_command_and_is_filled(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=30) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            f = [m.reading() for _ in range(6)]
            cl = await rig.connect(m)
            cl.send(f[0] + f[1] + f[2] + f[4] + f[5])  # frame 3 lost on the way
            await until(lambda: seqs(rig.store, m.device_id) == [0, 1, 2, 4, 5])
            await cl.wait_ack(2)
            assert cl.acked == 2  # never past the gap
            g = rig.store.gaps(m.device_id, "frames")
            assert [(x.first, x.last, x.state) for x in g] == [(3, 3, "open")]
            rig.conc.tick()
            assert rig.conc.stats().get("backfills_sent", 0) == 0  # the meter may still resend by itself
            prev = cl.last_counter
            rig.clock.advance(31)
            rig.conc.tick()
            await cl.wait_for(lambda c: c.commands)
            cmd = cl.commands[0]
            assert cmd.kind == M.COMMAND and cmd.body[M.K_OP] == 1 and cmd.body[M.K_ARGS] == {1: 3, 2: 3}
            assert cmd.counter > prev and cl.refused == []
            # the firmware's own check accepts it too
            kind, counter, payload = messages.verify_host(cmd.raw, m.identity, int(rig.clock()), prev)
            assert (kind, counter, payload[messages.K_OP], payload[messages.K_ARGS]) == (
                messages.COMMAND, cmd.counter, 1, {1: 3, 2: 3})
            # the meter resends frame 3, then answers the command
            cl.send(f[3] + m.response(cmd.counter, 0))
            await cl.wait_ack(6)
            g = rig.store.gaps(m.device_id, "frames")[0]
            assert (g.state, g.attempts, g.missing, g.command_counter) == ("filled", 1, 0, cmd.counter)
            row = rows_of(rig.store, "commands", m.device_id)[0]
            assert (row["op"], json.loads(row["args"]), row["result"]) == (1, {"1": 3, "2": 3}, 0)
            s = rig.conc.stats()
            assert s["backfills_sent"] == 1 and s["gaps_filled"] == 1 and s["gaps_open"] == 0
            assert rig.store.fleet()[0].gaps_backfilled == 1

    run(main())


@pytest.mark.parametrize(("result", "state"), [(0, "skipped"), (-1, "lost")])
def test_gap_the_meter_cannot_fill_is_settled(store_db, result, state):
    """A restart skips the rest of a reserved block (0: nothing to resend); a full outbox drops old frames
    (-1, gone). Either way the back-fill answer settles the hole and the ack moves on."""
    async def main():
        async with LoopbackRig(store_db, backfill_after=10) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            cl = await rig.connect(m)
            cl.send(b"".join(m.reading() for _ in range(3)))
            await cl.wait_ack(2)
            cl.send(m.hello(status=M.ST_POWER_FAIL | M.ST_RESTORED, seq=1024) + m.reading())
            await until(lambda: rig.store.max_seq(m.device_id) == 1025)
            rig.clock.advance(11)
            rig.conc.tick()
            await cl.wait_for(lambda c: c.commands)
            cmd = cl.commands[0]
            assert cmd.body[M.K_ARGS] == {1: 3, 2: 1023}
            cl.send(m.response(cmd.counter, result, None if result == 0 else "outbox full"))
            await cl.wait_ack(1025)
            g = rig.store.gaps(m.device_id, "frames")[0]
            assert (g.first, g.last, g.state, g.missing) == (3, 1023, state, 1021)
            assert rig.conc.stats()[f"gaps_{state}"] == 1
        async with LoopbackRig(store_db, headend=rig.headend, clock=rig.clock) as again:
            cl = await again.connect(m, last_counter=cl.last_counter)
            cl.send(m.reading())  # 1027 (1026 was the answer): the hole stays settled after a restart
            await cl.wait_ack(1027)
            assert cl.acked == 1027 and again.store.meter(m.device_id).ack_seq == 1027

    run(main())


def test_hole_filled_by_the_meter_itself_needs_no_backfill(store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=10) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            f = [m.reading() for _ in range(4)]
            cl = await rig.connect(m)
            cl.send(f[0] + f[2] + f[3])
            await until(lambda: len(seqs(rig.store, m.device_id)) == 3)
            await cl.wait_ack(0)
            cl.close()
            cl = await rig.connect(m, last_counter=cl.last_counter)  # reconnect: the outbox resends 1..3
            cl.send(f[1] + f[2] + f[3])
            await cl.wait_ack(3)
            rig.clock.advance(60)
            rig.conc.tick()
            assert [g.state for g in rig.store.gaps(m.device_id)] == ["resolved"]
            s = rig.conc.stats()
            assert s.get("backfills_sent", 0) == 0 and s["gaps_resolved"] == 1 and s["duplicates"] == 2

    run(main())


def test_unanswered_backfill_is_repeated_then_given_up(store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=5, command_ttl_s=100,
                               backfill_attempts=2) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            f = [m.reading() for _ in range(3)]
            cl = await rig.connect(m)
            cl.send(f[0] + f[2])
            await until(lambda: len(seqs(rig.store, m.device_id)) == 2)
            rig.clock.advance(6)
            rig.conc.tick()
            await cl.wait_for(lambda c: len(c.commands) == 1)
            rig.clock.advance(50)
            rig.conc.tick()  # not expired yet
            rig.clock.advance(51)
            rig.conc.tick()
            await cl.wait_for(lambda c: len(c.commands) == 2)
            assert cl.commands[1].counter > cl.commands[0].counter
            assert cl.commands[1].body[M.K_ARGS] == {1: 1, 2: 1}
            rig.clock.advance(101)
            rig.conc.tick()  # two attempts made: no third
            g = rig.store.gaps(m.device_id)[0]
            assert (g.state, g.attempts) == ("requested", 2)
            assert rig.conc.stats()["backfills_sent"] == 2 and cl.refused == []
            assert "meters_moved_elsewhere" not in rig.conc.stats()

    run(main())


# --- outages ------------------------------------------------------------------------------------------------


def test_outage_matched_to_the_meters_power_failure(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db, offline_after=3) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m, period_s=PERIOD)
            cl = await rig.connect(m)
            cl.send(m.hello() + m.reading())
            await cl.wait_ack(1)
            start = rig.clock()
            rig.clock.advance(3 * PERIOD)  # exactly 3 periods: not yet
            rig.conc.tick()
            assert rig.store.outages() == [] and rig.store.meter(m.device_id).online
            rig.clock.advance(1)
            rig.conc.tick()
            o = rig.store.outages(m.device_id)
            assert len(o) == 1 and (o[0].start, o[0].end) == (start, None)
            assert not rig.store.meter(m.device_id).online
            assert rig.store.fleet()[0].outage_open == 1
            cl.close()
            # power comes back after 20 minutes: the meter boots, says so, and reports
            rig.clock.advance(1200 - 181)
            up = int(rig.clock()) - 8
            saved = rig.clock.t
            rig.clock.t = up
            frames = m.hello(status=M.ST_POWER_FAIL | M.ST_RESTORED, boots=2)
            frames += m.event(events.POWER_UP, 2, up, event_seq=9, status=M.ST_POWER_FAIL)
            rig.clock.t = saved
            frames += m.reading(status=M.ST_POWER_FAIL)
            cl = await rig.connect(m, last_counter=cl.last_counter)
            cl.send(frames)
            await cl.wait_ack(4)
            o = rig.store.outages(m.device_id)[0]
            assert (o.start, o.end, o.cause, o.power_up_at) == (start, saved, "power", up)
            assert o.evidence == {"power_fail_frames": [2, 3, 4], "power_up_events": [3], "frames_made_during": 0}
            assert rig.store.meter(m.device_id).online and rig.conc.stats()["outages"] == 1

    run(main())


def test_outage_of_the_link_while_the_meter_kept_measuring(store_db):
    async def main():
        async with LoopbackRig(store_db, offline_after=3) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m, period_s=PERIOD)
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_ack(0)
            start = rig.clock()
            outbox = []
            for _ in range(10):  # ten minutes without a link: the meter keeps its frames
                rig.clock.advance(PERIOD)
                outbox.append(m.reading())
                rig.conc.tick()
            o = rig.store.outages(m.device_id)
            assert len(o) == 1 and o[0].end is None and o[0].detected_at == start + 4 * PERIOD
            rig.clock.advance(5)
            cl.send(b"".join(outbox))  # the link is back: the outbox drains
            await cl.wait_ack(10)
            o = rig.store.outages(m.device_id)[0]
            assert (o.end, o.cause, o.power_up_at) == (rig.clock(), "communication", None)
            assert o.evidence["frames_made_during"] >= 8

    run(main())


def test_outages_across_a_head_end_restart(store_db):
    """An open outage survives a restart and is matched when the meter returns; a meter that was online when
    the head-end went down is not declared offline for the head-end's own downtime."""
    async def main():
        rig = await LoopbackRig(store_db, offline_after=3).start()
        a = SimMeter(time_fn=lambda: int(rig.clock()))
        b = SimMeter(time_fn=lambda: int(rig.clock()))
        rig.register(a, b, period_s=PERIOD)
        ca, cb = await rig.connect(a), await rig.connect(b)
        ca.send(a.reading())
        cb.send(b.reading())
        await ca.wait_ack(0)
        await cb.wait_ack(0)
        rig.clock.advance(4 * PERIOD)
        cb.send(b.reading())  # b keeps reporting, a has gone quiet
        await cb.wait_ack(1)
        rig.conc.tick()
        assert [o.device_id for o in rig.store.outages(open_only=True)] == [a.device_id]
        await rig.stop()
        rig.clock.advance(3600)  # the head-end is down for an hour
        await rig.start()
        rig.conc.tick()
        assert [o.device_id for o in rig.store.outages()] == [a.device_id]  # b: no outage for our downtime
        rig.clock.advance(3 * PERIOD + 1)
        rig.conc.tick()  # now b has been silent for 3 periods of the head-end's watch too
        assert sorted(o.device_id for o in rig.store.outages(open_only=True)) == sorted([a.device_id, b.device_id])
        ca = await rig.connect(a, last_counter=ca.last_counter)
        ca.send(a.hello(status=M.ST_POWER_FAIL | M.ST_RESTORED, boots=2) + a.reading())
        await ca.wait_ack(2)
        o = rig.store.outages(a.device_id)[0]
        assert o.end == rig.clock() and o.cause == "power" and o.power_up_at == int(rig.clock())
        assert o.evidence["power_fail_frames"] == [1]
        await rig.stop()

    run(main())


def test_interval_gaps_not_sent_and_filled(store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=10) as rig:
            a = SimMeter(time_fn=lambda: int(rig.clock()))
            b = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(a, b)
            ca, cb = await rig.connect(a), await rig.connect(b)
            # meter a: rows 900, 1800, then 4500 -- every frame here: it made no rows for 2700, 3600 (off)
            ca.send(a.intervals([[900, 10, 0, 0]]) + a.intervals([[1800, 20, 0, 0]])
                    + a.intervals([[4500, 30, 0, M.ROW_POWER_FAIL]]))
            # meter b: the frame with row 1800 is lost on the way
            fb = [b.intervals([[900 * k, 10 * k, 0, 0]]) for k in (1, 2, 3)]
            cb.send(fb[0] + fb[2])
            await ca.wait_ack(2)
            await until(lambda: len(seqs(rig.store, b.device_id)) == 2)
            rig.conc.tick()
            ga = rig.store.gaps(a.device_id, "intervals")
            assert [(g.first, g.last, g.state, g.missing) for g in ga] == [(2700, 3600, "not-sent", 2)]
            gb = rig.store.gaps(b.device_id, "intervals")
            assert [(g.first, g.last, g.state) for g in gb] == [(1800, 1800, "open")]
            rig.clock.advance(11)
            rig.conc.tick()
            await cb.wait_for(lambda c: c.commands)
            cb.send(fb[1] + b.response(cb.commands[0].counter, 0))
            await cb.wait_ack(2)
            rig.conc.tick()
            gb = rig.store.gaps(b.device_id, "intervals")
            assert [(g.first, g.last, g.state) for g in gb] == [(1800, 1800, "filled")]
            s = rig.conc.stats()
            assert s["interval_gaps_detected"] == 2 and s["interval_gaps_filled"] == 1
            assert s["interval_gaps_not_sent"] == 1

    run(main())


# --- the firmware's own link against the concentrator --------------------------------------------------------


def test_firmware_link_and_outbox_against_the_concentrator(tmp_path):
    """The meter side of the wire as the firmware runs it (meter.link.Link over TCPTransport, meter.outbox,
    meter.seqno.FrameSeq, all under CPython in a thread) against the concentrator: frames acknowledged into the
    outbox; then a power cut (nothing flushed), a restart that skips the rest of the reserved block, and the
    hole closed by a back-fill that the real link answers."""
    import socket
    import types

    from meter.link import Link
    from meter.outbox import Outbox
    from meter.seqno import FrameSeq
    from meter.store import Store
    from meter.transport import TCPTransport

    class MicroPythonSocket(socket.socket):
        """CPython's socket with MicroPython's readinto (the one call TCPTransport makes that CPython lacks)."""

        def readinto(self, buf):
            return self.recv_into(buf)

    socket_mod = types.SimpleNamespace(socket=MicroPythonSocket, getaddrinfo=socket.getaddrinfo,
                                       SOCK_STREAM=socket.SOCK_STREAM)
    flash = str(tmp_path / "flash")

    async def main():
        async with LoopbackRig(tmp_path / "head.db", backfill_after=5) as rig:
            ident = Identity(flash)
            ident.install_headend(rig.headend.public_bytes)
            now = lambda: int(rig.clock())  # noqa: E731

            def boot():
                seq = FrameSeq(Store(flash, "frame-seq", max_payload=16))
                builder = messages.Builder(ident, seq, now)
                respond = lambda c, r, why: builder.frame(messages.RESPONSE, 0, messages.response_body(c, r, why))  # noqa: E731
                link = Link(TCPTransport("127.0.0.1", rig.port, socket_mod, backoff_min_ms=20, backoff_max_ms=200),
                            Outbox(flash), ident, respond=respond, time=now, ack_timeout_ms=500)
                return seq, builder, link

            class Running:
                """The meter's main loop in a thread: link.poll() until stopped."""

                def __init__(self, link):
                    import threading
                    import time as _t
                    self.stop = threading.Event()

                    def loop():
                        while not self.stop.is_set():
                            link.poll()
                            _t.sleep(0.001)

                    self.thread = threading.Thread(target=loop, daemon=True)
                    self.thread.start()

                async def halt(self):
                    self.stop.set()
                    await asyncio.to_thread(self.thread.join, 10)

            rig.register(SimMeter(identity=ident))
            dev = ident.device_id
            seq, builder, link = boot()
            link.send(*builder.frame(messages.HELLO, 0, messages.hello_body("fw", "unix-sim", 1, 68630, 992249,
                                                                            100000, 10)))
            for k in range(4):
                link.send(*builder.frame(messages.READING, 0, {6: {10800: 100 + k, 20800: 0}, 7: [0, 0, 0], 8: 0}))
            meter = Running(link)
            await until(lambda: link.outbox.acked == 4, timeout=20)
            await meter.halt()
            link.transport.close()  # the power goes: nothing flushed

            seq, builder, link = boot()
            assert seq.next == 1024  # the rest of the reserved block is skipped
            link.send(*builder.frame(messages.HELLO, messages.ST_POWER_FAIL | messages.ST_RESTORED,
                                     messages.hello_body("fw", "unix-sim", 2, 68630, 992249, 100000, 10)))
            link.send(*builder.frame(messages.READING, messages.ST_POWER_FAIL, {6: {10800: 104, 20800: 0},
                                                                                7: [0, 0, 0], 8: 0}))
            meter = Running(link)
            await until(lambda: rig.store.max_seq(dev) == 1025, timeout=20)
            assert rig.store.meter(dev).ack_seq == 4  # never past the hole 5..1023
            rig.clock.advance(6)
            rig.conc.tick()  # the back-fill goes out; the link answers it
            await until(lambda: link.outbox.acked == 1026, timeout=20)
            await meter.halt()
            link.transport.close()
            g = rig.store.gaps(dev, "frames")[0]
            assert (g.first, g.last, g.attempts) == (5, 1023, 1) and g.state in ("skipped", "lost")
            assert seqs(rig.store, dev) == [0, 1, 2, 3, 4, 1024, 1025, 1026]  # 1026: the link's answer
            row = rows_of(rig.store, "commands", dev)[0]
            assert row["result"] == (0 if g.state == "skipped" else -1)
            st = link.stats()
            assert st["refused"] == {} and st["commands"] == 1 and st["acked"] == 1026

    run(main())


# --- registry, serial, CLI ----------------------------------------------------------------------------------


def test_unknown_meter_rejected_until_registered(store_db, caplog):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            cl = await rig.connect(m)
            f = m.reading()
            with caplog.at_level(logging.WARNING, logger="meterkit.headend"):
                cl.send(f)
                await until(lambda: rig.conc.stats().get("rejected", 0) == 1)
            assert "unknown-kid" in caplog.text and m.device_id.hex() in caplog.text
            other = open_store(rig.db_path)  # `meterkit meters add` from another process
            other.register_meter(None, m.public_key, "late")
            other.close()
            cl.send(f)
            await cl.wait_ack(0)
            r = rig.store.rejects()
            assert [(x.reason, x.device_id, x.count) for x in r] == [("unknown-kid", b"", 1)]
            assert m.device_id.hex() in r[0].last_detail  # an unknown kid is no row of its own (issue 11)

    run(main())


def test_serial_pty_with_log_text_and_reconnect(tmp_path):
    link = tmp_path / "ttyMETER"

    def new_pty():
        master, slave = os.openpty()
        path = os.ttyname(slave)
        os.close(slave)  # the concentrator opens it by name, through pyserial
        if link.is_symlink():
            link.unlink()
        link.symlink_to(path)
        os.set_blocking(master, False)
        return master

    async def read_acks(master, cl_like, want):
        df = Deframer()
        while True:
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                data = b""
            for cose in df.feed(data):
                msg = P.verify_host_message(cose, rig.headend.lookup, m.device_id, int(rig.clock()), cl_like[0])
                cl_like[0] = msg.counter
                if msg.kind == M.ACK:
                    cl_like[1] = msg.body[M.K_ACK_SEQ]
            if cl_like[1] is not None and cl_like[1] >= want:
                return
            await asyncio.sleep(0.01)

    async def main():
        nonlocal rig, m
        rig = await LoopbackRig(tmp_path / "head.db", reconnect_s=0.05).start()
        m = real_meter(tmp_path, "serial", rig)
        rig.register(m)
        master = new_pty()
        rig.conc.add_serial(str(link))
        await until(lambda: rig.conc.serial_open(str(link)))
        state = [0, None]  # last counter, last ack
        os.write(master, b"I (1234) boot: ESP-IDF v5.1 log text\r\n" + m.hello() + b"\r\nwifi: off\r\n"
                 + m.reading())
        await asyncio.wait_for(read_acks(master, state, 1), 10)
        # the USB adapter is unplugged (the pty closes) and comes back as another device under the same name
        os.close(master)
        await until(lambda: not rig.conc.serial_open(str(link)))
        master = new_pty()
        await until(lambda: rig.conc.serial_open(str(link)))
        os.write(master, m.reading() + m.reading())
        await asyncio.wait_for(read_acks(master, state, 3), 10)
        os.close(master)
        s = rig.conc.stats()
        assert seqs(rig.store, m.device_id) == [0, 1, 2, 3]
        assert s["serial_opens"] == 2 and s["serial_lost"] >= 1 and s["noise_bytes"] > 0
        await rig.stop()

    rig = m = None
    run(main())


def test_concentrator_command_line(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    kpath = tmp_path / "headend.key.pem"
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    kpath.chmod(0o600)  # a private key others may read is refused (issue 11 finding 9)
    db = tmp_path / "head.db"
    m = SimMeter()
    s = open_store(db)
    s.register_meter(None, m.public_key, "cli-meter")
    s.close()
    code = ("import argparse, sys\n"
            "from meterkit.cli import concentrator\n"
            "p = argparse.ArgumentParser(prog='meterkit')\n"
            "concentrator.add_parser(p.add_subparsers(dest='command', required=True))\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "sys.exit(a.func(a))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "concentrator", "--db", str(db), "--key", str(kpath),
                             "--listen", "127.0.0.1:0", "--stats-every", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        async def main():
            he = P.HeadEnd(key)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(m.reading() + m.reading())
            df = Deframer()
            ack = None
            while ack != 1:
                for cose in df.feed(await reader.read(4096)):
                    ack = P.verify_host_message(cose, he.lookup, m.device_id, int(__import__("time").time()),
                                                None).body[M.K_ACK_SEQ]
            writer.close()

        run(main())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out[out.index("{"):])  # after the status lines, the final counters as JSON
    assert stats["frames_stored"] == 2 and stats["acks_sent"] >= 1
    s = open_store(db)
    assert seqs(s, m.device_id) == [0, 1]
    s.close()


def test_command_line_refuses_bad_setups(tmp_path, capsys):
    import argparse

    from meterkit.cli import concentrator

    p = argparse.ArgumentParser(prog="meterkit")
    concentrator.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["concentrator", "--db", str(tmp_path / "x.db"), "--key", str(tmp_path / "none.pem")])
    assert a.func(a) == 2 and "nothing to serve" in capsys.readouterr().err
    a = p.parse_args(["concentrator", "--db", str(tmp_path / "x.db"), "--key", str(tmp_path / "none.pem"),
                      "--listen", "127.0.0.1:0"])
    assert a.func(a) == 2 and "no such key file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["concentrator", "--db", "x", "--key", "k", "--listen", "nowhere"])
    from meterkit.wire.keys import new_key

    key, _, _ = new_key(tmp_path)
    a = p.parse_args(["concentrator", "--db", str(tmp_path / "x.db"), "--key", str(key), "--listen", "127.0.0.1:0",
                      "--offline-after", "0"])
    assert a.func(a) == 2 and "offline_after must be above 0" in capsys.readouterr().err
    from meterkit.cli.common import host_port

    assert host_port(":4840") == ("0.0.0.0", 4840)
    assert host_port("[::1]:4840") == ("::1", 4840)


def test_sequence_ranges():
    from meterkit.headend.acks import ranges_add, ranges_covered

    r: list[list[int]] = []
    for lo, hi in [(5, 5), (7, 9), (1, 2), (3, 3), (20, 30), (6, 6), (11, 19)]:
        ranges_add(r, lo, hi)
    assert r == [[1, 3], [5, 9], [11, 30]]
    ranges_add(r, 10, 10)
    ranges_add(r, 4, 4)
    assert r == [[1, 30]]
    ranges_add(r, 2, 40)
    assert r == [[1, 40]]
    r = [[1, 3], [10, 12]]
    assert ranges_covered(r, 0, 20) == 6 and ranges_covered(r, 2, 11) == 4 and ranges_covered(r, 4, 9) == 0
