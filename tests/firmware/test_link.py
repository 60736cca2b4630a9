# The meter's link (meter/link.py) inside MicroPython: a Link over an in-memory loopback transport with a
# head-end stand-in that signs acknowledgements and commands with its own P-256 key (meter.p256 + meter.cose),
# and the two real transports: StreamTransport re-opening a stream, TCPTransport against a listening socket
# in this process.
import os
import socket

from meter import cbor, cose, events, frame, messages, p256
from meter.identity import Identity, key_id
from meter.link import Link
from meter.transport import StreamTransport, TCPTransport
from meter.outbox import Outbox
from meter.seqno import FrameSeq
from meter.store import Store
from mptest import TempDir, eq

T0 = 1793491200


# -- helpers -------------------------------------------------------------------------------------------------
class Loop:
    """One end of an in-memory byte pipe: writes go to `out`, reads come from `inp`. cap limits the bytes a
    write accepts (partial writes); up=False makes connect() fail (the cable is out)."""

    def __init__(self, inp, out, cap=None):
        self.inp = inp
        self.out = out
        self.cap = cap
        self.up = True
        self.connected = False
        self.attempts = 0
        self.writes = []

    def connect(self):
        self.attempts += 1
        self.connected = self.up
        return self.connected

    def write(self, buf):
        if not self.connected:
            return 0
        n = len(buf) if self.cap is None else min(len(buf), self.cap)
        self.out.extend(bytes(buf[:n]))
        self.writes.append(n)
        return n

    def read_into(self, buf):
        if not self.connected:
            return 0
        n = min(len(buf), len(self.inp))
        buf[:n] = self.inp[:n]
        self.inp[:n] = b""
        return n

    def close(self):
        self.connected = False

    def cut(self):
        """The cable is pulled: the connection drops, bytes on the wire are lost, reconnects fail."""
        self.connected = False
        self.up = False
        self.inp[:] = b""


class Clock:
    def __init__(self):
        self.t = T0
        self.ms = 0

    def time(self):
        return self.t

    def ticks_ms(self):
        return self.ms


class HeadEnd:
    """The head-end's side of the pipe: reads and checks the meter's frames, signs acks and commands."""

    def __init__(self, ident, clock):
        self.d, pub = p256.generate_key()
        ident.install_headend(pub)
        self.kid = key_id(pub)
        self.dev = ident.device_id
        self.meter_pub = ident.public_key
        self.clock = clock
        self.df = frame.Deframer()
        self.counter = 0
        self.seen = []       # seq of every frame received, in order (duplicates included)
        self.payloads = {}   # seq -> payload map

    def receive(self, wire):
        got = self.df.feed(bytes(wire))
        wire[:] = b""
        for c in got:
            _kid, payload = cose.verify1(c, lambda kid: self.meter_pub if kid == self.dev else None)
            m = cbor.decode(payload)
            self.seen.append(m[3])
            self.payloads[m[3]] = m
        return len(got)

    def contiguous(self):
        s = set(self.seen)
        n = min(s) if s else 0
        while n in s:
            n += 1
        return n - 1

    def sign(self, payload, d=None, kid=None):
        return frame.encode_frame(cose.sign1(d or self.d, kid or self.kid, cbor.encode(payload)))

    def _common(self, kind, counter, ttl, dev):
        if counter is None:
            self.counter += 1
            counter = self.counter
        return {1: kind, 2: dev or self.dev, 3: counter, 4: self.clock.t, 9: self.clock.t + ttl}

    def ack(self, upto, counter=None, ttl=300, dev=None, d=None, kid=None):
        m = self._common(messages.ACK, counter, ttl, dev)
        m[12] = upto
        return self.sign(m, d, kid)

    def command(self, op, args=None, counter=None, ttl=300):
        m = self._common(messages.COMMAND, counter, ttl, None)
        m[10] = op
        if args is not None:
            m[11] = args
        return self.sign(m)


