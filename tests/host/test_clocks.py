"""Meters' clocks at the real concentrator (headend/clocks.py, dispatch.py): real TCP on 127.0.0.1, a real SQLite
file, meters whose frames are built and signed by the firmware's own code, and every set-time command checked by
the firmware's own verify_host. Time comes from a manual clock: a frame's delay is what the test makes it.

The drift rule: two successive readings or hellos whose meter times and receive times advance alike travelled
with the same delay; the later one gives the drift. A burst from an outbox does not."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import messages as M
from meter.identity import Identity
from meterkit import cli
from meterkit import wire as P
from meterkit.headend import commands as C
from meterkit.headend import status
from meterkit.headend.config import ConcentratorConfig
from meterkit.store import open_store
from meterkit.store.sqlite import SQLiteStore
from meterkit.testing.rig import T0, LoopbackRig, MeterClient, SimMeter, until
from meterkit.testing.sqlfile import old_database, sql
from meterkit.wire.records import Frame

READING = 60


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Meter:
    """A meter of the firmware's own code (meter.identity, meter.messages.Builder) whose clock is the
    concentrator's plus `off` seconds, or seconds since boot while `unset`."""

    def __init__(self, tmp_path, rig: LoopbackRig, off: float = 0, unset: bool = False):
        self.rig, self.off, self.unset, self.booted = rig, off, unset, rig.clock()
        self.ident = Identity(str(tmp_path / f"flash-{id(self)}"))
        self.ident.install_headend(rig.headend.public_bytes)
        self.sim = SimMeter(identity=self.ident, time_fn=self.now)

    def now(self) -> int:
        t = self.rig.clock()
        return int(t - self.booted) if self.unset else int(t + self.off)

    @property
    def status(self) -> int:
        return M.ST_CLOCK_NOT_SET if self.unset else 0

    def reading(self) -> bytes:
        return self.sim.reading(status=self.status)

    def hello(self) -> bytes:
        return self.sim.hello(status=self.status)

    def verify(self, cmd: P.Message, last: int = 0) -> dict:
        """The meter's own check of a head-end message (None for `now` while its clock is not set)."""
        return M.verify_host(cmd.raw, self.ident, None if self.unset else self.now(), last)[2]


def set_times(rig: LoopbackRig, dev: bytes) -> list:
    return [q for q in rig.store.queued_commands(dev) if q.op == M.OP_SET_TIME]


