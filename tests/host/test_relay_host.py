"""Disconnect control and the limiter on the host (issue 12): the argument builders of ops 6-8, `meterkit relay`,
`meterkit limit` and `meterkit audit` on a real SQLite file, the append-only audit log through the real
concentrator (queued, sent, answered, refused, expired, failed, back-fills, a concentrator restart), and the
relay state `status` shows: the one the meter confirmed, from its newest frame by sequence number."""

from __future__ import annotations

import asyncio
import getpass
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cmdschema
from meter import events as E
from meter import messages as M
from meterkit import cli
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.headend.audit import UNKNOWN_ACTOR
from meterkit.headend.status import fleet_status
from meterkit.store import open_store
from meterkit.store.records import AuditRecord
from meterkit.store.sqlite import SQLiteStore
from meterkit.testing.rig import T0, LoopbackRig, SimMeter, until
from meterkit.testing.sqlfile import old_database, sql
from meterkit.timefmt import parse_duration, utc_text

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def db(store_db, monkeypatch):
    """A database with one registered meter 'house'; the CLI's clock at NOW."""
    path = store_db
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    with open_store(path) as s:
        s.register_meter(None, point, "house")
    monkeypatch.setattr(C, "clock", lambda: float(NOW))
    monkeypatch.delenv("METERKIT_DB", raising=False)
    return path, P.key_id(point)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def queued(path) -> list[tuple]:
    with open_store(path, create=False, readonly=True) as s:
        return [(q.op, q.args, q.by) for q in s.queued_commands()]


def audit_of(path) -> list[tuple]:
    with open_store(path, create=False, readonly=True) as s:
        return [(a.action, a.op, a.actor, a.queue_id) for a in s.audit()]


# --- the argument builders ------------------------------------------------------------------------------------


def test_limiter_args_only_what_is_given_and_what_a_meter_takes():
    args = C.limiter_args(watts=500, min_over_s=60, auto_reconnect=True)
    assert args == {M.A_THRESHOLD_NORMAL: 500, M.A_MIN_OVER_S: 60, M.A_AUTO_RECONNECT: True}
    full = C.limiter_args(500, 300, 60, 300, False, (7, NOW + 3600, 7200, [1, 2]), now=NOW)
    assert full == {M.A_THRESHOLD_NORMAL: 500, M.A_THRESHOLD_EMERGENCY: 300, M.A_MIN_OVER_S: 60,
                    M.A_MIN_UNDER_S: 300, M.A_EMERGENCY_ID: 7, M.A_EMERGENCY_START: NOW + 3600,
                    M.A_EMERGENCY_DURATION_S: 7200, M.A_EMERGENCY_GROUPS: [1, 2], M.A_AUTO_RECONNECT: False}
    for a in (args, full, C.limiter_args(watts=0)):
        assert cmdschema.check(M.OP_LIMITER, a) is None  # the meter's own table takes them
    # an ongoing window (started, not over) is fine
    assert C.limiter_args(emergency=(1, NOW - 60, 120, [0]), now=NOW)[M.A_EMERGENCY_START] == NOW - 60


@pytest.mark.parametrize("kw, message", [
    ({}, "must set something"),
    ({"watts": -1}, "--watts must be a whole number"),
    ({"watts": True}, "--watts must be a whole number"),
    ({"watts": 2**32}, "--watts must be a whole number"),
    ({"emergency_watts": 1.5}, "--emergency-watts must be a whole number"),
    ({"min_over_s": -5}, "--min-over must be a whole number"),
    ({"min_under_s": "60"}, "--min-under must be a whole number"),
    ({"auto_reconnect": 1}, "--auto-reconnect must be true or false"),
    ({"emergency": (1, NOW - 7200, 3600, [1])}, "is over"),
    ({"emergency": (1, NOW + 60, 0, [1])}, "more than 0 s"),
    ({"emergency": (-1, NOW + 60, 60, [1])}, "--emergency-id must be a whole number"),
    ({"emergency": (1, NOW + 60, 60, [])}, "group ids"),
    ({"emergency": (1, NOW + 60, 60, list(range(M.GROUPS_MAX + 1)))}, "group ids"),
    ({"emergency": (1, NOW + 60, 60, [65536])}, "0..65535"),
    ({"emergency": (1, NOW + 60, 60, [3, 3])}, "repeat"),
])
def test_limiter_args_refuse_bad_input_clearly(kw, message):
    with pytest.raises(C.CommandError, match=message):
        C.limiter_args(now=NOW, **kw)


