"""The security monitor (intrusion detection at the head-end, docs/alerts.md): alerts from what the concentrator
already sees, stored in table alerts, shown by `meterkit alerts`, published to MQTT when that is configured.

Signals come in two ways, both cheap and none on the way to an acknowledgement:

- as they happen (Counters' rejects, Connections' new connections, the ingest's frames per connection): refused
  frames, replays, floods, connection storms, per meter and per source address;
- after each ingest commit, from what was stored (`committed`: meterwatch.MeterWatch): hellos, events,
  command answers, readings (clocks, reboots, firmware, tamper, refusals, consumption).

An alert occurrence is kept in memory, folded per (rule, meter, source), and written with the next transaction
the concentrator commits (Counters.transaction: an ingest batch, the housekeeping tick every tick_s, a dispatch):
a failed commit keeps it for the one after, so none is lost to a database error, and a flood of a million frames
is one row with a count (the store folds it into the open alert of its rule, meter and source). Raising one is
logged (WARNING, once per key per `log_every_s`); publishers (the MQTT bridge) hear of each after its commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from meter import cbor as mcbor
from meter import messages as M
from meter.cose import split
from meterkit.headend.alertrules import AlertRules, CountRule
from meterkit.headend.counters import BoundedSources
from meterkit.headend.meterwatch import MeterWatch
from meterkit.store.api import Store
from meterkit.store.records import AlertRecord
from meterkit.wire.records import CommandResponse, Event, Frame, Hello, Reading

log = logging.getLogger(__name__)

# reject reasons that are no authentication failure: a meter's own resend, replays (rule replay), noise and what
# the connection limits do
NOT_AUTH = frozenset({"replay", "replay-unanswered", "seq-reuse", "noise", "noise-flood", "idle-timeout",
                      "not-reading", "proxy-header", "internal-error", "seq-range"})
REPLAYS = frozenset({"replay-unanswered", "seq-reuse"})
MAX_WINDOWS = 8192  # windows kept before the expired ones are dropped
DETAIL_CHARS = 300

Key = tuple[str, bytes, str]  # (rule, device or b"", source or "")


class FirmwareExpectation(Protocol):
    """What knows which firmware a meter is expected to run (an operator's allow-list, a rollout record):
    Monitor.expect_firmware(source) adds one; a firmware change any source expects raises nothing."""

    def expected(self, device_id: bytes, firmware: str, now: float) -> bool: ...


class AllowList:
    """The rules file's firmware.allowed: these versions are expected on every meter."""

    def __init__(self, versions: Iterable[str]):
        self.versions = frozenset(versions)

    def expected(self, device_id: bytes, firmware: str, now: float) -> bool:
        return firmware in self.versions


class ActivatedUpdates:
    """A signed firmware image this head-end activated on the meter (OP_FW_ACTIVATE answered OK, `meterkit
    firmware push`) within window_s: the firmware change it brings, or its rollback, is expected. A firmware-key
    rotation is activated the same way but changes no firmware: it expects nothing."""

    def __init__(self, store: Store, window_s: float = 86400.0):
        self.store = store
        self.window_s = window_s

    def expected(self, device_id: bytes, firmware: str, now: float) -> bool:
        entries = self.store.queued_commands(device_id, states=("answered",))
        activated = {q.note for q in entries if q.op == M.OP_FW_ACTIVATE and q.result == M.RESULT_OK
                     and q.answered_at is not None and now - q.answered_at <= self.window_s}
        # the delivery's manifest (queued with the same note, meterkit.firmware.rollout) says what it was
        return any(q.op == M.OP_FW_MANIFEST and q.note in activated and _payload_format(q.args) != M.FW_KEY
                   for q in entries)


def _payload_format(args: dict | None) -> int | None:
    """The payload format a queued manifest names (its signature was checked when it was queued)."""
    try:
        fields = mcbor.decode(split(bytes.fromhex(args[M.A_MANIFEST]))[2])
        return fields.get(M.FWM_PAYLOAD)
    except (TypeError, ValueError, KeyError, AttributeError, mcbor.DecodeError):
        return None


class Monitor:
    def __init__(self, rules: AlertRules, store: Store, clock: Callable[[], float],
                 known: Callable[[bytes], bool] | None = None, log_every_s: float = 60.0):
        self.rules = rules
        self.store = store
        self.clock = clock
        self.known = known  # a registered meter's id (rejects of others are per source only)
        self.log_every_s = log_every_s
        self.firmware_sources: list[FirmwareExpectation] = [AllowList(rules.firmware.allowed)]
        self.sinks: list[Callable[[list[AlertRecord]], None]] = []  # told of alerts after their commit
        self.watch = MeterWatch(rules, self)
        self._windows: dict[Key, list] = {}  # -> [window start, count]
        self._pending: dict[Key, list] = {}  # -> [count, first at, last at, severity, detail]
        self._writing: dict[Key, list] | None = None
        self._written: list[AlertRecord] = []
        self._logged: dict[Key, float] = {}
        self._sources = BoundedSources()  # source addresses with windows of their own; then one for all
        self.raised = 0  # occurrences raised since start (stats)

    # -- firmware expectations (a rollout record registers itself here)
    def expect_firmware(self, source: FirmwareExpectation) -> None:
        self.firmware_sources.append(source)

    def firmware_expected(self, device_id: bytes, firmware: str, now: float) -> bool:
        return any(s.expected(device_id, firmware, now) for s in self.firmware_sources)

    # -- raising
    def hit(self, name: str, rule: CountRule, device: bytes, source: str, t: float, detail: str, n: int = 1,
            now: float | None = None) -> None:
        """n occurrences at time t (meter time for what a meter reports, else the concentrator's): raised once
        rule.count of them fall within rule.window_s of the first."""
        if not rule.enabled:
            return
        key = (name, device, source)
        w = self._windows.get(key)
        if w is None or t - w[0] > rule.window_s:
            if len(self._windows) >= MAX_WINDOWS:
                self._prune(t)
            w = self._windows[key] = [t, 0]
        before = w[1]
        w[1] += n
        if w[1] >= rule.count:  # reached now: every occurrence of the window counts; after that each one
            self.raise_alert(name, rule.severity, device, source, w[1] if before < rule.count else n, detail, now)

    def _prune(self, t: float) -> None:
        longest = max(self.rules.rule(r).window_s for r in ("auth-failure", "replay", "frame-flood",
                                                             "connection-storm", "reboot", "tamper"))
        self._windows = {k: w for k, w in self._windows.items() if abs(t - w[0]) <= longest}

    def raise_alert(self, name: str, severity: str, device: bytes, source: str, n: int, detail: str,
                    now: float | None = None) -> None:
        """An occurrence of alert `name` (n of them): pending until the next commit."""
        now = self.clock() if now is None else now
        key = (name, device, source)
        p = self._pending.get(key)
        detail = detail[:DETAIL_CHARS]
        if p is None:
            self._pending[key] = [n, now, now, severity, detail]
        else:
            p[0] += n
            p[2] = now
            p[3], p[4] = severity, detail
        self.raised += n
        last = self._logged.get(key)
        if last is None or abs(now - last) >= self.log_every_s:
            self._logged[key] = now
            who = " ".join(x for x in (f"meter {device.hex()}" if device else "", f"from {source}" if source else "")
                           if x)
            log.warning("ALERT %s (%s) %s: %s", name, severity, who, detail)

    def source(self, peer: str) -> str:
        return self._sources.name(peer)

    # -- signals as they happen
    def rejected(self, device: bytes, peer: str, reason: str) -> None:
        """A refused frame or peer (Counters.reject)."""
        r = self.rules
        if reason in REPLAYS:
            name, rule = "replay", r.replay
        elif reason == "noise-flood":  # the concentrator hung up on a peer flooding noise
            if r.frame_flood.enabled:
                self.raise_alert("frame-flood", r.frame_flood.severity, b"", self.source(peer), 1,
                                 "hung up on a peer sending noise without a valid frame")
            return
        elif reason not in NOT_AUTH:
            name, rule = "auth-failure", r.auth_failure
        else:
            return
        if not rule.enabled:
            return
        now = self.clock()
        what = f"{reason} frames refused"
        if device and (self.known is None or self.known(device)):
            self.hit(name, rule, bytes(device), "", now, f"{what} (last from {peer or '?'})", now=now)
        if peer:
            self.hit(name, rule, b"", self.source(peer), now, what + (f" (claimed meter {device.hex()})"
                                                                       if device else ""), now=now)

    def connected(self, peer: str) -> None:
        """A TCP connection from `peer` (its address as a load balancer's PROXY header named it)."""
        rule = self.rules.connection_storm
        if rule.enabled and peer:
            now = self.clock()
            self.hit("connection-storm", rule, b"", self.source(peer), now,
                     f"more than {rule.count} connections within {rule.window_s:g} s", now=now)

    def frames(self, peer: str, n: int) -> None:
        """n frames taken from one connection for verification."""
        rule = self.rules.frame_flood
        if rule.enabled and peer and n:
            now = self.clock()
            self.hit("frame-flood", rule, b"", self.source(peer), now,
                     f"more than {rule.count} frames within {rule.window_s:g} s", n, now)

    # -- after an ingest commit
    def committed(self, seqs: dict[bytes, list[int]], frames: list[Frame], readings: list[Reading],
                  events: list[Event], hellos: Iterable[Hello], responses: list[CommandResponse],
                  now: float) -> None:
        """What a batch stored (its transaction committed)."""
        rule = self.rules.frame_flood
        if rule.enabled:
            for dev, s in seqs.items():
                self.hit("frame-flood", rule, dev, "", now, f"more than {rule.count} fresh frames within "
                         f"{rule.window_s:g} s", len(s), now)
        self.watch.committed(frames, readings, events, hellos, responses, now)

    # -- storing (Counters.transaction calls these)
    def write(self, store: Store) -> None:
        """In the open transaction: the pending alerts, folded into their open ones."""
        if not self._pending:
            return
        self._writing = self._pending
        self._pending = {}
        # in key order: two concentrators on one PostgreSQL database lock shared alert rows in the same order
        self._written = store.add_alerts(
            [AlertRecord(rule, sev, dev, src, n, first, last, detail)
             for (rule, dev, src), (n, first, last, sev, detail) in sorted(self._writing.items())])

    def saved(self, ok: bool) -> None:
        """The transaction ended: committed (the alerts are stored; publishers hear of them) or not (kept for the
        next one)."""
        writing, self._writing = self._writing, None
        written, self._written = self._written, []
        if writing is None:
            return
        if not ok:
            for key, (n, first, last, sev, detail) in writing.items():
                p = self._pending.get(key)
                if p is None:
                    self._pending[key] = [n, first, last, sev, detail]
                else:
                    p[0] += n
                    p[1] = min(p[1], first)
            return
        for sink in self.sinks:
            try:
                sink(written)
            except Exception:  # noqa: BLE001 - a publisher's fault never touches the head-end
                log.exception("alert publisher %r", sink)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {"alert_occurrences": self.raised, "alerts_pending": len(self._pending)}
