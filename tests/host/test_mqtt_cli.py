"""`meterkit concentrator --mqtt ...` as docs/home-assistant.md runs it: a real process, a real Mosquitto with
users and the documented ACL, a meter over TCP and Home Assistant's side as an MQTT client. Bad settings are
refused before anything connects."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hass_rules import check_all, energy_configs

from meter import messages as M
from meter.frame import Deframer
from meterkit import wire as P
from meterkit.cli import concentrator
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.config import MqttConfig
from meterkit.store import open_store
from meterkit.testing.hass import HomeAssistantView
from meterkit.testing.rig import SimMeter

CODE = ("import sys\nfrom meterkit.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def _setup(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    kpath = tmp_path / "headend.key.pem"
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    kpath.chmod(0o600)
    db = tmp_path / "fleet.db"
    m = SimMeter(time_fn=lambda: int(time.time()))
    with open_store(db) as s:
        s.register_meter(None, m.public_key, "house")
    return key, kpath, db, m


def test_the_documented_command_line_publishes_and_takes_commands(tmp_path, mosquitto):
    key, kpath, db, m = _setup(tmp_path)
    url = f"mqtt://meterkit@127.0.0.1:{mosquitto.port}"  # the password from the environment, not the command line
    env = {**__import__("os").environ, "METERKIT_MQTT_PASSWORD": mosquitto.users["meterkit"]}
    with HomeAssistantView(mosquitto.url("homeassistant")) as ha:
        proc = subprocess.Popen([sys.executable, "-c", CODE, "concentrator", "--db", str(db), "--key", str(kpath),
                                 "--listen", "127.0.0.1:0", "--mqtt", url, "--mqtt-meter", "house",
                                 "--mqtt-commands", "--mqtt-allow", "house"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            lines = [proc.stdout.readline(), proc.stdout.readline()]
            assert lines[0].startswith("MQTT: publishing 1 meters"), lines
            assert lines[1].startswith("listening on 127.0.0.1:"), lines
            port = int(lines[1].rsplit(":", 1)[1])
            he = P.HeadEnd(key)
            state = T.state_topic(MqttConfig(), m.device_id)

            async def meter():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(m.hello() + m.reading() + m.reading())
                await asyncio.to_thread(ha.wait, lambda: (ha.latest_json(state) or {}).get("seq") == 2, 15,
                                        "the state of the second reading")
                ha.publish(T.relay_command_topic(MqttConfig(), m.device_id), "OFF")
                df, last = Deframer(), 0
                while True:
                    for cose in df.feed(await asyncio.wait_for(reader.read(4096), 15)):
                        msg = P.verify_host_message(cose, he.lookup, m.device_id, int(time.time()), last)
                        last = msg.counter
                        if msg.kind == M.COMMAND:
                            writer.close()
                            return msg.body[M.K_OP]

            assert asyncio.run(meter()) == M.OP_DISCONNECT  # signed by the head-end, verified as a meter does
            configs = ha.configs()
            assert check_all(configs) == [] and len(energy_configs(configs)) == 2
            assert any(t.startswith("homeassistant/switch/") for t in configs)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        ha.wait(lambda: ha.latest("meterkit/meterkit/status") == "offline", 10, "offline after the stop")
    assert mosquitto.users["meterkit"] not in out + err  # the password is never printed


@pytest.mark.parametrize(("extra", "says"), [
    ([], "--mqtt-meter METER"),
    (["--mqtt-meter", "nobody"], "no such meter"),
    (["--mqtt-meter", "house", "--mqtt-commands"], "allow"),
    (["--mqtt-meter", "house", "--mqtt-prefix", "a/+"], "prefix"),
])
def test_bad_mqtt_settings_are_refused_before_anything_connects(tmp_path, capsys, extra, says):
    _, kpath, db, _ = _setup(tmp_path)
    p = argparse.ArgumentParser(prog="meterkit")
    concentrator.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["concentrator", "--db", str(db), "--key", str(kpath), "--listen", "127.0.0.1:0",
                      "--mqtt", "mqtt://u:secret@127.0.0.1:1"] + extra)
    assert a.func(a) == 2
    err = capsys.readouterr().err
    assert says in err and "secret" not in err, err
