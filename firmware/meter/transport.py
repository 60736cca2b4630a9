# The link's transports (meter.link never knows which one it has): a byte stream that is opened (a UART on a
# board, a tty or pty on the Unix port), a TCP client, and TLS over TCP. Nothing here imports machine, network or
# ssl: meter/hal.py opens the UART or brings Wi-Fi up and hands the pieces in, meter/tls.py makes the TLS wrap.
#
# Transport interface (what meter.link.Link calls; a loopback stands in for it in the tests):
#   connect() -> bool     True when connected; otherwise one non-blocking step (an attempt when its back-off
#                         has run out, or a check on an attempt in progress), False
#   connected             bool
#   write(buf) -> int     bytes accepted now, 0 if none (never blocks for long; may be partial)
#   read_into(buf) -> int bytes read now, 0 if none
#   close()
# A transport that meets an I/O error closes itself (connected becomes False) and retries with back-off on a
# later connect(); write/read_into return 0 then. Readiness is tested with select.poll before every read and
# write; data that arrived before a hang-up is read first.
#
# Poll on an ESP32 is not poll on Linux. MicroPython's ESP32 sockets (ports/esp32/modsocket.c) answer a poll
# with lwIP's select() and report only the events they were asked for: POLLHUP only when it was registered
# (as select's exception set), POLLERR never. And lwIP, when a connection fails (err_tcp in api_msg.c: a
# refused or timed-out connect, a reset), marks the socket readable, writable and in error at once, "to
# release selects pending on read or write". So a refused non-blocking connect polled for POLLOUT alone looks
# connected; the error shows only on the first send or recv. Hence every poll here registers POLLERR and
# POLLHUP explicitly, and a TCP connect counts as made only after a probe read finds the socket healthy
# (EAGAIN, or data, which is kept): ECONNRESET / ENOTCONN or an EOF there is a failed attempt.
import errno
import select

from meter.clock import default_ticks_ms, ticks_add, ticks_diff

_LOST = select.POLLERR | select.POLLHUP
_EVENTS = select.POLLIN | select.POLLOUT | _LOST  # registered: on an ESP32 an unregistered hang-up goes unseen
DELIM = b"\x00"  # a frame delimiter: what a TLS session sends first (TLSTransport)


def _random(n):
    # back-off jitter: 0 <= r < n (n < 2^24)
    import random
    return (random.getrandbits(24) * n) >> 24


class Backoff:
    """Exponential back-off with jitter: after the n-th failure in a row the next attempt waits a random time
    in [d/2, d), d = min(lo * 2^(n-1), hi); a success (a session that heard the head-end) resets it."""

    def __init__(self, lo, hi, rand=None):
        self.lo = lo
        self.hi = hi
        self.rand = rand or _random
        self.d = lo
        self.next_at = None
        self.last_wait = 0

    def ready(self, now):
        return self.next_at is None or ticks_diff(now, self.next_at) >= 0

    def fail(self, now):
        d = self.d
        self.last_wait = d // 2 + self.rand(d - d // 2)
        self.next_at = ticks_add(now, self.last_wait)
        self.d = min(d * 2, self.hi)

    def reset(self):
        self.d = self.lo


