"""Operator commands, the queue side: the command_queue table and its migration (schema v2 -> v3), queueing
checks (meter.tou validates the calendar, a past activation is refused, the payload fits what a meter verifies),
and `meterkit command calendar | billing-reset | profile | list` on a real SQLite file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meterkit import cli
from meterkit import wire as P
from meterkit.headend import commands
from meterkit.store import api, open_store
from meterkit.store.records import CommandRecord
from meterkit.store.sqlite import SCHEMA_VERSION, SQLiteStore
from meterkit.testing.sqlfile import old_database, sql
from meterkit.wire.records import CommandResponse

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z
# the two-rate night calendar of the examples (22:00-06:00 CET tariff 2)
NIGHT = json.loads((Path(__file__).resolve().parents[2] / "examples/tariffs/night-2rate.calendar.json").read_text())


def new_meter() -> tuple[bytes, bytes]:
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    return P.key_id(point), point


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A database with one registered meter 'house'; the CLI's clock at NOW."""
    path = tmp_path / "head.db"
    dev, point = new_meter()
    with SQLiteStore(path) as s:
        s.register_meter(dev, point, "house")
    monkeypatch.setattr(commands, "clock", lambda: float(NOW))
    monkeypatch.delenv("METERKIT_DB", raising=False)
    return path, dev


