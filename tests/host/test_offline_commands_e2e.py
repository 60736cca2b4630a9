"""End to end, issue 12's offline meters: commands queued while a real meter (MicroPython Unix port, over TCP on
the fleet clock) is cut off from the concentrator, and the concentrator restarted meanwhile. The disconnect is
delivered once the meter is back and executed exactly once; a limiter command whose expiry passes while the
meter is away expires and is never executed."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit.headend import commands as C
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store

CUT_H, QUEUE_H, RESTART_H, EXPIRES_H, BACK_H = 0.5, 0.75, 1.0, 1.25, 1.5


def test_commands_for_an_offline_meter_are_delivered_once_when_it_returns_or_expire(tmp_path):
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=3)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=3.0, speed=1440.0)
    fleet.at(CUT_H, "cut_link", "house")
    fleet.at(RESTART_H, "restart_concentrator", "")
    fleet.at(BACK_H, "restore_link", "house")

    async def operator(fleet: Fleet) -> list[int]:
        dev, start = fleet.meters[0].device, fleet.start_unix
        ids = [C.queue(fleet.store, dev, M.OP_CONFIG, {M.A_CONTROL_MODE: 4}, start, by="e2e")]
        while fleet.clock.hours() < QUEUE_H:
            await asyncio.sleep(0.02)
        now = fleet.clock()
        ids.append(C.queue(fleet.store, dev, M.OP_DISCONNECT, None, now, by="e2e"))
        ids.append(C.queue(fleet.store, dev, M.OP_LIMITER, {M.A_THRESHOLD_NORMAL: 1000}, now,
                           expires=int(start + EXPIRES_H * 3600), by="e2e"))
        return ids

    ids = run_fleet(fleet, alongside=operator)
    [m] = fleet.meters
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    assert any("restart_concentrator" in line for line in fleet.log), fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        config, disconnect, limiter = db.queued_commands(ids=ids)
        moves = [(e.value, e.time) for e in db.events(m.device, codes=(events.DISCONNECT_CONTROL,))]
        limits = db.events(m.device, codes=(events.LIMITER_SET,))
        audit = [(a.action, a.result) for a in db.audit(m.device) if a.queue_id == disconnect.id]
    assert (config.state, config.result) == ("answered", 0), config
    assert (disconnect.state, disconnect.result) == ("answered", 0), disconnect
    assert [v for v, _ in moves] == ["b 1>0"], moves  # once, not once per attempt or per concentrator
    assert moves[0][1] >= fleet.start_unix + BACK_H * 3600, moves  # executed after the meter came back
    assert limiter.state == "expired" and limiter.result is None and limits == [], (limiter, limits)
    # the audit log: queued, sent at least once, answered once (an attempt lost with the link is sent again)
    assert audit[0] == ("queued", None) and audit.count(("answered", 0)) == 1, audit
    assert not [a for a in audit if a[0] not in ("queued", "sent", "answered")], audit
