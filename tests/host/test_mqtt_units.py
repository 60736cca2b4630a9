"""The MQTT bridge's pure parts: settings checked at the edge, topics, discovery payloads against Home
Assistant's documented rules (hass_rules), and the tracker's order and never-decrease rules."""

from __future__ import annotations

import json

import pytest
from hass_rules import check_all, check_config, energy_configs

from meter import messages as M
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.config import MqttConfig, MqttConfigError, parse_url
from meterkit.integrations.mqtt.tracker import Tracker
from meterkit.wire.records import Frame, Reading

DEV = bytes.fromhex("0011223344556677")
OTHER = bytes.fromhex("8899aabbccddeeff")


def test_url_and_settings_are_checked_at_the_edge():
    assert parse_url("mqtt://ha:s%40cret@broker.local:1884") == {"host": "broker.local", "port": 1884,
                                                                 "username": "ha", "password": "s@cret"}
    assert parse_url("mqtt://127.0.0.1")["port"] == 1883
    for bad, says in (("mqtts://h", "TLS"), ("http://h", "mqtt://"), ("mqtt://", "no host"),
                      ("mqtt://u@h", "without a password"), ("mqtt://h/x", "nothing after"),
                      ("mqtt://h:99999", "not an MQTT URL")):
        with pytest.raises(MqttConfigError, match=says):
            parse_url(bad)
    with pytest.raises(MqttConfigError) as e:
        parse_url("ftp://user:topsecret@h")
    assert "topsecret" not in str(e.value)  # a password never goes into a message
    for kw, says in (({"prefix": "a/#"}, "prefix"), ({"prefix": "homeassistant/x"}, "under"),
                     ({"commands": True}, "allow"), ({"allow": frozenset({DEV})}, "without commands"),
                     ({"commands": True, "allow": frozenset({DEV})}, "users and an ACL"),
                     ({"offline_periods": 0}, "offline_periods"), ({"shed_s": 10}, "shed"),
                     ({"meters": frozenset({DEV}), "commands": True, "allow": frozenset({OTHER}),
                       "username": "u", "password": "p"}, "published too"),
                     ({"username": "u"}, "together"), ({"allow": frozenset({b"x"}), "commands": True}, "8 bytes")):
        with pytest.raises(MqttConfigError, match=says):
            MqttConfig(**kw)


def test_command_topics_parse_only_their_own_shape():
    cfg = MqttConfig()
    assert T.parse_command_topic(cfg, T.relay_command_topic(cfg, DEV)) == (DEV, "relay")
    assert T.parse_command_topic(cfg, T.shed_command_topic(cfg, DEV)) == (DEV, "shed")
    for bad in ("meterkit/0011/relay/set", "meterkit/0011223344556677/relay", "other/0011223344556677/relay/set",
                "meterkit/0011223344556677/relay/set/x", "meterkit/0011223344556677/state",
                "meterkit/0011223344556677".upper() + "/relay/set", "meterkit/zz11223344556677/relay/set"):
        assert T.parse_command_topic(cfg, bad) is None, bad


def _configs(cfg: MqttConfig, fields: list[str], commands: bool = False) -> dict[str, dict]:
    info = T.MeterInfo(DEV, "house", "meterkit-0.1", "esp32-c3")
    return {t: json.loads(p) for t, p in T.discovery(cfg, info, fields, commands)}


def test_discovery_passes_home_assistants_rules_and_the_rules_can_fail():
    cfg = MqttConfig(username="u", password="p", commands=True, allow=frozenset({DEV}))
    configs = _configs(cfg, ["import", "import_t1", "import_t2", "export", "export_t1"], commands=True)
    assert check_all(configs) == []
    energy = energy_configs(configs)
    assert len(energy) == 5 and all(c["state_class"] == "total_increasing" and c["unit_of_measurement"] == "kWh"
                                     for c in energy.values())
    imp = configs[f"homeassistant/sensor/meterkit_{DEV.hex()}/import/config"]
    assert imp["device"]["identifiers"] == [f"meterkit_{DEV.hex()}"]
    assert (imp["device"]["sw_version"], imp["device"]["hw_version"]) == ("meterkit-0.1", "esp32-c3")
    assert [a["topic"] for a in imp["availability"]] == ["meterkit/meterkit/status",
                                                         f"meterkit/{DEV.hex()}/availability"]
    assert imp["availability_mode"] == "all"
    outage = next(c for t, c in configs.items() if t.endswith("/outage/config"))
    # the outage flag is ON exactly when the meter is unavailable: it depends on the concentrator alone
    assert [a["topic"] for a in outage["availability"]] == ["meterkit/meterkit/status"]
    assert {t.split("/")[1] for t in configs} == {"sensor", "binary_sensor", "switch", "button"}
    # the validator refuses what Home Assistant's energy dashboard would
    t, c = next(iter(energy.items()))
    for change, says in (({"state_class": "measurement"}, "total or total_increasing"), ({"unit_of_measurement": "W"},
                         "unit"), ({"unique_id": None}, "unique_id"), ({"device": {"name": "x"}}, "device block")):
        assert any(says in p for p in check_config(t, {**c, **change})), change
    assert check_config(t.replace("/import/", "/im port/"), c)