def queue_rows(path) -> list[tuple]:
    """(op, args, state) of every queued command, oldest first."""
    with SQLiteStore(path, create=False, readonly=True) as s:
        return [(q.op, q.args, q.state) for q in s.queued_commands()]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_calendar(tmp_path, cal, name="cal.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(cal) if not isinstance(cal, str) else cal)
    return str(p)


# --- the queue in the store ---------------------------------------------------------------------------------


def test_queue_round_trip_states_and_attempts(store_db):
    dev, point = new_meter()
    with open_store(store_db) as s:
        s.register_meter(dev, point, "house")
        qid = s.queue_command(dev, commands.OP_CALENDAR, {1: NIGHT, 2: NOW + 3600}, NOW, NOW + 3600, note="ops")
        q2 = s.queue_command(dev, commands.OP_BILLING_RESET, None, NOW + 1, NOW + 7200)
        s.commit()
        q = s.queued_commands(ids=[qid])[0]
        assert (q.device_id, q.op, q.state, q.attempts, q.counter, q.note) == (dev, 2, "queued", 0, None, "ops")
        assert q.args == {1: NIGHT, 2: NOW + 3600}  # top-level keys are ints again, the calendar's text keys kept
        assert [x.id for x in s.queued_commands(dev, ("queued",))] == [qid, q2]
        # an attempt: the concentrator records the signed command with its queue id
        s.record_command(CommandRecord(dev, 7, commands.OP_CALENDAR, q.args, NOW + 5, NOW + 305, queue_id=qid))
        s.update_queued(qid, state="sent", counter=7, attempts=1, sent_at=NOW + 5)
        s.commit()
        q = s.queued_commands(ids=[qid])[0]
        assert (q.state, q.counter, q.attempts, q.attempt_expires) == ("sent", 7, 1, NOW + 305)
        assert s.queued_for_counter(dev, 7).id == qid
        assert s.queued_for_counter(dev, 8) is None and s.queued_for_counter(dev, 2**64 - 1) is None
        # a back-fill (no queue entry) is not an operator command
        s.record_command(CommandRecord(dev, 9, 1, {1: 3, 2: 4}, NOW, NOW + 300))
        assert s.queued_for_counter(dev, 9) is None
        cmd = s.record_response(CommandResponse(dev, 1, 7, 0, None), NOW + 6)
        assert (cmd.op, cmd.args) == (2, {1: NIGHT, 2: NOW + 3600})  # the arguments as sent
        s.update_queued(qid, state="answered", answered_at=NOW + 6, result=0)
        s.commit()
        assert [(a.counter, a.sent_at, a.expires_at, a.answered_at, a.result, a.reason)
                for a in s.command_attempts(qid)] == [(7, NOW + 5, NOW + 305, NOW + 6, 0, None)]
        assert [x.id for x in s.queued_commands(states=api.QUEUE_PENDING)] == [q2]
        with pytest.raises(ValueError, match="unknown command queue fields"):
            s.update_queued(qid, device=b"")
        with pytest.raises(ValueError, match="state must be one of"):
            s.update_queued(qid, state="done")
        with pytest.raises(ValueError):
            s.queue_command(dev, -1, None, NOW, NOW + 1)
        with pytest.raises(ValueError):
            s.queue_command(dev, 3, {"1": 2}, NOW, NOW + 1)
        names, rows = s.export("command_queue", dev)
        rows = [dict(zip(names, r, strict=True)) for r in rows]
        assert [(r["id"], r["state"], r["result"]) for r in rows] == [(qid, "answered", 0), (q2, "queued", None)]


def test_migration_v2_to_v3_keeps_commands_and_adds_the_queue(tmp_path):
    path = tmp_path / "old.db"
    dev, point = new_meter()
    assert old_database(
        path, 2,
        ("INSERT INTO meters (device, public_key, name, provisioned_at, last_counter) VALUES (?, ?, ?, ?, ?)",
         (dev, point, "house", 1.0, 41)),
        ("INSERT INTO commands (device, counter, op, args, sent_at, expires_at, answered_at, result, reason) "
         "VALUES (?, 40, 1, '{\"1\": 3, \"2\": 5}', 10.0, 310, 20.0, -1, 'gone 3..5')", (dev,))) == [1, 2]
    assert "queue_id" not in {r[1] for r in sql(path, "PRAGMA table_info(commands)")}

    s = SQLiteStore(path)
    assert s.migrated == [3, 4, 5, 6, 7, 8, 9] and s.version == SCHEMA_VERSION == 9
    row = sql(s, "SELECT counter, op, result, reason, queue_id FROM commands")[0]
    assert tuple(row) == (40, 1, -1, "gone 3..5", None)  # the back-fill history is kept, linked to nothing
    assert s.meter(dev).last_counter == 41
    assert s.queued_commands() == []
    qid = s.queue_command(dev, commands.OP_PROFILE, {1: NOW - 3600, 2: NOW}, NOW, NOW + 60)
    s.commit()
    assert s.queued_commands(dev)[0].id == qid
    s.close()
    # a migrated file is opened by this meterkit without migrating, also read-only
    ro = SQLiteStore(path, readonly=True)
    assert ro.migrated == [] and ro.queued_commands(dev)[0].args == {1: NOW - 3600, 2: NOW}
    ro.close()


def test_queue_checks_before_anything_is_written(store_db):
    dev, point = new_meter()
    with open_store(store_db) as s:
        s.register_meter(dev, point)
        with pytest.raises(commands.CommandError, match="not in the future"):
            commands.calendar_args(NIGHT, NOW, NOW)
        bad = copy.deepcopy(NIGHT)
        bad["days"]["d"][0] = [30, 2]
        with pytest.raises(commands.CommandError, match="first switch must be at minute 0"):
            commands.calendar_args(bad, NOW + 60, NOW)
        with pytest.raises(commands.CommandError, match="after --to"):
            commands.profile_args(NOW, NOW - 1)
        # a calendar can be valid for meter.tou and still not fit a command a meter verifies
        big = copy.deepcopy(NIGHT)
        big["special"] = [{"name": f"holiday number {i:03d}", "date": [2027, 1 + i // 28, 1 + i % 28], "day": "d"}
                          for i in range(120)]
        args = commands.calendar_args(big, NOW + 60, NOW)
        with pytest.raises(commands.CommandError, match="at most 3072"):
            commands.queue(s, dev, commands.OP_CALENDAR, args, NOW)
        # small in bytes, but more data items than a meter decodes
        many = copy.deepcopy(NIGHT)
        many["special"] = [{"date": [1 + i // 28, 1 + i % 28], "day": "d"} for i in range(80)]
        args = commands.calendar_args(many, NOW + 60, NOW)
        assert commands.payload_bound(commands.OP_CALENDAR, args) < 3072
        with pytest.raises(commands.CommandError, match="decodes at most 512"):
            commands.queue(s, dev, commands.OP_CALENDAR, args, NOW)
        # floats are not CBOR a meter reads (meter.tou does not look at a special day's name)
        flt = copy.deepcopy(NIGHT)
        flt["special"] = [{"name": 1.5, "date": [12, 25], "day": "d"}]
        with pytest.raises(commands.CommandError, match="cannot be sent"):
            commands.queue(s, dev, commands.OP_CALENDAR, commands.calendar_args(flt, NOW + 60, NOW), NOW)
        with pytest.raises(commands.CommandError, match="expires"):
            commands.queue(s, dev, commands.OP_BILLING_RESET, None, NOW, expires=NOW)
        assert s.queued_commands() == []
        # what fits is queued; a calendar's expiry is capped at its activation
        qid = commands.queue(s, dev, commands.OP_CALENDAR, commands.calendar_args(NIGHT, NOW + 600, NOW), NOW)
        assert s.queued_commands()[0].expires_at == NOW + 600
        qid2 = commands.queue(s, dev, commands.OP_BILLING_RESET, None, NOW)
        assert s.queued_commands(ids=[qid2])[0].expires_at == NOW + commands.DEFAULT_VALID_S
        assert commands.payload_bound(commands.OP_CALENDAR, s.queued_commands(ids=[qid])[0].args) < 3072


@pytest.mark.parametrize(("text", "want"), [
    ("2026-12-01T00:00Z", 1_796_083_200), ("2026-12-01T00:00", 1_796_083_200), ("2026-12-01 00:00:00z", 1_796_083_200),
    ("2026-12-01T01:00+01:00", 1_796_083_200), ("1796083200", 1_796_083_200), ("0", 0)])
def test_when_parses_utc_iso_and_unix_seconds(text, want):
    assert commands.parse_when(text) == want


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T00:00Z", "5000000000", "-5", "2026-12-01T00:00:00.5Z"])
def test_when_refuses_what_is_not_a_utc_second(text):
    with pytest.raises(commands.CommandError):
        commands.parse_when(text)


# --- the command line ---------------------------------------------------------------------------------------


def test_cli_calendar_queues_and_lists(fleet, tmp_path, capsys):
    path, dev = fleet
    cal = write_calendar(tmp_path, NIGHT)
    code, out, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house", "--calendar", cal,
                             "--activate", "2026-12-01T00:00Z")
    assert code == 0, err
    assert "queued command #1 for meter house" in out and "'two-rate night'" in out
    assert "2026-12-01T00:00:00Z" in out and "when the meter connects" in out
    [(op, args, state)] = queue_rows(path)
    assert (op, state) == (2, "queued")
    assert args == {1: NIGHT, 2: 1_796_083_200}
    # by device id too, and the other two operations
    assert run_cli(capsys, "command", "billing-reset", "--db", str(path), "--meter", dev.hex())[0] == 0
    code, out, err = run_cli(capsys, "command", "profile", "--db", str(path), "--meter", "house",
                             "--from", "2026-09-20T00:00Z", "--to", str(NOW))
    assert code == 0, err
    assert [(r[0], r[2]) for r in queue_rows(path)] == [(2, "queued"), (3, "queued"), (4, "queued")]
    assert queue_rows(path)[2][1] == {1: 1_789_862_400, 2: NOW}

    code, out, _ = run_cli(capsys, "command", "list", "--db", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["#", "meter", "operation", "state"]
    assert "calendar" in lines[1] and "queued" in lines[1] and "billing-reset" in lines[2] and "profile" in lines[3]
    code, out, _ = run_cli(capsys, "command", "list", "--db", str(path), "--meter", "house", "--json")
    rows = json.loads(out)
    assert [(r["id"], r["operation"], r["state"], r["result"]) for r in rows] == [
        (1, "calendar", "queued", None), (2, "billing-reset", "queued", None), (3, "profile", "queued", None)]
    assert rows[0]["args"]["1"]["name"] == "two-rate night" and rows[0]["device"] == dev.hex()
    assert rows[0]["expires_at"] == 1_796_083_200  # capped at the activation
    # the concentrator's work shows: an answer with result and reason
    with SQLiteStore(path) as s:
        s.update_queued(3, state="answered", result=-1, reason="no rows", counter=12, attempts=1)
        s.commit()
    code, out, _ = run_cli(capsys, "command", "list", "--db", str(path), "--state", "answered")
    assert len(out.splitlines()) == 2 and "answered" in out and "-1" in out and "no rows" in out


def test_cli_bad_calendar_is_refused_and_nothing_queued(fleet, tmp_path, capsys):
    path, _ = fleet
    bad = copy.deepcopy(NIGHT)
    bad["days"]["d"] = [[0, 2], [360, 3]]  # tariff 3 in a two-tariff calendar
    code, out, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house",
                             "--calendar", write_calendar(tmp_path, bad), "--activate", "2026-12-01T00:00Z")
    assert code == 1 and out == ""
    assert "meterkit command calendar:" in err and "calendar days['d'][1]: tariff 3 outside 1..2" in err
    code, _, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house",
                           "--calendar", write_calendar(tmp_path, "{not json", "x.json"), "--activate", "2026-12-01")
    assert code == 1 and "not JSON" in err
    code, _, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house",
                           "--calendar", str(tmp_path / "missing.json"), "--activate", "2026-12-01")
    assert code == 1 and "cannot read" in err
    typo = dict(NIGHT, season=[])
    code, _, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house",
                           "--calendar", write_calendar(tmp_path, typo), "--activate", "2026-12-01")
    assert code == 1 and "unknown key 'season'" in err
    assert queue_rows(path) == []


def test_cli_past_activation_is_refused(fleet, tmp_path, capsys):
    path, _ = fleet
    cal = write_calendar(tmp_path, NIGHT)
    for when in ("2026-01-01T00:00Z", str(NOW)):
        code, out, err = run_cli(capsys, "command", "calendar", "--db", str(path), "--meter", "house",
                                 "--calendar", cal, "--activate", when)
        assert code == 1 and out == ""
        assert "is not in the future" in err and "give a later --activate" in err
    assert queue_rows(path) == []
    code, _, err = run_cli(capsys, "command", "billing-reset", "--db", str(path), "--meter", "house",
                           "--expires", "2026-01-01T00:00Z")
    assert code == 1 and "--expires" in err and "not in the future" in err
    assert queue_rows(path) == []


def test_cli_unknown_meter_missing_database_and_bad_times(fleet, tmp_path, capsys):
    path, _ = fleet
    code, _, err = run_cli(capsys, "command", "billing-reset", "--db", str(path), "--meter", "garage")
    assert code == 2 and "no meter 'garage'" in err
    missing = tmp_path / "nope.db"
    code, _, err = run_cli(capsys, "command", "billing-reset", "--db", str(missing), "--meter", "house")
    assert code == 2 and "no such database" in err and not missing.exists()
    code, _, err = run_cli(capsys, "command", "profile", "--db", str(path), "--meter", "house",
                           "--from", "2026-09-21T00:00Z", "--to", "2026-09-20T00:00Z")
    assert code == 1 and "after --to" in err
    with pytest.raises(SystemExit):
        cli.main(["command", "profile", "--db", str(path), "--meter", "house", "--from", "yesterday", "--to", "0"])
    assert "not a UTC time: 'yesterday'" in capsys.readouterr().err
    assert queue_rows(path) == []


def test_cli_default_db_follows_meterkit_db(fleet, tmp_path, capsys, monkeypatch):
    path, _ = fleet
    monkeypatch.setenv("METERKIT_DB", str(path))
    code, out, err = run_cli(capsys, "command", "billing-reset", "--meter", "house")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "command", "list", "--json")
    assert [r["operation"] for r in json.loads(out)] == ["billing-reset"]


def test_the_host_queues_only_what_a_meter_takes(store_db):
    """Issue 11, finding 3: the head-end checks every command against meter.cmdschema, the table the meter
    refuses commands by, so it never queues (or signs: test_commands_concentrator) what a meter refuses."""
    from meter import cmdschema

    dev, point = new_meter()
    with open_store(store_db) as s:
        s.register_meter(dev, point)
        for op, args, why in [
            (commands.OP_BILLING_RESET, {13: 1}, "unknown key 13"),
            (commands.OP_PROFILE, {1: NOW - 60, 2: True}, "2 must be utc"),
            (commands.OP_PROFILE, {1: NOW - 60}, "2 missing"),
            (commands.OP_SET_TIME, {2: "yes"}, "2 must be true or false"),
            (commands.OP_CALENDAR, {1: NIGHT, 2: NOW + 60, 3: 0}, "unknown key 3"),
            (99, None, "unknown operation 99"),
        ]:
            with pytest.raises(commands.CommandError, match=why):
                commands.queue(s, dev, op, args, NOW)
        with pytest.raises(commands.CommandError, match="--expires must be UTC seconds"):
            commands.queue(s, dev, commands.OP_BILLING_RESET, None, NOW, expires=1 << 32)
        assert s.queued_commands() == []
    # what the builders make, as it is signed, is exactly what a meter takes
    for op, args in [(commands.OP_CALENDAR, commands.calendar_args(NIGHT, NOW + 60, NOW)),
                     (commands.OP_PROFILE, commands.profile_args(NOW - 3600, NOW)),
                     (commands.OP_SET_TIME, commands.set_time_args(True)),
                     (commands.OP_SET_TIME, commands.set_time_args(False)),
                     (commands.OP_BILLING_RESET, None)]:
        assert cmdschema.check(op, commands.signed_args(op, args, NOW)) is None, (op, args)
