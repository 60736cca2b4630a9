"""Bad input at the concentrator: garbage, half frames, silent peers, floods, forgeries, frames of unknown or
other meters, values beyond what SQLite holds. Each is counted (stats(), table rejects) and logged, and the
concentrator keeps serving a well-behaved meter that reports all along."""

from __future__ import annotations

import asyncio
import random
import zlib

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import messages as M
from meter.frame import cobs_encode, encode_frame
from meterkit import wire as P
from meterkit.testing.rig import LoopbackRig, SimMeter, until
from meterkit.testing.sqlfile import sql


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def raw_frame(body: bytes) -> bytes:
    """Anything, framed with a correct CRC: it passes the deframer and must be refused by verification."""
    return b"\x00" + bytes(cobs_encode(body + zlib.crc32(body).to_bytes(4, "little"))) + b"\x00"


class GoodMeter:
    """A meter that keeps reporting while the others misbehave; every frame must be stored and acked."""

    def __init__(self, rig: LoopbackRig):
        self.rig = rig
        self.meter = SimMeter(time_fn=lambda: int(rig.clock()))
        rig.register(self.meter)
        self.sent = 0

    async def start(self) -> None:
        self.client = await self.rig.connect(self.meter)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.client.send(self.meter.reading())
            self.sent += 1
            await asyncio.sleep(0.01)

    async def finish(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self.client.wait_ack(self.sent - 1)
        assert self.client.refused == []
        assert self.rig.store.seqs_above(self.meter.device_id, -1) == list(range(self.sent))


async def connect_raw(rig: LoopbackRig):
    return await asyncio.open_connection(rig.host, rig.port)


async def hung_up(reader: asyncio.StreamReader) -> bool:
    """Read until the concentrator closes the connection (True), or the peer's reads fail."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


def test_garbage_half_frames_and_noise_are_counted_not_fatal(store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            good = GoodMeter(rig)
            await good.start()
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            rnd = random.Random(7)
            _, w = await connect_raw(rig)
            f = m.reading()
            corrupt = bytearray(m.reading())
            corrupt[len(corrupt) // 2] ^= 0x5A  # a bit error on the line: CRC fails, dropped as noise
            w.write(bytes(rnd.getrandbits(8) for _ in range(5000)))  # garbage (zeros included)
            w.write(b"\x00" + b"\x41" * 3000 + b"\x00")  # an oversized segment
            w.write(b"boot log text\r\n" + f + bytes(corrupt) + b"\x00\x00\x00")
            w.write(m.reading()[:40])  # half a frame, then the peer goes away
            await w.drain()
            await until(lambda: rig.store.seqs_above(m.device_id, -1) == [0])
            w.close()
            # a peer that sends half a frame and the rest later is fine
            _, w2 = await connect_raw(rig)
            f2 = m.reading()
            w2.write(f2[:25])
            await w2.drain()
            await asyncio.sleep(0.05)
            w2.write(f2[25:])
            await until(lambda: rig.store.seqs_above(m.device_id, -1) == [0, 3])
            w2.close()
            await good.finish()
            s = rig.conc.stats()
            assert s["noise_bytes"] >= 8000 and s["noise_segments"] >= 3 and s.get("rejected", 0) == 0
            rig.conc.tick()  # flushes the counts
            rows = {r.reason: r for r in rig.store.rejects()}
            assert rows["noise"].peer == "127.0.0.1" and rows["noise"].count >= 3

    run(main())


def test_silent_and_trickling_peers_are_closed(store_db):
    async def main():
        async with LoopbackRig(store_db, idle_timeout=0.3) as rig:
            r1, _w1 = await connect_raw(rig)  # says nothing
            r2, w2 = await connect_raw(rig)  # a byte of noise now and then: never a frame

            async def trickle():
                try:
                    while True:
                        w2.write(b"\x01")
                        await asyncio.sleep(0.05)
                except (ConnectionError, RuntimeError):
                    pass

            t = asyncio.get_running_loop().create_task(trickle())
            assert await asyncio.wait_for(hung_up(r1), 10)
            assert await asyncio.wait_for(hung_up(r2), 10)
            t.cancel()
            s = rig.conc.stats()
            assert s["idle_closed"] == 2 and s["rejects"]["idle-timeout"] == 2 and s["connections_open"] == 0

    run(main())


def test_noise_flood_is_cut_off_and_others_are_served(store_db):
    async def main():
        async with LoopbackRig(store_db, max_noise=64 * 1024, max_rate=None) as rig:
            good = GoodMeter(rig)
            await good.start()
            r, w = await connect_raw(rig)
            chunk = bytes(range(1, 256)) * 256  # 64 KiB without a delimiter
            try:
                for _ in range(64):  # 4 MiB offered
                    w.write(chunk)
                    await w.drain()
            except ConnectionError:
                pass
            assert await asyncio.wait_for(hung_up(r), 10)
            await good.finish()
            s = rig.conc.stats()
            assert s["rejects"]["noise-flood"] == 1 and s["noise_bytes"] >= 64 * 1024
            assert s["noise_bytes"] < 4 * 1024 * 1024  # cut off, not read to the end

    run(main())


def test_forgeries_and_frames_of_other_meters(store_db, caplog):
    async def main():
        async with LoopbackRig(store_db, max_rejects=20) as rig:
            good = GoodMeter(rig)
            await good.start()
            a = SimMeter(time_fn=lambda: int(rig.clock()))
            b = SimMeter(time_fn=lambda: int(rig.clock()))
            stranger = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(a, b)
            payload = mcbor.encode({1: M.READING, 2: a.device_id, 3: 0, 4: int(rig.clock()), 5: 0,
                                    6: {10800: 10**9, 20800: 0}, 7: [0, 0, 0], 8: 0})
            # a's id and payload, signed with b's key: the signature does not verify for a's key
            forged = encode_frame(P.sign1(b.key, a.device_id, payload))
            # a's payload signed properly by b under b's own kid: the payload claims another meter
            mismatch = encode_frame(P.sign1(b.key, b.device_id, payload))
            t = int(rig.clock())
            # an acknowledgement is a head-end message: from a meter's key it is the wrong kind
            ack_like = encode_frame(P.sign1(a.key, a.device_id, mcbor.encode({1: M.ACK, 2: a.device_id, 3: 1, 4: t,
                                                                              9: t + 60, 12: 99})))
            not_cose = raw_frame(cbor2.dumps({"hello": "world"}))
            cl = await rig.connect(a)
            cl.send(forged + mismatch + stranger.reading() + ack_like + not_cose)
            await until(lambda: rig.conc.stats().get("rejected", 0) == 5)
            cl.send(a.reading(import_wh=5, seq=0))  # the real frame 0 of a is still welcome
            await cl.wait_ack(0)
            sig = bytearray(a.cose(M.READING, 0, {6: {10800: 1, 20800: 0}, 7: [0, 0, 0], 8: 0}))
            sig[-1] ^= 1
            spam = await rig.connect(a)
            spam.send(encode_frame(bytes(sig)) * 100)  # a forgery flood: hung up on after max_rejects
            await asyncio.wait_for(spam.closed.wait(), 10)
            await good.finish()
            s = rig.conc.stats()
            rej = s["rejects"]
            assert rej["bad-signature"] >= 21 and rej["bad-signature"] < 100
            assert rej["kid-mismatch"] == 1 and rej["unknown-kid"] == 1 and rej["wrong-kind"] == 1
            assert rej["not-sign1"] == 1 and s["closed_abusive"] == 1
            assert rig.store.seqs_above(a.device_id, -1) == [0] and rig.store.seqs_above(b.device_id, -1) == []
            rig.conc.tick()
            rows = {(r.reason, r.device_id): r.count for r in rig.store.rejects()}
            assert rows[("bad-signature", a.device_id)] >= 21
            assert rows[("kid-mismatch", b.device_id)] == 1
            assert rows[("unknown-kid", b"")] == 1  # no registered meter: per source, the kid in the detail
            assert ("unknown-kid", stranger.device_id) not in rows
            assert rows[("not-sign1", b"")] == 1
        assert "kid-mismatch" in caplog.text and "unknown-kid" in caplog.text

    run(main())


def test_rate_limit_pauses_a_fast_peer_without_losing_frames(store_db):
    async def main():
        async with LoopbackRig(store_db, max_rate=32 * 1024, max_burst=4096) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            cl = await rig.connect(m)
            cl.send(b"".join(m.reading() for _ in range(200)))  # ~30 KiB at once
            await cl.wait_ack(199, timeout=20)
            assert rig.conc.stats()["rate_limited"] >= 1
            assert rig.store.seqs_above(m.device_id, -1) == list(range(200))

    run(main())


def test_numbers_beyond_sqlite_integers(store_db):
    async def main():
        async with LoopbackRig(store_db) as rig:
            m = SimMeter(time_fn=lambda: int(rig.clock()))
            rig.register(m)
            cl = await rig.connect(m)
            cl.send(m.reading(import_wh=2**64 - 1, export_wh=3))  # valid per the CDDL (uint64)
            await cl.wait_ack(0)
            row = sql(rig.store, "SELECT import_wh, export_wh, registers FROM readings")[0]
            assert (row[0], row[1]) == (None, 3) and str(2**64 - 1) in row[2]  # exact in the JSON and the raw
            raw = rig.store.frame_raw(m.device_id, 0)
            key = P.public_from_bytes(m.public_key)
            assert P.verify_and_decode(raw, {m.device_id: key}.get).body[6][10800] == 2**64 - 1
            cl.send(m.reading(seq=2**63))  # a sequence number SQLite cannot key
            await until(lambda: rig.conc.stats()["rejects"].get("seq-range") == 1)
            cl.send(m.reading(seq=1))
            await cl.wait_ack(1)

    run(main())


def test_unregistered_key_types_never_reach_the_verifier(store_db):
    # a P-384 key in the registry would be a programming error: registration refuses it
    async def main():
        async with LoopbackRig(store_db) as rig:
            k = ec.generate_private_key(ec.SECP384R1())
            try:
                rig.store.register_meter(None, k.public_key())
            except (ValueError, TypeError):
                refused = True
            else:
                refused = False
            assert refused and rig.store.meters() == []

    run(main())
