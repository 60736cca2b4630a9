"""Connections: TCP peers and serial ports (pyserial), deframed at once, with the limits that keep a bad peer
from hurting the others.

Every connection (a TCP peer, or one opening of a serial port, re-opened when the port comes back after an
unplug) is a `Link`: received bytes go through its own bounded Deframer (noise counted) into its backlog of
frames, which the ingest takes in turn (`Connections.take`, round robin). A TCP peer that stays silent (no
valid frame within `idle_timeout`; `auth_timeout` before its first), floods noise (`max_noise` bytes without a
valid frame), sends `max_rejects` rejected frames or does not read its acknowledgements (`max_unread`) is
disconnected; reading is
rate limited per TCP peer (`max_rate` bytes/s, token bucket) and paused while a connection has `backlog_limit`
frames waiting (TCP backpressure). How many TCP connections, and which go first when there are too many, is
headend/admission.py's (caps per address and in total, a reserve for known meters, its own accept loop). A serial
port is wiring the owner trusts: none of these limits apply.

With TLS (ConcentratorConfig.tls, headend/tls.py) every TCP connection does its handshake before its Link is made;
one that fails (a plaintext meter, a refused certificate, garbage, a handshake cut short or not done within
tls_handshake_timeout) is closed and counted as a reject of its address. Behind a load balancer the PROXY header
comes in clear before the meter's TLS: it is read off the socket first, exactly its bytes, then TLS starts on
what follows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from meter.frame import Deframer
from meterkit.headend.admission import Admission, Listener
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.proxyheader import HEAD, ProxyHeaderError, parse_proxy_header
from meterkit.headend.tls import refusal

log = logging.getLogger(__name__)

READ_BUFFER = 16 * 1024  # one recv per readiness event, shared by all connections (used synchronously)
SERIAL_WRITE_BUFFER = 64 * 1024  # bytes queued for a serial port that does not drain; more are dropped
LOG_REJECTS_PER_LINK = 10  # then only every LOG_EVERY-th, so a flood cannot flood the log
LOG_EVERY = 1000
PAUSE_BACKLOG = 1  # why reading is paused (bits)
PAUSE_RATE = 2
NOT_ABUSE = ("replay", "idle-timeout")  # rejects that do not count towards max_rejects
HELD_POLL_S = 0.1  # how soon a port lent to a tool is opened again after it is given back


class Link(asyncio.BufferedProtocol):
    """One connection: a TCP peer, or one opening of a serial port."""

    def __init__(self, conns: Connections, peer: str = "", tcp: bool = True):
        self.conns = conns
        self.peer = peer
        self.tcp = tcp
        self.transport: Any = None
        self.deframer = Deframer()
        self.backlog: collections.deque = collections.deque()  # frames (COSE bytes) waiting for the ingest
        self.closed = False
        self.paused = 0  # PAUSE_* bits
        self.last_valid = 0.0  # loop time of the last valid frame (or of the connection)
        self.noise_since_valid = 0
        self.rejects = 0
        self.tokens = float(conns.config.max_burst)  # rate limit: bytes it may send now
        self.token_t = 0.0
        self.known = False  # carried a verified frame of a registered meter (headend/admission.py)
        self.admitted = False  # counted by the admission
        self.proxy_header: bytearray | None = None  # from a load balancer: its header not read yet
        self.starting: asyncio.Task | None = None  # its transport being made (with TLS: the handshake)

    # asyncio protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.closed:  # made way for another connection before its transport was made
            transport.abort()
            return
        if self.tcp and not self.peer:  # (named at accept, or by a PROXY header read before TLS)
            pn = transport.get_extra_info("peername")
            self.peer = str(pn[0]) if isinstance(pn, tuple) and pn else "tcp"
        self.conns.made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conns.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.conns.received(self, self.conns.read_buffer[:nbytes])

    def data_received(self, data: bytes) -> None:
        self.conns.received(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.lost(self)

    # used by the concentrator
    def valid_frame(self, t: float) -> None:
        """A frame from this peer verified (loop time t): it is no idle or noisy peer."""
        self.noise_since_valid = 0
        self.last_valid = t
        if not self.known:
            self.known = True
            self.conns.admission.known(self)

    def send(self, data: bytes) -> bool:
        if self.closed or self.transport is None:
            return False
        self.transport.write(data)
        if self.tcp and self.transport.get_write_buffer_size() > self.conns.config.max_unread:
            self.conns.reject(self, b"", "not-reading", "the peer does not read its acknowledgements")
            self.close()
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            elif self.starting is not None:
                self.starting.cancel()  # evicted during its TLS handshake: the handshake ends here

    def abort(self) -> None:
        """A TCP reset: what is unsent dies with the connection."""
        if self.transport is not None and hasattr(self.transport, "abort"):
            self.closed = True
            self.transport.abort()
        else:
            self.close()

    def pause(self, why: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= why

    def resume(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resume_reading()


class SerialTransport:
    """The transport side of a serial port opened by pyserial: non-blocking reads and writes of its file
    descriptor from the event loop (add_reader/add_writer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ser: Any, link: Link, counters: Counters):
        self.loop = loop
        self.ser = ser
        self.fd = ser.fileno()
        self.link = link
        self.counters = counters
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
        if len(self.wbuf) + len(data) > SERIAL_WRITE_BUFFER:
            self.counters.count("serial_write_dropped", len(data))
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


