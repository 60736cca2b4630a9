"""The test rig: simulated meters and a concentrator on loopback, shared by the tests and `meterkit bench`.

SimMeter signs with `cryptography` (RFC 6979: the very bytes meter.cose.sign1 makes) or, given a firmware
Identity, with the meter's own code (meter.identity + meter.messages.Builder). MeterClient is a meter's link in
miniature: it sends frames, verifies every acknowledgement and command the way a meter must
(wire.verify_host_message: head-end key, this device, counter increasing, not expired) and keeps them.
LoopbackRig is a concentrator on a database file serving 127.0.0.1 with a clock the caller sets (ManualClock).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from meter import cbor as mcbor
from meter import cose as mcose
from meter import messages as M
from meter.frame import Deframer, encode_frame
from meterkit import wire as P
from meterkit.store.records import NewMeter

T0 = 1_700_000_000


class _Seq:
    """A frame sequence source with take(), as meter.seqno.FrameSeq, that tests can steer."""

    def __init__(self, start: int = 0):
        self.next = start

    def take(self) -> int:
        n = self.next
        self.next = n + 1
        return n


class SimMeter:
    """A simulated meter: its key, its frame sequence and time, and the frames it makes.

    Without `identity`, a fresh P-256 key signed with `cryptography` (fast: thousands of meters). With a
    meter.identity.Identity, frames are built and signed by the firmware's own code (meter.messages.Builder).
    """

    def __init__(self, identity: Any = None, seq: int = 0, time_fn: Any = None, period_s: int = 60):
        self.seq = _Seq(seq)
        self.t = T0
        self.time_fn = time_fn or (lambda: self.t)
        self.period_s = period_s
        self.identity = identity
        if identity is None:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.public_key = P.public_bytes(self.key.public_key())
            self.device_id = P.key_id(self.public_key)
            self.builder = None
        else:
            self.key = None
            self.public_key = bytes(identity.public_key)
            self.device_id = identity.device_id
            self.builder = M.Builder(identity, self.seq, self.time_fn)
        self.energy_wh = 0

    def cose(self, kind: int, status: int, body: dict, seq: int | None = None) -> bytes:
        """The signed COSE_Sign1 of one message (seq: a given sequence number instead of the next one)."""
        if seq is not None:
            saved, self.seq.next = self.seq.next, seq
        try:
            if self.builder is not None:
                return self.builder.cose(kind, status, body)[1]
            payload = {M.K_KIND: kind, M.K_DEVICE: self.device_id, M.K_SEQ: self.seq.take(), M.K_TIME: self.time_fn(),
                       M.K_STATUS: status}
            payload.update(body)
            return P.sign1(self.key, self.device_id, mcbor.encode(payload))
        finally:
            if seq is not None:
                self.seq.next = max(saved, seq + 1)

    def frame(self, kind: int, status: int, body: dict, seq: int | None = None) -> bytes:
        return encode_frame(self.cose(kind, status, body, seq))

    # message shapes a meter sends
    def hello(self, status: int = 0, boots: int = 1, seq: int | None = None) -> bytes:
        return self.frame(M.HELLO, status, M.hello_body("meterkit-0.1", "unix-sim", boots, 68630, 992249,
                                                                100000, 10), seq)

    def reading(self, import_wh: int | None = None, export_wh: int = 0, status: int = 0,
                seq: int | None = None) -> bytes:
        if import_wh is None:
            self.energy_wh += 7
            import_wh = self.energy_wh
        body = {M.K_REGISTERS: {M.OBIS_IMPORT: import_wh, M.OBIS_EXPORT: export_wh}, M.K_INSTANT: [1500, 12000, 125],
                M.K_UNCOVERED_PPM: 0}
        return self.frame(M.READING, status, body, seq)

    def intervals(self, rows: list[list[int]], period_s: int = 900, seq: int | None = None) -> bytes:
        return self.frame(M.INTERVALS, 0, M.intervals_body(rows, period_s), seq)

    def event(self, code: int, value: int | str, event_time: int, event_seq: int = 0, status: int = 0,
              seq: int | None = None) -> bytes:
        return self.frame(M.EVENT, status, M.event_body(event_seq, code, value, event_time), seq)

    def response(self, counter: int, result: int, reason: str | None = None, seq: int | None = None) -> bytes:
        return self.frame(M.RESPONSE, 0, M.response_body(counter, result, reason), seq)


class MeterClient(asyncio.Protocol):
    """A meter's TCP link in miniature: sends frames, checks every head-end message as a meter must."""

    def __init__(self, meter: SimMeter, headend_lookup: Any, now: Any = None, verify: bool = True):
        self.meter = meter
        self.lookup = headend_lookup
        self.now = now or (lambda: int(time.time()))
        self.verify = verify
        self.deframer = Deframer()
        self.transport: Any = None
        self.last_counter = 0
        self.acks: list[int] = []  # ack_seq of every acknowledgement, in order
        self.commands: list[P.Message] = []
        self.refused: list[str] = []  # reasons for head-end messages this meter would refuse
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    @classmethod
    async def connect(cls, meter: SimMeter, host: str, port: int, headend_lookup: Any,
                      source: str | None = None, tls: Any = None, server_name: str | None = None,
                      **kw: Any) -> MeterClient:
        """source: the local address to connect from (any of 127.0.0.0/8 on loopback: meters at other addresses);
        tls: an ssl.SSLContext to speak TLS with, checking the head-end's certificate for `server_name`."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(meter, headend_lookup, **kw), host, port,
                                                local_addr=(source, 0) if source else None, ssl=tls,
                                                server_hostname=server_name if tls is not None else None)
        return proto

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for cose in self.deframer.feed(data):
            if self.verify:
                try:
                    m = P.verify_host_message(cose, self.lookup, self.meter.device_id, self.now(), self.last_counter)
                except P.ProtocolError as e:
                    self.refused.append(e.reason)
                    continue
                self.last_counter = m.counter
                if m.kind == M.ACK:
                    self.acks.append(m.body[M.K_ACK_SEQ])
                else:
                    self.commands.append(m)
            else:  # the bench: just read key 12 (the signature costs the concentrator, not the meter)
                payload = cbor2.loads(mcose.split(cose, P.MAX_HOST_MESSAGE)[2])
                if payload[M.K_KIND] == M.ACK:
                    self.acks.append(payload[M.K_ACK_SEQ])
        self._changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._changed.set()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def acked(self) -> int | None:
        return max(self.acks) if self.acks else None

    async def wait_for(self, cond: Any, timeout: float = 10.0) -> None:
        """Wait until cond(self) is true (TimeoutError after `timeout` s)."""
        async def _wait() -> None:
            while not cond(self):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)

    async def wait_ack(self, seq: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda c: c.acked is not None and c.acked >= seq, timeout)


class ManualClock:
    """An injectable clock that moves only when told to."""

    def __init__(self, t: float = T0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class LoopbackRig:
    """A Concentrator on a database file, serving 127.0.0.1 on a free port, with a manual clock.

    restart() stops it and starts a new Concentrator on the same file (what a head-end restart does).
    """

    def __init__(self, db_path: str | os.PathLike, headend: P.HeadEnd | None = None, clock: Any = None,
                 synchronous: str = "FULL", **conc_kw: Any):
        self.db_path = db_path
        self.headend = headend or P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
        self.clock = clock if clock is not None else ManualClock()
        self.synchronous = synchronous
        self.conc_kw = {"tick_s": 3600.0, "registry_refresh_s": 0.0, **conc_kw}
        self.store: Any = None
        self.conc: Any = None
        self.host, self.port = "127.0.0.1", 0

    async def start(self, **conc_kw: Any) -> LoopbackRig:
        from meterkit.headend.concentrator import Concentrator
        from meterkit.store import open_store

        self.store = open_store(self.db_path, synchronous=self.synchronous)
        self.conc = Concentrator(self.store, self.headend, clock=self.clock, **{**self.conc_kw, **conc_kw})
        self.host, self.port = await self.conc.start_tcp("127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.conc is not None:
            await self.conc.stop()
            self.conc = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def restart(self, **conc_kw: Any) -> LoopbackRig:
        await self.stop()
        return await self.start(**conc_kw)

    def register(self, *meters: SimMeter, period_s: int | None = None) -> None:
        self.store.register_meters([NewMeter(m.public_key, None, period_s or m.period_s) for m in meters])

    async def connect(self, meter: SimMeter, last_counter: int = 0, via: tuple[str, int] | None = None,
                      **kw: Any) -> MeterClient:
        """A meter's connection to the concentrator, or to `via` (a load balancer in front of it)."""
        host, port = via or (self.host, self.port)
        cl = await MeterClient.connect(meter, host, port, self.headend.lookup, now=lambda: int(self.clock()), **kw)
        cl.last_counter = last_counter
        return cl

    async def __aenter__(self) -> LoopbackRig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def until(cond: Any, timeout: float = 10.0, step: float = 0.005) -> None:
    """Poll cond() on the running loop until it is true (TimeoutError after `timeout` s)."""
    async def _poll() -> None:
        while not cond():
            await asyncio.sleep(step)
    await asyncio.wait_for(_poll(), timeout)
