"""`meterkit meters add/list`, `meterkit status` and `meterkit export`, through an argparse tree built the way
meterkit.cli builds it (meterkit.cli.fleet.add_parser), on a database filled by a real concentrator run."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json

import pytest
from cryptography.hazmat.primitives import serialization

from meter import events
from meter import messages as M
from meterkit.cli import fleet as fleet_cli
from meterkit.headend import status as fleet_status
from meterkit.store import open_store
from meterkit.testing.rig import T0, LoopbackRig, SimMeter
from meterkit.timefmt import utc_text


def cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="meterkit")
    fleet_cli.add_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(list(argv))
    return a.func(a)


def pub_pem(m: SimMeter, path) -> str:
    path.write_bytes(m.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


@pytest.fixture
def fleet(tmp_path, store_db, capsys):
    """Three meters registered with `meters add`; two report through a concentrator, one never does; one of
    them goes offline (outage open) and one had a gap back-filled. On SQLite, then on PostgreSQL."""
    db = str(store_db)
    house, shed, spare = SimMeter(), SimMeter(), SimMeter()
    assert cli("meters", "add", "--db", db, "--key", pub_pem(house, tmp_path / "house.pem"), "--name", "house") == 0
    assert cli("meters", "add", "--db", db, "--key", pub_pem(shed, tmp_path / "shed.pem"), "--name", "shed",
               "--period", "900") == 0
    assert cli("meters", "add", "--db", db, "--key", pub_pem(spare, tmp_path / "spare.pem")) == 0
    out = capsys.readouterr().out
    assert f"meter {house.device_id.hex()} registered as 'house', reporting every 60 s" in out

    async def main():
        async with LoopbackRig(db, backfill_after=5) as rig:
            for m in (house, shed):
                m.time_fn = lambda: int(rig.clock())
            h = await rig.connect(house)
            hello = house.hello()
            f = [house.reading(import_wh=1_234_567 + k, export_wh=89) for k in range(3)]
            h.send(hello + f[0] + f[2])  # frame 2 lost on the way
            await h.wait_ack(1)
            rig.clock.advance(6)
            rig.conc.tick()
            await h.wait_for(lambda c: c.commands)
            h.send(f[1] + house.response(h.commands[0].counter, 0)
                   + house.intervals([[T0, 10, 0, 0], [T0 + 900, 20, 0, M.ROW_PARTIAL]])
                   + house.event(events.CHIP_RESET, 3, T0 + 5, event_seq=1))
            await h.wait_ack(6)
            s = await rig.connect(shed)
            s.send(shed.reading(import_wh=42, export_wh=7_000_001))
            await s.wait_ack(0)
            rig.clock.advance(3 * 900 + 1)  # shed: silent for 3 periods -> offline; house too
            rig.conc.tick()
            h.send(house.reading(import_wh=1_240_000, export_wh=90))  # house is back
            await h.wait_ack(7)
            return rig.clock()

    now = asyncio.run(asyncio.wait_for(main(), 30))
    return db, house, shed, spare, now


def test_status_table_and_json(fleet, capsys, monkeypatch):
    db, house, shed, spare, now = fleet
    monkeypatch.setattr(fleet_status, "clock", lambda: now)
    assert cli("status", "--db", db) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["device", "name", "last", "seen", "(UTC)", "state", "import", "kWh", "export",
                                "kWh", "frames", "back-filled", "outages", "clock", "relay", "limit"]
    row = {ln.split()[0]: ln.split() for ln in lines[1:4]}
    # clock: house's last two readings travelled alike (its clock is the concentrator's); shed sent one
    # relay: no K_CONTROL in their readings and no relay bits: connected, no limit; spare: never heard
    assert row[house.device_id.hex()][1:] == ["house", utc_text(now), "online", "1240.000", "0.090", "8",
                                              "1", "1", "+0", "s", "connected", "none"]
    assert row[shed.device_id.hex()][1:] == ["shed", utc_text(now - 2701), "offline", "0.042",
                                             "7000.001", "1", "0", "1", "-", "connected", "none"]
    assert row[spare.device_id.hex()][1:] == ["-", "never", "-", "-", "0", "0", "0", "-", "-", "-"]
    assert lines[-1] == "3 meters: 1 online, 1 offline, 1 never"

    assert cli("status", "--db", db, "--json") == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    h = rows[house.device_id.hex()]
    assert (h["state"], h["import_wh"], h["import_kwh"], h["frames"], h["gaps_backfilled"], h["ack_seq"]) == (
        "online", 1_240_000, "1240.000", 8, 1, 7)
    assert (h["firmware"], h["board"], h["outages"]) == ("meterkit-0.1", "unix-sim", 1)
    assert rows[shed.device_id.hex()]["reporting_period_s"] == 900
    assert rows[spare.device_id.hex()]["state"] == "never"
    # long after: nobody declared an outage for house, but it has been silent: stale
    monkeypatch.setattr(fleet_status, "clock", lambda: now + 3600)
    assert cli("status", "--db", db, "--json") == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[house.device_id.hex()]["state"] == "stale"


def test_export_csv(fleet, capsys, tmp_path):
    db, house, shed, _spare, _now = fleet
    assert cli("export", "--db", db, "--csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 5
    by = [r for r in rows if r["device"] == house.device_id.hex()]
    assert [int(r["import_wh"]) for r in by] == [1_234_567, 1_234_568, 1_234_569, 1_240_000]
    assert [int(r["seq"]) for r in by] == [1, 2, 3, 7]
    assert by[0]["meter_time_utc"] == utc_text(int(by[0]["meter_time"]))
    assert json.loads(by[0]["registers"]) == {"1.8.0": 1_234_567, "2.8.0": 89}

    assert cli("export", "--db", db, "--csv", "--table", "readings", "--meter", "shed") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["device"], r["export_wh"]) for r in rows] == [(shed.device_id.hex(), "7000001")]

    out = tmp_path / "iv.csv"
    assert cli("export", "--db", db, "--table", "intervals", "--meter", house.device_id.hex(), "--out",
               str(out)) == 0
    assert "2 rows of intervals written" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [(int(r["end_time"]), int(r["import_mwh"]), int(r["status"])) for r in rows] == [
        (T0, 10, 0), (T0 + 900, 20, M.ROW_PARTIAL)]
    assert rows[0]["end_time_utc"] == utc_text(T0)

    assert cli("export", "--db", db, "--table", "events") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["code"], r["value"], r["event_time_utc"]) for r in rows] == [
        (str(events.CHIP_RESET), "3", utc_text(T0 + 5))]

    assert cli("export", "--db", db, "--table", "commands") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["op"], json.loads(r["args"]), r["result"]) for r in rows] == [("1", {"1": 2, "2": 2}, "0")]

    assert cli("export", "--db", db, "--table", "outages") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted((r["device"], r["end"] == "") for r in rows) == sorted(
        [(house.device_id.hex(), False), (shed.device_id.hex(), True)])


def test_meters_list_and_errors(fleet, capsys, tmp_path):
    db, house, _shed, spare, _now = fleet
    assert cli("meters", "list", "--db", db, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["device"] for r in rows} >= {house.device_id.hex(), spare.device_id.hex()}
    assert cli("meters", "list", "--db", db) == 0
    assert "house" in capsys.readouterr().out

    missing = str(tmp_path / "nothing.db")
    assert cli("status", "--db", missing) == 2
    assert "no such database" in capsys.readouterr().err
    assert cli("export", "--db", missing) == 2
    assert cli("export", "--db", db, "--meter", "nobody") == 2
    assert "no meter 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("export", "--db", db, "--table", "meters")
    assert cli("meters", "add", "--db", db, "--key", str(tmp_path / "absent.pem")) == 2
    priv = tmp_path / "priv.pem"
    priv.write_bytes(house.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    assert cli("meters", "add", "--db", db, "--key", str(priv)) == 2
    assert "PRIVATE key" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()  # the read-only commands never create a database


def test_status_of_an_empty_database(store_db, capsys):
    db = store_db
    open_store(db).close()
    assert cli("status", "--db", str(db)) == 0
    assert "no meters registered" in capsys.readouterr().out


def test_kwh_is_exact():
    assert fleet_status.kwh(0) == "0.000" and fleet_status.kwh(1) == "0.001"
    assert fleet_status.kwh(1_234_567) == "1234.567" and fleet_status.kwh(-1500) == "-1.500"
    assert fleet_status.kwh(2**64 - 1) == "18446744073709551.615" and fleet_status.kwh(None) == ""
