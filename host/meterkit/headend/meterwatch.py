"""The security monitor's rules over what meters reported (after each ingest commit; docs/alerts.md):

    events     WATCHDOG_RESET (watchdog); SENSOR_FAULT, CHIP_RESET storms (tamper); CLOCK_SET not asked for by
               a set-time command, CLOCK_INVALID (clock-jump); AUTH_FAIL (auth-failure: the meter refused a
               head-end message); COMMAND_REFUSED (command-refused); REBOOT (the next boot was asked for)
    hellos     firmware changed outside a rollout (firmware); restarts nobody asked for (reboot); the boot count
               going back (tamper)
    answers    a command answered with a refusal (command-refused)
    frames     a frame from further in the future than the meter's clock may be (clock-jump)
    readings   import near zero with the voltage normal (consumption-drop: headend/consumption.py)

Meter-reported occurrences are windowed by the meter's own time: an outbox that delivers hours of events at
once after a link cut is not a storm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from meter import events as E
from meter import messages as M
from meterkit.headend.alertrules import AlertRules
from meterkit.headend.consumption import Consumption
from meterkit.store.api import Store
from meterkit.wire.records import CommandResponse, Event, Frame, Hello, Reading

if TYPE_CHECKING:
    from meterkit.headend.monitor import Monitor

SANE_TIME = 1_577_836_800  # 2020-01-01 UTC: a meter time before it is seconds since boot (no clock)


def _at(meter_time: int, now: float) -> float:
    """The time an occurrence a meter reported is windowed by: its own, when its clock was set."""
    return meter_time if meter_time >= SANE_TIME else now


class _Meter:
    __slots__ = ("firmware", "boot_count", "asked_boots", "consumption")

    def __init__(self, firmware: str | None = None, boot_count: int | None = None):
        self.firmware = firmware  # from its latest hello (the meters table at start)
        self.boot_count = boot_count
        self.asked_boots = 0  # restarts asked for (REBOOT events, expected firmware changes) not yet seen
        self.consumption: Consumption | None = None


class MeterWatch:
    def __init__(self, rules: AlertRules, monitor: Monitor):
        self.rules = rules
        self.monitor = monitor
        self.meters: dict[bytes, _Meter] = {}
        self._events = {E.WATCHDOG_RESET: self._watchdog, E.SENSOR_FAULT: self._sensor_fault,
                        E.CHIP_RESET: self._chip_reset, E.CLOCK_SET: self._clock_set,
                        E.CLOCK_INVALID: self._clock_invalid, E.AUTH_FAIL: self._auth_fail,
                        E.COMMAND_REFUSED: self._command_refused, E.REBOOT: self._reboot_asked}

    def load(self, store: Store) -> None:
        """Each registered meter's firmware and boot count as the database has them (at start, before any
        ingest: a hello stored later is compared with these)."""
        for rec in store.meters():
            self.meters[rec.device_id] = _Meter(rec.firmware, rec.boot_count)

    def _meter(self, dev: bytes) -> _Meter:
        m = self.meters.get(dev)
        if m is None:
            m = self.meters[dev] = _Meter()
        return m

    def committed(self, frames: list[Frame], readings: list[Reading], events: list[Event],
                  hellos: Iterable[Hello], responses: list[CommandResponse], now: float) -> None:
        rules = self.rules
        if rules.clock_jump.enabled:
            ahead = now + rules.clock_jump.ahead_s
            future = [f for f in frames if f.meter_time > ahead and not f.status & M.ST_CLOCK_NOT_SET]
            if future:
                self._future(future, now)
        handlers = self._events
        for e in events:  # before the hellos: a REBOOT event announces the restart its hello reports
            h = handlers.get(e.code)
            if h is not None:
                h(e, now)
        for h in sorted(hellos, key=lambda h: h.seq):
            self._hello(h, now)
        rule = rules.command_refused
        for r in responses:
            if r.result < 0 and r.result != M.RESULT_GONE:
                self.monitor.hit("command-refused", rule, r.device_id, "", now,
                                 f"command (counter {r.counter}) refused: {r.result}"
                                 + (f" {r.reason}" if r.reason else ""), now=now)
        if rules.consumption_drop.enabled:
            self._readings(readings, now)

    # -- events
    def _watchdog(self, e: Event, now: float) -> None:
        self.monitor.hit("watchdog", self.rules.watchdog, e.device_id, "", _at(e.time, now),
                         f"watchdog reset ({e.value})", now=now)

    def _sensor_fault(self, e: Event, now: float) -> None:
        rule = self.rules.tamper
        if rule.enabled:
            self.monitor.raise_alert("tamper", rule.severity, e.device_id, "", 1,
                                     f"sensor fault: {e.value} (the sensor removed or disconnected?)", now)

    def _chip_reset(self, e: Event, now: float) -> None:
        rule = self.rules.tamper
        self.monitor.hit("tamper", rule, e.device_id, "", _at(e.time, now),
                         f"chip resets: {rule.count} or more within {rule.window_s:g} s", now=now)

    def _clock_set(self, e: Event, now: float) -> None:
        rule = self.rules.clock_jump
        shift = e.value if isinstance(e.value, int) else 0
        if rule.enabled and abs(shift) >= rule.min_shift_s and not self._asked(e.device_id, M.OP_SET_TIME, now):
            self._clock(e.device_id, f"clock moved by {shift:+d} s, no set-time command sent to it", now)

    def _clock_invalid(self, e: Event, now: float) -> None:
        if self.rules.clock_jump.enabled:
            self._clock(e.device_id, f"clock reads a time it cannot use ({e.value})", now)

    def _future(self, future: list[Frame], now: float) -> None:
        """Frames from the future: one occurrence per frame, worded once per meter and batch (the furthest)."""
        worst: dict[bytes, Frame] = {}
        n: dict[bytes, int] = {}
        for f in future:
            w = worst.get(f.device_id)
            if w is None or f.meter_time > w.meter_time:
                worst[f.device_id] = f
            n[f.device_id] = n.get(f.device_id, 0) + 1
        for dev, f in worst.items():
            self.monitor.raise_alert("clock-jump", self.rules.clock_jump.severity, dev, "", n[dev],
                                     f"frame {f.seq} made {f.meter_time - now:.0f} s in the future", now)

    def _clock(self, dev: bytes, detail: str, now: float) -> None:
        self.monitor.raise_alert("clock-jump", self.rules.clock_jump.severity, dev, "", 1, detail, now)

    def _auth_fail(self, e: Event, now: float) -> None:
        self.monitor.hit("auth-failure", self.rules.auth_failure, e.device_id, "", _at(e.time, now),
                         f"the meter refused a head-end message: {e.value}", now=now)

    def _command_refused(self, e: Event, now: float) -> None:
        self.monitor.hit("command-refused", self.rules.command_refused, e.device_id, "", _at(e.time, now),
                         f"the meter refused a malformed command: {e.value}", now=now)

    def _reboot_asked(self, e: Event, now: float) -> None:
        self._meter(e.device_id).asked_boots += 1

    def _asked(self, dev: bytes, op: int, now: float) -> bool:
        """Was a command `op` sent to the meter within clock_jump.commanded_within_s (its latest attempt)?"""
        within = self.rules.clock_jump.commanded_within_s
        try:
            queued = self.monitor.store.queued_commands(dev)
        except Exception:  # noqa: BLE001 - the database is away: not asked, as far as can be told
            return False
        return any(q.op == op and q.sent_at is not None and now - within <= q.sent_at <= now for q in queued)

    # -- hellos
    def _hello(self, h: Hello, now: float) -> None:
        m = self._meter(h.device_id)
        self._firmware(m, h, now)
        if m.boot_count is not None and h.boot_count != m.boot_count:
            self._boots(m, h, now)
        m.firmware, m.boot_count = h.firmware, h.boot_count

    def _firmware(self, m: _Meter, h: Hello, now: float) -> None:
        rule = self.rules.firmware
        changed = m.firmware is not None and h.firmware != m.firmware
        if not (changed or rule.allowed):
            return
        if self.monitor.firmware_expected(h.device_id, h.firmware, now):
            if changed:
                m.asked_boots += 1  # an update's restart
            return
        if rule.enabled:
            self.monitor.raise_alert("firmware", rule.severity, h.device_id, "", 1,
                                     f"firmware changed from {m.firmware} to {h.firmware} outside a rollout"
                                     if changed else f"firmware {h.firmware} is not one of the allowed", now)

    def _boots(self, m: _Meter, h: Hello, now: float) -> None:
        if h.boot_count < m.boot_count:
            if self.rules.tamper.enabled:
                self.monitor.raise_alert("tamper", self.rules.tamper.severity, h.device_id, "", 1,
                                         f"boot count went back from {m.boot_count} to {h.boot_count} (flash "
                                         "wiped, or another device with its key?)", now)
            return
        restarts = h.boot_count - m.boot_count
        asked = min(restarts, m.asked_boots)
        m.asked_boots -= asked
        if restarts > asked:
            rule = self.rules.reboot
            self.monitor.hit("reboot", rule, h.device_id, "", _at(h.meter_time, now),
                             f"{rule.count} or more restarts within {rule.window_s / 3600:g} h that no reboot "
                             f"command asked for (boot count {h.boot_count})", restarts - asked, now)

    # -- readings
    def _readings(self, readings: list[Reading], now: float) -> None:
        rule = self.rules.consumption_drop
        for r in readings:
            m = self.meters.get(r.device_id) or self._meter(r.device_id)
            c = m.consumption
            if c is None:
                c = m.consumption = Consumption(rule)
            detail = c.add(r)
            if detail is not None:
                self.monitor.raise_alert("consumption-drop", rule.severity, r.device_id, "", 1, detail, now)
