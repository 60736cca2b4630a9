# Two-way control on the meter (issue 12): disconnect control (IC70: every transition in every control mode,
# against the issue's tables), the relay cutting the simulated load, the customer's button, the limiter (IC71)
# with its emergency profile and groups, demand response (limit, shed, opt-out), power cuts while
# disconnected, and commands with bad arguments that change nothing on flash. The real meter on the simulated
# board; commands go through meter.commands as meter.link hands them over (after the signature checks, which
# test_commands covers for every op).
import json
import os

from meter import events, messages
from meter.app import Meter
from meter.board import BoardError, validate_board
from meter.disconnect import Disconnect
from meter.hal import Output
from mptest import SIM_TRUTH, contains, eq, fresh_dir, ge, gt, le, lt, near, not_mp32
from sim.hardware import DEFAULT_CONTROLLED_SHARE, SimPin, open_sim
from test_timekeeping import spy_payloads

M = messages
BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"
START = 1793491200  # 2026-11-01 00:00 UTC

# The issue's tables, written out again here: the code under test must agree with them, not with itself.
ISSUE_MOVES = {"a": (0, 1), "b": (1, 0), "c": (2, 0), "d": (0, 2), "e": (2, 1), "f": (1, 2), "g": (1, 2),
               "h": (2, 1)}
ISSUE_MODES = {0: "", 1: "b c f g d e", 2: "b c f g a e", 3: "b c g d e", 4: "b c g a e", 5: "b c f g d e h",
               6: "b c g d e h"}


def _board(big=False, **sections):
    with open(BOARD) as f:
        b = json.loads(f.read())
    if big:  # a 1 mOhm shunt: up to 32 A, so a 25 V bus carries the 700 W the limiter tests need
        b["ina219"]["shunt_uohm"] = 1000
        b["ina219"]["max_ma"] = 32000
    for k in sections:
        if sections[k] is None:
            del b[k]
        else:
            b[k] = sections[k]
    return validate_board(b)


def _meter(flash=None, board=None, volts=12.0, amps=1.5, **sim):
    over = {"scenario": "constant", "volts": volts, "amps": amps, "start_unix_s": START}
    over.update(sim)
    hw = open_sim(board or _board(), flash_dir=flash or fresh_dir("control"), overrides=over)
    m = Meter(hw, sink=lambda seq, fr: None)
    return hw, m, spy_payloads(m)


def _run_s(hw, m, s):
    end = hw.sim.clock.now_us + int(s * 1000000)
    m.run_until(lambda: hw.sim.clock.now_us >= end)


def _load(hw, amps):
    sc = hw.sim.scenario
    sc._i = sc.amps = amps
    sc.vi = sc.volts * amps


_counter = [0]


def _cmd(m, sent, op, args=None):
    """Command op through meter.commands; its (result, reason)."""
    _counter[0] += 1
    p = {M.K_OP: op}
    if args is not None:
        p[M.K_ARGS] = args
    m.command(M.COMMAND, _counter[0], p)
    r = [x for x in sent if x[M.K_KIND] == M.RESPONSE and x[M.K_ANSWERED] == _counter[0]]
    eq(len(r), 1, "one response")
    return r[0][M.K_RESULT], r[0].get(M.K_REASON)


def _events(sent, code):
    return [(p[M.K_EVENT_TIME], p[M.K_EVENT_VALUE]) for p in sent
            if p[M.K_KIND] == M.EVENT and p[M.K_EVENT_CODE] == code]


def _flash(d, out=None):
    """Every file under the flash directory and its bytes."""
    out = {} if out is None else out
    for name in os.listdir(d):
        p = d + "/" + name
        if os.stat(p)[0] & 0x4000:  # a directory (the profile and event rings)
            _flash(p, out)
        else:
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def _imported(m):
    return m.registers.total_uwh("import")


# -- IC70: the table --------------------------------------------------------------------------------------------
def _ic70(d, state, mode):
    """A Disconnect whose store says (state, mode), on a relay pin of its own; its events."""
    from meter.store import Store

    Store(d, "disconnect", max_payload=8).save(bytes((state, mode)))
    got = []
    pin = SimPin()
    dc = Disconnect(d, Output(pin, False), lambda code, value: got.append((code, value)))
    return dc, pin, got


