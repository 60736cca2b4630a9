# What TLS costs the meter (meterkit bench --only tls; docs/performance.md): run by the host against a TLS server
# it counts the wire bytes of. Never deployed to a board.
#
#   micropython firmware/sim/bench_tls.py PORT TLS_DIR SERVER_NAME HANDSHAKES FRAMES_FILE
#
# Each handshake is a new TLSTransport session (as a reconnect is), driven as the link drives it, 1 ms apart.
# Prints one JSON line: the context's heap (the parsed CA), per handshake its time and the MicroPython heap it
# allocated (gc disabled meanwhile: every byte counts) and holds once done (collected); then the frames of
# FRAMES_FILE written on the last session. mbedTLS's own buffers are not on the MicroPython heap (Unix port: libc
# malloc; ESP32: the IDF heap): docs/security.md, "What TLS adds".
import gc
import json
import sys
import time

from meter.tls import client_wrap
from meter.transport import TLSTransport


def _session(wrap, port):
    t = TLSTransport("127.0.0.1", port, wrap, ticks_ms=time.ticks_ms, backoff_min_ms=10, backoff_max_ms=10)
    gc.collect()
    base = gc.mem_alloc()
    gc.disable()
    t0 = time.ticks_us()
    while not t.connect():
        if t.tls_failures:
            raise SystemExit("handshake failed: %s" % t.last_error)
        time.sleep_ms(1)
    us = time.ticks_diff(time.ticks_us(), t0)
    allocated = gc.mem_alloc() - base
    gc.enable()
    gc.collect()
    return t, us, allocated, gc.mem_alloc() - base


def main(argv):
    port, tls_dir, name, n, frames_file = int(argv[0]), argv[1], argv[2], int(argv[3]), argv[4]
    with open(frames_file, "rb") as f:
        frames = _frames(f.read())
    gc.collect()
    before = gc.mem_alloc()
    wrap = client_wrap({"ca": "ca.der", "server_name": name}, tls_dir)
    gc.collect()
    context = gc.mem_alloc() - before
    out = {"context_heap": context, "handshake_us": [], "handshake_alloc": [], "session_heap": []}
    t = None
    for _ in range(n):
        if t is not None:
            t.close()
        t, us, allocated, held = _session(wrap, port)
        out["handshake_us"].append(us)
        out["handshake_alloc"].append(allocated)
        out["session_heap"].append(held)
    sent = 0
    for fr in frames:
        mv = memoryview(fr)
        pos = 0
        while pos < len(mv):
            pos += t.write(mv[pos:]) or 0
        sent += len(fr)
    time.sleep_ms(200)
    t.close()
    out["frames"] = len(frames)
    out["frame_bytes"] = sent
    print(json.dumps(out))


def _frames(data):
    """The framed messages of a COBS stream, each as it is sent (0x00 || body || 0x00)."""
    out = []
    for part in data.split(b"\x00"):
        if part:
            out.append(b"\x00" + part + b"\x00")
    return out


main(sys.argv[1:])
