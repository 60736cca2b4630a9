"""What a meter's day costs the head-end's database, on SQLite and on PostgreSQL (docs/scaling.md).

A real concentrator (the loopback rig) stores a day of each meter's traffic: a reading a minute and a load-profile
frame every 15 minutes, signed frames as the firmware makes them. The database's size is read before and after:
bytes per frame and per meter-day, evidence (the raw signed frames) and indexes included.

    meterkit bench --only footprint   (measure(meters, hours, pg): 20 meters, 24 h; --quick 4 meters, 6 h)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from meterkit.testing.rig import LoopbackRig, SimMeter

READING_S = 60
PROFILE_S = 900


def _traffic(m: SimMeter, hours: float, now: float) -> list[bytes]:
    m.t = int(now - hours * 3600) // PROFILE_S * PROFILE_S  # a day just past (a meter from the future is set)
    frames = [m.hello()]
    for k in range(int(hours * 3600 // READING_S)):
        m.t += READING_S
        frames.append(m.reading())
        if (k + 1) % (PROFILE_S // READING_S) == 0:
            frames.append(m.intervals([[m.t, m.energy_wh, 0, 0]]))
    return frames


async def _store_day(db: str, meters: int, hours: float) -> dict:
    async with LoopbackRig(db) as rig:
        ms = [SimMeter() for _ in range(meters)]
        rig.register(*ms)
        rig.store.commit()
        before = _size(rig, db)
        t = time.perf_counter()
        n = 0
        for m in ms:
            frames = _traffic(m, hours, rig.clock())
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await cl.wait_ack(m.seq.next - 1, timeout=120)
            cl.close()
            n += len(frames)
        wall = time.perf_counter() - t
        pg = db.startswith("postgresql://")
        after = _size(rig, db) if pg else 0
        tables = _pg_tables(rig) if pg else None
    if not pg:
        after = _file_size(db)  # closed: the log is in the file
    grown = after - before
    out = {"frames": n, "bytes": grown, "bytes_per_frame": round(grown / n, 1),
           "bytes_per_meter_day": round(grown / meters * 24 / hours), "frames_per_s": round(n / wall)}
    if tables:
        out["bytes_per_frame_by_table"] = {k: round(v / n, 1) for k, v in tables.items() if v / n >= 1}
    return out


def _pg_tables(rig: LoopbackRig) -> dict[str, int]:
    """Each table's size, indexes and TOAST included (a partitioned table's partitions summed)."""
    with rig.store._conn.cursor() as c:  # noqa: SLF001
        c.execute("SELECT coalesce(p.relname, c.relname), sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                  "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent "
                  "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace GROUP BY 1 ORDER BY 2 DESC")
        return {name: int(size) for name, size in c.fetchall()}


def _size(rig: LoopbackRig, db: str) -> int:
    if db.startswith("postgresql://"):
        rig.store.commit()
        with rig.store._conn.cursor() as c:  # noqa: SLF001 - a measurement, not the store's business
            c.execute("CHECKPOINT")
            c.execute("SELECT pg_database_size(current_database())")
            return int(c.fetchone()[0])
    rig.store.commit()
    return _file_size(db)


def _file_size(db: str) -> int:
    """The database file and its write-ahead log (none once the last connection closed: checkpointed)."""
    return sum(p.stat().st_size for p in (Path(db), Path(db + "-wal")) if p.exists())


def measure(meters: int, hours: float, pg: bool) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = asyncio.run(_store_day(str(Path(tmp) / "head.db"), meters, hours))
        if pg:
            from meterkit.testing.pgserver import PgServer

            with PgServer() as server:
                out["postgres"] = asyncio.run(_store_day(server.create_database(), meters, hours))
    return out


def format_footprint(f: dict) -> str:
    lines = ["database footprint (a real concentrator storing a day of each meter's frames)",
             f"{'store':<10} {'frames':>8} {'bytes/frame':>12} {'bytes/meter-day':>16} {'frames/s':>9}"]
    for name, r in f.items():
        lines.append(f"{name:<10} {r['frames']:>8} {r['bytes_per_frame']:>12} {r['bytes_per_meter_day']:>16} "
                     f"{r['frames_per_s']:>9}")
    for name, r in f.items():
        if "bytes_per_frame_by_table" in r:
            lines.append(f"{name} by table, bytes/frame: " + ", ".join(
                f"{t} {v}" for t, v in r["bytes_per_frame_by_table"].items()))
    return "\n".join(lines)
