# The whole meter (meter.app) on simulated hardware: bad things happen to the chip and the bus, and the
# sampling loop neither crashes nor loses its accuracy.
import json

from meter.app import EV_CHIP_RESET, EV_I2C_ERRORS, EV_SENSOR_FAULT, EV_SENSOR_OK, Meter
from meter.board import BoardError, validate_board
from mptest import SIM_TRUTH, eq, fresh_dir, ge, not_mp32, notnone
from sim.hardware import open_sim

BOARD = __file__.rsplit("/", 1)[0] + "/../../boards/unix-sim.json"


def _meter(**overrides):
    with open(BOARD) as f:
        board = json.loads(f.read())
    flash = fresh_dir("test-app")
    sim = {"scenario": "constant"}
    sim.update(overrides)
    hw = open_sim(validate_board(board), flash_dir=flash, overrides=sim)
    return hw, Meter(hw)


def _run_s(hw, m, seconds):
    end = hw.sim.clock.now_us + seconds * 1000000
    m.run_until(lambda: hw.sim.clock.now_us >= end)


def _error_ppm(hw, m):
    chip = hw.sim.chip
    chip.sync()
    exact = chip.exact_import_uwh
    got = m.registers.total_uwh("import")
    return abs(got - exact) * 1000000 // exact


@not_mp32(SIM_TRUTH)
def test_meters_accurately_and_checkpoints():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 1800)
    assert _error_ppm(hw, m) <= 1, _error_ppm(hw, m)
    ge(m.store.writes, 2, "checkpoints written (15-minute rule)")


def test_setting_the_clock_neither_brings_a_checkpoint_forward_nor_holds_one_back():
    # 18 W: 10 Wh take 33 minutes, so the 15-minute rule decides; it runs on the monotonic clock (uptime).
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 60)
    w = m.store.writes
    eq(w, 1, "the first batch checkpoints (nothing was stored before)")
    hw.sim.clock.start_unix_s += 3600  # the wall clock is set an hour forward
    _run_s(hw, m, 60)
    eq(m.store.writes, w, "an hour forward: no checkpoint")
    hw.sim.clock.start_unix_s -= 7200  # and then two hours back
    _run_s(hw, m, 60)
    eq(m.store.writes, w, "two hours back: none either")
    _run_s(hw, m, 840)
    eq(m.store.writes, w + 1, "15 minutes of uptime after the first one: the interval rule")


@not_mp32(SIM_TRUTH)
def test_chip_reset_is_detected_logged_and_metering_goes_on():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 300)
    hw.sim.chip.reset()  # a brown-out on a load transient: registers back to power-on defaults
    _run_s(hw, m, 300)
    eq(m.sensor.resets, 1, "resets")
    eq(m.event_counts.get(EV_CHIP_RESET), 1, "chip reset event")
    # the chip kept converting with its default (1.06 ms bus+shunt) settings until re-initialised: still metered
    assert _error_ppm(hw, m) < 100, _error_ppm(hw, m)


def test_i2c_error_storm_is_counted_and_survived():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 120)
    hw.i2c.fail_next(50)  # 50 failed transactions in a row
    _run_s(hw, m, 120)
    assert m.sensor.errors >= 50, m.sensor.errors
    ge(m.event_counts.get(EV_I2C_ERRORS, 0), 1, "storm event")
    before = m.registers.total_uwh()
    _run_s(hw, m, 120)
    assert m.registers.total_uwh() > before, "metering resumed"


def test_absent_chip_is_logged_once_and_retried_until_it_appears():
    hw, m = _meter(absent=True)
    m.start()
    _run_s(hw, m, 60)
    eq(m.event_counts.get(EV_SENSOR_FAULT), 1, "one fault event, not one per retry")
    eq(m.registers.total_uwh(), 0, "nothing metered without a chip")
    hw.i2c.add(0x40, hw.sim.chip)  # the chip is plugged in
    _run_s(hw, m, 120)
    eq(m.event_counts.get(EV_SENSOR_OK), 1, "sensor came up")
    assert m.registers.total_uwh() > 0, "metering started"


