# Ops 10-12 on a real meter (simulated board, its link over test_link's loopback, a head-end stand-in that
# signs): configuration checked as a whole and kept across a restart, a capture period that changes at the
# top of the hour, a demand period at a billing-period end, reboot answered before the restart, and head-end
# key rotation (old key refused after it, counter goes on, a torn write leaves the old key).
from meter import events, messages, p256
from meter.app import Meter
from meter.identity import Identity, key_id
from mptest import eq, fresh_dir, raises
from sim.hardware import Restart, open_sim
from test_commands import _answer, _command, _exchange, _linked
from test_timekeeping import _board, utc

M = messages


def _files(d, names=("headend-pub", "settings", "calendar", "device-key")):
    """The bytes of the stores ops 10-12 may change (slot files a and b)."""
    out = {}
    for n in names:
        for s in (".a", ".b"):
            try:
                with open(d + "/" + n + s, "rb") as f:
                    out[n + s] = f.read()
            except OSError:
                out[n + s] = None
    return out


def _send(m, he, up, down, op, args=None, **keys):
    p = _command(he, op, args, **keys)
    sent = _exchange(m, he, up, down, he.sign(p))
    return p, sent


def _evs(sent, code):
    return [e[M.K_EVENT_VALUE] for e in sent if e[M.K_KIND] == M.EVENT and e[M.K_EVENT_CODE] == code]


def test_a_configuration_is_all_or_nothing():
    hw, m, he, up, down = _linked()
    d = hw.flash_dir
    names = ("headend-pub", "settings", "calendar", "device-key", "disconnect", "limiter")
    before = _files(d, names)
    reading = m.reporter.reading_s
    bad = [  # (arguments, result, reason)
        ({M.A_READING_S: 120, M.A_DEMAND_PERIOD_S: 600}, M.RESULT_BAD_ARGS,
         "bad arguments: 1 (demand_period_s) must be one of 300, 900, 1800, 3600, not 600"),
        ({M.A_READING_S: 5}, M.RESULT_BAD_ARGS, "bad arguments: 3 (reading_s) must be an integer 10..86400, not 5"),
        ({M.A_CAPTURE_PERIOD_S: 700}, M.RESULT_BAD_ARGS,
         "bad arguments: 2 (capture_period_s) must be one of 60, 300, 600, 900, 1800, 3600, not 700"),
        ({M.A_OVER_VOLTAGE_MV: 40000, M.A_READING_S: 30}, M.RESULT_BAD_ARGS,
         "bad arguments: 5 (over_voltage_mv) must be an integer 1..32000, not 40000"),
        ({M.A_READING_S: 30, M.A_CONTROL_MODE: 7, M.A_GROUPS: [1]}, M.RESULT_REJECTED,
         "rejected: %d: control mode must be 0..6, not 7" % M.A_CONTROL_MODE),
    ]
    for args, result, reason in bad:
        p, sent = _send(m, he, up, down, M.OP_CONFIG, args)
        eq(_answer(sent, p[M.K_COUNTER]), (result, reason), "refused with the reason")
        eq(_evs(sent, events.CONFIG_SET), [], "no event 28")
        eq(_files(d, names), before, "%r: flash unchanged" % (args,))
        eq(m.reporter.reading_s, reading, "the reading interval in force unchanged")
    # control mode and groups are meter.control's: checked with the rest, then applied by it
    p, sent = _send(m, he, up, down, M.OP_CONFIG, {M.A_READING_S: 30, M.A_CONTROL_MODE: 3, M.A_GROUPS: [2, 5]})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "taken")
    c = m.control
    eq((m.reporter.reading_s, c.disconnect.mode, c.limiter.groups), (30, 3, [2, 5]), "all three applied")
    eq(_evs(sent, events.CONFIG_SET), ["%d,%d,%d" % (M.A_READING_S, M.A_CONTROL_MODE, M.A_GROUPS)],
       "event 28 names the keys")
    # disconnected, mode 0 (always connected) is refused by the control's own check, before anything is applied
    p, sent = _send(m, he, up, down, M.OP_DISCONNECT)
    eq(_answer(sent, p[M.K_COUNTER])[0], M.RESULT_OK, "disconnected")
    names = ("settings", "disconnect", "limiter")
    before = _files(d, names)
    p, sent = _send(m, he, up, down, M.OP_CONFIG, {M.A_READING_S: 90, M.A_CONTROL_MODE: 0, M.A_GROUPS: [9]})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_REJECTED, "rejected: %d: control mode 0 (always connected) needs "
                                       "the meter connected; it is disconnected" % M.A_CONTROL_MODE), "refused")
    eq((m.reporter.reading_s, c.disconnect.mode, c.limiter.groups, _files(d, names)), (30, 3, [2, 5], before),
       "nothing applied, nothing written")