def test_every_transition_in_every_control_mode_follows_the_ic70_tables():
    d = fresh_dir("ic70")
    moved = refused = 0
    for mode in range(7):
        for state in range(3):
            for letter in "abcdefgh":
                dc, pin, got = _ic70(d, state, mode)
                what = "mode %d, state %d, transition %s" % (mode, state, letter)
                eq(pin.level, 0 if state == 1 else 1, what + ": the relay driven at boot (active low)")
                before = _flash(d)
                frm, to = ISSUE_MOVES[letter]
                why = dc.move(letter)
                if letter in ISSUE_MODES[mode].split() and state == frm:
                    eq(why, None, what + ": allowed")
                    eq((dc.state, dc.mode), (to, mode), what + ": the new state")
                    eq(pin.level, 0 if to == 1 else 1, what + ": the relay follows (closed only when connected)")
                    eq(got, [(events.DISCONNECT_CONTROL, "%s %d>%d" % (letter, state, to))], what + ": its event")
                    eq(Disconnect(d, Output(SimPin()), lambda c, v: None).state, to, what + ": on flash")
                    moved += 1
                else:
                    eq(type(why), str, what + ": refused with a reason")
                    eq((dc.state, dc.mode, got, _flash(d)), (state, mode, [], before), what + ": nothing changed")
                    refused += 1
    eq(moved + refused, 8 * 3 * 7, "every case")
    eq(moved, sum(len(ISSUE_MODES[k].split()) for k in ISSUE_MODES), "one origin per letter")


def test_the_triggers_pick_their_transition_by_state_and_mode():
    d = fresh_dir("ic70-triggers")
    for mode in range(7):
        allowed = ISSUE_MODES[mode].split()
        for state in range(3):
            cases = (("remote_disconnect", "c" if state == 2 else "b"),
                     ("remote_reconnect", "a" if "a" in allowed else "d"),
                     ("manual", "e" if state == 2 else "f"), ("local_disconnect", "g"), ("local_reconnect", "h"))
            for name, letter in cases:
                dc, _pin, got = _ic70(d, state, mode)
                why = getattr(dc, name)()
                frm, to = ISSUE_MOVES[letter]
                ok = letter in allowed and state == frm
                eq(why is None, ok, "mode %d state %d %s -> %s" % (mode, state, name, letter))
                eq(dc.state, to if ok else state, "mode %d state %d %s: state" % (mode, state, name))
                if not ok and letter not in allowed:
                    eq(why, "transition %s not allowed in control mode %d" % (letter, mode), "the reason")


def test_the_states_are_the_wire_schemas():
    from meter import disconnect

    eq((disconnect.CONTROL_DISCONNECTED, disconnect.CONTROL_CONNECTED, disconnect.CONTROL_READY),
       (M.CONTROL_DISCONNECTED, M.CONTROL_CONNECTED, M.CONTROL_READY), "meter.messages' CONTROL_*")


def test_control_mode_is_checked_and_stored():
    d = fresh_dir("ic70-mode")
    dc, _pin, _got = _ic70(d, 1, 0)
    before = _flash(d)
    for bad in (7, -1, True, "1"):
        eq(type(dc.set_mode(bad)), str, "mode %r refused" % (bad,))
    eq(_flash(d), before, "nothing stored")
    eq(dc.set_mode(5), None, "mode 5")
    eq(dc.local_disconnect(), None, "g in mode 5")
    eq(type(dc.set_mode(0)), str, "mode 0 (always connected) is refused while not connected")
    eq(Disconnect(d, Output(SimPin()), lambda c, v: None).mode, 5, "the mode survives a restart")


