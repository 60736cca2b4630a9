# The meter's link to the head-end: one session over any transport (docs/protocol.md, "Acknowledgements,
# back-fill and the outbox"). The transport (meter/transport.py: a serial stream or TCP, a loopback in the
# tests) is a duck type: connect() -> bool, connected, write(buf) -> int, read_into(buf) -> int, close(); the
# link never knows which one it has, and guards against any exception a transport raises all the same.
#
# Link(transport, outbox, identity, ...): send(seq, frame) puts the frame into the durable outbox (flash first)
# under the sequence number it was signed with (messages.Builder hands out both);
# poll() does a bounded amount of non-blocking work: (re)connect, read at most read_chunks x read_chunk bytes,
# verify at most one head-end message (one ES256 verify), write at most write_budget bytes. After every
# (re)connection it sends every unacknowledged frame again, oldest first, then new ones; at most `window`
# frames are in flight beyond the last acknowledgement. A connection that would begin with frames sent
# before (or whose window fills before it carried a fresh one: made since the boot and never sent) first sends
# one fresh frame ahead of the window, the oldest such held or else the next one made. The head-end answers a
# connection (acknowledges, back-fills, sends commands) only once it has shown a fresh frame: a window full
# of frames it stored already, above a gap it has not settled, would otherwise wait for ever (issue 11,
# finding 1; docs/protocol.md).
# If no acknowledgement moves on for ack_timeout_ms while frames are in flight (lost to line noise or a cut
# cable that did not hang up: the head-end acknowledges only up to a gap), the oldest unacknowledged frame
# alone is sent again (a probe), and the timeout doubles up to ack_timeout_max_ms; when an acknowledgement
# answers the probe, everything after it is sent again (go-back-N).
# A silent peer thus costs one frame per timeout, a lossy line one round trip.
#
# Head-end messages: bytes -> frame.Deframer -> messages.verify_host(cose, identity, time(), counter); while
# clock_ok() is false time() means nothing, and verify_host is given None (no expiry check: set-time and acks only).
#   ack (kind 17)           outbox.ack(key 12)
#   command op 1 back-fill  {A_FIRST: first, A_LAST: last}: the frames the outbox holds in that range are sent
#                           again (ahead of new frames, outside the window), then respond(counter, RESULT_OK,
#                           None), or respond(counter, RESULT_GONE, "gone A..B") if A..B (A = first) is no
#                           longer held; RESULT_BAD_ARGS for first > last
#   other commands          on_command(16, counter, payload) -> (seq, response frame) or None; without
#                           on_command: respond(counter, RESULT_UNKNOWN_OP, "unknown operation")
#   not exactly the schema  a signed command with a fresh counter whose keys, types or arguments are not exactly
#                           the schema (messages.CommandRefused): counter taken, respond(counter, RESULT_*, why),
#                           on_event(events.COMMAND_REFUSED, why), refused["schema"] += 1; nothing else
#   refused                 refused[reason] += 1; on_event(events.AUTH_FAIL, reason), at most one per
#                           event_min_s (the rest are counted in events_suppressed: a flood of forged frames
#                           must not turn into a flood of signed event frames in flash)
# respond(counter, result, reason) -> (seq, response frame): the app builds it (meter.messages.Builder, kind 6),
# the link puts it into the outbox like any other frame and sends it ahead of the window, right after a
# back-fill's frames: the window may be full of frames beyond a gap that the head-end
# acknowledges only when the answer has settled the gap.
#
# The last accepted head-end counter is persisted ("link-counter", meter/store.py) before a command is acted
# on, and for acknowledgements every persist_every of them (and by flush()): a replayed command is refused
# across reboots; an acknowledgement replayed after a reboot can only repeat what was true (frames stored).
from meter import cmdschema, events, frame, messages  # noqa: F401 - cmdschema: at boot, while the heap is whole
from meter.clock import default_ticks_ms, ticks_add, ticks_diff
from meter.sender import Sender
from meter.store import Store

OP_BACKFILL = messages.OP_BACKFILL
MAX_INBOX = 4  # head-end frames waiting for verification; more are dropped (acks are cumulative anyway)
ERROR_HOLD_MS = 1000  # after an exception in poll(): the connection is closed and left alone this long


def _default_time():
    import time
    return lambda: int(time.time())


