"""Demand response on a real SQLite file: the v7 tables and their migration, groups (`meterkit dr groups`,
OP_CONFIG A_GROUPS queued), group events (`meterkit dr event`: one OP_DR_EVENT per group meter, each a command
a meter accepts, expiring at the event's end; bad arguments refused with nothing recorded or queued), and
`meterkit dr report` on load-profile rows and meter events stored through the store's API."""

from __future__ import annotations

import datetime as dt
import json
import runpy
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cmdschema
from meter import messages as M
from meter.events import DR_ACCEPTED, DR_OPT_OUT, DR_START
from meterkit import cli
from meterkit import wire as P
from meterkit.dr import programme, report
from meterkit.headend import commands as C
from meterkit.store import open_store
from meterkit.store.sqlite import SCHEMA_VERSION, SQLiteStore
from meterkit.testing.sqlfile import old_database, sql
from meterkit.wire.records import Event, IntervalRow

NOW = int(dt.datetime(2026, 9, 23, 9, 0, tzinfo=dt.timezone.utc).timestamp())  # a Wednesday morning
START = NOW + 8 * 3600  # 17:00Z
PERIOD = 900


def new_key() -> bytes:
    return P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.fixture
def db(store_db, monkeypatch):
    """A database with meters m1..m4 (m1-m3 in group 7, m4 in group 8); the CLI's clock at NOW."""
    path = store_db
    devs = {}
    with open_store(path) as s:
        for i in range(1, 5):
            devs[f"m{i}"] = s.register_meter(None, new_key(), f"m{i}").device_id
        for i in range(1, 4):
            s.set_groups(devs[f"m{i}"], [7])
        s.set_groups(devs["m4"], [8])
        s.commit()
    monkeypatch.setattr(C, "clock", lambda: float(NOW))
    monkeypatch.delenv("METERKIT_DB", raising=False)
    return path, devs


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state(path) -> tuple:
    """Everything the DR commands may write: events, targets, groups, the queue."""
    with open_store(path, create=False, readonly=True) as s:
        return (s.dr_events(), [s.dr_targets(e.id) for e in s.dr_events()],
                {m.device_id: s.groups(m.device_id) for m in s.meters()},
                [(q.device_id, q.op, q.args, q.expires_at, q.state) for q in s.queued_commands()])


# --- the store ----------------------------------------------------------------------------------------------


def test_migration_from_v5_adds_the_dr_tables_and_keeps_the_meters(tmp_path):
    path = tmp_path / "old.db"
    point = new_key()
    dev = P.key_id(point)
    assert old_database(path, 5, ("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES "
                                  "(?, ?, 'house', 1.0)", (dev, point))) == [1, 2, 3, 4, 5]
    assert not sql(path, "SELECT name FROM sqlite_master WHERE name LIKE 'dr_%'")
    with SQLiteStore(path) as s:
        assert s.migrated == [6, 7, 8, 9] and s.version == SCHEMA_VERSION
        assert s.meter(dev).name == "house" and s.groups(dev) == [] and s.dr_events() == []
        assert s.next_dr_id() == 1


def test_groups_replace_and_members(db):
    path, devs = db
    with open_store(path) as s:
        s.set_groups(devs["m1"], [3, 1, 3])
        s.commit()
        assert s.groups(devs["m1"]) == [1, 3]
        assert s.group_members(7) == sorted([devs["m2"], devs["m3"]])
        assert s.group_members(1) == [devs["m1"]]
        with pytest.raises(ValueError, match="0..65535"):
            s.set_groups(devs["m1"], [70000])
        s.rollback()
        assert s.groups(devs["m1"]) == [1, 3]


# --- groups -------------------------------------------------------------------------------------------------


def test_dr_groups_sets_the_registry_and_queues_the_meters_config(db, capsys):
    path, devs = db
    code, out, err = run_cli(capsys, "dr", "groups", "m1", "2,9,2", "--db", str(path))
    assert code == 0, err
    assert "groups 2,9" in out and "queued command #" in out
    _, _, groups, queue = state(path)
    assert groups[devs["m1"]] == [2, 9]
    assert queue == [(devs["m1"], M.OP_CONFIG, {M.A_GROUPS: [2, 9]}, NOW + C.DEFAULT_VALID_S, "queued")]
    assert cmdschema.check(M.OP_CONFIG, queue[0][2]) is None  # what a meter takes
    code, out, _ = run_cli(capsys, "dr", "groups", "--db", str(path))
    assert code == 0 and "m1 (" in out and ": 2,9" in out and ": 8" in out