# -- the relay, the registers and the button ----------------------------------------------------------------------
def test_a_disconnect_cuts_the_load_and_a_reconnect_waits_for_the_button():
    hw, m, sent = _meter()
    m.start()
    eq(_cmd(m, sent, M.OP_DISCONNECT), (M.RESULT_REJECTED, "rejected: transition b not allowed in control mode 0"),
       "control mode 0: always connected")
    eq(m.controls().set_mode(1), None, "mode 1")
    _run_s(hw, m, 120)
    e0 = _imported(m)
    gt(e0, 0, "energy flows")
    eq(_cmd(m, sent, M.OP_DISCONNECT), (M.RESULT_OK, None), "disconnect")
    eq(hw.relay.pin.level, 0, "the relay pin at its inactive level")
    _run_s(hw, m, 1200)
    e1 = _imported(m)
    le(e1 - e0, 18 * 1000000 * 70 // 1000 // 3600, "at most the cycle in progress (70 ms at 18 W) after it")
    readings = [p for p in sent if p[M.K_KIND] == M.READING][-3:]
    for r in readings:
        eq(r[M.K_STATUS] & M.ST_RELAY_OPEN, M.ST_RELAY_OPEN, "readings say the relay is open")
        eq(r[M.K_CONTROL], [0, 1, 0], "K_CONTROL: disconnected, mode 1")
        eq(r[M.K_INSTANT][2], 0, "no current")
    rows = [p for p in sent if p[M.K_KIND] == M.INTERVALS]
    eq(rows[-1][M.K_ROWS][0][3] & M.ROW_RELAY_OPEN, M.ROW_RELAY_OPEN, "the profile row says so too")
    eq(_cmd(m, sent, M.OP_RECONNECT), (M.RESULT_OK, None), "reconnect: mode 1 -> ready_for_reconnection (d)")
    _run_s(hw, m, 300)
    eq(_imported(m), e1, "nothing flows until the button")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq(r[M.K_STATUS] & (M.ST_RELAY_OPEN | M.ST_RECONNECT_READY), M.ST_RELAY_OPEN | M.ST_RECONNECT_READY, "ready")
    hw.button.pin.press(bounce=4)  # one press, its contact bouncing 4 times each way
    _run_s(hw, m, 120)
    gt(_imported(m), e1, "the button closed the relay")
    eq([v for _t, v in _events(sent, events.DISCONNECT_CONTROL)], ["b 1>0", "d 0>2", "e 2>1"], "one event each")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq(r[M.K_STATUS] & (M.ST_RELAY_OPEN | M.ST_RECONNECT_READY), 0, "connected")
    eq(r.get(M.K_CONTROL), [1, 1, 0], "K_CONTROL while mode 1")


def test_the_button_alone_disconnects_in_a_mode_with_f_and_the_board_may_drive_its_relay_low():
    board = _board(relay={"pin": 0, "active_high": False})
    hw, m, sent = _meter(board=board)
    eq(hw.relay.pin.level, 0, "connected at boot: an active-low relay's pin is low")
    m.start()
    m.controls().set_mode(2)
    hw.button.pin.press()
    _run_s(hw, m, 30)
    eq((m.controls().disconnect.state, hw.relay.pin.level), (2, 1), "f: ready_for_reconnection, the pin high")
    e = _imported(m)
    _run_s(hw, m, 60)
    le(_imported(m) - e, 1000, "no energy while open")
    hw.button.pin.press()
    _run_s(hw, m, 30)
    eq((m.controls().disconnect.state, hw.relay.pin.level), (1, 0), "e: connected again")


def test_a_power_cut_while_disconnected_leaves_the_meter_disconnected():
    flash = fresh_dir("control-cut")
    hw, m, sent = _meter(flash)
    m.start()
    m.controls().set_mode(3)
    _run_s(hw, m, 60)
    eq(_cmd(m, sent, M.OP_DISCONNECT), (M.RESULT_OK, None), "disconnected for non-payment")
    _run_s(hw, m, 30)
    # the power goes: the process state is gone, flash stays; the meter boots from it
    hw2, m2, _sent2 = _meter(flash)
    eq(m2.control is None, False, "the stored state loads the disconnect control at boot")
    eq((m2.controls().disconnect.state, m2.controls().disconnect.mode), (0, 3), "state and mode restored")
    eq((hw2.relay.pin.level, hw2.relay.pin.changes), (0, 1), "the relay driven open at boot, never closed first")
    eq(hw2.sim.chip.load_connected, False, "before metering starts")
    e = _imported(m2)
    m2.start()
    _run_s(hw2, m2, 600)
    eq(_imported(m2), e, "the registers stay")
    hw2.button.pin.press()
    _run_s(hw2, m2, 60)
    eq(_imported(m2), e, "the button cannot reconnect a disconnected meter")


def test_a_torn_disconnect_store_falls_back_to_the_state_before():
    flash = fresh_dir("control-torn")
    hw, m, sent = _meter(flash)
    m.controls().set_mode(1)
    eq(_cmd(m, sent, M.OP_DISCONNECT), (M.RESULT_OK, None), "disconnected")
    eq(_cmd(m, sent, M.OP_RECONNECT), (M.RESULT_OK, None), "ready")
    newest = m.controls().disconnect.store.paths[m.controls().disconnect.store._slot]
    with open(newest, "r+b") as f:
        f.seek(12)
        f.write(b"\xff")  # the power failed while the slot was written
    _hw2, m2, _ = _meter(flash)
    eq(m2.controls().disconnect.state, 0, "the previous state: disconnected")
    ge(m2.event_counts.get(events.STORE_CORRUPT, 0), 1, "the damage reported")


# -- the limiter -------------------------------------------------------------------------------------------------
def _limited(mode, args, amps=28.0, **kw):
    hw, m, sent = _meter(board=_board(big=True), volts=25.0, amps=amps, **kw)  # 25 V x 28 A = 700 W
    m.start()
    eq(m.controls().set_mode(mode), None, "mode")
    eq(_cmd(m, sent, M.OP_LIMITER, args), (M.RESULT_OK, None), "limiter set")
    return hw, m, sent


def test_a_limiter_at_500_w_trips_a_700_w_load_and_reconnects_after_min_under():
    hw, m, sent = _limited(5, {M.A_THRESHOLD_NORMAL: 500, M.A_MIN_OVER_S: 30, M.A_MIN_UNDER_S: 60,
                               M.A_AUTO_RECONNECT: True})
    t0 = hw.time()
    eq([v for _t, v in _events(sent, events.LIMITER_SET)], [500], "LIMITER_SET with the threshold")
    _run_s(hw, m, 45)
    trips = _events(sent, events.LIMITER_TRIP)
    eq(len(trips), 1, "one trip")
    ge(trips[0][0] - t0, 30, "not before min_over")
    le(trips[0][0] - t0, 30 + 10, "within two batches after it")
    near(trips[0][1], 700, 5, "the power seen, W")
    eq([v for _t, v in _events(sent, events.DISCONNECT_CONTROL)], ["g 1>2"], "a local disconnect")
    _load(hw, 16.0)  # the customer switches something off: 400 W
    e = _imported(m)
    _run_s(hw, m, 50)
    eq(_imported(m), e, "open: nothing flows")
    _run_s(hw, m, 20)
    restores = _events(sent, events.LIMITER_RESTORE)
    eq(len(restores), 1, "restored")
    ge(restores[0][0] - trips[0][0], 60, "after min_under")
    eq(restores[0][1], 0, "the power seen with the relay open")
    eq([v for _t, v in _events(sent, events.DISCONNECT_CONTROL)], ["g 1>2", "h 2>1"], "auto reconnect (h)")
    _run_s(hw, m, 300)
    gt(_imported(m), e, "400 W flows")
    eq(len(_events(sent, events.LIMITER_TRIP)), 1, "and stays under the limit")
    eq([p for p in sent if p[M.K_KIND] == M.READING][-1][M.K_CONTROL], [1, 5, 500], "the limit in force")


def test_without_auto_reconnect_the_customer_reconnects_with_the_button():
    hw, m, sent = _limited(1, {M.A_THRESHOLD_NORMAL: 500, M.A_MIN_OVER_S: 10, M.A_MIN_UNDER_S: 20})
    _run_s(hw, m, 60)
    eq(len(_events(sent, events.LIMITER_TRIP)), 1, "tripped")
    eq(len(_events(sent, events.LIMITER_RESTORE)), 1, "under the limit (the relay is open)")
    eq(m.controls().disconnect.state, 2, "but still ready_for_reconnection")
    _load(hw, 12.0)  # 300 W
    hw.button.pin.press()
    e = _imported(m)
    _run_s(hw, m, 120)
    gt(_imported(m), e, "the button reconnected")
    eq(len(_events(sent, events.LIMITER_TRIP)), 1, "300 W: no second trip")


def test_an_emergency_profile_applies_only_inside_its_window_and_for_its_group():
    window = (START + 300, 600)
    args = {M.A_THRESHOLD_NORMAL: 1000, M.A_THRESHOLD_EMERGENCY: 500, M.A_MIN_OVER_S: 10, M.A_MIN_UNDER_S: 10,
            M.A_EMERGENCY_ID: 4, M.A_EMERGENCY_START: window[0], M.A_EMERGENCY_DURATION_S: window[1],
            M.A_EMERGENCY_GROUPS: [7, 9], M.A_AUTO_RECONNECT: True}
    for groups, trips in (([3, 9], True), ([3], False), ([], False)):
        hw, m, sent = _limited(5, args)
        if groups:
            eq(m.controls().set_groups(groups), None, "groups")
        _run_s(hw, m, 1200)
        got = [t for t, _v in _events(sent, events.LIMITER_TRIP)]
        limits = [(p[M.K_TIME], p[M.K_CONTROL][2]) for p in sent if p[M.K_KIND] == M.READING]
        if trips:
            gt(len(got), 0, "groups %r: trips" % groups)
            for t in got:
                ge(t, window[0] + 10, "groups %r: inside the window, after min_over" % groups)
                lt(t, window[0] + window[1], "groups %r: before its end" % groups)
            eq([lim for t, lim in limits if window[0] + 10 < t < window[0] + window[1]][:1], [500], "500 W in force")
        else:
            eq(got, [], "groups %r: the emergency threshold is not this meter's" % (groups,))
        eq([lim for t, lim in limits if t > window[0] + window[1] + 10][-1:], [1000], "after the window: normal")
        eq(m.controls().disconnect.state, 1, "connected at the end")


def test_limiter_parameters_and_groups_survive_a_restart():
    flash = fresh_dir("limiter-keep")
    hw, m, sent = _meter(flash, board=_board(big=True), volts=25.0, amps=28.0)
    m.controls().set_mode(5)
    eq(m.controls().set_groups([5]), None, "groups")
    args = {M.A_THRESHOLD_NORMAL: 600, M.A_MIN_OVER_S: 20, M.A_EMERGENCY_GROUPS: [5], M.A_THRESHOLD_EMERGENCY: 200,
            M.A_EMERGENCY_START: START, M.A_EMERGENCY_DURATION_S: 3600, M.A_EMERGENCY_ID: 1}
    eq(_cmd(m, sent, M.OP_LIMITER, args), (M.RESULT_OK, None), "set")
    eq(_cmd(m, sent, M.OP_LIMITER, {M.A_MIN_UNDER_S: 40}), (M.RESULT_OK, None), "one more, the rest kept")
    _hw2, m2, _ = _meter(flash, board=_board(big=True))
    lim = m2.control.limiter
    eq((lim.normal, lim.emergency, lim.min_over, lim.min_under, lim.em_groups, lim.groups, lim.auto),
       (600, 200, 20, 40, [5], [5], False), "restored")
    eq(lim.threshold(START + 10), 200, "the emergency threshold in its window")


def test_a_meter_never_configured_loads_no_limiter_or_demand_response():
    hw, m, sent = _meter()
    m.start()
    _run_s(hw, m, 60)
    eq(m.control, None, "meter.control not loaded")
    eq((hw.relay.pin.level, hw.load_control.pin.level), (1, 1), "the relay and the load-control output closed")
    hw.button.pin.press()
    _run_s(hw, m, 10)
    eq(m.control is None, False, "the button loaded it")
    eq((m.control.disconnect.state, hw.relay.pin.level, _events(sent, events.DISCONNECT_CONTROL)), (1, 1, []),
       "control mode 0: the press changed nothing")
    eq((m.controls().limiter, m.controls().dr), (None, None), "made on demand: no limiter or demand response")
    eq([p for p in sent if p[M.K_KIND] == M.READING][-1].get(M.K_CONTROL), None, "K_CONTROL left out: [1, 0, 0]")


# -- demand response -------------------------------------------------------------------------------------------
def test_a_demand_response_limit_holds_only_inside_its_window():
    hw, m, sent = _meter(board=_board(big=True), volts=25.0, amps=28.0)
    m.start()
    m.controls().set_mode(6)
    args = {M.A_DR_ID: 41, M.A_START: START + 120, M.A_DURATION_S: 300, M.A_LIMIT_W: 500}
    eq(_cmd(m, sent, M.OP_DR_EVENT, args), (M.RESULT_OK, None), "accepted")
    eq(_cmd(m, sent, M.OP_LIMITER, {M.A_MIN_OVER_S: 10, M.A_MIN_UNDER_S: 1000, M.A_AUTO_RECONNECT: True}),
       (M.RESULT_OK, None), "the limiter's timing (no threshold of its own)")
    _run_s(hw, m, 100)
    eq(_events(sent, events.LIMITER_TRIP), [], "before the event: no limit")
    _run_s(hw, m, 90)
    eq([v for _t, v in _events(sent, events.DR_ACCEPTED) + _events(sent, events.DR_START)], [41, 41], "started")
    trips = _events(sent, events.LIMITER_TRIP)
    eq(len(trips), 1, "700 W over the event's 500 W")
    ge(trips[0][0], START + 130, "after the start and min_over")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq(r[M.K_STATUS] & M.ST_DR_ACTIVE, M.ST_DR_ACTIVE, "ST_DR_ACTIVE")
    eq(r[M.K_CONTROL], [2, 6, 500], "the event's limit in force")
    _run_s(hw, m, 300)
    eq([t for t, _v in _events(sent, events.DR_END)][:1], [t for t, _v in _events(sent, events.DR_END)], "one end")
    ge(_events(sent, events.DR_END)[0][0], START + 420, "at its end")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq((r[M.K_STATUS] & M.ST_DR_ACTIVE, r[M.K_CONTROL][2]), (0, 0), "lifted")


def test_a_shed_opens_the_load_control_output_and_the_button_opts_out():
    hw, m, sent = _meter()
    m.start()
    lc = hw.load_control.pin
    eq(lc.level, 1, "closed at boot")
    eq(_cmd(m, sent, M.OP_DR_EVENT, {M.A_DR_ID: 7, M.A_START: START + 60, M.A_DURATION_S: 600, M.A_SHED: True}),
       (M.RESULT_OK, None), "accepted")
    _run_s(hw, m, 130)
    eq(lc.level, 0, "shed: the load-control output open")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq(r[M.K_STATUS] & (M.ST_LOAD_SHED | M.ST_DR_ACTIVE), M.ST_LOAD_SHED | M.ST_DR_ACTIVE, "status")
    eq(r[M.K_STATUS] & M.ST_RELAY_OPEN, 0, "the supply relay stays closed")
    hw.button.pin.press()
    _run_s(hw, m, 70)
    eq(lc.level, 1, "the customer's override closed it")
    eq([v for _t, v in _events(sent, events.DR_OPT_OUT)], [7], "reported as an opt-out")
    eq(_events(sent, events.DISCONNECT_CONTROL), [], "the press did nothing else")
    r = [p for p in sent if p[M.K_KIND] == M.READING][-1]
    eq(r[M.K_STATUS] & (M.ST_LOAD_SHED | M.ST_DR_ACTIVE), 0, "no longer shed nor in force for this meter")
    _run_s(hw, m, 600)
    eq([v for _t, v in _events(sent, events.DR_END)], [7], "the event still ends")


def test_a_shed_in_force_survives_a_restart_and_ends_once():
    flash = fresh_dir("dr-cut")
    hw, m, sent = _meter(flash)
    m.start()
    _cmd(m, sent, M.OP_DR_EVENT, {M.A_DR_ID: 3, M.A_START: START + 30, M.A_DURATION_S: 300, M.A_SHED: True})
    _run_s(hw, m, 60)
    hw2, m2, sent2 = _meter(flash, start_unix_s=START + 120)
    eq(hw2.load_control.pin.level, 0, "open again at boot")
    m2.start()
    _run_s(hw2, m2, 300)
    eq((_events(sent2, events.DR_START), [v for _t, v in _events(sent2, events.DR_END)]), ([], [3]),
       "no second start; one end")
    eq(hw2.load_control.pin.level, 1, "closed after it")


@not_mp32(SIM_TRUTH)
def test_a_shed_cuts_the_metered_import_by_the_controlled_share_for_the_event_only():
    hw, m, sent = _meter(controlled_share=0.25)
    m.start()
    _cmd(m, sent, M.OP_DR_EVENT, {M.A_DR_ID: 9, M.A_START: START + 120, M.A_DURATION_S: 300, M.A_SHED: True})
    clock, chip = hw.sim.clock, hw.sim.chip
    t0 = clock.now_us
    rates = []
    for a, b in ((20, 110), (140, 410), (440, 530)):  # before, during and after the event (batches: 4.4 s)
        m.run_until(lambda: clock.now_us >= t0 + a * 1000000)
        i0, c0 = _imported(m), clock.now_us
        m.run_until(lambda: clock.now_us >= t0 + b * 1000000)
        rates.append((_imported(m) - i0) / (clock.now_us - c0))
        chip.sync()
        le(abs(_imported(m) - chip.exact_import_uwh), chip.exact_import_uwh * 1e-4, "metered as the truth says")
    near(rates[1] / rates[0], 0.75, 0.02, "the import rate drops by the share during the shed")
    near(rates[2] / rates[0], 1.0, 0.02, "and comes back after it")
    eq([v for _t, v in _events(sent, events.DR_END)], [9], "the event ended")


def test_the_simulated_load_control_output_takes_its_share_of_the_load_only_when_open():
    runs = []
    for board, sim in ((_board(load_control=None), {}), (_board(), {}), (_board(), {"controlled_share": 0.4})):
        hw, m, sent = _meter(board=board, scenario="random-walk", seed=3, **sim)
        m.start()
        if hw.load_control is not None:
            hw.load_control.value(1)  # closed, as meter.control drives it when made
        _run_s(hw, m, 120)
        runs.append((_imported(m), m.registers.total_uwh("export"), hw.sim.chip.exact_import_uwh,
                     hw.sim.chip.exact_export_uwh))
    gt(runs[0][0], 0, "a load metered")
    eq(runs[1], runs[0], "closed, the contactor changes nothing (default share)")
    eq(runs[2], runs[0], "closed, the contactor changes nothing (a share given)")
    for share, want in ((None, 1 - DEFAULT_CONTROLLED_SHARE), (0, 1.0), (1, 0.0)):
        hw, m, sent = _meter(**({} if share is None else {"controlled_share": share}))
        pin = hw.load_control.pin
        eq((pin.level, hw.sim.chip.load_share), (1, 1.0), "closed at boot: the whole load")
        hw.load_control.value(0)
        eq((pin.level, hw.sim.chip.load_share), (0, want), "open: what is left of the load (share %r)" % share)
    hw = open_sim(_board(), flash_dir=fresh_dir("lc-undriven"), overrides={"scenario": "constant"})
    eq((hw.load_control.pin.level, hw.sim.chip.load_share), (None, 1.0), "a pin never driven: load supplied")
    hw, m, sent = _meter(board=_board(load_control={"pin": 2, "active_high": False}))
    hw.load_control.value(0)
    eq((hw.load_control.pin.level, hw.sim.chip.load_share), (1, 1 - DEFAULT_CONTROLLED_SHARE), "active low: open")
    for share in (-0.1, 1.5, True, "0.4", None):
        try:
            _meter(controlled_share=share)
        except BoardError as e:
            contains("sim.controlled_share must be a share of the load from 0 to 1", str(e), repr(share))
        else:
            raise AssertionError("controlled_share %r accepted" % (share,))
    try:
        _meter(board=_board(load_control=None), controlled_share=0.5)
    except BoardError as e:
        contains("sim.controlled_share needs a 'load_control' section", str(e), "no load-control output")
    else:
        raise AssertionError("controlled_share accepted without a load-control output")


def test_bad_control_commands_are_refused_and_change_nothing_on_flash():
    hw, m, sent = _meter(board=_board(load_control=None))
    m.start()
    _run_s(hw, m, 70)
    m.controls().set_mode(1)
    now = hw.time()
    bad = [
        (M.OP_LIMITER, {}, M.RESULT_BAD_ARGS, "bad arguments: nothing to set"),
        (M.OP_LIMITER, {1: -5}, M.RESULT_BAD_ARGS, "bad arguments: 1 must be an unsigned integer (0..2^32-1)"),
        (M.OP_LIMITER, {1: 1 << 32}, M.RESULT_BAD_ARGS, "bad arguments: 1 must be an unsigned integer (0..2^32-1)"),
        (M.OP_LIMITER, {8: [70000]}, M.RESULT_BAD_ARGS, "bad arguments: 8 must be 1..16 group ids (0..65535)"),
        (M.OP_LIMITER, {8: []}, M.RESULT_BAD_ARGS, "bad arguments: 8 must be 1..16 group ids (0..65535)"),
        (M.OP_LIMITER, {9: 1}, M.RESULT_BAD_ARGS, "bad arguments: 9 must be true or false"),
        (M.OP_LIMITER, {1: 500, 10: 1}, M.RESULT_BAD_ARGS, "bad arguments: unknown key 10"),
        (M.OP_LIMITER, {2: 300}, M.RESULT_BAD_ARGS,
         "bad arguments: an emergency threshold needs the emergency profile's groups (8)"),
        (M.OP_LIMITER, {6: 0xFFFFFF00, 7: 3600}, M.RESULT_BAD_ARGS,
         "bad arguments: the emergency window ends after 2106"),
        (M.OP_DISCONNECT, {1: 1}, M.RESULT_BAD_ARGS, "bad arguments: unknown key 1"),
        (M.OP_RECONNECT, None, M.RESULT_REJECTED,
         "rejected: transition d starts from state 0 (disconnected); the meter is in state 1 (connected)"),
        (M.OP_DR_EVENT, {1: 1, 2: now}, M.RESULT_BAD_ARGS, "bad arguments: 3 missing"),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 0, 4: 500}, M.RESULT_BAD_ARGS, "bad arguments: duration 0"),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 60}, M.RESULT_BAD_ARGS, "bad arguments: neither limit_w nor shed"),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 60, 5: False}, M.RESULT_BAD_ARGS, "bad arguments: neither limit_w nor shed"),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 60, 4: 0}, M.RESULT_BAD_ARGS,
         "bad arguments: limit_w 0 (shed opens the load-control output)"),
        (M.OP_DR_EVENT, {1: 1, 2: now - 120, 3: 60, 4: 500}, M.RESULT_REJECTED,
         "rejected: the event ended already (at %d)" % (now - 60)),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 60, 5: True}, M.RESULT_REJECTED,
         "rejected: this meter has no load-control output to shed"),
        (M.OP_DR_EVENT, {1: 1, 2: now, 3: 60, 4: "500"}, M.RESULT_BAD_ARGS,
         "bad arguments: 4 must be an unsigned integer (0..2^32-1)"),
    ]
    d = hw.flash_dir
    before = _flash(d)
    for op, args, result, reason in bad:
        eq(_cmd(m, sent, op, args), (result, reason), "op %d %r" % (op, args))
        eq(_flash(d), before, "op %d %r: flash unchanged" % (op, args))
    eq((m.controls().disconnect.state, m.controls().disconnect.mode), (1, 1), "IC70 unchanged")
    lim = m.controls().limiter
    eq(lim is None or (lim.normal, lim.emergency, lim.em_groups) == (0, 0, []), True, "limiter unchanged")
    eq(m.controls().dr is None or m.controls().dr.current is None, True, "no event")


