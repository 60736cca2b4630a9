"""`meterkit demo --scale` end to end at tiny sizes: its own PostgreSQL, HAProxy, 2 concentrators, a few protocol
meters and one firmware meter; one concentrator SIGKILLed and restarted; the summary says nothing was lost. (The
scenario's checks themselves: tests/torture/test_failover.py.)"""

import re

from meterkit.cli import main


def test_scale_demo_runs_end_to_end_and_loses_nothing(tmp_path, haproxy_available, pg_server, capsys):
    rc = main(["demo", "--scale", "--meters", "5", "--firmware", "1", "--seconds", "5", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0, text
    made = int(re.search(r"frames made +(\d+)", text).group(1))
    stored = re.search(r"frames stored +(\d+) +lost (\d+), duplicates (\d+)", text)
    assert made > 0 and int(stored.group(1)) == made and stored.group(2, 3) == ("0", "0"), text
    assert re.search(r"refused 0\b", text) and "SIGKILL c" in text and "HAProxy marked it down after" in text
    assert f"Nothing lost: all {made} frames stored exactly once" in text and "on PostgreSQL" in text
    assert (tmp_path / "n2" / "c1-1.log").exists()


def test_scale_demo_sizes_only_with_scale(capsys):
    assert main(["demo", "--meters", "5"]) == 2
    assert "only with --scale" in capsys.readouterr().err