def test_descriptions_of_the_relay_operations():
    assert C.describe(C.OP_DISCONNECT, None).startswith("disconnect")
    assert C.describe(C.OP_RECONNECT, None).startswith("reconnect")
    text = C.describe(C.OP_LIMITER, C.limiter_args(500, 300, 60, None, True, (7, NOW, 3600, [1, 2]), NOW))
    assert text == (f"limiter: 500 W, emergency 300 W, over 60 s, auto-reconnect; emergency profile #7 from "
                    f"{utc_text(NOW)} for 3600 s, groups 1,2")
    assert C.describe(C.OP_LIMITER, {M.A_AUTO_RECONNECT: False}) == "limiter: button reconnects"


@pytest.mark.parametrize("text, want", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                        ("1h30m", 5400), (" 0 ", 0)])
def test_durations(text, want):
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "h", "2x", "-5", "1.5h", "m30", str(2**32)])
def test_durations_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# --- the command line -----------------------------------------------------------------------------------------


def test_relay_and_limit_queue_the_right_op_and_args_for_whom(db, capsys):
    path, dev = db
    code, out, err = run_cli(capsys, "relay", "disconnect", "house", "--db", str(path), "--by", "alice")
    assert code == 0, err
    assert "queued command #1 for meter house" in out and "disconnect" in out and "by alice" in out
    code, out, err = run_cli(capsys, "relay", "reconnect", dev.hex(), "--db", str(path),
                             "--expires", utc_text(NOW + 600))
    assert code == 0, err
    code, out, err = run_cli(capsys, "limit", "house", "--db", str(path), "--watts", "500W", "--min-over", "1m",
                             "--min-under", "5m", "--auto-reconnect", "--emergency-watts", "300",
                             "--emergency-id", "7", "--emergency-start", utc_text(NOW + 3600),
                             "--emergency-duration", "2h", "--emergency-groups", "1,2", "--by", "bob")
    assert code == 0, err
    me = getpass.getuser()
    assert queued(path) == [
        (M.OP_DISCONNECT, None, "alice"), (M.OP_RECONNECT, None, me),
        (M.OP_LIMITER, {M.A_THRESHOLD_NORMAL: 500, M.A_THRESHOLD_EMERGENCY: 300, M.A_MIN_OVER_S: 60,
                        M.A_MIN_UNDER_S: 300, M.A_EMERGENCY_ID: 7, M.A_EMERGENCY_START: NOW + 3600,
                        M.A_EMERGENCY_DURATION_S: 7200, M.A_EMERGENCY_GROUPS: [1, 2], M.A_AUTO_RECONNECT: True},
         "bob")]
    with open_store(path, create=False, readonly=True) as s:
        assert s.queued_commands(ids=[2])[0].expires_at == NOW + 600
    assert audit_of(path) == [("queued", M.OP_DISCONNECT, "alice", 1), ("queued", M.OP_RECONNECT, me, 2),
                              ("queued", M.OP_LIMITER, "bob", 3)]
    # the existing command family records who, too
    assert run_cli(capsys, "command", "billing-reset", "--meter", "house", "--db", str(path), "--by", "carol")[0] == 0
    assert audit_of(path)[-1] == ("queued", M.OP_BILLING_RESET, "carol", 4)
    code, out, _ = run_cli(capsys, "audit", "house", "--db", str(path), "--json")
    rows = json.loads(out)
    assert [(r["action"], r["operation"], r["by"], r["command"]) for r in rows] == [
        ("queued", "disconnect", "alice", 1), ("queued", "reconnect", me, 2), ("queued", "limiter", "bob", 3),
        ("queued", "billing-reset", "carol", 4)]
    assert rows[2]["what"].startswith("limiter: 500 W") and rows[0]["at_utc"] == utc_text(NOW)
    code, out, _ = run_cli(capsys, "audit", "--db", str(path))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["when", "(UTC)"] and len(lines) == 5
    assert "alice" in lines[1] and "queued" in lines[1] and "limiter: 500 W" in lines[3]


