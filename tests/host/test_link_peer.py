"""The meter's link over real transports: a MicroPython child (the firmware's Identity, Builder, Outbox, Link)
talks to a CPython head-end over TCP on 127.0.0.1 and over a pty. The head-end side verifies every frame with
meterkit.wire.protocol.verify_and_decode, dedupes by sequence number and acknowledges with HeadEnd.sign_ack; mid-way
it cuts the connection with frames unacknowledged. The child reconnects by itself and sends them again: in the
end the head-end holds every frame exactly once. Every loop is bounded in time and count."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
import tty
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meter.frame import Deframer, encode_frame
from meterkit import wire as P
from meterkit.device.toolchain import micropython_cmd, mp_env
from meterkit.testing.linkchild import provision, write_child

N_FRAMES = 30
WINDOW = 4
DEADLINE_S = 60.0

CHILD = r'''
target, n, window = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
now = lambda: int(time.time())
builder = messages.Builder(ident, FrameSeq(Store(flash, "frame-seq", max_payload=16)), now)
outbox = Outbox(flash, max_bytes=65536, segment_bytes=1024)
if mode == "tcp":
    host, port = target.rsplit(":", 1)
    t = TCPTransport(host, int(port), backoff_min_ms=50, backoff_max_ms=400, connect_timeout_ms=2000)
else:
    t = StreamTransport(lambda: open_tty(target), retry_min_ms=50, retry_max_ms=400)
respond = lambda c, r, why: builder.frame(messages.RESPONSE, 0, messages.response_body(c, r, why))
link = Link(t, outbox, ident, respond=respond, time=now, window=window, ack_timeout_ms=500)
made = 0
t0 = last = time.ticks_ms()
polls = 0
while time.ticks_diff(time.ticks_ms(), t0) < 40000 and polls < 2000000:
    polls += 1
    if made < n and time.ticks_diff(time.ticks_ms(), last) >= 20:
        link.send(*builder.frame(messages.READING, 0, {6: {10800: made, 20800: 0}, 7: [made, 12000, 0], 8: 0}))
        made += 1
        last = time.ticks_ms()
    link.poll()
    if made == n and outbox.acked == outbox.last_seq:
        break
    time.sleep_ms(1)
link.flush()
s = link.stats()
s["made"] = made
s["pending"] = [q for q, _ in outbox.pending()]
s["transport_failures"] = t.failures
print(json.dumps(s))
'''


class HeadEndPeer:
    """The head-end's half: deframe, verify, dedupe by seq, acknowledge contiguously (never past a gap)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, meter_pub: bytes):
        self.he = P.HeadEnd(key)
        self.meter = P.public_from_bytes(meter_pub)
        self.device = P.key_id(meter_pub)
        self.stored: dict[int, P.Message] = {}
        self.received = 0
        self.duplicates = 0
        self.counter = 0
        self.hold = False  # stop acknowledging (the frames after this stay unacknowledged)
        self.df = Deframer()

    def lookup(self, kid: bytes):
        return self.meter if kid == self.device else None

    def new_connection(self) -> None:
        self.df = Deframer()

    def watermark(self) -> int:
        n = 0
        while n in self.stored:
            n += 1
        return n - 1

    def feed(self, data: bytes) -> bytes:
        """Bytes from the meter in; the acknowledgement to send back (b"" if none)."""
        out = b""
        for cose in self.df.feed(data):
            m = P.verify_and_decode(cose, self.lookup)  # raises on anything a meter must not send
            assert m.device_id == self.device
            self.received += 1
            if m.seq in self.stored:
                self.duplicates += 1
            else:
                self.stored[m.seq] = m
            if not self.hold and self.watermark() >= 0:
                self.counter += 1
                out = encode_frame(self.he.sign_ack(self.device, self.counter, self.watermark(), int(time.time()),
                                                    60))
        return out


