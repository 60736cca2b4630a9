"""`meterkit migrate --from FILE --to URL`: a SQLite head-end filled by a real concentrator session
(meterkit.testing.headend_db: signed frames, a back-filled gap, commands with their queue and audit log, outages,
billing snapshots, rejects, counters, demand response, the key ring) moved into a real PostgreSQL database
(meterkit.testing.pgplugin's pg_url), verified; the same `status`, `export` and `bill` on both; a concentrator
that carries on against the copy. Refusals: a target that holds data, a source missing or at an old schema,
PostgreSQL unreachable, a table the migration does not know; a tampered frame or a failure half-way rolls the
whole copy back."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket

import pytest

from meterkit.cli import main as meterkit
from meterkit.store import open_store
from meterkit.store.api import EXPORT_TABLES
from meterkit.store.transfer import TABLES
from meterkit.testing.headend_db import fill
from meterkit.testing.rig import LoopbackRig
from meterkit.testing.sqlfile import old_database, sql

PRICES = {"name": "flat", "currency": "EUR", "tariffs": {"1": {"name": "flat", "import": "0.3012", "export": "0.08"}},
          "fixed": "9.90"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The filled head-end, made once; tests that change a source change a copy of it (a_copy)."""
    return fill(tmp_path_factory.mktemp("head") / "fleet.db", meters=3, readings=12)


def a_copy(source, tmp_path) -> str:
    dst = tmp_path / "fleet.db"
    shutil.copy(source.db, dst)
    return str(dst)


