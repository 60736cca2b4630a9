"""Commands from Home Assistant (opt-in): the relay switch and the shed button become signed, queued commands.

Three guards, each enough to refuse: the broker's ACL (only Home Assistant's user may publish to the command
topics: docs/home-assistant.md), the bridge's own switch (MqttConfig.commands) and its allow-list of meters.
A command reaches a meter the way `meterkit relay` and `meterkit dr` send it: through the persisted queue
(checked, audited with who = HA_ACTOR, delivered when the meter is connected, signed with a fresh counter). What
Home Assistant then shows is the relay state the meter confirms (tracker), never the one requested.

Refused, logged and counted (concentrator counter mqtt_commands_refused; the reason in the log): commands
while commands are off, for a meter not on the allow-list or not registered, a payload other than ON / OFF
(relay) or PRESS (shed), a retained command (a stale one the broker kept), too many of Home Assistant's
commands waiting for one meter, a command the queue refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meterkit.dr.programme import call_meter_event
from meterkit.headend import commands as C
from meterkit.headend.counters import Counters
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.config import MqttConfig
from meterkit.store.api import QUEUE_PENDING, Store

log = logging.getLogger(__name__)

HA_ACTOR = "home assistant (mqtt)"  # who, in the audit log
MAX_PAYLOAD = 32  # bytes: ON, OFF, PRESS
MAX_PENDING = 4  # of Home Assistant's commands waiting for one meter: more are refused
RELAY_VALID_S = 3600  # a switch flipped in Home Assistant is not acted on hours later


class Commands:
    def __init__(self, cfg: MqttConfig, store: Store, counters: Counters, clock: Callable[[], float],
                 send: Callable[[float, list[bytes]], None]):
        self.cfg = cfg
        self.store = store
        self.counters = counters
        self.clock = clock
        self.send = send  # dispatch.send_queued(now, meters): out at once if the meter is connected
        self.refused: dict[str, int] = {}  # reason -> count (this process)

    def handle(self, topic: str, payload: bytes, retained: bool) -> int | None:
        """One command message (on the concentrator's event loop): the queue id, or None (refused)."""
        parsed = T.parse_command_topic(self.cfg, topic)
        if parsed is None:
            return self._refuse("malformed", topic, payload, "not a command topic")
        dev, what = parsed
        text = payload.decode("ascii", "replace").strip() if len(payload) <= MAX_PAYLOAD else None
        if retained:
            return self._refuse("retained", topic, payload, "a retained command (stale): commands are not retained")
        if not self.cfg.commands:
            return self._refuse("commands-off", topic, payload, "commands from Home Assistant are off")
        if dev not in self.cfg.allow:
            return self._refuse("not-allowed", topic, payload, "the meter is not on the allow-list (--mqtt-allow)")
        if what == "relay" and text not in (T.SWITCH_ON, T.SWITCH_OFF):
            return self._refuse("malformed", topic, payload, f"the relay takes {T.SWITCH_ON} or {T.SWITCH_OFF}")
        if what == "shed" and text != T.PRESS:
            return self._refuse("malformed", topic, payload, f"the shed button sends {T.PRESS}")
        if self.store.meter(dev) is None:
            return self._refuse("unknown-meter", topic, payload, "no such meter is registered")
        pending = [q for q in self.store.queued_commands(dev, states=QUEUE_PENDING) if q.by == HA_ACTOR]
        if len(pending) >= MAX_PENDING:
            return self._refuse("too-many", topic, payload, f"{len(pending)} of Home Assistant's commands wait for "
                                                            "this meter already")
        now = self.clock()
        try:
            if what == "relay":
                op = C.OP_RECONNECT if text == T.SWITCH_ON else C.OP_DISCONNECT
                qid = C.queue(self.store, dev, op, None, now, int(now) + RELAY_VALID_S,
                              note=f"home assistant: relay {text}", by=HA_ACTOR)
            else:
                called = call_meter_event(self.store, dev, int(now) + 1, self.cfg.shed_s, None, True, now,
                                          note="home assistant: shed button", by=HA_ACTOR)
                qid = called.targets[0].queue_id
        except C.CommandError as e:
            return self._refuse("refused", topic, payload, str(e))
        except Exception as e:  # noqa: BLE001 - the database: logged, counted, nothing queued
            log.exception("queueing Home Assistant's command on %s", topic)
            return self._refuse("store-error", topic, payload, repr(e))
        self.counters.count("mqtt_commands_queued")
        log.info("Home Assistant: %s %s for meter %s queued as command #%s", what, text, dev.hex(), qid)
        self.send(now, [dev])
        return qid

    def _refuse(self, reason: str, topic: str, payload: bytes, why: str) -> None:
        self.counters.count("mqtt_commands_refused")
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning("MQTT command refused (%s) on %r, payload %r: %s", reason, topic[:200], payload[:64], why)
        return None
