# The meter's link to the head-end: one transport interface, two transports (serial stream, TCP), one session
# (docs/protocol.md, "Acknowledgements, back-fill and the outbox"). Nothing here imports machine or network:
# meter/hal.py builds the stream (machine.UART) or brings Wi-Fi up, and hands the pieces in.
#
# Transport (duck type; StreamTransport and TCPTransport below, a loopback in the tests):
#   connect() -> bool     True when connected; otherwise one non-blocking step (an attempt when its back-off
#                         has run out, or a check on an attempt in progress), False
#   connected             bool
#   write(buf) -> int     bytes accepted now, 0 if none (never blocks for long; may be partial)
#   read_into(buf) -> int bytes read now, 0 if none
#   close()
# A transport that meets an I/O error closes itself (connected becomes False) and retries with back-off on a
# later connect(); write/read_into return 0 then. The Link guards against any exception all the same.
#
# Link(transport, outbox, identity, ...): send(seq, frame) puts the frame into the durable outbox (flash first),
# poll() does a bounded amount of non-blocking work: (re)connect, read at most read_chunks x read_chunk bytes,
# verify at most one head-end message (one ES256 verify), write at most write_budget bytes. After every
# (re)connection it sends every unacknowledged frame again, oldest first, then new ones; at most `window`
# frames are in flight beyond the last acknowledgement. If no acknowledgement moves on for ack_timeout_ms while
# frames are in flight (lost to line noise or a cut cable that did not hang up: the head-end acknowledges only
# up to a gap), the oldest unacknowledged frame alone is sent again (a probe), and the timeout doubles up to
# ack_timeout_max_ms; when an acknowledgement answers the probe, everything after it is sent again (go-back-N).
# A silent peer thus costs one frame per timeout, a lossy line one round trip.
#
# Head-end messages: bytes -> frame.Deframer -> messages.verify_host(cose, identity, time(), counter).
#   ack (kind 17)           outbox.ack(key 12)
#   command op 1 back-fill  {1: first, 2: last}: the frames the outbox holds in that range are sent again
#                           (ahead of new frames, outside the window), then respond(counter, 0, None), or
#                           respond(counter, -1, "gone A..B") if A..B (A = first) is no longer held;
#                           respond(counter, -3, "bad arguments") for anything but 0 <= first <= last
#   other commands          on_command(16, counter, payload) -> response frame (framed bytes) or None; without
#                           on_command: respond(counter, -2, "unknown operation")
#   refused                 refused[reason] += 1; on_event(events.AUTH_FAIL, reason), at most one per
#                           event_min_s (the rest are counted in events_suppressed: a flood of forged frames
#                           must not turn into a flood of signed event frames in flash)
# respond(counter, result, reason) -> response frame: the app builds it (meter.messages.Builder, kind 6), the
# link puts it into the outbox like any other frame (its seq is read from the frame) and sends it ahead of the
# window, right after a back-fill's frames: the window may be full of frames beyond a gap that the head-end
# acknowledges only when the answer has settled the gap.
#
# The last accepted head-end counter is persisted ("link-counter", meter/store.py) before a command is acted
# on, and for acknowledgements every persist_every of them (and by flush()): a replayed command is refused
# across reboots; an acknowledgement replayed after a reboot can only repeat what was true (frames stored).
from meter import events, frame, messages
from meter.clock import ticks_diff
from meter.outbox import seq_of
from meter.store import Store

try:
    import select
except ImportError:  # pragma: no cover
    select = None

OP_BACKFILL = messages.OP_BACKFILL
MAX_INBOX = 4  # head-end frames waiting for verification; more are dropped (acks are cumulative anyway)
MAX_URGENT = 8  # command responses waiting to go ahead of the window; more go in order
ERROR_HOLD_MS = 1000  # after an exception in poll(): the connection is closed and left alone this long
# what the frame being written is: sent in order (counts against the window), sent again (a probe or a
# back-fill of frames sent before), or a command response sent ahead of the window
_IN_ORDER = 0
_AGAIN = 1
_AHEAD = 2


def _default_ticks_ms():
    import time
    return getattr(time, "ticks_ms", None) or (lambda: int(time.monotonic() * 1000))


def _default_time():
    import time
    return lambda: int(time.time())


def _random(n):
    # back-off jitter: 0 <= r < n (n < 2^24)
    import random
    return (random.getrandbits(24) * n) >> 24


