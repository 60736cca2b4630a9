"""meterkit.store.db: the head-end database on real SQLite files: WAL, schema versions and migrations,
the registry, dedupe by (device, seq) and (device, end time), transactions, counters, fleet and export queries."""

from __future__ import annotations

import sqlite3

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit import wire as P
from meterkit.store import db
from meterkit.store.db import SCHEMA_VERSION, SQLiteStore, StoreError


def new_key() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    k = ec.generate_private_key(ec.SECP256R1())
    point = P.public_bytes(k.public_key())
    return k, point, P.key_id(point)


def frame_row(dev: bytes, seq: int, kind: int = M.READING, t: int = 1_700_000_000, raw: bytes = b"x" * 90):
    return (dev, seq, kind, t, 0, 1.5, raw)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "head.db")
    yield s
    s.close()


def test_new_file_is_wal_full_and_current(tmp_path):
    path = tmp_path / "head.db"
    s = SQLiteStore(path)
    assert s.version == SCHEMA_VERSION == 3
    assert s.migrated == [1, 2, 3]
    c = s.connection
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a returned commit is on disk
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meters", "frames", "readings", "intervals", "events", "billing", "commands", "outages", "gaps",
            "rejects", "counters", "schema_version"} <= tables
    s.close()
    again = SQLiteStore(path)  # reopening applies nothing
    assert again.migrated == [] and again.version == SCHEMA_VERSION
    again.close()


def test_migration_v1_to_current_keeps_data_and_derives_state(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert db.migrate(conn, upto=1) == [1]
    assert db.schema_version(conn) == 1
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    conn.execute("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES (?, ?, ?, ?)",
                 (dev, point, "house", 1.0))
    conn.execute("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES (?, ?, ?, ?)",
                 (dev2, point2, "shed", 1.0))
    for seq in (5, 6, 7, 9, 10):  # 8 missing: the ack may only cover 5..7
        conn.execute("INSERT INTO frames VALUES (?, ?, ?, ?, ?, ?, ?)", frame_row(dev, seq))
    conn.execute("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (dev, 7, 1_700_000_000, 0, 1234, 5, '{"1.8.0": 1234, "2.8.0": 5}', 1, 2, 3, 0))
    cols_v1 = {r[1] for r in conn.execute("PRAGMA table_info(meters)")}
    assert "ack_seq" not in cols_v1
    conn.close()

    s = SQLiteStore(path)
    assert s.migrated == [2, 3] and s.version == SCHEMA_VERSION
    versions = [r[0] for r in s.connection.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [1, 2, 3]
    m = s.meter(dev)
    assert (m.name, m.frames_stored, m.first_seq, m.ack_seq, m.online) == ("house", 5, 5, 7, False)
    m2 = s.meter(dev2)
    assert (m2.frames_stored, m2.first_seq, m2.ack_seq) == (0, None, None)
    assert s.seqs_above(dev, 0) == [5, 6, 7, 9, 10]
    assert s.fleet()[0]["import_wh"] == 1234
    # the tables v2 brought work
    oid = s.open_outage(dev, 10.0, 20.0)
    s.add_counters({"frames_stored": 5})
    s.commit()
    assert s.outages(dev)[0].id == oid and s.counters() == {"frames_stored": 5}
    s.close()


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, 0, 'from the future')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="v99 is newer"):
        SQLiteStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a meterkit database"):
        SQLiteStore(junk)
    with pytest.raises(StoreError, match="no such database"):
        SQLiteStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "x.db", synchronous="SOMETIMES")


def test_register_meter_every_key_form(store, tmp_path):
    k, point, dev = new_key()
    rec = store.register_meter(None, k.public_key(), "house", 900, now=123.0)
    assert (rec.device_id, rec.public_key, rec.name, rec.reporting_period_s, rec.provisioned_at) == (
        dev, point, "house", 900, 123.0)
    # same key again (as a point, then as PEM): name and period updated, nothing duplicated
    store.register_meter(dev, point, None, 60)
    pem = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    rec = store.register_meter(dev, pem.decode(), "house 2", 60)
    assert rec.name == "house 2" and rec.reporting_period_s == 60 and len(store.meters()) == 1
    _, point2, dev2 = new_key()
    with pytest.raises(ValueError, match="does not belong"):
        store.register_meter(dev, point2)
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())
    with pytest.raises(ValueError, match="private key"):
        store.register_meter(None, priv)
    with pytest.raises(ValueError):
        store.register_meter(None, b"\x04" + b"\x01" * 64)  # not on the curve
    with pytest.raises(ValueError):
        store.register_meter(None, point2, reporting_period_s=0)
    with pytest.raises(TypeError):
        store.register_meter(None, 12345)
    assert store.meter(dev2) is None
    assert store.lookup_device(dev.hex()) == dev and store.lookup_device("house 2") == dev
    assert store.lookup_device("nobody") is None


def test_register_many_in_one_transaction(store):
    keys = [new_key() for _ in range(50)]
    recs = store.register_meters([(point, f"m{i}", 900) for i, (_, point, _) in enumerate(keys)], now=5.0)
    assert [r.device_id for r in recs] == [dev for _, _, dev in keys]
    assert len(store.meters()) == 50 and store.meter(keys[3][2]).name == "m3"
    store.register_meters([(keys[3][1], None, 60)])  # again: period updated, name kept
    assert (store.meter(keys[3][2]).name, store.meter(keys[3][2]).reporting_period_s) == ("m3", 60)
    with pytest.raises(ValueError):
        store.register_meters([(keys[0][1], "x", 900), (b"\x04" + b"\x02" * 64, "bad", 900)])
    assert store.meter(keys[0][2]).name == "m0"  # nothing of the refused batch was written


