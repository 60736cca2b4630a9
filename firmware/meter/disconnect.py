# Disconnect control, DLMS/COSEM interface class 70 (docs/protocol.md, "Two-way control on the meter"): the
# state (0 disconnected, 1 connected, 2 ready_for_reconnection), the control mode that decides which
# transitions are allowed, and the relay that follows the state. State and mode live in an A/B store
# ("disconnect", meter.store), written before the relay moves: a meter disconnected for non-payment is
# disconnected again when the power comes back, and its relay is driven to that state at boot, before the
# first conversion is metered. Pure: the relay is any object with value(v) (meter.hal.Output).
from meter import events
from meter.store import Store

# meter.messages' CONTROL_* (not imported: a meter that never reports holds neither the wire schema nor its
# signing code, and this module is loaded at every boot)
CONTROL_DISCONNECTED = 0
CONTROL_CONNECTED = 1
CONTROL_READY = 2

# transition letter -> (from state, to state); h is IC70's local_reconnect (ready -> connected)
MOVES = {"a": (0, 1), "b": (1, 0), "c": (2, 0), "d": (0, 2), "e": (2, 1), "f": (1, 2), "g": (1, 2), "h": (2, 1)}
# control mode -> the transitions it allows (IC70 attribute 4; mode 0: always connected)
MODES = ("", "bcfgde", "bcfgae", "bcgde", "bcgae", "bcfgdeh", "bcgdeh")
STATE_NAMES = ("disconnected", "connected", "ready_for_reconnection")


class Disconnect:
    """flash_dir: where the store lives; relay: value(1) closes it (the load is supplied), value(0) opens it;
    event(code, value) logs an event. Every method that moves returns None, or the reason it did not (and
    then nothing changed)."""

    def __init__(self, flash_dir, relay, event):
        self.relay = relay
        self.event = event
        self.store = Store(flash_dir, "disconnect", max_payload=8)
        self.state = CONTROL_CONNECTED
        self.mode = 0  # DLMS's default: always connected, until a configuration sets a mode
        loaded = self.store.load()
        if self.store.corrupt:
            event(events.STORE_CORRUPT, "disconnect: %d damaged slot(s)" % self.store.corrupt)
        if loaded is not None:
            p = loaded[1]
            if len(p) == 2 and p[0] <= CONTROL_READY and p[1] < len(MODES):
                self.state, self.mode = p[0], p[1]
            else:
                event(events.STORE_CORRUPT, "disconnect: %r" % (bytes(p),))
        self._drive()

    def _drive(self):
        self.relay.value(1 if self.state == CONTROL_CONNECTED else 0)

    def _save(self, state, mode):
        self.store.save(bytes((state, mode)))

    def move(self, letter):
        """Transition `letter` (a..h) if the control mode allows it and the state is its origin."""
        frm, to = MOVES[letter]
        if letter not in MODES[self.mode]:
            return "transition %s not allowed in control mode %d" % (letter, self.mode)
        old = self.state
        if old != frm:
            return "transition %s starts from state %d (%s); the meter is in state %d (%s)" % (
                letter, frm, STATE_NAMES[frm], old, STATE_NAMES[old])
        self._save(to, self.mode)  # on flash before the relay moves: a power cut cannot undo a disconnect
        self.state = to
        self._drive()
        self.event(events.DISCONNECT_CONTROL, "%s %d>%d" % (letter, old, to))
        return None

    # -- the triggers --------------------------------------------------------------------------------------
    def remote_disconnect(self):
        """OP_DISCONNECT: b from connected, c from ready_for_reconnection."""
        return self.move("c" if self.state == CONTROL_READY else "b")

    def remote_reconnect(self):
        """OP_RECONNECT: a (straight to connected) or d (ready_for_reconnection: the customer's button closes
        the relay), whichever the control mode allows."""
        return self.move("a" if "a" in MODES[self.mode] else "d")

    def manual(self):
        """The customer's button: e from ready_for_reconnection, f from connected."""
        return self.move("e" if self.state == CONTROL_READY else "f")

    def local_disconnect(self):
        """g: the limiter (or an alarm) opens the relay, to ready_for_reconnection."""
        return self.move("g")

    def local_reconnect(self):
        """h: the limiter closes it again after min_under (control modes 5 and 6)."""
        return self.move("h")

    def mode_problem(self, mode):
        """None when set_mode(mode) would take it, else why not (meter.settings checks every key first)."""
        if type(mode) is not int or not 0 <= mode < len(MODES):
            return "control mode must be 0..%d, not %r" % (len(MODES) - 1, mode)
        if mode == 0 and self.state != CONTROL_CONNECTED:
            return "control mode 0 (always connected) needs the meter connected; it is %s" % (
                STATE_NAMES[self.state])
        return None

    def set_mode(self, mode):
        """IC70 control_mode 0..6 (OP_CONFIG A_CONTROL_MODE). Mode 0 means always connected: it is refused
        while the meter is not connected (reconnect it first)."""
        why = self.mode_problem(mode)
        if why is not None:
            return why
        if mode != self.mode:
            self._save(self.state, mode)
            self.mode = mode
        return None
