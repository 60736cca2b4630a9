# Commands that are not exactly the schema (issue 11, finding 3): a real meter on the simulated board, its link
# over the in-memory loopback of test_link, and a head-end stand-in that signs whatever payload it is given. A
# signed command with an unknown key, a tag in its arguments, an expiry before its issue time or times beyond
# uint32 is refused with a signed response, event 18, and nothing else: registers, billing, calendars and the
# clock stay as they were. meter.cmdschema is the one table of every operation's arguments.
from meter import events, frame, messages
from meter.cbor import Tag
from mptest import eq, raises
from test_link import HeadEnd, Loop
from test_timekeeping import NIGHT, _meter, _run_to, utc

M = messages
START = utc(2026, 11, 3, 9, 0)


class _Clock:
    """What HeadEnd stamps its messages with: the meter's own clock."""

    def __init__(self, hw):
        self.hw = hw

    @property
    def t(self):
        return self.hw.time()


def _linked():
    hw, m, _sent = _meter(START)
    m.start()
    _run_to(hw, m, START + 180)  # three readings: registers hold energy
    up, down = bytearray(), bytearray()
    m.attach_link(Loop(down, up))
    he = HeadEnd(m.identity, _Clock(hw))
    _run_to(hw, m, START + 240)  # a reading through the link
    return hw, m, he, up, down


def _exchange(m, he, up, down, fr):
    """Send one signed head-end frame; poll until the meter answered or gave up; the payloads it sent."""
    down.extend(fr)
    n = len(he.seen)
    for _ in range(20):
        m.poll_link()
        he.receive(up)
    got = [he.payloads[s] for s in he.seen[n:]]
    if got:  # everything is stored: the window of unacknowledged frames stays open for the events
        down.extend(he.ack(max(he.seen)))
        for _ in range(3):
            m.poll_link()
    return got


def _command(he, op, args=None, **keys):
    """A command payload with the head-end's next counter, keys added or replaced (None: left out)."""
    he.counter += 1
    now = he.clock.t
    p = {M.K_KIND: M.COMMAND, M.K_DEVICE: he.dev, M.K_COUNTER: he.counter, M.K_ISSUED: now,
         M.K_EXPIRES: now + 300, M.K_OP: op}
    if args is not None:
        p[M.K_ARGS] = args
    for k in keys:
        key = int(k[1:])
        if keys[k] is None:
            del p[key]
        else:
            p[key] = keys[k]
    return p


def _state(m, hw):
    b = m.boundaries
    return (m.registers.snapshot(), m.event_counts.get(events.BILLING_END, 0), b.calendars.passive, hw.time(),
            m.profile.count)


def _answer(sent, counter):
    got = [p for p in sent if p[M.K_KIND] == M.RESPONSE and p[M.K_ANSWERED] == counter]
    eq(len(got), 1, "one response to command %d" % counter)
    return got[0][M.K_RESULT], got[0].get(M.K_REASON)


def test_a_signed_command_that_is_not_exactly_the_schema_is_refused_with_a_reason_and_an_event():
    hw, m, he, up, down = _linked()
    cal = {"name": Tag(1, 5)}
    for k in NIGHT:
        if k != "name":
            cal[k] = NIGHT[k]
    t = hw.time()
    bad = [  # (operation, arguments, keys added or replaced, result, reason)
        (M.OP_BILLING_RESET, None, {"k13": 1}, M.RESULT_MALFORMED, "unknown key 13"),
        (M.OP_BILLING_RESET, {1: Tag(1, t)}, {}, M.RESULT_BAD_ARGS, "bad arguments: unknown key 1"),
        (M.OP_PROFILE, {1: Tag(1, t - 600), 2: t}, {}, M.RESULT_BAD_ARGS, "bad arguments: 1 must be utc (0..2^32-1)"),
        (M.OP_CALENDAR, {1: cal, 2: t + 86400}, {}, M.RESULT_BAD_ARGS, "bad arguments: 1 must be a calendar map"),
        (M.OP_BILLING_RESET, None, {"k4": t + 200, "k9": t + 100}, M.RESULT_MALFORMED,
         "expires (9) before issued (4)"),
        (M.OP_BILLING_RESET, None, {"k4": 1 << 32, "k9": (1 << 32) + 300}, M.RESULT_MALFORMED,
         "issued (4) and expires (9) must be utc: 0..2^32-1"),
        (M.OP_BILLING_RESET, None, {"k9": 1 << 40}, M.RESULT_MALFORMED,
         "issued (4) and expires (9) must be utc: 0..2^32-1"),
        (M.OP_SET_TIME, {1: t + 60, 2: False, 3: 0}, {}, M.RESULT_BAD_ARGS, "bad arguments: unknown key 3"),
        (M.OP_SET_TIME, {2: True}, {}, M.RESULT_BAD_ARGS, "bad arguments: 1 missing"),
        (M.OP_BILLING_RESET, None, {"k10": True}, M.RESULT_MALFORMED, "key 10 must be an unsigned integer"),
        (99, None, {}, M.RESULT_UNKNOWN_OP, "unknown operation 99"),
    ]
    before = _state(m, hw)
    refused = m.event_counts.get(events.COMMAND_REFUSED, 0)
    first = None
    for op, args, keys, result, reason in bad:
        p = _command(he, op, args, **keys)
        first = first or p
        sent = _exchange(m, he, up, down, he.sign(p))
        eq([x for x in sent if x[M.K_KIND] in (M.BILLING, M.INTERVALS)], [], "%s: no billing snapshot, no rows"
           % reason)
        eq(_state(m, hw), before, "%s: registers, billing, calendars, clock, profile unchanged" % reason)
        eq(_answer(sent, p[M.K_COUNTER]), (result, reason), "refused, with the reason")
        evs = [e for e in sent if e[M.K_KIND] == M.EVENT and e[M.K_EVENT_CODE] == events.COMMAND_REFUSED]
        eq([e[M.K_EVENT_VALUE] for e in evs], [reason], "event 18 says why")
    eq(m.event_counts.get(events.COMMAND_REFUSED, 0) - refused, len(bad), "one event each")
    eq(m.link.refused, {"schema": len(bad)}, "counted")
    # the counter of a refused command is taken: sent again, it is a replay (no second answer)
    again = he.sign(first)
    eq([x for x in _exchange(m, he, up, down, again) if x[M.K_KIND] == M.RESPONSE], [], "a replay is not answered")
    eq(m.link.refused.get("replay"), 1, "refused as a replay")
    # the same command, exactly the schema, is taken
    p = _command(he, M.OP_BILLING_RESET)
    sent = _exchange(m, he, up, down, he.sign(p))
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "a billing reset")
    eq(len([x for x in sent if x[M.K_KIND] == M.BILLING]), 1, "its snapshot")