def test_frames_dedupe_by_device_and_seq(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meter(dev, point)
    store.register_meter(dev2, point2)
    assert store.insert_frames([frame_row(dev, 1), frame_row(dev, 2), frame_row(dev2, 1)]) == 3
    assert store.insert_frames([frame_row(dev, 2), frame_row(dev, 3)]) == 1
    assert store.insert_frame(frame_row(dev, 3)) is False
    assert store.insert_frame(frame_row(dev, 4, raw=b"evidence")) is True
    store.commit()
    assert store.seqs_above(dev, 1) == [2, 3, 4]
    assert store.max_seq(dev) == 4 and store.max_seq(dev2) == 1
    assert store.frame_raw(dev, 4) == b"evidence" and store.frame_raw(dev, 99) is None
    iv = [(dev, 900, 10, 0, 0, 900, 5), (dev, 1800, 20, 0, 0, 900, 5), (dev, 900, 11, 0, 0, 900, 6)]
    assert store.insert_intervals(iv) == 2
    assert store.interval_rows(dev, 0) == [(900, 900, 5, 0), (1800, 900, 5, 0)]
    assert store.interval_before(dev, 1800) == (900, 900, 5, 0)
    assert store.interval_after(dev, 900) == (1800, 900, 5, 0) and store.interval_after(dev, 1800) is None


def test_transactions_commit_and_rollback(tmp_path):
    path = tmp_path / "head.db"
    a = SQLiteStore(path)
    _, point, dev = new_key()
    a.register_meter(dev, point)  # committed at once
    b = SQLiteStore(path)
    assert b.meter(dev) is not None
    a.insert_frames([frame_row(dev, 1)])
    assert b.seqs_above(dev, -1) == []  # not visible before commit
    a.rollback()
    assert a.seqs_above(dev, -1) == []
    a.insert_frames([frame_row(dev, 2)])
    a.update_meter(dev, ack_seq=2, online=1)
    a.commit()
    assert b.seqs_above(dev, -1) == [2] and b.meter(dev).ack_seq == 2
    with pytest.raises(ValueError):
        a.update_meter(dev, public_key=b"")
    a.close()
    b.close()


def test_rejects_counters_commands_gaps_outages(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    store.add_rejects([(dev, "10.0.0.1", "bad-signature", 2, 5.0, "first"),
                       (b"", "10.0.0.2", "noise", 7, 6.0, None)])
    store.add_rejects([(dev, "10.0.0.1", "bad-signature", 3, 9.0, "latest")])
    store.add_counters({"a": 1, "b": 0})
    store.add_counters({"a": 2})
    store.record_command(dev, 4, 1, {1: 10, 2: 12}, 50.0, 350)
    gid = store.add_gap(dev, "frames", 10, 12, 40.0)
    assert store.add_gap(dev, "frames", 10, 12, 41.0) is None
    store.update_gap(gid, state="requested", command_counter=4, attempts=1)
    oid = store.open_outage(dev, 100.0, 300.0)
    store.commit()
    rej = {r["reason"]: r for r in store.rejects()}
    assert rej["bad-signature"]["count"] == 5 and rej["bad-signature"]["last_detail"] == "latest"
    assert (rej["bad-signature"]["first_at"], rej["bad-signature"]["last_at"]) == (5.0, 9.0)
    assert rej["noise"]["count"] == 7 and rej["noise"]["device"] == b""
    assert store.counters() == {"a": 3}
    assert store.record_response(dev, 4, 0, None, 60.0) == (1, {"1": 10, "2": 12})
    assert store.record_response(dev, 5, 0, None, 60.0) is None
    assert store.record_response(dev, 2**64 - 1, 0, None, 60.0) is None
    g = store.gaps(dev, "frames", ("requested",))[0]
    assert (g.first, g.last, g.command_counter, g.attempts) == (10, 12, 4, 1)
    with pytest.raises(ValueError):
        store.update_gap(gid, device=b"")
    store.close_outage(oid, 900.0)
    store.match_outage(oid, "power", 850, {"power_fail_frames": [3]})
    store.commit()
    o = store.outages(dev)[0]
    assert (o.start, o.end, o.cause, o.power_up_at, o.evidence) == (100.0, 900.0, "power", 850,
                                                                     {"power_fail_frames": [3]})
    assert store.outages(open_only=True) == []
    f = store.fleet()[0]
    assert f["outages"] == 1 and f["outage_open"] == 0 and f["gaps_open"] == 1


def test_export_tables(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meter(dev, point, "a")
    store.register_meter(dev2, point2, "b")
    store.insert_readings([(dev, 1, 1000, 0, 5, 1, '{"1.8.0": 5, "2.8.0": 1}', 10, 20, 30, 0),
                           (dev2, 1, 1000, 0, 7, 0, '{"1.8.0": 7, "2.8.0": 0}', 10, 20, 30, 0)])
    store.insert_events([(dev, 2, 1, 8, "boot", 999)])
    store.commit()
    names, rows = store.export("readings")
    rows = list(rows)
    assert names[:3] == ["device", "seq", "meter_time"] and len(rows) == 2
    assert {r[0] for r in rows} == {dev.hex(), dev2.hex()}
    names, rows = store.export("readings", dev2)
    assert [r[4] for r in rows] == [7]
    assert list(store.export("events")[1]) == [(dev.hex(), 2, 1, 8, "boot", 999)]
    with pytest.raises(ValueError):
        store.export("meters")


def test_i64():
    assert db.i64(2**63 - 1) == 2**63 - 1 and db.i64(-(2**63)) == -(2**63)
    assert db.i64(2**63) is None and db.i64(-(2**63) - 1) is None
