"""`meterkit bench`: figures measured side by side in one run (never asserted as wall-clock limits in tests)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from meterkit.firmware import firmware_dir, micropython_cmd, mp_env
from meterkit.sim import SimError, run_sim

# Heap in use once the meter's modules are imported (gc'd before and after), measured inside micropython.
_IMPORT_HEAP_SNIPPET = """
import gc
gc.collect()
before = gc.mem_alloc()
import meter.app, meter.hal
gc.collect()
print(gc.mem_alloc() - before)
"""


def _micropython_json(script_args: list[str], timeout: float = 600) -> dict:
    proc = subprocess.run(micropython_cmd(*script_args), capture_output=True, text=True, timeout=timeout,
                          env=mp_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script_args[0]} failed: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def heap_after_import() -> int:
    # Measured on the mpy-cross build: that is how the firmware is deployed (no parsing on the device).
    proc = subprocess.run(micropython_cmd("-c", _IMPORT_HEAP_SNIPPET), capture_output=True, text=True,
                          env=mp_env(compiled=True), check=True)
    return int(proc.stdout.strip().splitlines()[-1])


def smallest_heap_kib(hours_probe: float, confirm_hours: float, lo: int = 8, hi: int = 256) -> dict:
    """Binary-search the smallest heap cap (KiB) in which a sim completes; confirm it with a longer run.

    The meter's memory does not grow with simulated time (fixed buffers, checkpoints overwrite), so short
    probes find the edge and one full-length run at that cap confirms it.
    """
    def completes(kib: int, hours: float) -> bool:
        try:
            run_sim("solar-day", hours, heap=f"{kib}K", timeout=900)
            return True
        except SimError:
            return False

    if not completes(hi, hours_probe):
        return {"smallest_heap_kib": None, "note": f"did not complete even with {hi} KiB"}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if completes(mid, hours_probe):
            hi = mid
        else:
            lo = mid
    confirmed = completes(hi, confirm_hours)
    return {"smallest_heap_kib": hi, "smallest_heap_confirmed_hours": confirm_hours if confirmed else None}


def run_bench(quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    say = log or (lambda m: None)
    figures: dict = {}
    say("metrology kernel: viper vs pure twin ...")
    m = _micropython_json([str(firmware_dir() / "sim" / "bench_metrology.py")])
    figures.update({f"metrology_{k}": v for k, v in m.items()})
    say("heap after import ...")
    figures["heap_after_import_bytes"] = heap_after_import()
    say("smallest heap for a 24 h sim (binary search) ...")
    figures.update(smallest_heap_kib(0.25 if quick else 1.0, 1.0 if quick else 24.0))
    return figures


def format_bench(f: dict) -> str:
    lines = [
        "metrology kernel (same data, one run):",
        f"  viper  {f['metrology_viper_us_per_sample']:.3f} us/sample",
        f"  pure   {f['metrology_pure_us_per_sample']:.3f} us/sample",
        f"  ratio  {f['metrology_ratio']:.1f}x   results equal: {f['metrology_equal']}",
        f"heap in use after importing the meter: {f['heap_after_import_bytes'] / 1024:.1f} KiB",
    ]
    if f.get("smallest_heap_kib"):
        conf = f.get("smallest_heap_confirmed_hours")
        lines.append(f"smallest heap cap for a sim run: {f['smallest_heap_kib']} KiB"
                     + (f" (confirmed with a {conf:g} h run)" if conf else " (NOT confirmed by the long run)"))
    else:
        lines.append(f"smallest heap: {f.get('note')}")
    return "\n".join(lines)
