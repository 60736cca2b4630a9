# Issue 12's security acceptance: every two-way control operation (ops 6-12) tried unsigned, signed with the
# wrong key, replayed, expired, misaddressed, with malformed arguments and with an unknown key, through the
# meter's real link. Each is refused (a counted refusal, or a signed answer with the reason), logged as an event
# (9 AUTH_FAIL, or 18 COMMAND_REFUSED; event 9 at most once a minute, the rest counted), and the state these
# operations keep on flash is byte-identical before and after.
from mptest import eq

from meter import events, p256
from meter import messages as M
from test_commands import _command, _exchange, _linked
from test_settings import M_frame, _files

STATE = ("disconnect", "limiter", "dr", "settings", "headend-pub", "device-key", "calendar", "boots")


def _ops(t, new_pub):
    """(op, valid arguments, malformed arguments) for each operation of the issue."""
    return [
        (M.OP_DISCONNECT, None, {1: 1}),
        (M.OP_RECONNECT, None, {7: True}),
        (M.OP_LIMITER, {M.A_THRESHOLD_NORMAL: 500}, {M.A_THRESHOLD_NORMAL: -1}),
        (M.OP_DR_EVENT, {M.A_DR_ID: 1, M.A_START: t + 600, M.A_DURATION_S: 600, M.A_LIMIT_W: 500},
         {M.A_DR_ID: 1, M.A_START: "soon", M.A_DURATION_S: 600, M.A_LIMIT_W: 500}),
        (M.OP_CONFIG, {M.A_CONTROL_MODE: 4}, {M.A_GROUPS: [1 << 20]}),
        (M.OP_REBOOT, None, {1: 0}),
        (M.OP_KEY_ROTATE, {M.A_KEY: new_pub}, {M.A_KEY: new_pub[:33]}),
    ]


def _logged(m):
    return (m.event_counts.get(events.AUTH_FAIL, 0) + m.link.events_suppressed
            + m.event_counts.get(events.COMMAND_REFUSED, 0))


def test_every_control_operation_under_attack_is_refused_logged_and_changes_nothing():
    hw, m, he, up, down = _linked()
    d = hw.flash_dir
    _d, new_pub = p256.generate_key()
    stranger, _pub = p256.generate_key()
    other = bytes([x ^ 0xFF for x in he.dev])
    # one command accepted first: its counter is the one a replay carries
    p = _command(he, M.OP_PROFILE, {M.A_FROM: hw.time() - 600, M.A_TO: hw.time()})
    _exchange(m, he, up, down, he.sign(p))
    used = p[M.K_COUNTER]
    before = _files(d, STATE)
    tried = 0
    for op, good, malformed in _ops(hw.time(), new_pub):
        t = hw.time()
        attacks = [
            ("unsigned", lambda: M_frame(_command(he, op, good))),
            ("wrong key", lambda: he.sign(_command(he, op, good), d=stranger)),
            ("replayed", lambda: he.sign(_command(he, op, good, k3=used))),
            ("expired", lambda: he.sign(_command(he, op, good, k4=t - 900, k9=t - 600))),
            ("misaddressed", lambda: he.sign(_command(he, op, good, k2=other))),
            ("malformed arguments", lambda: he.sign(_command(he, op, malformed))),
            ("unknown key", lambda: he.sign(_command(he, op, good, k13=1))),
        ]
        for name, make in attacks:
            what = "op %d %s" % (op, name)
            refused = sum(m.link.refused.values())
            logged = _logged(m)
            sent = _exchange(m, he, up, down, make())
            answers = [(x[M.K_RESULT], x.get(M.K_REASON)) for x in sent if x[M.K_KIND] == M.RESPONSE]
            if answers:  # signed and for this meter: refused with a signed answer that says why
                eq(len(answers), 1, what + ": one answer")
                eq(answers[0][0] in (M.RESULT_BAD_ARGS, M.RESULT_MALFORMED), True, what + ": refused %r" % answers)
                eq(bool(answers[0][1]), True, what + ": with a reason")
            else:
                eq(sum(m.link.refused.values()), refused + 1, what + ": counted as refused %r" % m.link.refused)
            eq(_logged(m), logged + 1, what + ": logged as an event (9 or 18)")
            eq(_files(d, STATE), before, what + ": the state on flash is unchanged")
            tried += 1
    eq(tried, 49, "7 operations x 7 attacks")
    eq(m.event_counts.get(events.DISCONNECT_CONTROL, 0) + m.event_counts.get(events.LIMITER_SET, 0)
       + m.event_counts.get(events.DR_ACCEPTED, 0) + m.event_counts.get(events.CONFIG_SET, 0)
       + m.event_counts.get(events.REBOOT, 0) + m.event_counts.get(events.KEY_ROTATED, 0), 0, "nothing was done")
