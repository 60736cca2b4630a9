"""Issue 11 finding 1: reporting stalled after quick power cuts. The meter's window of 8 filled with frames the
head-end had stored already, above a gap it had not settled; the head-end binds a meter's link (which the
back-fill that settles the gap needs) only on a frame it has not stored, and the meter's new frames waited
behind the window. Nothing moved until the outbox overflowed and dropped frames.

Here the real firmware link (meter.link, meter.outbox, meter.seqno in MicroPython) and the real concentrator
(TCP on loopback, SQLite) build exactly that state with three boots of one flash:
  boot 1  frames 0..3, acknowledged, the acknowledgement persisted
  boot 2  frames 1024..1031 (a restart skips the rest of a block): stored, but the power is cut before the
          meter learns it; 4..1023 is a gap the head-end has not settled (its back-fill waits 30 s)
  boot 3  a hello, 2048: the window holds 1024..1031, all stored already
The meter must report again: 2048 stored, the gaps settled by back-fill, everything acknowledged."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meterkit import wire as P
from meterkit.device.toolchain import micropython_cmd, mp_env
from meterkit.store.records import NewMeter
from meterkit.testing.linkchild import provision, write_child
from meterkit.testing.rig import T0, LoopbackRig, until

CHILD = r'''
port, readings, t0, stop_when_acked = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
start = time.ticks_ms()
now = lambda: t0 + time.ticks_diff(time.ticks_ms(), start) // 1000
builder = messages.Builder(ident, FrameSeq(Store(flash, "frame-seq", max_payload=16)), now)
outbox = Outbox(flash, max_bytes=65536, segment_bytes=1024)
t = TCPTransport("127.0.0.1", port, backoff_min_ms=50, backoff_max_ms=200, connect_timeout_ms=2000)
respond = lambda c, r, why: builder.frame(messages.RESPONSE, 0, messages.response_body(c, r, why))
link = Link(t, outbox, ident, respond=respond, time=now, window=8, ack_timeout_ms=300, ack_timeout_max_ms=1000)
link.send(*builder.frame(messages.HELLO, 0, messages.hello_body("test", "unix-sim", 1, 68000, 990000, 100000, 10)))
for i in range(readings):
    link.send(*builder.frame(messages.READING, 0, {6: {10800: i, 20800: 0}, 7: [i, 12000, 0], 8: 0}))
seen = None
while time.ticks_diff(time.ticks_ms(), start) < 60000:
    link.poll()
    state = (outbox.acked, outbox.last_seq)
    if state != seen:
        seen = state
        print("@@ACKED %d %d" % state)
    if stop_when_acked and outbox.acked == outbox.last_seq:
        link.flush()
        break
    time.sleep_ms(2)
'''


class Boot:
    """One power-up of the meter: the child process, and what it says about its acknowledgements."""

    def __init__(self, script: Path, flash: Path, port: int, readings: int, stop_when_acked: bool):
        cmd = micropython_cmd(script, "run", str(flash), str(port), str(readings), str(T0),
                              "1" if stop_when_acked else "0")
        self.proc = subprocess.Popen(cmd, env=mp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.acked = self.last = -1
        self._task = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("@@ACKED"):
                self.acked, self.last = (int(x) for x in line.split()[1:])

    async def exited(self) -> int:
        await self._task
        return await asyncio.to_thread(self.proc.wait, 30)

    async def cut_power(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.exited()


def _provision(tmp_path: Path, headend: P.HeadEnd) -> tuple[Path, Path, bytes]:
    script = write_child(tmp_path / "quick_cuts_child.py", CHILD)
    flash = tmp_path / "flash"
    return script, flash, provision(script, flash, headend.public_bytes)


def test_reporting_resumes_when_the_window_is_full_of_stored_frames_above_a_gap(tmp_path, store_db):
    async def main():
        headend = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
        script, flash, pub = _provision(tmp_path, headend)
        async with LoopbackRig(store_db, headend=headend, tick_s=0.02) as rig:
            rig.store.register_meters([NewMeter(pub, None, 60)])
            device = P.key_id(pub)
            stored = lambda: set(rig.store.seqs_above(device, -1))  # noqa: E731

            first = Boot(script, flash, rig.port, 3, stop_when_acked=True)
            assert await first.exited() == 0 and first.acked == 3

            second = Boot(script, flash, rig.port, 7, stop_when_acked=False)
            await until(lambda: set(range(1024, 1032)) <= stored(), timeout=30)
            await second.cut_power()
            assert second.acked == 3, "the gap 4..1023 is not settled: the head-end acknowledges up to 3"

            third = Boot(script, flash, rig.port, 0, stop_when_acked=False)
            try:
                for _ in range(40):  # the back-fills wait for backfill_after (30 s) on the head-end's clock
                    if third.last >= 2048 and third.acked == third.last:
                        break
                    rig.clock.advance(10)
                    await asyncio.sleep(0.25)
                assert 2048 in stored(), f"the new boot's hello was never stored (meter acked {third.acked})"
                assert third.acked == third.last, f"acknowledged up to {third.acked} of {third.last}"
            finally:
                await third.cut_power()
            # 2049.. are the meter's answers to the two back-fills
            assert stored() == set(range(4)) | set(range(1024, 1032)) | set(range(2048, third.last + 1))
            assert third.last == 2050
            gaps = [(g.first, g.last, g.state) for g in rig.store.gaps(device) if g.state != "resolved"]
            assert gaps == [(4, 1023, "skipped"), (1032, 2047, "skipped")], gaps  # numbers never used

    asyncio.run(asyncio.wait_for(main(), 180))
