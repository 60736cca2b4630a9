"""Topics and payloads, the one place they are made (pure: no I/O). Home Assistant's MQTT discovery
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): one retained config per entity under
<discovery prefix>/<component>/<node>/<object>/config, with a unique_id and a device block; the states it
points at are retained JSON under <prefix>/<meter id>/.

    <prefix>/<node id>/status          online / offline: this concentrator (its MQTT will says offline)
    <prefix>/<meter>/availability      online / offline: the meter reports (headend outages, offline_periods)
    <prefix>/<meter>/state             the newest verified reading: totals (kWh), power, voltage, current, demand
    <prefix>/<meter>/relay             the relay as the meter confirmed it: {"state", "switch": ON|OFF, ...}
    <prefix>/<meter>/status            clock, sensor and outage flags from its newest frame
    <prefix>/<meter>/alert             the security monitor's open alerts of the meter: {"problem": ON|OFF, ...}
    <prefix>/alerts                    the latest alert raised (any meter or source address), as JSON
    <prefix>/<meter>/relay/set         ON / OFF from Home Assistant (only with commands on, allowed meters)
    <prefix>/<meter>/shed/press        PRESS from Home Assistant (likewise)

Energy registers are sent in kWh with three decimals (the meter's Wh, exactly), device_class energy and
state_class total_increasing: what Home Assistant's energy dashboard takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meter import messages as M
from meterkit import __version__
from meterkit.headend.control import STATE_NAMES
from meterkit.integrations.mqtt.config import MqttConfig

ONLINE, OFFLINE = "online", "offline"
SWITCH_ON, SWITCH_OFF = "ON", "OFF"
PRESS = "PRESS"
TARIFFS_MAX = 63  # 1.8.1 .. 1.8.63: the tariff registers published
RELAY_OPTIONS = [STATE_NAMES[k] for k in sorted(STATE_NAMES)]
# status bits that say the measurement may be wrong (meter.messages ST_*)
SENSOR_FLAGS = {M.ST_SENSOR_FAULT: "sensor fault", M.ST_CHIP_RESET: "chip reset", M.ST_I2C_ERRORS: "I2C errors",
                M.ST_OVERFLOW: "overflow"}


@dataclass(frozen=True)
class MeterInfo:
    """What the device block says about a meter (its registry entry and latest hello)."""

    device: bytes
    name: str | None = None
    firmware: str | None = None
    board: str | None = None


# -- topics
def meter_base(cfg: MqttConfig, dev: bytes) -> str:
    return f"{cfg.prefix}/{dev.hex()}"


def state_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/state"


def relay_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/relay"


def status_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/status"


def availability_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/availability"


def alert_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/alert"


def alerts_topic(cfg: MqttConfig) -> str:
    return f"{cfg.prefix}/alerts"


def relay_command_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/relay/set"


def shed_command_topic(cfg: MqttConfig, dev: bytes) -> str:
    return meter_base(cfg, dev) + "/shed/press"


def command_subscriptions(cfg: MqttConfig) -> list[str]:
    """What the bridge subscribes to for commands (every meter: a refused one is logged and counted)."""
    return [f"{cfg.prefix}/+/relay/set", f"{cfg.prefix}/+/shed/press"]


def ha_status_topic(cfg: MqttConfig) -> str:
    """Home Assistant's birth and will ("online" after it starts: discovery and states are sent again)."""
    return f"{cfg.discovery_prefix}/status"


def node(dev: bytes) -> str:
    return f"meterkit_{dev.hex()}"


def discovery_topic(cfg: MqttConfig, component: str, dev: bytes, object_id: str) -> str:
    return f"{cfg.discovery_prefix}/{component}/{node(dev)}/{object_id}/config"


def parse_command_topic(cfg: MqttConfig, topic: str) -> tuple[bytes, str] | None:
    """'<prefix>/<16 hex>/relay/set' -> (device, 'relay'); '.../shed/press' -> (device, 'shed'); else None."""
    head = cfg.prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 3 or (parts[1], parts[2]) not in (("relay", "set"), ("shed", "press")):
        return None
    try:
        dev = bytes.fromhex(parts[0])
    except ValueError:
        return None
    return (dev, parts[1]) if len(dev) == 8 and parts[0] == dev.hex() else None


# -- registers
def register_field(key: int) -> str | None:
    """The state field of an energy register: 1.8.0 'import', 2.8.0 'export', 1.8.t 'import_t<t>', ...; None
    for registers that are not published (maximum demand and the like)."""
    for base, name in ((M.OBIS_IMPORT, "import"), (M.OBIS_EXPORT, "export")):
        if key == base:
            return name
        if base < key <= base + TARIFFS_MAX:
            return f"{name}_t{key - base}"
    return None


