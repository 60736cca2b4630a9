# Two-point calibration of the current channel against a reference meter (meterkit device calibrate;
# docs/hardware.md, "Calibrate"): I_true = gain * I_measured + offset, gain in ppm, offset in uA, and an id
# (the UTC second it was made) that every reading carries (messages.K_CALIBRATION; 0: uncalibrated).
#
# Where it is applied: once per batch (64 cycles, 4.4 s), where whole uWh leave metrology, never per sample.
# The gain is linear, so gain * sum(V*I*dt) is exact at any granularity. The offset adds offset * integral(V dt);
# per batch that is taken as the bus voltage of the last reading times the batch's elapsed time: a DC bus moves
# little in 4.4 s, and the offset term is itself a small part of the energy (0.3 mA of 1 A), so the error of
# that product stays below 1e-5 of the energy. Per sample the offset would have to be whole shunt counts
# (10 uV: the size of the chip's whole offset) and cost every sample a subtraction; an exact integral(V dt)
# would need another limbed accumulator in the viper kernel. The offset goes to the direction that carried
# more energy in the batch. Integers only; the sub-uWh remainders are kept (femtojoules), nothing drifts.
import struct

from meter.store import Store

GAIN_ONE = 1000000
_FJ_PER_UWH = 3600000000000  # 1 uWh = 3.6e-3 J = 3.6e12 fJ
_FJ_PER_UWH_PPM = 3600000  # 1 uWh * 1 ppm = 3.6e6 fJ
_FORMAT = "<Iii"
GAIN_MIN, GAIN_MAX = 800000, 1200000  # a shunt more than 20 % off is the wrong part, not a calibration
OFFSET_MAX_UA = 100000


class CalibrationError(ValueError):
    pass


def check(cal_id, gain_ppm, offset_ua):
    for v in (cal_id, gain_ppm, offset_ua):
        if not isinstance(v, int) or isinstance(v, bool):
            raise CalibrationError("calibration values must be integers")
    if not 0 < cal_id < 1 << 32:
        raise CalibrationError("calibration id must be 1 .. 2^32-1, not %d" % cal_id)
    if not GAIN_MIN <= gain_ppm <= GAIN_MAX:
        raise CalibrationError("gain %d ppm is outside %d .. %d" % (gain_ppm, GAIN_MIN, GAIN_MAX))
    if not -OFFSET_MAX_UA <= offset_ua <= OFFSET_MAX_UA:
        raise CalibrationError("offset %d uA is outside +-%d" % (offset_ua, OFFSET_MAX_UA))


class Calibration:
    """The stored calibration (A/B slots with CRC: meter.store) and its application to energy and current."""

    def __init__(self, flash_dir=None):
        self.id = 0
        self.gain_ppm = GAIN_ONE
        self.offset_ua = 0
        self._res = [0, 0]  # femtojoules below one uWh, import and export
        self._store = Store(flash_dir, "calibration", max_payload=16) if flash_dir is not None else None
        loaded = self._store.load() if self._store is not None else None
        if loaded is not None and len(loaded[1]) == 12:
            cal_id, gain, off = struct.unpack(_FORMAT, loaded[1])
            try:
                check(cal_id, gain, off)
            except CalibrationError:
                return  # a record this firmware cannot trust: uncalibrated, as before
            self.id, self.gain_ppm, self.offset_ua = cal_id, gain, off

    def save(self, cal_id, gain_ppm, offset_ua):
        check(cal_id, gain_ppm, offset_ua)
        self._store.save(struct.pack(_FORMAT, cal_id, gain_ppm, offset_ua))
        self.id, self.gain_ppm, self.offset_ua = cal_id, gain_ppm, offset_ua

    def energy(self, imp_uwh, exp_uwh, bus_mv, dt_us):
        """(import, export) uWh of one batch, corrected; the raw ones when uncalibrated."""
        if not self.id:
            return imp_uwh, exp_uwh
        res = self._res
        i = imp_uwh * self.gain_ppm * _FJ_PER_UWH_PPM + res[0]
        e = exp_uwh * self.gain_ppm * _FJ_PER_UWH_PPM + res[1]
        off = bus_mv * self.offset_ua * dt_us  # mV * uA * us = 1e-15 J
        if imp_uwh >= exp_uwh:
            i += off
        else:
            e -= off
        if i < 0:
            e -= i
            i = 0
        if e < 0:
            i -= e
            e = 0
        res[0] = i % _FJ_PER_UWH
        res[1] = e % _FJ_PER_UWH
        return i // _FJ_PER_UWH, e // _FJ_PER_UWH

    def current_ua(self, ua):
        return ua if not self.id else ua * self.gain_ppm // GAIN_ONE + self.offset_ua
