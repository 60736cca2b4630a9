"""Operator commands through the real concentrator: real TCP on 127.0.0.1, a real SQLite file, meters that speak
the protocol (frames built and signed by the firmware's own code, or by `cryptography` with the same bytes) and
check every head-end message as a meter must (protocol.verify_host_message, meter.messages.verify_host).

The queue is written by a second database connection, as `meterkit command` does from its own process. Time for
expiry and repeats comes from a manual clock; the concentrator's housekeeping runs when a test calls tick()."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meter import cbor as mcbor
from meter import messages
from meter import messages as M
from meter.frame import HOST_MAX_FRAME, Deframer, encode_frame
from meter.identity import Identity
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.store import open_store
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until

# the two-rate night calendar of the examples (22:00-06:00 CET tariff 2)
NIGHT = json.loads((Path(__file__).resolve().parents[2] / "examples/tariffs/night-2rate.calendar.json").read_text())
CALENDAR_PASSIVE = 12  # the meter's event when it arms a passive calendar (value: the activation instant)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def real_meter(tmp_path, name: str, rig: LoopbackRig) -> SimMeter:
    ident = Identity(str(tmp_path / f"flash-{name}"))
    ident.install_headend(rig.headend.public_bytes)
    return SimMeter(identity=ident, time_fn=lambda: int(rig.clock()))


def sim_meter(rig: LoopbackRig) -> SimMeter:
    return SimMeter(time_fn=lambda: int(rig.clock()))


def queue(rig: LoopbackRig, dev: bytes, op: int, args: dict | None, expires: int | None = None) -> int:
    """Queue as `meterkit command` does: its own connection to the database file."""
    with open_store(rig.db_path) as s:
        return C.queue(s, dev, op, args, rig.clock(), expires)


def entry(rig: LoopbackRig, qid: int):
    return rig.store.queued_commands(ids=[qid])[0]


def billing_frame(m: SimMeter, t: int) -> bytes:
    return m.frame(M.BILLING, 0, {6: t, 7: {M.OBIS_IMPORT: 1234, M.OBIS_EXPORT: 5}})


# --- delivery and answers -------------------------------------------------------------------------------------


def test_calendar_sent_when_the_meter_connects_and_its_answer_stored(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            activation = T0 + 86400
            qid = queue(rig, m.device_id, C.OP_CALENDAR, C.calendar_args(NIGHT, activation, rig.clock()))
            rig.conc.tick()  # the meter is not connected: nothing can go out
            assert entry(rig, qid).state == "queued"
            cl = await rig.connect(m)
            cl.send(m.hello())  # the concentrator knows who is on the line from its first valid frame
            await cl.wait_for(lambda c: c.commands)  # at once, no housekeeping tick needed
            cmd = cl.commands[0]
            assert cmd.kind == M.COMMAND and cmd.body[M.K_OP] == C.OP_CALENDAR
            assert cmd.body[M.K_ARGS] == {1: NIGHT, 2: activation}
            assert cl.refused == [] and cmd.counter >= 1  # a meter accepts it (counter above its last)
            # the firmware's own check accepts it: a whole calendar in one command
            kind, counter, payload = messages.verify_host(cmd.raw, m.identity, int(rig.clock()), 0)
            assert (kind, counter, payload[messages.K_OP]) == (messages.COMMAND, cmd.counter, C.OP_CALENDAR)
            assert payload[messages.K_ARGS] == {1: NIGHT, 2: activation}
            q = entry(rig, qid)
            assert (q.state, q.counter, q.attempts, q.sent_at) == ("sent", cmd.counter, 1, rig.clock())
            # the meter arms it: event 12 (activation), then its response
            cl.send(m.event(CALENDAR_PASSIVE, activation, int(rig.clock()), event_seq=1)
                    + m.response(cmd.counter, 0))
            await until(lambda: entry(rig, qid).state == "answered")
            q = entry(rig, qid)
            assert (q.result, q.reason, q.counter, q.answered_at) == (0, None, cmd.counter, rig.clock())
            ev = rig.store.events(m.device_id)
            assert [(e.code, e.value) for e in ev] == [(CALENDAR_PASSIVE, activation)]
            attempts = [(a.counter, a.sent_at, a.expires_at, a.answered_at, a.result, a.reason)
                        for a in rig.store.command_attempts(qid)]
            assert attempts == [(cmd.counter, q.sent_at, q.sent_at + 300, q.answered_at, 0, None)]
            s = rig.conc.stats()
            assert s["operator_commands_sent"] == 1 and s["operator_commands_answered"] == 1
            assert s.get("responses_unmatched", 0) == 0
            rig.clock.advance(3600)
            rig.conc.tick()
            assert len(cl.commands) == 1  # answered: never sent again

    run(main())


def test_one_command_in_flight_per_meter_oldest_first(store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = sim_meter(rig)
            rig.register(m)
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_ack(0)
            # queued while the meter is connected: the next housekeeping tick sends it
            q1 = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
            q2 = queue(rig, m.device_id, C.OP_PROFILE, C.profile_args(T0 - 1800, T0))
            assert cl.commands == []
            rig.conc.tick()
            await cl.wait_for(lambda c: c.commands)
            await asyncio.sleep(0.05)
            assert len(cl.commands) == 1 and cl.commands[0].body[M.K_OP] == C.OP_BILLING_RESET
            assert M.K_ARGS not in cl.commands[0].body  # no arguments: key 11 left out
            assert entry(rig, q2).state == "queued"
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert len(cl.commands) == 1  # still one in flight
            # the meter closes its billing period, answers; the answer frees it for the next command at once
            cl.send(billing_frame(m, int(rig.clock())) + m.response(cl.commands[0].counter, 0))
            await cl.wait_for(lambda c: len(c.commands) == 2)
            cmd = cl.commands[1]
            assert (cmd.body[M.K_OP], cmd.body[M.K_ARGS]) == (C.OP_PROFILE, {1: T0 - 1800, 2: T0})
            assert cmd.counter > cl.commands[0].counter
            # rows resent as new interval frames; one of them the head-end already had (deduplicated)
            cl.send(m.intervals([[T0 - 1800, 100, 0, 0]]))
            await cl.wait_ack(3)
            cl.send(m.intervals([[T0 - 1800, 100, 0, 0], [T0 - 900, 150, 0, 0], [T0, 210, 0, 0]])
                    + m.response(cmd.counter, 0, "3 rows"))
            await until(lambda: entry(rig, q2).state == "answered")
            assert (entry(rig, q1).result, entry(rig, q2).result, entry(rig, q2).reason) == (0, 0, "3 rows")
            assert [r.end for r in rig.store.interval_rows(m.device_id, 0)] == [T0 - 1800, T0 - 900, T0]
            assert len(list(rig.store.export("billing")[1])) == 1
            assert cl.refused == []

    run(main())


def test_expired_command_is_not_sent(store_db, caplog):
    async def main():
        async with LoopbackRig(store_db, command_attempts=10) as rig:
            m = sim_meter(rig)
            rig.register(m)
            late = queue(rig, m.device_id, C.OP_BILLING_RESET, None, expires=int(rig.clock()) + 100)
            rig.clock.advance(101)
            with caplog.at_level(logging.WARNING, logger="meterkit.headend"):
                cl = await rig.connect(m)
                cl.send(m.reading())
                await cl.wait_ack(0)
                rig.conc.tick()
                await asyncio.sleep(0.05)
            assert cl.commands == []
            q = entry(rig, late)
            assert (q.state, q.attempts, q.reason) == ("expired", 0, "expired before the meter could be reached")
            assert f"command #{late} (billing-reset) expired" in caplog.text
            # sent, never answered, and its expiry passes: expired, and not sent again
            q2 = queue(rig, m.device_id, C.OP_BILLING_RESET, None, expires=int(rig.clock()) + 400)
            rig.conc.tick()
            await cl.wait_for(lambda c: c.commands)
            rig.clock.advance(401)
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert len(cl.commands) == 1
            q = entry(rig, q2)
            assert (q.state, q.attempts, q.reason) == ("expired", 1, "expired unanswered after 1 attempt(s)")
            # an answer that arrives after all is the truth: recorded
            cl.send(m.response(cl.commands[0].counter, 0))
            await until(lambda: entry(rig, q2).state == "answered")
            assert rig.conc.stats()["operator_commands_expired"] == 2

    run(main())


def test_reconnect_before_the_answer_the_meter_had_acted(store_db):
    """The connection drops after the command went out. The meter had acted on it: its answer is in its outbox
    and comes on the next connection. The head-end waits for it and does not send the command again (a billing
    reset must not run twice)."""
    async def main():
        async with LoopbackRig(store_db, backfill_after=30) as rig:
            m = sim_meter(rig)
            rig.register(m)
            qid = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            first = cl.commands[0]
            made = [billing_frame(m, int(rig.clock())), m.response(first.counter, 0)]  # made, never delivered
            cl.close()
            await until(lambda: rig.conc.stats()["connections_open"] == 0)
            rig.clock.advance(5)
            cl2 = await rig.connect(m, last_counter=cl.last_counter)
            cl2.send(m.reading())
            await cl2.wait_ack(0)
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert cl2.commands == []  # the meter's own resend has its chance first
            cl2.send(b"".join(made))
            await until(lambda: entry(rig, qid).state == "answered")
            rig.clock.advance(60)
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert cl2.commands == []
            q = entry(rig, qid)
            assert (q.attempts, q.counter, q.result) == (1, first.counter, 0)

    run(main())


def test_reconnect_before_the_answer_command_lost_is_sent_again_with_a_new_counter(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=30) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            qid = queue(rig, m.device_id, C.OP_PROFILE, C.profile_args(T0 - 3600, T0))
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            first = cl.commands[0]
            cl.close()  # the command was lost with the connection: the meter never saw it
            await until(lambda: rig.conc.stats()["connections_open"] == 0)
            cl2 = await rig.connect(m, last_counter=cl.last_counter)
            cl2.send(m.reading())
            await cl2.wait_ack(1)
            rig.clock.advance(29)
            rig.conc.tick()
            await asyncio.sleep(0.05)
            assert cl2.commands == []  # not before command_retry_after on the new connection
            rig.clock.advance(2)
            rig.conc.tick()
            await cl2.wait_for(lambda c: c.commands)
            again = cl2.commands[0]
            assert again.body == first.body | {M.K_EXPIRES: again.body[M.K_EXPIRES]}  # the same command
            assert again.counter > first.counter and again.counter > cl.last_counter and cl2.refused == []
            kind, counter, _ = messages.verify_host(again.raw, m.identity, int(rig.clock()), cl.last_counter)
            assert counter == again.counter
            cl2.send(m.intervals([[T0, 500, 0, 0]]) + m.response(again.counter, 0, "1 rows"))
            await until(lambda: entry(rig, qid).state == "answered")
            q = entry(rig, qid)
            assert (q.attempts, q.counter, q.result, q.reason) == (2, again.counter, 0, "1 rows")
            attempts = rig.store.command_attempts(qid)
            assert [(a.counter, a.result) for a in attempts] == [(first.counter, None), (again.counter, 0)]

    run(main())


def test_answer_after_a_concentrator_restart_and_repeat_never_reuses_a_counter(store_db):
    async def main():
        rig = await LoopbackRig(store_db, backfill_after=10).start()
        m = sim_meter(rig)
        rig.register(m)
        q1 = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
        q2 = queue(rig, m.device_id, C.OP_PROFILE, C.profile_args(T0 - 60, T0))
        cl = await rig.connect(m)
        cl.send(m.reading())
        await cl.wait_for(lambda c: c.commands)
        c1 = cl.commands[0].counter
        await rig.restart()  # the head-end restarts with the command unanswered
        cl2 = await rig.connect(m, last_counter=cl.last_counter)
        cl2.send(billing_frame(m, int(rig.clock())) + m.response(c1, 0))  # the meter's outbox still had it
        await until(lambda: rig.store.queued_commands(ids=[q1])[0].state == "answered")
        await cl2.wait_for(lambda c: c.commands)  # and the next one goes out, with a counter above c1
        assert cl2.commands[0].body[M.K_OP] == C.OP_PROFILE and cl2.commands[0].counter > c1
        await rig.restart()  # again, and this time the meter never saw the command
        cl3 = await rig.connect(m, last_counter=cl2.last_counter)
        cl3.send(m.reading())
        await cl3.wait_ack(m.seq.next - 1)
        rig.clock.advance(11)
        rig.conc.tick()
        await cl3.wait_for(lambda c: c.commands)
        assert cl3.commands[0].counter > cl2.last_counter and cl3.refused == []
        q = rig.store.queued_commands(ids=[q2])[0]
        assert (q.state, q.attempts, q.counter) == ("sent", 2, cl3.commands[0].counter)
        await rig.stop()

    run(main())


def test_forged_unsolicited_and_repeated_responses_change_nothing(store_db, caplog):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = sim_meter(rig)
            rig.register(m)
            qid = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            counter = cl.commands[0].counter
            # forged: the meter's id and a right counter, signed by someone else's key
            mallory = ec.generate_private_key(ec.SECP256R1())
            payload = {1: M.RESPONSE, 2: m.device_id, 3: 77, 4: int(rig.clock()), 5: 0, 6: counter, 7: -4,
                       8: "rejected: forged"}
            forged = P.sign1(mallory, m.device_id, mcbor.encode(payload))
            with caplog.at_level(logging.WARNING, logger="meterkit.headend"):
                cl.send(encode_frame(forged))
                await until(lambda: rig.conc.stats()["rejects"].get("bad-signature") == 1)
                # unsolicited: a genuine frame answering a counter never sent to this meter
                cl.send(m.response(counter + 1000, 0))
                await until(lambda: rig.conc.stats().get("responses_unmatched") == 1)
            assert f"response to command {counter + 1000}, which was never sent to it: ignored" in caplog.text
            assert "bad-signature" in caplog.text
            q = entry(rig, qid)
            assert (q.state, q.result) == ("sent", None)
            # the genuine answer, then the same answer again (its frame resent with a new seq): first one kept
            cl.send(m.response(counter, 0))
            await until(lambda: entry(rig, qid).state == "answered")
            cl.send(m.response(counter, -3, "bad arguments"))
            await until(lambda: rig.conc.stats().get("responses_duplicate") == 1)
            q = entry(rig, qid)
            assert (q.state, q.result, q.reason) == ("answered", 0, None)
            s = rig.conc.stats()
            assert s["operator_commands_answered"] == 1 and s["responses_unmatched"] == 1

    run(main())


def test_unanswered_command_repeated_then_failed_and_the_next_goes(store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=5, command_ttl_s=100,
                               command_attempts=2) as rig:
            m = sim_meter(rig)
            rig.register(m)
            q1 = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
            q2 = queue(rig, m.device_id, C.OP_PROFILE, C.profile_args(T0, T0))
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_for(lambda c: len(c.commands) == 1)
            rig.clock.advance(50)
            rig.conc.tick()  # its signed expiry has not passed: still on its way
            await asyncio.sleep(0.05)
            assert len(cl.commands) == 1
            rig.clock.advance(51)
            rig.conc.tick()
            await cl.wait_for(lambda c: len(c.commands) == 2)
            assert cl.commands[1].counter > cl.commands[0].counter
            assert cl.commands[1].body[M.K_OP] == C.OP_BILLING_RESET
            rig.clock.advance(101)
            rig.conc.tick()
            await cl.wait_for(lambda c: len(c.commands) == 3)
            q = entry(rig, q1)
            assert (q.state, q.attempts, q.reason) == ("failed", 2, "no answer after 2 attempts")
            assert cl.commands[2].body[M.K_OP] == C.OP_PROFILE and entry(rig, q2).state == "sent"
            assert rig.conc.stats()["operator_commands_failed"] == 1 and cl.refused == []

    run(main())


def test_a_queue_entry_a_meter_would_refuse_is_never_signed(tmp_path, store_db, caplog):
    """Another writer of the queue (past `meterkit command`'s checks) puts in a billing reset with an argument a
    meter does not take: the concentrator does not sign it (meter.cmdschema, issue 11 finding 3), spends no
    counter on it, and goes on with the next command."""
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            with open_store(rig.db_path) as s:
                bad = s.queue_command(m.device_id, C.OP_BILLING_RESET, {13: 1}, rig.clock(), T0 + 86400)
                s.commit()
            good = queue(rig, m.device_id, C.OP_BILLING_RESET, None)
            cl = await rig.connect(m)
            cl.send(m.hello())
            await cl.wait_for(lambda c: c.commands)
            assert entry(rig, bad).state == "failed"
            assert "unknown key 13: a meter would refuse it" in entry(rig, bad).reason
            [cmd] = cl.commands
            assert cmd.body[M.K_OP] == C.OP_BILLING_RESET and M.K_ARGS not in cmd.body
            assert entry(rig, good).counter == cmd.counter
            assert rig.store.command_attempts(bad) == []  # nothing signed, no counter spent on it
            messages.verify_host(cmd.raw, m.identity, int(rig.clock()), 0)  # the meter takes this one

    with caplog.at_level("ERROR"):
        run(main())
    assert any("unknown key 13" in r.getMessage() for r in caplog.records)


# --- big calendars ------------------------------------------------------------------------------------------


class RawClient(asyncio.Protocol):
    """A meter's link that reads head-end frames up to the command size limit and keeps them raw."""

    def __init__(self):
        self.deframer = Deframer(max_frame=C.MAX_COMMAND_MESSAGE)
        self.frames: list[bytes] = []
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.frames.extend(self.deframer.feed(data))


def test_calendar_bigger_than_a_meter_frame_goes_out_whole_and_oversize_fails(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = real_meter(tmp_path, "m", rig)
            rig.register(m)
            big = copy.deepcopy(NIGHT)
            big["special"] = [{"name": f"holiday {i}", "date": [2027, 1 + i // 28, 1 + i % 28], "day": "d"}
                              for i in range(40)]
            args = C.calendar_args(big, T0 + 86400, rig.clock())
            assert 1024 < C.payload_bound(C.OP_CALENDAR, args) <= C.MAX_COMMAND_PAYLOAD
            qid = queue(rig, m.device_id, C.OP_CALENDAR, args)
            # past the checks of `meterkit command` (another writer): too big for any meter
            huge = copy.deepcopy(big)
            huge["special"] = [dict(x, date=[2028, *x["date"][1:]]) for x in big["special"]] + big["special"]
            with open_store(rig.db_path) as s:
                too_big = s.queue_command(m.device_id, C.OP_CALENDAR, {1: huge, 2: T0 + 86400}, rig.clock(),
                                          T0 + 86400)
                s.commit()
            loop = asyncio.get_running_loop()
            _, cl = await loop.create_connection(RawClient, rig.host, rig.port)
            cl.transport.write(m.reading())
            await until(lambda: any(len(f) > 1024 for f in cl.frames))
            cose = next(f for f in cl.frames if len(f) > 1024)
            tag = cbor2.loads(cose)
            payload, sig = tag.value[2], tag.value[3]
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            rig.headend.public_key.verify(der, P.sig_structure(payload), ec.ECDSA(hashes.SHA256()))
            body = cbor2.loads(payload)
            assert body[10] == C.OP_CALENDAR and body[11] == {1: big, 2: T0 + 86400}
            assert len(payload) == C.payload_size(cose) <= C.MAX_COMMAND_PAYLOAD
            assert len(cose) <= C.MAX_COMMAND_MESSAGE <= HOST_MAX_FRAME  # the meter's deframer takes it
            _, _, fw = messages.verify_host(cose, m.identity, int(rig.clock()), 0)  # the meter's own check
            assert fw[messages.K_ARGS] == {1: big, 2: T0 + 86400}
            assert entry(rig, qid).state == "sent"
            cl.transport.write(m.response(body[3], 0))
            await until(lambda: entry(rig, qid).state == "answered")
            await until(lambda: entry(rig, too_big).state == "failed")  # its turn came: it cannot be sent
            assert "a meter decodes at most 512" in entry(rig, too_big).reason
            # which is what the meter would have said: its decoder refuses that many items
            refused = rig.headend.sign_command(m.device_id, body[3] + 1, C.OP_CALENDAR, {1: huge, 2: T0 + 86400},
                                               int(rig.clock()), 300)
            with pytest.raises(messages.HostMessageError, match="more than 512 data items"):
                messages.verify_host(refused, m.identity, int(rig.clock()), 0)
            cl.transport.close()

    run(main())


# --- load-profile rows in frames the meter no longer holds ------------------------------------------------------


@pytest.mark.parametrize("has_rows", [True, False])
def test_rows_of_gone_frames_are_asked_for_from_the_profile(store_db, has_rows):
    """A frame with a load-profile row is lost on the way and the meter's outbox has dropped it (back-fill answer
    -1, gone). The row itself may still be in the meter's profile ring: the concentrator asks for it by time
    (op 4) and records the interval gap as filled when it comes (or lost when the meter has it no more)."""
    async def main():
        async with LoopbackRig(store_db, backfill_after=10) as rig:
            m = sim_meter(rig)
            rig.register(m)
            f = [m.intervals([[900 * k, 10 * k, 0, 0]]) for k in (1, 2, 3)]
            cl = await rig.connect(m)
            cl.send(f[0] + f[2])  # the frame with row 1800 never arrives
            await until(lambda: rig.store.max_seq(m.device_id) == 2)
            rig.conc.tick()
            [ig] = rig.store.gaps(m.device_id, "intervals")
            assert (ig.first, ig.last, ig.state) == (1800, 1800, "open")
            rig.clock.advance(11)
            rig.conc.tick()
            await cl.wait_for(lambda c: c.commands)
            bf = cl.commands[0]
            assert (bf.body[M.K_OP], bf.body[M.K_ARGS]) == (1, {1: 1, 2: 1})
            cl.send(m.response(bf.counter, -1, "gone 1..1"))
            await cl.wait_ack(3)
            assert [g.state for g in rig.store.gaps(m.device_id, "frames")] == ["lost"]
            rig.conc.tick()  # the rows of the gone frame are asked for from the profile, and the request goes out
            await cl.wait_for(lambda c: len(c.commands) == 2)
            pr = cl.commands[1]
            assert (pr.body[M.K_OP], pr.body[M.K_ARGS]) == (C.OP_PROFILE, {1: 1800, 2: 1800})
            [q] = rig.store.queued_commands(m.device_id)
            assert (q.note, q.state) == (f"interval gap {ig.id}", "sent")
            assert rig.store.gaps(m.device_id, "intervals")[0].state == "requested"
            if has_rows:
                cl.send(m.intervals([[1800, 20, 0, 0]]) + m.response(pr.counter, 0, "1 rows"))
            else:
                cl.send(m.response(pr.counter, -1, "no rows"))
            await until(lambda: rig.store.queued_commands(m.device_id)[0].state == "answered")
            rig.conc.tick()
            [ig] = rig.store.gaps(m.device_id, "intervals")
            if has_rows:
                assert (ig.state, ig.missing) == ("filled", 0)
                assert [r.end for r in rig.store.interval_rows(m.device_id, 0)] == [900, 1800, 2700]
            else:
                assert (ig.state, ig.missing) == ("lost", 1)
            s = rig.conc.stats()
            assert s["interval_gaps_requested"] == 1 and s.get("interval_gaps_not_sent", 0) == 0
            assert s.get("interval_gaps_filled" if has_rows else "interval_gaps_lost") == 1
            assert cl.refused == []

    run(main())
