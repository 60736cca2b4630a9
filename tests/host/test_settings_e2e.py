"""Ops 11 and 12 end to end (issue 12), the real firmware (MicroPython Unix port, simulated meters over TCP on
the fleet clock) and the real concentrator.

Head-end key rotation: a rotation is queued for every meter as `meterkit keys rotate` queues it; one meter is
offline while it goes out and gets it when its link returns. Each meter's rotation is signed with the old key,
its answer moves it to the new one, and from then on its commands and acknowledgements are signed with the new
key and taken: a billing reset queued behind the rotation is executed, and the meters' outboxes empty (every
frame acknowledged under the key each meter holds)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit.headend import commands as C
from meterkit.headend import keyring
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store
from meterkit.wire.headend import HeadEnd
from meterkit.wire.keys import key_id


def test_a_key_rotation_reaches_every_meter_and_only_the_new_key_is_used_after(tmp_path):
    old = ec.generate_private_key(ec.SECP256R1())
    new = HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    old_kid = key_id(old.public_key())
    fleet = Fleet(tmp_path, [MeterSpec("a", "constant", "tcp", seed=1), MeterSpec("b", "constant", "tcp", seed=2)],
                  old, tmp_path / "db.sqlite", hours=1.5, speed=1440.0)
    back_h = 0.75
    fleet.at(back_h, "restore_link", "b")

    def before(fleet):
        a, b = fleet.meters
        b.cut_link()  # b is offline while the rotation goes out
        fleet.conc.headend.add(new)  # the concentrator holds both keys during the rotation (--key twice)
        now = fleet.start_unix
        rot = keyring.rotate(fleet.store, old_kid, new.public_bytes, now)
        resets = [C.queue(fleet.store, m.device, C.OP_BILLING_RESET, None, now) for m in (a, b)]
        return a, b, rot, resets, keyring.status(fleet.store, old_kid)

    a, b, rot, resets, mid = run_fleet(fleet, before=before)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    assert [(r["kid"], r["rotating_to"]) for r in mid] == [(old_kid.hex(), new.key_id.hex())] * 2
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        qs = db.queued_commands(ids=rot + resets)
        held = db.meter_keys()
        rotated = {m.device: [e.value for e in db.events(m.device, codes=(events.KEY_ROTATED,))] for m in (a, b)}
        after = keyring.status(db, old_kid)
    ra, rb, ba, bb = qs
    for q in qs:
        assert (q.state, q.result) == ("answered", M.RESULT_OK), q
    assert {dev: kid for dev, (kid, _since) in held.items()} == {a.device: new.key_id, b.device: new.key_id}
    assert rotated == {a.device: [new.key_id.hex()], b.device: [new.key_id.hex()]}
    assert [(r["kid"], r["rotating_to"]) for r in after] == [(new.key_id.hex(), None)] * 2
    # b got it when it came back, after a had rotated
    assert ra.answered_at < fleet.start_unix + back_h * 3600 <= rb.answered_at + 120, (ra, rb)
    # the billing resets came after the rotations, signed with the new key (a meter takes no other now)
    assert ba.sent_at >= ra.answered_at and bb.sent_at >= rb.answered_at
    for m in (a, b):
        last = m.runs[-1]
        assert last["outbox_held"] == 0, (m.spec.name, last.get("link"))  # every frame acknowledged


def test_a_reboot_is_answered_then_the_real_meter_restarts_once(tmp_path):
    """Op 11 end to end: the answer (result 0) and event 30 are stored, the firmware ends its run as a board
    restart, the fleet boots it again from its flash, and a billing reset queued behind the reboot is executed
    once (the reboot did not run again after the restart: its counter was stored before it acted)."""
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=1)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=1.0, speed=1440.0)

    def before(fleet):
        [m] = fleet.meters
        return m, [C.queue(fleet.store, m.device, op, None, fleet.start_unix) for op in (C.OP_REBOOT,
                                                                                        C.OP_BILLING_RESET)]

    m, ids = run_fleet(fleet, before=before)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        reboot, reset = db.queued_commands(ids=ids)
        evs = [e.code for e in db.events(m.device, codes=(events.REBOOT, events.POWER_UP, events.BILLING_END))]
    assert (reboot.state, reboot.result, reboot.attempts) == ("answered", M.RESULT_OK, 1), reboot
    assert (reset.state, reset.result) == ("answered", M.RESULT_OK), reset
    assert m.restarts == 1
    # two boots, one reboot between them, the billing reset once (before or after the restart: it may arrive
    # with the acknowledgement the meter waits for)
    assert evs[0] == events.POWER_UP, evs
    assert sorted(evs) == sorted([events.POWER_UP, events.REBOOT, events.POWER_UP, events.BILLING_END]), evs
    assert evs.index(events.REBOOT) < len(evs) - 1 - evs[::-1].index(events.POWER_UP), evs


def test_a_configuration_reaches_the_real_meter_and_its_readings_follow(tmp_path):
    """Op 10 end to end: queued as `meterkit config` queues it (reading interval 120 s, control mode 3), answered
    0 with event 28 naming both keys, and the readings after it come every 120 s instead of every 60 s."""
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=1)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=1.0, speed=1440.0)

    def before(fleet):
        [m] = fleet.meters
        args = C.config_args(reading_s=120, control_mode=3)
        return m, C.queue(fleet.store, m.device, C.OP_CONFIG, args, fleet.start_unix)

    m, qid = run_fleet(fleet, before=before)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        [q] = db.queued_commands(ids=[qid])
        ev = [(e.value, e.time) for e in db.events(m.device, codes=(events.CONFIG_SET,))]
        times = [r[2] for r in db.export("readings", m.device)[1]]
    assert (q.state, q.result, q.reason) == ("answered", M.RESULT_OK, None), q
    assert [v for v, _ in ev] == [f"{M.A_READING_S},{M.A_CONTROL_MODE}"]
    assert fleet.reading_s == 60  # what the meter was started with (sim/run.py --reading-s)
    after = [t for t in times if t > ev[0][1] + 120]
    assert len(after) > 10, after
    assert {b // 120 - a // 120 for a, b in zip(after, after[1:], strict=False)} == {1}, after  # one per 120 s