class Connections:
    """The listening sockets, the serial ports and every open connection, with the frames waiting on them.

    on_ready() is called when frames arrive; on_lost(link) when a connection is gone."""

    def __init__(self, config: ConcentratorConfig, counters: Counters, on_ready: Callable[[], None],
                 on_lost: Callable[[Link], None]):
        self.config = config
        self.counters = counters
        self._on_ready = on_ready
        self._on_lost = on_lost
        self.read_buffer = memoryview(bytearray(READ_BUFFER))
        self.links: set[Link] = set()
        self._ready: dict[Link, None] = {}  # links with frames waiting, in arrival order
        self.admission = Admission(config, counters, time.monotonic)
        self._listeners: list[Listener] = []
        self._serial: dict[str, SerialTransport | None] = {}
        self._held: set[str] = set()  # serial ports lent to a tool (headend.handover): closed until given back
        self._serial_tasks: list[asyncio.Task] = []
        self._starting: set[Link] = set()  # accepted, transport not made yet (with TLS: in the handshake)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.on_connection: Callable[[str], None] | None = None  # a TCP peer's address (headend.monitor)

    # -- from the links
    def made(self, link: Link) -> None:
        link.last_valid = link.token_t = (self.loop or asyncio.get_running_loop()).time()
        self.links.add(link)
        self.counters.count("connections")
        if link.tcp and link.proxy_header is None and self.on_connection is not None:
            self.on_connection(link.peer)  # (behind a load balancer: once its header names the peer)

    def lost(self, link: Link) -> None:
        self.admission.drop(link)
        self.links.discard(link)
        self._ready.pop(link, None)
        link.backlog.clear()
        self._on_lost(link)

    def received(self, link: Link, data: Any) -> None:
        if link.closed:
            return
        if link.proxy_header is not None:
            data = self._proxy_header(link, data)
            if not data:
                return
        df = link.deframer
        noise0, segments0 = df.noise, df.noise_segments
        frames = df.feed(data)
        if df.noise != noise0 and not self._noise(link, df.noise - noise0, df.noise_segments - segments0):
            return
        if link.tcp and self.config.max_rate:
            self._spend(link, len(data))
        if frames:
            link.backlog.extend(frames)
            self._ready[link] = None
            if len(link.backlog) >= self.config.backlog_limit:
                link.pause(PAUSE_BACKLOG)
            self._on_ready()

    def _proxy_header(self, link: Link, data: Any) -> bytes:
        """A load balancer's connection: its PROXY header names the meter's address, under which it is admitted
        now; what follows the header (b'' until then)."""
        buf = link.proxy_header
        buf += data
        try:
            got = parse_proxy_header(buf)
        except ProxyHeaderError as e:
            self.reject(link, b"", "proxy-header", f"from load balancer {link.peer}: {e}")
            link.close()
            return b""
        if got is None:
            return b""
        peer, used = got
        if not self._proxied(link, peer):
            link.close()
            return b""
        return bytes(buf[used:])

    def _proxied(self, link: Link, peer: str) -> bool:
        """The PROXY header named the meter's address: admit the connection under it (False: refused)."""
        link.proxy_header = None
        link.peer = peer or link.peer  # LOCAL: the balancer's own connection
        if self.on_connection is not None:
            self.on_connection(link.peer)
        verdict = self.admission.admit(link.peer)
        if verdict is False:
            return False
        if verdict is not True:
            verdict.abort()
        self.admission.add(link)
        return True

    async def _read_proxy_header(self, link: Link, sock: socket.socket) -> bool:
        """TLS behind a load balancer: the PROXY header, read off the socket before the handshake (not a byte
        of the TLS after it), and the connection admitted under the meter's address. False: closed."""
        async def header() -> tuple[str, int] | None:
            buf = bytearray()
            want = HEAD
            while (got := parse_proxy_header(buf) if len(buf) >= HEAD else None) is None:
                if len(buf) >= HEAD:
                    want = HEAD + int.from_bytes(buf[14:16], "big")
                chunk = await self.loop.sock_recv(sock, want - len(buf))
                if not chunk:
                    return None
                buf += chunk
            return got

        try:
            got = await asyncio.wait_for(header(), self.config.auth_timeout)
        except (ProxyHeaderError, asyncio.TimeoutError) as e:
            why = e if isinstance(e, ProxyHeaderError) else f"no PROXY header within {self.config.auth_timeout:g} s"
            self.reject(link, b"", "proxy-header", f"from load balancer {link.peer}: {why}")
            return False
        except OSError:
            return False
        return got is not None and self._proxied(link, got[0])

    def _noise(self, link: Link, nbytes: int, segments: int) -> bool:
        """Count noise; False when the peer floods it (hung up)."""
        self.counters.noise(link.peer, nbytes, segments)
        link.noise_since_valid += nbytes
        if link.tcp and link.noise_since_valid > self.config.max_noise:
            self.reject(link, b"", "noise-flood", f"{link.noise_since_valid} bytes of noise, no valid frame")
            link.close()
            return False
        return True

    def _spend(self, link: Link, nbytes: int) -> None:
        """The rate limit: a token bucket per TCP peer; reading pauses until the bucket is positive again."""
        cfg = self.config
        now = self.loop.time()
        link.tokens = min(cfg.max_burst, link.tokens + (now - link.token_t) * cfg.max_rate) - nbytes
        link.token_t = now
        if link.tokens < 0:
            self.counters.count("rate_limited")
            link.pause(PAUSE_RATE)
            self.loop.call_later(-link.tokens / cfg.max_rate, link.resume, PAUSE_RATE)

    def reject(self, link: Link | None, device: bytes, reason: str, detail: str) -> None:
        """Count and log a refused frame or peer; hang up on a TCP peer that sends too many."""
        peer = link.peer if link is not None else ""
        self.counters.reject(device, peer, reason, detail)
        n = link.rejects if link is not None else 0
        if n < LOG_REJECTS_PER_LINK or n % LOG_EVERY == 0:
            log.log(logging.INFO if reason == "replay" else logging.WARNING, "rejected from %s%s: %s (%s)",
                    peer or "?", f" device {device.hex()}" if device else "", reason, detail)
        if link is not None and reason not in NOT_ABUSE:
            link.rejects += 1
            if link.tcp and link.rejects >= self.config.max_rejects and not link.closed:
                log.warning("closing %s: %d rejected frames", peer, link.rejects)
                self.counters.count("closed_abusive")
                link.close()

    # -- to the ingest
    @property
    def pending(self) -> bool:
        return bool(self._ready)

    def take(self, budget: int) -> list[tuple[Link, list[bytes]]]:
        """Up to `budget` waiting frames, at most `per_link` from each connection in turn (round robin)."""
        out = []
        ready, per_link, limit = self._ready, self.config.per_link, self.config.backlog_limit
        while budget > 0 and ready:
            for link in list(ready):
                bl = link.backlog
                if link.closed:  # hung up on (abuse): the rest is not worth a signature check
                    bl.clear()
                    del ready[link]
                    continue
                n = min(per_link, budget, len(bl))
                budget -= n
                out.append((link, [bl.popleft() for _ in range(n)]))
                del ready[link]
                if bl:
                    ready[link] = None  # to the back of the queue
                if len(bl) < limit:
                    link.resume(PAUSE_BACKLOG)
                if budget <= 0:
                    break
        return out

    def drop_waiting(self) -> None:
        self._ready.clear()

    # -- listening
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stopping = False

    async def listen(self, host: str, port: int, backlog: int) -> tuple[str, int]:
        lsn = Listener(self.loop, host, port, backlog, self._accept, self._accept_failed, self.admission.logs["accept"],
                       self.counters)
        self._listeners.append(lsn)
        return lsn.address

    def _accept(self, sock: socket.socket, peer: str) -> None:
        """A connection just accepted: admitted (perhaps closing an unknown one to make room) or closed at once;
        from a load balancer, admitted once its PROXY header has said whose it is."""
        if peer in self.config.proxy_from:
            link = Link(self, peer)
            link.proxy_header = bytearray()
        else:
            verdict = self.admission.admit(peer)
            if verdict is False:
                sock.close()
                return
            if verdict is not True:
                verdict.abort()
            link = Link(self, peer)
            self.admission.add(link)
        sock.setblocking(False)
        self._starting.add(link)
        link.starting = self.loop.create_task(self._start(link, sock))

    def _accept_failed(self, _why: str) -> None:
        victim = self.admission.make_room()
        if victim is not None:
            victim.abort()

    async def _start(self, link: Link, sock: socket.socket) -> None:
        tls = self.config.tls
        try:
            if tls is not None and link.proxy_header is not None and not await self._read_proxy_header(link, sock):
                link.closed = True
            elif tls is not None and not await self._tls_hello(link, sock):
                link.closed = True
            else:
                timeout = self.config.tls_handshake_timeout if tls is not None else None
                await self.loop.connect_accepted_socket(lambda: link, sock=sock, ssl=tls,
                                                        ssl_handshake_timeout=timeout)
                if tls is not None:
                    self.counters.count("tls_sessions")
        except asyncio.CancelledError:
            link.closed = True  # evicted, or the concentrator stops
        except Exception as e:  # noqa: BLE001 - the peer went away before its transport was made, or failed TLS
            if tls is not None and link.transport is None and not link.closed:
                self.reject(link, b"", *refusal(e))
            else:
                log.debug("connection from %s lost at once: %r", link.peer, e)
        finally:
            link.starting = None
            self._starting.discard(link)
            if link.transport is None:
                sock.close()
                self.admission.drop(link)

    async def _tls_hello(self, link: Link, sock: socket.socket) -> bool:
        """Does the peer begin a TLS handshake? Its first byte, peeked (left for the handshake): none before it
        leaves (a load balancer's health check, a port scan) is closed quietly, as a silent connection is without
        TLS; one that is not a TLS handshake record (0x16) is a plaintext client, refused at once."""
        ready = self.loop.create_future()
        fd = sock.fileno()
        self.loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, self.config.tls_handshake_timeout)
            first = sock.recv(1, socket.MSG_PEEK)
        except asyncio.TimeoutError:
            self.reject(link, b"", "tls-handshake", f"no TLS hello within {self.config.tls_handshake_timeout:g} s")
            return False
        except OSError:
            return False
        finally:
            self.loop.remove_reader(fd)
        if first and first != b"\x16":
            self.reject(link, b"", "tls-plaintext", f"not TLS (first byte {first.hex()})")
        return first == b"\x16"

    def add_serial(self, url: str) -> None:
        self._serial[url] = None
        self._serial_tasks.append(self.loop.create_task(self._serve_serial(url)))

    def serial_open(self, url: str) -> bool:
        return self._serial.get(url) is not None

    def serving(self, port: str) -> str | None:
        """The serial URL this concentrator reads that is `port` (links resolved), or None."""
        want = os.path.realpath(port)
        return next((url for url in self._serial if url == port or os.path.realpath(url) == want), None)

    def hold(self, url: str) -> None:
        """Let go of a serial port (closed now, not reopened) until unhold()."""
        self._held.add(url)
        tr = self._serial.get(url)
        if tr is not None:
            tr.close()
        self.counters.count("serial_released")

    def unhold(self, url: str) -> None:
        self._held.discard(url)

    async def _serve_serial(self, url: str) -> None:
        import serial

        announced = None
        while not self.stopping:
            if url in self._held:  # lent to a tool: wait until it gives the port back
                await asyncio.sleep(HELD_POLL_S)
                continue
            try:
                ser = serial.serial_for_url(url, baudrate=self.config.baudrate, timeout=0)
            except (serial.SerialException, OSError, ValueError) as e:
                if announced != "down":
                    log.warning("serial %s: cannot open (%s); retrying every %g s", url, e, self.config.reconnect_s)
                    announced = "down"
                await asyncio.sleep(self.config.reconnect_s)
                continue
            announced = "up"
            exc = await self._serial_session(url, ser)
            if self.stopping:
                break
            if url in self._held:
                continue
            self.counters.count("serial_lost")
            log.warning("serial %s: lost (%s); reopening", url, exc or "end of file")
            await asyncio.sleep(self.config.reconnect_s)

    async def _serial_session(self, url: str, ser: Any) -> Exception | None:
        """One opening of a serial port, until it is lost."""
        self.counters.count("serial_opens")
        log.info("serial %s: open", url)
        tr = SerialTransport(self.loop, ser, Link(self, f"serial:{url}", tcp=False), self.counters)
        self._serial[url] = tr
        tr.start()
        try:
            return await tr.lost
        except asyncio.CancelledError:
            tr.close()
            raise
        finally:
            self._serial[url] = None

    def sweep_idle(self, t: float) -> None:
        """Hang up on TCP peers that sent no valid frame for `idle_timeout`, or none at all for `auth_timeout`
        (t: loop time now); log what the admission counted since."""
        limit = self.config.idle_timeout
        first = min(limit, self.config.auth_timeout)
        for link in list(self.links):
            if not link.tcp or link.closed:
                continue
            if not link.known and t - link.last_valid > first:
                # counted like any idle peer, but logged once per interval: a flood's worth of them at once
                self.counters.count("idle_closed")
                self.counters.count("auth_timeout_closed")
                self.counters.reject(b"", link.peer, "idle-timeout", f"no verified frame within {first:g} s")
                self.admission.logs["auth"].hit(link.peer)
                link.close()
            elif t - link.last_valid > limit:
                self.counters.count("idle_closed")
                self.reject(link, b"", "idle-timeout", f"no valid frame for {limit:g} s")
                link.close()
        self.admission.flush()

    # -- stopping
    def stop_listening(self) -> None:
        self.stopping = True
        for lsn in self._listeners:
            lsn.close()

    def close_all(self, abort: bool = False) -> None:
        for link in list(self._starting):
            link.close()
        for link in list(self.links):
            if abort:
                link.abort()
            else:
                link.close()

    def serial_tasks(self) -> list[asyncio.Task]:
        return list(self._serial_tasks)

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)  # the listeners closed at once; the connections' transports close on the next turn

    def forget(self) -> None:
        self._listeners.clear()
        self._serial_tasks.clear()
        self.loop = None
