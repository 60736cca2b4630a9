"""Two concentrators on one database, a SQLite file or PostgreSQL (what several head-end processes behind a
load balancer are): a meter that moves from one to the other and back is served with the state the other left
in the database, not with what the first remembered. Its acknowledgements stay fresh (command counters above
the last it accepted) and nothing it sent is stored twice."""

from __future__ import annotations

import asyncio

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

    asyncio.run(asyncio.wait_for(main(), 60))
