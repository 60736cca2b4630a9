"""Alerts to Home Assistant through a real Mosquitto: a meter's Security alert flag turns ON when the monitor
stores an alert for it (and the alert goes out on <prefix>/alerts), and OFF once the operator acknowledged it."""

from __future__ import annotations

import asyncio

from hass_rules import check_all

from meter import events as E
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.bridge import MqttBridge
from meterkit.integrations.mqtt.config import MqttConfig, parse_url
from meterkit.testing.hass import HomeAssistantView
from meterkit.testing.rig import LoopbackRig, SimMeter


async def _wait(cond, what: str, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


def test_a_meter_problem_flag_follows_its_open_alerts(tmp_path, mosquitto):
    async def scenario():
        meter = SimMeter()
        rig = await LoopbackRig(tmp_path / "db.sqlite").start()
        rig.register(meter)
        dev = meter.device_id
        cfg = MqttConfig(**parse_url(mosquitto.url("meterkit")))
        bridge = MqttBridge(cfg, rig.conc, alerts_s=0.1).start()
        flag = T.alert_topic(cfg, dev)
        with HomeAssistantView(mosquitto.url("homeassistant")) as ha:
            await _wait(lambda: ha.latest_json(flag) == {"problem": "OFF", "open": 0}, "the flag, off")
            cl = await rig.connect(meter)
            cl.send(meter.hello() + meter.event(E.WATCHDOG_RESET, "watchdog", int(rig.clock())))
            await cl.wait_ack(1)
            rig.conc.tick()  # its transaction stores the alert
            await _wait(lambda: (ha.latest_json(flag) or {}).get("problem") == "ON", "the flag, on")
            state = ha.latest_json(flag)
            assert state["open"] == 1 and state["rule"] == "watchdog" and state["severity"] == "warning"
            raised = ha.latest_json(T.alerts_topic(cfg))
            assert raised["rule"] == "watchdog" and raised["device"] == dev.hex() and raised["count"] == 1
            config = ha.configs()[f"homeassistant/binary_sensor/{T.node(dev)}/security_alert/config"]
            assert config["device_class"] == "problem" and config["state_topic"] == flag
            assert check_all(ha.configs()) == []
            [a] = rig.store.alerts()
            assert rig.store.ack_alert(a.id, "operator", rig.clock())
            rig.store.commit()  # what `meterkit alerts ack` does, from another process
            await _wait(lambda: ha.latest_json(flag) == {"problem": "OFF", "open": 0}, "the flag, off again")
        bridge.stop()
        await rig.stop()
    asyncio.run(asyncio.wait_for(scenario(), 60))