def test_a_key_nothing_applies_is_refused_and_an_owner_check_runs_first():
    from meter.settings import Settings

    st = Settings(fresh_dir("settings"))
    eq(st.check({M.A_READING_S: 30, 99: 1}), (M.RESULT_REJECTED, "rejected: 99 cannot be set on this meter "
                                                                  "(nothing applies it)"), "no owner")
    got = []
    st.register(99, got.append, lambda v: None if v < 5 else "at most 4")
    eq(st.check({M.A_READING_S: 30, 99: 5}), (M.RESULT_REJECTED, "rejected: 99: at most 4"), "its check refuses")
    eq(st.check({M.A_READING_S: 30, 99: 4}), None, "and takes")
    st.store({M.A_READING_S: 30, 99: 4})
    st.apply_owned({M.A_READING_S: 30, 99: 4})
    eq((got, Settings(st._store.root).values), ([4], {M.A_READING_S: 30}), "its setter applies it; the owner keeps it")
    st.register(98, lambda v: "its flash failed")
    eq(st.apply_owned({98: 1, 99: 2}), "98: its flash failed", "a setter that fails after its check is said")


def test_stored_settings_a_meter_cannot_honour_are_not_used():
    from meter import cbor
    from meter.settings import Settings
    from meter.store import Store

    d = fresh_dir("settings")
    Store(d, "settings").save(cbor.encode({M.A_READING_S: 120, M.A_DEMAND_PERIOD_S: 7}))
    st = Settings(d)
    eq((st.values, st.corrupt), ({}, "settings: 1 must be one of 300, 900, 1800, 3600, not 7 (the board's are "
                                      "used)"), "damaged: the board's values")


