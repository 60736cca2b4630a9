"""meterkit.store.postgres on a real PostgreSQL (meterkit.testing.pgplugin): what only this backend has -- its
schema and versions, readings partitioned by month, the audit log's triggers, a spoiled transaction, two
concentrators' connections on one database. What both backends share is tested in test_store_sqlite.py."""

from __future__ import annotations

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit import wire as P
from meterkit.store import StoreError, is_url, open_store
from meterkit.store.postgres import SCHEMA_VERSION, PostgresStore
from meterkit.store.postgres.partitions import month_of, partition_name
from meterkit.store.records import AuditRecord, RejectRecord
from meterkit.testing.sqlfile import sql
from meterkit.wire.records import Event, Frame, Hello, Reading

JAN, FEB = 1_767_225_600, 1_769_904_000  # 2026-01-01, 2026-02-01 UTC


def new_meter(store) -> bytes:
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    return store.register_meter(None, point).device_id


def reading(dev: bytes, seq: int, t: int, imp: int = 5) -> Reading:
    return Reading(dev, seq, t, 0, {M.OBIS_IMPORT: imp, M.OBIS_EXPORT: 0}, 1, 2, 3, 0)


@pytest.fixture
def pg(pg_url):
    s = PostgresStore(pg_url)
    yield s
    s.close()


