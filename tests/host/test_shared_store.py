"""Two concentrators on one database, a SQLite file or PostgreSQL (what several head-end processes behind a
load balancer are): a meter that moves from one to the other and back is served with the state the other left
in the database, not with what the first remembered. Its acknowledgements stay fresh (command counters above
the last it accepted) and nothing it sent is stored twice."""

from __future__ import annotations

import asyncio
import threading

from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit.store import is_url, open_store
from meterkit.store.api import Store
from meterkit.store.records import HeldMeter
from meterkit.testing.rig import LoopbackRig, MeterClient, SimMeter


def test_a_meter_that_moves_between_two_concentrators_gets_fresh_acks_from_both(store_db):
    async def main():
        db = store_db  # one SQLite file, or one PostgreSQL database
        async with LoopbackRig(db) as a, LoopbackRig(db, headend=a.headend, clock=a.clock) as b:
            m = SimMeter()
            a.register(m)
            last = 0  # the meter's last accepted counter, carried across its connections as the firmware does

            async def report(rig: LoopbackRig, frames: int) -> MeterClient:
                nonlocal last
                cl = await rig.connect(m, last_counter=last)
                for _ in range(frames):
                    cl.send(m.reading())
                want = m.seq.next - 1
                await cl.wait_for(lambda c: c.refused or (c.acked is not None and c.acked >= want))
                assert cl.refused == [], f"the meter refused {rig is a and 'A' or 'B'}'s acks: {cl.refused}"
                last = cl.last_counter
                cl.close()
                await asyncio.wait_for(cl.closed.wait(), 10)
                return cl

            await report(b, 2)  # B meets the meter (and remembers it)
            await report(a, 5)  # then A serves it: five acks, the counter moves on in the database
            await report(b, 3)  # back at B: B's acks must be above A's, or the meter refuses them as replays
            await report(a, 1)
            stored = a.store.frames_after(m.device_id, -1, limit=None)
            assert [f.seq for f in stored] == list(range(11))
            assert a.store.meter(m.device_id).last_counter == last
            # each connection's first frame has the meter read afresh: nothing found stale under the lock
            assert "meters_moved_elsewhere" not in a.conc.stats() | b.conc.stats()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_process_that_read_the_meter_at_start_reads_it_again_when_the_meter_first_comes_to_it(store_db):
    """B reads every registered meter when it starts; A then serves the meter (its counter moves on). When the
    meter fails over to B, B must not sign with the counter it read at start: neither the one recovery ack for a
    frame stored before B started (the meter resends it: its ack was lost) nor the acks of fresh frames (the
    failover torture found this: acks refused as replays, counter 1 after 17)."""
    async def main():
        db = store_db
        async with LoopbackRig(db) as a:
            m = SimMeter()
            a.register(m)

            async def serve(rig: LoopbackRig, frames: list[bytes], last: int, upto: int) -> int:
                cl = await rig.connect(m, last_counter=last)
                for f in frames:
                    cl.send(f)
                await cl.wait_for(lambda c: c.refused or (c.acked is not None and c.acked >= upto))
                assert cl.refused == [], f"the meter refused {rig.port}'s acks: {cl.refused}"
                cl.close()
                await asyncio.wait_for(cl.closed.wait(), 10)
                return cl.last_counter

            early = [m.reading() for _ in range(4)]
            last = await serve(a, early, 0, 3)
            # B and C read the meter (and its stored sequence numbers) when they start
            async with LoopbackRig(db, headend=a.headend, clock=a.clock) as b, \
                    LoopbackRig(db, headend=a.headend, clock=a.clock) as c:
                assert b.conc.devices.known(m.device_id).counter == c.conc.devices.known(m.device_id).counter == last
                last = await serve(a, [m.reading() for _ in range(3)], last, 6)  # A moves the counter on
                last = await serve(c, [m.reading()], last, 7)  # fresh frames on C
                last = await serve(b, [early[3]], last, 3)  # only a frame B knew stored: one recovery ack
                assert a.store.meter(m.device_id).last_counter == last

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_meter_live_on_two_processes_at_once_gets_only_fresh_acks(store_db):
    """An old connection the first concentrator has not seen die (a Wi-Fi meter's, half-open) and a new one
    through the load balancer to another: frames alternate between them. Every ack must verify on the meter and
    cover what is stored."""
    async def main():
        db = store_db
        async with LoopbackRig(db) as a:
            m = SimMeter()
            a.register(m)
            async with LoopbackRig(db, headend=a.headend, clock=a.clock) as b:
                ca = await a.connect(m)
                ca.send(m.reading())
                await ca.wait_ack(0)
                cb = await b.connect(m, last_counter=ca.last_counter)
                last, refused, lagging = ca.last_counter, [], []
                for i in range(6):
                    cl = (ca, cb)[i % 2]
                    cl.last_counter = last  # one meter: the last counter it accepted, whichever link
                    cl.send(m.reading())
                    n = len(cl.acks)
                    await cl.wait_for(lambda c, n=n: c.refused or len(c.acks) > n)
                    refused += cl.refused
                    cl.refused.clear()
                    if len(cl.acks) > n and cl.acks[-1] < m.seq.next - 1:
                        lagging.append((cl.acks[-1], m.seq.next - 1))
                    last = max(last, cl.last_counter)
                assert refused == [] and lagging == []
                # frames alternating on two live connections: each process found the other had moved it on
                assert a.conc.stats()["meters_moved_elsewhere"] >= 2 and b.conc.stats()["meters_moved_elsewhere"] >= 2

    asyncio.run(asyncio.wait_for(main(), 60))