def test_a_configuration_applies_and_survives_a_restart():
    hw, m, he, up, down = _linked()
    ma = m.alarms.limits["over_current_ma"]
    p, sent = _send(m, he, up, down, M.OP_CONFIG, {M.A_READING_S: 120, M.A_OVER_CURRENT_MA: 1})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "taken")
    eq(m.alarms.limits["over_current_ma"], 1, "the alarm threshold at once")
    t0 = hw.time()
    _run_to_world(hw, m, he, up, t0 + 400, down)
    readings = [x[M.K_TIME] for x in he.payloads.values() if x[M.K_KIND] == M.READING and x[M.K_TIME] > t0]
    eq(len(readings), 3, "three readings in 400 s")
    slots = [t // 120 for t in readings]
    eq(slots, list(range(slots[0], slots[0] + 3)), "one reading every 120 s")
    for t in readings:
        eq(t % 120 < 5, True, "readings at multiples of 120 s (the batch after it): %d" % t)
    events_seen = [x for x in he.payloads.values() if x[M.K_KIND] == M.EVENT
                   and x[M.K_EVENT_CODE] == events.OVER_CURRENT]
    eq(len(events_seen), 1, "the load is above 1 mA: the alarm is raised")
    # a restart on the same flash: the stored values override the board's and the runner's
    hw2 = open_sim(_board(), flash_dir=hw.flash_dir, overrides={"scenario": "constant", "start_unix_s": hw.time()})
    m2 = Meter(hw2, sink=lambda seq, fr: None)
    eq((m2.reporter.reading_s, m2.alarms.limits["over_current_ma"]), (120, 1), "kept in flash")
    m3 = Meter(open_sim(_board(), flash_dir=fresh_dir("settings"), overrides={"scenario": "constant"}),
               sink=lambda seq, fr: None)
    eq((m3.reporter.reading_s, m3.alarms.limits["over_current_ma"]), (60, ma), "a fresh meter: the defaults")


def _run_to_world(hw, m, he, up, t, down=None):
    """Run the meter to world time t, the head-end reading (and, given `down`, acknowledging) what it sends."""
    n = 0
    while hw.sim.clock.world_time() < t:
        m.cycle()
        n += 1
        if he.receive(up) and down is not None:
            down.extend(he.ack(max(he.seen)))


def test_a_capture_period_changes_at_the_top_of_the_hour():
    hw, m, he, up, down = _linked()  # 09:04
    p, sent = _send(m, he, up, down, M.OP_CONFIG, {M.A_CAPTURE_PERIOD_S: 300})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, "applied; capture period at the top of the hour"), "taken")
    _run_to_world(hw, m, he, up, utc(2026, 11, 3, 10, 11), down)
    rows = [(x[M.K_ROWS][0][0], x[M.K_PERIOD]) for x in he.payloads.values() if x[M.K_KIND] == M.INTERVALS]
    h = utc(2026, 11, 3, 9, 0)
    want = [(h + 900, 900), (h + 1800, 900), (h + 2700, 900), (h + 3600, 900), (h + 3900, 300), (h + 4200, 300)]
    eq(rows, want, "the old period up to 10:00, the new one after")
    eq(m.settings.capture_since(), h + 3600, "rows up to 10:00 had the old period")
    # a profile re-read does not label old rows with the new period: it sends only what came after
    p, sent = _send(m, he, up, down, M.OP_PROFILE, {M.A_FROM: h, M.A_TO: h + 4200})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, "2 rows"), "the rows after the change")


def test_a_demand_period_changes_at_a_billing_period_end():
    from test_timekeeping import _meter

    start = utc(2026, 11, 30, 22, 50)  # the billing period ends at local midnight (CET: 23:00 UTC)
    hw, m, _sent = _meter(start)
    m.start()
    m.run_until(lambda: hw.sim.clock.world_time() >= start + 60)
    from meter import configure

    he_counter = 1
    m.reporter.response = lambda counter, result, reason=None: (result, reason)  # the answer, unsigned here
    got = configure.handle(m, he_counter, M.OP_CONFIG, {M.A_DEMAND_PERIOD_S: 300})
    eq(got, (M.RESULT_OK, "applied; demand period at the next billing-period end"), "taken")
    m.run_until(lambda: hw.sim.clock.world_time() >= start + 540)
    eq(m.boundaries.demand.period_s, 900, "the old period until the billing period ends")
    m.run_until(lambda: hw.sim.clock.world_time() >= start + 960)
    d = m.boundaries.demand
    eq((d.period_s, d.last_end, d.resets), (300, utc(2026, 11, 30, 23, 5), 1), "the new one after it")


def test_a_reboot_is_answered_then_the_meter_restarts_and_a_replay_does_nothing():
    hw, m, he, up, down = _linked()
    p = _command(he, M.OP_REBOOT)
    fr = he.sign(p)
    down.extend(fr)
    for _ in range(3):
        m.poll_link()
    he.receive(up)
    sent = [he.payloads[s] for s in he.seen]
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, "restarting once this is acknowledged (30 s at most)"),
       "answered first")
    eq(_evs(sent, events.REBOOT), [p[M.K_COUNTER]], "event 30")
    answer = [x[M.K_SEQ] for x in sent if x[M.K_KIND] == M.RESPONSE][0]
    for _ in range(5):
        m.poll_link()  # not acknowledged yet: no restart
    down.extend(he.ack(answer))
    e = raises(Restart, m.poll_link)
    eq((str(e), m.link.outbox.acked), ("reboot command", answer), "acknowledged: the board restarts")
    # the next boot, on the same flash: the replayed command is refused, nothing scheduled
    hw2 = open_sim(_board(), flash_dir=hw.flash_dir, overrides={"scenario": "constant", "start_unix_s": hw.time()})
    m2 = Meter(hw2, sink=lambda seq, fr: None)
    m2.start()
    up2, down2 = bytearray(), bytearray()
    from test_link import Loop

    m2.attach_link(Loop(down2, up2))
    down2.extend(fr)
    for _ in range(20):
        m2.poll_link()
    eq((m2.link.refused.get("replay"), m2._restart_at), (1, None), "a replay is refused: no restart loop")


