# The limiter, DLMS/COSEM interface class 71 (docs/protocol.md, "Two-way control on the meter"), on active import
# power. Over the threshold in force for min_over seconds: a local disconnect (IC70 transition g) to
# ready_for_reconnection, where the customer's button reconnects; under it for min_under seconds: restored,
# and with auto_reconnect the limiter reconnects itself (transition h, control modes 5 and 6). The threshold in
# force is threshold_normal, or threshold_emergency inside the emergency profile's window when this meter's
# groups meet the profile's, lowered further by a demand-response limit (meter.dr sets `dr_limit`). 0: none.
#
# check() runs once per metrology batch (~4.4 s), like meter.alarms: small ints only, nothing allocated but
# the events it raises. Durations count on the monotonic clock (uptime s), windows on UTC.
# Parameters and groups live in an A/B store ("limiter"), written only by a command.
import struct

from meter import events
from meter.disconnect import CONTROL_READY
from meter.store import Store

_HEAD = "<IIIIIIIB"  # normal, emergency, min_over, min_under, emergency id, start, duration, auto_reconnect
_HEAD_LEN = 29
# OP_LIMITER argument key -> the attribute it sets (meter.messages A_THRESHOLD_NORMAL .. A_AUTO_RECONNECT)
ARGS = (None, "normal", "emergency", "min_over", "min_under", "em_id", "em_start", "em_duration", "em_groups",
        "auto")


class Limiter:
    """disconnect: meter.disconnect.Disconnect; event(code, value) logs an event."""

    def __init__(self, flash_dir, disconnect, event):
        self.disconnect = disconnect
        self.event = event
        self.normal = self.emergency = self.min_over = self.min_under = 0
        self.em_id = self.em_start = self.em_duration = 0
        self.em_groups = []
        self.auto = False
        self.groups = []  # this meter's groups (OP_CONFIG A_GROUPS)
        self.dr_limit = 0  # a demand-response event's limit in force (meter.dr), 0: none
        self.in_force = 0  # the threshold in force at the last check, W (0: no limit)
        self.tripped = False  # the limiter opened the relay and has not restored yet
        self._since = -1  # uptime s when the power last crossed to the side that counts; -1: not crossed
        self.store = Store(flash_dir, "limiter", max_payload=128)
        loaded = self.store.load()
        if loaded is not None:
            try:
                self._unpack(loaded[1])
            except (ValueError, IndexError) as e:
                event(events.STORE_CORRUPT, "limiter: %s" % e)

    # -- persistence ---------------------------------------------------------------------------------------
    def _pack(self):
        head = struct.pack(_HEAD, self.normal, self.emergency, self.min_over, self.min_under, self.em_id,
                           self.em_start, self.em_duration, 1 if self.auto else 0)
        return head + _pack_groups(self.em_groups) + _pack_groups(self.groups)

    def _unpack(self, p):
        v = struct.unpack_from(_HEAD, p, 0)
        em_groups, i = _unpack_groups(p, _HEAD_LEN)
        groups, i = _unpack_groups(p, i)
        if i != len(p):
            raise ValueError("%d bytes, %d expected" % (len(p), i))
        (self.normal, self.emergency, self.min_over, self.min_under, self.em_id, self.em_start,
         self.em_duration) = v[:7]
        self.auto = v[7] == 1
        self.em_groups, self.groups = em_groups, groups

    # -- commands ------------------------------------------------------------------------------------------
    def set(self, args):
        """OP_LIMITER: the arguments given (meter.cmdschema checked their types) replace those parameters;
        the rest are kept. None, or the reason nothing changed."""
        new = {}
        for k in args:
            if not 0 < k < len(ARGS):
                return "unknown key %r" % (k,)
            new[ARGS[k]] = args[k]
        em = new.get("emergency", self.emergency)
        start, dur = new.get("em_start", self.em_start), new.get("em_duration", self.em_duration)
        if em and not new.get("em_groups", self.em_groups):
            return "an emergency threshold needs the emergency profile's groups (8)"
        if start + dur > 0xFFFFFFFF:
            return "the emergency window ends after 2106"
        old = self._pack()
        for name in new:
            setattr(self, name, new[name])
        try:
            self.store.save(self._pack())
        except OSError as e:
            self._unpack(old)
            return "not stored: %r" % (e,)
        self._since = -1
        self.event(events.LIMITER_SET, self.normal)
        return None

    def set_groups(self, groups):
        """OP_CONFIG A_GROUPS: the groups this meter belongs to (0..GROUPS_MAX ids 0..65535). None or why not."""
        if not isinstance(groups, list) or len(groups) > 16 or any(type(g) is not int or not 0 <= g <= 0xFFFF
                                                                  for g in groups):
            return "groups must be a list of at most 16 ids 0..65535"
        old = self.groups
        self.groups = list(groups)
        try:
            self.store.save(self._pack())
        except OSError as e:
            self.groups = old
            return "not stored: %r" % (e,)
        return None

    # -- the threshold in force ------------------------------------------------------------------------------
    def emergency_applies(self, now):
        """now: UTC s, or None while the clock is not set (no window can be judged: the normal threshold)."""
        if not self.emergency or now is None or not self.em_start <= now < self.em_start + self.em_duration:
            return False
        for g in self.groups:
            if g in self.em_groups:
                return True
        return False

    def threshold(self, now):
        t = self.emergency if self.emergency_applies(now) else self.normal
        d = self.dr_limit
        if d and (not t or d < t):
            t = d
        return t

    # -- once per batch --------------------------------------------------------------------------------------
    def check(self, power_w, up_s, now):
        """power_w: active import W now; up_s: uptime s; now: UTC s or None."""
        lim = self.in_force = self.threshold(now)
        disc = self.disconnect
        if self.tripped and disc.state != CONTROL_READY:
            self.tripped = False  # reconnected by the button (or moved by the head-end): watch again
            self._since = -1
        over = lim > 0 and power_w > lim
        if over != self.tripped:  # on the side that ends the present phase: over while armed, under once tripped
            if self._since < 0:
                self._since = up_s
            if self.tripped:
                if up_s - self._since >= self.min_under:
                    self._restore(power_w)
            elif up_s - self._since >= self.min_over and disc.local_disconnect() is None:
                self.tripped = True
                self._since = -1
                self.event(events.LIMITER_TRIP, power_w)
        else:
            self._since = -1

    def _restore(self, power_w):
        self.tripped = False
        self._since = -1
        self.event(events.LIMITER_RESTORE, power_w)
        if self.auto:
            self.disconnect.local_reconnect()  # refused outside control modes 5 and 6: the button then


def _pack_groups(groups):
    return struct.pack("<B%dH" % len(groups), len(groups), *groups)


def _unpack_groups(p, i):
    n = p[i]
    if n > 16:
        raise ValueError("%d groups" % n)
    return list(struct.unpack_from("<%dH" % n, p, i + 1)), i + 1 + 2 * n
