"""The concentrator: meters in over TCP and serial, signed frames verified, stored once, acknowledged.

    Concentrator(store, headend, clock=time.time, offline_after=3, ...)
    await c.start(listen=[("0.0.0.0", 4840)], serial=["/dev/ttyUSB0"]);  ...;  await c.stop()
    meterkit concentrator --db PATH [--listen HOST:PORT] [--serial PORT ...] --key HEADEND.key.pem

Every connection (a TCP peer, or one opening of a serial port) runs the same pipeline:

  bytes -> meter.frame.Deframer (bounded: one frame buffer; noise counted)
        -> protocol.verify_and_decode(cose, registry)          unknown device, forgery... -> rejected, counted
        -> dedupe: ReplayGuard, then the database's PRIMARY KEY (device, seq) for anything the guard cannot
           tell; interval rows by (device, end time)
        -> store (one transaction per batch) -> commit -> cumulative ack on the same connection

Batches. Received bytes are deframed at once; verification, storage and acknowledgement happen in a batch
that takes what every connection has pending (round-robin, at most `batch_frames`), stores it in one
transaction, commits, and only then signs one acknowledgement per (connection, meter) of the batch. A meter
that resends frames already stored (its ack was lost) is acknowledged again, so its outbox drains.

The acknowledgement. For each meter the head-end keeps the watermark W = ack key 12: the largest N such that
every sequence number from the first one it ever stored for that meter up to N is stored, or settled. A number
is settled when the meter answered a back-fill for it without sending it: result 0 ("everything resent":
numbers a restart skipped were never made) or -1 ("gone": its outbox dropped it). W never passes a hole that
is not settled: with 10, 11, 13 stored, the ack says 11. Every ack carries the meter's next command counter
(persisted in the same transaction as the batch, so counters keep increasing across restarts).

Gaps. A hole below a stored frame (newer frames arrived, an older one did not) is recorded at once; if it is
still open `backfill_after` seconds later (the meter's own resend after a reconnect had its chance), the
concentrator sends a back-fill command (op 1, args {1: first, 2: last}) on the meter's latest connection,
records it, and re-sends it if it expires unanswered (at most `backfill_attempts` times). A hole filled after a
back-fill counts as back-filled. Missing load-profile rows (interval end times with no row) are recorded as
interval gaps: 'open' while frames that could carry them are missing, 'filled' when they arrive, 'not-sent'
when every frame is accounted for (the meter made no row: it was off). When a frame between the neighbouring rows
is gone (back-fill answer -1: the meter's outbox dropped it), the rows may still be in the meter's load profile:
the gap is 'requested' from it by time (a queued profile command, op 4, note "interval gap N"), then 'filled'
when the rows arrive, or 'lost' when the request ended without them.

Operator commands (meterkit.headend.commands, table command_queue): sent to a meter while it is connected, one at a
time, each attempt with a fresh counter; the response is matched by counter. An unanswered attempt is repeated
only when it can no longer be answered on its own (its connection is gone, or its signed expiry passed) and the
meter has had `command_retry_after` seconds on its current connection with no frames missing: its outbox holds
the answer if it acted, so nothing runs twice. docs/concentrator.md, "Operator commands".

Outages (by the injected clock): a meter silent for more than reporting_period x offline_after is offline, an
outage starts at its last frame; its next frame ends it. The outage is matched to the meter's own evidence as
it arrives: frames flagged "power failure" (status bit 3, the hello after a restart) and POWER_UP events say
the meter lost power (power_up_at: its own time of the restart); frames whose meter time lies inside the
silence, sent later from the outbox, say the meter was alive and the link was down.

Bad input never stops the others: noise costs counters; every rejected frame is counted per device, peer and
reason (table rejects, stats()) and logged; a TCP peer that stays silent (no valid frame within
`idle_timeout`), floods noise (`max_noise` bytes without a valid frame), sends `max_rejects` rejected frames
or does not read its acknowledgements is disconnected; reading is rate limited per TCP peer (`max_rate`
bytes/s, token bucket) and paused while a connection has `backlog_limit` frames waiting (TCP backpressure).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from meter import events as mevents
from meter import messages as M
from meter.cose import claimed_kid
from meter.frame import Deframer, encode_frame
from meterkit import wire as P
from meterkit.headend import commands as opcmds
from meterkit.store.db import GAP_SETTLED, I64_MAX, I64_MIN, QUEUE_PENDING, Store, i64

log = logging.getLogger("meterkit.headend.concentrator")

OP_BACKFILL = 1
READ_BUFFER = 16 * 1024  # one recv per readiness event, shared by all connections (used synchronously)
LOG_REJECTS_PER_LINK = 10  # then only every LOG_EVERY-th, so a flood cannot flood the log
LOG_EVERY = 1000

_OBIS = {}  # key -> 'C.D.E' cache for register JSON


def _obis(k: int) -> str:
    s = _OBIS.get(k)
    if s is None:
        s = _OBIS[k] = M.obis_code(k)
    return s


_REGS_FMT: dict[tuple, str] = {}  # register key set -> JSON template (a meter sends the same set every time)


def _regs_json(regs: dict) -> str:
    """{10800: 5, 20800: 1} -> '{"1.8.0": 5, "2.8.0": 1}' (what json.dumps gives, at a third of its cost)."""
    keys = tuple(regs)
    fmt = _REGS_FMT.get(keys)
    if fmt is None:
        if len(_REGS_FMT) > 1000:
            _REGS_FMT.clear()
        fmt = _REGS_FMT[keys] = "{" + ", ".join(f'"{_obis(k)}": %d' for k in keys) + "}"
    return fmt % tuple(regs.values())


def _sans_signature(raw: bytes) -> bytes:
    return raw[:-P.SIGNATURE_LEN]  # a stored frame has the canonical layout: the signature is the tail


# --- sequence-number ranges ---------------------------------------------------------------------------------


def ranges_add(r: list[list[int]], lo: int, hi: int) -> None:
    """Insert [lo, hi] into a sorted list of disjoint, non-adjacent [lo, hi] ranges, merging neighbours."""
    i = bisect.bisect_left(r, [lo])
    if i > 0 and r[i - 1][1] >= lo - 1:
        i -= 1
        lo = min(lo, r[i][0])
        hi = max(hi, r[i][1])
        del r[i]
    while i < len(r) and r[i][0] <= hi + 1:
        hi = max(hi, r[i][1])
        del r[i]
    r.insert(i, [lo, hi])


def ranges_covered(r: list[list[int]], lo: int, hi: int) -> int:
    """How many numbers of [lo, hi] the ranges cover."""
    n = 0
    for a, b in r:
        if b < lo:
            continue
        if a > hi:
            break
        n += min(b, hi) - max(a, lo) + 1
    return n


# --- per-meter state ----------------------------------------------------------------------------------------


class _Gap:
    __slots__ = ("id", "first", "last", "state", "detected_at", "requested_at", "counter", "attempts")

    def __init__(self, gid, first, last, state, detected_at, requested_at=None, counter=None, attempts=0):
        self.id = gid
        self.first = first
        self.last = last
        self.state = state
        self.detected_at = detected_at
        self.requested_at = requested_at
        self.counter = counter
        self.attempts = attempts


class _Device:
    """What the concentrator keeps in memory about a meter: a cache of its database rows (reloaded from the
    database whenever a transaction fails) plus its latest connection."""

    __slots__ = ("id", "name", "period", "last_seen", "counter", "ack", "first_seq", "online", "frames_stored",
                 "outage", "ranges", "gaps", "link", "link_at", "matching", "iv_dirty")

    def __init__(self, device_id: bytes):
        self.id = device_id
        self.name = None
        self.period = 60
        self.last_seen = None
        self.counter = 0
        self.ack = None  # the watermark W (None: nothing stored yet)
        self.first_seq = None
        self.online = False
        self.frames_stored = 0
        self.outage = None  # (id, start, newest seq stored before it) of the open outage
        self.ranges: list[list[int]] = []  # stored or settled sequence numbers above W
        self.gaps: list[_Gap] = []  # frame gaps being worked on (open/requested)
        self.link = None  # the connection that last delivered a valid frame
        self.link_at = None  # when (injected clock) that connection delivered its first valid frame
        self.matching: list[tuple] = []  # ended outages: (id, start, end, match until, seq before)
        self.iv_dirty = None  # smallest interval end stored since the last interval-gap scan

    def missing(self, first: int, last: int) -> int:
        lo = first if self.ack is None else max(first, self.ack + 1)
        if lo > last:
            return 0
        return last - lo + 1 - ranges_covered(self.ranges, lo, last)

    def holes(self) -> list[tuple[int, int]]:
        out = []
        prev = self.ack
        for a, b in self.ranges:
            if prev is not None and a > prev + 1:
                out.append((prev + 1, a - 1))
            prev = b
        return out

    def newest(self) -> int | None:
        """The newest sequence number stored (or settled)."""
        return self.ranges[-1][1] if self.ranges else self.ack

    def advance(self) -> None:
        r = self.ranges
        while r and self.ack is not None and r[0][0] <= self.ack + 1:
            self.ack = max(self.ack, r[0][1])
            r.pop(0)


# --- connections ----------------------------------------------------------------------------------------------


class _Link(asyncio.BufferedProtocol):
    """One connection: a TCP peer, or one opening of a serial port."""

    def __init__(self, conc: Concentrator, peer: str = "", tcp: bool = True):
        self.conc = conc
        self.peer = peer
        self.tcp = tcp
        self.transport: Any = None
        self.deframer = Deframer()
        self.backlog: collections.deque = collections.deque()
        self.closed = False
        self.paused = 0  # bit 1: backlog, bit 2: rate limit
        self.last_valid = 0.0  # loop time of the last valid frame (or of the connection)
        self.noise_since_valid = 0
        self.rejects = 0
        self.tokens = float(conc.max_burst)
        self.token_t = 0.0

    # asyncio protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.tcp:
            pn = transport.get_extra_info("peername")
            self.peer = str(pn[0]) if isinstance(pn, tuple) and pn else "tcp"
        self.conc._link_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conc._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.conc._on_bytes(self, self.conc._rbuf[:nbytes])

    def data_received(self, data: bytes) -> None:
        self.conc._on_bytes(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conc._link_lost(self)

    # used by the concentrator
    def send(self, data: bytes) -> bool:
        if self.closed or self.transport is None:
            return False
        self.transport.write(data)
        if self.tcp and self.transport.get_write_buffer_size() > self.conc.max_unread:
            self.conc._reject(self, b"", "not-reading", "the peer does not read its acknowledgements")
            self.close()
        return True

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def pause(self, why: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= why

    def resume(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resume_reading()


PAUSE_BACKLOG = 1
PAUSE_RATE = 2


class _SerialTransport:
    """The transport side of a serial port opened by pyserial: non-blocking reads and writes of its file
    descriptor from the event loop (add_reader/add_writer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ser: Any, link: _Link, max_write: int = 64 * 1024):
        self.loop = loop
        self.ser = ser
        self.fd = ser.fileno()
        self.link = link
        self.max_write = max_write
        self.wbuf = bytearray()
        self.lost: asyncio.Future = loop.create_future()
        self.reading = False
        os.set_blocking(self.fd, False)

    def start(self) -> None:
        self.link.connection_made(self)
        self.resume_reading()

    def _read(self) -> None:
        try:
            data = os.read(self.fd, READ_BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EIO: the other end of a pty closed; the USB adapter was unplugged
            self._lose(e)
            return
        if not data:
            self._lose(None)
            return
        self.link.data_received(data)

    def write(self, data: bytes) -> None:
        if self.lost.done():
            return
        if not self.wbuf:
            try:
                n = os.write(self.fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self._lose(e)
                return
            data = data[n:]
            if not data:
                return
            self.loop.add_writer(self.fd, self._write_ready)
        if len(self.wbuf) + len(data) > self.max_write:
            self.link.conc._count("serial_write_dropped", len(data))
            return
        self.wbuf.extend(data)

    def _write_ready(self) -> None:
        try:
            n = os.write(self.fd, self.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lose(e)
            return
        del self.wbuf[:n]
        if not self.wbuf:
            self.loop.remove_writer(self.fd)

    def get_write_buffer_size(self) -> int:
        return len(self.wbuf)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.ser if name == "serial" else default

    def pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def resume_reading(self) -> None:
        if not self.reading and not self.lost.done():
            self.loop.add_reader(self.fd, self._read)
            self.reading = True

    def close(self) -> None:
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self.lost.done():
            return
        self.pause_reading()
        self.loop.remove_writer(self.fd)
        try:
            self.ser.close()
        except Exception:  # noqa: BLE001 - the port is gone already
            pass
        self.lost.set_result(exc)
        self.link.connection_lost(exc)


# --- the concentrator ---------------------------------------------------------------------------------------


class Concentrator:
    """Meters in, verified frames stored once, acknowledged after commit. See the module docstring."""

    def __init__(self, store: Store, headend: P.HeadEnd, clock: Callable[[], float] = time.time,
                 offline_after: float = 3, *, backfill_after: float = 30.0, backfill_attempts: int = 3,
                 ack_ttl_s: int = 600, command_ttl_s: int = 300, idle_timeout: float = 600.0,
                 max_rate: float | None = 128 * 1024, max_burst: int = 256 * 1024, max_noise: int = 256 * 1024,
                 max_rejects: int = 100, max_unread: int = 64 * 1024, backlog_limit: int = 64,
                 batch_frames: int = 1024, per_link: int = 64, tick_s: float = 1.0, match_window: float = 300.0,
                 replay_window: int = 4096, baudrate: int = 115200, reconnect_s: float = 1.0,
                 registry_refresh_s: float = 5.0, command_retry_after: float | None = None,
                 command_attempts: int = 5, profile_request_s: int = 86400):
        self.store = store
        self.headend = headend
        self.clock = clock
        self.offline_after = offline_after
        self.backfill_after = backfill_after
        self.backfill_attempts = backfill_attempts
        self.ack_ttl_s = ack_ttl_s
        self.command_ttl_s = command_ttl_s
        self.idle_timeout = idle_timeout
        self.max_rate = max_rate
        self.max_burst = max_burst
        self.max_noise = max_noise
        self.max_rejects = max_rejects
        self.max_unread = max_unread
        self.backlog_limit = backlog_limit
        self.batch_frames = max(1, batch_frames)
        self.per_link = max(1, per_link)
        self.tick_s = tick_s
        self.match_window = match_window
        self.baudrate = baudrate
        self.reconnect_s = reconnect_s
        self.registry_refresh_s = registry_refresh_s
        self.command_retry_after = backfill_after if command_retry_after is None else command_retry_after
        self.command_attempts = max(1, command_attempts)
        self.profile_request_s = profile_request_s  # how long a request for rows of a gone frame stays queued
        self._cmd_links: dict[int, _Link] = {}  # queue id -> the connection its latest attempt went out on

        self.guard = P.ReplayGuard(replay_window)
        self._rbuf = memoryview(bytearray(READ_BUFFER))
        self._keys: dict[bytes, Any] = {}
        self._missed: dict[bytes, float] = {}  # unknown kid -> when the registry was last asked
        self._devs: dict[bytes, _Device] = {}
        self._links: set[_Link] = set()
        self._ready: dict[_Link, None] = {}  # links with frames waiting, in arrival order
        self._pump_handle: asyncio.Handle | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._serial_tasks: list[asyncio.Task] = []
        self._serial: dict[str, _SerialTransport | None] = {}
        self._house: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._started = clock()
        self._totals: collections.Counter = collections.Counter(store.counters())
        self._pending_counts: collections.Counter = collections.Counter()
        self._pending_rejects: dict[tuple, list] = {}
        self._reasons: collections.Counter = collections.Counter()
        for r in store.rejects():
            self._reasons[r["reason"]] += r["count"]
        self.addresses: list[tuple[str, int]] = []
        for rec in store.meters():
            self._keys[rec.device_id] = P.public_from_bytes(rec.public_key)
            self._load_device(rec.device_id)

    # -- counting
    def _count(self, name: str, n: int = 1) -> None:
        self._totals[name] += n
        self._pending_counts[name] += n

    def _reject(self, link: _Link | None, device: bytes, reason: str, detail: str) -> None:
        peer = link.peer if link is not None else ""
        self._count("rejected")
        self._reasons[reason] += 1
        key = (bytes(device), peer, reason)
        p = self._pending_rejects.get(key)
        if p is None:
            self._pending_rejects[key] = [1, self.clock(), detail[:300]]
        else:
            p[0] += 1
            p[1] = self.clock()
            p[2] = detail[:300]
        n = link.rejects if link is not None else 0
        if n < LOG_REJECTS_PER_LINK or n % LOG_EVERY == 0:
            log.log(logging.INFO if reason == "replay" else logging.WARNING, "rejected from %s%s: %s (%s)",
                    peer or "?", f" device {device.hex()}" if device else "", reason, detail)
        if link is not None and reason not in ("replay", "idle-timeout"):
            link.rejects += 1
            if link.tcp and link.rejects >= self.max_rejects and not link.closed:
                log.warning("closing %s: %d rejected frames", peer, link.rejects)
                self._count("closed_abusive")
                link.close()

    def _persist_counts(self) -> None:
        """Write pending counters and rejects into the open transaction (kept pending until commit)."""
        if self._pending_rejects:
            self.store.add_rejects([(dev, peer, reason, v[0], v[1], v[2])
                                    for (dev, peer, reason), v in self._pending_rejects.items()])
        if self._pending_counts:
            self.store.add_counters(dict(self._pending_counts))

    def _persisted(self) -> None:
        self._pending_rejects.clear()
        self._pending_counts.clear()

    def stats(self) -> dict:
        """Counters since the database was created (persisted), plus the live connection figures."""
        out = {k: v for k, v in sorted(self._totals.items())}
        out["rejects"] = dict(sorted(self._reasons.items()))
        out["connections_open"] = len(self._links)
        out["meters_known"] = len(self._keys)
        out["meters_online"] = sum(1 for d in self._devs.values() if d.online)
        out["gaps_open"] = sum(len(d.gaps) for d in self._devs.values())
        return out

    # -- registry
    def _lookup(self, kid: bytes) -> Any:
        pub = self._keys.get(kid)
        if pub is not None:
            return pub
        now = time.monotonic()
        t = self._missed.get(kid)
        if t is not None and now - t < self.registry_refresh_s:
            return None
        if len(self._missed) > 10000:
            self._missed.clear()
        self._missed[kid] = now
        rec = self.store.meter(kid)  # registered since we started (meterkit meters add)?
        if rec is None:
            return None
        pub = self._keys[kid] = P.public_from_bytes(rec.public_key)
        self._missed.pop(kid, None)
        return pub

    def _load_device(self, device_id: bytes) -> _Device:
        st = self.store
        rec = st.meter(device_id)
        d = _Device(device_id)
        old = self._devs.get(device_id)
        if old is not None:
            d.link, d.link_at, d.matching, d.iv_dirty = old.link, old.link_at, old.matching, old.iv_dirty
        if rec is not None:
            d.name = rec.name
            d.period = rec.reporting_period_s
            d.last_seen = rec.last_seen
            d.counter = rec.last_counter
            d.ack = rec.ack_seq
            d.first_seq = rec.first_seq
            d.online = rec.online
            d.frames_stored = rec.frames_stored
        if d.ack is not None:
            for s in st.seqs_above(device_id, d.ack):
                ranges_add(d.ranges, s, s)
        for g in st.gaps(device_id, "frames"):
            if g.state in GAP_SETTLED and d.ack is not None and g.last > d.ack:
                ranges_add(d.ranges, max(g.first, d.ack + 1), g.last)
            elif g.state in ("open", "requested"):
                d.gaps.append(_Gap(g.id, g.first, g.last, g.state, g.detected_at, g.requested_at,
                                   g.command_counter, g.attempts))
        d.advance()
        hi = st.max_seq(device_id)
        if hi is not None:
            for s in st.seqs_above(device_id, hi - self.guard.window):
                self.guard.record(device_id, s)
        for o in st.outages(device_id, open_only=True):
            d.outage = (o.id, o.start, st.max_seq(device_id, received_to=o.start))
        self._devs[device_id] = d
        return d

    def _dev(self, device_id: bytes) -> _Device:
        d = self._devs.get(device_id)
        return d if d is not None else self._load_device(device_id)

    # -- connections
    def _link_made(self, link: _Link) -> None:
        loop = self._loop or asyncio.get_running_loop()
        link.last_valid = link.token_t = loop.time()
        self._links.add(link)
        self._count("connections")

    def _link_lost(self, link: _Link) -> None:
        self._links.discard(link)
        self._ready.pop(link, None)
        link.backlog.clear()
        for d in self._devs.values():
            if d.link is link:
                d.link = None

    def _on_bytes(self, link: _Link, data: Any) -> None:
        if link.closed:
            return
        df = link.deframer
        noise0, seg0 = df.noise, df.noise_segments
        frames = df.feed(data)
        if df.noise != noise0:
            nb, ns = df.noise - noise0, df.noise_segments - seg0
            self._count("noise_bytes", nb)
            self._count("noise_segments", ns)
            if ns:
                key = (b"", link.peer, "noise")
                p = self._pending_rejects.get(key)
                if p is None:
                    self._pending_rejects[key] = [ns, self.clock(), None]
                else:
                    p[0] += ns
                    p[1] = self.clock()
            link.noise_since_valid += nb
            if link.tcp and link.noise_since_valid > self.max_noise:
                self._reject(link, b"", "noise-flood", f"{link.noise_since_valid} bytes of noise, no valid frame")
                link.close()
                return
        if link.tcp and self.max_rate:
            now = self._loop.time() if self._loop else time.monotonic()
            link.tokens = min(self.max_burst, link.tokens + (now - link.token_t) * self.max_rate) - len(data)
            link.token_t = now
            if link.tokens < 0:
                self._count("rate_limited")
                link.pause(PAUSE_RATE)
                self._loop.call_later(-link.tokens / self.max_rate, link.resume, PAUSE_RATE)
        if frames:
            link.backlog.extend(frames)
            self._ready[link] = None
            if len(link.backlog) >= self.backlog_limit:
                link.pause(PAUSE_BACKLOG)
            if self._pump_handle is None:
                self._pump_handle = self._loop.call_soon(self._pump)

    async def _serve_serial(self, url: str) -> None:
        import serial

        loop = asyncio.get_running_loop()
        announced = None
        while not self._stopping:
            try:
                ser = serial.serial_for_url(url, baudrate=self.baudrate, timeout=0)
            except (serial.SerialException, OSError, ValueError) as e:
                if announced != "down":
                    log.warning("serial %s: cannot open (%s); retrying every %g s", url, e, self.reconnect_s)
                    announced = "down"
                await asyncio.sleep(self.reconnect_s)
                continue
            announced = "up"
            self._count("serial_opens")
            log.info("serial %s: open", url)
            link = _Link(self, f"serial:{url}", tcp=False)
            tr = _SerialTransport(loop, ser, link)
            self._serial[url] = tr
            tr.start()
            try:
                exc = await tr.lost
            except asyncio.CancelledError:
                tr.close()
                raise
            finally:
                self._serial[url] = None
            if self._stopping:
                break
            self._count("serial_lost")
            log.warning("serial %s: lost (%s); reopening", url, exc or "end of file")
            await asyncio.sleep(self.reconnect_s)

    # -- verification and batches
    def _pump(self) -> None:
        self._pump_handle = None
        batch: list[tuple[_Link, P.Message]] = []
        budget = self.batch_frames
        verify = P.verify_and_decode
        lookup = self._lookup
        while budget > 0 and self._ready:
            for link in list(self._ready):
                bl = link.backlog
                take = min(self.per_link, budget, len(bl))
                budget -= take
                done = 0
                for _ in range(take):
                    if link.closed:  # hung up on (abuse): the rest is not worth a signature check
                        bl.clear()
                        break
                    done += 1
                    cose = bl.popleft()
                    try:
                        m = verify(cose, lookup)
                    except P.ProtocolError as e:
                        self._reject(link, claimed_kid(cose), e.reason, str(e))
                        continue
                    except Exception as e:  # noqa: BLE001 - one bad frame must not stop the others
                        log.exception("verifying a frame from %s", link.peer)
                        self._reject(link, claimed_kid(cose), "internal-error", repr(e))
                        continue
                    if m.seq > I64_MAX:
                        self._reject(link, m.device_id, "seq-range", f"sequence number {m.seq} beyond 2^63 - 1")
                        continue
                    batch.append((link, m))
                self._count("frames_received", done)
                if not bl:
                    del self._ready[link]
                    link.resume(PAUSE_BACKLOG)
                else:  # round-robin: to the back of the queue
                    del self._ready[link]
                    self._ready[link] = None
                    if len(bl) < self.backlog_limit:
                        link.resume(PAUSE_BACKLOG)
                if budget <= 0:
                    break
        if batch:
            try:
                self._flush(batch)
            except Exception:  # noqa: BLE001 - logged and counted; the meters resend
                log.exception("storing a batch of %d frames", len(batch))
        if self._ready and self._pump_handle is None:
            self._pump_handle = self._loop.call_soon(self._pump)

    def _flush(self, batch: list[tuple[_Link, P.Message]], check_db: bool = False) -> None:
        """Store one batch in one transaction, commit, then acknowledge."""
        store = self.store
        now = self.clock()
        seen: dict[tuple[bytes, int], bytes] = {}
        frames, readings, intervals, events_, billing = [], [], [], [], []
        responses: list[tuple[_Device, P.Message]] = []
        hellos: dict[bytes, P.Message] = {}
        per_dev: dict[bytes, list[int]] = {}  # accepted sequence numbers
        acks: dict[tuple[_Link, bytes], None] = {}
        new_links: list[bytes] = []  # meters heard on a connection that is new for them: queued commands go out
        answered: list[bytes] = []  # meters that answered an operator command
        power: set[bytes] = set()
        devs = self._devs
        check = self.guard.check
        last_link = last_dev = dseqs = d = None  # a link's frames come one after the other: look up once
        for link, m in batch:
            dev, seq = m.device_id, m.seq
            if dev != last_dev:
                d = devs.get(dev) or self._load_device(dev)
            key = (dev, seq)
            stored = seen.get(key)
            if stored is None:
                dup = check_db
                try:
                    check(dev, seq)
                except P.Replay:
                    dup = True
                if dup:
                    stored = store.frame_raw(dev, seq)
            if stored is not None:
                if _sans_signature(stored) == _sans_signature(m.raw):
                    self._count("duplicates")
                    self._reject(link, dev, "replay", f"sequence number {seq} already stored")
                    acks[(link, dev)] = None
                    last_dev = None
                else:
                    log.error("device %s reused sequence number %d for a different frame (not acknowledged)",
                              dev.hex(), seq)
                    self._reject(link, dev, "seq-reuse", f"sequence number {seq} stored with other content")
                    last_dev = None
                continue
            seen[key] = m.raw
            if dev != last_dev or link is not last_link:
                dseqs = per_dev.get(dev)
                if dseqs is None:
                    dseqs = per_dev[dev] = []
                acks[(link, dev)] = None
                if d.link is not link:
                    d.link_at = now
                    if d.id not in new_links:
                        new_links.append(d.id)
                d.link = link
                last_dev, last_link = dev, link
            dseqs.append(seq)
            status = m.status
            b = m.body
            frames.append((dev, seq, m.kind, m.time, status if status <= I64_MAX else None, now, m.raw))
            if status & M.ST_POWER_FAIL:
                power.add(dev)
            kind = m.kind
            if kind == M.READING:
                regs = b[M.K_REGISTERS]
                mw, mv, ma = b[M.K_INSTANT]
                imp, exp = regs[M.OBIS_IMPORT], regs[M.OBIS_EXPORT]
                row = (dev, seq, m.time, status, imp, exp, _regs_json(regs), mw, mv, ma, b[M.K_UNCOVERED_PPM])
                if not (status <= I64_MAX and I64_MIN <= imp <= I64_MAX and I64_MIN <= exp <= I64_MAX
                        and I64_MIN <= mw <= I64_MAX and mv <= I64_MAX and I64_MIN <= ma <= I64_MAX):
                    row = tuple(i64(v) if type(v) is int else v for v in row)
                readings.append(row)
            elif kind == M.INTERVALS:
                period = i64(b[M.K_PERIOD])
                for end, imp, exp, st in b[M.K_ROWS]:
                    intervals.append((dev, end, i64(imp), i64(exp), i64(st), period, seq))
                    if d.iv_dirty is None or end < d.iv_dirty:
                        d.iv_dirty = end
            elif kind == M.EVENT:
                v = b[M.K_EVENT_VALUE]
                if type(v) is int and i64(v) is None:
                    v = str(v)
                events_.append((dev, seq, i64(b[M.K_EVENT_SEQ]), i64(b[M.K_EVENT_CODE]), v, b[M.K_EVENT_TIME]))
                if b[M.K_EVENT_CODE] == mevents.POWER_UP:
                    power.add(dev)
            elif kind == M.HELLO:
                h = hellos.get(dev)
                if h is None or h.seq < seq:
                    hellos[dev] = m
            elif kind == M.BILLING:
                md = b.get(M.K_MAX_DEMAND)
                billing.append((dev, seq, b[M.K_PERIOD_END], _regs_json(b[M.K_BILLING_REGISTERS]),
                                json.dumps({_obis(k): v for k, v in md.items()}) if md else None))
            elif kind == M.RESPONSE:
                responses.append((d, m))

        if per_dev:
            t = self._loop.time() if self._loop else 0.0
            for link, _ in acks:
                link.noise_since_valid = 0
                link.last_valid = t
        sends: list[tuple[_Link, bytes, int, int]] = []
        totals, pending = self._totals.copy(), self._pending_counts.copy()  # to forget a failed batch's counts
        try:
            if frames:
                n = store.insert_frames(frames)
                if n != len(frames):
                    # the database knew frames the guard did not (written by another process?): redo, asking it
                    if check_db:
                        raise RuntimeError(f"{len(frames) - n} frames of the batch vanished on insert")
                    store.rollback()
                    self._reload(per_dev)
                    self._flush(batch, check_db=True)
                    return
                if readings:
                    store.insert_readings(readings)
                if intervals:
                    store.insert_intervals(intervals)
                if events_:
                    store.insert_events(events_)
                if billing:
                    store.insert_billing(billing)
            for dev, seqs in per_dev.items():
                d = self._devs[dev]
                if d.ack is None:
                    d.ack = min(seqs) - 1
                    d.first_seq = min(seqs)
                a, r = d.ack, d.ranges
                for x in seqs:
                    if x == a + 1 and not r:  # in order, no hole: the common case
                        a = x
                    elif x > a:
                        ranges_add(r, x, x)
                d.ack = a
                d.frames_stored += len(seqs)
            for d, m in responses:
                if self._on_response(d, m, now):
                    answered.append(d.id)
            for dev in per_dev:
                d = self._devs[dev]
                d.advance()
                self._update_gaps(d, now)
                d.last_seen = now
                if not d.online:
                    d.online = True
                    if d.outage is not None:
                        oid, start, before = d.outage
                        store.close_outage(oid, now)
                        d.outage = None
                        until = now + max(self.match_window, d.period * self.offline_after)
                        d.matching.append((oid, start, now, until, before))
                        log.info("meter %s back after %.0f s", dev.hex(), now - start)
                if dev in power or d.matching:
                    self._match_outages(d, now)
            for link, dev in acks:
                d = self._devs[dev]
                if d.ack is None or d.ack < 0:
                    continue
                d.counter += 1
                sends.append((link, dev, d.counter, d.ack))
            rows, counters_only = [], []
            for dev in set(per_dev) | {dev for _, dev in acks}:
                d = self._devs[dev]
                if dev in per_dev:
                    rows.append((now, d.ack, d.first_seq, 1, d.frames_stored, d.counter, dev))
                else:
                    counters_only.append((d.counter, dev))
            store.update_meters(("last_seen", "ack_seq", "first_seq", "online", "frames_stored", "last_counter"),
                                rows)
            store.update_meters(("last_counter",), counters_only)
            for dev, h in hellos.items():
                store.update_meter(dev, firmware=h.body[M.K_FIRMWARE], board=h.body[M.K_BOARD],
                                   boot_count=i64(h.body[M.K_BOOT_COUNT]))
            self._count("frames_stored", len(frames))
            self._count("batches")
            self._count("acks_sent", len(sends))
            self._persist_counts()
            store.commit()
        except Exception as e:  # noqa: BLE001 - nothing is acknowledged; the meters resend after a reconnect
            try:
                store.rollback()
            except Exception:  # noqa: BLE001
                log.exception("rollback failed")
            self._totals, self._pending_counts = totals, pending
            self._count("commit_failures")
            log.error("batch of %d frames not stored (%s: %s); closing its connections so that the meters "
                      "resend", len(frames), type(e).__name__, e)
            self._reload(per_dev.keys() | {dev for _, dev in acks})
            for link, _ in acks:
                link.close()
            return
        self._persisted()
        record = self.guard.record
        for dev, seqs in per_dev.items():
            for x in seqs:
                record(dev, x)
        t = int(now)
        sign = self.headend.sign_ack
        for link, dev, counter, ack in sends:
            link.send(encode_frame(sign(dev, counter, ack, t, self.ack_ttl_s)))
        if answered:
            new_links.extend(dev for dev in answered if dev not in new_links)
        if new_links:  # a new connection, or an answer that frees the meter for its next queued command
            self._send_queued(now, new_links)

    def _reload(self, devices: Iterable[bytes]) -> None:
        for dev in list(devices):
            self._load_device(dev)

    def _on_response(self, d: _Device, m: P.Message, now: float) -> bool:
        """Match a response; True when it answered an operator command for the first time."""
        answered, result = m.body[M.K_ANSWERED], m.body[M.K_RESULT]
        reason = m.body.get(M.K_REASON)
        cmd = self.store.record_response(d.id, answered, result, reason, now) if answered <= I64_MAX else None
        if cmd is None:
            self._count("responses_unmatched")
            log.warning("meter %s: response to command %d, which was never sent to it: ignored (result %d%s)",
                        d.id.hex(), answered, result, f", {reason!r}" if reason else "")
            return False
        self._count("responses")
        op, args = cmd
        if op != OP_BACKFILL:
            return self._on_queued_response(d, answered, result, reason, now)
        for g in d.gaps:
            if g.counter == answered:
                break
        else:
            return False
        missing = d.missing(g.first, g.last)
        if missing == 0:
            state = "filled"
        else:  # the meter resent what it had: the rest was never made (0) or is gone (-1)
            state = "skipped" if result == 0 else "lost"
            if d.ack is not None:
                ranges_add(d.ranges, max(g.first, d.ack + 1), g.last)
            log.warning("meter %s: %d of frames %d..%d %s (back-fill answer %d%s)", d.id.hex(), missing, g.first,
                        g.last, "never made" if result == 0 else "gone", result, f": {reason}" if reason else "")
        self.store.update_gap(g.id, state=state, missing=missing, closed_at=now)
        self._count("gaps_" + state)
        d.gaps.remove(g)
        return False

    def _on_queued_response(self, d: _Device, counter: int, result: int, reason: str | None, now: float) -> bool:
        """A meter answered an operator command (inside the batch's transaction); True if it was news."""
        q = self.store.queued_for_counter(d.id, counter)
        if q is None:  # pragma: no cover - every command other than a back-fill comes from the queue
            return False
        what = f"meter {d.id.hex()}: command #{q.id} ({opcmds.op_name(q.op)}, counter {counter})"
        if q.state == "answered":
            self._count("responses_duplicate")
            log.warning("%s answered again (%d%s): an earlier attempt reached the meter too; the first answer "
                        "(%s) is kept", what, result, f", {reason!r}" if reason else "", q.result)
            return False
        if q.state != "sent":
            log.warning("%s: late answer to a command already %s", what, q.state)
        self.store.update_queued(q.id, state="answered", counter=counter, answered_at=now, result=i64(result),
                                 reason=reason)
        self._count("operator_commands_answered")
        log.log(logging.INFO if result == 0 else logging.WARNING, "%s answered %d%s", what, result,
                f": {reason}" if reason else "")
        return True

    def _resend_due(self, d: _Device, q: Any, now: float) -> bool:
        """May an unanswered attempt be repeated (with a new counter) on the meter's current connection?"""
        expired = q.attempt_expires is None or now > q.attempt_expires
        if self._cmd_links.get(q.id) is d.link and not expired:
            return False  # still on its way on this very connection
        # After a reconnect the meter first sends its outbox: if it acted on the earlier attempt, its answer
        # is in there. Repeat only once the meter has caught up (no missing frames it could still send) and
        # had `command_retry_after` seconds on this connection: an operation must not run twice.
        if d.link_at is None or now - d.link_at < self.command_retry_after:
            return False
        for g in d.gaps:
            if g.state == "open" or g.attempts < self.backfill_attempts or (
                    g.requested_at is not None and now <= g.requested_at + self.command_ttl_s):
                return False
        return True

    def _send_queued(self, now: float, only: Iterable[bytes] | None = None) -> None:
        """Send what the operator queued to meters that are connected (one command in flight per meter, oldest
        first); expire what is past its expiry; repeat unanswered attempts when due. Own transaction."""
        store = self.store
        wanted = None if only is None else set(only)
        sends: list[tuple[_Device, _Link, Any, int, bytes]] = []
        changed: set[bytes] = set()
        counts: collections.Counter = collections.Counter()
        counted = False
        try:
            if wanted is None:
                entries = store.queued_commands(states=QUEUE_PENDING)
            else:
                entries = [q for dev in wanted for q in store.queued_commands(dev, QUEUE_PENDING)]
            busy: set[bytes] = set()
            for q in entries:
                dev = q.device_id
                what = f"meter {dev.hex()}: command #{q.id} ({opcmds.op_name(q.op)})"
                if now >= q.expires_at:
                    why = (f"expired unanswered after {q.attempts} attempt(s)" if q.attempts
                           else "expired before the meter could be reached")
                    store.update_queued(q.id, state="expired", reason=why)
                    counts["operator_commands_expired"] += 1
                    log.warning("%s %s", what, why)
                    continue
                if dev in busy:
                    continue
                d = self._devs.get(dev)
                if d is None:
                    if store.meter(dev) is None:
                        store.update_queued(q.id, state="failed", reason="not a registered meter")
                        counts["operator_commands_failed"] += 1
                        log.warning("%s failed: not a registered meter", what)
                        continue
                    d = self._load_device(dev)
                busy.add(dev)
                link = d.link
                if link is None or link.closed:
                    continue
                if q.state == "sent":
                    if not self._resend_due(d, q, now):
                        continue
                    if q.attempts >= self.command_attempts:
                        store.update_queued(q.id, state="failed", reason=f"no answer after {q.attempts} attempts")
                        counts["operator_commands_failed"] += 1
                        log.warning("%s failed: no answer after %d attempts", what, q.attempts)
                        busy.discard(dev)
                        continue
                ttl = min(self.command_ttl_s, q.expires_at - int(now))
                counter = d.counter + 1
                try:
                    opcmds.check_fits(q.op, q.args)  # what another writer of the queue may not have checked
                    cose = self.headend.sign_command(dev, counter, q.op, q.args, int(now), ttl)
                    frame = encode_frame(cose, max_frame=opcmds.MAX_COMMAND_MESSAGE)
                except ValueError as e:
                    store.update_queued(q.id, state="failed", reason=f"cannot be sent: {e}")
                    counts["operator_commands_failed"] += 1
                    log.error("%s cannot be sent: %s", what, e)
                    busy.discard(dev)
                    continue
                d.counter = counter
                changed.add(dev)
                store.record_command(dev, counter, q.op, q.args, now, int(now) + ttl, queue_id=q.id)
                store.update_queued(q.id, state="sent", counter=counter, attempts=q.attempts + 1, sent_at=now)
                store.update_meter(dev, last_counter=counter)
                sends.append((d, link, q, counter, frame))
            counts["commands_sent"] += len(sends)
            counts["operator_commands_sent"] += len(sends)
            for k, v in counts.items():
                if v:
                    self._count(k, v)
            counted = True
            self._persist_counts()
            store.commit()
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("sending queued commands")
            try:
                store.rollback()
            except Exception:  # noqa: BLE001
                log.exception("rollback failed")
            if counted:
                for k, v in counts.items():
                    self._totals[k] -= v
                    self._pending_counts[k] -= v
            self._reload(changed)
            return
        self._persisted()
        for d, link, q, counter, frame in sends:
            self._cmd_links[q.id] = link
            log.info("meter %s: command #%d (%s) sent with counter %d%s", d.id.hex(), q.id, opcmds.op_name(q.op),
                     counter, f" (attempt {q.attempts + 1})" if q.attempts else "")
            link.send(frame)
        for qid in [k for k, v in self._cmd_links.items() if v.closed]:
            del self._cmd_links[qid]  # a closed connection is never current again: forgetting it is the same

    def _update_gaps(self, d: _Device, now: float) -> None:
        """Close gaps that are filled now; record holes that are new."""
        for g in list(d.gaps):
            if d.missing(g.first, g.last) == 0:
                state = "filled" if g.attempts else "resolved"
                self.store.update_gap(g.id, state=state, missing=0, closed_at=now)
                self._count("gaps_" + state)
                d.gaps.remove(g)
        for lo, hi in d.holes():
            if any(g.first <= lo and hi <= g.last for g in d.gaps):
                continue
            gid = self.store.add_gap(d.id, "frames", lo, hi, now)
            if gid is None:  # a gap with this first number was recorded (and closed) before: reopen it
                old = [g for g in self.store.gaps(d.id, "frames") if g.first == lo]
                if not old:
                    continue
                gid = old[0].id
                self.store.update_gap(gid, last=hi, state="open", closed_at=None, missing=None)
            d.gaps.append(_Gap(gid, lo, hi, "open", now))
            self._count("gaps_detected")
            log.info("meter %s: frames %d..%d missing", d.id.hex(), lo, hi)

    def _match_outages(self, d: _Device, now: float) -> None:
        """Match recently ended outages with the meter's own account of them."""
        keep = []
        for oid, start, end, until, before in d.matching:
            power_seqs, up_events, during = [], [], 0
            power_up = None
            slack = min(d.period, (end - start) / 4)
            frames = self.store.frames_after(d.id, -1 if before is None else before, until)
            ev_seqs = [s for s, k, _, _ in frames if k == M.EVENT]
            ups = {s: t for s, _, code, _, t in self.store.events_of(d.id, ev_seqs) if code == mevents.POWER_UP}
            for s, kind, mt, st in frames:
                clock_set = not (st or 0) & M.ST_CLOCK_NOT_SET
                if (st or 0) & M.ST_POWER_FAIL:
                    power_seqs.append(s)
                    if kind == M.HELLO and clock_set and (power_up is None or mt < power_up):
                        power_up = mt
                if s in ups:
                    up_events.append(s)
                    if clock_set and (power_up is None or ups[s] < power_up):
                        power_up = ups[s]
                if clock_set and start + slack < mt < end - slack:
                    during += 1
            powered = bool(power_seqs or up_events)
            cause = ("power+communication" if powered and during else "power" if powered
                     else "communication" if during else "unknown")
            self.store.match_outage(oid, cause, power_up, {"power_fail_frames": power_seqs[:50],
                                                           "power_up_events": up_events[:50],
                                                           "frames_made_during": during})
            if now < until:
                keep.append((oid, start, end, until, before))
        d.matching = keep

    # -- housekeeping (injected clock)
    def tick(self) -> None:
        """Outages, interval gaps, back-fill commands; flushes the counters. Runs every tick_s; tests call it."""
        now = self.clock()
        store = self.store
        commands: list[tuple[_Device, _Gap, int, int, int]] = []
        try:
            for d in list(self._devs.values()):
                if d.online and d.last_seen is not None:
                    silent = now - max(d.last_seen, self._started)
                    if silent > d.period * self.offline_after:
                        d.online = False
                        oid = store.open_outage(d.id, d.last_seen, now)
                        d.outage = (oid, d.last_seen, d.newest())
                        store.update_meter(d.id, online=0)
                        self._count("outages")
                        log.warning("meter %s offline: silent for %.0f s", d.id.hex(), now - d.last_seen)
                if d.matching and any(now >= m[3] for m in d.matching):
                    self._match_outages(d, now)
                if d.iv_dirty is not None:
                    self._scan_intervals(d, now)
                link = d.link
                for g in d.gaps:
                    if link is None or link.closed:
                        break
                    due = (g.state == "open" and now - g.detected_at >= self.backfill_after) or (
                        g.state == "requested" and g.requested_at is not None
                        and now > g.requested_at + self.command_ttl_s and g.attempts < self.backfill_attempts)
                    if not due:
                        continue
                    first = g.first if d.ack is None else max(g.first, d.ack + 1)
                    d.counter += 1
                    expires = int(now) + self.command_ttl_s
                    args = {1: first, 2: g.last}
                    store.record_command(d.id, d.counter, OP_BACKFILL, args, now, expires)
                    g.state, g.requested_at, g.counter = "requested", now, d.counter
                    g.attempts += 1
                    store.update_gap(g.id, state="requested", requested_at=now, command_counter=d.counter,
                                     attempts=g.attempts)
                    store.update_meter(d.id, last_counter=d.counter)
                    commands.append((d, g, d.counter, first, g.last))
            self._check_interval_gaps(now)
            self._count("commands_sent", len(commands))
            self._count("backfills_sent", len(commands))
            self._persist_counts()
            store.commit()
        except Exception:  # noqa: BLE001
            log.exception("housekeeping")
            try:
                store.rollback()
            except Exception:  # noqa: BLE001
                log.exception("rollback failed")
            self._totals["commands_sent"] -= len(commands)
            self._pending_counts["commands_sent"] -= len(commands)
            self._totals["backfills_sent"] -= len(commands)
            self._pending_counts["backfills_sent"] -= len(commands)
            self._reload([d.id for d in self._devs.values()])
            return
        self._persisted()
        t = int(now)
        for d, _g, counter, first, last in commands:
            log.info("meter %s: back-fill %d..%d requested (command %d)", d.id.hex(), first, last, counter)
            d.link.send(encode_frame(self.headend.sign_command(d.id, counter, OP_BACKFILL, {1: first, 2: last},
                                                               t, self.command_ttl_s)))
        self._send_queued(now)

    def _scan_intervals(self, d: _Device, now: float) -> None:
        """Record load-profile rows missing around the rows stored since the last scan."""
        frm = d.iv_dirty
        d.iv_dirty = None
        prev = self.store.interval_before(d.id, frm)
        rows = self.store.interval_rows(d.id, frm)
        if prev is not None:
            rows.insert(0, prev)
        known = self.store.gaps(d.id, "intervals")
        for a, b in zip(rows, rows[1:], strict=False):
            period = a[1] or b[1]
            if not period or b[0] - a[0] <= period:
                continue
            first, last = a[0] + period, b[0] - period
            if any(g.first <= last and first <= g.last for g in known):
                continue
            if self.store.add_gap(d.id, "intervals", first, last, now) is not None:
                self._count("interval_gaps_detected")
                log.info("meter %s: load-profile rows %d..%d missing", d.id.hex(), first, last)

    def _check_interval_gaps(self, now: float) -> None:
        for g in self.store.gaps(kind="intervals", states=("open", "requested")):
            d = self._devs.get(g.device_id)
            if d is None:
                continue
            rows = self.store.interval_rows(g.device_id, g.first, g.last)
            period = None
            before = self.store.interval_before(g.device_id, g.first)
            after = self.store.interval_after(g.device_id, g.last)
            if before is not None:
                period = before[1]
            want = (g.last - g.first) // period + 1 if period else None
            if want is not None and len(rows) >= want:
                self.store.update_gap(g.id, state="filled", missing=0, closed_at=now)
                self._count("interval_gaps_filled")
                if g.state == "requested":
                    log.info("meter %s: load-profile rows %d..%d filled from the profile", d.id.hex(), g.first,
                             g.last)
                continue
            if g.state == "requested":
                self._profile_answered(d, g, want, len(rows), now)
                continue
            if before is None or after is None:
                continue
            lo, hi = min(before[2], after[2]), max(before[2], after[2])
            # every frame between the ones carrying the neighbouring rows is here or settled: never made
            if hi - lo > 1 and d.missing(lo + 1, hi - 1):
                continue
            gone = [x for x in self.store.gaps(d.id, "frames", ("lost",)) if x.first < hi and lo < x.last]
            if gone:
                # frames the meter's outbox dropped lay between those rows: the rows may be gone from the outbox
                # but not from the meter's load profile (99.1.0): ask for them by time (op 4)
                qid = self.store.queue_command(d.id, opcmds.OP_PROFILE, {1: g.first, 2: g.last}, now,
                                               int(now) + self.profile_request_s, note=f"interval gap {g.id}")
                self.store.update_gap(g.id, state="requested", requested_at=now, attempts=g.attempts + 1)
                self._count("interval_gaps_requested")
                log.info("meter %s: load-profile rows %d..%d were in frames %d..%d it no longer holds: asked for "
                         "them from its profile (command #%d)", d.id.hex(), g.first, g.last, gone[0].first,
                         gone[-1].last, qid)
                continue
            self.store.update_gap(g.id, state="not-sent", missing=(want - len(rows)) if want else None,
                                  closed_at=now)
            self._count("interval_gaps_not_sent")

    def _profile_answered(self, d: _Device, g: Any, want: int | None, have: int, now: float) -> None:
        """An interval gap asked for from the meter's profile, not filled yet: settled once the request ended."""
        note = f"interval gap {g.id}"
        qs = [q for q in self.store.queued_commands(d.id) if q.note == note and q.op == opcmds.OP_PROFILE]
        if not qs or qs[-1].state in QUEUE_PENDING:
            return
        q = qs[-1]
        # answered: the rows it still had came before its answer; expired or failed: nothing more will come
        missing = (want - have) if want is not None else None
        self.store.update_gap(g.id, state="lost", missing=missing, closed_at=now)
        self._count("interval_gaps_lost")
        log.warning("meter %s: load-profile rows %d..%d: %s of them gone from the meter too (profile command #%d "
                    "%s%s)", d.id.hex(), g.first, g.last, "?" if missing is None else missing, q.id, q.state,
                    f": {q.result} {q.reason or ''}".rstrip() if q.state == "answered" else "")

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        sweep = min(self.tick_s, max(0.05, self.idle_timeout / 4))
        next_tick = loop.time()
        while True:
            await asyncio.sleep(sweep)
            t = loop.time()
            for link in list(self._links):
                if link.tcp and not link.closed and t - link.last_valid > self.idle_timeout:
                    self._count("idle_closed")
                    self._reject(link, b"", "idle-timeout", f"no valid frame for {self.idle_timeout:g} s")
                    link.close()
            if t >= next_tick:
                next_tick = t + self.tick_s
                self.tick()

    # -- life cycle
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024) -> tuple[str, int]:
        """Listen for meters on host:port (port 0: any free port); returns the address bound."""
        self._ensure_loop()
        server = await self._loop.create_server(lambda: _Link(self), host, port, backlog=backlog,
                                                reuse_address=True)
        self._servers.append(server)
        addr = server.sockets[0].getsockname()[:2]
        self.addresses.append(addr)
        log.info("listening on %s:%d", *addr)
        return addr

    def add_serial(self, url: str) -> None:
        """Read meters on a serial port (pyserial URL or device path); reopened whenever it comes back."""
        self._ensure_loop()
        self._serial[url] = None
        self._serial_tasks.append(self._loop.create_task(self._serve_serial(url)))

    async def start(self, listen: Iterable[tuple[str, int]] = (), serial: Iterable[str] = ()) -> None:
        for host, port in listen:
            await self.start_tcp(host, port)
        for url in serial:
            self.add_serial(url)

    def _ensure_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._stopping = False
            self._house = self._loop.create_task(self._housekeeping())

    def serial_open(self, url: str) -> bool:
        return self._serial.get(url) is not None

    async def stop(self) -> None:
        """Stop serving: close servers, serial ports and connections; store what is pending."""
        self._stopping = True
        for s in self._servers:
            s.close()
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        while self._ready:  # store and acknowledge what has arrived before hanging up
            self._pump()
            if self._pump_handle is not None:
                self._pump_handle.cancel()
                self._pump_handle = None
        for link in list(self._links):
            link.close()
        await self._end_tasks()
        for s in self._servers:
            await s.wait_closed()
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        self._ready.clear()
        try:
            self._persist_counts()
            self.store.commit()
            self._persisted()
        except Exception:  # noqa: BLE001
            log.exception("storing counters at stop")
            self.store.rollback()
        self._forget()

    async def _end_tasks(self) -> None:
        """Cancel the serial readers and the housekeeping task, and wait until they are gone."""
        tasks = [*self._serial_tasks, *([self._house] if self._house else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _forget(self) -> None:
        self._servers.clear()
        self._serial_tasks.clear()
        self._house = None
        self._loop = None

    async def kill(self) -> None:
        """Die as a SIGKILL would kill the process: frames received but not yet committed are neither stored
        nor acknowledged, connections are reset, the open transaction is rolled back. (Tests and the demo's
        fleet use it; the meters must resend what was lost, and the database must hold no half batch.)"""
        self._stopping = True
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        self._ready.clear()
        for srv in self._servers:
            srv.close()
        for link in list(self._links):
            t = link.transport
            if t is not None and hasattr(t, "abort"):
                t.abort()  # TCP reset: unsent acknowledgements die with the process
            else:
                link.close()
        await self._end_tasks()
        self.store.rollback()
        self._forget()

    async def __aenter__(self) -> Concentrator:
        self._ensure_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
