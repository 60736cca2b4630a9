"""End to end, issue 15's signed firmware updates: six real firmware meters (MicroPython Unix port, simulated
INA219, TCP through the fleet's proxies) and a real concentrator; updates signed with a firmware key that is not
the head-end's, delivered in chunks through the command queue, rolled out in waves by meterkit.firmware.rollout.

One fleet run, in order: a bad signature, the wrong board and a truncated image are refused by the canary (each
halts its rollout); a firmware-key rotation signed by the head-end's key is refused; one signed by the current
firmware key is installed on all six in waves, after which an image signed by the old key is refused; a good
image signed by the new key lands on all six in waves (a canary, then five), with a power cut on one meter
and a link cut on another in the middle of their deliveries (both resume); an older sequence number (the
rotation's, used up) is then refused; an image that crashes at boot is rolled back on the canary and the rollout
halts before the rest. The meters always run a good image: the last hello of every meter names v2."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events as E
from meterkit.firmware import image as I
from meterkit.firmware.rollout import Rollout
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store
from meterkit.wire.keys import key_id, public_bytes

BOARD = "unix-sim/x64"  # the fleet's meters: the unix-sim profile, compiled for x64 (meter.fwupdate.class_id)
NAMES = [f"m{i}" for i in range(1, 7)]


def _image(version: str, code: str | None = None, pad: int = 6000) -> bytes:
    return I.pack_files({"fwimage.py": (code or f"VERSION = {version!r}\n").encode(), "pad.bin": b"\xa5" * pad})


def _chunks_answered(store, dev: bytes, ids: list[int]) -> int:
    return sum(q.state == "answered" for q in store.queued_commands(dev) if q.id in set(ids))


async def _rollout(fleet: Fleet, update: I.Update, devices: list[bytes], timeout_h: float, during=None) -> Rollout:
    r = Rollout(fleet.store, update, devices, canary=1, timeout_s=timeout_h * 3600, by="e2e")
    while r.step(fleet.clock()) == "running":  # the concentrator's clock: the queue's, and the timeout's
        if during is not None:
            await during(r)
        await asyncio.sleep(0.05)
    return r


def test_updates_in_waves_refusals_resume_and_rollback(tmp_path):
    fw_key = ec.generate_private_key(ec.SECP256R1())
    next_key = ec.generate_private_key(ec.SECP256R1())  # the firmware key after the rotation
    other_key = ec.generate_private_key(ec.SECP256R1())  # e.g. the operator's: it may not sign firmware
    headend_key = ec.generate_private_key(ec.SECP256R1())  # the concentrator's: it signs every command
    rotate = I.rotation(fw_key, next_key.public_key(), 2, BOARD)
    rotate_by_headend = I.rotation(headend_key, next_key.public_key(), 2, BOARD)  # a compromised concentrator
    good = I.sign(next_key, _image("v2"), 3, BOARD, "v2")
    forged = I.sign(other_key, _image("v2"), 2, BOARD, "v2")
    wrong_board = I.sign(fw_key, _image("v2"), 2, "esp32-c3-nopsram/xtensawin", "v2")
    old_key = I.sign(fw_key, _image("v2"), 3, BOARD, "v2")  # signed by the key the rotation retires
    truncated = I.Update(old_key.manifest, old_key.payload[:3000], old_key.fields)  # the manifest promises more
    older = I.sign(next_key, _image("v1"), 2, BOARD, "v1")  # the rotation's number: used up
    crash = I.sign(next_key, _image("v3", "raise RuntimeError('v3 fails at boot')\n"), 4, BOARD, "v3")

    specs = [MeterSpec(n, "constant", "tcp", seed=i) for i, n in enumerate(NAMES, 1)]
    fleet = Fleet(tmp_path, specs, headend_key, tmp_path / "db.sqlite", hours=48, speed=720.0)
    fleet.firmware_pub = public_bytes(fw_key.public_key())
    cuts: dict[str, int] = {}

    async def operator(fleet: Fleet) -> dict:
        devs = [m.device for m in fleet.meters]
        while fleet.clock.hours() < 0.2:  # every meter up and reporting
            await asyncio.sleep(0.1)
        out = {}
        for name, upd in (("forged", forged), ("wrong board", wrong_board), ("truncated", truncated),
                          ("rotate by head-end", rotate_by_headend)):
            out[name] = await _rollout(fleet, upd, devs, 2)
        out["rotate"] = await _rollout(fleet, rotate, devs, 2)
        out["old key"] = await _rollout(fleet, old_key, devs, 2)

        async def faults(r: Rollout) -> None:  # mid-delivery: m3 loses power, m4 its link
            for name, action in (("m3", "power"), ("m4", "link")):
                m = next(x for x in fleet.meters if x.spec.name == name)
                p = r.meters.get(m.device)
                if name in cuts or p is None:
                    continue
                n = _chunks_answered(fleet.store, m.device, p.queue_ids)
                if 2 <= n < len(p.queue_ids) - 1:
                    cuts[name] = n
                    fleet._apply("power_cut" if action == "power" else "cut_link", name)
                    asyncio.get_running_loop().call_later(
                        1.0, fleet._apply, "power_on" if action == "power" else "restore_link", name)

        out["good"] = await _rollout(fleet, good, devs, 6, faults)
        out["older"] = await _rollout(fleet, older, devs, 2)
        out["crash"] = await _rollout(fleet, crash, devs, 4)
        for m in fleet.meters:  # done: end the fleet now
            fleet._apply("power_cut", m.spec.name)
        return out

    out = run_fleet(fleet, timeout_s=400, settle_s=1.0, alongside=operator)
    for name in ("forged", "wrong board", "truncated", "rotate by head-end", "old key", "older"):
        r = out[name]
        assert r.state == "halted" and r.current == 0, (name, r.state, r.log)
        [p] = r.meters.values()
        assert p.state == "refused", (name, p)
    assert "bad signature" in out["forged"].reason
    assert "wrong board" in out["wrong board"].reason
    assert "incomplete" in out["truncated"].reason
    assert "anti-rollback" in out["older"].reason
    assert "bad signature" in out["rotate by head-end"].reason and "bad signature" in out["old key"].reason
    rot = out["rotate"]
    assert rot.state == "done" and [len(w) for w in rot.waves] == [1, 5], rot.log

    g = out["good"]
    assert g.state == "done", g.log
    assert [len(w) for w in g.waves] == [1, 5]
    assert set(cuts) == {"m3", "m4"}, cuts  # both faults struck mid-delivery, and both meters came back
    c = out["crash"]
    assert c.state == "halted" and c.current == 0, c.log
    assert [p.state for p in c.meters.values()] == ["rolled back"], c.meters
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        firmware = {m.name: m.firmware for m in db.meters()}
        canary = fleet.meters[0].device
        kinds = [e.code for e in db.events(canary, codes=(E.FW_ACTIVATED, E.FW_CONFIRMED, E.FW_ROLLED_BACK))]
        changed = [a for a in db.alerts() if a.rule == "firmware"]
        keys = {m.name: [e.value for e in db.events(m.device_id, codes=(E.FW_KEY_INSTALLED,))] for m in db.meters()}
    assert firmware == {n: "v2" for n in NAMES}, firmware  # every meter runs the good image, the canary again
    assert kinds == [E.FW_ACTIVATED, E.FW_CONFIRMED, E.FW_ACTIVATED, E.FW_ROLLED_BACK], kinds
    assert keys == {n: [key_id(next_key.public_key()).hex()] for n in NAMES}, keys  # each meter, once
    assert changed == [], changed  # the rollout's changes (and the rollback) are expected: no intrusion alert
