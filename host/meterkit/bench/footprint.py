"""What a meter's day costs the head-end's database, on SQLite and on PostgreSQL (docs/scaling.md).

A real concentrator (the loopback rig) stores a day of each meter's traffic: a reading a minute and a load-profile
frame every 15 minutes, signed frames as the firmware makes them. The database's size is read before and after:
bytes per frame and per meter-day, evidence (the raw signed frames) and indexes included.

    meterkit bench --only footprint   (measure(): 20 meters, 24 h; connection_costs(): 3000 meters; --quick: less)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
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
        wal0 = _wal_lsn(rig) if db.startswith("postgresql://") else None
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
        wal = _wal_bytes(rig, wal0) if pg else None
    if not pg:
        after = _file_size(db)  # closed: the log is in the file
    grown = after - before
    out = {"frames": n, "bytes": grown, "bytes_per_frame": round(grown / n, 1),
           "bytes_per_meter_day": round(grown / meters * 24 / hours), "frames_per_s": round(n / wall)}
    if wal is not None:
        out["wal_bytes_per_frame"] = round(wal / n, 1)  # what a standby receives, and the archive keeps
    if tables:
        out["bytes_per_frame_by_table"] = {k: round(v / n, 1) for k, v in tables.items() if v / n >= 1}
    return out


def _wal_lsn(rig: LoopbackRig) -> str:
    rig.store.commit()
    with rig.store._conn.cursor() as c:  # noqa: SLF001
        c.execute("SELECT pg_current_wal_lsn()::text")
        return c.fetchone()[0]


def _wal_bytes(rig: LoopbackRig, since: str) -> int:
    with rig.store._conn.cursor() as c:  # noqa: SLF001
        c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (since,))
        return int(c.fetchone()[0])


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
    stores = {k: v for k, v in f.items() if k != "connections"}
    for name, r in stores.items():
        lines.append(f"{name:<10} {r['frames']:>8} {r['bytes_per_frame']:>12} {r['bytes_per_meter_day']:>16} "
                     f"{r['frames_per_s']:>9}")
    for name, r in stores.items():
        if "wal_bytes_per_frame" in r:
            lines.append(f"{name}: write-ahead log {r['wal_bytes_per_frame']} bytes per frame")
        if "bytes_per_frame_by_table" in r:
            lines.append(f"{name} by table, bytes/frame: " + ", ".join(
                f"{t} {v}" for t, v in r["bytes_per_frame_by_table"].items()))
    c = f.get("connections")
    if c:
        lines.append(f"{c['meters']} meters served and idle: concentrator {c['concentrator_kib_per_meter']} KiB per "
                     f"meter ({c['concentrator_rss_mib']} MiB in all), HAProxy {c['haproxy_kib_per_connection']} "
                     f"KiB per connection ({c['haproxy_rss_mib']} MiB)")
    return "\n".join(lines)


# -- what an open meter connection costs: the concentrator's and HAProxy's resident memory per meter ----------

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _connect_meters(address: tuple[str, int], meters: list[SimMeter]) -> list[asyncio.StreamWriter]:
    """Each meter on its own connection, one signed reading sent and its ack read: a served, idle meter."""
    writers = []
    for m in meters:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(m.reading())
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 30)  # the ack's first byte: the concentrator holds the meter now
        writers.append(writer)
    return writers


async def _connection_costs(tmp: Path, n: int) -> dict:
    from meterkit.store import open_store
    from meterkit.store.records import NewMeter
    from meterkit.testing.haproxy import HAProxy
    from meterkit.wire.keys import new_key

    key_path, _, _ = new_key(tmp / "keys")
    db = str(tmp / "head.db")
    meters = [SimMeter() for _ in range(n)]
    store = open_store(db)
    store.register_meters([NewMeter(m.public_key, None, 60) for m in meters])
    store.close()
    log = tmp / "conc.log"
    with open(log, "wb") as f:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meterkit.cli", "concentrator", "--db", db, "--key", str(key_path), "--listen",
            "127.0.0.1:0", "--stats-every", "3600", "--clock-drift-max", "off", stdout=f, stderr=subprocess.STDOUT)
    try:
        port = await _listening_port(log, proc)
        with HAProxy(tmp / "lb", [("127.0.0.1", port)]) as lb:
            await asyncio.sleep(0.5)
            conc0, lb0 = _rss_kib(proc.pid), _rss_kib(lb.pid)
            writers = await _connect_meters(lb.address, meters)
            await asyncio.sleep(0.5)
            conc1, lb1 = _rss_kib(proc.pid), _rss_kib(lb.pid)
            for w in writers:
                w.close()
    finally:
        proc.terminate()
        await proc.wait()
    return {"meters": n, "concentrator_kib_per_meter": round((conc1 - conc0) / n, 1),
            "haproxy_kib_per_connection": round((lb1 - lb0) / n, 1),
            "concentrator_rss_mib": round(conc1 / 1024, 1), "haproxy_rss_mib": round(lb1 / 1024, 1)}


async def _listening_port(log: Path, proc: asyncio.subprocess.Process) -> int:
    for _ in range(1500):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                return int(line.rsplit(":", 1)[1])
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the concentrator did not start: {log.read_text(errors='replace')[-2000:]}")


def connection_costs(n: int = 2000) -> dict:
    """Resident memory per served, idle meter: in a `meterkit concentrator` process and in HAProxy (mode tcp)."""
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_connection_costs(Path(tmp), n))
