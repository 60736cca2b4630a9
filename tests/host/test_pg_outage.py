"""PostgreSQL down at start, and lost mid-run, under a real concentrator with meters (issue 13, "Bad input";
docs/concentrator.md, "When PostgreSQL is down").

The tests stop and start their server, so they have one of their own (a module's), not the session's. At
start, `meterkit concentrator` says which server it cannot reach (no password), tries again, listens for meters
only once the database answers, and serves them then. Mid-run (fast shutdown, or SIGKILL of the postmaster while
meters send), nothing is acknowledged that is not stored, the concentrator keeps running, and when the server
is back the frames the meters send again are stored exactly once under acknowledgements that verify.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterkit import wire as P
from meterkit.cli import main as meterkit_main
from meterkit.headend import commands
from meterkit.store import StoreUnavailable, open_store
from meterkit.testing.pgplugin import pg_missing
from meterkit.testing.pgserver import PgServer, PgUnavailable
from meterkit.testing.rig import LoopbackRig, MeterClient, SimMeter, until
from meterkit.wire.keys import load_private, new_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_pg():
    """A server these tests may stop, kill and start again (left running after each test)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pg_missing("psycopg is not installed (pip install -e .)")
    try:
        server = PgServer().start()
    except PgUnavailable as e:
        pg_missing(str(e))
    try:
        yield server
    finally:
        server.stop()


def _durable_database(pg: PgServer) -> str:
    """A new database whose commits are durable once confirmed, as on a production server: the test server's
    synchronous_commit=off (meterkit.testing.pgserver, fast) loses the last commits it confirmed when the
    postmaster is SIGKILLed, acknowledged frames among them (this test caught that: docs/concentrator.md).
    fsync may stay off: a killed process loses nothing the kernel holds."""
    import psycopg

    url = pg.create_database()
    with psycopg.connect(pg.url("postgres"), autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET synchronous_commit = on')
    with psycopg.connect(url) as c:
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    return url


def _running(pg: PgServer) -> None:
    if not (pg.data / "postmaster.pid").exists():
        pg.resume()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'host'}{os.pathsep}{ROOT / 'firmware'}"}


def _waits_then_serves(pg: PgServer, cmd: list[str], url: str, m: SimMeter, key_path: Path) -> None:
    """The default waits: a line per attempt, which server, no password, no traceback; meters refused until the
    server is started, then served."""
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--listen", f"127.0.0.1:{port}", "--stats-every", "3600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        lines = []
        while sum("trying again" in ln for ln in lines) < 2:
            lines.append(proc.stderr.readline())
            assert lines[-1], f"the concentrator ended: {''.join(lines)}"
        text = "".join(lines)
        where = url.rsplit("/", 1)[0].replace("postgresql://", "")  # meterkit@127.0.0.1:port
        assert f"postgresql://{where}/" in text and "server unreachable" in text, text
        assert "s3cret" not in text and "Traceback" not in text, text
        assert "(attempt 2)" in text and "meters are not served" in text, text
        assert _refused(port)  # the listener opens only with the database
        pg.resume()
        t_back = time.monotonic()
        line = proc.stdout.readline()
        assert line == f"listening on 127.0.0.1:{port}\n", line
        print(f"\nlistening {time.monotonic() - t_back:.2f} s after the server was started")

        async def meter():
            he = P.HeadEnd(load_private(key_path))
            cl = await MeterClient.connect(m, "127.0.0.1", port, he.lookup)
            for _ in range(3):
                cl.send(m.reading())
            await cl.wait_ack(2)
            assert cl.refused == []
            cl.close()

        asyncio.run(asyncio.wait_for(meter(), 30))
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest, rest