@pytest.mark.parametrize("argv, code, message", [
    (["limit", "house"], 1, "must set something"),
    (["limit", "house", "--emergency-id", "7"], 1, "give --emergency-start, --emergency-duration, "
                                                   "--emergency-groups too"),
    (["limit", "house", "--watts", "5", "--emergency-id", "7", "--emergency-start", "2026-01-01T00:00Z",
      "--emergency-duration", "1h", "--emergency-groups", "1"], 1, "is over"),
    (["limit", "house", "--watts", str(2**32)], 1, "--watts must be a whole number"),
    (["limit", "nobody", "--watts", "5"], 2, "no meter 'nobody'"),
    (["relay", "disconnect", "house", "--expires", "2026-01-01T00:00Z"], 1, "is not in the future"),
    (["relay", "disconnect", "house", "--by", " "], 1, "--by must name who"),
    (["relay", "reconnect", "nobody"], 2, "no meter 'nobody'"),
])
def test_bad_input_is_refused_clearly_and_nothing_is_queued(db, capsys, argv, code, message):
    path, _ = db
    got, out, err = run_cli(capsys, *argv, "--db", str(path))
    assert got == code and message in err and out == ""
    assert queued(path) == [] and audit_of(path) == []


@pytest.mark.parametrize("argv, message", [
    (["limit", "house", "--watts", "-5"], "not a whole number of watts"),
    (["limit", "house", "--min-over", "soon"], "not a duration"),
    (["limit", "house", "--emergency-groups", "1,1"], "repeat"),
    (["limit", "house", "--emergency-groups", "a,b"], "group ids are whole numbers"),
    (["limit", "house", "--emergency-start", "tomorrow"], "not a UTC time"),
])
def test_unparsable_options_are_usage_errors(db, capsys, argv, message):
    path, _ = db
    with pytest.raises(SystemExit) as ei:
        cli.main([*argv, "--db", str(path)])
    assert ei.value.code == 2 and message in capsys.readouterr().err
    assert queued(path) == [] and audit_of(path) == []


def test_the_audit_log_is_append_only(db):
    path, dev = db
    with open_store(path) as s:
        C.queue(s, dev, C.OP_DISCONNECT, None, NOW, by="alice")  # committed
        for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
            with pytest.raises(Exception, match="the audit log is append only"):  # the trigger's ABORT / RAISE
                sql(s, statement)
        with pytest.raises(ValueError, match="audit action"):
            s.add_audit(AuditRecord(NOW, dev, C.OP_DISCONNECT, "alice", "forgotten"))
    assert audit_of(path) == [("queued", C.OP_DISCONNECT, "alice", 1)]


def test_the_concentrators_own_commands_are_audited_for_it(db):
    path, dev = db
    with open_store(path) as s:
        C.queue_in(s, dev, C.OP_SET_TIME, C.set_time_args(False), NOW, note="clock: drift")  # headend/clocks.py
        s.queue_command(dev, C.OP_PROFILE, {M.A_FROM: NOW - 900, M.A_TO: NOW}, NOW, NOW + 60)  # headend/gaps.py
        s.commit()
        with pytest.raises(ValueError, match="must be named"):
            s.queue_command(dev, C.OP_PROFILE, {M.A_FROM: NOW - 900, M.A_TO: NOW}, NOW, NOW + 60, by="")
        s.rollback()
    assert audit_of(path) == [("queued", C.OP_SET_TIME, "concentrator", 1), ("queued", C.OP_PROFILE, "concentrator", 2)]
    assert [q[2] for q in queued(path)] == ["concentrator", "concentrator"]


# --- through the real concentrator ----------------------------------------------------------------------------


def queue(rig: LoopbackRig, dev: bytes, op: int, args: dict | None, by: str = "alice",
          expires: int | None = None) -> int:
    """Queue as `meterkit relay` does: its own connection to the database file."""
    with open_store(rig.db_path) as s:
        return C.queue(s, dev, op, args, rig.clock(), expires, by=by)


def trail(rig: LoopbackRig, dev: bytes | None = None) -> list[tuple]:
    return [(a.action, a.op, a.actor, a.queue_id, a.counter, a.result, a.reason) for a in rig.store.audit(dev)]