# -- the store's side: what one process holds, another waits for or passes over

def _one_meter(db) -> tuple[Store, Store, bytes]:
    s1, s2 = open_store(db), open_store(db)
    rec = s1.register_meter(None, ec.generate_private_key(ec.SECP256R1()).public_key(), "m", 60, now=1.0)
    return s1, s2, rec.device_id


def _in_thread(db, fn) -> tuple[threading.Thread, threading.Event, list]:
    """fn(store) on a store of its own (another process's connection), in a thread; its transaction is rolled
    back when fn returns."""
    done, out = threading.Event(), []

    def run():
        s = open_store(db)
        try:
            out.append(fn(s))
            s.rollback()
        finally:
            s.close()
            done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done, out


def test_a_meter_held_by_one_process_waits_for_its_commit_and_then_shows_its_counter(store_db):
    """Two concentrators about to sign for one meter: the second gets the row only once the first committed,
    and then sees the counter the first used (never the same counter twice)."""
    s1, s2, dev = _one_meter(store_db)
    try:
        assert s1.lock_meters([dev]) == {dev: HeldMeter(0, None, 0)}
        s1.update_meter(dev, last_counter=7)
        t, done, out = _in_thread(store_db, lambda s: s.lock_meters([dev, b"\x00" * 8]))  # (an unknown id: left out)
        assert not done.wait(0.5), "the second process got the meter while the first held it"
        s1.commit()
        t.join(10)
        assert out == [{dev: HeldMeter(7, None, 0)}]
    finally:
        s1.close()
        s2.close()


def test_a_queued_command_is_worked_on_by_one_process_at_a_time(store_db):
    """While one concentrator holds a queue entry, another never gets it (PostgreSQL passes it over at once,
    SKIP LOCKED; SQLite waits for the write lock); once the first sent it and committed, the entry is read
    afresh with the first's attempt, and once answered nobody claims it."""
    s1, s2, dev = _one_meter(store_db)
    try:
        qid = s1.queue_command(dev, M.OP_BILLING_RESET, None, 10.0, 10_000)
        s1.commit()
        assert [q.id for q in s1.claim_queued([qid])] == [qid]
        s1.update_queued(qid, state="sent", counter=1, attempts=1, sent_at=11.0)
        t, done, out = _in_thread(store_db, lambda s: s.claim_queued([qid]))
        if is_url(store_db):
            t.join(10)
            assert out == [[]], "PostgreSQL: an entry another process holds is passed over"
        else:
            assert not done.wait(0.5), "SQLite: the second process got the queue while the first held it"
        s1.commit()
        t.join(10)
        if not is_url(store_db):
            assert [(q.state, q.attempts) for q in out[0]] == [("sent", 1)], "read afresh, after the first's commit"
        (q,) = s2.claim_queued([qid])
        assert (q.state, q.counter, q.attempts) == ("sent", 1, 1)
        s2.update_queued(qid, state="answered", answered_at=12.0, result=0)
        s2.commit()
        assert s1.claim_queued([qid]) == []
        s1.rollback()
    finally:
        s1.close()
        s2.close()
