"""The security monitor through a real concentrator (LoopbackRig: TCP on loopback, SQLite, a manual clock): each
rule raised by the attack or fault it is for, and honest traffic raising nothing (docs/alerts.md)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from meter import events as E
from meter import messages as M
from meter.frame import encode_frame
from meterkit.headend import commands as C
from meterkit.headend.alertrules import AlertRules, CountRule
from meterkit.store import StoreError
from meterkit.testing.rig import LoopbackRig, SimMeter, until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def rig_with(tmp_path, *meters: SimMeter, **kw) -> LoopbackRig:
    rig = await LoopbackRig(tmp_path / "head.db", **kw).start()
    rig.register(*meters)
    await rig.restart(**kw)  # the monitor reads the registered meters at start
    return rig


async def suspect_and_honest(tmp_path) -> tuple:
    """A rig with two meters on the rig's clock, each connected: (rig, meter, honest, its client, honest's)."""
    meter, honest = SimMeter(), SimMeter()
    rig = await rig_with(tmp_path, meter, honest)
    meter.t = honest.t = int(rig.clock())
    return rig, meter, honest, await rig.connect(meter), await rig.connect(honest)


def alerts(rig: LoopbackRig, **kw) -> dict:
    """{(rule, device, source): alert} after a housekeeping tick (its transaction writes what is pending)."""
    rig.conc.tick()
    return {(a.rule, a.device_id, a.source): a for a in rig.store.alerts(**kw)}


async def send_all(rig: LoopbackRig, cl, frames: list[bytes], seq: int) -> None:
    cl.send(b"".join(frames))
    await cl.wait_ack(seq)


def hello(m: SimMeter, firmware: str = "meterkit-0.1", boots: int = 1, status: int = 0) -> bytes:
    return m.frame(M.HELLO, status, M.hello_body(firmware, "unix-sim", boots, 68630, 992249, 100000, 10))


def test_forged_frames_alert_once_per_meter_and_source_with_a_count(tmp_path):
    async def go():
        meter = SimMeter()
        rig = await rig_with(tmp_path, meter)
        forger = SimMeter()
        forger.device_id = meter.device_id  # the meter's kid, another key: bad signatures
        bad = await rig.connect(forger, source="127.0.0.9")
        bad.send(b"".join(forger.reading() for _ in range(40)))
        await until(lambda: rig.conc.stats()["rejects"].get("bad-signature", 0) == 40)
        got = alerts(rig)
        await rig.stop()
        return meter, got
    meter, got = run(go())
    assert set(got) == {("auth-failure", meter.device_id, ""), ("auth-failure", b"", "127.0.0.9")}
    a = got[("auth-failure", b"", "127.0.0.9")]
    assert a.count == 40 and a.severity == "warning" and a.state == "open"  # 40 frames: one row, count 40
    assert "bad-signature" in a.detail and meter.device_id.hex() in a.detail


def test_replayed_frames_from_another_address(tmp_path):
    async def go():
        meter = SimMeter()
        rig = await rig_with(tmp_path, meter)
        cl = await rig.connect(meter)
        frames = [meter.reading() for _ in range(3)]
        await send_all(rig, cl, frames, 2)
        assert alerts(rig) == {}  # honest frames: nothing
        thief = await rig.connect(meter, source="127.0.0.7", verify=False)
        thief.send(b"".join(frames))  # recorded frames replayed while the meter is on its own connection
        await until(lambda: rig.conc.stats()["rejects"].get("replay-unanswered", 0) == 3)
        got = alerts(rig)
        await rig.stop()
        return meter, got
    meter, got = run(go())
    assert set(got) == {("replay", meter.device_id, ""), ("replay", b"", "127.0.0.7")}


def test_noise_flood_connection_storm_and_frame_flood(tmp_path):
    rules = dataclasses.replace(AlertRules(), frame_flood=CountRule(True, "warning", 200, 60.0))

    async def go():
        meter = SimMeter()
        rig = await rig_with(tmp_path, meter, max_noise=4096, alert_rules=rules)
        noisy = await rig.connect(meter, source="127.0.0.3", verify=False)
        noisy.send(b"\x55" * 8192)  # not a frame: hung up on after max_noise bytes
        await noisy.closed.wait()
        socks = [await rig.connect(meter, source="127.0.0.4", verify=False) for _ in range(61)]
        await until(lambda: rig.conc.stats()["connections"] >= 62)
        cl = await rig.connect(meter, source="127.0.0.5")
        await send_all(rig, cl, [meter.reading() for _ in range(250)], 249)  # 250 fresh frames at one instant
        got = alerts(rig)
        for s in socks:
            s.close()
        await rig.stop()
        return meter, got
    meter, got = run(go())
    assert set(got) == {("frame-flood", b"", "127.0.0.3"), ("connection-storm", b"", "127.0.0.4"),
                        ("frame-flood", b"", "127.0.0.5"), ("frame-flood", meter.device_id, "")}
    assert got[("connection-storm", b"", "127.0.0.4")].count == 61
    assert got[("frame-flood", meter.device_id, "")].count == 250


def test_tamper_watchdog_reboots_and_a_meter_that_refuses_a_command(tmp_path):
    async def go():
        rig, meter, honest, cl, ok = await suspect_and_honest(tmp_path)
        t = meter.t
        # honest: a REBOOT the head-end asked for, then its restart; one power cut
        await send_all(rig, ok, [hello(honest, boots=1), honest.event(E.REBOOT, 5, t), hello(honest, boots=2),
                                 hello(honest, boots=3, status=M.ST_POWER_FAIL)], 3)
        assert alerts(rig) == {}
        frames = [hello(meter, boots=1), meter.event(E.CHIP_RESET, 0, t + 60), meter.event(E.CHIP_RESET, 0, t + 120),
                  meter.event(E.CHIP_RESET, 0, t + 180), meter.event(E.SENSOR_FAULT, "no ACK", t + 200),
                  meter.event(E.WATCHDOG_RESET, "watchdog", t + 300)]
        frames += [hello(meter, boots=b) for b in (2, 3, 4)]  # three restarts nobody asked for
        await send_all(rig, cl, frames, len(frames) - 1)
        C.queue(rig.store, meter.device_id, M.OP_BILLING_RESET, None, rig.clock(), by="test")
        rig.conc.dispatch.send_queued(rig.clock())
        await cl.wait_for(lambda c: c.commands)
        cl.send(meter.response(cl.commands[0].seq, M.RESULT_REJECTED, "not now"))
        await cl.wait_ack(len(frames))
        got = alerts(rig)
        await rig.stop()
        return meter, got
    meter, got = run(go())
    dev = meter.device_id
    assert set(got) == {("tamper", dev, ""), ("watchdog", dev, ""), ("reboot", dev, ""), ("command-refused", dev, "")}
    assert got[("tamper", dev, "")].count == 4 and got[("tamper", dev, "")].severity == "critical"  # 3 resets + fault
    assert got[("reboot", dev, "")].count == 3
    assert "-4 not now" in got[("command-refused", dev, "")].detail


def test_clock_jumps_but_not_a_clock_the_head_end_set(tmp_path):
    async def go():
        rig, meter, honest, cl, ok = await suspect_and_honest(tmp_path)
        t = meter.t
        await send_all(rig, ok, [hello(honest)], 0)  # connected: a command can go out
        C.queue(rig.store, honest.device_id, M.OP_SET_TIME, C.set_time_args(False), rig.clock(), by="test")
        rig.conc.dispatch.send_queued(rig.clock())
        await ok.wait_for(lambda c: c.commands)
        await send_all(rig, ok, [honest.event(E.CLOCK_SET, -4000, t), honest.response(ok.commands[0].seq, 0)], 2)
        assert alerts(rig) == {}
        await send_all(rig, cl, [meter.event(E.CLOCK_SET, 7200, t)], 0)
        meter.t = t + 7200  # and then a reading made two hours in the future
        await send_all(rig, cl, [meter.reading()], 1)
        got = alerts(rig)
        await rig.stop()
        return meter, got
    meter, got = run(go())
    [a] = got.values()
    assert (a.rule, a.device_id, a.count) == ("clock-jump", meter.device_id, 2)
    assert "in the future" in a.detail


def test_firmware_changes_outside_the_allowed_list(tmp_path):
    rules = dataclasses.replace(AlertRules(), firmware=dataclasses.replace(AlertRules().firmware,
                                                                          allowed=("meterkit-0.1", "meterkit-0.2")))

    async def go():
        a, b = SimMeter(), SimMeter()
        rig = await rig_with(tmp_path, a, b, alert_rules=rules)
        ca, cb = await rig.connect(a), await rig.connect(b)
        await send_all(rig, ca, [hello(a, "meterkit-0.1", 1), hello(a, "meterkit-0.2", 2)], 1)  # a rollout
        await send_all(rig, cb, [hello(b, "meterkit-0.1", 1), hello(b, "evil-6.6", 2)], 1)
        got = alerts(rig)
        await rig.stop()
        return b, got
    b, got = run(go())
    [a] = got.values()
    assert (a.rule, a.device_id, a.severity) == ("firmware", b.device_id, "critical")
    assert a.detail == "firmware changed from meterkit-0.1 to evil-6.6 outside a rollout"


def test_firmware_change_without_a_rollout_and_one_a_rollout_expects(tmp_path):
    class Rollout:  # what the firmware-update work will register: expected(device, firmware, now)
        def expected(self, device_id, firmware, now):
            return firmware == "meterkit-0.3"

    async def go():
        m = SimMeter()
        rig = await rig_with(tmp_path, m)
        rig.conc.monitor.expect_firmware(Rollout())
        cl = await rig.connect(m)
        await send_all(rig, cl, [hello(m, "meterkit-0.1", 1), hello(m, "meterkit-0.3", 2)], 1)
        quiet = alerts(rig)
        await send_all(rig, cl, [hello(m, "meterkit-0.4", 3)], 2)
        got = alerts(rig)
        await rig.stop()
        return quiet, got
    quiet, got = run(go())
    assert quiet == {}
    [a] = got.values()
    assert a.detail == "firmware changed from meterkit-0.3 to meterkit-0.4 outside a rollout"


def readings(m: SimMeter, start: int, hours: float, watts: float, volts: float, status: int = 0) -> list[bytes]:
    """A reading every 5 minutes: the import register (Wh) as `watts` would move it, at `volts`."""
    out = []
    for i in range(int(hours * 12)):
        m.t = start + i * 300
        m.energy_wh += watts / 12
        body = {M.K_REGISTERS: {M.OBIS_IMPORT: int(m.energy_wh), M.OBIS_EXPORT: 0},
                M.K_INSTANT: [int(watts * 1000), int(volts * 1000), int(watts / max(volts, 1) * 1000)],
                M.K_UNCOVERED_PPM: 0}
        out.append(m.frame(M.READING, status, body))
    return out


@pytest.mark.parametrize("volts,status,alerted", [(12.0, 0, True), (0.0, 0, False), (12.0, M.ST_RELAY_OPEN, False),
                                                  (12.0, M.ST_LOAD_SHED, False)])
def test_consumption_drops_to_nothing_while_the_voltage_stays(tmp_path, volts, status, alerted):
    """14 h at 18 W, then 3 h at ~0.2 W: a bypass when the voltage stays; a supply cut (no voltage), an open relay
    or a load shed are not."""
    async def go():
        m = SimMeter()
        rig = await rig_with(tmp_path, m)
        cl = await rig.connect(m)
        t = int(rig.clock()) - 17 * 3600
        frames = readings(m, t, 14, 18.0, 12.1) + readings(m, t + 14 * 3600, 3, 0.2, volts, status)
        await send_all(rig, cl, frames, len(frames) - 1)
        got = alerts(rig)
        await rig.stop()
        return m, got
    m, got = run(go())
    if alerted:
        [a] = got.values()
        assert (a.rule, a.device_id) == ("consumption-drop", m.device_id)
        assert a.detail.startswith("import 0.") and "voltage normal (12.00 V, nominal 12.10 V)" in a.detail
        assert a.count >= 10  # every 5-minute bucket of the last hour held it too: one alert, counted
    else:
        assert got == {}


def test_an_alert_survives_a_failed_commit(tmp_path, monkeypatch):
    async def go():
        meter = SimMeter()
        rig = await rig_with(tmp_path, meter)
        cl = await rig.connect(meter)
        await send_all(rig, cl, [meter.event(E.WATCHDOG_RESET, "watchdog", int(rig.clock()))], 0)
        real = rig.store.commit

        def fail():
            raise StoreError("disk I/O error")  # the commit fails: the transaction is rolled back
        monkeypatch.setattr(rig.store, "commit", fail)
        with pytest.raises(StoreError):
            with rig.conc.counters.transaction():
                pass
        monkeypatch.setattr(rig.store, "commit", real)
        assert rig.store.alerts() == [] and rig.conc.monitor.pending == 1
        got = alerts(rig)
        await rig.stop()
        return got
    [a] = run(go()).values()
    assert a.rule == "watchdog" and a.count == 1


def test_a_meter_unknown_to_the_head_end_alerts_per_source(tmp_path):
    async def go():
        rig = await rig_with(tmp_path)
        stranger = SimMeter()
        cl = await rig.connect(stranger, source="127.0.0.8")
        cl.send(b"".join(encode_frame(stranger.cose(M.READING, 0, {})) for _ in range(5)))
        await until(lambda: rig.conc.stats().get("rejected", 0) >= 5)
        got = alerts(rig)
        await rig.stop()
        return got
    got = run(go())
    assert set(got) == {("auth-failure", b"", "127.0.0.8")}


def test_no_monitor_no_alerts(tmp_path):
    async def go():
        rig = await rig_with(tmp_path, alert_rules=None)
        forger = SimMeter()
        cl = await rig.connect(forger, source="127.0.0.8")
        cl.send(b"".join(forger.reading() for _ in range(10)))
        await until(lambda: rig.conc.stats().get("rejected", 0) >= 10)
        got = alerts(rig)
        await rig.stop()
        return got
    got = run(go())
    assert got == {}


def test_an_activated_image_expects_a_firmware_change_and_a_key_rotation_does_not(tmp_path):
    """ActivatedUpdates, the record `meterkit firmware push` leaves: an image activated on the meter within the
    window expects its firmware change (or rollback); a firmware-key rotation, activated the same way, does not."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from meterkit.firmware import image as I
    from meterkit.firmware.rollout import queue_update
    from meterkit.headend.monitor import ActivatedUpdates

    fw_key = ec.generate_private_key(ec.SECP256R1())
    rotation = I.rotation(fw_key, ec.generate_private_key(ec.SECP256R1()).public_key(), 3, "unix-sim/x64")
    image = I.sign(fw_key, I.pack_files({"fwimage.py": b"VERSION = 'v2'\n"}), 2, "unix-sim/x64", "v2")

    async def go():
        m = SimMeter()
        rig = await rig_with(tmp_path, m)
        s, now = rig.store, rig.clock()
        watch = ActivatedUpdates(s, window_s=3600)

        def answered(update) -> None:
            for qid in queue_update(s, m.device_id, update, now, by="test"):
                s.update_queued(qid, state="answered", result=M.RESULT_OK, answered_at=now)
            s.commit()

        answered(rotation)
        after_rotation = watch.expected(m.device_id, "v2", now)
        answered(image)
        after_image = watch.expected(m.device_id, "v2", now), watch.expected(m.device_id, "v2", now + 7200)
        await rig.stop()
        return after_rotation, after_image
    after_rotation, after_image = run(go())
    assert after_rotation is False
    assert after_image == (True, False)  # within the window; not two hours later
