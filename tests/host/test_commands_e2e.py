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
