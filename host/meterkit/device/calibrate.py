"""`meterkit device calibrate`: two-point gain and offset of the current channel against a reference meter.

At each of two loads the board measures its own (uncalibrated) current, averaged over `cycles` conversion
cycles of its INA219 (meter.ina219, through the board's hardware), and the user gives what the reference meter
(a multimeter in series, in mA) shows, typed in or from a file. The line through the two points,
I_reference = gain * I_measured + offset, is checked and stored on the board (meter.calibration: A/B slots
with CRC), with an id, the UTC second it was made, that every reading then carries. The meter applies it once
per batch where raw energy becomes uWh (meter/calibration.py says why there).

A reference value that cannot be right (points too close together, a gain beyond +-20 %, an offset beyond
100 mA, a sign that disagrees with the board's) is refused with the reason, and nothing on the board changes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meterkit.device.provision import _PATH
from meterkit.device.session import DeviceError, Session

GAIN_ONE = 1_000_000
GAIN_LIMIT = 0.2  # meter.calibration: GAIN_MIN/MAX
OFFSET_MAX_UA = 100_000
MIN_SPAN = 0.1  # the two points must differ by at least 10 % of the larger current
CYCLES = 64

_MEASURE = _PATH + """\
from meter.board import load_board
_b = load_board(_s + '/board.json')
_o = %r
if _b['mcu'] == 'unix-sim':
    from sim.hardware import open_sim
    _hw = open_sim(_b, overrides=_o)
else:
    from meter import hal
    _hw = hal.open_hardware(_b)
from meter.ina219 import INA219
_c = _b['ina219']
_n = INA219(_hw.i2c, addr=_c['addr'], shunt_uohm=_c['shunt_uohm'], max_ma=_c['max_ma'], shunt_avg=_c['shunt_avg'],
            bus_bits=_c['bus_bits'], sleep_us=_hw.sleep_us, ticks_us=_hw.ticks_us)
_n.init()
_sh = _bu = _k = 0
while _k < %d:
    if _n.wait_cycle():
        _sh += _n.shunt
        _bu += _n.bus
        _k += 1
print(repr((_sh, _bu, _k, _c['shunt_uohm'])))
"""

_STORE = _PATH + """\
from meter.board import load_board
from meter.calibration import Calibration
_c = Calibration(load_board(_s + '/board.json')['flash_dir'])
_c.save(%d, %d, %d)
print(repr((_c.id, _c.gain_ppm, _c.offset_ua)))
"""


@dataclass
class Point:
    reference_ma: float  # what the reference meter shows
    measured_ma: float  # what the board measured, uncalibrated
    bus_mv: float = 0.0


@dataclass
class Fit:
    id: int
    gain_ppm: int
    offset_ua: int

    def correct_ma(self, measured_ma: float) -> float:
        return measured_ma * self.gain_ppm / GAIN_ONE + self.offset_ua / 1000


def fit(points: list[Point], cal_id: int | None = None) -> Fit:
    """The calibration through two points, or DeviceError saying which reading cannot be right."""
    if len(points) != 2:
        raise DeviceError(f"calibration takes exactly two points (a small and a large load), not {len(points)}")
    (r1, m1), (r2, m2) = sorted(((p.reference_ma, p.measured_ma) for p in points), key=lambda rm: rm[1])
    for r, m in ((r1, m1), (r2, m2)):
        if r * m < 0 and abs(r - m) > OFFSET_MAX_UA / 1000:
            raise DeviceError(f"wrong reference value: {r:g} mA where the board measures {m:g} mA: the signs "
                              "disagree (the reference meter's leads swapped?); nothing was changed")
    if m2 - m1 < MIN_SPAN * max(abs(m1), abs(m2), 1.0):
        raise DeviceError(f"the two points ({m1:g} and {m2:g} mA measured) are too close together: take them at "
                          "least 10 % apart, ideally near zero and near full load; nothing was changed")
    gain = (r2 - r1) / (m2 - m1)
    offset_ma = r1 - gain * m1
    if not 1 - GAIN_LIMIT <= gain <= 1 + GAIN_LIMIT:
        raise DeviceError(f"wrong reference value: the points say the board is {100 * (gain - 1):+.1f} % off, more "
                          f"than {100 * GAIN_LIMIT:.0f} % (a mistyped value, or mA and A mixed up?); nothing was "
                          "changed")
    if abs(offset_ma) * 1000 > OFFSET_MAX_UA:
        raise DeviceError(f"wrong reference value: the points give an offset of {offset_ma:g} mA, beyond "
                          f"{OFFSET_MAX_UA // 1000} mA; nothing was changed")
    return Fit(cal_id or int(time.time()), round(gain * GAIN_ONE), round(offset_ma * 1000))


def measure(s: Session, cycles: int = CYCLES, sim: dict | None = None) -> Point:
    """The board's own current and bus voltage, averaged over `cycles` INA219 conversion cycles
    (sim: overrides of a test board's simulated load, e.g. {"amps": 0.5})."""
    shunt, bus, n, r_uohm = s.eval_code(_MEASURE % (sim or {}, cycles))
    return Point(0.0, shunt * 10_000 / r_uohm / n, bus * 4 / n)


def store(s: Session, f: Fit) -> None:
    got = s.eval_code(_STORE % (f.id, f.gain_ppm, f.offset_ua))
    if tuple(got) != (f.id, f.gain_ppm, f.offset_ua):
        raise DeviceError(f"the board kept {got}, not the calibration sent ({f.id}, {f.gain_ppm}, {f.offset_ua})")


def load_points(path: str | Path) -> list[dict]:
    """A points file: {"points": [{"reference_ma": 100.2}, {"reference_ma": 2001.5, "measured_ma": 1942.0}]}."""
    try:
        data = json.loads(Path(path).read_text())
        pts = data["points"]
        return [{"reference_ma": float(p["reference_ma"]),
                 **({"measured_ma": float(p["measured_ma"])} if "measured_ma" in p else {})} for p in pts]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DeviceError(f"cannot read the points file {path}: {e} (want "
                          '{"points": [{"reference_ma": ...}, {"reference_ma": ...}]})') from None


def calibrate(port: str, references: Callable[[int, Session], dict], cycles: int = CYCLES,
              restart: bool = True) -> Fit:
    """references(i, session) -> {"reference_ma": .., optional "measured_ma": .., optional "sim": {..}} for
    point i (0, 1): it may ask the user to set the load first. The board measures unless measured_ma is given."""
    with Session.open(port) as s:
        points = []
        for i in (0, 1):
            ref = references(i, s)
            if "measured_ma" in ref:
                p = Point(ref["reference_ma"], ref["measured_ma"])
            else:
                p = measure(s, cycles, ref.get("sim"))
                p.reference_ma = ref["reference_ma"]
            points.append(p)
        result = fit(points)
        store(s, result)
        if restart:
            s.restart(expect=r"meterkit: firmware")
    return result
