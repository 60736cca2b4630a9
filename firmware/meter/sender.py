# What the meter's link writes next, and in what order (meter/link.py says why each rule exists): after every
# (re)connection every unacknowledged frame again, oldest first, then new ones, at most `window` in flight
# beyond the last acknowledgement; a fresh frame ahead of frames sent before; a probe of the oldest
# unacknowledged frame when acknowledgements stall (go-back-N once it is answered); a back-fill's frames, and
# command responses, ahead of the window. The Link owns the session (connect, read, verify, act); this owns the
# order, the frame being written and the counts of what went out.
from meter.clock import ticks_diff

MAX_URGENT = 8  # command responses waiting to go ahead of the window; more go in order
# what the frame being written is: sent in order (counts against the window), sent again (a probe or a
# back-fill of frames sent before), or a command response sent ahead of the window
_IN_ORDER = 0
_AGAIN = 1
_AHEAD = 2


class Sender:
    def __init__(self, outbox, ticks_ms, window, ack_timeout_ms, ack_timeout_max_ms):
        self.outbox = outbox
        self.ticks_ms = ticks_ms
        self.window = window
        self.ack_timeout_ms = ack_timeout_ms
        self.ack_timeout_max_ms = ack_timeout_max_ms
        self._out = None            # memoryview of the frame being written, its position and seq, its role
        self._out_pos = 0
        self._out_seq = -1
        self._out_role = _IN_ORDER
        self._cursor = outbox.acked  # last seq handed to the transport in order (this connection)
        self._inflight = []         # seqs sent in order and not acknowledged (at most `window`)
        self._bf_after = -1         # back-fill: send held frames in (bf_after, bf_last]
        self._bf_last = None
        self._urgent = []           # command responses to send ahead of the window
        self._urgent_sent = []      # ... sent already: skipped when the cursor reaches them
        self._want_fresh = False    # this connection has not yet carried a frame the head-end cannot have seen
        self._fresh_from = None     # ... one numbered from here on (None: this boot made none yet)
        self._made_from = None      # the first frame this boot made
        self._ahead = []            # the frames sent ahead as fresh ones (the newest 16)
        self._probe = False
        self._probing = False
        self._t_wait = 0
        self._timeout = ack_timeout_ms
        self._high_sent = -1
        self.frames_sent = 0
        self.bytes_sent = 0
        self.resends = 0
        self.probes = 0

    # -- what the session tells it ------------------------------------------------------------------------
    def made(self, seq, up):
        """A frame was put into the outbox (up: the link is connected)."""
        if self._made_from is None:
            self._made_from = seq
            if up and self._fresh_from is None:
                self._fresh_from = seq

    def connected(self):
        """A new connection: everything unacknowledged goes again, oldest first."""
        self._cursor = self.outbox.acked
        self._inflight = []
        self._out = None
        self._bf_last = None              # covered by the resend of everything unacknowledged
        del self._urgent[:]               # responses too: in order, after the frames they answer for
        del self._urgent_sent[:]
        self._want_fresh = True
        self._fresh_from = None if self._made_from is None else max(self._made_from, self._high_sent + 1)
        self._probe = False
        self._probing = False
        self._timeout = self.ack_timeout_ms
        self._t_wait = self.ticks_ms()

    def down(self):
        self._out = None
        self._inflight = []

    def check_timeout(self):
        """No acknowledgement moved on for the timeout while frames are in flight: probe, and back off."""
        if self._inflight and ticks_diff(self.ticks_ms(), self._t_wait) >= self._timeout:
            self._probe = True
            self._t_wait = self.ticks_ms()
            self._timeout = min(self._timeout * 2, self.ack_timeout_max_ms)

    def acked(self, before):
        """The outbox's acknowledged mark moved from `before` (or stayed)."""
        n = self.outbox.acked
        if n > before:
            self._inflight = [s for s in self._inflight if s > n]
            self._t_wait = self.ticks_ms()
            self._timeout = self.ack_timeout_ms
            if self._probing:
                # the probe was answered: the head-end is listening but missed frames after it (line noise,
                # a cut cable): go back and send everything after the acknowledgement again, oldest first
                self._probing = False
                self._cursor = n
                self._inflight = []
        if self._cursor < n:
            self._cursor = n

    def backfill(self, first, last):
        """Send the held frames in first..last again, ahead of new frames, outside the window."""
        if self._bf_last is None:
            self._bf_after, self._bf_last = first - 1, last
        else:  # merge with a back-fill still running
            self._bf_after = min(self._bf_after, first - 1)
            self._bf_last = max(self._bf_last, last)

    def urgent(self, seq):
        """A command response (in the outbox already): ahead of the window, after a back-fill's frames."""
        if len(self._urgent) < MAX_URGENT:
            self._urgent.append(seq)

    # -- writing ------------------------------------------------------------------------------------------
    def write(self, t, budget):
        """Write at most `budget` bytes to the transport `t`."""
        while budget > 0 and t.connected:
            if self._out is None and not self._next_frame():
                return
            mv = self._out
            pos = self._out_pos
            n = t.write(mv[pos:pos + budget])
            if not n or n < 0:
                return
            pos += n
            budget -= n
            self.bytes_sent += n
            if pos < len(mv):
                self._out_pos = pos
                continue
            self._sent()

    def _next_frame(self):
        ob = self.outbox
        nx = None
        role = _AGAIN
        if self._want_fresh and self._fresh_from is not None and self._cursor + 1 < self._fresh_from:
            nx = self._fresh()  # the connection would begin with frames sent before: a fresh one first
            if nx is not None:
                role = _AHEAD
        if nx is None and self._probe:
            self._probe = False
            nx = ob.next_after(ob.acked)
            if nx is not None:
                self.probes += 1
                self._probing = True
        if nx is None and self._bf_last is not None:
            nx = ob.next_after(self._bf_after)
            if nx is None or nx[0] > self._bf_last:
                self._bf_last = None
                nx = None
            else:
                self._bf_after = nx[0]
                if nx[0] > self._cursor:  # not sent on this connection yet: it counts as sent in order
                    self._cursor = nx[0]
                    role = _IN_ORDER
        while nx is None and self._urgent:
            u = self._urgent.pop(0)
            nx = ob.next_after(u - 1)
            if nx is not None and nx[0] != u:
                nx = None  # acknowledged already
            elif nx is not None:
                self._urgent_sent.append(u)
                role = _AHEAD
        while nx is None:
            if len(self._inflight) >= self.window:
                nx = self._fresh() if self._want_fresh else None
                if nx is None:
                    return False
                role = _AHEAD
                break
            nx = ob.next_after(self._cursor)
            if nx is None:
                return False
            self._cursor = nx[0]
            role = _IN_ORDER
            if self._fresh_from is not None and nx[0] >= self._fresh_from and nx[0] not in self._ahead:
                self._want_fresh = False
            if nx[0] in self._urgent_sent:
                self._urgent_sent.remove(nx[0])  # went out ahead already
                nx = None
        self._out = memoryview(nx[1])
        self._out_pos = 0
        self._out_seq = nx[0]
        self._out_role = role
        return True

    def _fresh(self):
        """This connection carried no fresh frame yet: (seq, frame) of the oldest frame held that was made since
        the boot and never sent, else None (and the next frame made will be)."""
        if self._fresh_from is None:
            return None
        ob = self.outbox
        nx = ob.next_after(self._fresh_from - 1)
        while nx is not None and nx[0] in self._ahead:
            nx = ob.next_after(nx[0])
        if nx is None:
            return None
        self._want_fresh = False
        self._ahead.append(nx[0])
        if len(self._ahead) > 16:
            self._ahead.pop(0)
        self._urgent_sent.append(nx[0])  # skipped when the cursor reaches it
        return nx

    def _sent(self):
        s = self._out_seq
        role = self._out_role
        self._out = None
        self.frames_sent += 1
        if role == _AHEAD:
            return  # a response ahead of the window: neither a resend nor in order
        if s <= self._high_sent:
            self.resends += 1
        else:
            self._high_sent = s
        if role == _IN_ORDER:
            if not self._inflight:
                self._t_wait = self.ticks_ms()
            self._inflight.append(s)
