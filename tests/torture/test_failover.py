"""Issue 13 torture, short form: 2 `meterkit concentrator` processes on one database (a real PostgreSQL, the
configuration several head-ends share; the same on a SQLite file is `meterkit torture --only failover`, and
tests/host/test_shared_store.py runs two concentrators on either) behind a real HAProxy (PROXY v2 headers), 40
protocol-level meters through it; the busier concentrator SIGKILLed mid-run and restarted on its port; 2 real
firmware meters (the fleet's) report through HAProxy too, at least one of them on the killed process. Every frame
made stored exactly once, every ack and command verified by the meters (the firmware's verify_host), every queued
command answered once and executed once (the long form, 2 then 3 concentrators and 120 meters: `python -m
meterkit.torture.failover --long [--db pg]`; docs/concentrator.md, "Failover")."""

import signal

from meterkit.torture import failover as fo
from meterkit.torture import runner


def test_failover_short_form(tmp_path, haproxy_available, pg_server):
    db = pg_server.create_database()
    [result] = runner.run(["failover"], tmp_path, long=False, seed=13, db=db)
    fig = result.figures
    assert result.ok, runner.table([result]) + "\n" + str(result.as_dict())[:4000]
    assert fig["database"] == "postgresql"
    [plan] = fo.SHORT
    assert fig["concentrators"] == [2] and fig["meters"] == plan.meters
    assert fig["firmware_meters"] == plan.firmware >= 2 and len(result.tallies) == plan.meters + plan.firmware
    assert fig["lost"] == fig["duplicates"] == fig["decreases"] == fig["pending"] == fig["refused"] == 0
    assert fig["frames"] == fig["stored"] > 0 and all(t.made > 0 for t in result.tallies)
    assert fig["acks_verified"] > 0
    assert fig["commands_queued"] == fig["commands_executed_once"] > plan.meters
    assert fig["firmware_commands"] == plan.firmware
    [r] = fig["rounds"]
    assert r["killed_returncode"] == -signal.SIGKILL
    assert r["sessions_before_kill"][r["killed"]] > 0  # the kill took meters with it ...
    assert r["sessions_after_kill"][r["killed"]] == 0  # ... they all moved to the survivor ...
    assert r["sessions_after_restart"][r["killed"]] > 0  # ... and the restarted process serves meters again
    assert r["commands_answered_ok"] == r["commands_queued"]
    assert r["firmware_on_killed"] >= 1  # real firmware failed over too
    assert r["firmware_frames"] > 0
