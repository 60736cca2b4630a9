"""Issue 14's acceptance, end to end: the real firmware (MicroPython Unix port, a simulated meter over TCP on the
fleet clock), the real concentrator with its MQTT bridge, a real Mosquitto, and Home Assistant's side as an MQTT
client. Through a power cut, a link outage with back-fill and a concentrator restart (SIGKILL-like: its MQTT will
fires), Home Assistant's energy totals never decrease and every state it saw is a stored reading; availability
goes offline within 2 reading periods of the meter's last frame and comes back; the relay switch in Home
Assistant becomes a signed, queued command and the state it shows follows the meter's answer."""

from __future__ import annotations

import asyncio
import json

from cryptography.hazmat.primitives.asymmetric import ec
from hass_rules import check_all, decreases, energy_configs

from meter import messages as M
from meterkit.headend import commands as C
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.bridge import MqttBridge
from meterkit.integrations.mqtt.commands import HA_ACTOR
from meterkit.integrations.mqtt.config import MqttConfig, parse_url
from meterkit.sim.fleet import Fleet, MeterSpec, run_fleet
from meterkit.store import open_store
from meterkit.testing.hass import HomeAssistantView

HOURS, SPEED, PERIOD = 1.5, 240.0, 60
OFF_H, ON_H = 0.15, 0.3
CUT_H, POWER_ON_H, LINK_CUT_H, LINK_BACK_H, RESTART_H = 0.45, 0.6, 0.8, 1.0, 1.2


def test_home_assistant_through_power_cut_outage_restart_and_relay(tmp_path, mosquitto):
    fleet = Fleet(tmp_path, [MeterSpec("house", "constant", "tcp", seed=1)], ec.generate_private_key(ec.SECP256R1()),
                  tmp_path / "db.sqlite", hours=HOURS, speed=SPEED)
    bridges: list[MqttBridge] = []

    def attach(conc):
        dev = fleet.meters[0].device
        cfg = MqttConfig(**parse_url(mosquitto.url("meterkit")), commands=True, allow=frozenset({dev}))
        bridges.append(MqttBridge(cfg, conc, watch_s=0.05).start())  # 12 virtual s at 240x

    fleet.attach = attach
    for at, action in ((CUT_H, "power_cut"), (POWER_ON_H, "power_on"), (LINK_CUT_H, "cut_link"),
                       (LINK_BACK_H, "restore_link")):
        fleet.at(at, action, "house")
    fleet.at(RESTART_H, "restart_concentrator", "-")
    ha = HomeAssistantView(mosquitto.url("homeassistant"), clock=lambda: fleet.clock()).start()

    def before(fleet):  # control mode 2: remote disconnect (b) and remote reconnect straight to connected (a)
        C.queue(fleet.store, fleet.meters[0].device, M.OP_CONFIG, {M.A_CONTROL_MODE: 2}, fleet.start_unix, by="e2e")

    async def home_assistant(fleet):
        dev = fleet.meters[0].device
        cfg = bridges[0].cfg
        relay = T.relay_topic(cfg, dev)
        for at_h, payload in ((OFF_H, "OFF"), (ON_H, "ON")):
            while fleet.clock.hours() < at_h:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(ha.publish, T.relay_command_topic(cfg, dev), payload)
            while (json.loads(ha.latest(relay) or "{}")).get("switch") != payload and fleet.clock.hours() < HOURS:
                await asyncio.sleep(0.02)

    try:
        run_fleet(fleet, before=before, alongside=home_assistant, timeout_s=180)
    finally:
        ha.stop()
    [m] = fleet.meters
    cfg, dev = bridges[0].cfg, m.device
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    assert len(bridges) == 2  # the restart attached a new bridge

    configs = ha.configs()
    assert check_all(configs) == [] and len(energy_configs(configs)) >= 2

    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        names, rows = db.export("readings", dev)
        stored = {r[names.index("seq")]: r[names.index("import_wh")] for r in rows}
        received = sorted(f.received_at for f in db.frames_after(dev, -1, limit=None))
        answers = [(q.op, q.state, q.result) for q in db.queued_commands(dev) if q.by == HA_ACTOR]

    # totals: never down, every one a stored reading, the last one the newest stored
    states = [json.loads(x.payload) for x in ha.on(T.state_topic(cfg, dev))]
    assert decreases([s["import_kwh"] for s in states]) == [] and decreases([s["export_kwh"] for s in states]) == []
    assert all(stored[s["seq"]] / 1000 == s["import_kwh"] for s in states), states[:3]
    assert states[-1]["seq"] == max(stored) and len(states) > 30

    # availability: offline within 2 periods of the last frame before the power cut and the link cut, back after
    avail = [(x.at, x.payload) for x in ha.on(T.availability_topic(cfg, dev))]
    start = fleet.start_unix
    for cut_h, back_h in ((CUT_H, POWER_ON_H), (LINK_CUT_H, LINK_BACK_H)):
        off = next(t for t, p in avail if p == "offline" and start + cut_h * 3600 <= t)
        last = max(r for r in received if r <= off)
        print(f"offline {off - last:.0f} virtual s after the last frame before the cut at {cut_h} h")
        assert 1.5 * PERIOD <= off - last <= 2 * PERIOD, (cut_h, off - last)
        assert off < start + back_h * 3600  # it was the outage that did it
        assert any(p == "online" and t > start + back_h * 3600 for t, p in avail), (back_h, avail)
    will = [x.payload for x in ha.on(cfg.will_topic)]
    assert "offline" in will[will.index("online"):] and will[-1] == "offline"  # the kill's will; the final stop

    # the switch: signed, queued commands the meter answered; what Home Assistant showed is what it confirmed
    assert answers == [(M.OP_DISCONNECT, "answered", 0), (M.OP_RECONNECT, "answered", 0)], answers
    shown = [json.loads(x.payload) for x in ha.on(T.relay_topic(cfg, dev))]
    switches = [s["switch"] for i, s in enumerate(shown) if i == 0 or s["switch"] != shown[i - 1]["switch"]]
    assert switches[:3] == ["ON", "OFF", "ON"], shown  # (then the power cut and the restart: ON as confirmed)
    assert next(s for s in shown if s["switch"] == "OFF")["state"] == "disconnected"