class _Transport:
    """What both transports share: connecting with back-off, readiness, reads and writes, losing the
    connection. A subclass starts an attempt (_start) and may take a while to complete it (_established)."""

    eof_is_hangup = False  # does a read of 0 bytes after POLLIN mean the peer went away?

    def __init__(self, ticks_ms, backoff_min_ms, backoff_max_ms, rand, poll=None):
        self.ticks_ms = ticks_ms or default_ticks_ms()
        self._poll_fn = poll or select.poll  # (a test's stand-in can model another port's poll)
        self.backoff = Backoff(backoff_min_ms, backoff_max_ms, rand)
        self.s = None
        self._p = None
        self.connected = False
        self.attempts = 0
        self.connects = 0
        self.failures = 0
        self._heard = False
        self._t0 = 0  # when the attempt in progress started

    def connect(self):
        if self.connected:
            return True
        now = self.ticks_ms()
        if self.s is None:
            if not self.backoff.ready(now) or not self._may_start():
                return False
            self.attempts += 1
            try:
                self.s = self._start()
                p = self._poll_fn()
                p.register(self.s, _EVENTS)
                self._p = p
            except (OSError, TypeError, ValueError, IndexError):
                self._fail(now)
                return False
            self._t0 = now
        if not self._established(now):
            return False
        self.connected = True
        self.connects += 1
        self._heard = False
        return True

    def _may_start(self):
        return True

    def _established(self, now):
        return True

    def _events(self):
        ev = self._p.poll(0)
        return ev[0][1] if ev else 0

    def _ready(self, want):
        """Is the stream ready for `want` (select.POLLIN / POLLOUT)? An error or hang-up loses it."""
        ev = self._events()
        if want == select.POLLIN and ev & want:
            return True  # what arrived before a hang-up is read first
        if ev & _LOST:
            self._lost()
            return False
        return bool(ev & want)

    def _io(self, want, op, buf):
        """op(buf) once the stream is ready for `want`; None when it is not (or not connected, or EAGAIN)."""
        if not self.connected:
            return None
        try:
            return op(buf) if self._ready(want) else None
        except OSError as e:
            if e.args[0] != errno.EAGAIN:
                self._lost()
            return None

    def write(self, buf):
        return self._io(select.POLLOUT, self._send, buf) or 0

    def read_into(self, buf):
        n = self._io(select.POLLIN, self._recv, buf)
        if not n:
            if n == 0 and self.eof_is_hangup:
                self._lost()  # the head-end closed the connection
            return 0
        self._heard = True
        return n

    def _recv(self, buf):
        return self.s.readinto(buf)

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
    closed). A write offers at most `chunk` bytes (a blocking tty accepts that much whenever poll says it is
    writable, unless its peer has stopped reading for a whole tty buffer, 4+ KB: with the link's window and
    probes, hours)."""

    def __init__(self, open_fn, ticks_ms=None, retry_min_ms=1000, retry_max_ms=30000, chunk=64, rand=None):
        _Transport.__init__(self, ticks_ms, retry_min_ms, retry_max_ms, rand)
        self.open_fn = open_fn
        self.chunk = chunk

    def _start(self):
        return self.open_fn()

    def _send(self, buf):
        return self.s.write(buf[:self.chunk])


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
    hal starts Wi-Fi and the link waits for it without counting failures. A connect is confirmed by a probe
    read before it counts (see the top of this file: a refused connect on an ESP32 polls as writable)."""

    eof_is_hangup = True

    def __init__(self, host, port, socket_mod=None, backoff_min_ms=1000, backoff_max_ms=60000,
                 connect_timeout_ms=10000, ticks_ms=None, rand=None, ready=None, poll=None):
        if socket_mod is None:
            import socket as socket_mod
        _Transport.__init__(self, ticks_ms, backoff_min_ms, backoff_max_ms, rand, poll)
        self._first = bytearray(1)  # a byte the probe read took, handed out by the next read_into
        self._has_first = False
        self.sock = socket_mod
        self.host = host
        self.port = port
        self.connect_timeout_ms = connect_timeout_ms
        self.ready = ready
        self._addr = None

    def _may_start(self):
        return self.ready is None or self.ready()

    def _start(self):
        if self._addr is None:
            ai = self.sock.getaddrinfo(self.host, self.port)[0]
            self._addr = (ai[0], ai[-1])
        s = self.sock.socket(self._addr[0], self.sock.SOCK_STREAM)
        try:
            s.setblocking(False)
            try:
                s.connect(self._addr[1])
            except OSError as e:
                if e.args[0] not in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
                    raise
        except OSError:
            s.close()
            raise
        return s

    def _established(self, now):
        ev = self._events()
        if ev & _LOST:
            self._fail(now)
        elif ev & select.POLLOUT:
            if self._probe():
                return True
            self._fail(now)
        elif ticks_diff(now, self._t0) >= self.connect_timeout_ms:
            self._fail(now)
        return False

    def _probe(self):
        """Is the socket that polls writable really connected? One non-blocking read of one byte: nothing
        there yet (None, or EAGAIN) or a byte (kept) says yes; an EOF or any other error says the connect
        failed."""
        self._has_first = False
        try:
            n = self.s.readinto(self._first)
        except OSError as e:
            return e.args[0] == errno.EAGAIN
        if n:
            self._has_first = True
        return n != 0

    def read_into(self, buf):
        if self._has_first and self.connected and len(buf):
            self._has_first = False
            buf[0] = self._first[0]
            self._heard = True
            return 1
        return _Transport.read_into(self, buf)

    def _send(self, buf):
        return self.s.send(buf)


