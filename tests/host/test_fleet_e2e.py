"""End to end with the real firmware (Unix port) and the real concentrator, over serial (ptys) and TCP.

Every frame a meter produced (each meter logs what it produces, independently of its link) must be in the
database exactly once after (a) a link outage of hours of virtual time, (b) a concentrator kill (nothing
pending stored or acknowledged) and restart mid-run, (c) a meter power cut — and the outages must be on record.
"""

import asyncio
from collections import Counter

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from meter import frame
from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.store import open_store

SPECS = [
    MeterSpec("serial-a", "constant", "serial", seed=1),
    MeterSpec("tcp-b", "random-walk", "tcp", seed=2),
    MeterSpec("tcp-c", "export", "tcp", seed=3),
]


def _produced(path):
    out = []
    for cose in frame.Deframer().feed(path.read_bytes()):
        p = cbor2.loads(cbor2.loads(cose).value[2])
        out.append((p[3], p[1]))
    return out


def test_every_frame_stored_once_through_outage_restart_and_power_cut(tmp_path):
    async def scenario():
        fleet = Fleet(tmp_path, SPECS, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite",
                      hours=6.0, speed=1440.0)
        fleet.at(1.0, "cut_link", "serial-a")  # 3 hours without a cable
        fleet.at(4.0, "restore_link", "serial-a")
        fleet.at(1.5, "cut_link", "tcp-b")  # 2 hours without Wi-Fi
        fleet.at(3.5, "restore_link", "tcp-b")
        fleet.at(2.5, "restart_concentrator", "-")
        fleet.at(3.0, "power_cut", "tcp-c")
        fleet.at(4.5, "power_on", "tcp-c")
        await fleet.setup()
        try:
            await fleet.run(settle_s=3.0)
        finally:
            await fleet.close()
        return fleet

    fleet = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        for m in fleet.meters:
            produced = _produced(m.frames_log)
            seqs = [s for s, _k in produced]
            assert len(seqs) == len(set(seqs)), f"{m.spec.name}: the meter reused a sequence number"
            stored = {f.seq: f.kind for f in db.frames_after(m.device, -1, limit=None)}
            missing = sorted(set(seqs) - set(stored))
            assert not missing, f"{m.spec.name}: {len(missing)} frames never stored, first {missing[:5]}"
            extra = {s: k for s, k in stored.items() if s not in set(seqs)}
            assert set(extra.values()) <= {6}, f"{m.spec.name}: stored frames it never made: {extra}"
            assert len(seqs) > 6 * 60 * 0.6, f"{m.spec.name}: too few frames ({len(seqs)})"
        names = {r.device_id: r.name for r in db.meters()}
        outages = Counter(names[o.device_id] for o in db.outages())
    assert outages.get("serial-a", 0) >= 1 and outages.get("tcp-b", 0) >= 1 and outages.get("tcp-c", 0) >= 1, outages
    assert any("restart_concentrator" in line for line in fleet.log)