class Link:
    def __init__(self, transport, outbox, identity, on_command=None, respond=None, on_event=None, time=None,
                 ticks_ms=None, window=8, ack_timeout_ms=15000, ack_timeout_max_ms=120000, counter_store=None,
                 persist_every=16, read_chunk=128, read_chunks=4, write_budget=1024, event_min_s=60):
        self.transport = transport
        self.outbox = outbox
        self.identity = identity
        self.on_command = on_command
        self.respond = respond
        self.on_event = on_event
        self.time = time or _default_time()
        self.ticks_ms = ticks_ms or _default_ticks_ms()
        self.window = window
        self.ack_timeout_ms = ack_timeout_ms
        self.ack_timeout_max_ms = ack_timeout_max_ms
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
        self._probe = False
        self._probing = False
        self._t_wait = 0
        self._timeout = ack_timeout_ms
        self._t_event = None
        self._high_sent = -1
        self._hold = None           # ticks_ms until which poll() rests after an exception
        # counters
        self.frames_sent = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.resends = 0
        self.connects = 0
        self.reconnects = 0
        self.disconnects = 0
        self.acks = 0
        self.commands = 0
        self.probes = 0
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
            return True
        except (OSError, ValueError) as e:
            self.send_errors += 1
            self.last_error = repr(e)
            return False

    def sink(self, fr):
        """A Reporter sink: takes a framed message, reads its seq, sends it."""
        try:
            seq = seq_of(frame.decode_frame(fr))
        except ValueError as e:
            self.send_errors += 1
            self.last_error = repr(e)
            return False
        if seq is None:
            self.send_errors += 1
            return False
        return self.send(seq, fr)

    def flush(self):
        """Persist the head-end counter and the outbox's acknowledged mark (orderly shutdown, reboot)."""
        self._save_counter()
        self.outbox.flush()

    @property
    def connected(self):
        return self._up

    def stats(self):
        ob = self.outbox
        return {"frames_sent": self.frames_sent, "bytes_sent": self.bytes_sent, "resends": self.resends,
                "connects": self.connects, "reconnects": self.reconnects, "acks": self.acks,
                "commands": self.commands, "probes": self.probes, "refused": dict(self.refused),
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
                self._hold = self.ticks_ms() + ERROR_HOLD_MS
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
        if self._inflight and ticks_diff(self.ticks_ms(), self._t_wait) >= self._timeout:
            self._probe = True
            self._t_wait = self.ticks_ms()
            self._timeout = min(self._timeout * 2, self.ack_timeout_max_ms)
        self._write()
        if self._up and not t.connected:
            self._down()

    def _connected(self):
        self._up = True
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self._df.reset()
        self._cursor = self.outbox.acked  # everything unacknowledged goes again, oldest first
        self._inflight = []
        self._out = None
        self._bf_last = None              # covered by the resend of everything unacknowledged
        del self._urgent[:]               # responses too: in order, after the frames they answer for
        del self._urgent_sent[:]
        self._probe = False
        self._probing = False
        self._timeout = self.ack_timeout_ms
        self._t_wait = self.ticks_ms()

    def _down(self):
        if self._up:
            self.disconnects += 1
        self._up = False
        self._out = None
        self._inflight = []
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
            kind, counter, m = messages.verify_host(cose, self.identity, self.time(), self.counter)
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
        n = ob.acked
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

    def _command(self, counter, m):
        self.commands += 1
        if m[messages.K_OP] == OP_BACKFILL:
            self._backfill(counter, m.get(messages.K_ARGS))
        elif self.on_command is not None:
            fr = self.on_command(messages.COMMAND, counter, m)
            if fr:
                self._answer(fr)
        else:
            self._respond(counter, -2, "unknown operation")

    def _backfill(self, counter, args):
        first = args.get(1) if isinstance(args, dict) else None
        last = args.get(2) if isinstance(args, dict) else None
        if not (isinstance(first, int) and isinstance(last, int)) or isinstance(first, bool) \
                or isinstance(last, bool) or not 0 <= first <= last:
            self._respond(counter, -3, "bad arguments")
            return
        ob = self.outbox
        _frames, missing = ob.resend(first, last)
        if self._bf_last is None:
            self._bf_after, self._bf_last = first - 1, last
        else:  # merge with a back-fill still running
            self._bf_after = min(self._bf_after, first - 1)
            self._bf_last = max(self._bf_last, last)
        if missing is None:
            self._respond(counter, 0, None)
        else:
            self._respond(counter, -1, "gone %d..%d" % (missing, min(last, ob.floor)))

    def _respond(self, counter, result, reason):
        if self.respond is None:
            self.unanswered += 1
            return
        self._answer(self.respond(counter, result, reason))

    def _answer(self, fr):
        # A response goes out ahead of the window (after a back-fill's frames): the window may be full of
        # frames beyond a gap that the head-end acknowledges only once this answer has settled it.
        try:
            seq = seq_of(frame.decode_frame(fr))
        except ValueError:
            seq = None
        if seq is None:
            self.send_errors += 1
        elif self.send(seq, fr) and len(self._urgent) < MAX_URGENT:
            self._urgent.append(seq)

    # -- writing ------------------------------------------------------------------------------------------
    def _write(self):
        t = self.transport
        budget = self.write_budget
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
        if self._probe:
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
                return False
            nx = ob.next_after(self._cursor)
            if nx is None:
                return False
            self._cursor = nx[0]
            role = _IN_ORDER
            if nx[0] in self._urgent_sent:
                self._urgent_sent.remove(nx[0])  # went out ahead already
                nx = None
        self._out = memoryview(nx[1])
        self._out_pos = 0
        self._out_seq = nx[0]
        self._out_role = role
        return True

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


# -- transports ---------------------------------------------------------------------------------------------
class _Backoff:
    """Exponential back-off with jitter: after the n-th failure in a row the next attempt waits a random time
    in [d/2, d), d = min(lo * 2^(n-1), hi); a success (a session that heard the head-end) resets it."""

    def __init__(self, lo, hi, ticks_ms, rand):
        self.lo = lo
        self.hi = hi
        self.ticks_ms = ticks_ms
        self.rand = rand or _random
        self.d = lo
        self.next_at = None
        self.last_wait = 0

    def ready(self, now):
        return self.next_at is None or ticks_diff(now, self.next_at) >= 0

    def fail(self, now):
        d = self.d
        self.last_wait = d // 2 + self.rand(d - d // 2)
        self.next_at = now + self.last_wait
        self.d = min(d * 2, self.hi)

    def reset(self):
        self.d = self.lo


def _poller(obj):
    p = select.poll()
    p.register(obj, select.POLLIN | select.POLLOUT)
    return p


def _events(p):
    ev = p.poll(0)
    return ev[0][1] if ev else 0


def _ready(t, want):
    """Is transport t's stream ready for `want` (select.POLLIN / POLLOUT)? An error or hang-up loses it."""
    ev = _events(t._p)
    if ev & (select.POLLERR | select.POLLHUP):
        t._lost()
        return False
    return bool(ev & want)


class _Transport:
    """What both transports share: connection state, back-off, closing, and losing the connection."""

    def _setup(self, ticks_ms, backoff_min_ms, backoff_max_ms, rand):
        self.ticks_ms = ticks_ms or _default_ticks_ms()
        self.backoff = _Backoff(backoff_min_ms, backoff_max_ms, self.ticks_ms, rand)
        self.s = None
        self._p = None
        self.connected = False
        self.failures = 0
        self._heard = False

    def close(self):
        s = self.s
        self.s = None
        self._p = None
        self.connected = False
        if s is not None:
            try:
                s.close()
            except (OSError, AttributeError):
                pass

    def _fail(self, now):
        self.failures += 1
        self.close()
        self.backoff.fail(now)

    def _lost(self):
        # a session that heard the head-end starts the back-off afresh
        if self._heard:
            self.backoff.reset()
        self._fail(self.ticks_ms())


class StreamTransport(_Transport):
    """A byte stream that is opened, not dialled: a UART on a board, a tty (e.g. a pty) on the Unix port.

    open_fn() returns the stream (read-, write- and select.poll-able: machine.UART, or open_tty(path)); it
    is called again, with back-off, after an error or a hang-up (the cable was pulled, the pty's other end
    closed). Readiness is tested with select.poll before every read and write; a write offers at most
    `chunk` bytes (a blocking tty accepts that much whenever poll says it is writable, unless its peer has
    stopped reading for a whole tty buffer, 4+ KB: with the link's window and probes, hours)."""

    def __init__(self, open_fn, ticks_ms=None, retry_min_ms=1000, retry_max_ms=30000, chunk=64, rand=None):
        self._setup(ticks_ms, retry_min_ms, retry_max_ms, rand)
        self.open_fn = open_fn
        self.chunk = chunk
        self.opens = 0

    def connect(self):
        if self.connected:
            return True
        now = self.ticks_ms()
        if not self.backoff.ready(now):
            return False
        try:
            s = self.open_fn()
        except OSError:
            self._fail(now)
            return False
        self.s = s
        try:
            self._p = _poller(s)
        except (OSError, TypeError, ValueError):
            self._fail(now)
            return False
        self.connected = True
        self._heard = False
        self.opens += 1
        return True

    def write(self, buf):
        if not self.connected:
            return 0
        try:
            if not _ready(self, select.POLLOUT):
                return 0
            n = self.s.write(buf[:self.chunk])
        except OSError:
            self._lost()
            return 0
        return n or 0

    def read_into(self, buf):
        if not self.connected:
            return 0
        try:
            if not _ready(self, select.POLLIN):
                return 0
            n = self.s.readinto(buf)
        except OSError:
            self._lost()
            return 0
        if n:
            self._heard = True
        return n or 0


def open_tty(path):
    """Open a tty (the Unix port's stand-in for a UART, e.g. a pty's slave) for StreamTransport: raw mode
    (no echo, no newline or control-character translation: frames are binary) and VMIN = VTIME = 0, so a
    read returns what has arrived instead of waiting for a full buffer (MicroPython has no O_NONBLOCK)."""
    f = open(path, "r+b")
    try:
        import termios
    except ImportError:
        return f  # not a POSIX port: the stream is used as it is
    try:
        fd = f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        cc = attrs[6]
        for i in range(len(cc)):
            if isinstance(cc[i], int):  # only VMIN and VTIME are numbers in MicroPython's termios
                cc[i] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (OSError, TypeError, ValueError, IndexError):
        f.close()
        raise OSError(5, "cannot configure %s as a raw tty" % path)
    return f


class TCPTransport(_Transport):
    """A TCP client with a non-blocking connect: connect() starts an attempt and later calls see it through
    (select.poll: writable = connected, error/hang-up = refused), so the meter never stalls on a dead
    network; an attempt that has not completed after connect_timeout_ms is abandoned. Failed attempts back
    off exponentially with jitter (backoff_min_ms .. backoff_max_ms); a session that heard the head-end
    resets the back-off. The address is resolved once (getaddrinfo blocks on DNS: use an IP address on a
    board, or accept one lookup per boot). ready() (e.g. hal's wlan.isconnected) gates attempts: on a board
    hal starts Wi-Fi and the link waits for it without counting failures."""

    def __init__(self, host, port, socket_mod=None, backoff_min_ms=1000, backoff_max_ms=60000,
                 connect_timeout_ms=10000, ticks_ms=None, rand=None, ready=None):
        if socket_mod is None:
            import socket as socket_mod
        self.sock = socket_mod
        self._setup(ticks_ms, backoff_min_ms, backoff_max_ms, rand)
        self.host = host
        self.port = port
        self.connect_timeout_ms = connect_timeout_ms
        self.ready = ready
        self._t0 = 0
        self._addr = None
        self.attempts = 0
        self.connects = 0

    def connect(self):
        if self.connected:
            return True
        now = self.ticks_ms()
        if self.s is None:
            if not self.backoff.ready(now) or (self.ready is not None and not self.ready()):
                return False
            if not self._start(now):
                return False
        ev = _events(self._p)
        if ev & (select.POLLERR | select.POLLHUP):
            self._fail(now)
        elif ev & select.POLLOUT:
            self.connected = True
            self.connects += 1
            self._heard = False
            return True
        elif ticks_diff(now, self._t0) >= self.connect_timeout_ms:
            self._fail(now)
        return False

    def _start(self, now):
        import errno
        self.attempts += 1
        s = None
        try:
            if self._addr is None:
                ai = self.sock.getaddrinfo(self.host, self.port)[0]
                self._addr = (ai[0], ai[-1])
            s = self.sock.socket(self._addr[0], self.sock.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(self._addr[1])
            except OSError as e:
                if e.args[0] not in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
                    raise
            self._p = _poller(s)
        except (OSError, IndexError):
            self.s = s
            self._fail(now)
            return False
        self.s = s
        self._t0 = now
        return True

    def write(self, buf):
        if not self.connected:
            return 0
        import errno
        try:
            if not _ready(self, select.POLLOUT):
                return 0
            n = self.s.send(buf)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return 0
            self._lost()
            return 0
        return n or 0

    def read_into(self, buf):
        if not self.connected:
            return 0
        try:
            ev = _events(self._p)
            if not ev & select.POLLIN:
                if ev & (select.POLLERR | select.POLLHUP):
                    self._lost()
                return 0
            n = self.s.readinto(buf)
        except OSError:
            self._lost()
            return 0
        if n is None:
            return 0  # EAGAIN
        if n == 0:
            self._lost()  # the head-end closed the connection
            return 0
        self._heard = True
        return n
