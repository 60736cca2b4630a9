"""Issue 11 finding 5: attacker input grew the database. Table rejects was keyed by the kid a frame claims, so
frames with random kids added a row each. Now rejects naming no registered meter are kept per source address and
reason (the kid in the last detail), the sources themselves bounded; a known meter's rejects keep their rows."""

from __future__ import annotations

import asyncio
import os
import random

from meter import cbor as mcbor
from meter import cose as mcose
from meter import messages as M
from meter.frame import encode_frame
from meterkit.headend import counters as C
from meterkit.headend.counters import Counters
from meterkit.store import open_store
from meterkit.store.sqlite import SCHEMA_VERSION, SQLiteStore
from meterkit.testing.rig import LoopbackRig, SimMeter, until
from meterkit.testing.sqlfile import old_database, sql

N_FRAMES = int(os.environ.get("MK_REJECT_FLOOD", "2000"))  # 20000 for docs/security.md's figure


def random_kid_frames(n: int, seed: int = 5) -> bytes:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kid = rnd.randbytes(8)
        payload = mcbor.encode({1: 2, 2: kid, 3: 1, 4: 1_700_000_000, 5: 0, 6: {10800: 1, 20800: 0},
                                7: [0, 0, 0], 8: 0})
        out.append(encode_frame(mcose.envelope(kid, payload, bytes(64))))
    return b"".join(out)


def run(coro):
    return asyncio.run(coro)


def test_random_kids_do_not_grow_the_rejects_table(store_db):
    async def main():
        async with LoopbackRig(store_db, max_rate=None, max_rejects=10**9) as rig:
            m = SimMeter()
            rig.register(m)
            r, w = await asyncio.open_connection(rig.host, rig.port)
            w.write(random_kid_frames(N_FRAMES))
            forged = bytearray(m.cose(M.READING, 0, {6: {10800: 1, 20800: 0}, 7: [0, 0, 0], 8: 0}))
            forged[-1] ^= 1  # a known meter's kid, a bad signature: its own row
            w.write(encode_frame(bytes(forged)))
            await w.drain()
            await until(lambda: rig.conc.stats().get("rejected", 0) >= N_FRAMES + 1, timeout=120)
            rig.conc.tick()
            rows = rig.store.rejects()
            w.close()
            return rig, rows, m

    rig, rows, m = run(main())
    unknown = [r for r in rows if r.reason == "unknown-kid"]
    assert len(unknown) == 1, len(unknown)
    assert unknown[0].device_id == b"" and unknown[0].peer == "127.0.0.1" and unknown[0].count == N_FRAMES
    assert unknown[0].last_detail.startswith("claimed kid ")
    assert [(r.device_id, r.peer, r.count) for r in rows if r.reason == "bad-signature"] == [
        (m.device_id, "127.0.0.1", 1)]
    assert len(rows) == 2, rows


def test_counters_aggregate_unknown_kids_and_bound_the_sources(store_db, monkeypatch):
    monkeypatch.setattr(C, "MAX_SOURCES", 3)
    known = b"\x01" * 8
    with open_store(store_db) as store:
        c = Counters(store, lambda: 100.0, known=lambda d: d == known)
        for i in range(50):
            c.reject(bytes([2, i]) + b"\x00" * 6, f"10.0.0.{i % 5}", "unknown-kid", "no public key")
        c.reject(known, "10.0.0.1", "bad-signature", "signature does not verify")
        c.noise("10.0.0.9", 10, 1)
        with c.transaction():
            pass
        rows = {(r.device_id, r.peer, r.reason): r.count for r in store.rejects()}
        assert rows == {(b"", "10.0.0.0", "unknown-kid"): 10, (b"", "10.0.0.1", "unknown-kid"): 10,
                        (b"", "10.0.0.2", "unknown-kid"): 10, (b"", C.OTHER_SOURCES, "unknown-kid"): 20,
                        (known, "10.0.0.1", "bad-signature"): 1, (b"", C.OTHER_SOURCES, "noise"): 1}
        assert c.snapshot()["rejects"] == {"bad-signature": 1, "unknown-kid": 50}
        again = Counters(store, lambda: 200.0, known=lambda d: d == known)  # a restart knows its sources
        again.reject(b"\x09" * 8, "10.0.0.7", "unknown-kid", "x")
        with again.transaction():
            pass
        assert len(store.rejects()) == 6


def test_migration_v5_folds_unknown_kid_rows(tmp_path):
    path = tmp_path / "old.db"
    m = SimMeter()
    rows = [("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES (?, ?, ?, ?)",
             (m.device_id, m.public_key, "house", 1.0)),
            ("INSERT INTO rejects VALUES (?, '1.2.3.4', 'bad-signature', 3, 1.0, 2.0, 'x')", (m.device_id,)),
            ("INSERT INTO rejects VALUES (x'', '1.2.3.4', 'unknown-kid', 5, 0.5, 1.0, 'old')", ())]
    for i in range(300):
        rows.append(("INSERT INTO rejects VALUES (?, ?, 'unknown-kid', 1, ?, ?, 'no key')",
                     (i.to_bytes(8, "big"), "1.2.3.4" if i % 2 else "5.6.7.8", 10.0 + i, 10.0 + i)))
    assert old_database(path, 4, *rows) == [1, 2, 3, 4]
    with SQLiteStore(path) as s:
        assert s.migrated[0] == 5 and s.version == SCHEMA_VERSION  # from v4: v5 first, then the later ones
        got = {(r.device_id, r.peer, r.reason): (r.count, r.first_at, r.last_at) for r in s.rejects()}
        assert got == {(m.device_id, "1.2.3.4", "bad-signature"): (3, 1.0, 2.0),
                       (b"", "1.2.3.4", "unknown-kid"): (155, 0.5, 309.0),
                       (b"", "5.6.7.8", "unknown-kid"): (150, 10.0, 308.0)}
        assert sql(s, "SELECT count(*) FROM rejects")[0][0] == 3