def test_a_reboot_whose_answer_is_not_acknowledged_restarts_after_30_s():
    hw, m, he, up, down = _linked()
    down.extend(he.command(M.OP_REBOOT))
    t0 = hw.monotonic_s()
    e = raises(Restart, _run_to_world, hw, m, he, up, hw.time() + 60)  # the head-end reads, never acknowledges
    eq((str(e), 30 <= hw.monotonic_s() - t0 <= 32), ("reboot command", True), "restarted after 30 s")
    eq([x[M.K_RESULT] for x in he.payloads.values() if x[M.K_KIND] == M.RESPONSE], [M.RESULT_OK], "answered")


def test_the_head_end_key_is_rotated_and_only_the_new_key_verifies():
    hw, m, he, up, down = _linked()
    d = hw.flash_dir
    new_d, new_pub = p256.generate_key()
    p, sent = _send(m, he, up, down, M.OP_KEY_ROTATE, {M.A_KEY: new_pub})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "rotated")
    kid = key_id(new_pub)
    eq(_evs(sent, events.KEY_ROTATED), ["".join(["%02x" % x for x in kid])], "event 29: the new kid")
    eq(Identity(d).headend_pub, new_pub, "stored")
    # the old key is refused, for commands and acks
    for _ in range(5):  # the answer and its event acknowledged under the new key
        m.poll_link()
    he.receive(up)
    down.extend(he.ack(max(he.seen), d=new_d, kid=kid))
    m.poll_link()
    refused = dict(m.link.refused)
    down.extend(he.command(M.OP_BILLING_RESET))
    m.poll_link()
    he.receive(up)
    eq([x for x in he.payloads.values() if x[M.K_KIND] == M.RESPONSE and x[M.K_ANSWERED] == he.counter], [],
       "a command under the old key: no answer")
    eq(m.link.refused.get("unknown-kid", 0), refused.get("unknown-kid", 0) + 1, "refused")
    m.run_until(lambda: m.link.outbox.last_seq > m.link.outbox.acked)  # something to acknowledge
    acked = m.link.outbox.acked
    down.extend(he.ack(m.link.outbox.last_seq))
    m.poll_link()
    eq(m.link.outbox.acked, acked, "an ack under the old key is not taken")
    eq(m.link.refused.get("unknown-kid", 0), refused.get("unknown-kid", 0) + 2, "refused too")
    # the old key under the new kid: a bad signature
    down.extend(he.sign(_command(he, M.OP_BILLING_RESET), kid=kid))
    m.poll_link()
    eq(m.link.refused.get("bad-signature", 0), refused.get("bad-signature", 0) + 1, "old key, new kid: refused")
    # the new key: taken, the counter goes on from where it was (no reset)
    he.d, he.kid = new_d, kid
    replays = m.link.refused.get("replay", 0)
    p, sent = _send(m, he, up, down, M.OP_BILLING_RESET, k3=m.link.counter)
    eq(([x for x in sent if x[M.K_KIND] == M.RESPONSE], m.link.refused.get("replay", 0)), ([], replays + 1),
       "the new key, a counter already taken under the old: a replay (the counter was not reset)")
    p, sent = _send(m, he, up, down, M.OP_BILLING_RESET)
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "the new key, the next counter: taken")


