"""Who holds a connection, and how they come in (issue 11, finding 6; docs/concentrator.md, "Connection limits").

A TCP connection is *known* once it carried a verified frame of a registered meter (Link.valid_frame), *unknown*
until then. The limits, decided at accept time, before a transport (or any work) is spent on a connection:

- in all at most `max_connections` (default: the process's file-descriptor limit less FD_HEADROOM);
- unknown connections at most `max_connections - known_reserve`: the reserve is for meters that showed who they
  are. One more unknown connection closes the oldest unknown one (a meter that reconnects is new and sends at
  once; a connection that sat silent is the likelier attacker);
- at most `max_per_source` unknown connections from one address: one more closes the oldest from that address,
  so one address cannot push out the others;
- when every connection is known and the total is reached, a new one is refused (closed at once);
- an unknown connection is hung up on after `auth_timeout` s without a verified frame (a known one: idle_timeout).

The listening sockets are served by Listener, not loop.create_server: asyncio's own accept loop (3.10-3.12) goes on
calling accept() after EMFILE, logs a traceback and schedules a retry for every attempt: 1.4 million log lines in
12 s under a flood (docs/security.md). Listener accepts at most ACCEPT_BURST connections per readiness event,
closes refused ones before the next accept, and on an accept error (descriptors used up elsewhere) closes the
oldest unknown connection and pauses for ACCEPT_RETRY_S; every repeating
warning here is logged once per `limit_log_s` with a count (Throttled).
"""

from __future__ import annotations

import logging
import resource
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters

if TYPE_CHECKING:
    from meterkit.headend.connections import Link

log = logging.getLogger(__name__)

FD_HEADROOM = 64  # descriptors kept for the database, the listening sockets, serial ports and an accept burst
ACCEPT_BURST = 32  # connections accepted per readiness event of a listening socket
ACCEPT_RETRY_S = 1.0  # pause after an accept error (EMFILE, ENFILE, ENOBUFS, ENOMEM ...)


