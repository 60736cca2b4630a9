"""What is missing, and asking for it: holes in a meter's sequence numbers (back-fill, op 1) and missing
load-profile rows (a profile request, op 4).

Frame gaps. A hole below a stored frame (newer frames arrived, an older one did not) is recorded at once. If
it is still open `backfill_after` seconds later (the meter's own resend after a reconnect had its chance), a
back-fill command goes out on the meter's latest connection, and again when it expires unanswered (at most
`backfill_attempts` times). States: 'open', 'requested'; then 'resolved' (filled without a back-fill),
'filled' (after one), or settled by the meter's answer: 'skipped' (0: never made) or 'lost' (-1: gone).

Interval gaps. Interval end times with no row are recorded: 'open' while frames that could carry them are
missing, 'filled' when the rows arrive, 'not-sent' when every frame is accounted for (the meter made no row: it
was off). When a frame between the neighbouring rows is gone (its outbox dropped it), the rows may still be in
the meter's load profile (99.1.0): the gap is 'requested' from it by time (a queued profile command, note
"interval gap N"), then 'filled' when the rows arrive, or 'lost' when the request ended without them.
"""

from __future__ import annotations

import logging

from meter import messages as M
from meterkit import wire as P
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.devices import WORKING, Device, Devices, FrameGap
from meterkit.headend.dispatch import issue_command
from meterkit.store.api import QUEUE_PENDING, Store
from meterkit.store.records import GapRecord
from meterkit.wire.records import CommandResponse

log = logging.getLogger(__name__)


def _close(store: Store, counters: Counters, counter_prefix: str, gap_id: int, state: str, missing: int | None,
           now: float) -> None:
    store.update_gap(gap_id, state=state, missing=missing, closed_at=now)
    counters.stage(counter_prefix + state.replace("-", "_"))


class FrameGaps:
    def __init__(self, config: ConcentratorConfig, store: Store, headend: P.HeadEnd, counters: Counters):
        self.config = config
        self.store = store
        self.headend = headend
        self.counters = counters

    def update(self, d: Device, now: float) -> None:
        """After frames were stored: close the gaps they filled, record the holes that are new."""
        for g in list(d.gaps):
            if d.seqs.missing(g.first, g.last) == 0:
                self._close(d, g, "filled" if g.attempts else "resolved", 0, now)
        for lo, hi in d.seqs.holes():
            if any(g.first <= lo and hi <= g.last for g in d.gaps):
                continue
            gid = self.store.add_gap(d.id, "frames", lo, hi, now)
            if gid is None:  # a gap with this first number was recorded (and closed) before: reopen it
                old = [g for g in self.store.gaps(d.id, "frames") if g.first == lo]
                if not old:
                    continue
                gid = old[0].id
                self.store.update_gap(gid, last=hi, state="open", closed_at=None, missing=None)
            d.gaps.append(FrameGap(gid, lo, hi, "open", now))
            self.counters.stage("gaps_detected")
            log.info("meter %s: frames %d..%d missing", d.id.hex(), lo, hi)

    def _close(self, d: Device, g: FrameGap, state: str, missing: int, now: float) -> None:
        _close(self.store, self.counters, "gaps_", g.id, state, missing, now)
        d.gaps.remove(g)

    def answered(self, d: Device, r: CommandResponse, now: float) -> None:
        """The meter answered a back-fill: it has resent what it had; the rest was never made (0) or is gone."""
        g = next((g for g in d.gaps if g.counter == r.counter), None)
        if g is None:
            return
        missing = d.seqs.missing(g.first, g.last)
        if missing == 0:
            state = "filled"
        else:
            state = "skipped" if r.result == M.RESULT_OK else "lost"
            d.seqs.cover(g.first, g.last)
            log.warning("meter %s: %d of frames %d..%d %s (back-fill answer %d%s)", d.id.hex(), missing, g.first,
                        g.last, "never made" if r.result == M.RESULT_OK else "gone", r.result,
                        f": {r.reason}" if r.reason else "")
        self._close(d, g, state, missing, now)

    def _due(self, g: FrameGap, now: float) -> bool:
        cfg = self.config
        if g.state == "open":
            return now - g.detected_at >= cfg.backfill_after
        return (g.requested_at is not None and now > g.requested_at + cfg.command_ttl_s
                and g.attempts < cfg.backfill_attempts)

    def request_due(self, d: Device, now: float) -> list[tuple[Device, int, int, int, bytes]]:
        """Back-fill commands for the gaps that are due (housekeeping's transaction): (device, first, last,
        command counter, frame) to send once committed."""
        if not d.connected or d.clock_unset:
            return []  # a meter without a clock takes set-time commands only (headend/clocks.py)
        out = []
        for g in d.gaps:
            if not self._due(g, now):
                continue
            first = g.first if d.seqs.ack is None else max(g.first, d.seqs.ack + 1)
            frame = issue_command(self.store, self.headend, d, M.OP_BACKFILL, {M.A_FIRST: first, M.A_LAST: g.last},
                                  now, self.config.command_ttl_s)
            g.state, g.requested_at, g.counter = "requested", now, d.counter
            g.attempts += 1
            self.store.update_gap(g.id, state="requested", requested_at=now, command_counter=d.counter,
                                  attempts=g.attempts)
            self.counters.stage("commands_sent")
            self.counters.stage("backfills_sent")
            out.append((d, first, g.last, d.counter, frame))
        return out

    @staticmethod
    def send(requests: list[tuple[Device, int, int, int, bytes]]) -> None:
        for d, first, last, counter, frame in requests:
            log.info("meter %s: back-fill %d..%d requested (command %d)", d.id.hex(), first, last, counter)
            d.link.send(frame)

    def catching_up(self, d: Device, now: float) -> bool:
        """Can frames the meter misses still come: a gap not asked for yet, or a back-fill that may still be
        answered or repeated?"""
        cfg = self.config
        return any(g.state == "open" or g.attempts < cfg.backfill_attempts
                   or (g.requested_at is not None and now <= g.requested_at + cfg.command_ttl_s) for g in d.gaps)