def test_totals_only_publishes_no_instantaneous_value_and_no_relay():
    cfg = MqttConfig(totals_only=True)
    configs = _configs(cfg, ["import", "export"])
    assert check_all(configs) == []
    assert sorted(t.split("/")[3] for t in configs) == ["export", "import", "outage"]
    tr = Tracker(cfg)
    tr.meter(T.MeterInfo(DEV))
    out = dict(tr.committed([_frame(1, M.READING)], [_reading(1, 1000)], []))
    assert json.loads(out[T.state_topic(cfg, DEV)]).keys() == {"import_kwh", "export_kwh", "seq", "time"}
    assert T.relay_topic(cfg, DEV) not in out


def _reading(seq: int, imp: int, exp: int = 0, t: int | None = None, status: int = 0, tariffs: dict | None = None,
             control: tuple | None = None, dev: bytes = DEV) -> Reading:
    regs = {M.OBIS_IMPORT: imp, M.OBIS_EXPORT: exp, **(tariffs or {})}
    return Reading(dev, seq, 1_700_000_000 + 60 * seq if t is None else t, status, regs, 1500, 230000, 6500, 0,
                   None, (120, 118), None, control)


def _frame(seq: int, kind: int, status: int = 0, dev: bytes = DEV) -> Frame:
    return Frame(dev, seq, kind, 1_700_000_000 + 60 * seq, status, b"")


def _states(out, cfg, dev=DEV) -> list[dict]:
    return [json.loads(p) for t, p in out if t == T.state_topic(cfg, dev)]


def test_tracker_publishes_newest_first_in_order_and_never_a_decrease():
    cfg = MqttConfig()
    tr = Tracker(cfg)
    tr.meter(T.MeterInfo(DEV))
    # a batch after an outage: frames 5..7 out of order; configs go out before the first state
    out = tr.committed([_frame(s, M.READING) for s in (7, 5, 6)], [_reading(7, 1070), _reading(5, 1050),
                                                                  _reading(6, 1060)], [])
    assert [s["seq"] for s in _states(out, cfg)] == [5, 6, 7]
    first_state = next(i for i, (t, _) in enumerate(out) if t == T.state_topic(cfg, DEV))
    assert all(t.startswith("homeassistant/") for t, _ in out[:first_state])
    # a back-filled older frame never becomes the state, nor changes the relay
    out = tr.committed([_frame(3, M.READING, M.ST_RELAY_OPEN)], [_reading(3, 1030, control=(0, 1, 0))], [])
    assert _states(out, cfg) == [] and out == [] and tr.stale_skipped == 1
    # a smaller register (never made by a meter) is held at what was published, counted
    out = tr.committed([_frame(8, M.READING)], [_reading(8, 900, 5)], [])
    [s] = _states(out, cfg)
    assert (s["import_kwh"], s["export_kwh"]) == (1.07, 0.005) and tr.decreases_held == 1
    # a new tariff register: its discovery config first, then the state with it
    out = tr.committed([_frame(9, M.READING)], [_reading(9, 1100, 5, tariffs={M.OBIS_IMPORT + 2: 40})], [])
    topics = [t for t, _ in out]
    assert topics.index(f"homeassistant/sensor/meterkit_{DEV.hex()}/import_t2/config") < \
        topics.index(T.state_topic(cfg, DEV))
    assert _states(out, cfg)[0]["import_t2_kwh"] == 0.04


def test_relay_follows_the_newest_frame_as_the_meter_confirmed_it():
    cfg = MqttConfig()
    tr = Tracker(cfg)
    tr.meter(T.MeterInfo(DEV))
    relay = T.relay_topic(cfg, DEV)
    out = dict(tr.committed([_frame(1, M.READING)], [_reading(1, 10)], []))
    assert json.loads(out[relay])["switch"] == "ON"
    out = dict(tr.committed([_frame(2, M.RESPONSE, M.ST_RELAY_OPEN)], [], []))  # the answer to a disconnect
    assert json.loads(out[relay]) == {"state": "disconnected", "switch": "OFF", "seq": 2, "control_mode": 0,
                                      "limit_w": 0}  # mode and limit: from the newest reading
    out = dict(tr.committed([_frame(3, M.READING, M.ST_RELAY_OPEN | M.ST_RECONNECT_READY)],
                            [_reading(3, 10, control=(2, 1, 0))], []))
    assert json.loads(out[relay])["state"] == "ready for reconnection" and json.loads(out[relay])["switch"] == "OFF"


def test_every_s_holds_states_back_but_never_publishes_an_older_one():
    cfg = MqttConfig(every_s=900)
    tr = Tracker(cfg)
    tr.meter(T.MeterInfo(DEV))
    published = []
    for seq in range(1, 40):  # a reading a minute
        published += [s["seq"] for s in _states(tr.committed([_frame(seq, M.READING)], [_reading(seq, seq)], []),
                                                  cfg)]
    assert published == [1, 16, 31]
