"""CPU duty of the meter's waiting, measured on the Unix port as a proxy for an ESP32 (docs/performance.md).

    python -m meterkit.bench.duty [--seconds 60] [--pace 1] [--json]

Runs the real firmware (mpy-cross build) against the simulated INA219 twice, as a board would spend its
sleeps (sim/vclock.py PacedClock: sleep_us and the busy tail of sleep_ms spin on the real clock, the idle part
of sleep_ms sleeps in the OS): once as the driver waited before (`--busy-wait`: sleep_us only) and once as it
waits now (sleep_ms, the last 1-2 ms exact). For each it reports the process's CPU time over its wall time
(getrusage of the child) and the busy share that the virtual clock booked (deterministic: the same on every
machine). Figures, not assertions: the CPU share depends on the machine and its load.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from meterkit.sim.runner import sim_command, sim_env


def measure(seconds: float, pace: float, busy_wait: bool, tick_hz: int | None = None) -> dict:
    """One paced run of `seconds` of virtual time; CPU and wall time of the micropython process."""
    flags = ("no-frames",) + (("busy-wait",) if busy_wait else ())
    cmd = sim_command("constant", seconds / 3600, flags=flags) + ["--pace", repr(float(pace))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=sim_env(), capture_output=True, text=True, timeout=seconds / pace * 4 + 120)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"sim failed: {proc.stderr.strip()[-1500:]}")
    r = json.loads(proc.stdout.split("@@RESULT ", 1)[1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    el = r["elapsed_us"]
    return {"busy_wait": busy_wait, "virtual_s": seconds, "pace": pace, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "cpu_duty": round(cpu / wall, 4), "busy_share": round(r["busy_us"] / el, 4),
            "idle_share": round(r["idle_us"] / el, 4), "cycles": r["samples"], "missed": r["missed"]}


def main(argv: list[str]) -> None:
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 60.0
    pace = float(argv[argv.index("--pace") + 1]) if "--pace" in argv else 1.0
    rows = [measure(seconds, pace, busy_wait=b) for b in (True, False)]
    if "--json" in argv:
        print(json.dumps(rows))
        return
    print("driver waits         CPU/wall   busy share (virtual clock)   idle share   cycles   missed")
    for r in rows:
        name = "sleep_us only (before)" if r["busy_wait"] else "sleep_ms + last ms"
        print(f"{name:22s} {r['cpu_duty']:8.1%}   {r['busy_share']:26.2%}   {r['idle_share']:10.2%}"
              f"   {r['cycles']:6d}   {r['missed']:6d}")


if __name__ == "__main__":
    main(sys.argv[1:])
