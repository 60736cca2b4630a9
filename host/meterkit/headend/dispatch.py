"""Commands to meters: the signing of every command (the concentrator's own back-fills too) and the operator's
queue (table command_queue, written by `meterkit command`; docs/concentrator.md, "Operator commands").

A queued command goes to a meter only while it is connected, one at a time per meter, oldest first; each
attempt with a fresh counter, its answer matched by counter. An unanswered attempt is repeated only when it can
no longer be answered on its own (its connection is gone, or its signed expiry passed) and the meter has had
`command_retry_after` seconds on its current connection with no frames missing: its outbox holds the answer if
it acted, so nothing runs twice. A set-time command is signed with the time of each attempt (never the time it
was queued), and its expiry moved by the meter's measured drift when that is ahead: a meter judges expiry by
its own clock, so one that runs ahead by more than the TTL could otherwise never take the command that
corrects it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from meter import messages as M
from meter.frame import encode_frame
from meterkit import wire as P
from meterkit.headend import audit
from meterkit.headend import commands as opcmds
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.devices import Device, Devices
from meterkit.store.api import CONCENTRATOR, QUEUE_PENDING, Store, StoreError
from meterkit.store.records import CommandRecord, QueuedCommand
from meterkit.wire.keys import key_id
from meterkit.wire.records import CommandResponse

if TYPE_CHECKING:
    from meterkit.headend.connections import Link
    from meterkit.headend.gaps import FrameGaps

log = logging.getLogger(__name__)


def issue_command(store: Store, headend: P.HeadEnd, d: Device, op: int, args: dict | None, now: float, ttl: int,
                  queue_id: int | None = None, by: str = CONCENTRATOR) -> bytes:
    """Sign a command with the meter's next counter and record it (table commands, and the audit log for `by`)
    with the counter persisted in the same transaction: a meter accepts only counters above the last one it
    took, and none is used twice. Returns the frame to send once committed. ValueError, and nothing changed, if
    it cannot be signed."""
    counter = d.counter + 1
    opcmds.check_args(op, args)  # never sign what a meter refuses
    cose = headend.sign_command(d.id, counter, op, args, int(now), ttl)
    frame = encode_frame(cose, max_frame=opcmds.MAX_COMMAND_MESSAGE)
    d.counter = counter
    kept = {k: v.hex() if isinstance(v, bytes) else v for k, v in args.items()} if args else args  # JSON: no bytes
    cmd = CommandRecord(d.id, counter, op, kept, now, int(now) + ttl, queue_id)
    store.record_command(cmd)
    audit.sent(store, cmd, by)
    store.update_meter(d.id, last_counter=counter)
    return frame


def _what(q: QueuedCommand) -> str:
    return f"meter {q.device_id.hex()}: command #{q.id} ({opcmds.op_name(q.op)})"


class Dispatch:
    def __init__(self, config: ConcentratorConfig, store: Store, headend: P.HeadEnd, counters: Counters,
                 devices: Devices, frame_gaps: FrameGaps):
        self.config = config
        self.store = store
        self.headend = headend
        self.counters = counters
        self.devices = devices
        self.frame_gaps = frame_gaps
        self._sent_on: dict[int, Link] = {}  # queue id -> the connection its latest attempt went out on

    # -- answers (inside the ingest's transaction)
    def on_response(self, d: Device, r: CommandResponse, now: float) -> bool:
        """Match a meter's answer with the command it answers; True when it answered an operator command for
        the first time (the meter is free for its next one)."""
        cmd = self.store.record_response(r, now)
        if cmd is None:
            self.counters.stage("responses_unmatched")
            log.warning("meter %s: response to command %d, which was never sent to it: ignored (result %d%s)",
                        d.id.hex(), r.counter, r.result, f", {r.reason!r}" if r.reason else "")
            return False
        self.counters.stage("responses")
        if cmd.op == M.OP_BACKFILL:
            audit.answered(self.store, cmd, None, r, now)
            self.frame_gaps.answered(d, r, now)
            return False
        return self._operator_answer(d, cmd, r, now)

    def _operator_answer(self, d: Device, cmd: CommandRecord, r: CommandResponse, now: float) -> bool:
        q = self.store.queued_for_counter(d.id, r.counter)
        if q is None:  # pragma: no cover - every command other than a back-fill comes from the queue
            return False
        audit.answered(self.store, cmd, q, r, now, again=q.state == "answered")
        what = f"meter {d.id.hex()}: command #{q.id} ({opcmds.op_name(q.op)}, counter {r.counter})"
        if q.state == "answered":
            self.counters.stage("responses_duplicate")
            log.warning("%s answered again (%d%s): an earlier attempt reached the meter too; the first answer "
                        "(%s) is kept", what, r.result, f", {r.reason!r}" if r.reason else "", q.result)
            return False
        if q.state != "sent":
            log.warning("%s: late answer to a command already %s", what, q.state)
        self.store.update_queued(q.id, state="answered", counter=r.counter, answered_at=now, result=r.result,
                                 reason=r.reason)
        if q.op == M.OP_KEY_ROTATE and r.result == M.RESULT_OK:
            self._rotated(d, q, now)
        if q.op == M.OP_SET_TIME and r.result == M.RESULT_OK:  # its clock is set from this answer on (the drift
            # measured before is history: acks no longer allow for it)
            d.clock_unset, d.clock_set_seq, d.drift = False, max(r.seq, d.clock_set_seq or 0), None
        self.counters.stage("operator_commands_answered")
        log.log(logging.INFO if r.result == 0 else logging.WARNING, "%s answered %d%s", what, r.result,
                f": {r.reason}" if r.reason else "")
        return True

    def _rotated(self, d: Device, q: QueuedCommand, now: float) -> None:
        """The meter took the new head-end key: from this answer on, its commands and acks are signed with it."""
        kid = key_id(opcmds.signed_args(q.op, q.args, now)[M.A_KEY])
        self.store.set_meter_key(d.id, kid, now)
        moved = getattr(self.headend, "moved", None)  # a KeyRing (a single HeadEnd cannot sign with another key)
        if moved is not None:
            moved(d.id, kid)
        log.info("meter %s now holds head-end key %s", d.id.hex(), kid.hex())

    # -- delivery (own transaction)
    def send_queued(self, now: float, only: Iterable[bytes] | None = None) -> None:
        """Send what the operator queued to meters that are connected (one command in flight per meter, oldest
        first); expire what is past its expiry; repeat unanswered attempts when due."""
        sends: list[tuple[Link, QueuedCommand, int, bytes]] = []
        signed_for: set[bytes] = set()
        try:
            with self.counters.transaction():
                busy: set[bytes] = set()
                for q in self._claim(only):
                    frame = self._consider(q, now, busy)
                    if frame is not None:
                        d = self.devices.get(q.device_id)
                        signed_for.add(d.id)
                        sends.append((d.link, q, d.counter, frame))
                self.counters.stage("commands_sent", len(sends))
                self.counters.stage("operator_commands_sent", len(sends))
        except StoreError as e:  # the database is down: one line, no traceback
            log.warning("queued commands not sent: %s", e)
            self.devices.reload(signed_for)
            return
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("sending queued commands")
            self.devices.reload(signed_for)  # their command counters as the database has them
            return
        for link, q, counter, frame in sends:
            self._sent_on[q.id] = link
            log.info("%s sent with counter %d%s", _what(q), counter,
                     f" (attempt {q.attempts + 1})" if q.attempts else "")
            link.send(frame)
        for qid in [k for k, v in self._sent_on.items() if v.closed]:
            del self._sent_on[qid]  # a closed connection is never current again: forgetting it is the same

    def _claim(self, only: Iterable[bytes] | None) -> list[QueuedCommand]:
        """The pending entries this process is to work on, held until its transaction ends: first the rows of
        the meters it may sign for (connected here: their counters as committed), then the entries, read afresh,
        passing over those another concentrator holds (the same order as an ingest's: meters, then queue)."""
        if only is None:
            seen = self.store.queued_commands(states=QUEUE_PENDING)
        else:
            seen = [q for dev in set(only) for q in self.store.queued_commands(dev, QUEUE_PENDING)]
        if not seen:
            return []
        here = [dev for dev in {q.device_id for q in seen} if (d := self.devices.known(dev)) and d.connected]
        self.devices.hold(here)
        return self.store.claim_queued(q.id for q in seen)

    def _consider(self, q: QueuedCommand, now: float, busy: set[bytes]) -> bytes | None:
        """What to do with one queue entry: expire it, fail it, leave it, or sign an attempt (the frame)."""
        dev = q.device_id
        if now >= q.expires_at:
            why = (f"expired unanswered after {q.attempts} attempt(s)" if q.attempts
                   else "expired before the meter could be reached")
            self._end(q, "expired", why, now)
            return None
        if dev in busy:  # one at a time per meter, oldest first
            return None
        d = self.devices.known(dev)
        if d is None:
            if self.store.meter(dev) is None:
                self._end(q, "failed", "not a registered meter", now)
                return None
            d = self.devices.load(dev)
        if d.clock_unset and q.op != M.OP_SET_TIME:
            return None  # it refuses anything else until its clock is set: held, and the set-time goes first
        busy.add(dev)
        if not d.connected:
            return None
        if q.state == "sent":
            if not self._resend_due(d, q, now):
                return None
            if q.attempts >= self.config.command_attempts:
                self._end(q, "failed", f"no answer after {q.attempts} attempts", now)
                busy.discard(dev)
                return None
        try:
            return self._attempt(d, q, now)
        except ValueError as e:
            self._end(q, "failed", f"cannot be sent: {e}", now, logging.ERROR)
            busy.discard(dev)
            return None

    def _attempt(self, d: Device, q: QueuedCommand, now: float) -> bytes:
        ttl = min(self.config.command_ttl_s, q.expires_at - int(now))
        args = opcmds.signed_args(q.op, q.args, now)
        if q.op == M.OP_SET_TIME and d.drift is not None and d.drift > 0:
            ttl += math.ceil(d.drift)  # its expiry in the meter's clock, which runs ahead
        opcmds.check_fits(q.op, args)  # what another writer of the queue may not have checked
        frame = issue_command(self.store, self.headend, d, q.op, args, now, ttl, queue_id=q.id, by=audit.actor(q))
        self.store.update_queued(q.id, state="sent", counter=d.counter, attempts=q.attempts + 1, sent_at=now)
        return frame

    def _end(self, q: QueuedCommand, state: str, why: str, now: float, level: int = logging.WARNING) -> None:
        self.store.update_queued(q.id, state=state, reason=why)
        audit.ended(self.store, q, state, why, now)
        self.counters.stage(f"operator_commands_{state}")
        log.log(level, "%s %s", _what(q), why if state == "expired" else f"failed: {why}")

    def _resend_due(self, d: Device, q: QueuedCommand, now: float) -> bool:
        """May an unanswered attempt be repeated (with a new counter) on the meter's current connection?"""
        expired = q.attempt_expires is None or now > q.attempt_expires
        if self._sent_on.get(q.id) is d.link and not expired:
            return False  # still on its way on this very connection
        # After a reconnect the meter first sends its outbox: if it acted on the earlier attempt, its answer is
        # in there. Repeat only once the meter has caught up and had `command_retry_after` seconds on this
        # connection: an operation must not run twice.
        if d.link_at is None or now - d.link_at < self.config.retry_after:
            return False
        return not self.frame_gaps.catching_up(d, now)
