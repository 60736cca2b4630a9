# Simulated hardware for the Unix port: what meter.hal builds from machine.* on an ESP32, built here from
# the simulator (virtual clock, I2C bus, register-level INA219 model, a relay that cuts the simulated load).
# Never deployed to a board: a firmware image freezes the `meter` package, never `sim`.
from meter.hal import Hardware
from sim import scenarios
from sim.i2c import SimI2C
from sim.ina219 import INA219Model
from sim.vclock import DEFAULT_START_UNIX_S, VirtualClock


class SimRelay:
    """A relay pin for the simulator: opening it cuts the simulated load."""

    def __init__(self, chip):
        self.chip = chip
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self.chip.load_connected = bool(self._v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class SimHandles:
    def __init__(self, clock, bus, chip, scenario):
        self.clock = clock
        self.bus = bus
        self.chip = chip
        self.scenario = scenario


def open_sim(board, flash_dir=None, overrides=None):
    """The Hardware of a unix-sim board profile (its 'sim' section, with `overrides` applied): scenario, seed,
    start_unix_s, osc_ppm, absent (no chip on the bus); for calibration, shunt_error_ppm (the real shunt is
    that far off the profile's shunt_uohm) and offset_lsb (the chip's shunt offset, 10 uV counts); with the
    constant scenario, amps and volts set its load."""
    cfg = dict(board["sim"])
    cfg.update(overrides or {})
    start = cfg.get("start_unix_s", DEFAULT_START_UNIX_S)
    clock = VirtualClock(start_unix_s=start)
    # The sun follows the simulated clock (UTC time of day); other scenarios ignore it.
    scenario = scenarios.make(cfg.get("scenario", "constant"), seed=cfg.get("seed", 1), tod_s=start % 86400)
    if "amps" in cfg and scenario.name == "constant":  # a load of its own (calibration points)
        scenario = scenarios.Constant(cfg.get("seed", 1), volts=cfg.get("volts", 12.0), amps=cfg["amps"])
    ina = board["ina219"]
    shunt_ohms = ina["shunt_uohm"] * (1000000 + cfg.get("shunt_error_ppm", 0)) / 1e12
    chip = INA219Model(clock, scenario, shunt_ohms=shunt_ohms, osc_ppm=cfg.get("osc_ppm", 0),
                       offset_lsb=cfg.get("offset_lsb", 0))
    bus = SimI2C(clock, freq=board["i2c"]["freq"])
    if not cfg.get("absent"):
        bus.add(ina["addr"], chip)
    return Hardware(board, bus, clock.ticks_us, clock.ticks_ms, clock.sleep_us, clock.time, clock.time_us,
                    SimRelay(chip), flash_dir or board["flash_dir"], sim=SimHandles(clock, bus, chip, scenario))