def test_a_torn_key_write_leaves_the_old_key():
    hw, m, he, up, down = _linked()
    d = hw.flash_dir
    old = m.identity.headend_pub
    _d, new_pub = p256.generate_key()
    p, sent = _send(m, he, up, down, M.OP_KEY_ROTATE, {M.A_KEY: new_pub})
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "rotated")
    st = m.identity._he_store
    path = st.paths[st._slot]
    with open(path, "rb") as f:
        blob = f.read()
    for cut in (0, 5, len(blob) // 2, len(blob) - 1):  # the power failed while the new slot was written
        with open(path, "wb") as f:
            f.write(blob[:cut])
        eq(Identity(d).headend_pub, old, "cut at %d bytes: the old key" % cut)
    with open(path, "wb") as f:
        f.write(blob)
    eq(Identity(d).headend_pub, new_pub, "written whole: the new key")


def test_rotation_attacks_are_refused_logged_and_change_nothing():
    hw, m, he, up, down = _linked()
    d = hw.flash_dir
    _d, new_pub = p256.generate_key()
    stranger, _pub = p256.generate_key()
    args = {M.A_KEY: new_pub}
    other = bytes([x ^ 0xFF for x in he.dev])
    t = hw.time()
    attacks = [  # (name, the frame, made when sent: the counter is the next, what the link counts)
        ("wrong key", lambda: he.sign(_command(he, M.OP_KEY_ROTATE, args), d=stranger), "bad-signature"),
        ("unsigned", lambda: M_frame(_command(he, M.OP_KEY_ROTATE, args)), "malformed"),
        ("expired", lambda: he.sign(_command(he, M.OP_KEY_ROTATE, args, k4=t - 900, k9=t - 600)), "expired"),
        ("misaddressed", lambda: he.sign(_command(he, M.OP_KEY_ROTATE, args, k2=other)), "wrong-device"),
    ]
    before = _files(d)
    for name, make, reason in attacks:
        fr = make()
        refused = m.link.refused.get(reason, 0)
        logged = m.event_counts.get(events.AUTH_FAIL, 0) + m.link.events_suppressed
        down.extend(fr)
        for _ in range(3):
            m.poll_link()
        he.receive(up)
        eq([x for x in he.payloads.values() if x[M.K_KIND] == M.RESPONSE], [], "%s: no answer" % name)
        eq(m.link.refused.get(reason, 0), refused + 1, "%s: refused as %s (%r)" % (name, reason, m.link.refused))
        eq(m.event_counts.get(events.AUTH_FAIL, 0) + m.link.events_suppressed, logged + 1,
           "%s: logged as event 9 (or counted, at most one event a minute)" % name)
        eq(_files(d), before, "%s: flash unchanged" % name)
    ok = he.sign(_command(he, M.OP_KEY_ROTATE, {M.A_KEY: b"\x04" + bytes(64)}))  # not on the curve
    sent = _exchange(m, he, up, down, ok)
    eq([(x[M.K_RESULT], x.get(M.K_REASON)) for x in sent if x[M.K_KIND] == M.RESPONSE],
       [(M.RESULT_BAD_ARGS, "bad arguments: %d is not a point on P-256" % M.A_KEY)], "a malformed key")
    eq(_files(d), before, "malformed key: flash unchanged")
    replays = m.link.refused.get("replay", 0)
    sent = _exchange(m, he, up, down, ok)
    eq((m.link.refused.get("replay", 0), sent), (replays + 1, []), "replayed: refused, not answered")
    short = he.sign(_command(he, M.OP_KEY_ROTATE, {M.A_KEY: new_pub[:64]}))
    sent = _exchange(m, he, up, down, short)
    eq(_evs(sent, events.COMMAND_REFUSED), ["bad arguments: %d must be a 65-byte uncompressed P-256 key" % M.A_KEY],
       "a 64-byte key: event 18")
    eq(_files(d), before, "short key: flash unchanged")
    # the real one, then its replay
    real = he.sign(_command(he, M.OP_KEY_ROTATE, args))
    sent = _exchange(m, he, up, down, real)
    eq(len(_evs(sent, events.KEY_ROTATED)), 1, "rotated")
    after = _files(d)
    kids = m.link.refused.get("unknown-kid", 0)
    sent = _exchange(m, he, up, down, real)
    eq((m.link.refused.get("unknown-kid", 0), _files(d)), (kids + 1, after), "replayed: the old key is unknown now")


def M_frame(payload):
    """A head-end message that is not signed at all: its CBOR, framed."""
    from meter import cbor, frame

    return frame.encode_frame(cbor.encode(payload))