class Rig:
    """A meter (identity, frame numbers, builder, outbox, link) wired to a HeadEnd over a Loop."""

    def __init__(self, d, window=4, cap=None, **kw):
        self.dir = d
        self.clock = Clock()
        self.ident = Identity(d)
        self.he = HeadEnd(self.ident, self.clock)
        self.builder = messages.Builder(self.ident, FrameSeq(Store(d, "frame-seq", max_payload=16)),
                                        self.clock.time)
        self.up = bytearray()    # meter -> head-end
        self.down = bytearray()  # head-end -> meter
        self.t = Loop(self.down, self.up, cap)
        self.outbox = Outbox(d, max_bytes=kw.pop("max_bytes", 16384), segment_bytes=kw.pop("segment_bytes", 2048))
        self.events = []
        self.commands = []
        self.link = Link(self.t, self.outbox, self.ident, respond=self.respond, on_event=self.on_event,
                         time=self.clock.time, ticks_ms=self.clock.ticks_ms, window=window, **kw)

    def respond(self, counter, result, reason):
        return self.builder.frame(messages.RESPONSE, 0, messages.response_body(counter, result, reason))

    def on_event(self, code, value):
        self.events.append((code, value))

    def make(self, n=1):
        seqs = []
        for _ in range(n):
            seqs.append(self.builder.seq.next)
            body = {6: {10800: 1, 20800: 0}, 7: [0, 0, 0], 8: 0}
            eq(self.link.send(*self.builder.frame(messages.READING, 0, body)), True, "queued")
        return seqs

    def run(self, polls=20):
        for _ in range(polls):
            self.link.poll()
            self.he.receive(self.up)

    def tell(self, fr):
        self.down.extend(fr)


# -- the session ---------------------------------------------------------------------------------------------
def test_frames_flow_within_the_window():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=4)
        seqs = r.make(10)
        r.run()
        eq(r.he.seen, seqs[:4], "at most `window` frames beyond the last ack")
        eq(r.link.sender.frames_sent, 4, "frames_sent")
        r.tell(r.he.ack(seqs[1]))
        r.run()
        eq(r.he.seen, seqs[:6], "the ack of two frames lets two more go")
        eq(r.link.acks, 1, "ack counted")
        eq(r.outbox.acked, seqs[1], "outbox acknowledged")
        r.tell(r.he.ack(seqs[5]))
        r.run()
        r.tell(r.he.ack(seqs[9]))
        r.run()
        eq(r.he.seen, seqs, "every frame exactly once, in order")
        eq(list(r.outbox.pending()), [], "outbox drained")
        eq((r.link.sender.resends, r.link.refused, r.link.errors), (0, {}, 0), "clean run")
        eq(r.link.sender.bytes_sent, sum(r.t.writes), "bytes_sent")
        more = r.make(3)
        r.run()
        eq(r.he.seen[-3:], more, "new frames follow at once")


def test_partial_writes_and_write_budget():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=8, cap=7, write_budget=50)
        seqs = r.make(5)
        for _ in range(200):
            before = len(r.up)
            r.link.poll()
            assert len(r.up) - before <= 50, "at most write_budget bytes per poll"
            r.he.receive(r.up)
        eq(r.he.seen, seqs, "frames arrive whole through 7-byte writes")
        assert max(r.t.writes) <= 7, "never more than the transport took"


def test_forged_replayed_expired_and_misaddressed_acks_are_refused():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=8)
        seqs = r.make(6)
        r.run()
        he = r.he
        other_d, other_pub = p256.generate_key()
        bad = [
            ("bad-signature", he.ack(seqs[5], d=other_d)),                       # right kid, wrong key
            ("unknown-kid", he.ack(seqs[5], d=other_d, kid=key_id(other_pub))),  # someone else's key
            ("expired", he.ack(seqs[5], ttl=-1)),
            ("wrong-device", he.ack(seqs[5], dev=b"\x00" * 8)),
            ("wrong-kind", he.sign({1: 2, 2: he.dev, 3: 99, 4: T0, 9: T0 + 9})),
            ("malformed", frame.encode_frame(b"\xd2\x84\x43")),                   # good CRC, not a COSE_Sign1
        ]
        for reason, fr in bad:
            r.tell(fr)
            r.run(3)
            eq(r.outbox.acked, -1, "%s changed nothing" % reason)
        good = he.ack(seqs[2], counter=50)
        r.tell(good)
        r.run(3)
        eq(r.outbox.acked, seqs[2], "the genuine ack")
        r.tell(good)  # replayed as it was
        r.tell(he.ack(seqs[5], counter=50))  # same counter, new content
        r.tell(he.ack(seqs[5], counter=49))
        r.run(6)
        eq(r.outbox.acked, seqs[2], "replays changed nothing")
        want = {"bad-signature": 1, "unknown-kid": 1, "expired": 1, "wrong-device": 1, "wrong-kind": 1,
                "malformed": 1, "replay": 3}
        eq(r.link.refused, want, "refusals counted by reason")
        eq(r.events, [(events.AUTH_FAIL, "bad-signature")], "one event, then rate limited")
        eq(r.link.events_suppressed, 8, "the rest counted")
        r.clock.t += 61
        r.tell(he.ack(seqs[5], counter=40))
        r.run(3)
        eq(r.events[-1], (events.AUTH_FAIL, "replay"), "next event after event_min_s")
        eq(r.link.errors, 0, "nothing raised")


