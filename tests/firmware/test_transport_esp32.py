# meter.transport under the ESP32's poll semantics (tests/firmware/esp32net.py: poll reports only registered
# events, a refused connect polls readable and writable, the error shows only on recv/send). The real-socket
# tests beside these are in test_link.py (Linux poll on loopback TCP).
import errno

from esp32net import POLLHUP, POLLIN, POLLOUT, Net
from meter.transport import TCPTransport
from mptest import eq, raises


class Ticks:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


def _transport(net, **kw):
    ticks = Ticks()
    t = TCPTransport("192.0.2.1", 4840, socket_mod=net, poll=net.poll, ticks_ms=ticks, backoff_min_ms=100,
                     backoff_max_ms=800, rand=lambda n: 0, **kw)
    return t, ticks


def test_the_stand_in_polls_as_an_esp32_does():
    # What fooled the transport before: asked for POLLIN | POLLOUT only (MicroPython's default mask), a
    # refused connect looks like a connection that is ready both ways, and no error bit comes.
    net = Net("refused")
    s = net.socket(2, net.SOCK_STREAM)
    raises(OSError, s.connect, ("192.0.2.1", 4840))
    p = net.poll()
    p.register(s, POLLIN | POLLOUT)
    eq(p.poll(0), [(s, POLLIN | POLLOUT)], "refused, yet readable and writable")
    p.register(s, POLLIN | POLLOUT | POLLHUP)
    eq(p.poll(0), [(s, POLLIN | POLLOUT | POLLHUP)], "the error shows as POLLHUP once registered")
    eq(raises(OSError, s.readinto, bytearray(1)).args[0], errno.ECONNRESET, "recv: the pending error")
    eq(raises(OSError, s.send, b"x").args[0], errno.ENOTCONN, "then: not connected")


def test_a_refused_connect_never_counts_as_connected():
    for reports in (True, False):  # False: a select that never reports the error, only the probe read can tell
        net = Net("refused", select_reports_errors=reports)
        t, ticks = _transport(net)
        waits = []
        for _ in range(4):
            for _ in range(3):
                eq(t.connect(), False, "refused (select reports errors: %r)" % reports)
            waits.append(t.backoff.last_wait)
            ticks.ms += t.backoff.last_wait
        eq((t.connects, t.failures, len(net.attempts)), (0, 4, 4), "four attempts, four failures, no connect")
        eq(waits, [50, 100, 200, 400], "backing off")
        eq(t.write(b"frame"), 0, "nothing written")
        eq(bytes(net.sent), b"", "nothing sent")
        assert all(s.closed for s in net.sockets), "every failed socket closed"


def test_an_accepted_connect_carries_data_both_ways():
    net = Net("accept")
    t, ticks = _transport(net)
    eq(t.connect(), True, "connected after the probe read found nothing waiting")
    eq(t.write(b"\x00frame\x00"), 7, "written")
    eq(bytes(net.sent), b"\x00frame\x00", "sent")
    net.inbox.extend(b"\x00ack\x00")
    buf = bytearray(16)
    eq(t.read_into(buf), 5, "read")
    eq(bytes(buf[:5]), b"\x00ack\x00", "the head-end's bytes")
    eq(t.read_into(buf), 0, "nothing more")
    eq((t.connects, t.failures), (1, 0), "counted")


def test_a_byte_the_probe_read_takes_is_not_lost():
    net = Net("accept")
    net.inbox.extend(b"\x00hello")  # the head-end spoke first
    t, _ = _transport(net)
    eq(t.connect(), True, "connected")
    buf = bytearray(16)
    got = bytearray()
    for _ in range(3):
        n = t.read_into(buf)
        got.extend(buf[:n])
    eq(bytes(got), b"\x00hello", "every byte, in order")


def test_a_connection_reset_later_shows_on_send_and_is_dropped():
    net = Net("accept")
    t, ticks = _transport(net)
    eq(t.connect(), True, "connected")
    net.sockets[-1].reset()
    eq(t.write(b"frame"), 0, "the reset: nothing written")
    eq(t.connected, False, "dropped")
    eq(t.failures, 1, "counted as a failure")
    ticks.ms += t.backoff.last_wait
    net.outcome = "refused"
    eq(t.connect(), False, "the next attempt is refused")


def test_a_connect_without_an_answer_times_out():
    net = Net("silent")
    t, ticks = _transport(net, connect_timeout_ms=1000)
    eq(t.connect(), False, "in progress")
    ticks.ms += 999
    eq(t.connect(), False, "still in progress")
    eq(t.failures, 0, "not yet failed")
    ticks.ms += 1
    eq(t.connect(), False, "timed out")
    eq(t.failures, 1, "failed")