def test_concentrator_started_while_postgresql_is_down_waits_for_it_then_serves(own_pg, tmp_path, capsys):
    pg = own_pg
    url = pg.create_database()
    with_password = url.replace("meterkit@", "meterkit:s3cret@")  # trust authentication: never asked for
    m = SimMeter()
    s = open_store(url)
    s.register_meter(None, m.public_key, "waits")
    s.close()
    key_path, _, _ = new_key(tmp_path / "keys")
    cmd = [sys.executable, "-m", "meterkit.cli", "concentrator", "--db", with_password, "--key", str(key_path)]
    # a server that answers and refuses, a URL that cannot be read: no waiting (a bounded one, were it wrong)
    for db in (url.rsplit("/", 1)[0] + "/no_such_db", "postgresql://meterkit@127.0.0.1:notaport/x"):
        assert meterkit_main(["concentrator", "--db", db, "--key", str(key_path), "--listen", "127.0.0.1:0",
                              "--db-wait", "5"]) == 2
        err = capsys.readouterr().err
        assert "cannot connect" in err and "trying again" not in err, err
    pg.halt()
    try:
        # other commands: the same clear error, at once
        assert meterkit_main(["status", "--db", with_password]) == 2
        err = capsys.readouterr().err
        assert "server unreachable" in err and "Connection refused" in err and "s3cret" not in err, err
        # a bounded wait runs out: exit code 3, after saying so
        assert meterkit_main([*cmd[3:], "--listen", "127.0.0.1:0", "--db-wait", "0.5"]) == 3
        err = capsys.readouterr().err
        assert "server unreachable" in err and "--db-wait" in err and "s3cret" not in err, err
        assert re.search(r"gave up after \d+ attempts", err), err
        _waits_then_serves(pg, cmd, url, m, key_path)
        s = open_store(url)
        assert [f.seq for f in s.frames_after(m.device_id, -1, limit=None)] == [0, 1, 2]
        s.close()
    finally:
        _running(pg)


def test_a_transaction_lost_with_its_connection_never_goes_on_on_a_new_one(own_pg):
    """The store's side: a restart of the server between two statements of one transaction fails the rest of it
    and its commit (nothing of it stored); then the store reconnects by itself, and a read outside a transaction
    on the dead connection is simply run again on a new one."""
    pg = own_pg
    s = open_store(_durable_database(pg))
    try:
        s.add_counters({"before": 1})
        s.commit()
        s.add_counters({"lost": 1})  # a transaction is open ...
        pg.halt()
        pg.resume()  # ... and its connection died with the server
        with pytest.raises(StoreUnavailable, match="connection lost"):
            s.add_counters({"lost": 2})
        with pytest.raises(StoreUnavailable, match="connection lost"):
            s.counters()  # a read in the lost transaction too
        with pytest.raises(StoreUnavailable, match="rolled back"):
            s.commit()
        s.rollback()
        s.add_counters({"after": 1})
        s.commit()
        pg.halt()
        pg.resume()
        assert s.counters() == {"before": 1, "after": 1}  # once more on a new connection: no error
    finally:
        s.close()
        _running(pg)


class Resender:
    """A meter's link as the firmware runs it, in miniature: every frame kept until acknowledged, and after each
    (re)connection everything unacknowledged sent again, oldest first. Every head-end message is verified as a
    meter must (MeterClient); the command counter carries over between connections."""

    def __init__(self, rig: LoopbackRig, meter: SimMeter):
        self.rig, self.m = rig, meter
        self.frames: dict[int, bytes] = {}
        self.acked = -1
        self.acks: list[int] = []  # every acknowledgement received, in order
        self.refused: list[str] = []
        self.commands: list[P.Message] = []
        self.client: MeterClient | None = None
        self.last_counter = 0
        self.held = False  # neither connect nor send (while the test looks at the database)
        self.connects = 0

    def make(self) -> None:
        seq = self.m.seq.next
        self.frames[seq] = self.m.reading()
        if self._up():
            self.client.send(self.frames[seq])

    def _up(self) -> bool:
        return not self.held and self.client is not None and not self.client.closed.is_set()

    def _collect(self) -> None:
        cl = self.client
        if cl is not None:
            self.acks += cl.acks
            self.refused += cl.refused
            self.commands += cl.commands
            cl.acks, cl.refused, cl.commands = [], [], []
            self.last_counter = max(self.last_counter, cl.last_counter)
            if self.acks:
                self.acked = max(self.acked, max(self.acks))

    async def run(self) -> None:
        while True:
            self._collect()
            if self.held or self._up():
                await asyncio.sleep(0.01)
                continue
            try:
                self.client = await self.rig.connect(self.m, last_counter=self.last_counter)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.connects += 1
            for seq in sorted(self.frames):
                if seq > self.acked:
                    self.client.send(self.frames[seq])