def test_audit_of_answered_refused_and_expired_commands(store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m, gone = SimMeter(time_fn=lambda: int(rig.clock())), SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m, gone)
            q1 = queue(rig, m.device_id, C.OP_DISCONNECT, None)
            q2 = queue(rig, m.device_id, C.OP_RECONNECT, None, by="bob")
            q3 = queue(rig, gone.device_id, C.OP_LIMITER, C.limiter_args(watts=500), expires=int(rig.clock()) + 60)
            cl = await rig.connect(m)
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            c1 = cl.commands[0]
            assert (c1.body[M.K_OP], M.K_ARGS in c1.body) == (M.OP_DISCONNECT, False)
            cl.send(m.response(c1.counter, 0))
            await cl.wait_for(lambda c: len(c.commands) == 2)
            c2 = cl.commands[1]
            assert c2.body[M.K_OP] == M.OP_RECONNECT
            cl.send(m.response(c2.counter, M.RESULT_REJECTED, "not allowed in control mode 0"))
            await until(lambda: rig.store.queued_commands(ids=[q2])[0].state == "answered")
            rig.clock.advance(61)
            rig.conc.tick()  # the other meter never came: its limiter command expires
            assert rig.store.queued_commands(ids=[q3])[0].state == "expired"
            assert trail(rig, m.device_id) == [
                ("queued", M.OP_DISCONNECT, "alice", q1, None, None, None),
                ("queued", M.OP_RECONNECT, "bob", q2, None, None, None),
                ("sent", M.OP_DISCONNECT, "alice", q1, c1.counter, None,
                 f"signed expiry {utc_text(c1.body[M.K_EXPIRES])}"),
                ("answered", M.OP_DISCONNECT, "alice", q1, c1.counter, 0, None),
                ("sent", M.OP_RECONNECT, "bob", q2, c2.counter, None,
                 f"signed expiry {utc_text(c2.body[M.K_EXPIRES])}"),
                ("refused", M.OP_RECONNECT, "bob", q2, c2.counter, M.RESULT_REJECTED,
                 "not allowed in control mode 0")]
            assert trail(rig, gone.device_id) == [
                ("queued", M.OP_LIMITER, "alice", q3, None, None, None),
                ("expired", M.OP_LIMITER, "alice", q3, None, None, "expired before the meter could be reached")]
            times = [a.at for a in rig.store.audit(m.device_id)]
            assert times == sorted(times) and times[0] == T0 and times[-1] == T0  # queued, sent, answered at T0
            # a repeated answer is logged too; the first one stands
            cl.send(m.response(c1.counter, -3, "bad arguments"))
            await until(lambda: rig.conc.stats().get("responses_duplicate") == 1)
            assert trail(rig, m.device_id)[-1] == ("answered-again", M.OP_DISCONNECT, "alice", q1, c1.counter, -3,
                                                   "bad arguments")
            assert rig.store.queued_commands(ids=[q1])[0].result == 0

    run(main())


def test_retries_add_to_the_audit_across_a_concentrator_restart(store_db):
    async def main():
        rig = await LoopbackRig(store_db, backfill_after=10, command_attempts=2).start()
        m = SimMeter(time_fn=lambda: int(rig.clock()))
        rig.register(m)
        qid = queue(rig, m.device_id, C.OP_DISCONNECT, None, by="alice")
        cl = await rig.connect(m)
        cl.send(m.reading())
        await cl.wait_for(lambda c: c.commands)
        first = cl.commands[0].counter
        before = rig.store.audit()
        await rig.restart()  # the head-end restarts; the meter never saw the command
        assert rig.store.audit() == before  # nothing lost
        cl2 = await rig.connect(m, last_counter=cl.last_counter)
        cl2.send(m.reading())
        await cl2.wait_ack(m.seq.next - 1)
        rig.clock.advance(11)
        rig.conc.tick()
        await cl2.wait_for(lambda c: c.commands)
        again = cl2.commands[0].counter
        assert again > first
        cl2.send(m.response(again, 0))
        await until(lambda: rig.store.queued_commands(ids=[qid])[0].state == "answered")
        after = rig.store.audit()
        assert after[:len(before)] == before  # the first attempt's rows are there, unchanged
        assert [(a.action, a.counter, a.actor) for a in after] == [
            ("queued", None, "alice"), ("sent", first, "alice"), ("sent", again, "alice"), ("answered", again, "alice")]
        await rig.stop()

    run(main())


