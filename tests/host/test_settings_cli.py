"""`meterkit config`, `meterkit reboot`, `meterkit keys rotate|status` on a real SQLite file: what they queue, what
they refuse (the values a meter cannot honour: meter.board's table, the one the meter checks with), the
rotation's new key next to the current one, and which key each meter holds."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meter import messages as M
from meter.board import SETTING_VALUES
from meterkit import cli
from meterkit import wire as P
from meterkit.headend import commands, keyring
from meterkit.store import open_store
from meterkit.wire.keys import key_id, load_private, new_key

NOW = 1_790_000_000


@pytest.fixture
def db(store_db, monkeypatch):
    """A database with two registered meters 'house' and 'shed'; the CLI's clock at NOW."""
    path = store_db
    devs = []
    with open_store(path) as s:
        for name in ("house", "shed"):
            point = P.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
            s.register_meter(P.key_id(point), point, name)
            devs.append(P.key_id(point))
    monkeypatch.setattr(commands, "clock", lambda: float(NOW))
    monkeypatch.delenv("METERKIT_DB", raising=False)
    return path, devs


def _queued(path):
    with open_store(path, create=False, readonly=True) as s:
        return [(q.device_id, q.op, q.args) for q in s.queued_commands()]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_config_queues_exactly_the_settings_given(db, capsys):
    path, (house, _shed) = db
    code, out, err = run(capsys, "config", "house", "--db", path, "--reading-s", 120, "--capture-period", 300,
                         "--over-voltage-mv", 0, "--groups", "1,7")
    assert code == 0, err
    assert _queued(path) == [(house, M.OP_CONFIG, {M.A_CAPTURE_PERIOD_S: 300, M.A_READING_S: 120,
                                                   M.A_OVER_VOLTAGE_MV: 0, M.A_GROUPS: [1, 7]})]
    assert "config capture_period_s=300, reading_s=120, over_voltage_mv=0, groups=[1, 7]" in out


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--demand-period", 600, "demand_period_s must be one of 300, 900, 1800, 3600, not 600"),
    ("--capture-period", 7, "capture_period_s must be one of 60, 300, 600, 900, 1800, 3600, not 7"),
    ("--reading-s", 9, "reading_s must be an integer 10..86400, not 9"),
    ("--over-current-ma", 100001, "over_current_ma must be an integer 1..100000, not 100001"),
])
def test_config_refuses_what_a_meter_cannot_honour_and_queues_nothing(db, capsys, option, value, why):
    path, _devs = db
    code, _out, err = run(capsys, "config", "house", "--db", path, "--reading-s", 60, option, value)
    assert code == 1 and why in err, err
    assert _queued(path) == []


def test_config_with_nothing_to_set_and_reboot(db, capsys):
    path, (_house, shed) = db
    code, _out, err = run(capsys, "config", "house", "--db", path)
    assert code == 1 and "nothing to set" in err
    code, out, err = run(capsys, "reboot", "shed", "--db", path)
    assert code == 0, err
    assert _queued(path) == [(shed, M.OP_REBOOT, None)] and "reboot (answers, then restarts)" in out


def test_the_settable_values_are_those_the_demand_registers_take():
    from meter.demand import PERIODS

    assert SETTING_VALUES["demand_period_s"] == PERIODS
    for p in SETTING_VALUES["capture_period_s"]:
        assert 3600 % p == 0  # every row ends on the clock; the top of the hour ends both periods


def test_keys_rotate_makes_a_key_beside_the_current_and_queues_it_for_every_meter(db, capsys, tmp_path):
    path, devs = db
    cur_path, _pub, cur_kid = new_key(tmp_path / "keys", "headend")
    code, out, err = run(capsys, "keys", "rotate", "--db", path, "--key", cur_path, "--name", "next")
    assert code == 0, err
    new_path = tmp_path / "keys" / "next.key.pem"
    assert oct(os.stat(new_path).st_mode & 0o777) == "0o600"
    new_point = P.public_bytes(load_private(new_path).public_key())
    assert _queued(path) == [(d, M.OP_KEY_ROTATE, {M.A_KEY: new_point.hex()}) for d in devs]
    with open_store(path, create=False, readonly=True) as s:
        assert {d: kid for d, (kid, _t) in s.meter_keys().items()} == {d: cur_kid for d in devs}
        rows = keyring.status(s)
    assert [(r["meter"], r["kid"], r["rotating_to"]) for r in rows] == [
        ("house", cur_kid.hex(), key_id(new_point).hex()), ("shed", cur_kid.hex(), key_id(new_point).hex())]
    code, out, err = run(capsys, "keys", "status", "--db", path)
    assert code == 0 and out.count(f"rotating to {key_id(new_point).hex()}") == 2, out + err
    # the same name again: refused, nothing more queued
    code, _out, err = run(capsys, "keys", "rotate", "--db", path, "--key", cur_path, "--name", "next")
    assert code == 1 and "already exists" in err
    assert len(_queued(path)) == 2


def test_the_key_ring_signs_for_each_meter_with_the_key_it_holds(db, tmp_path):
    path, (house, shed) = db
    old = P.HeadEnd(ec.generate_private_key(ec.SECP256R1()))
    kdir = tmp_path / "ring"
    new_path, _pub, new_kid = new_key(kdir, "new")
    with open_store(path) as s:
        s.set_meter_key(shed, new_kid, NOW)
        s.commit()
        ring = keyring.KeyRing([old], s, key_dir=kdir)
    assert ring.held(house) == old.key_id and ring.held(shed) == new_kid
    # the new key was not given: found beside the first (as `keys rotate` writes it)
    for dev, kid in ((house, old.key_id), (shed, new_kid)):
        cose = ring.sign_ack(dev, 1, 5, NOW, 60)
        assert P.verify_host_message(cose, ring.lookup, dev, NOW).counter == 1
        assert _kid_of(cose) == kid
    ring.moved(house, new_kid)
    assert _kid_of(ring.sign_command(house, 2, M.OP_REBOOT, None, NOW, 60)) == new_kid
    with pytest.raises(ValueError, match="was not given"):
        _unknown(old, shed)  # a meter on a key the concentrator has nowhere: no command is signed for it
    lost = keyring.KeyRing([old])
    lost.moved(shed, b"\x01" * 8)
    assert _kid_of(lost.sign_ack(shed, 1, 5, NOW, 60)) == old.key_id  # an ack all the same (the meter refuses it)


def _unknown(old, dev):
    ring = keyring.KeyRing([old])
    ring.moved(dev, b"\x01" * 8)
    ring.for_device(dev)


def _kid_of(cose: bytes) -> bytes:
    import cbor2

    return cbor2.loads(cose).value[1][4]