class IntervalGaps:
    def __init__(self, config: ConcentratorConfig, store: Store, counters: Counters):
        self.config = config
        self.store = store
        self.counters = counters

    def scan(self, d: Device, now: float) -> None:
        """Record load-profile rows missing around the rows stored since the last scan (from d.rows_from)."""
        rows = self.store.interval_rows(d.id, d.rows_from)  # ascending
        prev = self.store.interval_before(d.id, d.rows_from)
        if prev is not None:
            rows.insert(0, prev)
        known = self.store.gaps(d.id, "intervals")
        for a, b in zip(rows, rows[1:], strict=False):
            period = a.period_s or b.period_s
            if not period or b.end - a.end <= period:
                continue
            first, last = a.end + period, b.end - period
            if any(g.first <= last and first <= g.last for g in known):
                continue
            if self.store.add_gap(d.id, "intervals", first, last, now) is not None:
                self.counters.stage("interval_gaps_detected")
                log.info("meter %s: load-profile rows %d..%d missing", d.id.hex(), first, last)

    def check(self, devices: Devices, now: float) -> None:
        """Settle what can be settled of the interval gaps being worked on."""
        for g in self.store.gaps(kind="intervals", states=WORKING):
            d = devices.known(g.device_id)
            if d is not None:
                self._check(d, g, now)

    def _check(self, d: Device, g: GapRecord, now: float) -> None:
        have = len(self.store.interval_rows(d.id, g.first, g.last))
        before = self.store.interval_before(d.id, g.first)
        after = self.store.interval_after(d.id, g.last)
        period = before.period_s if before is not None else None
        want = (g.last - g.first) // period + 1 if period else None
        if want is not None and have >= want:
            self._close(g, "filled", 0, now)
            if g.state == "requested":
                log.info("meter %s: load-profile rows %d..%d filled from the profile", d.id.hex(), g.first, g.last)
            return
        if g.state == "requested":
            self._request_ended(d, g, want, have, now)
            return
        if before is None or after is None:
            return
        lo, hi = sorted((before.seq, after.seq))  # the frames that carried the neighbouring rows
        if hi - lo > 1 and d.seqs.missing(lo + 1, hi - 1):
            return  # a frame between them may still come, with the rows
        gone = [x for x in self.store.gaps(d.id, "frames", ("lost",)) if x.first < hi and lo < x.last]
        if gone:
            self._request_profile(d, g, gone, now)
            return
        self._close(g, "not-sent", (want - have) if want else None, now)  # every frame is here: never made

    def _request_profile(self, d: Device, g: GapRecord, gone: list[GapRecord], now: float) -> None:
        """Frames the meter's outbox dropped lay between the neighbouring rows: the rows may be gone from the
        outbox but not from the meter's load profile (99.1.0): ask for them by time."""
        qid = self.store.queue_command(d.id, M.OP_PROFILE, {M.A_FROM: g.first, M.A_TO: g.last}, now,
                                       int(now) + self.config.profile_request_s, note=_note(g))
        self.store.update_gap(g.id, state="requested", requested_at=now, attempts=g.attempts + 1)
        self.counters.stage("interval_gaps_requested")
        log.info("meter %s: load-profile rows %d..%d were in frames %d..%d it no longer holds: asked for them from "
                 "its profile (command #%d)", d.id.hex(), g.first, g.last, gone[0].first, gone[-1].last, qid)

    def _request_ended(self, d: Device, g: GapRecord, want: int | None, have: int, now: float) -> None:
        """A gap asked for from the meter's profile, not filled: settled once the request has ended (answered:
        the rows it still had came before its answer; expired or failed: nothing more will come)."""
        qs = [q for q in self.store.queued_commands(d.id) if q.note == _note(g) and q.op == M.OP_PROFILE]
        if not qs or qs[-1].state in QUEUE_PENDING:
            return
        q = qs[-1]
        missing = (want - have) if want is not None else None
        self._close(g, "lost", missing, now)
        log.warning("meter %s: load-profile rows %d..%d: %s of them gone from the meter too (profile command #%d "
                    "%s%s)", d.id.hex(), g.first, g.last, "?" if missing is None else missing, q.id, q.state,
                    f": {q.result} {q.reason or ''}".rstrip() if q.state == "answered" else "")

    def _close(self, g: GapRecord, state: str, missing: int | None, now: float) -> None:
        _close(self.store, self.counters, "interval_gaps_", g.id, state, missing, now)


def _note(g: GapRecord) -> str:
    return f"interval gap {g.id}"
