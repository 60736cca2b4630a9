"""Build the database of the worked example in docs/demand-response.md and run its commands.

    python examples/dr/example_fleet.py [DIR]     (DIR/fleet.db; default: a temporary directory)

Four houses with six weeks of synthetic 15-minute load profiles (stored as a concentrator stores them:
cumulative import registers), group 3, an event last Wednesday and one today, 17:00-19:00 UTC, limit 300 W.
What the meters answered is written as the concentrator writes it: house-1 and house-2 accepted, house-3 opted
out at 17:40 with its button, house-4 was offline until after the event (its command expired). house-2 missed a
row on Monday 18:00. The meterkit commands then run as an operator types them, at the times shown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import random
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meter.events import DR_ACCEPTED, DR_END, DR_OPT_OUT, DR_START
from meterkit import cli
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.store import open_store
from meterkit.wire.records import Event, IntervalRow

UTC = dt.timezone.utc
TODAY = dt.datetime(2026, 11, 25, tzinfo=UTC)  # a Wednesday
START = int((TODAY + dt.timedelta(hours=17)).timestamp())
PERIOD = 900


def watts(house: int, t: int, rnd: random.Random) -> float:
    """A house's average import over the interval ending at t: nights low, an evening peak, weekends flatter."""
    d = dt.datetime.fromtimestamp(t - PERIOD, UTC)
    h = d.hour + d.minute / 60
    peak = 1400 + 250 * house if 17 <= h < 21 else 600 if 7 <= h < 17 else 250
    if d.weekday() >= 5:
        peak = 0.8 * peak + 150
    return peak * rnd.uniform(0.85, 1.15)


def build(db: Path) -> None:
    rnd = random.Random(12)
    with open_store(db) as s:
        devs = [s.register_meter(None, P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key()),
                                 f"house-{i}").device_id for i in range(1, 5)]
        s.commit()
    at = {"t": TODAY.timestamp() - 7 * 86400 + 9 * 3600}
    C.clock = lambda: at["t"]
    run(db, "dr", "groups", "house-1", "3")
    for i in (2, 3, 4):
        run(db, "dr", "groups", f"house-{i}", "3", quiet=True)
    run(db, "dr", "event", "--group", "3", "--limit-w", "300", "--start", "2026-11-18T17:00Z", "--duration", "2h",
        quiet=True)
    at["t"] = TODAY.timestamp() + 9 * 3600
    run(db, "dr", "event", "--group", "3", "--limit-w", "300", "--start", "2026-11-25T17:00Z", "--duration", "2h")
    with open_store(db) as s:
        queue = {q.device_id: q for q in s.queued_commands() if q.args and q.args.get(1) == 2}
        for n, dev in enumerate(devs, 1):
            rows, total = [], 10_000_000_000 * n
            for i, e in enumerate(range(START - 45 * 86400, START + 86400 + 1, PERIOD)):
                w = watts(n, e, rnd)
                if START < e <= START + 7200 and n in (1, 2) or n == 3 and START < e <= START + 2400:
                    w = rnd.uniform(220, 290)  # the limit in force
                total += round(w * PERIOD / 3.6) if i else 0
                rows.append(IntervalRow(dev, e, total, 0, 0, PERIOD, i))
            if n == 2:
                rows = [r for r in rows if r.end != START - 2 * 86400 + 3600]  # Monday 18:00 never arrived
            s.add_interval_rows(rows)
            q = queue[dev]
            if n == 4:
                s.update_queued(q.id, state="expired", reason="expired before the meter could be reached")
                continue
            s.update_queued(q.id, state="answered", result=0, answered_at=at["t"] + 60 * n, attempts=1)
            evs = [(DR_ACCEPTED, at["t"] + 60 * n), (DR_START, START)]
            evs.append((DR_OPT_OUT, START + 2400) if n == 3 else (DR_END, START + 7200))
            s.add_events([Event(dev, 100_000 + k, k, code, 2, int(t)) for k, (code, t) in enumerate(evs)])
        s.commit()
    at["t"] = START + 3 * 3600
    run(db, "dr", "list")
    run(db, "dr", "report", "2")


def run(db: Path, *argv: str, quiet: bool = False) -> None:
    """`meterkit ARGV --db DB`, shown with its output (quiet: output dropped)."""
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main([*argv, "--db", str(db)])
        return
    print(f"$ meterkit {' '.join(argv)}")
    cli.main([*argv, "--db", str(db)])
    print()


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    where.mkdir(parents=True, exist_ok=True)
    build(where / "fleet.db")
