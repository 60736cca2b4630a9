"""The MQTT bridge with a real Mosquitto (users, ACL), the real concentrator on loopback and protocol-level meters
(SimMeter), Home Assistant's side played by a real MQTT client (meterkit.testing.hass):

- discovery passes Home Assistant's rules; states are the verified, stored readings, newest first;
- the broker down at start and lost mid-run: ingest and acks go on; the latest state is published on its return;
- a concentrator restart: it starts from what it stored; published totals never decrease through all of it;
- availability goes offline within 2 reading periods of a meter's last frame, back on its next;
- commands: a relay switch and a shed button from Home Assistant become signed, queued commands; the relay
  state follows the meter's answer; unauthorised (not allowed, no ACL right, commands off) and malformed
  commands are refused, logged and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging

from hass_rules import check_all, decreases, energy_configs

from meter import messages as M
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.bridge import MqttBridge
from meterkit.integrations.mqtt.commands import HA_ACTOR
from meterkit.integrations.mqtt.config import MqttConfig, parse_url
from meterkit.testing.hass import HomeAssistantView
from meterkit.testing.rig import LoopbackRig, ManualClock, SimMeter

PERIOD = 60


def _cfg(broker, **kw) -> MqttConfig:
    return MqttConfig(**parse_url(broker.url("meterkit")), **kw)


async def _report(rig, cl, meter, clock, n: int) -> int:
    """n readings a period apart, each acknowledged; returns the last sequence number."""
    for _ in range(n):
        clock.advance(PERIOD)
        seq = meter.seq.next
        cl.send(meter.reading())
        await cl.wait_ack(seq)
    return seq


def _imports(ha: HomeAssistantView, dev: bytes) -> list[float]:
    return [json.loads(m.payload)["import_kwh"] for m in ha.on(T.state_topic(MqttConfig(), dev))]


def _seq(ha: HomeAssistantView, dev: bytes) -> int | None:
    s = ha.latest_json(T.state_topic(MqttConfig(), dev))
    return None if s is None else s["seq"]


async def _rig_with_a_meter(tmp_path, clock) -> tuple[LoopbackRig, SimMeter]:
    """A concentrator on the manual clock, and one registered meter whose time it keeps."""
    rig = await LoopbackRig(tmp_path / "db.sqlite", clock=clock).start()
    meter = SimMeter(time_fn=lambda: int(clock()))
    rig.register(meter)
    return rig, meter


async def _wait(cond, timeout: float = 10.0, what: str = "") -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


def test_states_survive_broker_outages_and_a_restart_and_never_decrease(tmp_path, mosquitto):
    clock = ManualClock()

    async def scenario():
        rig, meter = await _rig_with_a_meter(tmp_path, clock)
        dev = meter.device_id
        mosquitto.stop()  # the broker is down when the concentrator starts
        bridge = MqttBridge(_cfg(mosquitto), rig.conc).start()
        cl = await rig.connect(meter)
        cl.send(meter.hello())
        last = await _report(rig, cl, meter, clock, 5)  # acknowledged without a broker
        assert not bridge.link.connected and bridge.link.published == 0
        mosquitto.start()
        with HomeAssistantView(mosquitto.url("homeassistant")) as ha:
            await _wait(lambda: _seq(ha, dev) == last, what="the latest state after the broker came up")
            configs = ha.configs()
            assert check_all(configs) == [] and len(energy_configs(configs)) == 2
            imp = configs[f"homeassistant/sensor/meterkit_{dev.hex()}/import/config"]
            assert (imp["device"]["sw_version"], imp["device"]["hw_version"]) == ("meterkit-0.1", "unix-sim")
            assert ha.latest(T.availability_topic(bridge.cfg, dev)) == "online"
            assert ha.latest(bridge.cfg.will_topic) == "online"
            state = ha.latest_json(T.state_topic(bridge.cfg, dev))
            assert (state["import_kwh"], state["power_w"], state["voltage_v"]) == (meter.energy_wh / 1000, 1.5, 12.0)
            # lost mid-run (no persistence: every retained message goes with it); meters go on being acknowledged
            mosquitto.stop()
            last = await _report(rig, cl, meter, clock, 3)
            mosquitto.start()
            await _wait(lambda: _seq(ha, dev) == last, timeout=20, what="the latest state after the broker's return")
            assert ha.latest(bridge.cfg.will_topic) == "online"
            # a hole filled later (a back-fill): the older frame is stored but never becomes the state
            e = meter.energy_wh
            clock.advance(2 * PERIOD)
            cl.send(meter.reading(import_wh=e + 14, seq=last + 2))
            await _wait(lambda: _seq(ha, dev) == last + 2, what="the newer frame's state")
            cl.send(meter.reading(import_wh=e + 7, seq=last + 1))
            await cl.wait_ack(last + 2)
            meter.energy_wh, backfilled, last = e + 14, last + 1, last + 2
            await asyncio.sleep(0.2)
            assert bridge.tracker.stale_skipped == 1
            # a restart starts from what is stored
            await rig.restart()
            assert ha.wait(lambda: ha.latest(bridge.cfg.will_topic) == "offline", what="the clean stop's offline")
            n = len(ha.on(T.state_topic(bridge.cfg, dev)))
            bridge = MqttBridge(_cfg(mosquitto), rig.conc).start()
            await _wait(lambda: ha.latest(bridge.cfg.will_topic) == "online", what="the new bridge")
            # before any meter connects: the newest stored state, read back from the database and verified
            await _wait(lambda: len(ha.on(T.state_topic(bridge.cfg, dev))) > n, what="the stored state")
            assert _seq(ha, dev) == last
            cl = await rig.connect(meter, last_counter=cl.last_counter)
            last = await _report(rig, cl, meter, clock, 2)
            await _wait(lambda: _seq(ha, dev) == last, what="states after the restart")
            seen = _imports(ha, dev)
            seqs = [json.loads(m.payload)["seq"] for m in ha.on(T.state_topic(bridge.cfg, dev))]
            await rig.stop()
        return seen, seqs, last, meter.energy_wh, backfilled

    seen, seqs, last, wh, backfilled = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert decreases(seen) == [], seen
    assert seen[-1] == wh / 1000 and seqs[-1] == last
    assert backfilled not in seqs and seqs == sorted(seqs), seqs  # newest first, in order, through it all


def test_availability_within_one_and_a_half_periods_and_back(tmp_path, mosquitto):
    clock = ManualClock()

    async def scenario():
        rig, meter = await _rig_with_a_meter(tmp_path, clock)
        dev = meter.device_id
        bridge = MqttBridge(_cfg(mosquitto), rig.conc).start()
        with HomeAssistantView(mosquitto.url("homeassistant")) as ha:
            avail, status = T.availability_topic(bridge.cfg, dev), T.status_topic(bridge.cfg, dev)
            # never heard: unavailable
            await _wait(lambda: ha.latest(avail) == "offline", what="offline before the first frame")
            cl = await rig.connect(meter)
            await _report(rig, cl, meter, clock, 1)
            await _wait(lambda: ha.latest(avail) == "online", what="online after the first frame")
            clock.advance(1.5 * PERIOD - 1)  # silent for just under 1.5 periods (the default): still online
            await asyncio.sleep(0.5)
            assert ha.latest(avail) == "online"
            clock.advance(2)  # 1.5 periods and a second
            await _wait(lambda: ha.latest(avail) == "offline", what="offline after 1.5 periods")
            assert json.loads(ha.latest(status))["outage"] == "ON"
            await _report(rig, cl, meter, clock, 1)
            await _wait(lambda: ha.latest(avail) == "online", what="online again")
            assert json.loads(ha.latest(status))["outage"] == "OFF"
            await rig.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_commands_from_home_assistant_are_queued_signed_and_guarded(tmp_path, mosquitto, caplog):
    clock = ManualClock()
    caplog.set_level(logging.WARNING, "meterkit.integrations.mqtt")

    async def scenario():
        rig = await LoopbackRig(tmp_path / "db.sqlite", clock=clock).start()
        house, other = SimMeter(time_fn=lambda: int(clock())), SimMeter(time_fn=lambda: int(clock()))
        rig.register(house, other)
        cfg = _cfg(mosquitto, commands=True, allow=frozenset({house.device_id}))
        with HomeAssistantView(mosquitto.url("homeassistant")) as ha, \
                HomeAssistantView(mosquitto.url("guest"), client_id="guest") as guest:
            # a retained command waits on the broker: the bridge gets it (flagged retained) when it subscribes
            ha.publish(T.relay_command_topic(cfg, house.device_id), "OFF", retain=True)
            bridge = MqttBridge(cfg, rig.conc).start()
            cl = await rig.connect(house)
            cl2 = await rig.connect(other)
            await _report(rig, cl, house, clock, 1)
            await _report(rig, cl2, other, clock, 1)
            relay = T.relay_topic(cfg, house.device_id)
            await _wait(lambda: ha.latest(relay) is not None, what="the relay state")
            assert json.loads(ha.latest(relay))["switch"] == "ON"
            configs = ha.configs()
            assert check_all(configs) == []
            switches = [t for t in configs if t.startswith("homeassistant/switch/")]
            assert switches == [f"homeassistant/switch/meterkit_{house.device_id.hex()}/relay_switch/config"]

            # refused: the retained command, a payload that is neither ON nor OFF, a meter not allowed; and a
            # user without the ACL's write right never reaches the bridge at all
            ha.publish(T.relay_command_topic(cfg, house.device_id), "BANANA")
            ha.publish(T.relay_command_topic(cfg, other.device_id), "OFF")
            ha.publish(T.shed_command_topic(cfg, house.device_id), "ON")
            guest.publish(T.relay_command_topic(cfg, house.device_id), "OFF")
            await _wait(lambda: sum(bridge.commands.refused.values()) >= 4, what="four refusals")
            await asyncio.sleep(0.3)  # the guest's message, had the broker passed it
            assert bridge.commands.refused == {"malformed": 2, "not-allowed": 1, "retained": 1}
            # the broker dropped the guest's command (its ACL): Home Assistant, subscribed to all, never saw it
            assert [m.payload for m in ha.on(T.relay_command_topic(cfg, house.device_id))] == ["OFF", "BANANA"]
            assert rig.store.queued_commands() == []
            assert rig.conc.stats()["mqtt_commands_refused"] == 4
            assert sum("MQTT command refused" in r.message for r in caplog.records) == 4

            # the switch: OFF -> a signed disconnect (op 6) on the meter's connection; the state stays ON until
            # the meter's answer says the relay is open
            ha.publish(T.relay_command_topic(cfg, house.device_id), "OFF")
            await cl.wait_for(lambda c: len(c.commands) == 1)
            cmd = cl.commands[0]
            assert cmd.body[M.K_OP] == M.OP_DISCONNECT and cl.refused == []  # verified as a meter does
            [q] = rig.store.queued_commands(house.device_id)
            assert (q.op, q.by, q.state) == (M.OP_DISCONNECT, HA_ACTOR, "sent")
            await asyncio.sleep(0.2)
            assert json.loads(ha.latest(relay))["switch"] == "ON"  # requested is not confirmed
            seq = house.seq.next
            cl.send(house.frame(M.RESPONSE, M.ST_RELAY_OPEN, M.response_body(cmd.seq, 0)))
            await cl.wait_ack(seq)
            await _wait(lambda: json.loads(ha.latest(relay))["switch"] == "OFF", what="the confirmed state")
            assert json.loads(ha.latest(relay))["state"] == "disconnected"
            # the shed button: a one-meter DR event (op 9, shed), recorded and queued
            ha.publish(T.shed_command_topic(cfg, house.device_id), "PRESS")
            await cl.wait_for(lambda c: len(c.commands) == 2)
            assert cl.commands[1].body[M.K_OP] == M.OP_DR_EVENT and cl.commands[1].body[M.K_ARGS][M.A_SHED] is True
            # a reconnect the meter refuses: the switch stays as the meter says (off), not as asked (on)
            ha.publish(T.relay_command_topic(cfg, house.device_id), "ON")
            cl.send(house.frame(M.RESPONSE, M.ST_RELAY_OPEN, M.response_body(cl.commands[1].seq, 0)))  # the shed's
            await cl.wait_for(lambda c: len(c.commands) == 3)
            assert cl.commands[2].body[M.K_OP] == M.OP_RECONNECT
            seq = house.seq.next
            cl.send(house.frame(M.RESPONSE, M.ST_RELAY_OPEN, M.response_body(cl.commands[2].seq, -4, "rejected")))
            await cl.wait_ack(seq)
            await asyncio.sleep(0.2)
            assert json.loads(ha.latest(relay))["switch"] == "OFF"
            [ev] = rig.store.dr_events()
            assert (ev.shed, ev.duration_s) == (True, cfg.shed_s)
            assert [a.actor for a in rig.store.audit(house.device_id) if a.action == "queued"] == [HA_ACTOR] * 3
            await rig.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
