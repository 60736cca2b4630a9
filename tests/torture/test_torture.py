"""The torture suite's short form, as CI runs it (issue 11): each scenario with real firmware meters (MicroPython
Unix port) and a real concentrator, counted by meterkit.torture.tally. A scenario holds when every frame made is
stored (or still waiting in the outbox), no register decreased, nothing was stored twice, refused messages changed
nothing, and its own checks held (docs/security.md, "Reliability"). The long form: `meterkit torture --long`.

clock_jumps is issue 11 finding 2's end-to-end test; quick_cuts measures finding 1 (tests/host/test_quick_cuts.py
is its test with the link alone)."""

from __future__ import annotations

import json

import pytest

from meterkit.cli import main
from meterkit.torture import runner

SEED = 11  # fixed: a red build is reproduced with `meterkit torture --seed 11 --only NAME`


# concentrator_kills and failover have tests of their own (test_concentrator_kills.py, test_failover.py), with
# what their figures must say
HERE = tuple(n for n in runner.NAMES if n not in ("concentrator_kills", "failover"))


@pytest.mark.slow
@pytest.mark.parametrize("name", HERE)
def test_short_form(tmp_path, name):
    [r] = runner.run([name], tmp_path, long=False, seed=SEED)
    print(runner.table([r]))
    assert r.form == "short" and r.tallies, r.as_dict()
    assert all(t.made > 0 for t in r.tallies), r.as_dict()  # the meters reported: the counts mean something
    assert r.ok, runner.table([r]) + "\n" + json.dumps(r.as_dict(), default=str)[:4000]


def test_cli_prints_the_seed_and_exits_1_on_a_failure(tmp_path, capsys):
    rc = main(["torture", "--only", "power_kills", "--seed", "5", "--out", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["seed"] == 5 and [r["scenario"] for r in out["results"]] == ["power_kills"]
    [r] = out["results"]
    assert r["form"] == "short" and r["figures"]["kills"] == 4 and r["meters"][0]["made"] > 0
    assert rc == (0 if r["ok"] else 1)
    assert (tmp_path / "power_kills" / "db.sqlite").exists()  # --out keeps the fleet