def test_registers_survive_a_restart():
    hw, m = _meter()
    m.start()
    _run_s(hw, m, 1200)
    m.flush_checkpoint()
    saved = m.registers.total_uwh()
    again = Meter(hw)  # same flash directory: a reboot
    eq(again.registers.total_uwh(), saved, "restored")


def _payloads(frames, pub):
    from meter import cbor, cose, frame

    out = []
    for fr in frames:
        _kid, payload = cose.verify1(frame.decode_frame(fr[1:-1]), lambda kid: pub)
        out.append(cbor.decode(payload))
    return out


def test_profile_rows_and_events_are_stored_before_they_are_sent():
    from meter import events, messages

    with open(BOARD) as f:
        board = validate_board(json.loads(f.read()))
    flash = fresh_dir("test-app-rings")
    hw = open_sim(board, flash_dir=flash, overrides={"scenario": "constant"})
    sent = []
    m = Meter(hw, sink=lambda seq, fr: sent.append(fr))
    m.start()
    _run_s(hw, m, 3600)
    msgs = _payloads(sent, m.identity.public_key)
    rows = [p[6][0] for p in msgs if p[1] == messages.INTERVALS]
    eq(len(rows), 4, "four 15-minute rows in an hour")
    eq([list(r) for r in m.profile.read()], rows, "every row sent is the row stored")
    evs = [(p[6], p[7]) for p in msgs if p[1] == messages.EVENT]
    logged = [(e[0], e[2]) for e in m.eventlog.read(limit=10)]
    eq([c for _s, c in logged], [events.SENSOR_OK, events.POWER_UP], "what this boot logged")
    # the sensor came up before the hello (logged, not sent); the power-up event went out with its log number
    eq(evs, [logged[1]], "event frames carry the event log's numbers")
    notnone(m.store.seq, "a checkpoint")
    ge(m.registers.total_uwh(), rows[-1][1] * 1000, "checkpoint >= last row")

    # two hours later (the power was off): the meter says how long it was gone, as far as it can know
    later = board["sim"]["start_unix_s"] + 3 * 3600
    hw2 = open_sim(board, flash_dir=flash, overrides={"scenario": "constant", "start_unix_s": later})
    m2 = Meter(hw2, sink=lambda seq, fr: sent.append(fr))
    m2.start()
    power_up = m2.eventlog.last()
    eq(power_up[2], events.POWER_UP, "power-up logged")
    eq(power_up[3], later - rows[-1][0], "outage = now - last stored row")
    eq(power_up[0], logged[-1][0] + 2, "numbering goes on across the reboot (sensor ok, then power up)")


def _alarm_meter(alarms):
    with open(BOARD) as f:
        board = json.loads(f.read())
    board["alarms"] = alarms
    hw = open_sim(validate_board(board), flash_dir=fresh_dir("test-app-alarm"),
                  overrides={"scenario": "constant"})  # 12 V, 1.5 A
    return hw, Meter(hw)


def test_over_current_and_over_voltage_alarms_raise_one_event_each():
    from meter import events

    hw, m = _alarm_meter({"over_current_ma": 1400, "over_voltage_mv": 11900})
    m.start()
    _run_s(hw, m, 120)
    eq(m.event_counts.get(events.OVER_CURRENT), 1, "1.5 A > 1.4 A: one event, not one per batch")
    eq(m.event_counts.get(events.OVER_VOLTAGE), 1, "12 V > 11.9 V: one event")
    hw, m = _alarm_meter({"over_current_ma": 1600, "over_voltage_mv": None})
    m.start()
    _run_s(hw, m, 120)
    eq(m.event_counts.get(events.OVER_CURRENT), None, "below the threshold: none")
    eq(m.event_counts.get(events.OVER_VOLTAGE), None, "no voltage threshold: none")
    for bad in ({"over_current_ma": 0}, {"over_voltage_mv": "high"}, {"under_voltage_mv": 5}, []):
        with open(BOARD) as f:
            board = json.loads(f.read())
        board["alarms"] = bad
        try:
            validate_board(board)
        except BoardError as e:
            assert "alarms" in str(e), str(e)
        else:
            raise AssertionError("accepted alarms %r" % (bad,))