def test_failed_commands_and_back_fills_are_audited(store_db):
    async def main():
        async with LoopbackRig(store_db, backfill_after=5, command_ttl_s=100,
                               command_attempts=1) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            qid = queue(rig, m.device_id, C.OP_LIMITER, C.limiter_args(watts=500), by="ops")
            cl = await rig.connect(m)
            cl.send(m.reading(seq=0) + m.reading(seq=3))  # frames 1..2 missing: a back-fill follows
            await cl.wait_for(lambda c: c.commands)
            rig.clock.advance(6)
            rig.conc.tick()
            await cl.wait_for(lambda c: any(x.body[M.K_OP] == M.OP_BACKFILL for x in c.commands))
            bf = next(x for x in cl.commands if x.body[M.K_OP] == M.OP_BACKFILL)
            cl.send(m.response(bf.counter, 0, seq=4))
            await until(lambda: any(a.op == M.OP_BACKFILL and a.action == "answered" for a in rig.store.audit()))
            rig.clock.advance(101)
            rig.conc.tick()  # the limiter command: its one attempt expired unanswered
            assert rig.store.queued_commands(ids=[qid])[0].state == "failed"
            got = [(a.action, a.op, a.actor, a.counter) for a in rig.store.audit()]
            lim = cl.commands[0].counter
            assert got == [("queued", M.OP_LIMITER, "ops", None), ("sent", M.OP_LIMITER, "ops", lim),
                           ("sent", M.OP_BACKFILL, "concentrator", bf.counter),
                           ("answered", M.OP_BACKFILL, "concentrator", bf.counter),
                           ("failed", M.OP_LIMITER, "ops", lim)]
            assert rig.store.audit()[1].args == {M.A_THRESHOLD_NORMAL: 500}
            assert rig.store.audit()[2].args == {M.A_FIRST: 1, M.A_LAST: 2}
            assert rig.store.audit()[-1].reason == "no answer after 1 attempts"

    run(main())


# --- the relay state, as the meter confirmed it ---------------------------------------------------------------


def control_reading(m: SimMeter, status: int, control: list[int] | None, seq: int) -> bytes:
    body = {M.K_REGISTERS: {M.OBIS_IMPORT: 10, M.OBIS_EXPORT: 0}, M.K_INSTANT: [0, 12000, 0], M.K_UNCOVERED_PPM: 0}
    if control is not None:
        body[M.K_CONTROL] = control
    return m.frame(M.READING, status, body, seq)


def relay_of(rig: LoopbackRig, dev: bytes) -> tuple:
    r = next(r for r in fleet_status(rig.store, rig.clock()) if r["device"] == dev.hex())
    return r["relay"], r["control_mode"], r["limit_w"], r["relay_seq"]


OPEN = M.ST_RELAY_OPEN
READY = M.ST_RELAY_OPEN | M.ST_RECONNECT_READY