def test_garbage_on_the_line_is_skipped():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=8)
        seqs = r.make(3)
        r.run()
        r.tell(b"boot: ets Jun  8 2016 00:22:57\r\n" + bytes(range(1, 256)) * 14)  # text, then 3.5 KB
        r.tell(b"\x00\x05\x01\x02\x03\x04\x00")  # a segment that is not a frame
        ack = r.he.ack(seqs[2])
        r.tell(ack[:40])
        r.run(3)
        r.tell(ack[40:])
        r.run(12)  # the link reads at most 512 bytes a poll
        eq(r.outbox.acked, seqs[2], "the ack after the garbage, split in two reads")
        eq(r.link.refused, {}, "noise is not a refusal")
        assert r.link._df.noise > 3500 and r.link._df.oversized == 1, "noise counted (beyond HOST_MAX_FRAME)"
        eq(r.link.errors, 0, "nothing raised")


def test_disconnect_mid_frame_then_resend_unacked():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=8, cap=60, write_budget=60)
        seqs = r.make(5)
        for _ in range(20):  # 60 bytes per poll
            if len(r.he.seen) == 2:
                break
            r.link.poll()
            r.he.receive(r.up)
        eq(r.he.seen, seqs[:2], "two whole frames so far")
        r.tell(r.he.ack(seqs[0]))
        for _ in range(5):
            r.link.poll()
            if r.link.sender._out is not None and r.link.sender._out_pos >= 30:
                break
        assert r.link.sender._out is not None and r.link.sender._out_pos >= 30, "a frame is half-way out"
        eq(r.outbox.acked, seqs[0], "the ack was read")
        cut_seq = r.link.sender._out_seq
        r.t.cut()
        r.up[len(r.up) - 20:] = b""  # and the last bytes written never made it
        r.link.poll()
        eq(r.link.connected, False, "down")
        more = r.make(2)
        for _ in range(5):
            r.link.poll()
        eq(r.link.disconnects, 1, "one disconnect")
        r.t.up = True
        r.run(60)
        eq(r.link.reconnects, 1, "reconnected")
        eq(sorted(set(r.he.seen)), seqs + more, "every frame arrived")
        eq(r.he.seen.count(cut_seq), 1, "the frame cut in half arrived once, whole, after the reconnect")
        eq(r.he.df.noise_segments, 1, "its torn first half was skipped as noise")
        eq(r.link.sender.resends, 1, "the frame sent whole but not acknowledged was sent again")
        eq(r.he.seen.count(seqs[1]), 2, "that one")
        eq(r.he.seen.count(seqs[0]), 1, "the acknowledged frame was not")


def test_a_connection_that_resends_first_carries_one_fresh_frame():
    # The head-end answers a connection only once it shows a frame it cannot have stored (issue 11, finding
    # 1): a window full of frames sent before must not hold back the meter's new ones.
    with TempDir("link", make=False) as d:
        r = Rig(d, window=3)
        seqs = r.make(5)
        r.run(10)
        eq(r.he.seen, seqs[:3], "a full window, nothing acknowledged")
        r.t.cut()
        r.link.poll()
        r.t.up = True
        del r.he.seen[:]
        r.run(10)
        eq(r.he.seen, [seqs[3]] + seqs[:3], "the oldest frame never sent goes first, then the window again")
        for fresh in (seqs[4], None):
            r.t.cut()
            r.link.poll()
            r.t.up = True
            del r.he.seen[:]
            r.run(10)
            if fresh is not None:
                eq(r.he.seen, [fresh] + seqs[:3], "one sent ahead before does not count: the next never sent")
            else:
                eq(r.he.seen, seqs[:3], "every held frame was sent before: the window alone, for now")
        new = r.make(1)
        r.run(10)
        eq(r.he.seen[3:], new, "the next frame made goes at once, ahead of the full window")
        del r.he.seen[:]
        r.make(2)
        r.run(10)
        eq(r.he.seen, [], "only one per connection: the rest wait for the window")
        # a reboot: what the outbox holds may all have been delivered; the hello made at boot is fresh
        link = Link(r.t, Outbox(d, max_bytes=16384, segment_bytes=2048), r.ident, time=r.clock.time,
                    ticks_ms=r.clock.ticks_ms, window=3)
        hello = r.builder.frame(messages.HELLO, 0, {})
        link.send(*hello)
        for _ in range(10):
            link.poll()
            r.he.receive(r.up)
        eq(r.he.seen, [hello[0]] + seqs[:3], "after a boot: the hello first, then the window")
        r.tell(r.he.ack(seqs[0]))
        for _ in range(10):
            link.poll()
            r.he.receive(r.up)
        eq(r.he.seen[4:], [seqs[3]], "the window moves on in order; the hello is not sent twice")


