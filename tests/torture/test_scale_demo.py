"""`meterkit demo --scale` end to end at tiny sizes: its own PostgreSQL, HAProxy, 2 concentrators, a few protocol
meters (4 s of readings); one concentrator SIGKILLed and restarted; the summary says nothing was lost. No firmware
meter here: one adds some 12 s (the fleet runs 10 s past the readings, then settles), and the scenario with
firmware meters on PostgreSQL is tests/torture/test_failover.py."""

import re

import pytest

from meterkit.cli import main


@pytest.fixture
def pg_available():
    """The demo starts a PostgreSQL of its own: only its binaries and psycopg are needed here."""
    from meterkit.testing.pgplugin import pg_missing
    from meterkit.testing.pgserver import PgUnavailable, find_bindir

    try:
        import psycopg  # noqa: F401

        find_bindir()
    except (ImportError, PgUnavailable) as e:
        pg_missing(str(e))


def test_scale_demo_runs_end_to_end_and_loses_nothing(tmp_path, haproxy_available, pg_available, capsys):
    rc = main(["demo", "--scale", "--meters", "5", "--firmware", "0", "--seconds", "4", "--out", str(tmp_path)])
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
