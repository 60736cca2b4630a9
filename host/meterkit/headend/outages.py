"""Outages, by the injected clock: a meter silent for more than its reporting period x `offline_after` is
offline; the outage starts at its last frame and ends at its next one.

The outage is then matched with the meter's own account of it as that arrives (for `match_window` seconds, at
least `offline_after` periods): frames flagged "power failure" (status bit 3, the hello after a restart) and
power-up events say the meter lost power (power_up_at: its own time of the restart); frames whose meter time
lies inside the silence, sent later from its outbox, say the meter was alive and the link was down.
"""

from __future__ import annotations

import logging

from meter import events as mevents
from meter import messages as M
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.devices import Device
from meterkit.store.api import Store

log = logging.getLogger(__name__)

EVIDENCE_KEPT = 50  # sequence numbers of each kind of evidence kept with an outage


class Outages:
    def __init__(self, config: ConcentratorConfig, store: Store, counters: Counters, started: float):
        self.config = config
        self.store = store
        self.counters = counters
        self.started = started  # the head-end's own downtime is no meter's silence

    def check_silence(self, d: Device, now: float) -> None:
        """Housekeeping: declare a meter that has been silent too long offline."""
        if not d.online or d.last_seen is None:
            return
        if now - max(d.last_seen, self.started) <= d.period * self.config.offline_after:
            return
        d.online = False
        oid = self.store.open_outage(d.id, d.last_seen, now)
        d.outage = (oid, d.last_seen, d.seqs.newest())
        self.store.update_meter(d.id, online=False)
        self.counters.stage("outages")
        log.warning("meter %s offline: silent for %.0f s", d.id.hex(), now - d.last_seen)

    def heard(self, d: Device, now: float, power_failed: bool) -> None:
        """Frames from the meter were stored (the ingest's transaction): an open outage ends."""
        if not d.online:
            d.online = True
            if d.outage is not None:
                oid, start, before = d.outage
                self.store.close_outage(oid, now)
                d.outage = None
                until = now + max(self.config.match_window, d.period * self.config.offline_after)
                d.matching.append((oid, start, now, until, before))
                log.info("meter %s back after %.0f s", d.id.hex(), now - start)
        if power_failed or d.matching:
            self.match(d, now)

    def match_due(self, d: Device, now: float) -> None:
        """Housekeeping: a last match for outages whose matching window has passed."""
        if d.matching and any(now >= until for _, _, _, until, _ in d.matching):
            self.match(d, now)

    def match(self, d: Device, now: float) -> None:
        """Match recently ended outages with the meter's own account of them."""
        keep = []
        for oid, start, end, until, before in d.matching:
            self._match_one(d, oid, start, end, until, before)
            if now < until:
                keep.append((oid, start, end, until, before))
        d.matching = keep

    def _match_one(self, d: Device, oid: int, start: float, end: float, until: float, before: int | None) -> None:
        power_seqs, up_events, during = [], [], 0
        power_up = None
        slack = min(d.period, (end - start) / 4)
        frames = self.store.frames_after(d.id, -1 if before is None else before, until)
        event_seqs = [f.seq for f in frames if f.kind == M.EVENT]
        ups = {e.seq: e.time for e in self.store.events(d.id, event_seqs, (mevents.POWER_UP,))}
        for f in frames:
            status = f.status or 0  # None: beyond what the store holds
            clock_set = not status & M.ST_CLOCK_NOT_SET
            if status & M.ST_POWER_FAIL:
                power_seqs.append(f.seq)
                if f.kind == M.HELLO and clock_set and (power_up is None or f.meter_time < power_up):
                    power_up = f.meter_time
            if f.seq in ups:
                up_events.append(f.seq)
                if clock_set and (power_up is None or ups[f.seq] < power_up):
                    power_up = ups[f.seq]
            if clock_set and start + slack < f.meter_time < end - slack:
                during += 1
        powered = bool(power_seqs or up_events)
        cause = ("power+communication" if powered and during else "power" if powered
                 else "communication" if during else "unknown")
        self.store.match_outage(oid, cause, power_up, {"power_fail_frames": power_seqs[:EVIDENCE_KEPT],
                                                       "power_up_events": up_events[:EVIDENCE_KEPT],
                                                       "frames_made_during": during})
