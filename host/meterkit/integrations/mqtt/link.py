"""The MQTT connection: paho-mqtt's network thread, and one publishing thread that owns what is retained.

The concentrator's event loop only puts messages into a queue (never blocks, never waits for the broker). The
publishing thread keeps the newest payload of every topic and publishes it while connected; on every
(re)connect, and when Home Assistant says it is back (its birth message), it publishes all of them again, in
one pass and in order, so the broker holds the latest state after any outage of its own. Only that thread
publishes: what it sends goes out in the order the concentrator produced it. The will (retained "offline" on
<prefix>/<node>/status) marks every entity unavailable when the concentrator dies or loses the broker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.config import MqttConfig

log = logging.getLogger(__name__)

_RESYNC = object()
_STOP = object()
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30


class Link:
    """connect() returns at once; the broker may be down (it is retried with back-off, 1 .. 30 s)."""

    def __init__(self, cfg: MqttConfig, on_message: Callable[[str, bytes, bool], None] | None = None,
                 subscriptions: list[str] | None = None):
        self.cfg = cfg
        self.on_message = on_message
        self.subscriptions = list(subscriptions or [])
        self.connected = False
        self.connects = 0  # successful connections
        self.published = 0  # messages handed to the broker connection
        self.refused_connect = ""  # the broker's last refusal (bad credentials ...)
        self._closing = False
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._latest: dict[str, str] = {}  # topic -> newest payload (publishing thread only)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or
                                   f"meterkit-{cfg.node_id}", protocol=mqtt.MQTTv311)
        if cfg.username is not None:
            self._client.username_pw_set(cfg.username, cfg.password)
        self._client.will_set(cfg.will_topic, T.OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._publisher, name="mqtt-publish", daemon=True)

    # -- life cycle
    def connect(self) -> None:
        self._thread.start()
        self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        self._client.loop_start()

    def close(self, timeout: float = 5.0) -> None:
        """Say offline (a clean disconnect does not send the will), publish what is queued, disconnect."""
        self.put([(self.cfg.will_topic, T.OFFLINE)])
        self._closing = True
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def kill(self) -> None:
        """Die as a crashed process would: the connection drops without DISCONNECT, so the broker sends the
        will. Nothing queued is published."""
        self._closing = True
        self._q.put(_STOP)
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self.connected = False

    # -- from the concentrator's thread
    def put(self, messages: list[tuple[str, str]]) -> None:
        for m in messages:
            self._q.put(m)

    def resync(self) -> None:
        self._q.put(_RESYNC)

    # -- publishing thread
    def _publisher(self) -> None:
        latest, q = self._latest, self._q
        while True:
            item = q.get()
            if item is _STOP:
                return
            if item is _RESYNC:
                if self.connected:
                    self._publish(self.cfg.will_topic, T.ONLINE)
                    for topic, payload in latest.items():
                        self._publish(topic, payload)
                continue
            topic, payload = item
            latest[topic] = payload
            if self.connected:
                self._publish(topic, payload)

    def _publish(self, topic: str, payload: str) -> None:
        self._client.publish(topic, payload, qos=self.cfg.qos, retain=True)
        self.published += 1

    # -- paho's network thread
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            if str(reason) != self.refused_connect:
                log.error("MQTT broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            self.refused_connect = str(reason)
            return
        self.refused_connect = ""
        self.connects += 1
        self.connected = True
        log.info("MQTT connected to %s:%d", self.cfg.host, self.cfg.port)
        topics = [(t, self.cfg.qos) for t in [T.ha_status_topic(self.cfg), *self.subscriptions]]
        client.subscribe(topics)
        self._q.put(_RESYNC)  # everything retained, again: the broker may have lost it

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        if self.connected and not self._closing:
            log.warning("MQTT connection to %s:%d lost (%s); retrying", self.cfg.host, self.cfg.port, reason)
        self.connected = False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == T.ha_status_topic(self.cfg):
            if msg.payload == T.ONLINE.encode():
                self._q.put(_RESYNC)  # Home Assistant restarted: discovery and states again
            return
        if self.on_message is not None:
            self.on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