def test_lost_frame_probe_then_go_back():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=4, ack_timeout_ms=1000)
        seqs = r.make(6)
        r.link.poll()
        # the second frame is lost on the line; the head-end gets 1, 3, 4 and acknowledges only up to the gap
        wire = bytes(r.up)
        r.up[:] = b""
        frames = [frame.encode_frame(c) for c in frame.Deframer().feed(wire)]
        r.up.extend(frames[0] + frames[2] + frames[3])
        r.he.receive(r.up)
        eq(r.he.seen, [seqs[0], seqs[2], seqs[3]], "one lost")
        r.tell(r.he.ack(r.he.contiguous()))
        r.run(5)
        eq(r.he.seen, [seqs[0], seqs[2], seqs[3], seqs[4]], "window: one more")
        r.clock.ms += 999
        r.run(5)
        eq(r.link.sender.probes, 0, "not yet")
        r.clock.ms += 1
        r.run(1)
        eq((r.link.sender.probes, r.he.seen[-1]), (1, seqs[1]), "the oldest unacknowledged frame alone")
        r.tell(r.he.ack(r.he.contiguous()))
        r.run(10)
        eq(r.outbox.acked, seqs[4], "the probe closed the gap")
        eq(r.he.seen[-1], seqs[5], "and the rest followed")
        # a silent head-end: one probe per (doubling) timeout, nothing more
        more = r.make(8)
        r.run(10)
        n = len(r.he.seen)
        for step in (1000, 2000, 4000):
            r.clock.ms += step
            r.run(3)
        eq(len(r.he.seen) - n, 3, "three probes in 7 s: 1 s, 2 s, 4 s")
        eq(r.he.seen[-3:], [seqs[5]] * 3, "each the oldest unacknowledged frame")
        r.tell(r.he.ack(seqs[5]))
        r.run(20)
        for _ in range(4):
            r.tell(r.he.ack(r.he.contiguous()))
            r.run(20)
        eq(r.outbox.acked, more[-1], "all acknowledged in the end")


def test_backfill_requeues_and_answers():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=16, max_bytes=4096, segment_bytes=512)
        seqs = r.make(12)
        r.run()
        r.tell(r.he.ack(seqs[1]))
        r.run()
        n = len(r.he.seen)
        r.tell(r.he.command(1, {1: seqs[4], 2: seqs[6]}))
        r.run()
        got = r.he.seen[n:]
        eq(got[:3], seqs[4:7], "the range again, before anything newer")
        resp = r.he.payloads[got[3]]
        eq((resp[1], resp[6], resp[7], resp.get(8)), (messages.RESPONSE, r.he.counter, 0, None), "answered ok")
        # a range that the head-end acknowledged already: gone
        r.tell(r.he.command(1, {1: seqs[0], 2: seqs[5]}))
        r.run()
        resp = r.he.payloads[r.he.seen[-1]]
        eq((resp[7], resp[8]), (-1, "gone %d..%d" % (seqs[0], seqs[1])), "first and last seq no longer held")
        eq(r.he.seen[-5:-1], seqs[2:6], "what is held was resent")
        r.tell(r.he.ack(r.he.contiguous()))  # the responses take room in the window too
        r.run()
        for args, want in (({1: 5, 2: 4}, -3), ({1: -1, 2: 3}, -3), ({2: 3}, -3), (None, -3)):
            r.tell(r.he.command(1, args))
            r.run()
            eq(r.he.payloads[r.he.seen[-1]][7], want, "bad arguments %r" % (args,))
        r.tell(r.he.command(7))
        r.run()
        eq(r.he.payloads[r.he.seen[-1]][7], -2, "unknown operation")
        eq(r.link.commands, 7, "commands counted")
        # frames dropped by the bounded outbox before they could be sent (the window was full)
        r.make(30)
        r.run(40)
        assert r.outbox.dropped > 0, "the outbox overflowed"
        r.tell(r.he.ack(r.he.contiguous()))
        r.run(40)
        eq(len(r.link.sender._inflight), r.link.sender.window, "the window is full of frames beyond the gap")
        lo = r.outbox.last_lost
        r.tell(r.he.command(1, {1: lo, 2: lo + 1}))
        r.run(40)
        got = [m for m in r.he.payloads.values() if m[1] == messages.RESPONSE and m[6] == r.he.counter]
        eq((got[0][7], got[0][8]), (-1, "gone %d..%d" % (lo, lo)), "dropped; the answer passed the full window")