class TLSTransport(TCPTransport):
    """TCPTransport with TLS over it (meter.tls makes `wrap`: the head-end's CA pinned, CERT_REQUIRED). Once TCP
    is up, the socket is wrapped and the handshake is driven without blocking by connect(): each call offers
    one frame delimiter (0x00), which mbedTLS holds back until the handshake is over and then sends as the
    session's first byte (an empty segment the head-end's deframer skips: meter.frame). So connected means the
    head-end proved its certificate, and nothing of the link's goes out before that. A certificate that does not
    verify, a server that is not TLS, or a handshake not done within connect_timeout_ms (counted from the TCP
    connect) is a failed attempt with back-off, as a refused connect is; last_error says why.

    mbedTLS, when a write cannot go out yet, has framed a record of the bytes offered and must be offered the
    same bytes again (mbedtls_ssl_write); the link re-offers from the same position, and the retry is cut to
    the length first offered."""

    def __init__(self, host, port, wrap, **kw):
        TCPTransport.__init__(self, host, port, **kw)
        self.wrap = wrap
        self._tls = False  # the handshake is under way on self.s
        self._pending = 0  # bytes of the record mbedTLS holds from a write that could not go out
        self._t_tcp = 0
        self.handshakes = 0
        self.tls_failures = 0
        self.handshake_ms = None  # of the last handshake: from the TCP connect to connected
        self.last_error = None

    def _established(self, now):
        if not self._tls:
            if not TCPTransport._established(self, now):
                return False
            if self._has_first:  # the server spoke first: no TLS server does
                return self._tls_fail(now, "the server sent data before the TLS handshake")
            try:
                self.s = self.wrap(self.s)
                p = self._poll_fn()
                p.register(self.s, _EVENTS)
                self._p = p
            except (OSError, ValueError, TypeError) as e:
                return self._tls_fail(now, e)
            self._tls = True
            self._t_tcp = now
        try:
            n = self.s.write(DELIM)
        except (OSError, ValueError) as e:  # modtls_mbedtls: ValueError for a certificate that does not verify
            return self._tls_fail(now, e)
        if n:
            self._tls = False
            self.handshakes += 1
            self.handshake_ms = ticks_diff(self.ticks_ms(), self._t_tcp)
            return True
        if ticks_diff(now, self._t0) >= self.connect_timeout_ms:
            return self._tls_fail(now, "no TLS handshake within %d ms" % self.connect_timeout_ms)
        return False

    def _tls_fail(self, now, why):
        self.tls_failures += 1
        self.last_error = str(why)
        self._fail(now)
        return False

    def close(self):
        self._tls = False
        self._pending = 0
        TCPTransport.close(self)

    def _recv(self, buf):
        return self.s.readinto(buf)

    def _send(self, buf):
        if self._pending:
            if len(buf) < self._pending:
                return None  # not the bytes mbedTLS holds: wait for the link's full offer
            buf = buf[:self._pending]
        n = self.s.write(buf)
        self._pending = 0 if n else len(buf)
        return n

