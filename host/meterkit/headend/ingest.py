"""The ingest pipeline: frames waiting on the connections -> verify -> dedupe -> typed records -> store ->
COMMIT -> cumulative acknowledgements.

Batches. Received bytes are deframed at once (connections); verification, storage and acknowledgement happen in
a batch that takes what every connection has waiting (round robin, at most `batch_frames`), stores it in one
transaction, commits, and only then signs one acknowledgement per (connection, meter) of the batch.

Dedupe: the ReplayGuard, then the database's PRIMARY KEY (device, seq) for anything the guard cannot tell;
interval rows by (device, end time). A resent frame that is already stored is counted as a duplicate and
acknowledged again (its first ack was lost) when its connection has shown a fresh frame of the meter (or is a
serial port); on any other connection it is a replay anybody could make: no signed reply ('replay-unanswered',
counted as abuse), but for one recovery acknowledgement per meter per `recovery_ack_s` while the meter's own
connection is gone or silent (docs/security.md, "Replays"). A sequence number already stored with different
content is rejected ('seq-reuse') and never acknowledged. A batch that cannot be stored is not acknowledged:
its connections are closed, so that the meters resend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from meter import events as mevents
from meter import messages as M
from meter.cose import claimed_kid, split
from meterkit import wire as P
from meterkit.headend import faults, storage
from meterkit.headend.acks import ack_frames, ack_ttl
from meterkit.headend.clocks import Clocks
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.connections import Connections, Link
from meterkit.headend.counters import Counters
from meterkit.headend.devices import Device, Devices
from meterkit.headend.dispatch import Dispatch
from meterkit.headend.gaps import FrameGaps
from meterkit.headend.monitor import Monitor
from meterkit.headend.outages import Outages
from meterkit.store.api import MAX_SEQ, Store, StoreError
from meterkit.wire.records import (
    BillingSnapshot,
    CommandResponse,
    Event,
    Frame,
    Hello,
    IntervalRow,
    Reading,
    records_of,
)

log = logging.getLogger(__name__)


def same_message(stored: bytes, received: bytes) -> bool:
    """Equal but perhaps for the signature: ECDSA signatures are malleable ((r, n - s) verifies as well), so a
    resent frame is the same message when its signer and payload are."""
    a, b = split(stored), split(received)  # (kid, payload head, payload, signature)
    return a is not None and b is not None and a[:3] == b[:3]


class _StoredElsewhere(Exception):
    """The database held frames the replay guard did not know (another process wrote them)."""


class _Batch:
    """What one batch brings, once deduplicated."""

    def __init__(self) -> None:
        self.fresh: list[P.Message] = []  # messages not stored before
        self.seqs: dict[bytes, list[int]] = {}  # device -> the sequence numbers of its fresh frames
        self.acks: dict[tuple[Link, bytes], None] = {}  # (connection, device) to acknowledge, in order
        self.new_links: list[bytes] = []  # devices heard on a connection that is new for them
        # its typed records, by kind
        self.frames: list[Frame] = []
        self.readings: list[Reading] = []
        self.intervals: list[IntervalRow] = []
        self.events: list[Event] = []
        self.billing: list[BillingSnapshot] = []
        self.hellos: dict[bytes, Hello] = {}  # device -> its latest hello
        self.all_hellos: list[Hello] = []  # every hello (the security monitor counts restarts)
        self.responses: list[CommandResponse] = []
        self.power_failed: set[bytes] = set()  # devices that say they lost power


class Ingest:
    def __init__(self, config: ConcentratorConfig, store: Store, headend: P.HeadEnd, counters: Counters,
                 devices: Devices, conns: Connections, guard: P.ReplayGuard, frame_gaps: FrameGaps,
                 outages: Outages, dispatch: Dispatch, clock: Callable[[], float], clocks: Clocks | None = None):
        self.config = config
        self.store = store
        self.headend = headend
        self.counters = counters
        self.devices = devices
        self.conns = conns
        self.guard = guard
        self.frame_gaps = frame_gaps
        self.outages = outages
        self.dispatch = dispatch
        self.clock = clock
        self.clocks = clocks
        self._handle: asyncio.Handle | None = None
        self.northbound: list = []  # publishers told of every commit (Concentrator.add_northbound)
        self.monitor: Monitor | None = None  # the security monitor (Concentrator: config.alert_rules)

    # -- scheduling
    def schedule(self) -> None:
        """Frames arrived: a batch runs as soon as the event loop is free."""
        if self._handle is None:
            self._handle = self.conns.loop.call_soon(self.pump)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def drain(self) -> None:
        """Store and acknowledge everything that has arrived (at stop)."""
        self.cancel()
        while self.conns.pending:
            self.pump()
            self.cancel()

    def pump(self) -> None:
        self._handle = None
        verified = self._verify(self.conns.take(self.config.batch_frames))
        if verified:
            try:
                self.store_batch(verified)
            except Exception as e:  # noqa: BLE001 - logged; its meters resend on new connections
                if isinstance(e, StoreError):  # the database is down (before the transaction): no traceback
                    self.counters.count("commit_failures")
                    log.error("batch of %d frames not stored (%s); closing its connections", len(verified), e)
                else:
                    log.exception("storing a batch of %d frames", len(verified))
                for link in {link for link, _ in verified}:
                    link.close()
            finally:
                faults.idle()
        if self.conns.pending:
            self.schedule()

    def _verify(self, chunks: list[tuple[Link, list[bytes]]]) -> list[tuple[Link, P.Message]]:
        verified = []
        verify, lookup, reject = P.verify_and_decode, self.devices.public_key, self.conns.reject
        monitor = self.monitor
        for link, frames in chunks:
            if monitor is not None and link.tcp:
                monitor.frames(link.peer, len(frames))
            done = 0
            for cose in frames:
                if link.closed:  # hung up on (abuse): the rest is not worth a signature check
                    break
                done += 1
                try:
                    m = verify(cose, lookup)
                except P.ProtocolError as e:
                    reject(link, claimed_kid(cose), e.reason, str(e))
                    continue
                except StoreError as e:  # a key not cached, the database down: not the meter's fault
                    self.counters.count("commit_failures")
                    log.error("frames from %s not verified: its key cannot be read (%s); closing the connection",
                              link.peer, e)
                    link.close()  # unacknowledged: the meter sends them again
                    break
                except Exception as e:  # noqa: BLE001 - one bad frame must not stop the others
                    log.exception("verifying a frame from %s", link.peer)
                    reject(link, claimed_kid(cose), "internal-error", repr(e))
                    continue
                if m.seq > MAX_SEQ:
                    reject(link, m.device_id, "seq-range", f"sequence number {m.seq} beyond 2^63 - 1")
                    continue
                verified.append((link, m))
            self.counters.count("frames_received", done)
        return verified

    # -- one batch
    def store_batch(self, received: list[tuple[Link, P.Message]], ask_db: bool = False) -> None:
        """Store one batch of verified messages in one transaction, commit, then acknowledge. ask_db: every
        sequence number is looked up in the database (the replay guard is not enough)."""
        now = self.clock()
        batch = self._accept(received, ask_db, now)
        self._decode(batch)
        if batch.seqs:
            t = self.conns.loop.time() if self.conns.loop else 0.0
            for link, _ in batch.acks:
                link.valid_frame(t)
        answered: list[bytes] = []
        acks: list[tuple[Link, bytes, int, int]] = []
        try:
            with self.counters.transaction():
                faults.entered(batch.seqs)  # off unless METERKIT_FAULTS (the torture suite's phase page)
                moved = self.devices.hold(batch.seqs.keys() | {dev for _, dev in batch.acks})
                if moved:
                    self.counters.count("meters_moved_elsewhere", moved)
                if not storage.write_batch(self.store, now, batch.frames, batch.readings, batch.intervals,
                                           batch.events, batch.billing, batch.hellos.values()):
                    raise _StoredElsewhere
                answered = self._update(batch, now)
                acks = self._acks_to_send(batch)
                acked_only = {dev for _, dev in batch.acks if dev not in batch.seqs}
                storage.save_delivery(self.store, [self.devices.get(dev) for dev in batch.seqs],
                                      [self.devices.get(dev) for dev in acked_only], now)
                self.counters.stage("frames_stored", len(batch.fresh))
                self.counters.stage("batches")
                self.counters.stage("acks_sent", len(acks))
                faults.before_commit(batch.seqs)
        except _StoredElsewhere:
            if ask_db:
                self._failed(batch, RuntimeError("frames of the batch vanished on insert"))
                return
            self.devices.reload(batch.seqs)
            self.store_batch(received, ask_db=True)
            return
        except Exception as e:  # noqa: BLE001 - nothing is acknowledged; the meters resend after a reconnect
            self._failed(batch, e)
            return
        faults.committed(batch.seqs)
        self._committed(batch, acks, answered, now)

    def _accept(self, received: list[tuple[Link, P.Message]], ask_db: bool, now: float) -> _Batch:
        """Drop what is stored already, note which meter is on which connection."""
        batch = _Batch()
        seen: dict[tuple[bytes, int], bytes] = {}
        check, get = self.guard.check, self.devices.get
        last_link = last_dev = seqs = d = None  # a link's frames come one after the other: look up once
        for link, m in received:
            dev, seq = m.device_id, m.seq
            if dev != last_dev:
                d = get(dev)
            stored = seen.get((dev, seq))
            if stored is None:
                ask = ask_db
                try:
                    check(dev, seq)
                except P.Replay:
                    ask = True
                if ask:
                    stored = self.store.frame_raw(dev, seq)
            if stored is not None:
                self._duplicate(batch, link, m, stored, now)
                last_dev = None
                continue
            seen[(dev, seq)] = m.raw
            if dev != last_dev or link is not last_link:
                seqs = batch.seqs.setdefault(dev, [])
                batch.acks[(link, dev)] = None
                if d.link is not link:
                    # on a new connection (its first here too: the cache may be as old as this process): another
                    # concentrator on the same database may have served it meanwhile (its watermark, gaps and
                    # command counter moved on there)
                    d = self.devices.load(dev)
                    d.link_at = now
                    if dev not in batch.new_links:
                        batch.new_links.append(dev)
                d.link = link
                last_dev, last_link = dev, link
            seqs.append(seq)
            batch.fresh.append(m)
        return batch

    def _duplicate(self, batch: _Batch, link: Link, m: P.Message, stored: bytes, now: float) -> None:
        if same_message(stored, m.raw):
            self.counters.count("duplicates")
            d = self.devices.get(m.device_id)
            if self._answers_replay(link, d, now):  # its ack was lost: again
                if d.link is not link and (link, m.device_id) not in batch.acks:
                    # a recovery ack on a connection this process has not served the meter on: another concentrator
                    # may have served it since this process read it (its counter and watermark moved on there)
                    self.devices.load(m.device_id).recovery_at = d.recovery_at
                self.conns.reject(link, m.device_id, "replay", f"sequence number {m.seq} already stored")
                batch.acks[(link, m.device_id)] = None
            else:
                self.counters.count("replays_unanswered")
                self.conns.reject(link, m.device_id, "replay-unanswered",
                                  f"sequence number {m.seq} already stored, on a connection that has shown no "
                                  "fresh frame of this meter: not acknowledged")
        else:
            log.error("device %s reused sequence number %d for a different frame (not acknowledged)",
                      m.device_id.hex(), m.seq)
            self.conns.reject(link, m.device_id, "seq-reuse", f"sequence number {m.seq} stored with other content")

    def _answers_replay(self, link: Link, d: Device, now: float) -> bool:
        """Whether a stored frame resent on `link` earns a signed acknowledgement (docs/security.md, "Replays")."""
        if d.link is link or not link.tcp:  # it showed a fresh frame of the meter here; a serial port is wiring
            return True
        quiet = self.config.recovery_ack_s
        own = d.link
        if own is not None and not own.closed and d.last_seen is not None and now - d.last_seen < quiet:
            return False  # the meter is on its own connection and talking: this is somebody else
        if d.recovery_at is not None and now - d.recovery_at < quiet:
            return False
        d.recovery_at = now  # the meter may be back with nothing but stored frames in its window: one ack
        self.counters.count("recovery_acks")
        return True

    def _decode(self, batch: _Batch) -> None:
        """The fresh messages as typed records, and what the concentrator itself learns from them."""
        for m in batch.fresh:
            batch.frames.append(Frame.of(m))
            if m.status & M.ST_POWER_FAIL:
                batch.power_failed.add(m.device_id)
            records = records_of(m)
            kind = m.kind
            if kind == M.READING:
                batch.readings += records
            elif kind == M.INTERVALS:
                batch.intervals += records
                d = self.devices.get(m.device_id)
                oldest = min(r.end for r in records)
                if d.rows_from is None or oldest < d.rows_from:
                    d.rows_from = oldest
            elif kind == M.EVENT:
                batch.events += records
                if records[0].code == mevents.POWER_UP:
                    batch.power_failed.add(m.device_id)
            elif kind == M.BILLING:
                batch.billing += records
            elif kind == M.HELLO:
                batch.all_hellos += records
                latest = batch.hellos.get(m.device_id)
                if latest is None or latest.seq < m.seq:
                    batch.hellos[m.device_id] = records[0]
            elif kind == M.RESPONSE:
                batch.responses += records

    def _update(self, batch: _Batch, now: float) -> list[bytes]:
        """Watermarks, answers, gaps and outages after the batch's frames (in its transaction); returns the
        meters that answered an operator command or were given a set-time command: the dispatch looks at
        their queue after the commit."""
        for dev, seqs in batch.seqs.items():
            d = self.devices.get(dev)
            d.seqs.accept(seqs)
            d.frames_stored += len(seqs)
        answered = []
        for r in batch.responses:
            if self.dispatch.on_response(self.devices.get(r.device_id), r, now):
                answered.append(r.device_id)
        if self.clocks is not None:  # drift measured; set-time commands queued (sent after the commit)
            answered += self.clocks.observe(batch.fresh, now)
        for dev in batch.seqs:
            d = self.devices.get(dev)
            d.seqs.advance()
            self.frame_gaps.update(d, now)
            d.last_seen = now
            self.outages.heard(d, now, dev in batch.power_failed)
        return answered

    def _acks_to_send(self, batch: _Batch) -> list[tuple[Link, bytes, int, int]]:
        """(connection, device, command counter, W) of each acknowledgement (the counters saved with the batch)."""
        out = []
        for link, dev in batch.acks:
            d = self.devices.get(dev)
            if d.seqs.ack is None or d.seqs.ack < 0:
                continue
            d.counter += 1
            out.append((link, dev, d.counter, d.seqs.ack))
        return out

    def _failed(self, batch: _Batch, e: Exception) -> None:
        self.counters.count("commit_failures")
        log.error("batch of %d frames not stored (%s: %s); closing its connections so that the meters resend",
                  len(batch.fresh), type(e).__name__, e)
        self.devices.reload(batch.seqs.keys() | {dev for _, dev in batch.acks})
        for link, _ in batch.acks:
            link.close()

    def _committed(self, batch: _Batch, acks: list[tuple[Link, bytes, int, int]], answered: list[bytes],
                   now: float) -> None:
        record = self.guard.record
        for dev, seqs in batch.seqs.items():
            for x in seqs:
                record(dev, x)
        ttl, drift = self.config.ack_ttl_s, self.devices.get
        frames = ack_frames(self.headend, [(dev, counter, w, ack_ttl(ttl, drift(dev).drift))
                                           for _, dev, counter, w in acks], now)
        for (link, _, _, _), frame in zip(acks, frames, strict=True):
            link.send(frame)
        new_links = batch.new_links + [dev for dev in answered if dev not in batch.new_links]
        if new_links:  # a new connection, or an answer that frees the meter for its next queued command
            self.dispatch.send_queued(now, new_links)
        if self.monitor is not None:  # after the acks: what was stored, to the security monitor
            try:
                self.monitor.committed(batch.seqs, batch.frames, batch.readings, batch.events,
                                       batch.all_hellos, batch.responses, now)
            except Exception:  # noqa: BLE001 - the monitor's fault never touches ingest
                log.exception("security monitor")
        self._tell_northbound(batch)

    def _tell_northbound(self, batch: _Batch) -> None:
        """After the commit and the acks: what was stored, to the publishers (MQTT); they never block."""
        for sink in self.northbound:
            try:
                sink.committed(batch.frames, batch.readings, list(batch.hellos.values()))
            except Exception:  # noqa: BLE001 - a publisher's fault never touches ingest
                log.exception("northbound publisher %r", sink)