def test_dr_groups_no_send_and_none_queue_nothing(db, capsys):
    path, devs = db
    assert run_cli(capsys, "dr", "groups", "m2", "4", "--no-send", "--db", str(path))[0] == 0
    assert run_cli(capsys, "dr", "groups", "m3", "none", "--db", str(path))[0] == 0
    _, _, groups, queue = state(path)
    assert (groups[devs["m2"]], groups[devs["m3"]], queue) == ([4], [], [])


@pytest.mark.parametrize("groups", ["1,x", "70000", "-1", ""])
def test_dr_groups_bad_ids_refused_by_the_parser_change_nothing(db, capsys, groups):
    path, _ = db
    before = state(path)
    with pytest.raises(SystemExit):
        cli.main(["dr", "groups", "m1", groups, "--db", str(path)])
    assert "group" in capsys.readouterr().err
    assert state(path) == before


def test_more_groups_than_a_meter_takes_change_nothing(db, capsys):
    path, _ = db
    before = state(path)
    many = ",".join(str(i) for i in range(M.GROUPS_MAX + 1))
    code, out, err = run_cli(capsys, "dr", "groups", "m1", many, "--db", str(path))
    assert code == 1 and f"1..{M.GROUPS_MAX} group ids" in err and out == ""
    assert state(path) == before


# --- events -------------------------------------------------------------------------------------------------


def test_dr_event_queues_one_command_per_group_meter_expiring_at_the_end(db, capsys):
    path, devs = db
    code, out, err = run_cli(capsys, "dr", "event", "--group", "7", "--limit-w", "300", "--start",
                             "2026-09-23T17:00Z", "--duration", "2h", "--by", "grid-ops", "--db", str(path))
    assert code == 0, err
    events, targets, _, queue = state(path)
    with open_store(path, create=False, readonly=True) as s:  # the audit log says who, for each meter
        assert {q.by for q in s.queued_commands()} == {"grid-ops"}
        assert sorted((a.device_id, a.actor, a.action) for a in s.audit()) == sorted(
            (devs[f"m{i}"], "grid-ops", "queued") for i in (1, 2, 3))
    assert [(e.id, e.group_id, e.start, e.duration_s, e.limit_w, e.shed, e.created_at) for e in events] == [
        (1, 7, START, 7200, 300, False, NOW)]
    args = {M.A_DR_ID: 1, M.A_START: START, M.A_DURATION_S: 7200, M.A_LIMIT_W: 300}
    group = sorted(devs[f"m{i}"] for i in (1, 2, 3))
    assert sorted(queue) == [(d, M.OP_DR_EVENT, args, START + 7200, "queued") for d in group]
    assert cmdschema.check(M.OP_DR_EVENT, args) is None
    assert [t.device_id for t in targets[0]] == group and all(t.queue_id for t in targets[0])
    assert out.count("queued command #") == 3 and "meterkit dr report 1" in out
    # a shed on group 8, its id given
    code, _, err = run_cli(capsys, "dr", "event", "--group", "8", "--shed", "--start", str(START + 86400),
                           "--duration", "90m", "--id", "40", "--db", str(path))
    assert code == 0, err
    _, _, _, queue = state(path)
    assert queue[-1] == (devs["m4"], M.OP_DR_EVENT, {M.A_DR_ID: 40, M.A_START: START + 86400, M.A_DURATION_S: 5400,
                                                     M.A_SHED: True}, START + 86400 + 5400, "queued")
    code, out, _ = run_cli(capsys, "dr", "list", "--db", str(path))
    assert code == 0 and "group 7  limit 300 W" in out and "group 8  shed" in out and "3 pending" in out
    assert "limit 300 W from 2026-09-23T17:00:00Z" in C.describe(M.OP_DR_EVENT, args)


