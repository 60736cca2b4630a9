"""Run torture scenarios and lay their results out as a table (the `meterkit torture` command and tests/torture)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from meterkit.torture import clock_jumps, concentrator_kills, failover, floods, link_drops, power_kills, quick_cuts
from meterkit.torture.tally import Result

SCENARIOS = (power_kills, quick_cuts, concentrator_kills, failover, link_drops, clock_jumps, floods)
NAMES = tuple(s.NAME for s in SCENARIOS)

# the one or two figures of each scenario that the table shows (all are in --json)
KEY_FIGURES = {"power_kills": ("kills",), "quick_cuts": ("resumed_max", "resumed_median", "stalled"),
               "link_drops": ("drops", "mid_frame"), "floods": ("sent",), "clock_jumps": (),
               "concentrator_kills": ("kills", "restarts"),
               "failover": ("database", "concentrators", "kills", "refused", "commands_queued",
                            "commands_executed_once")}


def run(names: Iterable[str], out: Path, long: bool, seed: int,
        progress: Callable[[str], None] | None = None, db: str | None = None) -> list[Result]:
    """Each named scenario in its own directory under out; the figure `wall_s` is its real time. db: the failover
    scenario's database (failover.run_plans: "pg" or a postgresql:// URL; default SQLite); the others run on
    their fleets' SQLite files."""
    results = []
    for module in SCENARIOS:
        if module.NAME not in names:
            continue
        if progress:
            progress(f"{module.NAME} ({'long' if long else 'short'} form, seed {seed}) ...")
        t0 = time.monotonic()
        extra = {"db": db} if module is failover else {}
        r = module.run(out / module.NAME, long, seed, **extra)
        r.figures["wall_s"] = round(time.monotonic() - t0, 1)
        results.append(r)
    return results


def _key_figures(r: Result) -> str:
    shown = {k: r.figures[k] for k in KEY_FIGURES.get(r.scenario, ()) if k in r.figures}
    shown["wall_s"] = r.figures.get("wall_s")
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in shown.items())


def table(results: list[Result]) -> str:
    head = ("scenario", "form", "meters", "made", "stored", "lost", "decreases", "duplicates", "refused-state-changes",
            "ok")
    rows = [head]
    for r in results:
        t = r.tallies
        changes = r.figures.get("state_changes", "-")
        rows.append((r.scenario, r.form, str(len(t)), str(sum(x.made for x in t)), str(sum(x.stored for x in t)),
                     str(sum(x.lost for x in t)), str(sum(len(x.decreases) for x in t)),
                     str(sum(len(x.duplicates) for x in t)), str(changes), "ok" if r.ok else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in results:
        lines.append(f"{r.scenario}: {_key_figures(r)}")
        lines += [f"  FAILED {f}" for f in r.failures]
        lines += [f"  FAILED {t.meter}: {t.lost} lost (first {t.missing[:5]}), {len(t.decreases)} decreases "
                  f"{t.decreases[:2]}, {len(t.duplicates)} duplicates {t.duplicates[:2]}"
                  for t in r.tallies if not t.clean]
    return "\n".join(lines)