class Fleet:
    """Resenders making a reading every 10 ms each while `making`; held: they neither connect nor send."""

    def __init__(self, rig: LoopbackRig, n: int):
        self.meters = [Resender(rig, SimMeter()) for _ in range(n)]
        rig.register(*(r.m for r in self.meters))
        self.making = True
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(r.run()) for r in self.meters] + [loop.create_task(self._produce())]

    async def _produce(self) -> None:
        while True:
            if self.making:
                for r in self.meters:
                    r.make()
            await asyncio.sleep(0.01)

    def hold(self, held: bool) -> None:
        for r in self.meters:
            r.held = held
            r._collect()

    def made(self) -> int:
        return sum(len(r.frames) for r in self.meters)

    def acked_all(self, upto: dict[bytes, int]) -> bool:
        return all(r.acked >= upto[r.m.device_id] for r in self.meters)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.hold(False)


def _stored(store, dev: bytes) -> list[int]:
    return [f.seq for f in store.frames_after(dev, -1, limit=None)]


def _readings(store, dev: bytes) -> list[int]:
    cols, rows = store.export("readings", dev)
    i = cols.index("seq")
    return sorted(r[i] for r in rows)


async def _outage(pg: PgServer, how: str, rig: LoopbackRig, fleet: Fleet) -> dict[bytes, int]:
    """Stop the server under the sending meters, let batches fail, hold the meters; returns what each meter
    had acknowledged then (the server is still down)."""
    await asyncio.to_thread(pg.kill if how == "kill-9" else pg.halt)  # the meters go on sending meanwhile
    rig.clock.advance(600)  # silent for 10 periods: the housekeeping tries to open outages
    await until(lambda: rig.conc.counters.get("commit_failures") >= 3, 20)
    await asyncio.sleep(0.3)
    fleet.making = False
    fleet.hold(True)
    await asyncio.sleep(0.3)  # what arrived is handled (and fails)
    fleet.hold(True)
    return {r.m.device_id: r.acked for r in fleet.meters}


def _nothing_acknowledged_is_missing(url: str, acked: dict[bytes, int]) -> None:
    with open_store(url) as look:
        for dev, w in acked.items():
            missing = sorted(set(range(w + 1)) - set(_stored(look, dev)))
            assert missing == [], f"{dev.hex()}: acknowledged up to {w}, not stored: {missing}"


def _all_stored_once(rig: LoopbackRig, fleet: Fleet) -> None:
    conc, store = rig.conc, rig.store
    for r in fleet.meters:
        dev, n = r.m.device_id, r.m.seq.next
        assert r.refused == [], f"{dev.hex()} refused {r.refused}"
        assert _stored(store, dev) == list(range(n))  # (device, seq) is the key: each once
        assert _readings(store, dev) == list(range(n))
        assert store.meter(dev).ack_seq == n - 1 == conc.devices.get(dev).seqs.ack
        assert r.connects >= 2  # it was cut off and came back