def test_every_operation_takes_exactly_its_arguments():
    from meter import cmdschema

    check = cmdschema.check
    eq(check(M.OP_BILLING_RESET, None), None, "no arguments: key 11 left out")
    eq(check(M.OP_BILLING_RESET, {}), None, "or an empty map")
    eq(check(M.OP_BACKFILL, {1: 0, 2: (1 << 64) - 1}), None, "sequence numbers up to 2^64-1")
    eq(check(M.OP_BACKFILL, {1: 0, 2: 1 << 64})[0], M.RESULT_BAD_ARGS, "not beyond")
    eq(check(M.OP_BACKFILL, None), (M.RESULT_BAD_ARGS, "bad arguments: 1 missing"), "back-fill needs its range")
    eq(check(M.OP_PROFILE, {1: 0, 2: 0xFFFFFFFF}), None, "utc up to 2^32-1")
    eq(check(M.OP_PROFILE, {1: 0, 2: 1 << 32})[0], M.RESULT_BAD_ARGS, "not beyond")
    eq(check(M.OP_PROFILE, {1: True, 2: 5})[0], M.RESULT_BAD_ARGS, "a boolean is no time")
    eq(check(M.OP_SET_TIME, {1: 1800000000}), None, "force may be left out")
    eq(check(M.OP_SET_TIME, {1: 1800000000, 2: 1})[0], M.RESULT_BAD_ARGS, "force is true or false, not 1")
    eq(check(M.OP_CALENDAR, {1: NIGHT, 2: 1800000000}), None, "a calendar")
    for inner in (b"x", None, Tag(0, "2026"), {1: "x"}):
        cal = {"name": "x", "days": {"d": [[0, 1], inner]}}
        eq(check(M.OP_CALENDAR, {1: cal, 2: 1800000000})[0], M.RESULT_BAD_ARGS, "%r inside a calendar" % (inner,))
    eq(check(M.OP_CALENDAR, [NIGHT, 1]), (M.RESULT_BAD_ARGS, "bad arguments: not a map"), "arguments are a map")
    eq(check(True, None)[0], M.RESULT_UNKNOWN_OP, "an op is an integer")
    for op in cmdschema.OP_ARGS:
        spec = cmdschema.OP_ARGS[op]
        keys = [spec[i] for i in range(0, len(spec), 2)]
        eq(keys, sorted(keys), "op %d: argument keys ascending" % op)


def test_acknowledgements_are_exactly_the_schema_too():
    hw, m, he, up, down = _linked()
    for _ in range(10):
        m.poll_link()
        he.receive(up)
    top = max(he.seen)
    acked = m.link.outbox.acked

    def ack(**keys):
        he.counter += 1
        p = {M.K_KIND: M.ACK, M.K_DEVICE: he.dev, M.K_COUNTER: he.counter, M.K_ISSUED: hw.time(),
             M.K_EXPIRES: hw.time() + 300, M.K_ACK_SEQ: top}
        for k in keys:
            p[int(k[1:])] = keys[k]
        down.extend(he.sign(p))
        for _ in range(3):
            m.poll_link()

    for keys in ({"k13": 0}, {"k4": 1 << 32}, {"k9": hw.time() - 1, "k4": hw.time() - 5, "k12": -1},
                 {"k4": hw.time() + 400}):
        ack(**keys)
        eq(m.link.outbox.acked, acked, "%r: not taken" % (keys,))
    eq(m.link.refused, {"malformed": 4}, "refused as malformed (no answer: acknowledgements get none)")
    ack()
    eq(m.link.outbox.acked, top, "exactly the schema: taken")


def test_verify_host_refuses_with_the_counter_to_answer():
    hw, m, he, _up, _down = _linked()
    ident = m.identity
    p = _command(he, M.OP_BILLING_RESET, k13=1)
    e = raises(M.CommandRefused, M.verify_host, _unframe(he.sign(p)), ident, hw.time(), 0)
    eq((e.reason, e.counter, e.result, str(e)), ("schema", p[M.K_COUNTER], M.RESULT_MALFORMED, "unknown key 13"),
       "refused")
    e = raises(M.HostMessageError, M.verify_host, _unframe(he.sign(p)), ident, p[M.K_EXPIRES] + 1, 0)
    eq(e.reason, "expired", "an expired command is not answered, malformed or not")


def _unframe(fr):
    return frame.Deframer().feed(fr)[0]
