"""Firmware rollout in waves: a canary first, then the rest, halted when a wave's meters do not come back.

Delivery goes through the operator command queue (meterkit.headend.commands), so the concentrator signs and
sends it like any command, one at a time per meter, resending an unanswered attempt after a reconnect: per
meter the manifest (op 13), every chunk (op 14, FW_CHUNK_MAX bytes) and activation (op 15), in that order. The
meter keeps what it has across link drops and reboots and answers a chunk it holds already again ('have N').

A meter has come back when it reports the update's done event (Update.done_event): for an image FW_CONFIRMED
with its version (the new image booted, metered, and its first reading was acknowledged); for a firmware-key
rotation FW_KEY_INSTALLED with the new key's id (installed, no restart). A wave is done when all its meters
have; it halts the rollout when one refuses a command, rolls back (FW_ROLLED_BACK), fails a command, or is not
back within the timeout. A halt fails the wave's commands still queued and never starts the next wave.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meter import events as E
from meter import messages as M
from meterkit.firmware.image import Update
from meterkit.headend.commands import operator, queue_in
from meterkit.store.api import QUEUE_PENDING, Store

FW_OPS = (M.OP_FW_MANIFEST, M.OP_FW_CHUNK, M.OP_FW_ACTIVATE)
FW_EVENTS = (E.FW_REFUSED, E.FW_ACTIVATED, E.FW_CONFIRMED, E.FW_ROLLED_BACK, E.FW_KEY_INSTALLED)
DEFAULT_VALID_S = 7 * 86400


def note(update: Update) -> str:
    return f"firmware {update.version} seq {update.seq}"


def queue_update(store: Store, device: bytes, update: Update, now: float, by: str | None = None,
                 expires: int | None = None, chunk: int = M.FW_CHUNK_MAX) -> list[int]:
    """The manifest, every chunk (of `chunk` bytes) and the activation for one meter, queued in one transaction
    (committed)."""
    by = operator() if by is None else by
    expires = int(now) + DEFAULT_VALID_S if expires is None else expires
    n = note(update)
    ops: list[tuple[int, dict | None]] = [(M.OP_FW_MANIFEST, {M.A_MANIFEST: update.manifest.hex()})]
    ops += [(M.OP_FW_CHUNK, {M.A_OFFSET: off, M.A_DATA: data.hex()}) for off, data in update.chunks(chunk)]
    ops.append((M.OP_FW_ACTIVATE, None))
    try:
        ids = [queue_in(store, device, op, args, now, expires, n, by) for op, args in ops]
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return ids


@dataclass
class MeterProgress:
    device: bytes
    queue_ids: list[int]
    since_seq: int  # the meter's newest stored frame when its delivery was queued: its later events count
    # queued, delivering, activated, confirmed (its done event), refused, rolled back, failed, timed out
    state: str = "queued"
    detail: str = ""


def progress(store: Store, p: MeterProgress, update: Update) -> MeterProgress:
    """Where one meter's update stands, from the events it reported since and its queue entries. The outcome
    the meter reported comes first: a command sent again after the update landed (its first answer lost to a
    cut) may be refused, and that changes nothing."""
    evs = [ev for ev in store.events(p.device, codes=FW_EVENTS) if ev.seq > p.since_seq]
    done = update.done_event()
    for ev in evs:
        if (ev.code, ev.value) == done:
            p.state, p.detail = "confirmed", update.landed()
            return p
        if ev.code == E.FW_ROLLED_BACK and ev.value == update.seq:
            p.state, p.detail = "rolled back", "its first boot failed: the previous image runs"
            return p
    entries = {q.id: q for q in store.queued_commands(p.device) if q.id in set(p.queue_ids)}
    answered = 0
    for qid in p.queue_ids:
        q = entries.get(qid)
        if q is None:
            continue
        if q.state == "answered" and q.result not in (None, M.RESULT_OK):
            p.state, p.detail = "refused", f"{q.reason or q.result}"
            return p
        if q.state in ("failed", "expired"):
            p.state, p.detail = "failed", f"command #{qid}: {q.state}: {q.reason or ''}"
            return p
        answered += q.state == "answered"
    refused = [ev for ev in evs if ev.code == E.FW_REFUSED]
    if refused:
        p.state, p.detail = "refused", str(refused[0].value)
        return p
    n = len(p.queue_ids)
    p.state = "activated" if answered == n else "delivering" if answered else "queued"
    p.detail = f"{answered}/{n} commands answered"
    return p


@dataclass
class Rollout:
    """Waves over `devices`: the first `canary` meters, then the rest `wave` at a time (None: all at once).
    step(now) moves it on (now: UTC seconds, the clock the concentrator and the queue run on; timeout_s on
    it too); state is 'running', 'done' or 'halted'."""

    store: Store
    update: Update
    devices: list[bytes]
    canary: int = 1
    wave: int | None = None
    timeout_s: float = 600.0
    by: str | None = None
    waves: list[list[bytes]] = field(default_factory=list)
    current: int = -1
    started_at: float = 0.0
    meters: dict[bytes, MeterProgress] = field(default_factory=dict)
    state: str = "running"
    reason: str = ""
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("no meters to update")
        if self.canary < 1:
            raise ValueError("the canary wave needs at least one meter")
        rest = self.devices[self.canary:]
        size = self.wave or len(rest) or 1
        self.waves = [self.devices[:self.canary]] + [rest[i:i + size] for i in range(0, len(rest), size)]

    def _start_wave(self, now: float) -> None:
        self.current += 1
        self.started_at = now
        for dev in self.waves[self.current]:
            since = self.store.max_seq(dev) or 0
            ids = queue_update(self.store, dev, self.update, now, self.by)
            self.meters[dev] = MeterProgress(dev, ids, since)
        self.log.append(f"wave {self.current + 1}/{len(self.waves)}: {len(self.waves[self.current])} meter(s)")

    def step(self, now: float) -> str:
        if self.state != "running":
            return self.state
        if self.current < 0:
            self._start_wave(now)
            return self.state
        wave = [progress(self.store, self.meters[d], self.update) for d in self.waves[self.current]]
        bad = [p for p in wave if p.state in ("refused", "rolled back", "failed")]
        if not bad and now - self.started_at > self.timeout_s:
            for p in wave:
                if p.state != "confirmed":
                    p.state, p.detail = "timed out", f"not back within {self.timeout_s:g} s ({p.detail})"
                    bad.append(p)
        if bad:
            self._halt(bad)
        elif all(p.state == "confirmed" for p in wave):
            if self.current + 1 == len(self.waves):
                self.state = "done"
                self.log.append("done: every meter " + self.update.landed())
            else:
                self._start_wave(now)
        return self.state

    def _halt(self, bad: list[MeterProgress]) -> None:
        self.state = "halted"
        self.reason = "; ".join(f"{p.device.hex()}: {p.state} ({p.detail})" for p in bad)
        self.log.append(f"halted in wave {self.current + 1}: {self.reason}")
        for p in self.meters.values():
            for q in self.store.queued_commands(p.device, QUEUE_PENDING):
                if q.id in p.queue_ids:
                    self.store.update_queued(q.id, state="failed", reason="firmware rollout halted")
        self.store.commit()

    def run(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
            every_s: float = 0.5) -> str:
        while self.step(clock()) == "running":
            sleep(every_s)
        return self.state


def status_rows(store: Store) -> list[dict]:
    """Per registered meter: the firmware its last hello named, its last firmware event, its update commands
    still queued."""
    rows = []
    names = {E.FW_REFUSED: "refused", E.FW_ACTIVATED: "activated", E.FW_CONFIRMED: "confirmed",
             E.FW_ROLLED_BACK: "rolled back", E.FW_KEY_INSTALLED: "firmware key installed"}
    for m in store.meters():
        evs = store.events(m.device_id, codes=FW_EVENTS)
        last = max(evs, key=lambda e: e.seq) if evs else None
        pending = [q for q in store.queued_commands(m.device_id, QUEUE_PENDING) if q.op in FW_OPS]
        rows.append({"meter": m.name or m.device_id.hex(), "device": m.device_id.hex(), "firmware": m.firmware,
                     "last_event": f"{names[last.code]} {last.value}" if last else None,
                     "pending_commands": len(pending)})
    return rows