@pytest.mark.parametrize("how", ["fast-shutdown", "kill-9"])
def test_postgresql_lost_mid_run_no_ack_ahead_of_the_database_and_every_frame_stored_once(own_pg, how, caplog):
    pg = own_pg
    url = _durable_database(pg)
    caplog.set_level(logging.WARNING, logger="meterkit")

    async def main():
        loop = asyncio.get_running_loop()
        unhandled: list[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
        rig = await LoopbackRig(url, tick_s=0.05).start()
        fleet = Fleet(rig, 4)
        try:
            await until(lambda: all(r.acked >= 10 for r in fleet.meters), 20)
            acked = await _outage(pg, how, rig, fleet)
            pending = {r.m.device_id: r.m.seq.next - 1 for r in fleet.meters}
            await asyncio.to_thread(pg.resume)
            t_back = time.monotonic()
            _nothing_acknowledged_is_missing(url, acked)  # before any meter sends again
            with open_store(url) as s:  # the dispatch delivers a command queued now
                commands.queue(s, fleet.meters[0].m.device_id, commands.OP_BILLING_RESET, None, rig.clock())
            fleet.hold(False)
            await until(lambda: fleet.acked_all(pending), 30)
            recovered_s = time.monotonic() - t_back
            fleet.making = True  # and then new frames as before
            await asyncio.sleep(0.3)
            fleet.making = False
            last = {r.m.device_id: r.m.seq.next - 1 for r in fleet.meters}
            await until(lambda: fleet.acked_all(last) and fleet.meters[0].commands, 30)
            await fleet.stop()
            _all_stored_once(rig, fleet)
            assert not rig.conc._house.done(), "the housekeeping task died"
            assert unhandled == []
            resent = sum(pending.values()) - sum(acked.values())
            print(f"\n{how}: {fleet.made()} frames; {resent} unacknowledged when the server went, "
                  f"{rig.conc.counters.get('commit_failures')} batches failed; those {resent} stored once and "
                  f"acknowledged {recovered_s:.2f} s after the server was back")
        finally:
            await fleet.stop()
            await rig.stop()

    _run(pg, main, caplog)
    text = caplog.text
    assert "connection lost" in text and "connected again" in text


def _run(pg: PgServer, main, caplog) -> None:
    """Run the test's main() with the server left running after it, and no traceback logged: a lost database
    is said in one line wherever it is found (ingest, housekeeping, the dispatch)."""
    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        _running(pg)
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("meterkit")]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


def test_a_meter_not_met_yet_while_the_database_is_down_is_neither_refused_nor_lost(own_pg, caplog):
    """Its key is not cached, and cannot be read: not the meter's fault. Its connection is closed unacknowledged
    (no reject, no "internal-error"), and once the server is back the same frames are stored and acknowledged
    at once (not taken for an unknown key for registry_refresh_s)."""
    pg = own_pg
    url = _durable_database(pg)
    caplog.set_level(logging.WARNING, logger="meterkit")

    async def main():
        rig = await LoopbackRig(url, tick_s=0.05, registry_refresh_s=60.0).start()  # as in production: not 0
        m = SimMeter()
        try:
            rig.register(m)  # after the start: the concentrator has not read its key
            await asyncio.to_thread(pg.halt)
            frames = [m.reading() for _ in range(3)]
            cl = await rig.connect(m)
            for f in frames:
                cl.send(f)
            await asyncio.wait_for(cl.closed.wait(), 20)
            assert (cl.acks, cl.refused) == ([], [])
            assert rig.conc.counters.get("rejected") == 0
            assert rig.conc.counters.get("commit_failures") >= 1
            await asyncio.to_thread(pg.resume)
            for _ in range(50):  # as a meter does: connect and send again until acknowledged (the store's
                cl = await rig.connect(m)  # reconnect may wait out its pause first)
                for f in frames:
                    cl.send(f)
                await until(lambda c=cl: c.closed.is_set() or c.acks and max(c.acks) >= 2, 20)
                if cl.acks and max(cl.acks) >= 2:
                    break
            assert cl.refused == [] and rig.conc.counters.get("rejected") == 0
            assert _stored(rig.store, m.device_id) == [0, 1, 2]
            cl.close()
        finally:
            await rig.stop()

    _run(pg, main, caplog)
    assert "its key cannot be read" in caplog.text