# -- the board: relay level, button, load-control output ------------------------------------------------------
def _esp32(**sections):
    with open(BOARD.replace("unix-sim", "esp32-devkitc")) as f:
        b = json.loads(f.read())
    b.update(sections)
    return b


def _problem(b):
    from meter.board import BoardError

    try:
        validate_board(b)
    except BoardError as e:
        return str(e)
    raise AssertionError("accepted: %r" % (b,))


def test_the_board_profile_names_the_button_and_the_load_control_pins():
    from meter.pins import board_pins

    b = validate_board(_esp32(button={"pin": 34, "active_low": True}, load_control={"pin": 27}))
    eq([p for p in board_pins(b) if p[0] in ("button.pin", "load_control.pin")],
       [("load_control.pin", 27, "out"), ("button.pin", 34, "in")], "a button may sit on an input-only pin")
    for sections, part in (
            ({"load_control": {"pin": 35}}, "load_control.pin = 35: GPIO35 is input-only on the ESP32"),
            ({"load_control": {"pin": 26}}, "GPIO26 is used twice: relay.pin and load_control.pin"),
            ({"button": {"pin": 9}}, "button.pin = 9: GPIO9 is wired to the module's SPI flash"),
            ({"button": {"pin": 25, "active_low": 1}}, "button.active_low must be true or false"),
            ({"button": {"pin": 25, "pull": "up"}}, "button: unknown key 'pull'"),
            ({"button": {"active_low": True}}, "button.pin must be an integer 0..48, not None"),
            ({"load_control": 27}, "load_control must be an object"),
            ({"relay": {"pin": 26, "active_high": "no"}}, "relay.active_high must be true or false")):
        contains(part, _problem(_esp32(**sections)), "%r" % (sections,))


