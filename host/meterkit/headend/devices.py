"""What the concentrator keeps in memory about each meter: a cache of its database rows, reloaded whenever a
transaction fails, plus what only the running process knows (its connection, outages being matched, rows to
scan for gaps); and the registry of public keys that frames are verified with."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from meterkit import wire as P
from meterkit.headend.acks import Watermark
from meterkit.store.api import DEFAULT_PERIOD_S, GAP_SETTLED, Store, StoreError

if TYPE_CHECKING:
    from meterkit.headend.connections import Link

log = logging.getLogger(__name__)

FORGET_UNKNOWN_AFTER = 10000  # unknown kids remembered (so a flood of them cannot grow memory without bound)
WORKING = ("open", "requested")  # frame gaps the concentrator is still working on


class FrameGap:
    """A run of missing sequence numbers being worked on (a row of table gaps, kind 'frames')."""

    __slots__ = ("id", "first", "last", "state", "detected_at", "requested_at", "counter", "attempts")

    def __init__(self, gap_id: int, first: int, last: int, state: str, detected_at: float,
                 requested_at: float | None = None, counter: int | None = None, attempts: int = 0):
        self.id = gap_id
        self.first = first
        self.last = last
        self.state = state  # 'open' or 'requested'
        self.detected_at = detected_at
        self.requested_at = requested_at  # of the latest back-fill command
        self.counter = counter  # ... and its command counter
        self.attempts = attempts


class Device:
    __slots__ = ("id", "name", "period", "last_seen", "counter", "seqs", "online", "frames_stored", "outage",
                 "gaps", "link", "link_at", "matching", "rows_from", "drift", "clock_prev", "clock_asked",
                 "clock_unset", "clock_set_seq", "recovery_at", "drift_at")

    def __init__(self, device_id: bytes):
        self.id = device_id
        self.name: str | None = None
        self.period = DEFAULT_PERIOD_S  # reporting period, s
        self.last_seen: float | None = None  # when its newest frame was stored (injected clock)
        self.counter = 0  # the last command counter signed for it (acks and commands)
        self.seqs = Watermark()
        self.online = False
        self.frames_stored = 0
        self.outage: tuple | None = None  # (id, start, newest seq stored before it) of the open outage
        self.gaps: list[FrameGap] = []
        self.drift: float | None = None  # its clock minus ours, as last measured (headend/clocks.py)
        self.drift_at: float | None = None  # when the open batch measured it (saved with the delivery state)
        # known to this process only (kept across reloads)
        self.link: Link | None = None  # the connection that last delivered a valid frame
        self.link_at: float | None = None  # when that connection delivered its first valid frame
        self.matching: list[tuple] = []  # ended outages: (id, start, end, match until, seq before)
        self.rows_from: int | None = None  # smallest interval end stored since the last interval-gap scan
        self.clock_prev: tuple[int, int, float] | None = None  # (seq, meter time, received) of its last reading
        self.clock_asked: float | None = None  # when an automatic set-time was last queued for it
        self.clock_unset = False  # its newest frame says its clock is not set: it takes set-time commands only
        self.clock_set_seq: int | None = None  # seq of its OK answer to a set-time: older unset flags are stale
        self.recovery_at: float | None = None  # last recovery ack to a connection that showed no fresh frame

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closed


class Devices:
    """Every registered meter the concentrator has met, by device id."""

    def __init__(self, store: Store, guard: P.ReplayGuard, registry_refresh_s: float):
        self._store = store
        self._guard = guard
        self._refresh_s = registry_refresh_s
        self._keys: dict[bytes, Any] = {}
        self._unknown: dict[bytes, float] = {}  # unknown kid -> when the registry was last asked
        self._devs: dict[bytes, Device] = {}
        self._stale: set[bytes] = set()  # cached state the database could not be read again for: read before use
        for rec in store.meters():
            self._keys[rec.device_id] = P.public_from_bytes(rec.public_key)
            self.load(rec.device_id)

    def is_registered(self, kid: bytes) -> bool:
        """A registered meter's kid (as far as this concentrator has looked it up: no database read)."""
        return kid in self._keys

    def public_key(self, kid: bytes) -> Any:
        """The meter's key, or None: an unknown kid asks the database again (`meterkit meters add` may have
        registered it since) at most every `registry_refresh_s` seconds."""
        pub = self._keys.get(kid)
        if pub is not None:
            return pub
        now = time.monotonic()
        t = self._unknown.get(kid)
        if t is not None and now - t < self._refresh_s:
            return None
        rec = self._store.meter(kid)  # StoreUnavailable: not marked unknown; the next frame asks again
        if rec is None:
            if len(self._unknown) > FORGET_UNKNOWN_AFTER:
                self._unknown.clear()
            self._unknown[kid] = now
            return None
        pub = self._keys[kid] = P.public_from_bytes(rec.public_key)
        self._unknown.pop(kid, None)
        return pub

    @property
    def registered(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Device]:
        """Every meter met, as cached (call refresh() first to have none stale)."""
        return iter(list(self._devs.values()))

    def ids(self) -> list[bytes]:
        return list(self._devs)

    def refresh(self) -> None:
        """Read the stale meters again (StoreError when the database still cannot be read)."""
        for dev in list(self._stale):
            self.load(dev)

    def get(self, device_id: bytes) -> Device:
        d = self._devs.get(device_id)
        return d if d is not None and device_id not in self._stale else self.load(device_id)

    def known(self, device_id: bytes) -> Device | None:
        """The device if the concentrator has met it, else None (no database read, unless its cached state is
        stale)."""
        if device_id in self._stale:
            return self.load(device_id)
        return self._devs.get(device_id)

    def hold(self, device_ids: Iterable[bytes]) -> int:
        """In the open transaction: hold these meters' rows until it ends (another concentrator writing them
        waits), and load again each one another concentrator moved on since this process read it (its command
        counter, watermark or frame count differ), so that counters are never signed twice and acks never lag.
        How many were loaded again."""
        moved = 0
        for dev, held in self._store.lock_meters(device_ids).items():
            d = self._devs.get(dev)
            if d is None or dev in self._stale:
                self.load(dev)
            elif held != (d.counter, d.seqs.ack, d.frames_stored):
                self.load(dev)
                moved += 1
        return moved

    def reload(self, device_ids: Iterable[bytes]) -> None:
        """After a failed transaction: the database's state again. When the database cannot be read (it is
        down), the meters' cached state is marked stale and read again before its next use, so that nothing
        acknowledged or signed from memory is ahead of what is stored."""
        ids = list(device_ids)
        self._stale.update(d for d in ids if d in self._devs)
        try:
            for dev in ids:
                self.load(dev)
        except StoreError as e:
            log.info("%d meters' state not read again (%s): read before their next use", len(self._stale), e)

    def load(self, device_id: bytes) -> Device:
        st = self._store
        rec = st.meter(device_id)
        d = Device(device_id)
        old = self._devs.get(device_id)
        if old is not None:
            d.link, d.link_at, d.matching, d.rows_from = old.link, old.link_at, old.matching, old.rows_from
            d.clock_unset = old.clock_unset  # (clock_prev and clock_asked start afresh: a batch that failed and is
            # stored again must be able to measure and ask again)
        if rec is not None:
            d.name, d.period, d.last_seen, d.counter = rec.name, rec.reporting_period_s, rec.last_seen, rec.last_counter
            d.seqs = Watermark(rec.ack_seq, rec.first_seq)
            d.online, d.frames_stored, d.drift = rec.online, rec.frames_stored, rec.clock_drift_s
        self._load_seqs(d)
        hi = st.max_seq(device_id)
        if hi is not None:
            for s in st.seqs_above(device_id, hi - self._guard.window):
                self._guard.record(device_id, s)
        for o in st.outages(device_id, open_only=True):
            d.outage = (o.id, o.start, st.max_seq(device_id, received_to=o.start))
        self._devs[device_id] = d
        self._stale.discard(device_id)
        return d

    def _load_seqs(self, d: Device) -> None:
        """The watermark's ranges: stored numbers above W, and settled gaps; gaps still being worked on."""
        w = d.seqs
        if w.ack is not None:
            for s in self._store.seqs_above(d.id, w.ack):
                w.cover(s, s)
        for g in self._store.gaps(d.id, "frames"):
            if g.state in GAP_SETTLED:
                w.cover(g.first, g.last)
            elif g.state in WORKING:
                d.gaps.append(FrameGap(g.id, g.first, g.last, g.state, g.detected_at, g.requested_at,
                                       g.command_counter, g.attempts))
        w.advance()