def test_an_unset_meter_is_sent_the_time_of_signing_at_its_hello(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = Meter(tmp_path, rig, unset=True)
            rig.register(m.sim)
            cl = await rig.connect(m.sim)
            cl.send(m.hello())
            await cl.wait_for(lambda c: c.commands)
            cmd = cl.commands[0]
            assert cmd.body[M.K_OP] == M.OP_SET_TIME
            assert cmd.body[M.K_ARGS] == {M.A_UTC: T0, M.A_FORCE: False}  # no force: an unset clock takes any
            payload = m.verify(cmd)  # the firmware takes it without a clock to judge its expiry
            assert payload[M.K_ARGS][M.A_UTC] == T0
            [q] = set_times(rig, m.sim.device_id)
            assert (q.state, q.note) == ("sent", "clock: its clock is not set")
            assert rig.conc.stats()["clock_sets_queued"] == 1

    run(main())


def test_a_queued_set_time_carries_the_time_it_is_signed_at_not_queued_at(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = Meter(tmp_path, rig)
            rig.register(m.sim)
            with open_store(rig.db_path) as s:
                C.queue(s, m.sim.device_id, M.OP_SET_TIME, C.set_time_args(True), rig.clock())
            rig.clock.advance(7200.4)  # the meter connects two hours later
            cl = await rig.connect(m.sim)
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            assert cl.commands[0].body[M.K_ARGS] == {M.A_UTC: T0 + 7200, M.A_FORCE: True}

    run(main())


def test_drift_is_measured_from_frames_that_travelled_alike_not_from_a_burst(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = Meter(tmp_path, rig, off=-30)  # 30 s slow: beyond the 10 s bound, within 900 s (a slow clock
            # and a late frame look alike; a fast one shows at once: the next test)
            rig.register(m.sim)
            cl = await rig.connect(m.sim)
            # an outbox burst: five readings made a minute apart, all received now
            m.off -= 4 * READING
            for _ in range(5):
                cl.send(m.reading())
                m.off += READING
            m.off -= READING
            await cl.wait_ack(4)
            assert rig.store.meter(m.sim.device_id).clock_drift_s is None, "a burst measures nothing"
            assert set_times(rig, m.sim.device_id) == []
            rig.clock.advance(READING)  # the next reading, live like the last of the burst
            cl.send(m.reading())
            await cl.wait_for(lambda c: c.commands)
            rec = rig.store.meter(m.sim.device_id)
            assert (rec.clock_drift_s, rec.clock_drift_at) == (-30, rig.clock())
            cmd = cl.commands[0]
            assert cmd.body[M.K_ARGS] == {M.A_UTC: int(rig.clock()), M.A_FORCE: False}
            assert m.verify(cmd)[M.K_ARGS][M.A_UTC] == int(rig.clock())
            [q] = set_times(rig, m.sim.device_id)
            assert q.note == "clock: its clock is off by -30 s"

    run(main())


def test_a_drift_beyond_900_s_is_set_with_force_and_an_expiry_the_fast_meter_accepts(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = Meter(tmp_path, rig, off=2000)  # over half an hour fast: its clock says our commands expired
            rig.register(m.sim)
            # the client judges every head-end message by the meter's own (fast) clock
            cl = await MeterClient.connect(m.sim, rig.host, rig.port, rig.headend.lookup, now=m.now)
            cl.send(m.hello())  # from the future: one frame proves it ahead (no delay makes a frame early)
            await cl.wait_for(lambda c: c.commands and c.acks)
            assert rig.store.meter(m.sim.device_id).clock_drift_s == 2000
            assert (cl.acks, cl.refused) == ([0], []), "its ack's expiry allows for its clock too"
            cmd = cl.commands[0]
            assert cmd.body[M.K_ARGS] == {M.A_UTC: int(rig.clock()), M.A_FORCE: True}
            assert cmd.body[M.K_EXPIRES] == int(rig.clock()) + 300 + 2000, "its expiry in the meter's clock"
            m.verify(cmd)  # accepted: not expired by the meter's own (fast) clock
            rig.clock.advance(301)
            with pytest.raises(M.HostMessageError, match="expired"):
                m.verify(cmd)  # ... and no longer than the TTL of the meter's time

    run(main())


def test_within_the_bound_nothing_is_set_and_a_meter_is_not_asked_again_too_soon(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db, clock_set_every_s=600.0) as rig:
            ok = Meter(tmp_path, rig, off=-5)
            off = Meter(tmp_path, rig, off=-40)
            rig.register(ok.sim, off.sim)
            a, b = await rig.connect(ok.sim), await rig.connect(off.sim)
            for _ in range(3):
                a.send(ok.reading())
                b.send(off.reading())
                await a.wait_ack(ok.sim.seq.next - 1)
                await b.wait_ack(off.sim.seq.next - 1)
                rig.clock.advance(READING)
            assert rig.store.meter(ok.sim.device_id).clock_drift_s == -5
            assert set_times(rig, ok.sim.device_id) == [], "5 s: within the 10 s bound"
            [q] = set_times(rig, off.sim.device_id)
            await b.wait_for(lambda c: c.commands)
            b.send(off.sim.response(b.commands[0].counter, 0))  # it answered, but (say) the clock did not move
            await until(lambda: set_times(rig, off.sim.device_id)[0].state == "answered")
            for _ in range(3):
                b.send(off.reading())
                await b.wait_ack(off.sim.seq.next - 1)
                rig.clock.advance(READING)
            assert len(set_times(rig, off.sim.device_id)) == 1, "not again within clock_set_every_s"
            rig.clock.advance(600)
            b.send(off.reading())
            await until(lambda: len(set_times(rig, off.sim.device_id)) == 2)

    run(main())


async def _booted_unset(tmp_path, rig: LoopbackRig):
    """A meter that booted without a clock, connected; its hello sent and the set-time it asks for received."""
    m = Meter(tmp_path, rig, unset=True)
    rig.register(m.sim)
    cl = await rig.connect(m.sim)
    cl.send(m.hello())
    await cl.wait_for(lambda c: c.commands)
    return m, cl


def test_a_meter_that_boots_again_without_a_clock_is_set_again_at_once(tmp_path, store_db):
    # set a minute ago; then a power cut (or a deploy's restart): its hello says unset again, and it is not
    # left without a date for clock_set_every_s
    async def main():
        async with LoopbackRig(store_db, clock_set_every_s=600.0) as rig:
            m, cl = await _booted_unset(tmp_path, rig)
            cl.send(m.sim.response(cl.commands[0].counter, 0))
            await until(lambda: set_times(rig, m.sim.device_id)[0].state == "answered")
            rig.clock.advance(READING)
            m.booted = rig.clock()
            cl.send(m.reading())  # still unset (say it did not take): not asked again within the 600 s
            await cl.wait_ack(m.sim.seq.next - 1)
            assert len(set_times(rig, m.sim.device_id)) == 1
            cl.send(m.hello())  # a new boot without a clock
            await until(lambda: len(set_times(rig, m.sim.device_id)) == 2)

    run(main())


def test_an_unset_flag_on_a_frame_made_before_the_meter_took_its_set_time_is_stale(tmp_path, store_db):
    # the meter's outbox held two hellos from before its clock was set (a boot, then a restart); the second
    # arrives after the meter answered the set-time: its unset flag is history, not a new boot to set again
    async def main():
        async with LoopbackRig(store_db, clock_set_every_s=600.0) as rig:
            m, cl = await _booted_unset(tmp_path, rig)
            late_hello = m.hello()  # made before the set, sent after the answer
            m.unset = False
            cl.send(m.sim.response(cl.commands[0].counter, 0, "set"))
            await until(lambda: set_times(rig, m.sim.device_id)[0].state == "answered")
            cl.send(late_hello)
            await cl.wait_ack(m.sim.seq.next - 1)  # alone in its batch: nothing newer says the clock is set
            rig.conc.tick()
            assert len(set_times(rig, m.sim.device_id)) == 1, set_times(rig, m.sim.device_id)
            m.unset, m.booted = True, rig.clock()
            cl.send(m.hello())  # a new boot after the answer: set again at once
            await until(lambda: len(set_times(rig, m.sim.device_id)) == 2)

    run(main())


def test_an_unset_meters_other_commands_wait_and_its_set_time_goes_first(tmp_path, store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = Meter(tmp_path, rig, unset=True)
            rig.register(m.sim)
            with open_store(rig.db_path) as s:
                reset = C.queue(s, m.sim.device_id, M.OP_BILLING_RESET, None, rig.clock())
            cl = await rig.connect(m.sim)
            cl.send(m.hello())
            await cl.wait_for(lambda c: c.commands)
            assert [c.body[M.K_OP] for c in cl.commands] == [M.OP_SET_TIME], "the meter would refuse the reset"
            rig.conc.tick()
            assert len(cl.commands) == 1 and rig.store.queued_commands(ids=[reset])[0].state == "queued"
            m.unset = False  # it set its clock: its answer says so (no ST_CLOCK_NOT_SET)
            cl.send(m.sim.response(cl.commands[0].counter, 0, "set; expiry not checked: the clock was not set"))
            await cl.wait_for(lambda c: len(c.commands) == 2)
            assert cl.commands[1].body[M.K_OP] == M.OP_BILLING_RESET, "now the queue goes on"

    run(main())


def test_set_time_commands_the_meter_refuses(tmp_path):
    """Expired, forged, replayed: the firmware's own check refuses each, with or without a clock."""
    ident = Identity(str(tmp_path / "flash"))
    he = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    ident.install_headend(he.public_bytes)
    dev = ident.device_id
    args = {M.A_UTC: T0, M.A_FORCE: False}
    ok = he.sign_command(dev, 5, M.OP_SET_TIME, args, T0, 300)
    assert M.verify_host(ok, ident, T0 + 300, 4)[1] == 5

    def refused(cose: bytes, now: int | None, last: int = 4) -> str:
        with pytest.raises(M.HostMessageError) as e:
            M.verify_host(cose, ident, now, last)
        return e.value.reason

    assert refused(ok, T0 + 301) == "expired"
    forger = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    assert refused(forger.sign_command(dev, 6, M.OP_SET_TIME, args, T0, 300), None) == "unknown-kid"
    payload = mcbor.encode({M.K_KIND: M.COMMAND, M.K_DEVICE: dev, M.K_COUNTER: 6, M.K_ISSUED: T0,
                            M.K_EXPIRES: T0 + 300, M.K_OP: M.OP_SET_TIME, M.K_ARGS: args})
    forged = P.sign1(forger.private_key, he.key_id, payload)  # under the head-end's kid
    assert refused(forged, None) == "bad-signature"
    assert refused(ok, None, last=5) == "replay", "without a clock the counter still has to be fresh"
    other = he.sign_command(b"\x01" * 8, 9, M.OP_SET_TIME, args, T0, 300)
    assert refused(other, None) == "wrong-device"


def test_status_shows_each_meters_clock(tmp_path, capsys):
    path = tmp_path / "head.db"
    keys = [P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key()) for _ in range(3)]
    with SQLiteStore(path) as s:
        for name, k in zip(("a-fast", "c-new", "d-unset"), keys, strict=True):
            s.register_meter(None, k, name)
        s.update_meter(P.key_id(keys[0]), clock_drift_s=12.4, clock_drift_at=T0)
        s.add_frames([Frame(P.key_id(keys[2]), 0, M.HELLO, 5, M.ST_CLOCK_NOT_SET, b"hello")], T0)
        s.commit()
        rows = {r["name"]: r for r in status.fleet_status(s, now=T0)}
    assert rows["a-fast"]["clock"] == "+12 s" and rows["a-fast"]["clock_drift_s"] == 12.4
    assert rows["c-new"]["clock"] == "-" and rows["c-new"]["clock_set"] is None
    assert rows["d-unset"]["clock"] == "not set" and rows["d-unset"]["clock_set"] is False
    text = status.format_status(list(rows.values()))
    assert text.splitlines()[0].split()[-3] == "clock" and "not set" in text and "+12 s" in text


def test_migration_v3_to_v4_adds_the_drift_columns(tmp_path):
    path = tmp_path / "old.db"
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    dev = P.key_id(point)
    assert old_database(path, 3, ("INSERT INTO meters (device, public_key, name, provisioned_at) VALUES "
                                  "(?, ?, ?, ?)", (dev, point, "house", 1.0))) == [1, 2, 3]
    with SQLiteStore(path) as s:
        assert s.migrated == [4, 5, 6, 7, 8, 9]
        m = s.meter(dev)
        assert (m.name, m.clock_drift_s, m.clock_drift_at) == ("house", None, None)
        s.update_meter(dev, clock_drift_s=-3.5, clock_drift_at=2.0)
        s.commit()
        assert [tuple(r) for r in sql(s, "SELECT clock_drift_s, clock_drift_at FROM meters")] == [(-3.5, 2.0)]


def test_cli_set_time_queues_the_force_flag_only(tmp_path, capsys, monkeypatch):
    path = tmp_path / "head.db"
    point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    with SQLiteStore(path) as s:
        s.register_meter(None, point, "house")
    monkeypatch.setattr(C, "clock", lambda: float(T0))
    assert cli.main(["command", "set-time", "--db", str(path), "--meter", "house"]) == 0
    assert cli.main(["command", "set-time", "--db", str(path), "--meter", "house", "--force"]) == 0
    out = capsys.readouterr().out
    assert "set the clock to the concentrator's (force: beyond 900 s too)" in out
    with SQLiteStore(path, create=False, readonly=True) as s:
        assert [(q.op, q.args) for q in s.queued_commands()] == [(M.OP_SET_TIME, {M.A_FORCE: False}),
                                                                 (M.OP_SET_TIME, {M.A_FORCE: True})]
    assert cli.main(["command", "list", "--db", str(path)]) == 0
    assert "set-time" in capsys.readouterr().out
    assert cli.main(["command", "set-time", "--db", str(path), "--meter", "nobody"]) == 2


def test_clock_settings_are_checked():
    with pytest.raises(ValueError, match="clock_drift_max_s must be above 0"):
        ConcentratorConfig(clock_drift_max_s=0)
    with pytest.raises(ValueError, match="clock_jitter_s must be at least 0"):
        ConcentratorConfig(clock_jitter_s=-1)
    assert ConcentratorConfig(clock_drift_max_s=None).clock_drift_max_s is None