class Link:
    def __init__(self, transport, outbox, identity, on_command=None, respond=None, on_event=None, time=None,
                 ticks_ms=None, window=8, ack_timeout_ms=15000, ack_timeout_max_ms=120000, counter_store=None,
                 persist_every=16, read_chunk=128, read_chunks=4, write_budget=1024, event_min_s=60,
                 clock_ok=None):
        self.transport = transport
        self.outbox = outbox
        self.identity = identity
        self.on_command = on_command
        self.respond = respond
        self.on_event = on_event
        self.time = time or _default_time()
        self.clock_ok = clock_ok or (lambda: True)
        self.ticks_ms = ticks_ms or default_ticks_ms()
        self.sender = Sender(outbox, self.ticks_ms, window, ack_timeout_ms, ack_timeout_max_ms)  # the order
        self.persist_every = persist_every
        self.read_chunks = read_chunks
        self.write_budget = write_budget
        self.event_min_s = event_min_s
        if counter_store is None:
            counter_store = Store(outbox.flash_dir, "link-counter", fs=outbox.fs, max_payload=8)
        self._ctr_store = counter_store
        got = counter_store.load()
        self.counter = int.from_bytes(got[1], "little") - 1 if got is not None and len(got[1]) == 8 else -1
        self._ctr_unsaved = 0
        self._rx = bytearray(read_chunk)
        self._df = frame.Deframer(frame.HOST_MAX_FRAME)  # commands may carry a calendar
        self._inbox = []
        self._up = False            # the transport was connected at the last look
        self._t_event = None
        self._hold = None           # ticks_ms until which poll() rests after an exception
        # counters (the sender counts what went out: frames_sent, bytes_sent, resends, probes)
        self.bytes_received = 0
        self.connects = 0
        self.reconnects = 0
        self.disconnects = 0
        self.acks = 0
        self.commands = 0
        self.host_frames = 0
        self.refused = {}
        self.events_suppressed = 0
        self.unanswered = 0         # responses that could not be made (no respond callable)
        self.send_errors = 0        # frames the outbox could not store
        self.errors = 0             # exceptions caught in poll()
        self.counter_writes = 0
        self.last_error = None

    # -- the meter's side -------------------------------------------------------------------------------
    def send(self, seq, fr):
        """Queue one frame: durable in the outbox when this returns True. Never raises."""
        try:
            self.outbox.put(seq, fr)
            self.sender.made(seq, self._up)
            return True
        except (OSError, ValueError) as e:
            self.send_errors += 1
            self.last_error = repr(e)
            return False

    def flush(self):
        """Persist the head-end counter and the outbox's acknowledged mark (orderly shutdown, reboot)."""
        self._save_counter()
        self.outbox.flush()

    @property
    def connected(self):
        return self._up

    def stats(self):
        ob = self.outbox
        out = self.sender
        return {"frames_sent": out.frames_sent, "bytes_sent": out.bytes_sent, "resends": out.resends,
                "connects": self.connects, "reconnects": self.reconnects, "acks": self.acks,
                "commands": self.commands, "probes": out.probes, "refused": dict(self.refused),
                "noise": self._df.noise, "errors": self.errors, "acked": ob.acked, "last_seq": ob.last_seq,
                "outbox_bytes": ob.bytes, "outbox_writes": ob.writes, "dropped": ob.dropped}

    # -- poll -------------------------------------------------------------------------------------------
    def poll(self):
        """One bounded step of non-blocking work. Never raises."""
        if self._hold is not None:
            if ticks_diff(self.ticks_ms(), self._hold) < 0:
                return
            self._hold = None
        try:
            self._poll()
        except Exception as e:  # noqa: BLE001 - I/O errors, garbage, a bug: the meter loop must go on
            self.errors += 1
            self.last_error = repr(e)
            try:
                self.transport.close()
                self._down()
                # start afresh (reconnect, resend what is unacknowledged) after a pause, not in a tight loop
                self._hold = ticks_add(self.ticks_ms(), ERROR_HOLD_MS)
                if self.on_event is not None and self.errors & (self.errors - 1) == 0:  # 1st, 2nd, 4th ...
                    self.on_event(events.INTERNAL, "link: " + repr(e))
            except Exception:  # noqa: BLE001 - not even the event could be made: counted above
                pass

    def _poll(self):
        t = self.transport
        if not t.connected:
            if self._up:
                self._down()
            if not t.connect():
                return
        if not self._up:
            self._connected()
        self._read()
        if self._inbox:
            self._handle(self._inbox.pop(0))
        self.sender.check_timeout()
        self.sender.write(t, self.write_budget)
        if self._up and not t.connected:
            self._down()

    def _connected(self):
        self._up = True
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self._df.reset()
        self.sender.connected()

    def _down(self):
        if self._up:
            self.disconnects += 1
        self._up = False
        self.sender.down()
        del self._inbox[:]

    # -- reading ------------------------------------------------------------------------------------------
    def _read(self):
        if self._inbox:
            return  # verify what is queued first: memory stays bounded
        t = self.transport
        rx = self._rx
        for _ in range(self.read_chunks):
            n = t.read_into(rx)
            if not n:
                return
            self.bytes_received += n
            got = self._df.feed(memoryview(rx)[:n])
            if got:
                for cose in got:
                    if len(self._inbox) < MAX_INBOX:
                        self._inbox.append(cose)
                    else:
                        self._count("overflow")
                return

    def _count(self, reason):
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _refuse(self, reason):
        self._count(reason)
        if self.on_event is None:
            return
        now = self.time()
        last = self._t_event
        if last is None or now - last >= self.event_min_s or now < last:
            self._t_event = now
            self.on_event(events.AUTH_FAIL, reason)
        else:
            self.events_suppressed += 1

    def _handle(self, cose):
        self.host_frames += 1
        try:
            now = self.time() if self.clock_ok() else None
            kind, counter, m = messages.verify_host(cose, self.identity, now, self.counter)
        except messages.CommandRefused as e:
            self._refuse_command(e)
            return
        except messages.HostMessageError as e:
            self._refuse(e.reason)
            return
        except (ValueError, TypeError, IndexError, KeyError, AttributeError):
            self._refuse("malformed")
            return
        self.counter = counter
        self._ctr_unsaved += 1
        if kind == messages.ACK:
            if self._ctr_unsaved >= self.persist_every:
                self._save_counter()
            self._ack(m[messages.K_ACK_SEQ])
        else:
            self._save_counter()  # durable before the command acts: a replay after a reboot is refused
            self._command(counter, m)

    def _refuse_command(self, e):
        # authentic, but not exactly the schema: its counter is taken (a replay of it is refused as one), the
        # refusal answered and logged (no rate limit: only the head-end's key makes these), nothing else done
        self.counter = e.counter
        self._ctr_unsaved += 1
        self._save_counter()
        self.commands += 1
        self._count(e.reason)
        why = str(e)[:120]
        if self.on_event is not None:
            self.on_event(events.COMMAND_REFUSED, why)
        self._respond(e.counter, e.result, why)

    def _save_counter(self):
        if self._ctr_unsaved:
            self._ctr_store.save((self.counter + 1).to_bytes(8, "little"))
            self.counter_writes += 1
            self._ctr_unsaved = 0

    def _ack(self, upto):
        self.acks += 1
        ob = self.outbox
        before = ob.acked
        ob.ack(upto)
        self.sender.acked(before)

    def _command(self, counter, m):
        self.commands += 1
        if m[messages.K_OP] == OP_BACKFILL:
            self._backfill(counter, m.get(messages.K_ARGS))
        elif self.on_command is not None:
            answer = self.on_command(messages.COMMAND, counter, m)
            if answer:
                self._answer(answer)
        else:
            self._respond(counter, messages.RESULT_UNKNOWN_OP, "unknown operation")

    def _backfill(self, counter, args):
        first, last = args[messages.A_FIRST], args[messages.A_LAST]  # sequence numbers (meter.cmdschema)
        if first > last:
            self._respond(counter, messages.RESULT_BAD_ARGS, "bad arguments: first after last")
            return
        ob = self.outbox
        _frames, missing = ob.resend(first, last)
        self.sender.backfill(first, last)
        if missing is None:
            self._respond(counter, messages.RESULT_OK, None)
        else:
            self._respond(counter, messages.RESULT_GONE, "gone %d..%d" % (missing, min(last, ob.floor)))

    def _respond(self, counter, result, reason):
        if self.respond is None:
            self.unanswered += 1
            return
        self._answer(self.respond(counter, result, reason))

    def _answer(self, answer):
        # A response (seq, frame) goes out ahead of the window (after a back-fill's frames): the window may be
        # full of frames beyond a gap that the head-end acknowledges only once this answer has settled it.
        seq, fr = answer
        if self.send(seq, fr):
            self.sender.urgent(seq)
