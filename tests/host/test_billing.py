"""meterkit bill: price files, bills from signed billing snapshots stored by a real concentrator, the load-profile
fallback, determinants as CSV, the PNG of a day, the rounding rule, and the example tariffs.

Meter frames are built and signed by the firmware's own code under CPython (meter.identity + meter.messages
Builder, via meterkit.testing.rig.SimMeter) and stored by a real Concentrator (TCP on 127.0.0.1, SQLite file). Expected
values are computed independently: by hand (literals), or from the generated load with zoneinfo for local time
(not meter.tou)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meter import messages as M
from meter.identity import Identity
from meter.tou import Calendar
from meterkit import billing as B
from meterkit.billing.determinants import energy_from_profile
from meterkit.billing.money import split_by_weight
from meterkit.cli import bill as bill_cli
from meterkit.store import open_store
from meterkit.testing.rig import LoopbackRig, SimMeter
from meterkit.testing.sqlfile import sql

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tariffs"
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT_CAL = json.loads((EXAMPLES / "night-2rate.calendar.json").read_text())
START = int(datetime(2026, 10, 1, tzinfo=BERLIN).timestamp())  # 2026-09-30T22:00Z, CEST
END = int(datetime(2026, 11, 1, tzinfo=BERLIN).timestamp())  # 2026-10-31T23:00Z, CET (DST ended Oct 25)
Q = 900

PRICES = {
    "name": "test HT/NT",
    "currency": "EUR",
    "tariffs": {"1": {"name": "day", "import": "0.3420", "export": "0.0786"},
                "2": {"name": "night", "import": "0.2580", "export": "0.0786"}},
    "demand": {"1.6.0": "9.50"},
    "fixed": "13.50",
}


# --- meters reporting to a real concentrator --------------------------------------------------------------------


@dataclass
class Msg:
    kind: int
    status: int
    body: dict
    time: int


@dataclass
class Script:
    """What one meter sends, in order."""

    msgs: list[Msg] = field(default_factory=list)

    def snapshot(self, period_end: int, regs: dict[int, int], md: dict[int, list[int]] | None = None) -> None:
        body: dict = {6: period_end, 7: dict(sorted(regs.items()))}
        if md:
            body[8] = {k: list(v) for k, v in sorted(md.items())}
        self.msgs.append(Msg(M.BILLING, 0, body, period_end + 5))

    def rows(self, rows: list[list[int]], per_frame: int = 24) -> None:
        for i in range(0, len(rows), per_frame):
            part = rows[i:i + per_frame]
            self.msgs.append(Msg(M.INTERVALS, 0, {6: part, 7: Q}, part[-1][0] + 2))

    def hello(self, t: int, status: int = 0) -> None:
        self.msgs.append(Msg(M.HELLO, status, {6: "meterkit-0.1", 7: "unix-sim", 8: 1, 9: 68630, 10: 992249,
                                               11: 100000, 12: 10}, t))


def store_frames(tmp_path, name: str, ident: Identity, script: Script, meter_name: str = "meter-1"):
    """Sign the script's messages with the firmware Builder and feed them to a real concentrator; returns the
    database path once every frame is acknowledged."""
    db = tmp_path / f"{name}.db"
    now = [0]

    async def main():
        async with LoopbackRig(db) as rig:
            m = SimMeter(identity=ident, time_fn=lambda: now[0])
            rig.store.register_meter(None, m.public_key, meter_name, 900)
            frames = []
            for msg in script.msgs:
                now[0] = msg.time
                frames.append(m.frame(msg.kind, msg.status, msg.body))
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await cl.wait_ack(len(frames) - 1, timeout=60)
            assert cl.refused == []
            cl.close()

    asyncio.run(asyncio.wait_for(main(), 120))
    return db


@pytest.fixture(scope="module")
def ident(tmp_path_factory):
    return Identity(str(tmp_path_factory.mktemp("flash")))


# --- hand-computed bill -------------------------------------------------------------------------------------------

OPEN_REGS = {10800: 1_000_000, 10801: 600_000, 10802: 400_000, 20800: 50_000, 20801: 45_000, 20802: 5_000}
CLOSE_REGS = {10800: 1_234_567, 10801: 734_560, 10802: 500_007, 20800: 62_345, 20801: 56_789, 20802: 5_556}
T_MAX = int(datetime(2026, 10, 14, 18, 15, tzinfo=BERLIN).timestamp())
T_MAX_NIGHT = int(datetime(2026, 10, 3, 23, 0, tzinfo=BERLIN).timestamp())
CLOSE_MD = {10600: [4321, T_MAX], 10601: [4321, T_MAX], 10602: [2950, T_MAX_NIGHT]}


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory, ident):
    s = Script()
    s.snapshot(START - 30 * 86400, {10800: 900_000, 10801: 540_000, 10802: 360_000, 20800: 40_000,
                                           20801: 38_000, 20802: 2_000})  # 2026-09-01 00:00 CEST: opens September
    s.snapshot(START, OPEN_REGS, {10600: [3999, START - 86400]})
    s.snapshot(END, CLOSE_REGS, CLOSE_MD)
    return store_frames(tmp_path_factory.mktemp("hand"), "hand", ident, s)


def test_bill_from_signed_snapshots_equals_hand_computation(hand_db):
    with open_store(hand_db, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
    # by hand:  day    134.560 kWh x 0.3420 = 46.019520      night 100.007 kWh x 0.2580 = 25.801806
    #           export  11.789 kWh x 0.0786 = 0.9266154 (credit)     0.556 kWh x 0.0786 = 0.0437016 (credit)
    #           demand   4.321 kW  x 9.50   = 41.04950       fixed 13.50
    #           46.019520 + 25.801806 - 0.9266154 - 0.0437016 + 41.04950 + 13.50 = 125.400509
    amounts = [(ln.register, ln.quantity, ln.amount) for ln in b.lines]
    assert amounts == [("1.8.1", Decimal("134.560"), Decimal("46.019520")),
                       ("1.8.2", Decimal("100.007"), Decimal("25.801806")),
                       ("2.8.1", Decimal("11.789"), Decimal("-0.9266154")),
                       ("2.8.2", Decimal("0.556"), Decimal("-0.0437016")),
                       ("1.6.0", Decimal("4.321"), Decimal("41.04950")),
                       ("", Decimal(1), Decimal("13.50"))]
    assert b.total_exact == Decimal("125.400509")
    assert b.total == Decimal("125.40") and str(b.total) == "125.40"
    assert (b.start, b.end) == (START, END)
    assert b.determinant("1.8.0").quantity == Decimal("234.567")
    assert b.determinant("1.6.0").at == T_MAX
    assert {d.source for d in b.determinants} == {"snapshot"}
    assert "seq 1 -> 2" in b.sources["energy"] and "seq 2" in b.sources["demand"]
    text = b.format()
    assert "TOTAL EUR" in text and "125.40" in text and "125.400509" in text
    assert "2026-10-01 00:00 CEST" in text and "2026-11-01 00:00 CET" in text
    assert "2026-10-14 18:15 CEST" in text  # time of the maximum demand, local


def test_bill_without_calendar_infers_local_midnights(hand_db):
    with open_store(hand_db, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", PRICES)
        sept = B.bill(st, "meter-1", (2026, 9), PRICES)
    assert b.total_exact == Decimal("125.400509") and (b.start, b.end) == (START, END)
    assert any("different UTC offsets" in n for n in b.notes)  # CEST at the start, CET at the end
    assert sept.end == START and sept.determinant("1.8.1").quantity == Decimal("60.000")


def test_bill_uses_the_signed_frame_not_the_decoded_row(hand_db, tmp_path):
    db = tmp_path / "copy.db"
    db.write_bytes(hand_db.read_bytes())
    with open_store(db) as st:
        dev = st.lookup_device("meter-1")
        # someone edits the decoded row: the bill still follows the signed evidence
        sql(st, "UPDATE billing SET registers = ? WHERE device = ? AND seq = 2",
            (json.dumps({"1.8.0": 9, "1.8.1": 9, "1.8.2": 0, "2.8.0": 0, "2.8.1": 0, "2.8.2": 0}), dev))
        assert B.bill(st, dev, "2026-10", PRICES, NIGHT_CAL).total_exact == Decimal("125.400509")
        # someone edits the evidence: refused
        raw = bytearray(st.frame_raw(dev, 2))
        raw[-10] ^= 1
        sql(st, "UPDATE frames SET raw = ? WHERE device = ? AND seq = 2", (bytes(raw), dev))
        with pytest.raises(B.BillingError, match="seq 2: the stored frame does not verify"):
            B.bill(st, dev, "2026-10", PRICES, NIGHT_CAL)


def test_rounding_rule(hand_db):
    assert B.round_money(Decimal("0.005")) == Decimal("0.01")
    assert B.round_money(Decimal("-0.005")) == Decimal("-0.01")
    assert B.round_money(Decimal("0.0049999")) == Decimal("0.00")
    assert B.round_money(Decimal("2.675")) == Decimal("2.68")  # as a binary float 2.675 would round to 2.67
    assert B.round_money(Decimal("12.5"), 0) == Decimal("13")
    assert B.round_money(Decimal("1.0005"), 3) == Decimal("1.001")
    with open_store(hand_db, create=False) as st:
        # a fixed charge that puts the exact total on a half cent: 125.405000 -> 125.41 (half-even would say .40)
        b = B.bill(st, "meter-1", "2026-10", {**PRICES, "fixed": "13.504491"}, NIGHT_CAL)
        assert b.total_exact == Decimal("125.405000") and b.total == Decimal("125.41")
        yen = B.bill(st, "meter-1", "2026-10", {**PRICES, "currency": "JPY", "minor_unit": 0}, NIGHT_CAL)
        assert yen.total == Decimal("125") and "TOTAL JPY" in yen.format()


def test_csv_determinants(hand_db):
    with open_store(hand_db, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
    buf = io.StringIO()
    assert b.write_csv(buf) == 9
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0]) == list(B.Bill.CSV_COLUMNS)
    by = {r["register"]: r for r in rows}
    assert list(by) == ["1.8.0", "1.8.1", "1.8.2", "2.8.0", "2.8.1", "2.8.2", "1.6.0", "1.6.1", "1.6.2"]
    assert (by["1.8.1"]["quantity"], by["1.8.1"]["start_value"], by["1.8.1"]["end_value"],
            by["1.8.1"]["value_unit"]) == ("134.560", "600000", "734560", "Wh")
    assert by["2.8.2"]["quantity"] == "0.556" and by["2.8.2"]["tariff"] == "2"
    assert by["1.8.0"]["quantity"] == "234.567" and by["1.8.0"]["tariff"] == ""
    assert (by["1.6.2"]["quantity"], by["1.6.2"]["end_value"], by["1.6.2"]["max_at_utc"]) == \
        ("2.950", "2950", "2026-10-03T21:00:00Z")
    assert all(r["source"] == "snapshot" and r["period_start_utc"] == "2026-09-30T22:00:00Z"
               and r["period_end_utc"] == "2026-10-31T23:00:00Z" for r in rows)
    assert "signed snapshots seq 1 -> 2" in by["1.8.1"]["evidence"]
    assert by["1.6.0"]["description"] == "maximum demand" and by["1.6.1"]["description"] == "maximum demand, day"


# --- a month of load profile, consistent with the snapshots -------------------------------------------------------


def night_tariff(a: int) -> int:
    """Tariff of the interval starting at UTC a, from zoneinfo (independent of meter.tou)."""
    h = datetime.fromtimestamp(a, BERLIN).hour
    return 2 if h < 6 or h >= 22 else 1


@dataclass
class Month:
    script: Script
    script_no_opening: Script
    imp: dict[int, int]  # Wh per tariff over the period
    exp: dict[int, int]
    md: dict[int, list[int]]


def make_month() -> Month:
    rng = random.Random(20261001)
    imp = {1: 812_345, 2: 401_234}
    exp = {1: 55_000, 2: 1_200}
    open_regs = {10801: imp[1], 10802: imp[2], 10800: imp[1] + imp[2], 20801: exp[1], 20802: exp[2],
                 20800: exp[1] + exp[2]}
    rows: list[list[int]] = []
    t = START - 8 * Q  # two hours of profile before the period
    cum_i, cum_e = (imp[1] + imp[2]) * 1000 - 8 * 150_000, (exp[1] + exp[2]) * 1000
    grow_i, grow_e = {1: 0, 2: 0}, {1: 0, 2: 0}
    md: dict[int, list[int]] = {}
    while t < END + 4 * Q:
        a, t = t, t + Q
        wh_i = rng.randint(20, 400) if a >= START else 150
        hour = datetime.fromtimestamp(a, BERLIN).hour
        wh_e = rng.randint(0, 150) if a >= START and 10 <= hour < 16 else 0
        if START <= a < END:
            tar = night_tariff(a)
            grow_i[tar] += wh_i
            grow_e[tar] += wh_e
            for k in (10600, 10600 + tar):
                if k not in md or wh_i * 4 > md[k][0]:
                    md[k] = [wh_i * 4, t]
        cum_i += wh_i * 1000
        cum_e += wh_e * 1000
        dst = M.ROW_DST if datetime.fromtimestamp(a, BERLIN).dst() else 0
        rows.append([t, cum_i, cum_e, dst])
    close_regs = {10801: imp[1] + grow_i[1], 10802: imp[2] + grow_i[2], 20801: exp[1] + grow_e[1],
                  20802: exp[2] + grow_e[2]}
    close_regs[10800] = close_regs[10801] + close_regs[10802]
    close_regs[20800] = close_regs[20801] + close_regs[20802]
    before = [r for r in rows if r[0] <= START]
    during = [r for r in rows if START < r[0] <= END]
    after = [r for r in rows if r[0] > END]
    full, partial = Script(), Script()
    for s, with_opening in ((full, True), (partial, False)):
        s.rows(before)
        if with_opening:
            s.snapshot(START, open_regs)
        s.rows(during)
        s.snapshot(END, close_regs, md)
        s.rows(after)
    return Month(full, partial, grow_i, grow_e, md)


@pytest.fixture(scope="module")
def month() -> Month:
    return make_month()


@pytest.fixture(scope="module")
def month_db(tmp_path_factory, ident, month):
    return store_frames(tmp_path_factory.mktemp("month"), "month", ident, month.script)


@pytest.fixture(scope="module")
def month_db_no_opening(tmp_path_factory, ident, month):
    return store_frames(tmp_path_factory.mktemp("month2"), "month2", ident, month.script_no_opening)


def expected_total(month: Month) -> Decimal:
    """The bill by hand from the generated load, in exact integers of 1e-7 EUR:
    Wh x (1e-4 EUR per kWh) = 1e-7 EUR; W x 9.50 EUR per kW = W x 95000e-7 EUR; 13.50 EUR = 135e6 x 1e-7."""
    price_i = {1: 3420, 2: 2580}  # 0.3420 and 0.2580 EUR/kWh in 1e-4 EUR
    energy = sum(month.imp[t] * price_i[t] for t in (1, 2))
    credit = sum(month.exp[t] * 786 for t in (1, 2))  # 0.0786 EUR/kWh
    demand = month.md[10600][0] * 95000
    return Decimal(energy - credit + demand + 135_000_000).scaleb(-7)


def test_profile_agrees_with_snapshots_when_both_exist(month_db, month):
    with open_store(month_db, create=False) as st:
        snap = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
        prof = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL, source="profile")
    assert snap.sources["energy"].startswith("signed snapshots")
    assert prof.sources["energy"].startswith("the load profile (forced)")
    assert prof.sources["demand"] == "the load profile (forced)"
    for t in (1, 2):
        want = Decimal(month.imp[t]).scaleb(-3)
        assert snap.determinant(f"1.8.{t}").quantity == want == prof.determinant(f"1.8.{t}").quantity
        assert snap.determinant(f"2.8.{t}").quantity == Decimal(month.exp[t]).scaleb(-3) == \
            prof.determinant(f"2.8.{t}").quantity
    assert snap.determinant("1.6.0").quantity == prof.determinant("1.6.0").quantity == \
        Decimal(month.md[10600][0]).scaleb(-3)
    assert snap.determinant("1.6.0").at == prof.determinant("1.6.0").at == month.md[10600][1]
    assert snap.total_exact == prof.total_exact == expected_total(month)
    assert [ln.amount for ln in snap.lines] == [ln.amount for ln in prof.lines]
    assert {d.source for d in prof.determinants} == {"profile"}
    assert any(n.startswith("cross-check: the load profile's import growth") for n in snap.notes)
    assert not any("ESTIMATED" in n for n in prof.notes)


def test_fallback_to_profile_when_the_opening_snapshot_is_missing(month_db, month_db_no_opening, month):
    with open_store(month_db, create=False) as st:
        full = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
    with open_store(month_db_no_opening, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
        assert (b.start, b.end) == (START, END)  # placed from the closing snapshot and the calendar
        assert b.determinant("1.8.1").source == "profile" and b.determinant("1.8.1").value_unit == ""
        assert b.determinant("1.8.0").value_unit == "mWh"
        assert b.determinant("1.6.0").source == "snapshot"
        assert "the snapshot opening the period is missing" in b.sources["energy"]
        assert "2980 load-profile intervals" in b.sources["energy"]  # 31 x 96 + the 25th hour of Oct 25
        assert b.total_exact == full.total_exact == expected_total(month)
        with pytest.raises(B.BillingError, match="not in the database .source 'snapshots' forced"):
            B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL, source="snapshots")
        with pytest.raises(B.BillingError, match="needs the TOU calendar"):
            B.bill(st, "meter-1", "2026-10", PRICES)
        # per-tariff maximum demand from the profile matches the one the meter signed
        per = B.bill(st, "meter-1", "2026-10", {**PRICES, "demand": {"1.6.2": "1"}}, NIGHT_CAL, source="profile")
        d = per.determinant("1.6.2")
        assert (d.quantity, d.at) == (Decimal(month.md[10602][0]).scaleb(-3), month.md[10602][1])


def test_profile_split_across_switches_and_gaps():
    cal = B.TouCalendar.of(NIGHT_CAL)
    t21 = int(datetime(2026, 10, 5, 21, 0, tzinfo=BERLIN).timestamp())
    rows = [B.Row(t21, 1_000_000, 0, 0, Q),
            B.Row(t21 + 1800, 1_002_000, 0, 0, Q),  # 21:15 missing: day only
            B.Row(t21 + 5400, 1_010_001, 0, 0, Q),  # 21:45, 22:00, 22:15 missing: half day, half night
            B.Row(t21 + 6300, 1_010_008, 0, 0, Q)]  # 22:45, complete, night
    e, notes = energy_from_profile(rows, cal, None)
    assert e.imp == {1: 2000 + 4001, 2: 4000 + 7}  # 8001 mWh over 30 + 30 min: the odd mWh to the earlier
    assert any("ESTIMATED: 4 load-profile intervals are missing" in n for n in notes)
    assert any("1 intervals straddle a tariff switch" in n for n in notes)
    # a 20-minute span 21:50 -> 22:10 (odd rows): 10 min day, 10 min night, 7 mWh -> 4 + 3 (largest remainder)
    t = t21 + 3000
    e, notes = energy_from_profile([B.Row(t, 0, 0, 0, 1200), B.Row(t + 1200, 7, 5, 0, 1200)], cal, None)
    assert (e.imp, e.exp) == ({1: 4, 2: 3}, {1: 3, 2: 2})
    assert any("straddle a tariff switch" in n for n in notes)
    assert split_by_weight(10, [1, 1, 1]) == [4, 3, 3] and split_by_weight(0, [5, 7]) == [0, 0]
    assert split_by_weight(9, [0, 3]) == [0, 9]
    with pytest.raises(B.BillingError, match="goes backwards"):
        energy_from_profile([B.Row(t, 10, 0, 0, Q), B.Row(t + Q, 9, 0, 0, Q)], cal, None)


def test_commissioned_meter_starts_from_empty_registers(tmp_path, ident):
    hello_t = int(datetime(2026, 10, 10, 12, 3, tzinfo=BERLIN).timestamp())
    first_end = int(datetime(2026, 10, 10, 12, 15, tzinfo=BERLIN).timestamp())
    rows, cum, imp = [], 0, {1: 0, 2: 0}
    md: dict[int, list[int]] = {}
    t = first_end
    a = hello_t
    while t <= END:
        wh = 100 + (t // Q) % 37
        cum += wh * 1000
        imp[night_tariff(t - Q)] += wh
        if t - a == Q:
            for k in (10600, 10600 + night_tariff(t - Q)):
                if k not in md or wh * 4 > md[k][0]:
                    md[k] = [wh * 4, t]
        rows.append([t, cum, 0, 0])
        a, t = t, t + Q
    regs = {10801: imp[1], 10802: imp[2], 10800: imp[1] + imp[2], 20801: 0, 20802: 0, 20800: 0}
    s = Script()
    s.hello(hello_t)
    s.rows(rows)
    s.snapshot(END, regs, md)
    db = store_frames(tmp_path, "new", ident, s)
    with open_store(db, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)
        assert "empty registers at commissioning (first-boot hello seq 0)" in b.sources["energy"]
        assert b.determinant("1.8.1").quantity == Decimal(imp[1]).scaleb(-3)
        assert b.determinant("1.8.1").start_value == 0 and b.determinant("1.8.1").end_value == imp[1]
        prof = B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL, source="profile")
        assert "from empty registers at commissioning" in prof.sources["energy"]
        assert prof.total_exact == b.total_exact
    s.msgs[0].status = M.ST_RESTORED | M.ST_POWER_FAIL  # registers restored: not a fresh meter
    db = store_frames(tmp_path, "restored", ident, s)
    with open_store(db, create=False) as st, pytest.raises(B.BillingError, match="no row at the period start"):
        B.bill(st, "meter-1", "2026-10", PRICES, NIGHT_CAL)


# --- price files --------------------------------------------------------------------------------------------------


def _with(**changes):
    d = json.loads(json.dumps(PRICES))
    for path, v in changes.items():
        node = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if v is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = v
    return d


@pytest.mark.parametrize(("prices", "message"), [
    (_with(tariffs__9={"import": "0.1"}), "prices tariffs['9']: unknown tariff '9': tariffs are numbered 1..8"),
    (_with(tariffs__x={"import": "0.1"}), "unknown tariff 'x'"),
    (_with(demand={"1.6.3": "1"}), "prices demand['1.6.3']: unknown tariff 3: it has no energy price"),
    (_with(demand={"1.8.0": "1"}), "a demand register is 1.6.0 (maximum demand) or 1.6.t"),
    (_with(tariffs__1__import="-0.01"), "prices tariffs['1'].import: negative price -0.01"),
    (_with(fixed=-1), "prices fixed: negative price -1"),
    (_with(demand={"1.6.0": "-9.5"}), "negative price -9.5"),
    (_with(currency=KeyError), "prices: missing field 'currency'"),
    (_with(tariffs=KeyError), "prices: missing field 'tariffs'"),
    (_with(tariffs__2__import=KeyError), "prices tariffs['2']: missing field 'import'"),
    (_with(tariffs__1__import=True), "prices tariffs['1'].import: must be a number, not true/false"),
    (_with(tariffs__1__export=[1]), "prices tariffs['1'].export: must be a number, not a list"),
    (_with(tariffs__1__import="cheap"), "'cheap' is not a decimal number"),
    (_with(tariffs__1__import="NaN"), "'NaN' is not a finite number"),
    (_with(tariffs__1__import=0.342), "0.342 is a binary float"),
    (_with(tariffs__1__name=5), "prices tariffs['1'].name: must be a string, not int"),
    (_with(currency="euro"), "prices currency: must be an ISO 4217 code"),
    (_with(minor_unit="2"), "prices minor_unit: must be an integer 0..6"),
    (_with(tariffs=[]), "prices tariffs: must be a non-empty object"),
    (_with(demand=["1.6.0"]), "prices demand: must be an object"),
    (_with(fixd="1"), "prices: unknown key 'fixd' (allowed: "),
    (_with(tariffs__1__exprt="1"), "prices tariffs['1']: unknown key 'exprt'"),
    ([], "prices: must be an object, not a list"),
])
def test_price_validation(prices, message):
    with pytest.raises(B.PriceError) as e:
        B.parse_prices(prices)
    assert message in str(e.value)


def test_prices_against_the_calendar(tmp_path):
    with pytest.raises(B.PriceError, match=r"unknown tariff 3: the calendar 'two-rate night' has tariffs 1\.\.2"):
        B.parse_prices(_with(tariffs__3={"import": "0.1"}), NIGHT_CAL)
    with pytest.raises(B.PriceError, match="the calendar 'two-rate night' uses tariff 2, which has no price"):
        B.parse_prices(_with(tariffs__2=KeyError), NIGHT_CAL)
    p = B.parse_prices(PRICES, NIGHT_CAL)
    assert p.tariffs[1].import_price == Decimal("0.3420") and p.demand == {"1.6.0": Decimal("9.50")}
    # files: JSON numbers are read as exact decimals; errors name the file
    f = tmp_path / "p.json"
    f.write_text('{"currency": "EUR", "tariffs": {"1": {"import": 0.1, "export": 0.2}}, "fixed": 0.30}')
    p = B.load_prices(f)
    assert p.tariffs[1].import_price + p.tariffs[1].export_price == p.fixed == Decimal("0.30")
    f.write_text('{"currency": "EUR", "tariffs": {"1": {"import": NaN}}}')
    with pytest.raises(B.PriceError, match=r"p\.json: not valid JSON"):
        B.load_prices(f)
    f.write_text('{"currency": "EUR", "tariffs": {"1": {"import": -1}}}')
    with pytest.raises(B.PriceError, match=r"p\.json: prices tariffs\['1'\]\.import: negative price -1"):
        B.load_prices(f)
    with pytest.raises(B.PriceError, match="cannot read"):
        B.load_prices(tmp_path / "missing.json")


def test_unpriced_tariff_with_energy_is_refused(hand_db):
    with open_store(hand_db, create=False) as st:
        with pytest.raises(B.BillingError, match="100.007 kWh of import in tariff 2, which has no price"):
            B.bill(st, "meter-1", "2026-10", _with(tariffs__2=KeyError))
        with pytest.raises(B.BillingError, match="no meter 'nobody'"):
            B.bill(st, "nobody", "2026-10", PRICES)
        with pytest.raises(B.BillingError, match="YYYY-MM"):
            B.bill(st, "meter-1", "October", PRICES)


# --- the day plot and the command line ----------------------------------------------------------------------------


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_of_a_day_coloured_by_tariff(month_db, tmp_path):
    out = tmp_path / "day.png"
    with open_store(month_db, create=False) as st:
        prices = B.parse_prices(PRICES)
        assert B.plot_day(st, "meter-1", "2026-10-25", NIGHT_CAL, out, prices) == 100  # fall-back day: 25 h
        local, d0, d1, ivs = B.day_profile(st, "meter-1", "2026-10-14", NIGHT_CAL)
    assert png_size(out) == (1100, 450) and 20_000 < out.stat().st_size < 1_000_000
    assert (d0, d1 - d0) == (int(datetime(2026, 10, 14, tzinfo=BERLIN).timestamp()), 86400)
    assert len(ivs) == 96 and [iv[4] for iv in ivs] == [night_tariff(iv[0]) for iv in ivs]
    assert all(iv[2] == Decimal(iv[2]).quantize(Decimal(1)) for iv in ivs)  # whole Wh x 4 = whole W


def run_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="meterkit")
    bill_cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_bill_csv_and_png(month_db, tmp_path, capsys):
    prices = EXAMPLES / "night-2rate.prices.json"
    cal = EXAMPLES / "night-2rate.calendar.json"
    out_csv, out_png = tmp_path / "det.csv", tmp_path / "day.png"
    rc = run_cli(["bill", "--db", str(month_db), "--meter", "meter-1", "--period", "2026-10", "--prices",
                  str(prices), "--calendar", str(cal), "--csv", str(out_csv), "--plot-day", "2026-10-14",
                  "--png", str(out_png)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "period 2026-10" in cap.out and "TOTAL EUR (rounded to 0.01, half away from zero" in cap.out
    assert "energy day (HT)" in cap.out and "export credit night (NT)" in cap.out
    assert "9 billing determinants written" in cap.err and "(96 intervals)" in cap.err
    assert out_csv.read_text().startswith("period,device,meter,register")
    assert png_size(out_png) == (1100, 450)
    # errors: clear, and the right exit code
    assert run_cli(["bill", "--db", str(month_db), "--meter", "ghost", "--period", "2026-10", "--prices",
                    str(prices)]) == 1
    assert "no meter 'ghost'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"currency": "EUR", "tariffs": {"3": {"import": "0.1"}}}')
    assert run_cli(["bill", "--db", str(month_db), "--meter", "meter-1", "--period", "2026-10", "--prices",
                    str(bad), "--calendar", str(cal)]) == 2
    assert "unknown tariff 3: the calendar 'two-rate night' has tariffs 1..2" in capsys.readouterr().err
    assert run_cli(["bill", "--db", str(month_db), "--meter", "meter-1", "--period", "2026-10", "--prices",
                    str(prices), "--plot-day", "2026-10-14", "--png", str(out_png)]) == 2
    assert "needs --calendar" in capsys.readouterr().err
    assert run_cli(["bill", "--db", str(tmp_path / "none.db"), "--meter", "m", "--period", "2026-10",
                    "--prices", str(prices)]) == 2


# --- the example tariffs ------------------------------------------------------------------------------------------


def _every_15_min(zone: ZoneInfo, y: int, m: int):
    t = int(datetime(y, m, 1, tzinfo=zone).timestamp())
    end = int((datetime(y, m, 1, tzinfo=zone) + timedelta(days=32)).replace(day=1).timestamp())
    while t < end:
        yield t, datetime.fromtimestamp(t, zone)
        t += Q


SPAIN_HOLIDAYS = {(1, 1), (1, 6), (5, 1), (8, 15), (10, 12), (11, 1), (12, 6), (12, 8), (12, 25)}


def spain_2_0td(lt: datetime) -> int:
    if lt.weekday() >= 5 or (lt.month, lt.day) in SPAIN_HOLIDAYS or lt.hour < 8:
        return 3
    return 1 if 10 <= lt.hour < 14 or 18 <= lt.hour < 22 else 2


def california(lt: datetime) -> int:
    summer = 6 <= lt.month <= 9
    weekend = lt.weekday() >= 5 or (lt.month, lt.day) == (7, 4) or lt.date() == datetime(2026, 9, 7).date()
    peak = 16 <= lt.hour < 21
    if summer:
        return (2 if weekend else 1) if peak else 3
    return 4 if peak else (6 if 8 <= lt.hour < 16 else 5)


@pytest.mark.parametrize(("name", "zone", "rule", "months"), [
    ("night-2rate", "Europe/Berlin", lambda lt: 2 if lt.hour < 6 or lt.hour >= 22 else 1, [(2026, 3), (2026, 10)]),
    ("spain-3p", "Europe/Madrid", spain_2_0td, [(2026, 1), (2026, 3), (2026, 10), (2026, 12)]),
    ("california-seasonal", "America/Los_Angeles", california, [(2026, 3), (2026, 5), (2026, 6), (2026, 7),
                                                               (2026, 9), (2026, 10), (2026, 11)]),
])
def test_example_calendars_match_their_rules(name, zone, rule, months):
    cal = Calendar(json.loads((EXAMPLES / f"{name}.calendar.json").read_text()))
    prices = B.load_prices(EXAMPLES / f"{name}.prices.json", cal)
    assert set(prices.tariffs) == set(range(1, cal.tariffs + 1))
    z = ZoneInfo(zone)
    n = 0
    for y, m in months:
        for t, lt in _every_15_min(z, y, m):
            assert cal.tariff_at(t) == rule(lt), (name, lt.isoformat())
            n += 1
    assert n > 2000


def test_example_prices_bill(hand_db):
    cal = B.load_calendar(EXAMPLES / "night-2rate.calendar.json")
    with open_store(hand_db, create=False) as st:
        b = B.bill(st, "meter-1", "2026-10", EXAMPLES / "night-2rate.prices.json", cal)
    # 134.560 x 0.3420 + 100.007 x 0.2580 - (11.789 + 0.556) x 0.0786 + 13.50 (no demand charge)
    assert b.total_exact == Decimal("46.019520") + Decimal("25.801806") - Decimal("0.970317") + Decimal("13.50")
    assert b.total == Decimal("84.35")
    assert b.determinant("1.6.0").source == "snapshot"  # reported, not priced
    assert [ln.register for ln in b.lines] == ["1.8.1", "1.8.2", "2.8.1", "2.8.2", ""]



def _regs(base: dict[int, int], delta: dict[int, int], n: int) -> dict[int, int]:
    """Opening or closing registers with n tariffs (base + delta per OBIS key), totals as the sums."""
    regs = {}
    for c in (1, 2):
        for t in range(1, n + 1):
            k = c * 10000 + 800 + t
            regs[k] = base.get(k, 0) + delta.get(k, 0)
        regs[c * 10000 + 800] = sum(regs[c * 10000 + 800 + t] for t in range(1, n + 1))
    return regs


@pytest.mark.parametrize(("name", "zone", "period", "tariffs", "delta", "md", "exact", "total"), [
    # docs/tariffs.md, worked example 2: 61.204 x 0.1850 + 88.917 x 0.1180 + 143.611 x 0.0810
    #                                    - 40.102 x 0.0600 + 11.9071 = 42.948417
    ("spain-3p", "Europe/Madrid", (2026, 10), 3, {10801: 61204, 10802: 88917, 10803: 143611, 20802: 40102}, {},
     "42.9484170", "42.95"),
    # worked example 3: 182.400 x 0.3822 + 41.250 x 0.2916 + 512.030 x 0.2204 - 96.500 x 0.0433
    #                   + 7.842 x 17.41 + 6.915 x 21.15 + 34.77 = 507.966212
    ("california-seasonal", "America/Los_Angeles", (2026, 7), 6,
     {10801: 182400, 10802: 41250, 10803: 512030, 20803: 96500}, {10600: 7842, 10601: 6915, 10603: 5120},
     "507.9662120", "507.97"),
])
def test_docs_worked_examples(tmp_path, ident, name, zone, period, tariffs, delta, md, exact, total):
    z = ZoneInfo(zone)
    y, m = period
    start = int(datetime(y, m, 1, tzinfo=z).timestamp())
    end = int(datetime(y, m + 1, 1, tzinfo=z).timestamp())
    base = {k: 100_000 * (k % 10) for k in range(10801, 10801 + tariffs)}
    s = Script()
    s.snapshot(start, _regs(base, {}, tariffs))
    s.snapshot(end, _regs(base, delta, tariffs), {k: [w, start + 86400 * 9 + 3600 * 17] for k, w in md.items()})
    db = store_frames(tmp_path, name, ident, s)
    with open_store(db, create=False) as st:
        b = B.bill(st, "meter-1", period, EXAMPLES / f"{name}.prices.json", EXAMPLES / f"{name}.calendar.json")
    assert (b.start, b.end) == (start, end)
    assert b.total_exact == Decimal(exact) and b.total == Decimal(total)
    assert len(b.lines) == tariffs + tariffs + len([k for k in md if M.obis_code(k) in b.prices.demand]) + 1


def test_calendar_set_file(tmp_path):
    spain = json.loads((EXAMPLES / "spain-3p.calendar.json").read_text())
    at = int(datetime(2026, 11, 1, tzinfo=BERLIN).timestamp())
    f = tmp_path / "set.json"
    f.write_text(json.dumps({"active": NIGHT_CAL, "passive": spain, "activation": at}))
    cal = B.load_calendar(f)
    assert (cal.tariffs, cal.used) == (3, {1, 2, 3})
    assert cal.tariff_at(at - 1) == 2 and cal.tariff_at(at) == 3  # 23:59:59 night; then a Spanish holiday
    assert cal.tz_at(at).string == spain["tz"]
    with pytest.raises(B.PriceError, match="uses tariff 3, which has no price"):
        B.parse_prices(PRICES, cal)
    f.write_text(json.dumps({"active": NIGHT_CAL, "passive": spain}))
    with pytest.raises(ValueError, match="set.json: calendar set: a passive calendar needs an integer activation"):
        B.load_calendar(f)