def test_backfill_beyond_the_window_goes_in_order_once():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=2)
        seqs = r.make(6)
        r.run()
        eq(r.he.seen, seqs[:2], "window of two")
        r.tell(r.he.command(1, {1: seqs[0], 2: seqs[4]}))
        r.run()
        eq(r.he.seen[2:7], seqs[:5], "the whole range, including frames not sent before")
        eq(r.he.payloads[r.he.seen[7]][1], messages.RESPONSE, "then the answer")
        r.tell(r.he.ack(r.he.contiguous()))
        r.run()
        eq(r.he.seen[8:], [seqs[5]], "then the rest, nothing twice")
        eq(r.link.sender.resends, 2, "frames 0 and 1 were resends")


def test_commands_go_to_on_command_and_counter_survives_reboot():
    with TempDir("link", make=False) as d:
        r = Rig(d, window=8)
        calls = []

        def on_command(kind, counter, m):
            calls.append((kind, counter, m[10], m.get(11)))
            return r.respond(counter, 0, "done")

        r.link.on_command = on_command
        r.make(1)
        r.run()
        cmd = r.he.command(4, {1: 2, 2: 3}, counter=7)
        r.tell(cmd)
        r.run()
        eq(calls, [(messages.COMMAND, 7, 4, {1: 2, 2: 3})], "on_command called once")
        eq(r.he.payloads[r.he.seen[-1]][8], "done", "its response went out")
        # reboot: the counter was persisted before the command acted; the same command is a replay
        r2 = Link(r.t, Outbox(d, max_bytes=16384, segment_bytes=2048), r.ident, on_command=on_command,
                  time=r.clock.time, ticks_ms=r.clock.ticks_ms)
        eq(r2.counter, 7, "counter restored")
        r.tell(cmd)
        for _ in range(5):
            r2.poll()
        eq(len(calls), 1, "not executed twice")
        eq(r2.refused, {"replay": 1}, "refused as a replay")
        # acknowledgements persist the counter every persist_every, and on flush()
        r.tell(r.he.ack(0, counter=8))
        r2.poll()
        eq(Link(r.t, r2.outbox, r.ident).counter, 7, "not yet written")
        r2.flush()
        eq(Link(r.t, r2.outbox, r.ident).counter, 8, "flushed")


def test_poll_never_raises():
    class Broken:
        connected = False

        def __init__(self):
            self.n = 0

        def connect(self):
            self.n += 1
            if self.n % 3 == 0:
                raise OSError(5)
            self.connected = True
            return True

        def write(self, buf):
            raise OSError(104)

        def read_into(self, buf):
            if self.n % 2:
                raise ValueError("garbage")
            buf[0] = 0
            return 1

        def close(self):
            self.connected = False

    with TempDir("link", make=False) as d:
        r = Rig(d)
        broken = r.link.transport = Broken()
        r.make(2)
        r.link.poll()
        eq(r.link.errors, 1, "the first error")
        n = broken.n
        for _ in range(10):
            r.link.poll()
        eq((r.link.errors, broken.n), (1, n), "then the link rests: no reconnect storm")
        for _ in range(30):
            r.clock.ms += 1000
            r.link.poll()
        assert r.link.errors >= 10, "errors counted (%d)" % r.link.errors
        codes = [e for e in r.events if e[0] == events.INTERNAL]
        assert 1 <= len(codes) <= 6, "reported on the 1st, 2nd, 4th, 8th ... error: %r" % codes

        def bad_event(code, value):
            raise MemoryError("no heap for the event frame")

        r.link.on_event = bad_event
        for _ in range(10):
            r.clock.ms += 1000
            r.link.poll()  # an event that fails as well is only counted
        r.link.transport = r.t
        r.clock.ms += 1000
        r.run(10)
        eq(sorted(set(r.he.seen)), [0, 1], "and it works again once the transport does")


