# The meter's settable configuration (op 10, docs/protocol.md "Configuration"): what a configuration command
# set, kept in flash (A/B store "settings"), and read at boot, where it overrides the board profile and the
# runner's defaults. The values a setting may take are meter.board's (SETTING_VALUES: one home for them).
#
# A command is atomic: every key is checked first (the meter's own against meter.board, the others by the
# check their owner registered), then the new values are stored in one write, then applied. A power cut
# after the write applies them at the next boot; before it, nothing changed.
#
# Keys owned by other parts (A_CONTROL_MODE, A_GROUPS: the disconnect control and limiter) are applied by the
# setter their owner registers: register(key, setter, check). check(value) -> None or why not; setter(value)
# applies it and keeps it. Until a key has one, a command that holds it is refused.
#
# Pure: runs on the meter and under CPython.
from meter import cbor
from meter.board import setting_problem
from meter.messages import (A_CAPTURE_PERIOD_S, A_DEMAND_PERIOD_S, A_OVER_CURRENT_MA, A_OVER_VOLTAGE_MV,
                            A_READING_S, RESULT_BAD_ARGS, RESULT_REJECTED)
from meter.store import Store

# the meter's own keys and the meter.board setting that holds their allowed values
OWN = {A_DEMAND_PERIOD_S: "demand_period_s", A_CAPTURE_PERIOD_S: "capture_period_s", A_READING_S: "reading_s",
       A_OVER_CURRENT_MA: "over_current_ma", A_OVER_VOLTAGE_MV: "over_voltage_mv"}
ALARM_OFF = 0  # an alarm threshold of 0 turns that alarm off (a board profile says null)
K_CAPTURE_SINCE = 0  # stored beside the values: [end of the last row of an earlier capture period, the new period]


def own_problem(k, v):
    """None when v is a value the meter's own key k may take (meter.board's table; 0 turns an alarm off)."""
    if v == ALARM_OFF and k in (A_OVER_CURRENT_MA, A_OVER_VOLTAGE_MV):
        return None
    return setting_problem(OWN[k], v)


class Settings:
    def __init__(self, flash_dir):
        self._store = Store(flash_dir, "settings", max_payload=160)
        self._setters = {}
        self.values = {}
        self.corrupt = None  # why the stored settings could not be read (the board's are used), else None
        loaded = self._store.load()
        if loaded is not None:
            try:
                v = cbor.decode(loaded[1])
                if not isinstance(v, dict):
                    raise ValueError("not a map")
                for k in v:
                    why = own_problem(k, v[k]) if k in OWN else None
                    if why:
                        raise ValueError("%d %s" % (k, why))
                self.values = v
            except ValueError as e:
                self.corrupt = "settings: %s (the board's are used)" % e

    def override(self, reading_s, interval_s, alarms, tariffing):
        """At boot: the stored values over the board's (alarms: meter.board.alarm_settings, tariffing: its
        tariff_settings, both changed in place) and the runner's; returns (reading_s, interval_s)."""
        alarms["over_current_ma"] = self.alarm_limit(A_OVER_CURRENT_MA, alarms["over_current_ma"])
        alarms["over_voltage_mv"] = self.alarm_limit(A_OVER_VOLTAGE_MV, alarms["over_voltage_mv"])
        tariffing["demand_period_s"] = self.get(A_DEMAND_PERIOD_S, tariffing["demand_period_s"])
        return self.get(A_READING_S, reading_s), self.get(A_CAPTURE_PERIOD_S, interval_s)

    def get(self, key, default=None):
        return self.values.get(key, default)

    def register(self, key, setter, check=None):
        """The owner of `key` applies it: setter(value). check(value) -> None or why the value is refused."""
        self._setters[key] = (setter, check)

    def check(self, args):
        """None when every key of `args` (types already checked: meter.cmdschema) may be set, else
        (RESULT_BAD_ARGS or RESULT_REJECTED, the reason)."""
        for k in sorted(args):
            v = args[k]
            if k in OWN:
                why = own_problem(k, v)
                if why:
                    return RESULT_BAD_ARGS, "bad arguments: %d (%s) %s" % (k, OWN[k], why)
                continue
            hook = self._setters.get(k)
            if hook is None:
                return RESULT_REJECTED, "rejected: %d cannot be set on this meter (nothing applies it)" % k
            why = hook[1](v) if hook[1] is not None else None
            if why:
                return RESULT_REJECTED, ("rejected: %d: %s" % (k, why))[:120]
        return None

    def store(self, args, since=None):
        """Keep the values of `args` (checked) in flash, in one write; `since`: [the instant a capture period
        change took effect, the period] (K_CAPTURE_SINCE)."""
        new = dict(self.values)
        for k in args:
            if k in OWN:  # (the other keys' owners keep theirs)
                new[k] = args[k]
        if since is not None:
            new[K_CAPTURE_SINCE] = since
        self._store.save(cbor.encode(new))
        self.values = new

    def apply_owned(self, args):
        """The values of keys other parts own, to their setters (after store). None, or why one of them did
        not take its value after its check passed (its flash failed, say): "<key>: <reason>"."""
        for k in sorted(args):
            hook = self._setters.get(k)
            if hook is not None and k not in OWN:
                why = hook[0](args[k])
                if why:
                    return "%d: %s" % (k, why)
        return None

    def capture_in_force(self, period, last_row_end):
        """At boot: a capture period set by a command that had not yet taken effect does now; the rows up to
        the last one stored had the earlier period."""
        if A_CAPTURE_PERIOD_S in self.values and self.values.get(K_CAPTURE_SINCE, (0, 0))[1] != period:
            self.store({}, since=[last_row_end, period])

    def capture_since(self):
        """The end of the last row captured at an earlier period than today's (0: none)."""
        return self.values.get(K_CAPTURE_SINCE, (0, 0))[0]

    def alarm_limit(self, key, board_value):
        """The alarm threshold in force: the stored one (0: off) or the board's."""
        v = self.values.get(key)
        if v is None:
            return board_value
        return None if v == ALARM_OFF else v
