"""The load generator of `meterkit bench --only scale` (meterkit.bench.scale): protocol-level meters in a
process of their own, so that what they cost shows as their own CPU time.

    python -m meterkit.bench.loadgen FRAMES_FILE TARGETS_JSON WINDOW [CA_FILE SERVER_NAME]

FRAMES_FILE (pickle): {"frames": [[framed bytes, ...] per meter], "devices": [...], "sources": [...],
"headend_pub": bytes}, signed before the clock starts (meterkit.bench.scale). TARGETS_JSON: [[host, port], ...],
one per meter (HAProxy's address for all, or a concentrator each). Every meter connects from its own loopback
address, then the generator prints `ready` and waits for `go` on stdin. Each meter keeps at most WINDOW frames
unacknowledged, as the firmware's link does: it sends WINDOW frames, and on every acknowledgement as many more as
it freed. During the run an acknowledgement is only read (its cumulative sequence number, key 12: cheap); the
generator prints `mark 10` and `mark 90` when 10 % and 90 % of all frames are acknowledged and `done` when all
are, then (the clock stopped) verifies every acknowledgement it received as a meter must
(wire.verify_host_message: the head-end key, this device, counter increasing, not expired) and prints
`result {json}`. With CA_FILE and SERVER_NAME every meter speaks TLS, the head-end's certificate checked
against that CA for that name (meterkit.bench.tls).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time

import cbor2

from meter import cose as mcose
from meter import messages as M
from meter.frame import Deframer
from meterkit import wire as P

MARKS = (10, 90)  # percent of all frames acknowledged: the steady-state window


class _Run:
    def __init__(self, total: int):
        self.total = total
        self.acked = 0
        self.marks: dict[int, tuple[float, int]] = {}  # percent -> (time, frames acknowledged then)
        self.done = asyncio.Event()
        self.t_go = 0.0
        self.t_end = 0.0

    def progress(self, n: int) -> None:
        self.acked += n
        for pct in MARKS:
            if pct not in self.marks and self.acked * 100 >= pct * self.total:
                self.marks[pct] = (time.perf_counter(), self.acked)
                print(f"mark {pct}", flush=True)
        if self.acked >= self.total and not self.done.is_set():
            self.t_end = time.perf_counter()
            self.done.set()


class _Meter(asyncio.Protocol):
    def __init__(self, run: _Run, frames: list[bytes], window: int):
        self.run, self.frames, self.window = run, frames, window
        self.sent = 0
        self.acked = -1  # the highest acknowledged sequence number (frames are numbered from 0)
        self.raw: list[bytes] = []  # every head-end message, verified after the run
        self.others = 0  # head-end messages that were not acknowledgements (commands)
        self.transport: asyncio.Transport | None = None
        self.deframer = Deframer()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def send_more(self) -> None:
        upto = min(len(self.frames), self.acked + 1 + self.window)
        if upto > self.sent and self.transport is not None:
            self.transport.write(b"".join(self.frames[self.sent:upto]))
            self.sent = upto

    def data_received(self, data: bytes) -> None:
        for cose in self.deframer.feed(data):
            self.raw.append(cose)
            payload = cbor2.loads(mcose.split(cose, P.MAX_HOST_MESSAGE)[2])
            if payload.get(M.K_KIND) != M.ACK:
                self.others += 1
                continue
            w = payload[M.K_ACK_SEQ]
            if w > self.acked:
                self.run.progress(w - self.acked)
                self.acked = w
                self.send_more()


async def _main(spec: dict, targets: list[list], window: int, pin: list[str]) -> dict:
    frames, sources = spec["frames"], spec["sources"]
    run = _Run(sum(len(f) for f in frames))
    meters = [_Meter(run, f, window) for f in frames]
    loop = asyncio.get_running_loop()
    tls = {}
    if pin:
        import ssl

        tls = {"ssl": ssl.create_default_context(cafile=pin[0]), "server_hostname": pin[1]}
    await asyncio.gather(*(loop.create_connection(lambda m=m: m, host, port, local_addr=(src, 0), **tls)
                           for m, (host, port), src in zip(meters, targets, sources, strict=True)))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    run.t_go = time.perf_counter()
    for m in meters:
        m.send_more()
    await run.done.wait()
    print("done", flush=True)
    # the clock has stopped: every head-end message checked as a meter checks it
    pub = spec["headend_pub"]
    lookup = {P.key_id(pub): P.public_from_bytes(pub)}.get
    refused, now = [], int(time.time())
    for m, dev in zip(meters, spec["devices"], strict=True):
        last = 0
        for cose in m.raw:
            try:
                last = P.verify_host_message(cose, lookup, dev, now, last).counter
            except P.ProtocolError as e:
                refused.append(e.reason)
    for m in meters:
        m.transport.close()
    (t10, a10), (t90, a90) = run.marks[MARKS[0]], run.marks[MARKS[1]]
    if t90 - t10 < 1e-3:  # a tiny run, acknowledged in one or two batches: no steady state to speak of
        (t10, a10), (t90, a90) = (run.t_go, 0), (run.t_end, run.total)
    return {"frames": run.total, "acked": sum(m.acked + 1 for m in meters), "wall_s": round(run.t_end - run.t_go, 3),
            "frames_per_s": round(run.total / (run.t_end - run.t_go), 1),
            "steady_frames_per_s": round((a90 - a10) / (t90 - t10), 1), "steady_frames": a90 - a10,
            "steady_s": round(t90 - t10, 3),
            "acks": sum(len(m.raw) - m.others for m in meters), "commands": sum(m.others for m in meters),
            "acks_refused": len(refused), "refused_reasons": sorted(set(refused))[:5],
            "connections_lost": sum(m.lost for m in meters)}


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as f:
        spec = pickle.load(f)
    result = asyncio.run(_main(spec, json.loads(argv[1]), int(argv[2]), argv[3:5]))
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