def test_status_shows_the_confirmed_relay_state_newest_frame_wins(tmp_path, store_db, capsys):
    async def main():
        async with LoopbackRig(store_db, backfill_after=3600) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            qid = queue(rig, m.device_id, C.OP_DISCONNECT, None)
            assert relay_of(rig, m.device_id) == ("-", None, None, None)  # never heard: unknown
            cl = await rig.connect(m)
            cl.send(control_reading(m, 0, [1, 1, 500], seq=0))
            await cl.wait_for(lambda c: c.commands)
            assert relay_of(rig, m.device_id) == ("connected", 1, 500, 0)
            # requested is not confirmed: the command went out, the relay is still what the meter said
            assert rig.store.queued_commands(ids=[qid])[0].state == "sent"
            assert relay_of(rig, m.device_id)[0] == "connected"
            counter = cl.commands[0].counter
            cl.send(m.event(E.DISCONNECT_CONTROL, "b 1>0", int(rig.clock()), event_seq=1, status=OPEN, seq=5)
                    + m.frame(M.RESPONSE, OPEN, M.response_body(counter, 0, None), seq=6)
                    + control_reading(m, OPEN, [0, 1, 500], seq=7))
            await cl.wait_ack(0)
            await until(lambda: relay_of(rig, m.device_id)[3] == 7)
            assert relay_of(rig, m.device_id) == ("disconnected", 1, 500, 7)
            # back-filled older frames (seq 1..4): a reading saying connected, limit 900, must not win
            cl.send(control_reading(m, 0, [1, 2, 900], seq=3) + m.event(E.LIMITER_SET, 900, T0 - 10, event_seq=0,
                                                                       seq=2))
            await until(lambda: rig.store.max_seq(m.device_id) == 7 and len(rig.store.seqs_above(m.device_id, 1)) == 5)
            assert relay_of(rig, m.device_id) == ("disconnected", 1, 500, 7)
            # a newer event frame with both bits: ready for reconnection (mode and limit from the newest reading)
            cl.send(m.event(E.DISCONNECT_CONTROL, "d 0>2", int(rig.clock()), event_seq=2, status=READY, seq=8))
            await until(lambda: relay_of(rig, m.device_id)[3] == 8)
            assert relay_of(rig, m.device_id) == ("ready for reconnection", 1, 500, 8)
            # a newer reading without K_CONTROL: connected, no control, no limit ([1, 0, 0])
            cl.send(control_reading(m, 0, None, seq=9))
            await until(lambda: relay_of(rig, m.device_id)[3] == 9)
            assert relay_of(rig, m.device_id) == ("connected", 0, 0, 9)
            cl.send(control_reading(m, READY, [2, 1, 300], seq=10) + m.event(E.LIMITER_TRIP, 700, int(rig.clock()),
                                                                             event_seq=3, status=READY, seq=11))
            await until(lambda: relay_of(rig, m.device_id)[3] == 11)
            return m.device_id

    dev = run(main())
    db = str(store_db)
    assert cli.main(["status", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[-5:] == ["ready", "for", "reconnection", "300", "W"]
    assert cli.main(["relay", "status", dev.hex(), "--db", db, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["relay"], s["relay_state"], s["control_mode"], s["limit_w"]) == ("ready for reconnection", 2, 1, 300)
    assert [(e["event"], e["value"]) for e in s["events"]] == [
        ("limiter set", 900), ("disconnect control", "b 1>0"), ("disconnect control", "d 0>2"), ("limiter trip", 700)]
    c = s["last_command"]
    assert (c["operation"], c["state"], c["result"], c["by"]) == ("disconnect", "answered", 0, "alice")
    assert cli.main(["relay", "status", dev.hex(), "--db", db]) == 0
    text = capsys.readouterr().out
    assert "relay ready for reconnection" in text and "control mode 1" in text and "import limit 300 W" in text
    assert "disconnect: open the relay by alice" in text and "answered, result 0" in text
    assert "limiter trip" in text and "b 1>0" in text


# --- schema v6 ------------------------------------------------------------------------------------------------


def test_migration_to_v6_puts_the_queues_history_into_the_audit_log(tmp_path):

    path = tmp_path / "old.db"
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    dev = P.key_id(point)
    q = ("INSERT INTO command_queue (id, device, op, args, created_at, expires_at, state, counter, attempts, "
         "sent_at, answered_at, result, reason, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    c = ("INSERT INTO commands (device, counter, op, args, sent_at, expires_at, queue_id, answered_at, result, "
         "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    assert old_database(
        path, 5,
        ("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES (?, ?, ?, ?)", (dev, point, "h", 1.0)),
        (q, (1, dev, 3, None, 100.0, 900, "answered", 5, 1, 110.0, 120.0, -4, "no", "meterkit command x")),
        (q, (2, dev, 3, None, 130.0, 200, "expired", None, 0, None, None, None, "expired before ...", None)),
        (c, (dev, 4, 1, '{"1": 1, "2": 2}', 105.0, 405, None, 106.0, 0, None)),
        (c, (dev, 5, 3, None, 110.0, 410, 1, 120.0, -4, "no")),
        ("INSERT INTO readings (device, seq, meter_time, status, import_wh, export_wh, registers, power_mw, "
         "voltage_mv, current_ma, uncovered_ppm) VALUES (?, 1, 50, 0, 1, 0, '{}', 0, 0, 0, 0)", (dev,)),
    ) == [1, 2, 3, 4, 5]
    with SQLiteStore(path) as s:
        assert s.migrated == [6, 7, 8, 9]
        got = [(a.at, a.action, a.op, a.actor, a.queue_id, a.counter, a.result, a.reason) for a in s.audit()]
        assert got == [
            (100.0, "queued", 3, UNKNOWN_ACTOR, 1, None, None, "meterkit command x"),
            (105.0, "sent", 1, "concentrator", None, 4, None, None),
            (106.0, "answered", 1, "concentrator", None, 4, 0, None),
            (110.0, "sent", 3, UNKNOWN_ACTOR, 1, 5, None, None),
            (120.0, "refused", 3, UNKNOWN_ACTOR, 1, 5, -4, "no"),
            (130.0, "queued", 3, UNKNOWN_ACTOR, 2, None, None, None),
            (130.0, "expired", 3, UNKNOWN_ACTOR, 2, None, None, "expired before ..."),
        ]
        assert s.queued_commands()[0].by is None
        assert s.fleet(dev)[0].control == (1, 0, 0)  # a reading from before K_CONTROL: connected, no limit
        assert sql(s, "SELECT control_state FROM readings") == [(None,)]
