# A socket module and a poll that behave like MicroPython's on an ESP32, for meter.transport's tests on the
# Unix port (test-only; the facts behind it are in docs/hardware.md, "Refused TCP connects"):
#
# - poll reports only the events registered (ports/esp32/modsocket.c asks lwIP's select() for read, write and,
#   only when POLLHUP was registered, exception; POLLERR is never reported), unlike Linux, where POLLERR and
#   POLLHUP always come;
# - when a connection fails (refused, timed out, reset), lwIP marks the socket readable, writable and in error
#   at once (err_tcp in api_msg.c), so a refused connect polled for POLLOUT looks connected;
# - the error itself shows only on recv/send: the pending error once (ECONNRESET), then ENOTCONN;
# - a non-blocking read with nothing there returns None (MicroPython's stream semantics for EAGAIN).
#
# Net(outcome): "refused" (RST to the SYN), "accept" (a peer takes the connection), or "silent" (no answer:
# the connect never completes). select_reports_errors=False models a stack whose select never reports the
# error event even when asked: then only the transport's probe read can tell.
import errno
import select

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLHUP = select.POLLHUP
SOCK_STREAM = 1
AF_INET = 2


class Esp32Socket:
    def __init__(self, net):
        self.net = net
        self.state = "new"
        self.readable = False  # lwIP's event flags (sockets.c: rcvevent, sendevent, errevent)
        self.writable = False
        self.error = False
        self.pending = 0  # the error the next recv/send reports once
        self.eof = False
        self.closed = False

    def setblocking(self, flag):
        self.blocking = flag

    def connect(self, addr):
        self.net.attempts.append(addr)
        self.state = "connecting"
        self.net.sockets.append(self)
        raise OSError(errno.EINPROGRESS)

    def _settle(self):
        # what the network did with the SYN, seen at the first poll after connect()
        if self.state != "connecting":
            return
        outcome = self.net.outcome
        if outcome == "refused":
            self._fail(errno.ECONNRESET)
        elif outcome == "accept":
            self.state = "connected"
            self.writable = True

    def _fail(self, err):
        self.state = "failed"
        self.pending = err
        self.readable = self.writable = self.error = True

    def reset(self):
        """The peer resets an established connection."""
        self._fail(errno.ECONNRESET)

    def events(self, mask):
        self._settle()
        ev = 0
        if mask & POLLIN and (self.readable or self.net.inbox or self.eof):
            ev |= POLLIN
        if mask & POLLOUT and self.writable:
            ev |= POLLOUT
        if mask & POLLHUP and self.error and self.net.select_reports_errors:
            ev |= POLLHUP
        return ev

    def _raise_pending(self):
        e = self.pending or errno.ENOTCONN
        self.pending = 0
        raise OSError(e)

    def readinto(self, buf):
        if self.state == "failed":
            self._raise_pending()
        if self.state != "connected":
            raise OSError(errno.ENOTCONN)
        inbox = self.net.inbox
        if inbox:
            n = min(len(buf), len(inbox))
            buf[:n] = inbox[:n]
            inbox[:n] = b""
            return n
        return 0 if self.eof else None

    def send(self, buf):
        if self.state == "failed":
            self._raise_pending()
        self.net.sent.extend(bytes(buf))
        return len(buf)

    def close(self):
        self.closed = True


class Esp32Poll:
    def __init__(self):
        self.objs = {}

    def register(self, obj, mask=POLLIN | POLLOUT):
        self.objs[id(obj)] = (obj, mask)

    def poll(self, timeout=-1):
        out = []
        for obj, mask in self.objs.values():
            ev = obj.events(mask)
            if ev:
                out.append((obj, ev))
        return out


class Net:
    """The socket module handed to TCPTransport (socket_mod=net, poll=net.poll)."""

    SOCK_STREAM = SOCK_STREAM

    def __init__(self, outcome="refused", select_reports_errors=True):
        self.outcome = outcome
        self.select_reports_errors = select_reports_errors
        self.attempts = []
        self.sockets = []
        self.sent = bytearray()
        self.inbox = bytearray()

    def getaddrinfo(self, host, port):
        return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]

    def socket(self, af, kind):
        return Esp32Socket(self)

    def poll(self):
        return Esp32Poll()
