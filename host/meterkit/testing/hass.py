"""Home Assistant's side of the broker, for tests: a real MQTT client (paho-mqtt) that logs in as Home
Assistant's user, subscribes to discovery and meterkit's topics as Home Assistant's MQTT integration does, keeps
every message in arrival order, and presses buttons and flips switches by publishing to their command topics.

May import: the standard library and paho-mqtt only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class Seen:
    at: float  # the view's clock on arrival (time.monotonic(), or the clock given: a simulated fleet's)
    topic: str
    payload: str
    retained: bool  # delivered from the broker's store (it was retained before this client subscribed)


class HomeAssistantView:
    """Connects to `url` (mqtt://USER:PASS@HOST:PORT) and subscribes to `topics` (default: discovery and
    meterkit's); `messages` is everything received, in order."""

    def __init__(self, url: str, topics: tuple[str, ...] = ("homeassistant/#", "meterkit/#"),
                 client_id: str = "hass-test", clock: Callable[[], float] = time.monotonic):
        u = urlsplit(url)
        self.clock = clock
        self.topics = topics
        self.messages: list[Seen] = []
        self.subscribed = threading.Event()
        self._cond = threading.Condition()
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if u.username:
            self._c.username_pw_set(u.username, u.password)
        self._c.on_connect = self._on_connect
        self._c.on_message = self._on_message
        self._c.on_subscribe = lambda *a: self.subscribed.set()
        self._c.reconnect_delay_set(1, 2)
        self._c.connect_async(u.hostname, u.port or 1883, 30)

    def start(self, timeout: float = 10.0) -> HomeAssistantView:
        self._c.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError("Home Assistant's client did not connect and subscribe")
        return self

    def stop(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()

    def __enter__(self) -> HomeAssistantView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object):
        if not getattr(reason, "is_failure", False):
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Seen(self.clock(), msg.topic, msg.payload.decode("utf-8", "replace"),
                                      bool(msg.retain)))
            self._cond.notify_all()

    # -- reading what arrived
    def on(self, topic: str) -> list[Seen]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def latest(self, topic: str) -> str | None:
        got = self.on(topic)
        return got[-1].payload if got else None

    def latest_json(self, topic: str) -> Any:
        text = self.latest(topic)
        return None if not text else json.loads(text)

    def configs(self) -> dict[str, dict]:
        """The newest discovery config of every entity: topic -> payload (an emptied one left out)."""
        out: dict[str, dict] = {}
        with self._cond:
            for m in self.messages:
                if m.topic.endswith("/config") and m.topic.startswith("homeassistant/"):
                    if m.payload:
                        out[m.topic] = json.loads(m.payload)
                    else:
                        out.pop(m.topic, None)
        return out

    def wait(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Until cond() is true (returned); TimeoutError saying `what`."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                got = cond()
                if got:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Home Assistant's view: {what or cond} not seen in {timeout:.0f} s")
                self._cond.wait(min(left, 0.1))

    # -- what Home Assistant sends
    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self._c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
