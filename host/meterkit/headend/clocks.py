"""Meters' clocks: the drift of each (measured from frames that arrived promptly) and the set-time commands
that correct it (docs/concentrator.md, "Meters' clocks").

A meter whose newest frame says its clock is not set (status bit ST_CLOCK_NOT_SET: it booted without one) is
sent a set-time command (op 5) at once; a frame made before the meter's OK answer to a set-time (a lower seq,
delivered late from its outbox) says nothing about its clock now and is passed over. For the others the
drift is measured: a frame is made at meter time T and received at concentrator time R, R >= T - drift, so
T - R is the drift less the frame's delay. A frame from the future (T > R) is proof on its own: the meter is
at least T - R ahead. Behind is another matter: frames from an outbox arrive late, in bursts, so one frame
alone proves nothing. Two successive readings or hellos whose
meter times and receive times advance by the same amount (within clock_jitter_s) travelled with the same
delay: in a burst the receive times stand still while the meter times advance a reading period. Of such a pair
the later one gives the drift (a steady delay on every frame would pass the test too: a link does not keep
one). A drift beyond clock_drift_max_s is corrected with a set-time command, forced when it is beyond the
meter's free 900 s. Set-time commands are queued like an operator's (headend/commands.py) and delivered by
the dispatch: one at a time per meter, nothing twice, the time filled in when each attempt is signed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from meter import messages as M
from meterkit import wire as P
from meterkit.headend import commands as opcmds
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.devices import Device, Devices
from meterkit.store.api import QUEUE_PENDING, Store

log = logging.getLogger(__name__)

SET_TIME_VALID_S = 3600  # an automatic set-time command not delivered within this is dropped (measured again)


class Clocks:
    def __init__(self, config: ConcentratorConfig, store: Store, counters: Counters, devices: Devices):
        self.config = config
        self.store = store
        self.counters = counters
        self.devices = devices

    def observe(self, fresh: Iterable[P.Message], now: float) -> list[bytes]:
        """A batch's fresh messages, received at `now` (inside the batch's transaction): drift measured and
        stored, set-time commands queued. Returns the meters a command was queued for."""
        newest: dict[bytes, P.Message] = {}
        measured: set[bytes] = set()
        for m in fresh:
            if m.status & M.ST_CLOCK_NOT_SET and m.seq < (self.devices.get(m.device_id).clock_set_seq or -1):
                continue  # made before the meter took the set-time it has answered: history, not its clock now
            if m.kind == M.HELLO and m.status & M.ST_CLOCK_NOT_SET:
                # it has just booted without a clock (a power cut, a deploy's restart): a new case, asked at
                # once whatever it was asked before (clock_set_every_s is for a meter that stays wrong)
                self.devices.get(m.device_id).clock_asked = None
            if m.kind in (M.READING, M.HELLO) and self._measure(self.devices.get(m.device_id), m, now):
                measured.add(m.device_id)
            n = newest.get(m.device_id)
            if n is None or m.seq > n.seq:
                newest[m.device_id] = m
        queued = []
        for dev, m in newest.items():
            d = self.devices.get(dev)
            d.clock_unset = bool(m.status & M.ST_CLOCK_NOT_SET)
            if d.clock_unset:
                why, force = "its clock is not set", False  # an unset clock takes any time without force
            elif dev in measured and self._too_far(d.drift):
                why, force = f"its clock is off by {d.drift:+.0f} s", abs(d.drift) > M.SET_TIME_FREE_S
            else:
                continue
            if self._ask(d, why, force, now):
                queued.append(dev)
        return queued

    def _too_far(self, drift: float | None) -> bool:
        bound = self.config.clock_drift_max_s
        return drift is not None and bound is not None and abs(drift) > bound

    def _measure(self, d: Device, m: P.Message, now: float) -> bool:
        """One reading or hello: True when it and the one before travelled alike (the drift is measured)."""
        prev = d.clock_prev
        if m.status & M.ST_CLOCK_NOT_SET:
            d.clock_prev = None  # its times are seconds since boot: nothing to compare
            return False
        if prev is not None and m.seq <= prev[0]:
            return False  # an older frame (a back-fill, a resend) says nothing about now
        d.clock_prev = (m.seq, m.time, now)
        ahead = m.time - now
        if ahead > 0 and self._too_far(ahead):
            # from the future: no delay makes a frame early, so the meter is at least this far ahead. It is set
            # now: its clock may already judge our acks expired, and then no pair of prompt frames would come
            return self._drift(d, ahead, now)
        if prev is None or m.time <= prev[1]:
            return False
        if abs((m.time - prev[1]) - (now - prev[2])) > self.config.clock_jitter_s:
            return False  # not alike: one of them waited (an outbox burst, a reconnect)
        return self._drift(d, m.time - now, now)

    def _drift(self, d: Device, drift: float, now: float) -> bool:
        # saved with the batch's delivery state (headend/storage.py): one statement for all its meters, not one
        # per reading (a meter reporting promptly is measured on every reading)
        d.drift, d.drift_at = drift, now
        return True

    def _ask(self, d: Device, why: str, force: bool, now: float) -> bool:
        """Queue a set-time command for meter d unless one is pending or one was queued too recently."""
        if d.clock_asked is not None and now - d.clock_asked < self.config.clock_set_every_s:
            return False
        if any(q.op == M.OP_SET_TIME for q in self.store.queued_commands(d.id, QUEUE_PENDING)):
            return False
        try:
            opcmds.queue_in(self.store, d.id, M.OP_SET_TIME, opcmds.set_time_args(force), now,
                            int(now) + SET_TIME_VALID_S, f"clock: {why}")
        except opcmds.CommandError as e:  # pragma: no cover - the arguments are ours
            log.error("meter %s: set-time not queued: %s", d.id.hex(), e)
            return False
        d.clock_asked = now
        self.counters.stage("clock_sets_queued")
        log.info("meter %s: %s: set-time queued%s", d.id.hex(), why, " (force)" if force else "")
        return True
