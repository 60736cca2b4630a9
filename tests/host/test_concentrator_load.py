"""Load: 1,000 meters connected at once over TCP on 127.0.0.1, each with its own key, each sending a few signed
frames in two rounds; zero frames lost, every frame acknowledged (each ack checked as a meter checks it),
everything within a bounded time. Frames are pre-signed with `cryptography` (the bytes meter.cose makes)."""

from __future__ import annotations

import asyncio
import resource

from meter import messages as M
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until

METERS = 1000
ROUND1 = 3  # hello, reading, interval row
ROUND2 = 2  # readings, sent while the first acks are still arriving for others


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == resource.RLIM_INFINITY or soft >= need, f"need {need} file descriptors, hard limit {hard}"


def test_thousand_meters_at_once_nothing_lost_everything_acknowledged(tmp_path):
    raise_fd_limit(2 * METERS + 256)  # both ends of every connection live in this process
    meters = [SimMeter() for _ in range(METERS)]
    first, second = [], []
    for i, m in enumerate(meters):
        first.append(m.hello() + m.reading() + m.intervals([[T0, 1000 * i, 0, 0]]))
        second.append(m.reading() + m.reading())

    async def main():
        # 1,000 meters from 127.0.0.1, all connected before any sends: as behind one NAT address, no per-address cap
        rig = await LoopbackRig(tmp_path / "load.db", max_rate=None, max_per_source=None).start()
        try:
            rig.register(*meters)
            clients = await asyncio.gather(*(rig.connect(m) for m in meters))
            await until(lambda: rig.conc.stats()["connections_open"] == METERS, timeout=20)
            for cl, data in zip(clients, first, strict=True):
                cl.send(data)
            for i, (cl, data) in enumerate(zip(clients, second, strict=True)):
                if i % 2:  # half of them go on at once, the others after their first ack
                    cl.send(data)
            await asyncio.gather(*(cl.wait_ack(ROUND1 - 1, timeout=25) for cl in clients[::2]))
            for cl, data in zip(clients[::2], second[::2], strict=True):
                cl.send(data)
            await asyncio.gather(*(cl.wait_ack(ROUND1 + ROUND2 - 1, timeout=25) for cl in clients))
            peak = rig.conc.stats()["connections_open"]
            stats = rig.conc.stats()
            for cl in clients:
                cl.close()
            return clients, peak, stats
        finally:
            await rig.stop()

    clients, peak, stats = asyncio.run(asyncio.wait_for(main(), 30))
    total = METERS * (ROUND1 + ROUND2)
    assert peak == METERS
    assert all(cl.refused == [] and cl.acked == ROUND1 + ROUND2 - 1 for cl in clients)
    assert stats["frames_stored"] == stats["frames_received"] == total
    assert stats.get("rejected", 0) == 0 and stats["meters_online"] == METERS
    assert METERS <= stats["acks_sent"] <= total  # batched: at most one per frame, at least one per meter

    from meterkit.store import open_store

    s = open_store(tmp_path / "load.db", create=False, readonly=True)
    try:
        devs = [rec.device_id for rec in s.meters()]
        stored = {dev: s.seqs_above(dev, -1) for dev in devs}
        assert sum(len(x) for x in stored.values()) == total
        runs = [len(x) for x in stored.values() if x and x[0] == 0 and x[-1] == len(x) - 1]
        per = (min(runs), max(runs), len(runs))
        assert per == (ROUND1 + ROUND2, ROUND1 + ROUND2, METERS)  # every meter: 0..4, no gap, no duplicate
        assert len(list(s.export("readings")[1])) == METERS * 3
        assert len(list(s.export("intervals")[1])) == METERS
        assert sum(1 for rec in s.meters() if rec.ack_seq == ROUND1 + ROUND2 - 1) == METERS
        assert len(s.gaps()) == 0
        assert sum(1 for dev in devs for f in s.frames_after(dev, -1, limit=1) if f.seq == 0 and f.kind == M.HELLO) \
            == METERS
    finally:
        s.close()


def test_bench_ingest_reports_every_figure():
    """The bench runs end to end at a small size and accounts for every frame (its rates are figures for
    docs/performance.md, not assertions)."""
    from meterkit.bench.ingest import bench_ingest, format_ingest

    raise_fd_limit(2 * 64 + 256)
    f = bench_ingest(n=300, meters=10, idle_connections=64, per_frame_n=30, rounds=2, monitor_pairs=1)
    assert len(f["rounds_ratio"]) == 2 and f["ratio"] in f["rounds_ratio"]
    assert f["ingest"]["frames"] == f["ingest"]["stored"] == 300
    assert 10 <= f["ingest"]["acks_sent"] <= 300 and f["ingest"]["batches"] >= 1
    assert f["ingest_ack_per_frame"]["frames"] == f["ingest_ack_per_frame"]["stored"] == 30
    assert f["ingest_ack_per_frame"]["batches"] == 30 == f["ingest_ack_per_frame"]["acks_sent"]
    assert f["memory"]["connections"] == 64 and f["memory"]["heap_bytes_per_connection"] > 0
    assert f["bare_verify_per_s"] > 0 and f["ratio"] > 0
    assert set(f["stages"]) == {"deframe_us", "verify_and_decode_us", "db_insert_commit_us", "sign_ack_us",
                                "security_monitor_us"}
    assert f["monitor"]["pairs"] == 1 and f["monitor"]["ratio"] > 0
    text = format_ingest(f)
    assert "frames/s" in text and "memory per connected meter" in text and "security monitor" in text