class _Pin:
    """A machine.Pin stand-in: what was driven, and an interrupt handler run by edge()."""

    OUT = 3
    IRQ_FALLING = 1
    IRQ_RISING = 2

    def __init__(self, level=1):
        self.level = level
        self.driven = []
        self.handler = None
        self.trigger = None

    def init(self, mode, value=0):
        self.driven.append((mode, value))

    def value(self):
        return self.level

    def irq(self, handler=None, trigger=0):
        self.handler, self.trigger = handler, trigger

    def edge(self, level):
        self.level = level
        self.handler(self)


def test_an_output_is_driven_at_the_active_level_and_only_when_told():
    from meter.hal import Output

    for high, closed, opened in ((True, 1, 0), (False, 0, 1)):
        p = _Pin()
        o = Output(p, high)
        eq(p.driven, [], "left alone until the first value()")
        o.value(1)
        o.value(0)
        eq(p.driven, [(p.OUT, closed), (p.OUT, opened)], "active_high %r" % high)
        eq(o.value(), 0, "open")


def test_a_bouncing_button_makes_one_press_per_press():
    from meter.hal import Button

    t = [1000]
    for low in (True, False):
        rest = 1 if low else 0
        p = _Pin(rest)
        b = Button(p, low, lambda: t[0])
        eq(p.trigger, p.IRQ_FALLING | p.IRQ_RISING, "both edges")
        presses = 0
        for _ in range(3):
            for i in range(7):  # press: the contact bounces 3 times, 1 ms apart
                p.edge(1 - rest if i % 2 == 0 else rest)
                t[0] += 1
            t[0] += 200  # held
            for i in range(7):  # release: bounces too
                p.edge(rest if i % 2 == 0 else 1 - rest)
                t[0] += 1
            presses += b.pressed()
            eq(b.pressed(), False, "taken once")
            t[0] += 500
        eq(presses, 3, "active_low %r: three presses" % low)
        t[0] = (1 << 30) - 10  # days later, just before the millisecond counter wraps (2^30 on an ESP32)
        p.edge(1 - rest)
        p.edge(rest)
        t[0] = 5  # bouncing on across the wrap
        p.edge(1 - rest)
        eq(b.pressed(), True, "a press after a long rest")
        eq(b.pressed(), False, "its bounce across the wrap is no second one")