def test_schema_is_current_and_reopening_applies_nothing(pg_server):
    url = pg_server.create_database()  # an empty database, not the template: the migration runs here
    s = open_store(url)
    assert isinstance(s, PostgresStore) and s.migrated == [1, 2] and s.version == SCHEMA_VERSION == 2
    tables = {r[0] for r in sql(s, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"meters", "frames", "intervals", "events", "billing", "commands", "command_queue", "audit", "outages",
            "gaps", "rejects", "counters", "dr_groups", "dr_events", "dr_targets", "meter_keys",
            "schema_version"} <= tables
    assert sql(s, "SELECT relkind FROM pg_class WHERE relname = 'readings'") == [("p",)]  # partitioned
    s.close()
    again = open_store(url)
    assert again.migrated == [] and again.version == SCHEMA_VERSION
    again.close()


def test_newer_empty_and_unreachable_databases_are_refused(pg_server, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (99, 0, 'future')")
    with pytest.raises(StoreError, match="v99 is newer"):
        open_store(pg_url)
    with pytest.raises(StoreError, match="v99"):
        open_store(pg_url, readonly=True)
    empty = pg_server.create_database()
    with pytest.raises(StoreError, match="no meterkit database"):
        open_store(empty, create=False)
    with pytest.raises(StoreError, match="schema v0"):
        open_store(empty, readonly=True)
    down = f"postgresql://meterkit:secret@127.0.0.1:{pg_server.port}/no_such_db"
    with pytest.raises(StoreError, match="cannot connect") as e:
        open_store(down)
    assert "secret" not in str(e.value)
    assert is_url(pg_url) and is_url("postgres://x/y") and not is_url("fleet.db")


def test_readonly_store_reads_and_never_writes(pg, pg_url):
    dev = new_meter(pg)
    ro = open_store(pg_url, readonly=True)
    assert ro.meter(dev) is not None
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        ro.add_counters({"x": 1})
    ro.close()
    assert pg.counters() == {}


def test_readings_go_to_a_partition_per_month_made_as_needed(pg):
    dev = new_meter(pg)
    pg.add_readings([reading(dev, 1, JAN + 10)])
    pg.rollback()  # the partition made in the rolled-back batch is gone with it, and made again
    pg.add_readings([reading(dev, 1, JAN + 10), reading(dev, 2, FEB + 10), reading(dev, 3, FEB + 20)])
    pg.commit()
    names = [p[0] for p in pg.reading_partitions()]
    assert names == ["readings_y2026m01", "readings_y2026m02"]
    assert pg.reading_partitions()[0][1:] == (JAN, FEB) == month_of(JAN + 10)
    assert partition_name(month_of(FEB + 5)[0]) == "readings_y2026m02"
    rows = sql(pg, "SELECT tableoid::regclass::text, seq FROM readings ORDER BY seq")
    assert rows == [("readings_y2026m01", 1), ("readings_y2026m02", 2), ("readings_y2026m02", 3)]
    assert pg.fleet()[0].reading_time == FEB + 20
    # a frame's reading is stored once even if another time came with the same (device, seq)
    pg.add_readings([reading(dev, 3, JAN + 99, imp=77), reading(dev, 4, JAN + 99), reading(dev, 4, FEB, imp=8)])
    pg.commit()
    assert sql(pg, "SELECT seq, import_wh FROM readings WHERE seq >= 3 ORDER BY seq") == [(3, 5), (4, 5)]
    assert pg.drop_readings_before(FEB) == ["readings_y2026m01"]  # retention: the operator's choice
    assert [p[0] for p in pg.reading_partitions()] == ["readings_y2026m02"]
    assert [r[0] for r in sql(pg, "SELECT seq FROM readings ORDER BY seq")] == [2, 3]


def test_a_meter_time_no_month_can_name_spoils_nothing(pg):
    # a clock gone wrong (signed all the same): year 36812 has no partition name; the batch it came in, with
    # another meter's ordinary reading, is stored whole
    dev, other = new_meter(pg), new_meter(pg)
    assert month_of(2**40) is None and month_of(-(2**40)) is None
    pg.add_readings([reading(dev, 1, 2**40), reading(other, 1, FEB + 1), reading(dev, 2, -(2**40))])
    pg.commit()
    rows = sql(pg, "SELECT tableoid::regclass::text, meter_time FROM readings ORDER BY meter_time")
    assert rows == [("readings_beyond", -(2**40)), ("readings_y2026m02", FEB + 1), ("readings_beyond", 2**40)]
    assert [p[0] for p in pg.reading_partitions()] == ["readings_y2026m02"]


def test_the_audit_log_refuses_update_delete_and_truncate(pg, pg_url):
    dev = new_meter(pg)
    pg.add_audit(AuditRecord(1.0, dev, 3, "alice", "queued"))
    pg.commit()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append only"):
                conn.execute(statement)
    assert [a.actor for a in pg.audit(dev)] == ["alice"]


def test_a_failed_statement_spoils_the_batch_and_commit_says_so(pg):
    dev = new_meter(pg)
    pg.add_frames([Frame(dev, 1, M.READING, JAN, 0, b"x")], 1.0)
    pg.add_dr_target(1, dev, None)
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.add_dr_target(1, dev, None)  # the second one is refused by the database...
    with pytest.raises(StoreError, match="rolled back"):
        pg.commit()  # ... and the frame before it is not stored: nothing would be acknowledged
    assert pg.max_seq(dev) is None
    pg.add_frames([Frame(dev, 1, M.READING, JAN, 0, b"x")], 1.0)  # the store goes on
    pg.commit()
    assert pg.max_seq(dev) == 1


def test_two_connections_dedupe_by_device_and_seq(pg, pg_url):
    dev = new_meter(pg)
    other = open_store(pg_url)
    frames = [Frame(dev, s, M.READING, JAN, 0, b"f%d" % s) for s in range(1, 6)]
    assert pg.add_frames(frames[:3], 1.0) == 3
    pg.commit()
    assert other.add_frames(frames, 2.0) == 2  # a failover's re-sent frames: only the new ones
    other.commit()
    assert pg.seqs_above(dev, 0) == [1, 2, 3, 4, 5]
    assert [f.received_at for f in pg.frames_after(dev, 0)] == [1.0, 1.0, 1.0, 2.0, 2.0]
    other.close()


def test_a_text_with_a_nul_is_kept_as_none_and_spoils_nothing(pg):
    """PostgreSQL's text (and jsonb) cannot hold NUL: one meter's odd string must not cost the batch."""
    dev = new_meter(pg)
    pg.add_frames([Frame(dev, 1, M.EVENT, JAN, 0, b"evidence\x00")], 1.0)
    pg.add_events([Event(dev, 1, 1, 8, "a\x00b", JAN), Event(dev, 2, 2, 8, "fine", JAN)])
    pg.add_hellos([Hello(dev, 3, JAN, 0, "fw\x00", "esp32", 4, 1000, 999_000, 100_000, 10)])
    pg.add_rejects([RejectRecord(dev, "10.0.0.1", "bad-signature", 1, 1.0, 1.0, "detail\x00")])
    pg.commit()
    assert [e.value for e in pg.events(dev)] == [None, "fine"]
    assert (pg.meter(dev).firmware, pg.meter(dev).board) == (None, "esp32")
    assert pg.rejects()[0].last_detail is None and pg.frame_raw(dev, 1) == b"evidence\x00"
    assert pg.lookup_device("no\x00body") is None
