"""A head-end database with real content, made by a real concentrator session (meterkit.testing.rig: simulated
meters signing with their own keys, TCP on 127.0.0.1, a manual clock): the migration's tests and its
measurement (docs/storage.md, "Moving to PostgreSQL") use it.

    fill(db, meters=3, readings=12) -> Filled

Every meter sends a hello, the opening billing snapshot of November 2023, `readings` readings a minute apart
(one of them lost on the way, then back-filled by the concentrator's command), a load-profile frame and an
event; an operator command (billing reset) is queued, sent, answered; every meter falls silent for an hour
(outages), comes back and sends the closing snapshot of the month. A meter nobody registered sends a frame
(a reject). Then, through the store: a demand-response group, an event and its targets (queued commands), the
head-end key each meter holds, two security alerts (one acknowledged).

    python -m meterkit.testing.headend_db PATH [METERS [READINGS]]   (default 50 meters, 400 readings each)
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from meter import events
from meter import messages as M
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.store import open_store
from meterkit.store.records import AlertRecord, DREventRecord
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until

OPEN, CLOSE = 1_698_796_800, 1_701_388_800  # 2023-11-01 and 2023-12-01 00:00 UTC: a billing period


@dataclass
class Filled:
    db: Path
    meters: list[SimMeter]
    frames: int  # frames the meters made (each stored once)
    headend: P.HeadEnd  # the concentrator's key


def _billing(m: SimMeter, period_end: int, import_wh: int) -> bytes:
    m.t = max(m.t, period_end) + 5
    return m.frame(M.BILLING, 0, {6: period_end, 7: {M.OBIS_IMPORT: import_wh, M.OBIS_EXPORT: import_wh // 10}})


def _readings(m: SimMeter, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        m.t += 60
        out.append(m.reading())
    return out


async def _backfill(rig: LoopbackRig, clients: list[Any], held: list[bytes]) -> None:
    """The concentrator asks for each lost frame; the meters send it and answer the command."""
    rig.clock.advance(rig.conc.config.backfill_after + 1)
    rig.conc.tick()
    for cl, frame in zip(clients, held, strict=True):
        await cl.wait_for(lambda c: c.commands)
        cl.send(frame + cl.meter.response(cl.commands[-1].counter, 0))


async def _session(db: Path, meters: list[SimMeter], readings: int, headend: P.HeadEnd) -> None:
    async with LoopbackRig(db, headend, clock_drift_max_s=None, max_rate=None, backlog_limit=1 << 30,
                           max_per_source=None) as rig:
        rig.clock.t = float(T0)
        for i, m in enumerate(meters):
            rig.store.register_meter(None, m.public_key, f"m{i:03d}", 60, now=rig.clock())
        clients = [await rig.connect(m) for m in meters]
        held = []
        for cl, m in zip(clients, meters, strict=True):
            m.t = T0
            frames = [m.hello(), _billing(m, OPEN, m.energy_wh), *_readings(m, readings)]
            m.t += 60
            frames.append(m.intervals([[m.t - 900, 105, 0, 0], [m.t, 98, 0, M.ROW_PARTIAL]]))
            frames.append(m.event(events.CHIP_RESET, 3, m.t, event_seq=1))
            held.append(frames.pop(len(frames) // 2))  # lost on the way: a gap
            cl.send(b"".join(frames))
        for cl, m in zip(clients, meters, strict=True):
            await cl.wait_for(lambda c, m=m: rig.store.max_seq(m.device_id) == m.seq.next - 1, 120)
        await _backfill(rig, clients, held)
        for cl, m in zip(clients, meters, strict=True):
            await cl.wait_ack(m.seq.next - 1, 120)
        # an operator command: queued (by its own connection, as `meterkit command` does), sent, answered
        with open_store(db) as s:
            C.queue(s, meters[0].device_id, C.OP_BILLING_RESET, None, rig.clock(), by="operator")
        rig.conc.tick()
        await clients[0].wait_for(lambda c: len(c.commands) == 2)
        clients[0].send(meters[0].response(clients[0].commands[-1].counter, 0))
        await until(lambda: rig.store.queued_commands(states=["answered"]), 60)
        # an hour of silence (outages), then everyone back with the month's closing snapshot
        rig.clock.advance(3600)
        rig.conc.tick()
        for cl, m in zip(clients, meters, strict=True):
            cl.send(_billing(m, CLOSE, m.energy_wh + 1000))
        for cl, m in zip(clients, meters, strict=True):
            await cl.wait_ack(m.seq.next - 1, 120)
        stranger = await rig.connect(SimMeter())
        stranger.send(stranger.meter.reading())
        await until(lambda: rig.conc.stats().get("rejected"), 60)
        rig.clock.advance(5)
        rig.conc.tick()
        for cl in (*clients, stranger):
            cl.close()


def _store_side(db: Path, meters: list[SimMeter], kid: bytes) -> None:
    """Demand response and the key ring, as `meterkit dr` and `meterkit keys` write them."""
    with open_store(db) as s:
        now = float(T0 + 7200)
        event_id = s.next_dr_id()
        s.add_dr_event(DREventRecord(event_id, 7, T0 + 86400, 3600, 2000, False, now, "peak"))
        for m in meters:
            s.set_groups(m.device_id, [7])
            qid = s.queue_command(m.device_id, C.OP_BILLING_RESET, None, now, T0 + 86400, "dr", "utility")
            s.add_dr_target(event_id, m.device_id, qid)
            s.set_meter_key(m.device_id, kid, now)
        [a] = s.add_alerts([AlertRecord("auth-failure", "warning", b"", "127.0.0.1", 7, now, now + 5, "forged")])
        s.ack_alert(a.id, "operator", now + 60)
        s.add_alerts([AlertRecord("firmware", "critical", meters[0].device_id, "", 1, now, now, "changed")])
        s.commit()


def fill(db: str | Path, meters: int = 3, readings: int = 12) -> Filled:
    """A new SQLite head-end at `db` (it must not exist yet) with the content above."""
    db = Path(db)
    if db.exists():
        raise FileExistsError(f"{db} exists: fill makes a new database")
    ms = [SimMeter() for _ in range(meters)]
    headend = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    asyncio.run(asyncio.wait_for(_session(db, ms, readings, headend), 600))
    _store_side(db, ms, headend.key_id)
    return Filled(db, ms, sum(m.seq.next for m in ms), headend)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 3 or not all(a.isdigit() for a in args[1:]):
        print("usage: python -m meterkit.testing.headend_db PATH [METERS [READINGS]]", file=sys.stderr)
        return 2
    n_meters, n_readings = (int(a) for a in [*args[1:], *["50", "400"][len(args) - 1:]])
    t0 = time.perf_counter()
    try:
        got = fill(args[0], n_meters, n_readings)
    except FileExistsError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{got.db}: {len(got.meters)} meters, {got.frames} frames, in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
