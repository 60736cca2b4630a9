"""What a torture run counts, the same for every scenario (docs/security.md, "Reliability").

made      every frame the meter made durably: the frames log (sim/run.py --frames writes a frame there only once
          the outbox holds it) united with what the head-end stored (a kill can take the log's last line)
stored    the frames the head-end holds for the meter
missing   made - stored; each one must be accounted for: still waiting in the meter's outbox when the run ended
          (`pending`, given by the scenario), else it is lost
decreases a stored reading whose import, export or any register is below one with a lower sequence number, or a
          billing snapshot below an earlier period's
duplicates the same fact stored twice: two billing snapshots for one period end, two frames for one event-log
          entry (the frames and interval tables are keyed so that they cannot hold a duplicate)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meter import cbor, cose, frame
from meter import messages as M


@dataclass
class Tally:
    meter: str
    made: int = 0
    stored: int = 0
    missing: list[int] = field(default_factory=list)  # made, not stored, not pending: lost
    pending: int = 0  # made, not stored, still in the meter's outbox at the end
    decreases: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.decreases and not self.duplicates

    def as_dict(self) -> dict:
        return {"meter": self.meter, "made": self.made, "stored": self.stored, "lost": self.lost,
                "pending": self.pending, "decreases": len(self.decreases), "duplicates": len(self.duplicates),
                "first_lost": self.missing[:10], "decrease_examples": self.decreases[:5],
                "duplicate_examples": self.duplicates[:5]}


def logged_payloads(frames_log: Path) -> list[dict]:
    """The decoded payloads in a frames log (a COBS stream of signed frames), in the order logged; a torn last
    frame is skipped."""
    out = []
    if frames_log.exists():
        for msg in frame.Deframer().feed(frames_log.read_bytes()):
            parts = cose.split(msg)
            if parts is not None:
                out.append(cbor.decode(parts[2]))
    return out


def logged_seqs(frames_log: Path) -> set[int]:
    """The sequence numbers in a frames log."""
    return {p[M.K_SEQ] for p in logged_payloads(frames_log)}


def tally(store, device: bytes, name: str, frames_log: Path, pending: Iterable[int] = ()) -> Tally:
    """Count one meter of a finished run against the head-end's store (any meterkit Store)."""
    t = Tally(name)
    stored = set(store.seqs_above(device, -1))
    made = logged_seqs(frames_log) | stored
    waiting = set(pending)
    t.made, t.stored = len(made), len(stored)
    t.pending = len((made - stored) & waiting)
    t.missing = sorted(made - stored - waiting)
    t.decreases = register_decreases(store, device)
    t.duplicates = duplicate_facts(store, device)
    return t


def register_decreases(store, device: bytes) -> list[str]:
    found = []
    cols, rows = store.export("readings", device)
    i_seq, i_imp, i_exp, i_regs = (cols.index(c) for c in ("seq", "import_wh", "export_wh", "registers"))
    high: dict[str, tuple[int, int]] = {}  # register -> (highest value so far, the seq that had it)
    for r in rows:
        values = {"import_wh": r[i_imp], "export_wh": r[i_exp]}
        values.update(json.loads(r[i_regs]) if r[i_regs] else {})
        found += _below(high, values, f"reading seq {r[i_seq]}")
    high = {}
    for b in sorted(store.billing_snapshots(device), key=lambda b: (b.period_end, b.seq)):
        found += _below(high, {str(k): v for k, v in b.registers.items()}, f"billing seq {b.seq}")
    return found


def _below(high: dict[str, tuple[int, int]], values: dict, where: str) -> list[str]:
    found = []
    for reg, v in values.items():
        if v is None:
            continue
        was = high.get(reg)
        if was is not None and v < was[0]:
            found.append(f"{where}: {reg} = {v} < {was[0]} at {was[1]}")
        else:
            high[reg] = (v, where)
    return found


def duplicate_facts(store, device: bytes) -> list[str]:
    found = []
    ends = Counter(b.period_end for b in store.billing_snapshots(device))
    found += [f"billing period ending {end}: {n} snapshots" for end, n in ends.items() if n > 1]
    cols, rows = store.export("events", device)
    i_ev = cols.index("event_seq")
    entries = Counter(r[i_ev] for r in rows if r[i_ev] is not None)
    found += [f"event-log entry {e}: {n} frames" for e, n in entries.items() if n > 1]
    return found


@dataclass
class Result:
    """One scenario's run: its tallies, its own figures, and every check that failed (empty: it held)."""

    scenario: str
    form: str  # "short" (CI) or "long" (on demand)
    tallies: list[Tally] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # e.g. {"kills": 100, "resumed_within_periods_max": 1.2}
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and all(t.clean for t in self.tallies)

    def as_dict(self) -> dict:
        return {"scenario": self.scenario, "form": self.form, "ok": self.ok, "figures": self.figures,
                "failures": self.failures, "meters": [t.as_dict() for t in self.tallies]}
