# Over-current and over-voltage alarms (docs/hardware.md, the board's 'alarms' section): after every batch its
# largest |current| and bus voltage are held against the thresholds; crossing one raises its event once, and
# it is raised again only after the value fell 10 % below the threshold.
from meter import events
from meter.metrology import reset_minmax


class Alarms:
    """limits: meter.board.alarm_settings(board); event(code, value) raises an event."""

    def __init__(self, limits, event):
        self.limits = limits
        self.event = event
        self._raised = [False, False]  # over-current, over-voltage: raised and not yet 10 % below again

    def check(self, metro):
        """After each batch: its extremes (Metrology.minmax, reset here for the next batch)."""
        mm = metro.minmax()
        if mm is None:
            return
        reset_minmax(metro.state)
        lim = self.limits
        ma = max(abs(metro.ma(mm[0])), abs(metro.ma(mm[1])))
        self._alarm(0, events.OVER_CURRENT, ma, lim["over_current_ma"])
        self._alarm(1, events.OVER_VOLTAGE, metro.mv(mm[3]), lim["over_voltage_mv"])

    def _alarm(self, i, code, value, limit):
        if limit is None:
            return
        if not self._raised[i] and value > limit:
            self._raised[i] = True
            self.event(code, value)
        elif self._raised[i] and value <= limit * 9 // 10:
            self._raised[i] = False