def _init(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, bytes, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    flash = tmp_path / "flash"
    script = write_child(tmp_path / "meter_link_child.py", CHILD)
    pub = provision(script, flash, P.public_bytes(key.public_key()))
    return key, pub, flash, script


def _start(script: Path, mode: str, flash: Path, target: str) -> subprocess.Popen:
    cmd = micropython_cmd(script, mode, str(flash), target, str(N_FRAMES), str(WINDOW))
    return subprocess.Popen(cmd, env=mp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(child: subprocess.Popen) -> dict:
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise AssertionError(f"the meter did not finish: {err[-2000:]}") from None
    assert child.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _check(peer: HeadEndPeer, stats: dict) -> None:
    assert sorted(peer.stored) == list(range(N_FRAMES)), "every frame, exactly once after dedupe by seq"
    regs = [peer.stored[s].body[6][10800] for s in range(N_FRAMES)]
    assert regs == list(range(N_FRAMES)), "each frame's own content"
    assert peer.duplicates >= 1, "the unacknowledged frames came again after the cut"
    assert stats["made"] == N_FRAMES and stats["pending"] == [], stats
    assert stats["acked"] == N_FRAMES - 1, stats
    assert stats["reconnects"] >= 1 and stats["resends"] >= 1, stats
    assert stats["refused"] == {} and stats["errors"] == 0, stats


def _cut_point(peer: HeadEndPeer) -> bool:
    # acknowledge the first 5 frames, then hold: the window (4) fills with unacknowledged frames; cut when
    # they are all in (or when a probe came again)
    if peer.received >= 5:
        peer.hold = True
    return len(peer.stored) >= 5 + WINDOW or peer.duplicates > 0


def test_link_over_tcp_survives_a_cut_connection(tmp_path):
    key, pub, flash, script = _init(tmp_path)
    peer = HeadEndPeer(key, pub)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0)
    child = _start(script, "tcp", flash, f"127.0.0.1:{srv.getsockname()[1]}")
    conn: socket.socket | None = None
    connections = 0
    cut = False
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline and child.poll() is None:
            socks = [srv] + ([conn] if conn is not None else [])
            ready, _, _ = select.select(socks, [], [], 0.05)
            if srv in ready:
                if conn is not None:
                    conn.close()
                conn = srv.accept()[0]
                connections += 1
                peer.new_connection()
            if conn is not None and conn in ready:
                data = conn.recv(65536)
                if not data:
                    conn.close()
                    conn = None
                    continue
                ack = peer.feed(data)
                if ack:
                    conn.sendall(ack)
                if not cut and _cut_point(peer):
                    # the connection drops with frames unacknowledged (and whatever was on the way)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    conn.close()
                    conn = None
                    cut = True
                    peer.hold = False
        stats = _finish(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if conn is not None:
            conn.close()
        srv.close()
    assert cut, "the connection was cut mid-way"
    assert connections >= 2, "the meter came back by itself"
    _check(peer, stats)


def _new_pty(link: Path) -> int:
    master, slave = os.openpty()
    tty.setraw(slave)
    target = os.ttyname(slave)
    os.close(slave)  # the meter opens it by name; the master keeps the pair alive
    os.set_blocking(master, False)
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)  # like a udev name that follows the adapter when it is plugged in again
    return master


def test_link_over_a_pty_survives_a_pulled_cable(tmp_path):
    key, pub, flash, script = _init(tmp_path)
    peer = HeadEndPeer(key, pub)
    port = tmp_path / "ttyMETER"
    master = _new_pty(port)
    child = _start(script, "tty", flash, str(port))
    cut = False
    ptys = 1
    noise_sent = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline and child.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # EIO: the meter has not (re)opened its end yet
            if not data:
                time.sleep(0.01)
                continue
            ack = peer.feed(data)
            if ack:
                if noise_sent < 3:  # log text on the same line as the frames
                    os.write(master, b"I (1234) wifi: state: run -> init (0x0)\r\n")
                    noise_sent += 1
                os.write(master, ack)
            if not cut and _cut_point(peer):
                os.close(master)  # the cable is pulled: the meter's end hangs up
                master = _new_pty(port)  # and plugged in again, as another pty under the same name
                ptys += 1
                cut = True
                peer.hold = False
                peer.new_connection()
        stats = _finish(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert cut and ptys == 2, "the cable was pulled mid-way"
    assert stats["transport_failures"] >= 1, stats
    assert stats["noise"] > 0, "the log text was skipped as noise"
    _check(peer, stats)