@pytest.mark.parametrize("argv,why", [
    (["--group", "7", "--limit-w", "300", "--start", "2026-09-23T08:00Z", "--duration", "2h"], "in the past"),
    (["--group", "7", "--limit-w", "300", "--start", "2026-09-23T17:00Z", "--duration", "25h"], "60 s .. 24 h"),
    (["--group", "7", "--limit-w", "300", "--start", "2026-09-23T17:00Z", "--duration", "30s"], "60 s .. 24 h"),
    (["--group", "7", "--limit-w", "-5", "--start", "2026-09-23T17:00Z", "--duration", "2h"], "--limit-w"),
    (["--group", "7", "--limit-w", "0", "--start", "2026-09-23T17:00Z", "--duration", "2h"], "1 W or more"),
    (["--group", "5", "--shed", "--start", "2026-09-23T17:00Z", "--duration", "2h"], "group 5 has no meters"),
    (["--group", "70000", "--shed", "--start", "2026-09-23T17:00Z", "--duration", "2h"], "0..65535"),
    (["--group", "7", "--shed", "--start", "2026-09-23T17:00Z", "--duration", "2h", "--id", "0"], "1 or more"),
])
def test_dr_event_bad_args_refused_with_nothing_recorded_or_queued(db, capsys, argv, why):
    path, _ = db
    before = state(path)
    code, out, err = run_cli(capsys, "dr", "event", *argv, "--db", str(path))
    assert code == 1 and why in err and out == ""
    assert state(path) == before


def test_dr_event_argparse_refuses_both_or_neither_and_bad_durations(db, capsys):
    path, _ = db
    before = state(path)
    for extra in (["--limit-w", "3", "--shed"], [], ["--shed", "--duration", "2 days"]):
        with pytest.raises(SystemExit):
            cli.main(["dr", "event", "--group", "7", "--start", str(START), *extra,
                      *(["--duration", "2h"] if "--duration" not in extra else []), "--db", str(path)])
    assert state(path) == before
    with pytest.raises(C.CommandError, match="exactly one"):
        C.dr_event_args(1, START, 3600, 300, True, NOW)
    with pytest.raises(C.CommandError, match="exactly one"):
        C.dr_event_args(1, START, 3600, None, False, NOW)


def test_an_id_used_twice_or_an_end_past_2106_leaves_nothing(db, capsys):
    path, devs = db
    assert run_cli(capsys, "dr", "event", "--group", "7", "--shed", "--start", str(START), "--duration", "1h",
                   "--id", "5", "--db", str(path))[0] == 0
    before = state(path)
    code, _, err = run_cli(capsys, "dr", "event", "--group", "8", "--shed", "--start", str(START), "--duration",
                           "1h", "--id", "5", "--db", str(path))
    assert code == 1 and "already used" in err and state(path) == before
    with open_store(path) as s:
        with pytest.raises(C.CommandError, match="after 2106"):
            programme.call_event(s, 7, C.UINT32_MAX - 60, 3600, 10, False, NOW)
    assert state(path) == before


# --- the report from a real store ---------------------------------------------------------------------------


def _profile(s: SQLiteStore, dev: bytes, first: int, last: int, mwh, seq0: int) -> None:
    """Rows as a meter stores them: the cumulative import register at each end; mwh(end): the interval's."""
    rows, total = [], 7_000_000_000
    for i, e in enumerate(range(first, last + 1, PERIOD)):
        total += mwh(e) if i else 0
        rows.append(IntervalRow(dev, e, total, 0, 0, PERIOD, seq0 + i))
    s.add_interval_rows(rows)


