# The meter's authenticated head-end commands (docs/protocol.md, the command table). meter.link verifies every
# head-end message (signature, device, counter, expiry) and handles back-fill (op 1) itself; the others come
# here as on_command(kind, counter, payload) and are answered with a signed response, (seq, frame), built by
# the reporter. Nothing changes unless a command is accepted.
#
#   OP_CALENDAR       {A_CALENDAR: calendar map, A_ACTIVATION: UTC}  arm a passive TOU calendar
#   OP_BILLING_RESET  {}                                             a billing snapshot now, then demand reset
#   OP_PROFILE        {A_FROM: UTC, A_TO: UTC}                       the stored load-profile rows in range, again
#   OP_SET_TIME       {A_UTC: UTC, A_FORCE: bool (default false)}    set the clock (Boundaries.set_clock)
# While the clock is not set only OP_SET_TIME is taken (meter.messages.verify_host refuses the others first).
from meter import messages
from meter.messages import (A_ACTIVATION, A_CALENDAR, A_FORCE, A_FROM, A_TO, A_UTC, K_ARGS, K_OP, OP_BILLING_RESET,
                            OP_CALENDAR, OP_PROFILE, OP_SET_TIME, RESULT_BAD_ARGS, RESULT_GONE, RESULT_OK,
                            RESULT_REJECTED, RESULT_UNKNOWN_OP)

PROFILE_ROWS_MAX = 96  # rows one profile command sends again (a day at 15 min; ask again for more)
PROFILE_ROWS_PER_FRAME = 16


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class Commands:
    """boundaries: meter.boundaries.Boundaries (calendars, billing); profile: the load profile ring; reporter:
    builds the responses and sends the rows; interval_s: the profile's capture period."""

    def __init__(self, boundaries, profile, reporter, interval_s):
        self.boundaries = boundaries
        self.profile = profile
        self.reporter = reporter
        self.interval_s = interval_s

    def handle(self, kind, counter, m):
        """A verified head-end command -> the response (seq, frame), kind 6."""
        op = m[K_OP]
        args = m.get(K_ARGS, {})
        respond = self.reporter.response
        if not isinstance(args, dict):
            return respond(counter, RESULT_BAD_ARGS, "bad arguments: not a map")
        if op == OP_SET_TIME:
            return self._set_time(counter, args)
        if not self.boundaries.clock_ok and op in (OP_CALENDAR, OP_BILLING_RESET, OP_PROFILE):
            return respond(counter, RESULT_REJECTED, "rejected: the clock is not set")
        if op == OP_CALENDAR:
            return self._calendar(counter, args)
        if op == OP_BILLING_RESET:
            self.boundaries.bill_now()
            return respond(counter, RESULT_OK, None)
        if op == OP_PROFILE:
            return self._profile(counter, args)
        return respond(counter, RESULT_UNKNOWN_OP, "unknown operation")

    def _calendar(self, counter, args):
        respond = self.reporter.response
        cal, at = args.get(A_CALENDAR), args.get(A_ACTIVATION)
        if not isinstance(cal, dict) or not _uint(at):
            return respond(counter, RESULT_BAD_ARGS, "bad arguments: want {1: calendar map, 2: activation UTC}")
        try:
            self.boundaries.arm_calendar(cal, at)
        except ValueError as e:
            return respond(counter, RESULT_REJECTED, ("rejected: %s" % e)[:120])
        return respond(counter, RESULT_OK, None)

    def _set_time(self, counter, args):
        respond = self.reporter.response
        t, force = args.get(A_UTC), args.get(A_FORCE, False)
        if not _uint(t) or (force is not True and force is not False):
            return respond(counter, RESULT_BAD_ARGS, "bad arguments: want {1: UTC seconds, 2: force true/false}")
        was_set = self.boundaries.clock_ok
        why = self.boundaries.set_clock(t, force)
        if why is not None:
            return respond(counter, RESULT_REJECTED, ("rejected: %s" % why)[:120])
        # an unset clock could not judge the command's expiry: the answer says so (docs/security.md)
        return respond(counter, RESULT_OK, None if was_set else "set; expiry not checked: the clock was not set")

    def _profile(self, counter, args):
        rep = self.reporter
        a, b = args.get(A_FROM), args.get(A_TO)
        if not (_uint(a) and _uint(b)) or a > b:
            return rep.response(counter, RESULT_BAD_ARGS, "bad arguments: want {1: from, 2: to} UTC, from <= to")
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
            rep.send(messages.INTERVALS, messages.intervals_body(chunk, self.interval_s))
        reason = "%d rows" % len(rows)
        if more:
            reason += "; more after %d: ask again" % rows[-1][0]
        return rep.response(counter, RESULT_OK, reason)