def counts(db) -> dict[str, int]:
    """Rows per table, counted with SQL of its own (not the migration's)."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        with open_store(db) as s:
            return {t: sql(s, f"SELECT count(*) FROM {t}")[0][0] for t, _ in TABLES}
    return {t: sql(db, f"SELECT count(*) FROM {t}")[0][0] for t, _ in TABLES}


def migrate(capsys, *argv: str) -> tuple[int, str, str]:
    code = meterkit(["migrate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run(capsys, *argv: str) -> str:
    assert meterkit(list(argv)) == 0
    return capsys.readouterr().out


def test_everything_moved_verified_and_read_alike(source, pg_url, tmp_path, capsys):
    db = str(source.db)
    before = counts(db)
    code, out, err = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 0, err
    assert counts(pg_url) == before  # every table, every row
    assert all(before[t] > 0 for t, _ in TABLES), before  # the source really holds something everywhere
    for table, _ in TABLES:
        assert f"{table:<13}  {before[table]:>9,}  {before[table]:>10,}  equal" in out
    assert f"signatures: {source.frames:,} frames verified against their meters' keys, 0 failed" in out
    assert before["frames"] == source.frames
    assert "frames: " in err and "rows copied" in err  # progress

    # the commands read the copy as they read the file
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    for argv in (["status"], *(["export", "--table", t] for t in EXPORT_TABLES),
                 ["bill", "--meter", "m001", "--period", "2023-11", "--prices", str(prices)]):
        on_file = run(capsys, *argv, "--db", db)
        assert run(capsys, *argv, "--db", pg_url) == on_file, argv
    assert "TOTAL EUR" in on_file

    # nothing written to the source; a second look finds the copy equal
    assert counts(db) == before
    code, out, _ = migrate(capsys, "--from", db, "--to", pg_url, "--verify-only")
    assert code == 0 and "verified in" in out and "copied in" not in out

    # ids go on after the copied ones (command_queue ids are what commands and audit name)
    with open_store(pg_url) as s:
        m = s.meters()[0].device_id
        assert s.queue_command(m, 3, None, 1.0, 2, None, "test") == before["command_queue"] + 1
        assert s.audit()[-1].id == before["audit"] + 1
        s.rollback()


def test_a_concentrator_carries_on_against_the_copy(source, tmp_path, pg_url, capsys):
    db = a_copy(source, tmp_path)
    assert migrate(capsys, "--from", db, "--to", pg_url)[0] == 0
    m = source.meters[1]

    async def main():
        async with LoopbackRig(pg_url, source.headend) as rig:
            cl = await rig.connect(m)
            seq = m.seq.next
            cl.send(m.reading())
            await cl.wait_ack(seq)  # the watermark continues from the copied one: no gap
            assert cl.refused == []
            return rig.store.gaps(m.device_id, "frames", states=["open", "requested"])

    assert asyncio.run(asyncio.wait_for(main(), 30)) == []


def test_a_target_that_holds_data_is_refused_and_untouched(source, pg_url, capsys):
    with open_store(pg_url) as s:
        s.add_counters({"by hand": 1})
        s.commit()
    code, out, err = migrate(capsys, "--from", str(source.db), "--to", pg_url)
    assert code == 2 and out == ""
    assert "already holds data (in counters)" in err and "nothing was changed" in err
    with open_store(pg_url) as s:
        assert s.counters() == {"by hand": 1}
    assert sum(counts(pg_url).values()) == 1


def test_a_tampered_frame_fails_loudly_and_nothing_is_stored(source, tmp_path, pg_url, capsys):
    db = a_copy(source, tmp_path)
    dev = source.meters[2].device_id
    raw = sql(db, "SELECT raw FROM frames WHERE device = ? AND seq = 5", (dev,))[0][0]
    sql(db, "UPDATE frames SET raw = ? WHERE device = ? AND seq = 5", (raw[:-1] + bytes([raw[-1] ^ 1]), dev))
    code, out, err = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 1
    assert f"frame {dev.hex()} seq 5: bad-signature" in out
    assert f"{source.frames - 1:,} frames verified against their meters' keys, 1 failed" in out
    assert "FAILED" in out and "rolled back, nothing was stored" in err
    assert sum(counts(pg_url).values()) == 0


def test_a_frame_stored_under_another_header_fails(source, tmp_path, pg_url, capsys):
    db = a_copy(source, tmp_path)
    dev = source.meters[0].device_id
    sql(db, "UPDATE frames SET meter_time = meter_time + 1 WHERE device = ? AND seq = 3", (dev,))
    code, out, _ = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 1
    assert f"frame {dev.hex()} seq 3: signed as device {dev.hex()} seq 3" in out and "stored otherwise" in out


def test_verify_only_names_what_differs(source, pg_url, capsys):
    db = str(source.db)
    assert migrate(capsys, "--from", db, "--to", pg_url)[0] == 0
    dev = source.meters[0].device_id
    with open_store(pg_url) as s:
        sql(s, "DELETE FROM readings WHERE device = %s AND seq = 4", (dev,))
        sql(s, "UPDATE gaps SET state = 'open' WHERE id = 1")
        s.commit()
    code, out, err = migrate(capsys, "--from", db, "--to", pg_url, "--verify-only")
    assert code == 1 and "verification FAILED" in err and "rolled back" not in err
    n = counts(db)["readings"]
    assert f"readings       {n:>9,}  {n - 1:>10,}  MISMATCH: 1 missing" in out
    assert f"only in SQLite: {dev.hex()}, 4" in out
    assert "gaps" in out and "MISMATCH: 1 differing" in out and "differs: 1" in out


def test_a_failure_half_way_leaves_the_target_empty(source, tmp_path, pg_url, capsys):
    db = a_copy(source, tmp_path)
    sql(db, "UPDATE dr_targets SET queue_id = 'not a number'")  # the last table copied cannot go in
    code, out, err = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 2 and out == ""
    assert "dr_targets" in err and "rolled back, nothing stored" in err
    assert sum(counts(pg_url).values()) == 0


def test_text_postgresql_cannot_hold_is_kept_as_null_and_said(source, tmp_path, pg_url, capsys):
    db = a_copy(source, tmp_path)
    sql(db, "UPDATE rejects SET last_detail = ?", ("a\x00b",))
    code, out, _ = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 0
    assert "note: 1 text value(s) held a NUL character" in out
    with open_store(pg_url) as s:
        assert [r.last_detail for r in s.rejects()] == [None]


def test_source_missing_old_or_unknown_and_target_unreachable(source, tmp_path, pg_url, capsys):
    code, _, err = migrate(capsys, "--from", str(tmp_path / "none.db"), "--to", pg_url)
    assert code == 2 and "none.db: no such database file" in err
    old = tmp_path / "old.db"
    old_database(old, 7)
    code, _, err = migrate(capsys, "--from", str(old), "--to", pg_url)
    assert code == 2 and "schema v7, meterkit migrate reads v9. Upgrade it first" in err
    assert f"meterkit command list --db {old}" in err
    assert meterkit(["command", "list", "--db", str(old)]) == 0  # what the message says does upgrade it
    capsys.readouterr()
    assert migrate(capsys, "--from", str(old), "--to", pg_url)[0] == 0

    db = a_copy(source, tmp_path)
    sql(db, "CREATE TABLE notes (t TEXT)")
    code, _, err = migrate(capsys, "--from", db, "--to", pg_url)
    assert code == 2 and "tables this migration does not know: notes" in err

    with socket.socket() as sk:  # a port nobody listens on: PostgreSQL down
        sk.bind(("127.0.0.1", 0))
        down = f"postgresql://meterkit@127.0.0.1:{sk.getsockname()[1]}/nowhere"
    code, out, err = migrate(capsys, "--from", str(source.db), "--to", down)
    assert code == 2 and out == ""
    assert "server unreachable" in err and "127.0.0.1" in err  # PostgreSQL down: worth trying again later
    code, _, err = migrate(capsys, "--from", str(source.db), "--to", str(tmp_path / "x.db"))
    assert code == 2 and "--to wants a postgresql:// URL" in err
