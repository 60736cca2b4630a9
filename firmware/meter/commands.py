# The meter's authenticated head-end commands (docs/protocol.md, the command table). meter.link verifies every
# head-end message (signature, device, counter, expiry) and handles back-fill (op 1) itself; the others come
# here as on_command(kind, counter, payload) and are answered with a signed response, (seq, frame), built by
# the reporter. Nothing changes unless a command is accepted.
#
#   OP_CALENDAR       {A_CALENDAR: calendar map, A_ACTIVATION: UTC}  arm a passive TOU calendar
#   OP_BILLING_RESET  {}                                             a billing snapshot now, then demand reset
#   OP_PROFILE        {A_FROM: UTC, A_TO: UTC}                       the stored load-profile rows in range, again
#   OP_SET_TIME       {A_UTC: UTC, A_FORCE: bool (default false)}    set the clock (Boundaries.set_clock)
#   OP_DISCONNECT, OP_RECONNECT, OP_LIMITER, OP_DR_EVENT           meter.control (IC70, IC71, demand response)
# While the clock is not set only OP_SET_TIME is taken (meter.messages.verify_host refuses the others first).
# The arguments' types are meter.cmdschema's (verify_host refused anything else already, with event 18; checked
# here again for a direct caller); what is left here is what they mean.
from meter import cmdschema, messages
from meter.messages import (A_ACTIVATION, A_CALENDAR, A_FORCE, A_FROM, A_TO, A_UTC, K_ARGS, K_OP, OP_BILLING_RESET,
                            OP_CALENDAR, OP_CONFIG, OP_KEY_ROTATE, OP_PROFILE, OP_REBOOT, OP_SET_TIME,
                            RESULT_BAD_ARGS, RESULT_GONE, RESULT_OK, RESULT_REJECTED, RESULT_UNKNOWN_OP)

CONTROL_OPS = (messages.OP_DISCONNECT, messages.OP_RECONNECT, messages.OP_LIMITER, messages.OP_DR_EVENT)
FW_OPS = (messages.OP_FW_MANIFEST, messages.OP_FW_CHUNK, messages.OP_FW_ACTIVATE)
PROFILE_ROWS_MAX = 96  # rows one profile command sends again (a day at 15 min; ask again for more)
PROFILE_ROWS_PER_FRAME = 16


class Commands:
    """boundaries: meter.boundaries.Boundaries (calendars, billing); profile: the load profile ring; reporter:
    builds the responses and sends the rows; meter: the meter (for meter.configure)."""

    def __init__(self, boundaries, profile, reporter, controls=None, meter=None):
        self.boundaries = boundaries
        self.controls = controls  # controls() -> meter.control.Control: ops 6-9 (its modules handle them)
        self.profile = profile
        self.reporter = reporter
        self.meter = meter  # what ops 10-12 change (meter.configure)

    def handle(self, kind, counter, m):
        """A verified head-end command -> the response (seq, frame), kind 6."""
        op = m[K_OP]
        args = m.get(K_ARGS)
        respond = self.reporter.response
        bad = cmdschema.check(op, args)
        if bad is not None:
            return respond(counter, bad[0], bad[1])
        if op == OP_SET_TIME:
            return self._set_time(counter, args)
        if not self.boundaries.clock_ok:
            return respond(counter, RESULT_REJECTED, "rejected: the clock is not set")
        if op == OP_CALENDAR:
            return self._calendar(counter, args)
        if op == OP_BILLING_RESET:
            self.boundaries.bill_now()
            return respond(counter, RESULT_OK, None)
        if op == OP_PROFILE:
            return self._profile(counter, args)
        if op in CONTROL_OPS and self.controls is not None:
            result, reason = self.controls().command(op, args or {})
            return respond(counter, result, reason)
        if op in FW_OPS:
            from meter import fwupdate  # loaded with the first update command

            return fwupdate.handle(self.meter, counter, op, args)
        if op in (OP_CONFIG, OP_REBOOT, OP_KEY_ROTATE):
            from meter import configure  # loaded with the first of them: rarely used

            return configure.handle(self.meter, counter, op, args)
        return respond(counter, RESULT_UNKNOWN_OP, "unknown operation")  # back-fill is meter.link's

    def _calendar(self, counter, args):
        respond = self.reporter.response
        try:
            self.boundaries.arm_calendar(args[A_CALENDAR], args[A_ACTIVATION])
        except ValueError as e:
            return respond(counter, RESULT_REJECTED, ("rejected: %s" % e)[:120])
        return respond(counter, RESULT_OK, None)

    def _set_time(self, counter, args):
        respond = self.reporter.response
        was_set = self.boundaries.clock_ok
        why = self.boundaries.set_clock(args[A_UTC], args.get(A_FORCE, False))
        if why is not None:
            return respond(counter, RESULT_REJECTED, ("rejected: %s" % why)[:120])
        # an unset clock could not judge the command's expiry: the answer says so (docs/security.md)
        return respond(counter, RESULT_OK, None if was_set else "set; expiry not checked: the clock was not set")

    def _profile(self, counter, args):
        rep = self.reporter
        a, b = args[A_FROM], args[A_TO]
        if a > b:
            return rep.response(counter, RESULT_BAD_ARGS, "bad arguments: from after to")
        st = self.meter.stored_settings if self.meter is not None else None  # (never loaded here for this)
        since = st.capture_since() if st is not None else 0
        if a <= since:  # rows up to a capture period change have another length (meter.configure)
            a = since + 1
        rows = []
        more = False
        for r in self.profile.read(a, b):
            if len(rows) == PROFILE_ROWS_MAX:
                more = True
                break
            rows.append(r)
        if not rows:
            return rep.response(counter, RESULT_GONE, "no rows")
        for i in range(0, len(rows), PROFILE_ROWS_PER_FRAME):
            chunk = [list(r) for r in rows[i:i + PROFILE_ROWS_PER_FRAME]]
            rep.send(messages.INTERVALS, messages.intervals_body(chunk, self.boundaries.interval_s))
        reason = "%d rows" % len(rows)
        if more:
            reason += "; more after %d: ask again" % rows[-1][0]
        return rep.response(counter, RESULT_OK, reason)