# -- transports ----------------------------------------------------------------------------------------------
class Ticks:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


def test_stream_transport_reopens_with_backoff():
    with TempDir("link", make=False) as d:
        os.mkdir(d)  # Tmp only names the directory
        path = d + "/tty"
        opened = []

        def open_fn():
            opened.append(1)
            if len(opened) <= 3:
                raise OSError(2)  # not plugged in yet
            return open(path, "w+b")

        ticks = Ticks()
        t = StreamTransport(open_fn, ticks_ms=ticks, retry_min_ms=100, retry_max_ms=400, rand=lambda n: 0)
        waits = []
        for _ in range(3):
            eq(t.connect(), False, "no device")
            waits.append(t.backoff.last_wait)
            eq(t.connect(), False, "waiting")
            ticks.ms += t.backoff.last_wait
        eq(len(opened), 3, "one open per back-off period")
        eq(waits, [50, 100, 200], "exponential back-off (jitter 0 here: the lower half)")
        eq(t.connect(), True, "opened")
        eq(t.write(memoryview(b"\x00hello\x00" * 20)), 64, "at most `chunk` bytes per write")
        eq(t.read_into(bytearray(8)), 0, "a regular file at its end: nothing to read")
        t.close()
        eq(t.connected, False, "closed")
        with open(path, "rb") as f:
            eq(f.read(), (b"\x00hello\x00" * 20)[:64], "written")


def _listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for i in range(50):
        port = 20000 + (int.from_bytes(os.urandom(2), "little") % 40000)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(2)
            s.setblocking(False)
            return s, port
        except OSError:
            continue
    raise OSError("no free port")


def _accept(srv):
    try:
        c = srv.accept()[0]
    except OSError:
        return None
    c.setblocking(False)
    return c


def _recv(c):
    try:
        return c.recv(4096) or b""
    except OSError:
        return b""


def test_tcp_transport_backoff_connect_and_link():
    srv, port = _listen()
    srv.close()  # nobody listening: refused
    ticks = Ticks()
    jitter = []

    def rand(n):
        jitter.append(n)
        return n - 1

    t = TCPTransport("127.0.0.1", port, backoff_min_ms=100, backoff_max_ms=800, connect_timeout_ms=5000,
                     ticks_ms=ticks, rand=rand)
    waits = []
    for _ in range(5):
        for _ in range(50):  # a refused non-blocking connect shows up as an error on the next polls
            if t.connect() or t.s is None:
                break
        waits.append(t.backoff.last_wait)
        eq(t.connect(), False, "backing off")
        ticks.ms += t.backoff.last_wait
    eq(t.failures, 5, "five refused attempts")
    eq(waits, [99, 199, 399, 799, 799], "doubling to the cap, jitter at the top of [d/2, d)")
    eq(jitter, [50, 100, 200, 400, 400], "random part: half of each delay")
    # now a head-end listens on that port
    with TempDir("link", make=False) as d:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        srv.listen(2)
        srv.setblocking(False)
        r = Rig(d, window=8)
        r.link.transport = t
        r.link.ticks_ms = ticks
        seqs = r.make(4)
        conn = None
        for _ in range(200):
            r.link.poll()
            conn = conn or _accept(srv)
            if conn is not None:
                r.he.receive(bytearray(_recv(conn)))
            if len(r.he.seen) == 4:
                break
        eq(r.he.seen, seqs, "frames over TCP")
        conn.send(r.he.ack(seqs[1]))
        for _ in range(50):
            r.link.poll()
            if r.outbox.acked == seqs[1]:
                break
        eq(r.outbox.acked, seqs[1], "ack over TCP")
        conn.close()  # the head-end goes away
        for _ in range(50):
            r.link.poll()
            if not r.link.connected:
                break
        eq(r.link.connected, False, "EOF noticed")
        eq(t.backoff.d, 200, "a session that heard the head-end resets the back-off")
        ticks.ms += t.backoff.last_wait
        conn = None
        n = len(r.he.seen)
        for _ in range(200):
            r.link.poll()
            conn = conn or _accept(srv)
            if conn is not None:
                r.he.receive(bytearray(_recv(conn)))
            if len(r.he.seen) - n == 2:
                break
        eq(r.he.seen[n:], seqs[2:], "the unacknowledged frames again, after the reconnect")
        eq((r.link.reconnects, t.connects), (1, 2), "counted")
        conn.close()
        srv.close()
        t.close()
