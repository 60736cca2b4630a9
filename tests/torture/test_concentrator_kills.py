"""Issue 11 torture, short form: a real `meterkit concentrator` process SIGKILLed mid-commit while real firmware
meters report to it over TCP; nothing lost, nothing stored twice, every kill where it is claimed to have landed
(the long form, 24 kills: `python -m meterkit.torture.concentrator_kills --long`; docs/concentrator.md)."""

from meterkit.headend import faults
from meterkit.torture import concentrator_kills as ck


def test_concentrator_kills_short_form(tmp_path):
    result = ck.run(tmp_path, long=False, seed=7)
    fig = result.figures
    assert result.ok, result.as_dict()
    assert fig["kills"] == fig["restarts"] == ck.SHORT.kills
    assert fig["lost"] == fig["duplicates"] == fig["decreases"] == fig["pending"] == 0
    assert fig["frames"] == fig["stored"] > 0
    # each mode ran, and the injected ones landed where they were put: the dead process's phase page says so,
    # and the database agrees (rolled back before the commit, stored after it)
    landings = {mode: (phase, present, open_frames) for mode, phase, present, open_frames in fig["landings"]}
    assert set(landings) == set(ck.MODES)
    phase, present, open_frames = landings["before-commit"]
    assert (phase, present) == ("in-commit", 0) and open_frames > 0
    phase, present, open_frames = landings["after-commit"]
    assert phase == "after-commit-before-ack" and present == open_frames > 0
    assert fig["kills_in_commit"] >= 1 and fig["kills_after_commit_before_ack"] >= 1
    assert fig["kills_in_commit"] + fig["kills_after_commit_before_ack"] + fig["kills_idle"] == fig["kills"]
    assert set(faults.PHASES.values()) >= {p for _, p, _, _ in fig["landings"]}
