# Two-way control on the meter: the disconnect control (meter.disconnect, IC70), the limiter (meter.limiter,
# IC71), demand response (meter.dr), the customer's button and the load-control output, wired together here
# so meter.app and meter.commands see one object. meter.app makes it at boot when flash holds any of their
# state (the disconnect control drives the relay to its stored state before metering starts), else with the
# first command or button press; the limiter and demand response are loaded only when flash holds their
# settings or a command needs them: a meter never configured never holds them in RAM. The wire
# schema (meter.messages) is imported only where a reporting meter asks (commands, status, readings).
from meter.disconnect import CONTROL_CONNECTED, CONTROL_READY, Disconnect
from meter.store import exists


class Control:
    """hw: meter.hal.Hardware (relay, button, load_control, time, monotonic_s, flash_dir); event(code, value)
    logs an event; clock_ok(): whether UTC time can be trusted (windows are judged only then)."""

    def __init__(self, hw, event, clock_ok):
        self.hw = hw
        self.event = event
        self.clock_ok = clock_ok
        self.disconnect = Disconnect(hw.flash_dir, hw.relay, event)
        self.button = hw.button
        self.load_control = hw.load_control
        if self.load_control is not None:
            self.load_control.value(1)  # closed unless a demand-response shed is in force (restored below)
        self.limiter = self.dr = None
        if exists(hw.flash_dir, "limiter"):
            self._limiter()
        if exists(hw.flash_dir, "dr"):
            self._dr()

    def _limiter(self):
        if self.limiter is None:
            from meter.limiter import Limiter

            self.limiter = Limiter(self.hw.flash_dir, self.disconnect, self.event)
        return self.limiter

    def _dr(self):
        if self.dr is None:
            from meter.dr import DemandResponse

            self.dr = DemandResponse(self.hw.flash_dir, self._limiter, self.load_control, self.event)
        return self.dr

    # -- for OP_CONFIG (meter.commands) ------------------------------------------------------------------------
    def set_mode(self, mode):
        """IC70 control_mode 0..6: None, or the reason nothing changed."""
        return self.disconnect.set_mode(mode)

    def set_groups(self, groups):
        """The groups this meter belongs to (emergency profiles): None, or the reason nothing changed."""
        return self._limiter().set_groups(groups)

    # -- commands --------------------------------------------------------------------------------------------
    def command(self, op, args):
        """OP_DISCONNECT, OP_RECONNECT, OP_LIMITER, OP_DR_EVENT with arguments meter.cmdschema accepted ->
        (RESULT_*, reason or None)."""
        from meter.messages import OP_DISCONNECT, OP_LIMITER, OP_RECONNECT, RESULT_BAD_ARGS, RESULT_OK, RESULT_REJECTED

        if op == OP_DISCONNECT:
            why = self.disconnect.remote_disconnect()
        elif op == OP_RECONNECT:
            why = self.disconnect.remote_reconnect()
        elif op == OP_LIMITER:
            why = self._limiter().set(args)
            if why is not None:
                return RESULT_BAD_ARGS, ("bad arguments: %s" % why)[:120]
        else:
            got = self._dr().accept(args, self.hw.time())
            return (RESULT_OK, None) if got is None else (got[0], got[1][:120])
        return (RESULT_OK, None) if why is None else (RESULT_REJECTED, ("rejected: %s" % why)[:120])

    # -- once per batch (meter.app, beside meter.alarms) -------------------------------------------------------
    def check(self, shunt, bus, metro):
        """The last reading of the batch (raw shunt and bus counts; metro converts them): the button, then
        demand response, then the limiter on the active import power."""
        b = self.button
        if b is not None and b.pressed():
            self.press()
        lim, dr = self.limiter, self.dr
        if lim is None and dr is None:
            return
        now = self.hw.time() if self.clock_ok() else None
        if dr is not None:
            dr.check(now)
        if lim is not None:
            ma = metro.ma(shunt)
            lim.check((bus * 4 // 10) * ma // 100000 if ma > 0 else 0, self.hw.monotonic_s(), now)

    def press(self):
        """The customer's button: inside a demand-response event an opt-out (and, from
        ready_for_reconnection, the reconnect the customer wants); else IC70's manual transition (e or f)."""
        d = self.disconnect
        if self.dr is not None and self.dr.opt_out():
            if d.state == CONTROL_READY:
                d.manual()
            return None
        return d.manual()

    # -- what the frames say ---------------------------------------------------------------------------------
    def status(self):
        from meter.messages import ST_DR_ACTIVE, ST_LOAD_SHED, ST_RECONNECT_READY

        s = ST_RECONNECT_READY if self.disconnect.state == CONTROL_READY else 0
        lc = self.load_control
        if lc is not None and not lc.value():
            s |= ST_LOAD_SHED
        if self.dr is not None and self.dr.active:
            s |= ST_DR_ACTIVE
        return s

    def reading(self):
        """K_CONTROL: [state, control mode, import limit in force W], or None when it is [1, 0, 0]."""
        d = self.disconnect
        lim = self.limiter.in_force if self.limiter is not None else 0
        if d.state == CONTROL_CONNECTED and not d.mode and not lim:
            return None
        return [d.state, d.mode, lim]
