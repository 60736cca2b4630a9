"""The publisher the concentrator feeds: after each commit it is told what was stored (Concentrator's
northbound hook), works out what Home Assistant should see (tracker) and hands it to the MQTT link, which
publishes on its own thread. Nothing here waits for the broker: ingest and acknowledgements go on whether it
is up, down at start or lost mid-run; the latest state is published when it returns (link).

    bridge = MqttBridge(cfg, concentrator); bridge.start()   # on the concentrator's running event loop
    ... the concentrator's stop() / kill() stop it too

Availability: a meter is online while its newest frame is at most `offline_periods` reporting periods old (by
the concentrator's clock; 2 by default, so Home Assistant shows an outage within 2 periods of a meter's last
frame, sooner than the concentrator's own outage record, which waits offline_after periods), and never before
its first frame. A meter the concentrator holds an outage for stays offline after a restart until it is heard.
At start the newest stored frame of every published meter is read back, verified again, and published: a
restarted concentrator starts from what it stored, so nothing goes out of order or backwards.

Security alerts (the concentrator's monitor, docs/alerts.md): each published meter's open alerts as a problem
flag (<prefix>/<meter>/alert), sent when an alert is stored and when `meterkit alerts ack` closed one (read
again every ALERTS_S); every alert stored also on <prefix>/alerts. Not in totals-only mode: an alert can say what
a household does (a consumption drop is an absence).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from meter import messages as M
from meterkit import wire as P
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.commands import Commands
from meterkit.integrations.mqtt.config import MqttConfig
from meterkit.integrations.mqtt.link import Link
from meterkit.integrations.mqtt.tracker import Tracker
from meterkit.store.api import Store
from meterkit.wire.records import Frame, Hello, Reading, records_of

if TYPE_CHECKING:
    from meterkit.headend.concentrator import Concentrator

log = logging.getLogger(__name__)

WATCH_S = 0.2  # s of real time between availability checks
LOOK_BACK = 64  # stored frames read back at start to find a meter's newest reading
ALERTS_S = 5.0  # s of real time between reading the open alerts again (an operator's ack is seen so)


class MqttBridge:
    def __init__(self, cfg: MqttConfig, conc: Concentrator, watch_s: float = WATCH_S, alerts_s: float = ALERTS_S):
        self.cfg = cfg
        self.watch_s = watch_s  # real s between availability checks (a simulated fleet's clock runs faster)
        self.alerts_s = alerts_s  # real s between reading the open alerts again
        self.conc = conc
        self.tracker = Tracker(cfg)
        subs = T.command_subscriptions(cfg) if cfg.commands else []
        self.link = Link(cfg, self._message, subs)
        self.commands = Commands(cfg, conc.store, conc.counters, self.now, conc.dispatch.send_queued)
        self.started: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task | None = None
        self._alert_sent: dict[bytes, str] = {}  # meter -> its alert payload last published
        self._alerts_at = 0.0

    @property
    def _alerts_on(self) -> bool:
        """Alerts are published with the monitor on, and not in totals-only mode (privacy)."""
        return self.conc.monitor is not None and not self.cfg.totals_only

    def now(self) -> float:
        return self.conc.clock()  # the concentrator's clock (a simulated fleet replaces it while running)

    # -- life cycle
    def start(self) -> MqttBridge:
        """Read back each published meter's newest stored state, attach to the concentrator, connect (the
        broker may be down: retried in the background)."""
        self.loop = asyncio.get_running_loop()
        self.started = self.now()
        out: list[tuple[str, str]] = []
        for rec in self.conc.store.meters():
            if self.cfg.published(rec.device_id):
                st = self.tracker.meter(T.MeterInfo(rec.device_id, rec.name, rec.firmware, rec.board))
                out += self.tracker.discover(st)
                frames, readings = newest_stored(self.conc.store, rec.device_id, self.conc.devices.public_key)
                out += self.tracker.committed(frames, readings, [])
        out += self._availability()
        if self._alerts_on:
            self.conc.monitor.sinks.append(self.alerted)
            out += self._alert_states()
        self.link.put(out)
        self.conc.add_northbound(self)
        self.link.connect()
        self._watch = self.loop.create_task(self._watching())
        return self

    def stop(self) -> None:
        self._detach()
        self._cancel()
        self.link.close()

    def kill(self) -> None:
        self._detach()
        self._cancel()
        self.link.kill()

    def _detach(self) -> None:
        if self.conc.monitor is not None and self.alerted in self.conc.monitor.sinks:
            self.conc.monitor.sinks.remove(self.alerted)

    def _cancel(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    # -- the concentrator's hook: after each commit (its event loop)
    def committed(self, frames: list[Frame], readings: list[Reading], hellos: list[Hello]) -> None:
        out: list[tuple[str, str]] = []
        for dev in {f.device_id for f in frames} - self.tracker.meters.keys():  # registered since the start
            rec = self.conc.store.meter(dev)
            if rec is not None and self.cfg.published(dev):
                out += self.tracker.discover(self.tracker.meter(T.MeterInfo(dev, rec.name, rec.firmware, rec.board)))
        out += self.tracker.committed(frames, readings, hellos)
        out += self._availability()
        self.link.put(out)

    # -- security alerts
    def alerted(self, alerts: list[Any]) -> None:
        """The monitor's alerts, just committed: each on the alerts topic; the problem flags read again."""
        self.link.put([(T.alerts_topic(self.cfg), T.alert_event_payload(a)) for a in alerts] + self._alert_states())

    def _alert_states(self) -> list[tuple[str, str]]:
        """The problem flag of every published meter whose open alerts changed (one read of the store)."""
        self._alerts_at = asyncio.get_running_loop().time() if self.loop else 0.0
        by_meter: dict[bytes, list] = {}
        for a in self.conc.store.alerts(states=["open"]):
            by_meter.setdefault(a.device_id, []).append(a)
        out = []
        for dev in self.tracker.meters:
            payload = T.alert_payload(by_meter.get(dev, []))
            if self._alert_sent.get(dev) != payload:
                self._alert_sent[dev] = payload
                out.append((T.alert_topic(self.cfg, dev), payload))
        return out

    # -- availability
    async def _watching(self) -> None:
        while True:
            await asyncio.sleep(self.watch_s)
            try:
                out = self._availability()
                if self._alerts_on and self.loop.time() - self._alerts_at >= self.alerts_s:
                    out += self._alert_states()
                self.link.put(out)
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("MQTT availability")

    def _availability(self) -> list[tuple[str, str]]:
        now = self.now()
        out: list[tuple[str, str]] = []
        for dev, st in self.tracker.meters.items():
            out += self.tracker.availability(st, self.online(dev, now))
        return out

    def online(self, dev: bytes, now: float) -> bool:
        d = self.conc.devices.known(dev)
        if d is None or d.last_seen is None:
            return False
        since = d.last_seen if not d.online or self.started is None else max(d.last_seen, self.started)
        return now - since <= d.period * self.cfg.offline_periods

    # -- commands (paho's thread -> the event loop)
    def _message(self, topic: str, payload: bytes, retained: bool) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.commands.handle, topic, payload, retained)

    def stats(self) -> dict[str, Any]:
        return {"mqtt_connected": self.link.connected, "mqtt_connects": self.link.connects,
                "mqtt_published": self.link.published, "mqtt_decreases_held": self.tracker.decreases_held,
                "mqtt_stale_skipped": self.tracker.stale_skipped, "mqtt_commands_refused": dict(self.commands.refused)}


def newest_stored(store: Store, dev: bytes, lookup: Any) -> tuple[list[Frame], list[Reading]]:
    """A meter's newest stored frame and its newest stored reading (looking back LOOK_BACK sequence numbers),
    verified again from the stored evidence; ([], []) when it has none."""
    top = store.max_seq(dev)
    frames: list[Frame] = []
    readings: list[Reading] = []
    if top is None:
        return frames, readings
    for seq in range(top, max(top - LOOK_BACK, -1), -1):
        raw = store.frame_raw(dev, seq)
        if raw is None:
            continue
        try:
            m = P.verify_and_decode(raw, lookup)
        except P.ProtocolError as e:  # stored evidence that no longer verifies: never published
            log.error("meter %s: stored frame %d does not verify (%s): not published", dev.hex(), seq, e)
            continue
        if not frames:
            frames.append(Frame.of(m))
        if m.kind == M.READING:
            readings += records_of(m)
            break
    return frames, readings