# -- through the link: signed, answered, never twice ------------------------------------------------------------
def test_a_signed_disconnect_through_the_link_is_answered_and_a_replay_does_nothing():
    from test_commands import _answer, _command, _exchange, _linked

    hw, m, he, up, down = _linked()
    eq(m.controls().set_mode(4), None, "mode 4: b c g a e")
    p = _command(he, M.OP_DISCONNECT)
    sent = _exchange(m, he, up, down, he.sign(p))
    eq(_answer(sent, p[M.K_COUNTER]), (M.RESULT_OK, None), "disconnected")
    eq([v for _t, v in _events(sent, events.DISCONNECT_CONTROL)], ["b 1>0"], "event 20 went with it")
    eq(hw.sim.chip.load_connected, False, "the load is cut")
    again = _exchange(m, he, up, down, he.sign(p))
    eq([x for x in again if x[M.K_KIND] == M.RESPONSE], [], "a replay is not answered")
    q = _command(he, M.OP_RECONNECT)
    sent = _exchange(m, he, up, down, he.sign(q))
    eq(_answer(sent, q[M.K_COUNTER]), (M.RESULT_OK, None), "reconnected: a (mode 4)")
    eq((m.controls().disconnect.state, hw.sim.chip.load_connected), (1, True), "connected")
    eq(m.event_counts.get(events.DISCONNECT_CONTROL), 2, "two transitions, the replay none")
