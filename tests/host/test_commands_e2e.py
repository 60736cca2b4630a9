"""End to end: an operator's calendar command through the real concentrator to the real firmware (MicroPython
Unix port, a simulated meter over TCP on the fleet clock) and back: queued as `meterkit command calendar` queues
it, signed and sent when the meter connects, armed by the meter (result 0, event 12 CALENDAR_PASSIVE with the
activation instant), and activated at that instant (event 11 CALENDAR_ACTIVATED with the calendar's name)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meterkit.headend import commands as C
from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.store import open_store

# the two-rate night calendar of the examples (22:00-06:00 CET tariff 2)
NIGHT = json.loads((Path(__file__).resolve().parents[2] / "examples/tariffs/night-2rate.calendar.json").read_text())


def test_calendar_command_reaches_the_real_meter_and_its_answer_is_stored(tmp_path):
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=1)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=2.0, speed=1440.0)
    activation = fleet.start_unix + 3600  # an hour into the run

    async def scenario():
        await fleet.setup()
        try:
            [m] = fleet.meters
            qid = C.queue(fleet.store, m.device, C.OP_CALENDAR,
                          C.calendar_args(NIGHT, activation, fleet.start_unix), fleet.start_unix)
            await fleet.run(settle_s=3.0)
        finally:
            await fleet.close()
        return m, qid

    m, qid = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        [q] = db.queued_commands(ids=[qid])
        ev = [(e.code, e.value, e.time) for e in db.events(m.device, codes=(events.CALENDAR_PASSIVE,
                                                                            events.CALENDAR_ACTIVATED))]
    state, result, reason, attempts = q.state, q.result, q.reason, q.attempts
    assert (state, result, reason) == ("answered", 0, None), (state, result, reason, attempts)
    assert [(code, value) for code, value, _ in ev] == [(events.CALENDAR_PASSIVE, activation),
                                                        (events.CALENDAR_ACTIVATED, "two-rate night")]
    armed_at, activated_at = ev[0][2], ev[1][2]
    assert fleet.start_unix <= armed_at < activation <= activated_at


def test_a_signed_malformed_command_is_refused_by_the_running_meter(tmp_path, monkeypatch):
    """Issue 11, finding 3, end to end: the head-end key signs a billing reset that carries an unknown key (13), as
    the red team did; the real firmware refuses it with a signed answer (-5, "unknown key 13") and event 18, and
    takes no billing snapshot. The same command, exactly the schema, queued after it, is executed."""
    from meter import messages as M
    from meterkit.wire.headend import HeadEnd

    sign_command = HeadEnd.sign_command
    tampered = []

    def sign_with_key_13(self, device_id, counter, op, args, now, ttl_s):
        if op != C.OP_BILLING_RESET or tampered:
            return sign_command(self, device_id, counter, op, args, now, ttl_s)
        tampered.append(counter)  # the first billing reset only: a signed payload the schema does not have
        return self._sign(M.COMMAND, device_id, counter, now, ttl_s, {M.K_OP: op, 13: 1})

    monkeypatch.setattr(HeadEnd, "sign_command", sign_with_key_13)
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=1)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=1.0, speed=1440.0)

    async def scenario():
        await fleet.setup()
        try:
            [m] = fleet.meters
            now = fleet.start_unix
            ids = [C.queue(fleet.store, m.device, C.OP_BILLING_RESET, None, now) for _ in range(2)]
            await fleet.run(settle_s=3.0)
        finally:
            await fleet.close()
        return m, ids

    m, (bad, good) = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        qb, qg = db.queued_commands(ids=[bad, good])
        refused = [(e.code, e.value) for e in db.events(m.device, codes=(events.COMMAND_REFUSED,))]
        resets = [s for s in db.billing_snapshots(m.device) if s.period_end > fleet.start_unix]
        ends = [e.time for e in db.events(m.device, codes=(events.BILLING_END,)) if e.time > fleet.start_unix]
    assert tampered == [qb.counter]
    assert (qb.state, qb.result, qb.reason) == ("answered", M.RESULT_MALFORMED, "unknown key 13"), qb
    assert refused == [(events.COMMAND_REFUSED, "unknown key 13")]
    assert (qg.state, qg.result) == ("answered", M.RESULT_OK), qg
    assert len(resets) == 1 and len(ends) == 1, (resets, ends)  # the well-formed reset's snapshot, no other
    assert resets[0].period_end >= qb.answered_at - 120  # taken after the refusal (meters run up to 2 min ahead)
