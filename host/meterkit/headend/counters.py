"""The concentrator's counters: what `stats()` shows and table `counters` (and `rejects`) keeps across restarts.

Two kinds of counts, one mechanism, so that no path undoes a count by hand:

- **events** (`count`, `reject`, `noise`) happened whatever the database does: bytes of noise, a forged frame
  refused, a connection opened. They show in `stats()` at once and are written with the next commit that
  succeeds (kept for the one after when a commit fails).
- **outcomes** (`stage`) exist only if the transaction that made them commits: a frame stored, an outage
  declared, a gap filled. They are staged in the open transaction (`transaction()`), shown and written when it
  commits, dropped when it rolls back.

Other writers of events (the security monitor's alerts) join every transaction the same way: `writers` are
asked to write(store) before each commit and told saved(ok) after it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from meterkit.store.api import Store
from meterkit.store.records import RejectRecord

log = logging.getLogger(__name__)

DETAIL_CHARS = 300  # of a reject's last detail kept in the database
# Rejects that name no known meter are kept per source address and reason, never per claimed kid (issue 11:
# 20,000 random kids made 20,000 rows). Distinct sources are bounded too: past MAX_SOURCES, one row for all.
MAX_SOURCES = 1024
OTHER_SOURCES = "(other sources)"


class BoundedSources:
    """Source addresses with rows (or count windows) of their own while there are fewer than MAX_SOURCES, then
    one name for all: spoofed or countless sources must not grow a table or a dict without bound."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def add(self, peer: str) -> None:
        self._seen.add(peer)

    def name(self, peer: str) -> str:
        if peer in self._seen:
            return peer
        if len(self._seen) >= MAX_SOURCES:
            return OTHER_SOURCES
        self._seen.add(peer)
        return peer


class Counters:
    def __init__(self, store: Store, clock: Callable[[], float], known: Callable[[bytes], bool] | None = None):
        self._store = store
        self._clock = clock
        # known(device): a registered meter, whose rejects keep their own rows; None: every device is
        self.known = known
        self._totals: collections.Counter = collections.Counter(store.counters())
        self._reasons: collections.Counter = collections.Counter()  # rejects by reason, all devices and peers
        self._sources = BoundedSources()  # peers with rows of unattributed rejects (device x'')
        for r in store.rejects():
            self._reasons[r.reason] += r.count
            if not r.device_id:
                self._sources.add(r.peer)
        self._unsaved: collections.Counter = collections.Counter()  # events shown, not yet in the database
        self._unsaved_rejects: dict[tuple[bytes, str, str], list] = {}  # -> [count, first at, last at, detail]
        self._staged: collections.Counter | None = None  # outcomes of the open transaction
        self.writers: list[Any] = []  # write(store) in each transaction, saved(ok) after it (headend.monitor)
        # on_reject(device, peer, reason): every refused frame or peer, as it happens (headend.monitor)
        self.on_reject: Callable[[bytes, str, str], None] | None = None

    # -- counting
    def count(self, name: str, n: int = 1) -> None:
        """An event: shown at once, saved with the next commit."""
        self._totals[name] += n
        self._unsaved[name] += n

    def stage(self, name: str, n: int = 1) -> None:
        """An outcome of the open transaction: shown and saved if it commits, forgotten if it rolls back."""
        if self._staged is None:
            raise RuntimeError(f"counter {name!r} staged outside a transaction")
        self._staged[name] += n

    def reject(self, device: bytes, peer: str, reason: str, detail: str) -> None:
        """A refused frame or peer: counted by reason, and in table rejects per (device, peer, reason) for a
        known meter, else per (source, reason) with the claimed kid in the detail."""
        self.count("rejected")
        self._reasons[reason] += 1
        device = bytes(device)
        if self.on_reject is not None:
            self.on_reject(device, peer, reason)
        if device and self.known is not None and not self.known(device):
            detail = f"claimed kid {device.hex()}: {detail}"
            device = b""
        if not device:
            peer = self._source(peer)
        self._unsaved_reject((device, peer, reason), 1, detail[:DETAIL_CHARS])

    def noise(self, peer: str, nbytes: int, segments: int) -> None:
        """Bytes between frames that are not frames (log text, line noise, half frames)."""
        self.count("noise_bytes", nbytes)
        self.count("noise_segments", segments)
        if segments:
            self._unsaved_reject((b"", self._source(peer), "noise"), segments, None)

    def _source(self, peer: str) -> str:
        """The peer's row of unattributed rejects, while there are fewer than MAX_SOURCES; then one for all."""
        return self._sources.name(peer)

    def _unsaved_reject(self, key: tuple[bytes, str, str], n: int, detail: str | None) -> None:
        row = self._unsaved_rejects.get(key)
        now = self._clock()
        if row is None:
            self._unsaved_rejects[key] = [n, now, now, detail]
        else:
            row[0] += n
            row[2] = now
            if detail is not None:
                row[3] = detail

    # -- transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One unit of work on the store. The body writes; then the staged outcomes and the unsaved events are
        written too and the store commits, and only then do the outcomes count. Any exception (the commit's
        included) rolls the store back, drops the outcomes, keeps the events for the next commit, and is
        raised again: the caller knows what else to undo."""
        if self._staged is not None:
            raise RuntimeError("the concentrator's transactions do not nest")
        staged = self._staged = collections.Counter()
        try:
            yield
            self._write(staged)
            self._store.commit()
        except BaseException:
            self._rollback()
            self._saved(False)
            raise
        finally:
            self._staged = None
        self._saved(True)
        self._totals.update(staged)
        self._unsaved.clear()
        self._unsaved_rejects.clear()

    def _write(self, staged: collections.Counter) -> None:
        if self._unsaved_rejects:
            rejects = self._unsaved_rejects.items()
            self._store.add_rejects([RejectRecord(dev, peer, reason, n, first, last, detail)
                                     for (dev, peer, reason), (n, first, last, detail) in rejects])
        deltas = collections.Counter(self._unsaved)
        deltas.update(staged)
        if deltas:
            self._store.add_counters(dict(deltas))
        for w in self.writers:
            w.write(self._store)

    def _saved(self, ok: bool) -> None:
        for w in self.writers:
            w.saved(ok)

    def _rollback(self) -> None:
        try:
            self._store.rollback()
        except Exception:  # noqa: BLE001 - the database is gone: the next transaction will say so
            log.exception("rollback failed")

    # -- reading
    def get(self, name: str) -> int:
        return self._totals[name]

    def snapshot(self) -> dict:
        """The counters since the database was created (only what has been committed, plus events)."""
        out: dict = dict(sorted(self._totals.items()))
        out["rejects"] = dict(sorted(self._reasons.items()))
        return out
