"""`make demo`: the firmware under the MicroPython Unix port, metering a simulated solar day in virtual time.

The fleet, concentrator, bill and plot arrive with later issues; today the demo is one meter, end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

from meterkit.sim import SimError, format_result, progress_bar, run_sim


def run_demo(hours: float = 24.0, out: str = "out/demo") -> int:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    flash = out_dir / "flash-meter1"
    flash.mkdir(exist_ok=True)
    for f in flash.iterdir():  # a demo starts from an empty meter
        f.unlink()
    print(f"meterkit demo: one simulated meter (solar-day scenario), {hours:g} h of virtual time, "
          "the real firmware under the MicroPython Unix port")
    try:
        result = run_sim("solar-day", hours, flash_dir=flash, heap="192K",
                         progress=progress_bar("  metering"))
    except SimError as e:
        print(f"demo failed: {e}")
        return 1
    print()
    print(format_result(result))
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"\nresult written to {out_dir / 'result.json'}; the meter's flash (checkpoints) is in {flash}")
    return 0