def kwh(wh: int) -> float:
    """Wh -> kWh (three decimals: exact for any register below 2^53 Wh)."""
    return wh / 1000


# -- state payloads
def dumps(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def state_payload(totals: dict[str, int], seq: int, meter_time: int | None, instant: dict | None) -> str:
    """A reading as the state topic carries it: totals {field: Wh} as <field>_kwh, and (unless totals only)
    the instantaneous values (power_w, voltage_v, current_a, demand_w, demand_last_w, tariff)."""
    out: dict[str, Any] = {f"{k}_kwh": kwh(v) for k, v in totals.items()}
    out["seq"] = seq
    out["time"] = meter_time
    if instant:
        out.update(instant)
    return dumps(out)


def instant_values(power_mw: int, voltage_mv: int, current_ma: int, demand: tuple[int, int] | None,
                   tariff: int | None) -> dict:
    out = {"power_w": power_mw / 1000, "voltage_v": voltage_mv / 1000, "current_a": current_ma / 1000}
    if demand is not None:
        out["demand_w"], out["demand_last_w"] = demand
    if tariff is not None:
        out["tariff"] = tariff
    return out


def relay_payload(state: int, seq: int, control: tuple[int, int, int] | None) -> str:
    out = {"state": STATE_NAMES.get(state, f"state {state}"),
           "switch": SWITCH_ON if state == M.CONTROL_CONNECTED else SWITCH_OFF, "seq": seq}
    if control is not None:
        out["control_mode"], out["limit_w"] = control[1], control[2]
    return dumps(out)


def status_payload(status: int | None, outage: bool, totals_only: bool = False) -> str:
    """The status topic: the flags of the meter's newest frame, and whether it is out (totals only: that alone)."""
    if totals_only:
        return dumps({"outage": SWITCH_ON if outage else SWITCH_OFF})
    st = status or 0
    flags = [name for bit, name in SENSOR_FLAGS.items() if st & bit]
    return dumps({"clock": SWITCH_ON if st & M.ST_CLOCK_NOT_SET else SWITCH_OFF,
                  "sensor": SWITCH_ON if flags else SWITCH_OFF, "sensor_flags": flags,
                  "load_shed": SWITCH_ON if st & M.ST_LOAD_SHED else SWITCH_OFF,
                  "dr_active": bool(st & M.ST_DR_ACTIVE), "outage": SWITCH_ON if outage else SWITCH_OFF})


def alert_payload(open_alerts: list[Any]) -> str:
    """A meter's problem flag: ON while it has an open security alert (meterkit alerts), with how many, the
    highest severity and the latest one's rule and detail."""
    if not open_alerts:
        return dumps({"problem": SWITCH_OFF, "open": 0})
    order = ("info", "warning", "critical")
    latest = max(open_alerts, key=lambda a: (a.last_at, a.id or 0))
    return dumps({"problem": SWITCH_ON, "open": len(open_alerts),
                  "severity": max((a.severity for a in open_alerts), key=order.index), "rule": latest.rule,
                  "detail": latest.detail, "since": min(a.first_at for a in open_alerts)})


def alert_event_payload(a: Any) -> str:
    """One alert as raised (table alerts' row after the commit that stored it)."""
    return dumps({"id": a.id, "rule": a.rule, "severity": a.severity, "device": a.device_id.hex() or None,
                  "source": a.source or None, "count": a.count, "first_at": a.first_at, "last_at": a.last_at,
                  "detail": a.detail})


# -- discovery
def device_block(info: MeterInfo) -> dict:
    """identifiers: the meter id; model, sw_version (firmware) and hw_version (board) from its latest hello."""
    out = {"identifiers": [node(info.device)], "manufacturer": "meterkit", "model": "meterkit meter",
           "name": info.name or f"meter {info.device.hex()}", "serial_number": info.device.hex()}
    if info.firmware:
        out["sw_version"] = info.firmware
    if info.board:
        out["hw_version"] = info.board
    return out


def _availability(cfg: MqttConfig, dev: bytes | None) -> dict:
    topics = [{"topic": cfg.will_topic, "payload_available": ONLINE, "payload_not_available": OFFLINE}]
    if dev is not None:
        topics.append({"topic": availability_topic(cfg, dev), "payload_available": ONLINE,
                       "payload_not_available": OFFLINE})
    return {"availability": topics, "availability_mode": "all"}


def _entity(cfg: MqttConfig, info: MeterInfo, object_id: str, name: str, meter_available: bool = True,
            **fields: Any) -> dict:
    return {"name": name, "unique_id": f"{node(info.device)}_{object_id}", "device": device_block(info),
            "origin": {"name": "meterkit", "sw_version": __version__},
            **_availability(cfg, info.device if meter_available else None), **fields}


def _energy(cfg: MqttConfig, info: MeterInfo, field: str) -> tuple[str, str, dict]:
    direction, _, tariff = field.partition("_t")
    label = ("Import" if direction == "import" else "Export") + (f" tariff {tariff}" if tariff else "")
    obis = f"{1 if direction == 'import' else 2}.8.{tariff or 0}"
    return ("sensor", field, _entity(
        cfg, info, field, f"{label} ({obis})", state_topic=state_topic(cfg, info.device),
        value_template=f"{{{{ value_json.{field}_kwh }}}}", device_class="energy", state_class="total_increasing",
        unit_of_measurement="kWh", suggested_display_precision=3))


def _measurement(cfg: MqttConfig, info: MeterInfo, key: str, name: str, device_class: str, unit: str,
                 precision: int) -> tuple[str, str, dict]:
    return ("sensor", key, _entity(
        cfg, info, key, name, state_topic=state_topic(cfg, info.device),
        value_template=f"{{{{ value_json.{key} | default(none) }}}}", device_class=device_class,
        state_class="measurement", unit_of_measurement=unit, suggested_display_precision=precision))


def _flag(cfg: MqttConfig, info: MeterInfo, key: str, name: str, device_class: str | None,
          diagnostic: bool, meter_available: bool = True) -> tuple[str, str, dict]:
    extra: dict[str, Any] = {"device_class": device_class} if device_class else {}
    if diagnostic:
        extra["entity_category"] = "diagnostic"
    return ("binary_sensor", key, _entity(
        cfg, info, key, name, meter_available, state_topic=status_topic(cfg, info.device),
        value_template=f"{{{{ value_json.{key} }}}}", payload_on=SWITCH_ON, payload_off=SWITCH_OFF, **extra))


def discovery(cfg: MqttConfig, info: MeterInfo, fields: list[str], commands: bool) -> list[tuple[str, str]]:
    """(topic, retained JSON) of every entity of one meter: an energy sensor per register field in `fields`
    (import, export, import_t1, ...), and unless totals only: power, voltage, current, demand, the relay, the
    clock, sensor, load-shed and outage flags; with `commands` (the meter is allowed) a relay switch and a shed
    button. The outage flag is available while the concentrator is (it is ON exactly when the meter is not)."""
    dev = info.device
    out = [_energy(cfg, info, f) for f in fields]
    if not cfg.totals_only:
        out += [
            _measurement(cfg, info, "power_w", "Power (1.7.0)", "power", "W", 1),
            _measurement(cfg, info, "voltage_v", "Voltage (32.7.0)", "voltage", "V", 2),
            _measurement(cfg, info, "current_a", "Current (31.7.0)", "current", "A", 3),
            _measurement(cfg, info, "demand_w", "Demand (1.4.0)", "power", "W", 0),
            _measurement(cfg, info, "demand_last_w", "Demand, last period (1.5.0)", "power", "W", 0),
            ("sensor", "relay", _entity(cfg, info, "relay", "Relay", state_topic=relay_topic(cfg, dev),
                                        value_template="{{ value_json.state }}", device_class="enum",
                                        options=RELAY_OPTIONS)),
            _flag(cfg, info, "clock", "Clock not set", "problem", True),
            _flag(cfg, info, "sensor", "Sensor", "problem", True),
            _flag(cfg, info, "load_shed", "Load shed", None, False),
        ]
    out.append(_flag(cfg, info, "outage", "Outage", "problem", False, meter_available=False))
    if not cfg.totals_only:  # (an alert can say what a household does: a consumption drop is an absence)
        out.append(("binary_sensor", "security_alert", _entity(  # the head-end's view: there while the meter is not
            cfg, info, "security_alert", "Security alert", False, state_topic=alert_topic(cfg, dev),
            value_template="{{ value_json.problem }}", payload_on=SWITCH_ON, payload_off=SWITCH_OFF,
            device_class="problem", json_attributes_topic=alert_topic(cfg, dev))))
    if commands:
        out.append(("switch", "relay_switch", _entity(
            cfg, info, "relay_switch", "Supply", state_topic=relay_topic(cfg, dev),
            value_template="{{ value_json.switch }}", command_topic=relay_command_topic(cfg, dev),
            payload_on=SWITCH_ON, payload_off=SWITCH_OFF, state_on=SWITCH_ON, state_off=SWITCH_OFF,
            optimistic=False, device_class="switch", qos=cfg.qos)))
        out.append(("button", "shed", _entity(
            cfg, info, "shed", "Shed load", command_topic=shed_command_topic(cfg, dev), payload_press=PRESS,
            qos=cfg.qos)))
    return [(discovery_topic(cfg, component, dev, obj), dumps(payload)) for component, obj, payload in out]