def test_report_per_meter_and_group_from_the_store(db, capsys):
    path, devs = db
    assert run_cli(capsys, "dr", "event", "--group", "7", "--limit-w", "300", "--start", str(START),
                   "--duration", "2h", "--db", str(path))[0] == 0
    end = START + 7200
    before = {"m1": 500_000, "m2": 400_000, "m3": 300_000}  # mWh per 15 min on ordinary days
    during = {"m1": 200_000, "m2": 100_000, "m3": 290_000}
    with open_store(path) as s:
        qs = {q.device_id: q for q in s.queued_commands()}
        for i, name in enumerate(("m1", "m2", "m3")):
            dev = devs[name]
            _profile(s, dev, START - 40 * 86400, end, lambda e, n=name: (during if START < e <= end else before)[n],
                     10000 * i)
        # m1 answered 0 (as the concentrator records it), m2 only sent DR_ACCEPTED and DR_START, m3 opted out
        s.update_queued(qs[devs["m1"]].id, state="answered", result=0, answered_at=NOW + 60)
        s.add_events([Event(devs["m2"], 5000, 1, DR_ACCEPTED, 1, NOW + 30), Event(devs["m2"], 5001, 2, DR_START, 1,
                                                                                   START),
                      Event(devs["m3"], 5000, 1, DR_ACCEPTED, 1, NOW + 30),
                      Event(devs["m3"], 5001, 2, DR_OPT_OUT, 1, START + 600),
                      Event(devs["m1"], 5000, 1, DR_OPT_OUT, 99, START)])  # another event's: not this one
        s.commit()
    C_clock_after = end + 3600
    code, out, err = run_cli_at(capsys, C_clock_after, "dr", "report", "1", "--json", "--db", str(path))
    assert code == 0, err
    rep = json.loads(out)
    assert rep["complete"] is True and rep["participation"]["accepted"] == 2
    assert rep["participation"]["opted out"] == 1
    by = {m["meter"]: m for m in rep["meters"]}
    assert by["m3"]["participation"] == "opted out" and by["m3"]["opted_out_utc"] == "2026-09-23T17:10:00Z"
    assert by["m2"]["started_utc"] == "2026-09-23T17:00:00Z"
    n = 8
    for name in ("m1", "m2", "m3"):
        m = by[name]
        assert (m["intervals"], m["measured"], m["days"], m["wanted"]) == (n, n, 10, 10)
        assert m["baseline_kwh"] == pytest.approx(before[name] * n / 1e6)
        assert m["reduction_kwh"] == pytest.approx((before[name] - during[name]) * n / 1e6)
        assert m["avg_kw"] == pytest.approx((before[name] - during[name]) * 4 / 1e6)
        assert len(m["baseline_dates"]) == 10
    g = rep["group"]  # m1 and m2: m3 opted out and is totalled apart
    assert g["meters"] == 2
    assert g["reduction_kwh"] == pytest.approx((before["m1"] - during["m1"] + before["m2"] - during["m2"]) * n / 1e6)
    took = ("m1", "m2")
    assert g["percent"] == pytest.approx(100 * sum(before[x] - during[x] for x in took) / sum(before[x] for x in took))
    assert rep["opted_out"]["meters"] == 1
    assert rep["opted_out"]["reduction_kwh"] == pytest.approx((before["m3"] - during["m3"]) * n / 1e6)
    code, text, _ = run_cli_at(capsys, C_clock_after, "dr", "report", "1", "--db", str(path))
    assert code == 0 and "group total (meters that took part): 2 meter(s)" in text
    assert "opted out (not in the group total): 1 meter(s)" in text and "opted out at 2026-09-23T17:10:00Z" in text


def run_cli_at(capsys, t: float, *argv: str):
    old = C.clock
    C.clock = lambda: float(t)
    try:
        return run_cli(capsys, *argv)
    finally:
        C.clock = old


def test_report_of_an_unknown_event_and_a_bad_zone(db, capsys):
    path, _ = db
    code, _, err = run_cli(capsys, "dr", "report", "3", "--db", str(path))
    assert code == 1 and "no demand-response event 3" in err
    assert run_cli(capsys, "dr", "event", "--group", "8", "--shed", "--start", str(START), "--duration", "1h",
                   "--db", str(path))[0] == 0
    code, _, err = run_cli(capsys, "dr", "report", "1", "--tz", "Nowhere/Land", "--db", str(path))
    assert code == 1 and "unknown time zone" in err
    code, out, _ = run_cli(capsys, "dr", "report", "1", "--db", str(path))
    assert code == 0 and "not over yet" in out and "no load-profile rows" in out and "pending" in out


def test_the_worked_example_of_the_docs_runs_and_measures(tmp_path, capsys, monkeypatch):
    """examples/dr/example_fleet.py, whose output docs/demand-response.md shows: the figures come from its
    synthetic profiles, so this checks what the docs say of them, not the numbers."""
    monkeypatch.setattr(C, "clock", C.clock)  # the example sets the CLI's clock; put it back afterwards
    ex = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples/dr/example_fleet.py"))
    ex["build"](tmp_path / "fleet.db")
    out = capsys.readouterr().out
    assert "2 accepted, 1 opted out, 1 not reached" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("house-")}
    assert "days left out: 1 demand-response event, 1 gap" in lines["house-2"]
    assert "opted out at 2026-11-25T17:40:00Z" in lines["house-3"]
    with SQLiteStore(tmp_path / "fleet.db", create=False, readonly=True) as s:
        rep = report.event_report(s, 2, C.clock())
    assert rep["group"]["meters"] == 2 and rep["group"]["percent"] > 50  # the limit held: most of the load went
    assert all(m["days"] == 10 for m in rep["meters"])
