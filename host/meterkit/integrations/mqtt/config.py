"""How the MQTT bridge behaves: every setting in one typed value, checked where it is made (as
meterkit.headend.config.ConcentratorConfig)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

TOPIC_WORD = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")  # a prefix: no wildcards, no empty levels
DEFAULT_PORT = 1883
SHED_MIN_S, SHED_MAX_S = 60, 86400  # a demand-response event's bounds (meterkit.headend.commands)


class MqttConfigError(ValueError):
    """A setting of the MQTT bridge that cannot work (said before anything connects)."""


@dataclass(frozen=True)
class MqttConfig:
    """The bridge's settings. `meters`: the meters published (device ids; None: every registered meter);
    `allow`: the meters Home Assistant may command (only with `commands`)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    prefix: str = "meterkit"  # state and command topics: <prefix>/<meter id>/...
    discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix (its MQTT integration's setting)
    node_id: str = "meterkit"  # this concentrator: its will topic <prefix>/<node_id>/status
    client_id: str | None = None  # None: meterkit-<node_id>
    meters: frozenset[bytes] | None = None  # opted-in meters; None: all
    totals_only: bool = False  # privacy: import/export registers and availability, nothing instantaneous
    every_s: int = 0  # privacy: a meter's state at most once per this many seconds of its own time (0: each)
    # a meter silent this many reporting periods is unavailable in Home Assistant: 1.5 leaves half a period for a
    # late reading and the check's own interval, and still marks an outage within 2 periods of the last frame
    offline_periods: float = 1.5
    commands: bool = False  # Home Assistant may switch relays and press shed (the allowed meters only)
    allow: frozenset[bytes] = field(default_factory=frozenset)
    shed_s: int = 3600  # how long Home Assistant's shed button sheds
    keepalive_s: int = 30
    qos: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise MqttConfigError("the MQTT broker's host is missing")
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise MqttConfigError(f"the MQTT broker's port must be 1..65535, not {self.port!r}")
        if (self.username is None) != (self.password is None):
            raise MqttConfigError("give the MQTT username and password together (mqtt://USER:PASS@HOST:PORT)")
        for name in ("prefix", "discovery_prefix"):
            v = getattr(self, name)
            if not isinstance(v, str) or not TOPIC_WORD.match(v):
                raise MqttConfigError(f"MQTT {name} must be topic levels of letters, digits, _ and - "
                                      f"(no + # or empty level), not {v!r}")
        if not isinstance(self.node_id, str) or not re.match(r"^[A-Za-z0-9_-]+$", self.node_id):
            raise MqttConfigError(f"MQTT node id must be letters, digits, _ and -, not {self.node_id!r}")
        if self.prefix.split("/")[0] == self.discovery_prefix.split("/")[0]:
            raise MqttConfigError("the MQTT prefix must not lie under Home Assistant's discovery prefix")
        if type(self.every_s) is not int or self.every_s < 0:
            raise MqttConfigError(f"MQTT every_s must be whole seconds, 0 or more, not {self.every_s!r}")
        if isinstance(self.offline_periods, bool) or not isinstance(self.offline_periods, (int, float)) \
                or not 0 < self.offline_periods <= 100:
            raise MqttConfigError(f"MQTT offline_periods must be above 0 (and at most 100), not "
                                  f"{self.offline_periods!r}")
        if type(self.shed_s) is not int or not SHED_MIN_S <= self.shed_s <= SHED_MAX_S:
            raise MqttConfigError(f"the shed button's duration must be {SHED_MIN_S}..{SHED_MAX_S} s, not "
                                  f"{self.shed_s!r}")
        if type(self.keepalive_s) is not int or not 5 <= self.keepalive_s <= 3600:
            raise MqttConfigError(f"MQTT keepalive must be 5..3600 s, not {self.keepalive_s!r}")
        if self.qos not in (0, 1, 2):
            raise MqttConfigError(f"MQTT qos must be 0, 1 or 2, not {self.qos!r}")
        for name in ("allow",) + (("meters",) if self.meters is not None else ()):
            ids = getattr(self, name)
            if not all(isinstance(d, bytes) and len(d) == 8 for d in ids):
                raise MqttConfigError(f"MQTT {name}: device ids are 8 bytes")
            object.__setattr__(self, name, frozenset(ids))
        if self.allow and not self.commands:
            raise MqttConfigError("an allow-list of meters for commands without commands on (--mqtt-commands)")
        if self.commands and not self.allow:
            raise MqttConfigError("commands from Home Assistant need the meters they may reach (--mqtt-allow M)")
        if self.commands and self.username is None:
            raise MqttConfigError("commands from Home Assistant need a broker with users and an ACL: give "
                                  "mqtt://USER:PASS@HOST:PORT")
        if self.meters is not None and not self.allow <= self.meters:
            raise MqttConfigError("a meter Home Assistant may command must be published too (--mqtt-meter)")

    @property
    def will_topic(self) -> str:
        return f"{self.prefix}/{self.node_id}/status"

    def published(self, device: bytes) -> bool:
        return self.meters is None or device in self.meters


def parse_url(url: str, password: str | None = None) -> dict:
    """mqtt://[USER[:PASS]@]HOST[:PORT] -> MqttConfig's host, port, username, password (`password` when the
    URL names a user without one: kept out of the command line). MqttConfigError for anything else (mqtts: TLS
    is not built in; put a TLS-terminating broker or bridge in between)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise MqttConfigError(f"not an MQTT URL ({e}): {_masked(url)}") from None
    if u.scheme != "mqtt":
        raise MqttConfigError(f"the MQTT URL must start mqtt:// (TLS is not built in), not {_masked(url)}")
    if not u.hostname:
        raise MqttConfigError(f"the MQTT URL names no host: {_masked(url)}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise MqttConfigError(f"the MQTT URL is mqtt://[USER:PASS@]HOST[:PORT], nothing after: {_masked(url)}")
    user = unquote(u.username) if u.username is not None else None
    if u.password is not None:
        password = unquote(u.password)
    if user is not None and password is None:
        raise MqttConfigError("the MQTT URL has a user without a password (mqtt://USER:PASS@HOST, or the "
                              "password in $METERKIT_MQTT_PASSWORD)")
    if user is None:
        password = None
    return {"host": u.hostname, "port": port or DEFAULT_PORT, "username": user, "password": password}


def _masked(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, cred = head.partition("://")
    return f"{scheme}{sep}{cred.split(':')[0]}:***@{tail}" if sep else f"***@{tail}"