def max_connections(config: ConcentratorConfig) -> int:
    """The configured total, at most what the file-descriptor limit leaves (at least 8): the default."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = max(8, (65536 if soft == resource.RLIM_INFINITY else soft) - FD_HEADROOM)
    if config.max_connections is None:
        return room
    if config.max_connections > room:
        log.warning("max_connections %d: the file-descriptor limit (%d) leaves room for %d; using that (raise "
                    "the limit: ulimit -n, LimitNOFILE=)", config.max_connections, soft, room)
        return room
    return config.max_connections


class Throttled:
    """A warning that may repeat fast: logged when it first happens, then at most once per interval with the
    number of times since (flush() logs what is left once the interval has passed)."""

    def __init__(self, what: str, interval_s: float, clock: Callable[[], float]):
        self.what = what
        self.interval_s = interval_s
        self.clock = clock
        self.count = 0
        self.detail = ""
        self.next_at = 0.0

    def hit(self, detail: str) -> None:
        self.count += 1
        self.detail = detail
        self.flush()

    def flush(self) -> None:
        t = self.clock()
        if self.count and t >= self.next_at:
            more = f" ({self.count} times in the last {self.interval_s:g} s)" if self.next_at else ""
            log.warning("%s%s; latest: %s", self.what, more, self.detail)
            self.count = 0
            self.next_at = t + self.interval_s


class Admission:
    """The connection limits above: admit() at accept time, known() and drop() as connections change."""

    def __init__(self, config: ConcentratorConfig, counters: Counters, clock: Callable[[], float]):
        self.counters = counters
        self.total_max = max_connections(config)
        self.reserve = min(config.known_reserve, self.total_max // 2)
        self.per_source = config.max_per_source
        self.total = 0
        self.unknown: dict[Link, None] = {}  # oldest first
        self.by_source: dict[str, dict[Link, None]] = {}  # unknown connections per address, oldest first
        every = config.limit_log_s
        first = min(config.auth_timeout, config.idle_timeout)
        self.logs = {
            "refused": Throttled(f"connection refused: {self.total_max} connections open, all of known meters "
                                 "(max_connections)", every, clock),
            "source": Throttled(f"closed an unauthenticated connection: more than {self.per_source} from one "
                                "address (max_per_source)", every, clock),
            "unknown": Throttled(f"closed the oldest unauthenticated connection: {self.total_max - self.reserve} "
                                 f"of them open (max_connections less known_reserve)", every, clock),
            "auth": Throttled(f"closed an unauthenticated connection: no verified frame within {first:g} s "
                              "(auth_timeout)", every, clock),
            "accept": Throttled(f"accept() failed; not accepting for {ACCEPT_RETRY_S:g} s", every, clock),
        }

    def admit(self, peer: str) -> Link | bool:
        """May a new connection from `peer` come in? False: refuse it; True: yes; a Link: yes, and that unknown
        connection (no longer counted) is to be closed to make room."""
        mine = self.by_source.get(peer)
        if self.per_source is not None and mine and len(mine) >= self.per_source:
            return self._evict(next(iter(mine)), "source", peer)
        if len(self.unknown) >= self.total_max - self.reserve or self.total >= self.total_max:
            victim = next(iter(self.unknown), None)
            if victim is None:
                self.counters.count("connections_refused")
                self.logs["refused"].hit(peer)
                return False
            return self._evict(victim, "unknown", f"{victim.peer} made way for {peer}")
        return True

    def _evict(self, victim: Link, why: str, detail: str) -> Link:
        self.counters.count("connections_evicted")
        self.logs[why].hit(detail)
        self.drop(victim)
        return victim

    def make_room(self) -> Link | None:
        """The oldest unknown connection, no longer counted (to be closed), when there is one: accept() failed
        (logged as such)."""
        victim = next(iter(self.unknown), None)
        if victim is not None:
            self.counters.count("connections_evicted")
            self.drop(victim)
        return victim

    def add(self, link: Link) -> None:
        link.admitted = True
        self.total += 1
        self.unknown[link] = None
        self.by_source.setdefault(link.peer, {})[link] = None

    def known(self, link: Link) -> None:
        """The connection carried a verified frame of a registered meter: it counts in the total only."""
        if link in self.unknown:
            del self.unknown[link]
            mine = self.by_source[link.peer]
            del mine[link]
            if not mine:
                del self.by_source[link.peer]

    def drop(self, link: Link) -> None:
        """The connection is gone (or being closed): no longer counted."""
        if link.admitted:
            link.admitted = False
            self.total -= 1
            self.known(link)

    def flush(self) -> None:
        for t in self.logs.values():
            t.flush()


class Listener:
    """A listening TCP socket on the event loop: at most ACCEPT_BURST accepts per readiness event, each handed
    to on_accept(sock, peer address) at once; after an accept error, on_error(why) and a pause of ACCEPT_RETRY_S."""

    def __init__(self, loop: Any, host: str, port: int, backlog: int,
                 on_accept: Callable[[socket.socket, str], None], on_error: Callable[[str], None],
                 errors: Throttled, counters: Counters):
        family, _, _, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
        self.sock = socket.create_server(addr[:2], family=family, backlog=backlog)
        self.sock.setblocking(False)
        self.loop = loop
        self.on_accept = on_accept
        self.on_error = on_error
        self.errors = errors
        self.counters = counters
        self.paused = False
        self.closed = False
        loop.add_reader(self.sock.fileno(), self._ready)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def _ready(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:  # EMFILE and the like: asyncio's loop would retry (and log) at once
                self.counters.count("accept_errors")
                self.errors.hit(str(e))
                self.on_error(str(e))
                self.paused = True
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            self.on_accept(conn, str(addr[0]) if addr else "tcp")

    def _resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.loop.add_reader(self.sock.fileno(), self._ready)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.paused:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
