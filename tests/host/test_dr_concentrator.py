"""A demand-response event through the real concentrator: real TCP on 127.0.0.1, a real SQLite file, meters that
speak the protocol (one signing and checking with the firmware's own code). `meterkit dr` writes from its own
database connection, as from its own process. Participation comes from what the concentrator stored: the
meters' signed answers and their DR_* events; a meter back after the event's end does not get it."""

from __future__ import annotations

import asyncio

from meter import messages
from meter import messages as M
from meter.events import DR_ACCEPTED, DR_OPT_OUT, DR_START
from meter.identity import Identity
from meterkit.dr import participation as PT
from meterkit.dr import programme
from meterkit.store import open_store
from meterkit.testing.rig import LoopbackRig, SimMeter, until

GROUP = 3


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_participation_from_answers_and_events_and_no_delivery_after_the_end(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            ident = Identity(str(tmp_path / "flash-a"))
            ident.install_headend(rig.headend.public_bytes)
            a = SimMeter(identity=ident, time_fn=lambda: int(rig.clock()))  # the firmware's own code
            b, c, d, e = (SimMeter(time_fn=lambda: int(rig.clock())) for _ in range(4))
            meters = {"a": a, "b": b, "c": c, "d": d, "e": e}
            rig.register(*meters.values())
            now = rig.clock()
            with open_store(rig.db_path) as s:
                for name, m in meters.items():
                    s.update_meter(m.device_id, name=name)
                    programme.set_groups(s, m.device_id, [GROUP], now, send=False)
                start = int(now) + 3600
                called = programme.call_event(s, GROUP, start, 7200, 300, False, now)
            ev = called.event
            assert len(called.targets) == 5
            qid = {t.device_id: t.queue_id for t in called.targets}

            async def receive(m: SimMeter):
                cl = await rig.connect(m)
                cl.send(m.hello())
                await cl.wait_for(lambda x: x.commands)
                cmd = cl.commands[0]
                assert cmd.body[M.K_OP] == M.OP_DR_EVENT
                assert cmd.body[M.K_ARGS] == {M.A_DR_ID: ev.id, M.A_START: start, M.A_DURATION_S: 7200,
                                              M.A_LIMIT_W: 300}
                return cl, cmd

            def state(m: SimMeter) -> str:
                return rig.store.queued_commands(ids=[qid[m.device_id]])[0].state

            # a: accepts (its firmware check passes the command), DR_ACCEPTED then its answer
            cl, cmd = await receive(a)
            kind, counter, _ = messages.verify_host(cmd.raw, a.identity, int(rig.clock()), 0)
            assert (kind, counter) == (M.COMMAND, cmd.counter)
            cl.send(a.event(DR_ACCEPTED, ev.id, int(rig.clock()), event_seq=1) + a.response(cmd.counter, 0))
            await until(lambda: state(a) == "answered")
            # b: refuses, with its reason
            cl, cmd = await receive(b)
            cl.send(b.response(cmd.counter, M.RESULT_REJECTED, "no limiter in control mode 0"))
            await until(lambda: state(b) == "answered")
            # c: accepts; at the start its DR_START, ten minutes in the customer's button: DR_OPT_OUT
            cl_c, cmd = await receive(c)
            cl_c.send(c.response(cmd.counter, 0))
            await until(lambda: state(c) == "answered")
            # d: the command goes out, the link drops before any answer
            cl, cmd = await receive(d)
            cl.close()
            rig.clock.advance(3600)
            cl_c.send(c.event(DR_START, ev.id, start, event_seq=1) + c.event(DR_OPT_OUT, ev.id, start + 600,
                                                                              event_seq=2))
            await until(lambda: len(rig.store.events(c.device_id)) == 2)
            mid = PT.participation(rig.store, ev, rig.clock())
            assert {p.name: p.state for p in mid}["e"] == "pending"
            # past the end: e was never reached, and when it comes back it does not get the event
            rig.clock.advance(7200 + 1)
            rig.conc.tick()
            cl = await rig.connect(e)
            cl.send(e.hello())
            await cl.wait_ack(0)
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert cl.commands == []
            parts = {p.name: p for p in PT.participation(rig.store, ev, rig.clock())}
            assert {n: p.state for n, p in parts.items()} == {"a": "accepted", "b": "refused", "c": "opted out",
                                                               "d": "not reached", "e": "not reached"}
            assert parts["a"].accepted_at is not None
            assert parts["b"].reason == "no limiter in control mode 0"
            assert (parts["c"].started_at, parts["c"].opted_out_at) == (start, start + 600)
            assert parts["d"].reason == "expired unanswered after 1 attempt(s)"
            assert parts["e"].reason == "expired before the meter could be reached"
            assert PT.tally(list(parts.values())) == {"accepted": 1, "opted out": 1, "refused": 1, "pending": 0,
                                                      "not reached": 2}

    run(main())
