"""The head-end store (meterkit.store.api) on both backends, a real SQLite file and a real PostgreSQL database
(the `store` and `store_db` fixtures of tests/host/conftest.py): the registry, dedupe by (device, seq) and
(device, end time), transactions, counters, fleet and export queries, and the records it takes and gives. What
only one backend has stays with it: SQLite's WAL, pragmas and file migrations here, PostgreSQL's schema,
partitions and triggers in test_store_postgres.py."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meterkit import wire as P
from meterkit.store import StoreError, api, open_store
from meterkit.store.records import CommandRecord, DeliveryState, NewMeter, RejectRecord
from meterkit.store.sqlite import SCHEMA_VERSION, SQLiteStore
from meterkit.store.sqlite.base import i64, registers_json
from meterkit.testing.sqlfile import old_database, sql
from meterkit.wire.records import (
    BillingSnapshot,
    CommandResponse,
    Event,
    Frame,
    Hello,
    IntervalRow,
    Reading,
)


def new_key() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    k = ec.generate_private_key(ec.SECP256R1())
    point = P.public_bytes(k.public_key())
    return k, point, P.key_id(point)


def frame(dev: bytes, seq: int, kind: int = M.READING, t: int = 1_700_000_000, raw: bytes = b"x" * 90) -> Frame:
    return Frame(dev, seq, kind, t, 0, raw)


def marks(rows) -> list[tuple]:
    """(end, period_s, seq, status) of interval records: what the concentrator looks at around a gap."""
    return [None if r is None else (r.end, r.period_s, r.seq, r.status) for r in rows]


def answer(dev: bytes, counter: int, result: int = 0, reason: str | None = None) -> CommandResponse:
    return CommandResponse(dev, 99, counter, result, reason)


FRAME_COLUMNS = "device, seq, kind, meter_time, status, received_at, raw"


def test_new_file_is_wal_full_and_current(tmp_path):
    path = tmp_path / "head.db"
    s = SQLiteStore(path)
    assert s.version == SCHEMA_VERSION == 9
    assert s.migrated == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert sql(s, "PRAGMA journal_mode")[0][0] == "wal"
    assert sql(s, "PRAGMA synchronous")[0][0] == 2  # FULL: a returned commit is on disk
    tables = {r[0] for r in sql(s, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meters", "frames", "readings", "intervals", "events", "billing", "commands", "outages", "gaps",
            "rejects", "counters", "schema_version"} <= tables
    s.close()
    again = SQLiteStore(path)  # reopening applies nothing
    assert again.migrated == [] and again.version == SCHEMA_VERSION
    again.close()


def test_migration_v1_to_current_keeps_data_and_derives_state(tmp_path):
    path = tmp_path / "old.db"
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    meter = "INSERT INTO meters (device, public_key, name, provisioned_at) VALUES (?, ?, ?, ?)"
    assert old_database(
        path, 1, (meter, (dev, point, "house", 1.0)), (meter, (dev2, point2, "shed", 1.0)),
        # 8 missing: the ack may only cover 5..7
        *((f"INSERT INTO frames ({FRAME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", (dev, seq, M.READING,
                                                                                 1_700_000_000, 0, 1.5, b"x" * 90))
          for seq in (5, 6, 7, 9, 10)),
        ("INSERT INTO readings (device, seq, meter_time, status, import_wh, export_wh, registers, power_mw, "
         "voltage_mv, current_ma, uncovered_ppm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
         (dev, 7, 1_700_000_000, 0, 1234, 5, '{"1.8.0": 1234, "2.8.0": 5}', 1, 2, 3, 0))) == [1]
    assert sql(path, "SELECT max(version) FROM schema_version")[0][0] == 1
    cols_v1 = {r[1] for r in sql(path, "PRAGMA table_info(meters)")}
    assert "ack_seq" not in cols_v1

    s = SQLiteStore(path)
    assert s.migrated == [2, 3, 4, 5, 6, 7, 8, 9] and s.version == SCHEMA_VERSION
    versions = [r[0] for r in sql(s, "SELECT version FROM schema_version ORDER BY version")]
    assert versions == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    m = s.meter(dev)
    assert (m.name, m.frames_stored, m.first_seq, m.ack_seq, m.online) == ("house", 5, 5, 7, False)
    m2 = s.meter(dev2)
    assert (m2.frames_stored, m2.first_seq, m2.ack_seq) == (0, None, None)
    assert s.seqs_above(dev, 0) == [5, 6, 7, 9, 10]
    assert s.fleet()[0].import_wh == 1234
    # the tables v2 brought work
    oid = s.open_outage(dev, 10.0, 20.0)
    s.add_counters({"frames_stored": 5})
    s.commit()
    assert s.outages(dev)[0].id == oid and s.counters() == {"frames_stored": 5}
    s.close()


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    sql(path, "INSERT INTO schema_version (version, applied_at, description) VALUES (99, 0, 'from the future')")
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
    recs = store.register_meters([NewMeter(point, f"m{i}", 900) for i, (_, point, _) in enumerate(keys)], now=5.0)
    assert [r.device_id for r in recs] == [dev for _, _, dev in keys]
    assert len(store.meters()) == 50 and store.meter(keys[3][2]).name == "m3"
    store.register_meters([NewMeter(keys[3][1], None, 60)])  # again: period updated, name kept
    assert (store.meter(keys[3][2]).name, store.meter(keys[3][2]).reporting_period_s) == ("m3", 60)
    with pytest.raises(ValueError):
        store.register_meters([NewMeter(keys[0][1], "x", 900), NewMeter(b"\x04" + b"\x02" * 64, "bad", 900)])
    assert store.meter(keys[0][2]).name == "m0"  # nothing of the refused batch was written


def test_frames_dedupe_by_device_and_seq(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meter(dev, point)
    store.register_meter(dev2, point2)
    assert store.add_frames([frame(dev, 1), frame(dev, 2), frame(dev2, 1)], 1.5) == 3
    assert store.add_frames([frame(dev, 2), frame(dev, 3)], 1.5) == 1
    assert store.add_frame(frame(dev, 3), 1.5) is False
    assert store.add_frame(frame(dev, 4, raw=b"evidence"), 1.5) is True
    store.commit()
    assert store.seqs_above(dev, 1) == [2, 3, 4]
    assert store.max_seq(dev) == 4 and store.max_seq(dev2) == 1
    assert store.frame_raw(dev, 4) == b"evidence" and store.frame_raw(dev, 99) is None
    iv = [IntervalRow(dev, 900, 10, 0, 0, 900, 5), IntervalRow(dev, 1800, 20, 0, 0, 900, 5),
          IntervalRow(dev, 900, 11, 0, 0, 900, 6)]
    assert store.add_interval_rows(iv) == 2
    assert marks(store.interval_rows(dev, 0)) == [(900, 900, 5, 0), (1800, 900, 5, 0)]
    assert marks([store.interval_before(dev, 1800)]) == [(900, 900, 5, 0)]
    assert marks([store.interval_after(dev, 900)]) == [(1800, 900, 5, 0)] and store.interval_after(dev, 1800) is None


def test_transactions_commit_and_rollback(store_db):
    a = open_store(store_db)
    _, point, dev = new_key()
    a.register_meter(dev, point)  # committed at once
    b = open_store(store_db)
    assert b.meter(dev) is not None
    a.add_frames([frame(dev, 1)], 1.5)
    assert b.seqs_above(dev, -1) == []  # not visible before commit
    a.rollback()
    assert a.seqs_above(dev, -1) == []
    a.add_frames([frame(dev, 2)], 1.5)
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
    store.add_rejects([RejectRecord(dev, "10.0.0.1", "bad-signature", 2, 5.0, 5.0, "first"),
                       RejectRecord(b"", "10.0.0.2", "noise", 7, 6.0, 6.0, None)])
    store.add_rejects([RejectRecord(dev, "10.0.0.1", "bad-signature", 3, 9.0, 9.0, "latest")])
    store.add_counters({"a": 1, "b": 0})
    store.add_counters({"a": 2})
    store.record_command(CommandRecord(dev, 4, 1, {1: 10, 2: 12}, 50.0, 350))
    gid = store.add_gap(dev, "frames", 10, 12, 40.0)
    assert store.add_gap(dev, "frames", 10, 12, 41.0) is None
    store.update_gap(gid, state="requested", command_counter=4, attempts=1)
    oid = store.open_outage(dev, 100.0, 300.0)
    store.commit()
    rej = {r.reason: r for r in store.rejects()}
    assert rej["bad-signature"].count == 5 and rej["bad-signature"].last_detail == "latest"
    assert (rej["bad-signature"].first_at, rej["bad-signature"].last_at) == (5.0, 9.0)
    assert rej["noise"].count == 7 and rej["noise"].device_id == b""
    assert store.counters() == {"a": 3}
    cmd = store.record_response(answer(dev, 4), 60.0)
    assert (cmd.op, cmd.args) == (1, {1: 10, 2: 12})  # the arguments as sent
    assert store.record_response(answer(dev, 5), 60.0) is None
    assert store.record_response(answer(dev, 2**64 - 1), 60.0) is None
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
    assert f.outages == 1 and f.outage_open == 0 and f.gaps_open == 1


def test_export_tables(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meter(dev, point, "a")
    store.register_meter(dev2, point2, "b")
    store.add_readings([Reading(dev, 1, 1000, 0, {M.OBIS_IMPORT: 5, M.OBIS_EXPORT: 1}, 10, 20, 30, 0),
                        Reading(dev2, 1, 1000, 0, {M.OBIS_IMPORT: 7, M.OBIS_EXPORT: 0}, 10, 20, 30, 0)])
    store.add_events([Event(dev, 2, 1, 8, "boot", 999)])
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
    assert i64(2**63 - 1) == 2**63 - 1 and i64(-(2**63)) == -(2**63)
    assert i64(2**63) is None and i64(-(2**63) - 1) is None


def test_register_json_is_what_json_dumps_gives():
    regs = {M.OBIS_IMPORT: 5, M.OBIS_IMPORT + 1: 3, M.OBIS_EXPORT: -1, M.obis_key("255.99.99"): 2**70}
    expected = json.dumps({M.obis_code(k): v for k, v in regs.items()})
    assert registers_json(regs) == expected
    assert registers_json(regs) == expected  # the cached template


# --- the records the store takes and gives ------------------------------------------------------------------


def test_every_protocol_is_implemented(store, tmp_path):
    assert isinstance(store, api.Store)
    for proto in (api.Registry, api.Delivery, api.Evidence, api.Profile, api.Events, api.Billing, api.Outages,
                  api.Commands, api.Counting, api.ReadOuts, api.Transactions):
        assert isinstance(store, proto), proto.__name__
    with open_store(tmp_path / "other.db") as s:
        assert isinstance(s, api.Store)
    with pytest.raises(StoreError, match="no such database"):
        open_store(tmp_path / "missing.db", create=False)


def test_values_beyond_64_bits_read_back_as_none_the_frame_keeps_them(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    big = 2**64 - 1
    store.add_readings([Reading(dev, 1, 1000, big, {M.OBIS_IMPORT: big, M.OBIS_EXPORT: 1}, 10, 20, 30, 0)])
    store.add_interval_rows([IntervalRow(dev, 900, big, 0, 0, 900, 1)])
    store.add_events([Event(dev, 2, big, 8, big, 999), Event(dev, 3, 4, 8, "text", 999)])
    store.commit()
    assert sql(store, "SELECT status, import_wh, export_wh, registers FROM readings") == [
        (None, None, 1, '{"1.8.0": 18446744073709551615, "2.8.0": 1}')]
    assert store.fleet()[0].import_wh is None
    r = store.interval_rows(dev)[0]
    assert (r.end, r.import_mwh, r.export_mwh, r.period_s) == (900, None, 0, 900)
    e2, e3 = store.events(dev)
    assert (e2.event_seq, e2.code, e2.value, e3.value) == (None, 8, str(big), "text")


def test_events_by_frame_and_code(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    store.add_events([Event(dev, s, s, 10 + s % 2, s * 100, 1000 + s) for s in range(1, 7)])
    store.add_events([Event(dev, 1, 77, 77, 77, 77)])  # frame 1's event is stored already
    store.commit()
    assert [e.seq for e in store.events(dev)] == [1, 2, 3, 4, 5, 6]
    assert [(e.seq, e.code, e.value, e.time) for e in store.events(dev, seqs=[4, 1])] == [(1, 11, 100, 1001),
                                                                                           (4, 10, 400, 1004)]
    assert [e.seq for e in store.events(dev, codes=[11])] == [1, 3, 5]
    assert [e.seq for e in store.events(dev, seqs=[2, 3], codes=[11])] == [3]
    assert store.events(dev, seqs=[]) == []


def test_billing_snapshots_round_trip(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    regs = {M.OBIS_IMPORT: 120, M.OBIS_IMPORT + 1: 100, M.OBIS_IMPORT + 2: 20, M.OBIS_EXPORT: 2**64 - 1}
    md = {10600: (1500, 1_700_000_900), 10601: (1500, 1_700_000_900)}
    snaps = [BillingSnapshot(dev, 9, 1_700_086_400, regs, md), BillingSnapshot(dev, 4, 1_700_000_000, regs, {})]
    store.add_billing_snapshots(snaps)
    store.commit()
    assert store.billing_snapshots(dev) == [snaps[1], snaps[0]]
    names, rows = store.export("billing", dev)
    row = dict(zip(names, next(rows), strict=True))
    assert (row["registers"], row["max_demand"]) == (
        '{"1.8.0": 120, "1.8.1": 100, "1.8.2": 20, "2.8.0": 18446744073709551615}', None)


def test_frames_after_and_max_seq_by_receive_time(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    store.add_frames([frame(dev, 1, M.HELLO, 100), frame(dev, 2, t=160)], 10.0)
    store.add_frames([frame(dev, 3, M.EVENT, 220)], 20.0)
    store.commit()
    assert [(f.seq, f.kind, f.meter_time, f.status, f.received_at) for f in store.frames_after(dev, -1)] == [
        (1, M.HELLO, 100, 0, 10.0), (2, M.READING, 160, 0, 10.0), (3, M.EVENT, 220, 0, 20.0)]
    assert [f.seq for f in store.frames_after(dev, 1, received_to=15.0)] == [2]
    assert [f.seq for f in store.frames_after(dev, -1, limit=1)] == [1]
    assert len(store.frames_after(dev, -1, limit=None)) == 3
    assert (store.max_seq(dev), store.max_seq(dev, received_to=15.0), store.max_seq(dev, received_to=5.0)) == (
        3, 2, None)


def test_delivery_state_hellos_and_counters_in_one_transaction(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meters([NewMeter(point, "a"), NewMeter(point2, "b")])
    store.save_delivery([DeliveryState(dev, 50.0, 7, 1, 7, 12)])
    store.save_counters({dev2: 3})
    store.add_hellos([Hello(dev, 1, 100, 0, "fw-1", "esp32", 4, 1000, 999_000, 100_000, 10),
                      Hello(dev, 5, 200, 0, "fw-2", "esp32", 2**64, 1000, 999_000, 100_000, 10)])
    store.rollback()
    assert store.meter(dev).ack_seq is None and store.meter(dev2).last_counter == 0
    store.save_delivery([DeliveryState(dev, 50.0, 7, 1, 7, 12)])
    store.save_counters({dev2: 3})
    store.add_hellos([Hello(dev, 1, 100, 0, "fw-1", "esp32", 4, 1000, 999_000, 100_000, 10),
                      Hello(dev, 5, 200, 0, "fw-2", "esp32", 2**64, 1000, 999_000, 100_000, 10)])
    store.commit()
    m = store.meter(dev)
    assert (m.last_seen, m.ack_seq, m.first_seq, m.frames_stored, m.last_counter, m.online) == (
        50.0, 7, 1, 7, 12, True)
    assert (m.firmware, m.board, m.boot_count) == ("fw-2", "esp32", None)  # the latest hello; its count beyond 2^63
    assert store.meter(dev2).last_counter == 3
    store.update_meter(dev, online=False)
    store.commit()
    assert store.meter(dev).online is False


def test_delivery_state_carries_the_clock_drift_measured_else_keeps_it(store):
    _, point, dev = new_key()
    _, point2, dev2 = new_key()
    store.register_meters([NewMeter(point, "a"), NewMeter(point2, "b")])
    store.save_delivery([DeliveryState(dev, 50.0, 7, 1, 7, 12, True, -30.5, 49.0),
                         DeliveryState(dev2, 50.0, 3, 0, 4, 2, True, None, None)])
    store.commit()
    assert (store.meter(dev).clock_drift_s, store.meter(dev).clock_drift_at) == (-30.5, 49.0)
    assert (store.meter(dev2).clock_drift_s, store.meter(dev2).clock_drift_at) == (None, None)
    store.save_delivery([DeliveryState(dev, 60.0, 8, 1, 8, 13)])  # not measured in this batch: kept
    store.commit()
    m = store.meter(dev)
    assert (m.ack_seq, m.last_seen, m.clock_drift_s, m.clock_drift_at) == (8, 60.0, -30.5, 49.0)


def test_commands_attempts_and_answers(store):
    _, point, dev = new_key()
    store.register_meter(dev, point)
    qid = store.queue_command(dev, 3, None, 10.0, 1000)
    store.record_command(CommandRecord(dev, 5, 3, None, 11.0, 311, queue_id=qid))
    store.record_command(CommandRecord(dev, 6, 3, None, 20.0, 320, queue_id=qid))
    cmd = store.record_response(answer(dev, 6, -4, "rejected: no"), 21.0)
    store.commit()
    assert cmd == CommandRecord(dev, 6, 3, None, 20.0, 320, qid, 21.0, -4, "rejected: no")
    assert [(c.counter, c.answered_at, c.result) for c in store.command_attempts(qid)] == [(5, None, None),
                                                                                          (6, 21.0, -4)]
    store.update_queued(qid, state="answered", result=2**64 - 1)  # an answer beyond what the store holds
    assert store.queued_commands(ids=[qid])[0].result is None
    assert store.queued_for_counter(dev, 5).id == qid
