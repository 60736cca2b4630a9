"""Home Assistant's rules for what meterkit publishes, written from its documentation (not its code), so that
a discovery payload the tests pass is one Home Assistant takes into its energy dashboard.

Sources (Home Assistant's documentation):
- MQTT discovery (integrations/mqtt, "MQTT Discovery"): the config topic is
  <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, node_id and object_id of [a-zA-Z0-9_-]; the
  `device` block is only used when the entity has a `unique_id`, and needs `identifiers` or `connections`;
  `availability` is a list of {topic, payload_available, payload_not_available}, `availability_mode` one of
  all, any, latest.
- Sensor entities (integrations/sensor): device class `energy` takes the units J, kJ, MJ, GJ, mWh, Wh, kWh,
  MWh, GWh, TWh, cal, kcal, Mcal, Gcal; `power` W, kW (and mW, MW, GW, TW, BTU/h); `voltage` V, mV, µV, kV, MV;
  `current` A, mA; `enum` has `options` and no unit or state class.
- The energy dashboard (docs/energy, "Troubleshooting": energy sensor requirements): a grid consumption or
  return sensor has device class energy, a unit of energy, and state class `total` or `total_increasing`
  (issue 14 leaves out `measurement` with last_reset), and its state never goes down except when the meter
  is reset (a decrease of a total_increasing sensor is taken for a new meter cycle: the complaint of HA core
  #87311).
- MQTT switch: command_topic required; button: command_topic required; binary sensor: state_topic required.
"""

from __future__ import annotations

import re

ENERGY_UNITS = {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal"}
UNITS = {"energy": ENERGY_UNITS, "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
         "voltage": {"µV", "mV", "V", "kV", "MV"}, "current": {"mA", "A"}}
ENERGY_STATE_CLASSES = {"total", "total_increasing"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
COMPONENTS = {"sensor", "binary_sensor", "switch", "button"}
ID = re.compile(r"^[a-zA-Z0-9_-]+$")
WH_PER = {"Wh": 1, "kWh": 1000, "MWh": 10**6, "GWh": 10**9, "TWh": 10**12, "mWh": 0.001}


def check_config(topic: str, c: dict, discovery_prefix: str = "homeassistant") -> list[str]:
    """What is wrong with one discovery config (empty: nothing)."""
    bad: list[str] = []
    parts = topic.split("/")
    if parts[0] != discovery_prefix or parts[-1] != "config" or len(parts) not in (4, 5):
        return [f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config"]
    component, ids = parts[1], parts[2:-1]
    if component not in COMPONENTS:
        bad.append(f"{topic}: component {component!r}")
    bad += [f"{topic}: id {i!r} is not [a-zA-Z0-9_-]+" for i in ids if not ID.match(i)]
    if not isinstance(c.get("unique_id"), str) or not c["unique_id"]:
        bad.append(f"{topic}: no unique_id (the device block is ignored without one)")
    dev = c.get("device")
    if not isinstance(dev, dict) or not (dev.get("identifiers") or dev.get("connections")):
        bad.append(f"{topic}: no device block with identifiers")
    for a in c.get("availability", []):
        if not isinstance(a, dict) or not a.get("topic"):
            bad.append(f"{topic}: availability entry without a topic: {a!r}")
    if "availability" in c and c.get("availability_mode", "latest") not in ("all", "any", "latest"):
        bad.append(f"{topic}: availability_mode {c.get('availability_mode')!r}")
    if component in ("sensor", "binary_sensor") and not c.get("state_topic"):
        bad.append(f"{topic}: no state_topic")
    if component in ("switch", "button") and not c.get("command_topic"):
        bad.append(f"{topic}: no command_topic")
    if component == "sensor":
        bad += _sensor(topic, c)
    return bad


def _sensor(topic: str, c: dict) -> list[str]:
    dc, unit, sc = c.get("device_class"), c.get("unit_of_measurement"), c.get("state_class")
    bad = []
    if dc == "enum":
        if not c.get("options") or unit is not None or sc is not None:
            bad.append(f"{topic}: an enum sensor has options, and no unit or state class")
        return bad
    if dc in UNITS and unit not in UNITS[dc]:
        bad.append(f"{topic}: unit {unit!r} is not one of device class {dc}'s")
    if sc is not None and sc not in STATE_CLASSES:
        bad.append(f"{topic}: state_class {sc!r}")
    if dc == "energy" and sc not in ENERGY_STATE_CLASSES:
        bad.append(f"{topic}: an energy sensor for the dashboard has state_class total or total_increasing, not "
                   f"{sc!r}")
    return bad


def energy_configs(configs: dict[str, dict]) -> dict[str, dict]:
    """The configs the energy dashboard can take (device class energy)."""
    return {t: c for t, c in configs.items() if c.get("device_class") == "energy"}


def check_all(configs: dict[str, dict]) -> list[str]:
    bad = [p for t, c in configs.items() for p in check_config(t, c)]
    ids = [c.get("unique_id") for c in configs.values()]
    bad += [f"unique_id {u!r} used twice" for u in {u for u in ids if ids.count(u) > 1}]
    return bad


def decreases(values: list[float]) -> list[tuple[float, float]]:
    """(before, after) of every step down in a total_increasing sensor's published states."""
    return [(a, b) for a, b in zip(values, values[1:], strict=False) if b < a]
