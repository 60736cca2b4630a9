"""meterkit export --green-button: a meter's stored load profile as ESPI Atom XML (docs/green-button.md).

The month profile is signed by a simulated meter (meterkit.testing.rig.SimMeter) and stored by a real Concentrator
(TCP on 127.0.0.1, SQLite). The XML is checked against a reduced ESPI + Atom schema written from the public espi.xsd
(tests/host/espi/), with xmlschema. Expected values come from the generated load, local time from zoneinfo (not
meter.tou), the DST rules decoded here from the spec's bit layout, and the money from meterkit.billing's bill of
the same period from the same profile.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import xmlschema

from meter import messages as M
from meterkit import billing as B
from meterkit.billing.money import EXACT, round_money
from meterkit.cli import main as cli_main
from meterkit.integrations.greenbutton import GreenButtonError, green_button, local_time_parameters
from meterkit.store import open_store
from meterkit.testing.rig import LoopbackRig, SimMeter
from meterkit.wire.records import IntervalRow

SCHEMA_DIR = Path(__file__).parent / "espi"
A = "{http://www.w3.org/2005/Atom}"
E = "{http://naesb.org/espi}"
BERLIN = ZoneInfo("Europe/Berlin")
BERLIN_TZ = "CET-1CEST,M3.5.0,M10.5.0/3"
Q = 900
START = int(datetime(2026, 10, 1, tzinfo=BERLIN).timestamp())
END = int(datetime(2026, 11, 1, tzinfo=BERLIN).timestamp())  # DST ends on Oct 25 inside
GAP_END = int(datetime(2026, 10, 10, 13, 15, tzinfo=BERLIN).timestamp())  # rows 12:15 .. 13:00 missing
POWER_FAIL_END = int(datetime(2026, 10, 12, 7, 0, tzinfo=BERLIN).timestamp())
CLOCK_SET_END = int(datetime(2026, 10, 20, 9, 30, tzinfo=BERLIN).timestamp())
# the night tariff with day starting at 06:10 and ending 22:00: intervals 06:00-06:15 straddle a switch
CALENDAR = {"name": "night 06:10", "tz": BERLIN_TZ, "tariffs": 2,
            "seasons": [{"name": "all year", "start": [1, 1], "week": "w"}],
            "weeks": {"w": ["d"] * 7}, "days": {"d": [[0, 2], [370, 1], [1320, 2]]}}
PRICES = {"name": "test", "currency": "EUR",
          "tariffs": {"1": {"name": "day", "import": "0.3420", "export": "0.0786"},
                      "2": {"name": "night", "import": "0.2580"}},  # night export not credited
          "fixed": "13.50"}


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(SCHEMA_DIR / "atom-reduced.xsd"))


def xml_of(exp) -> bytes:
    b = io.BytesIO()
    exp.write(b)
    return b.getvalue()


# --- a month of load profile through a real concentrator ------------------------------------------------------


@dataclass
class Month:
    db: Path
    rows: dict[int, tuple[int, int, int]]  # end -> (import mWh, export mWh, flags) as the meter sent them


def make_rows() -> list[list[int]]:
    rng = random.Random(14)
    rows, imp, exp = [], 7_654_321_987, 123_456_789
    t = START - 4 * Q
    while t < END + 4 * Q:
        t += Q
        local = datetime.fromtimestamp(t - Q, BERLIN)
        imp += rng.randint(5_000, 400_000)  # mWh: not whole Wh, so nothing may round
        if 10 <= local.hour < 16:
            exp += rng.randint(0, 250_000)
        flags = M.ROW_DST if datetime.fromtimestamp(t, BERLIN).dst() else 0
        if t == POWER_FAIL_END:
            flags |= M.ROW_POWER_FAIL
        if t == CLOCK_SET_END:
            flags |= M.ROW_CLOCK_ADJUSTED
        if not GAP_END - 4 * Q <= t < GAP_END:
            rows.append([t, imp, exp, flags])
    return rows


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> Month:
    rows = make_rows()
    db = tmp_path_factory.mktemp("gb") / "head.db"
    now = [0]

    async def main():
        async with LoopbackRig(db) as rig:
            m = SimMeter(time_fn=lambda: now[0])
            rig.store.register_meter(None, m.public_key, "meter-1", Q)
            frames = []
            for i in range(0, len(rows), 24):
                part = rows[i:i + 24]
                now[0] = part[-1][0] + 2
                frames.append(m.intervals(part, Q))
            cl = await rig.connect(m)
            cl.send(b"".join(frames))
            await cl.wait_ack(len(frames) - 1, timeout=60)
            assert cl.refused == []
            cl.close()

    asyncio.run(asyncio.wait_for(main(), 120))
    return Month(db, {r[0]: (r[1], r[2], r[3]) for r in rows})


@pytest.fixture(scope="module")
def priced(month):
    with open_store(month.db, create=False) as st:
        return green_button(st, "meter-1", START, END, prices=_prices_file(month.db.parent), calendar=CALENDAR,
                            now=START)


def _prices_file(d: Path) -> Path:
    p = d / "test.prices.json"
    p.write_text(json.dumps(PRICES))
    return p


def readings_of(root: ET.Element, k: int) -> list[dict]:
    """The IntervalReadings of MeterReading k, in order, as dicts."""
    out = []
    for entry in root.iter(f"{A}entry"):
        up = entry.find(f"{A}link[@rel='up']").get("href")
        if not up.endswith(f"/MeterReading/{k}/IntervalBlock"):
            continue
        for ir in entry.iter(f"{E}IntervalReading"):
            tp = ir.find(f"{E}timePeriod")
            cost = ir.find(f"{E}cost")
            out.append({"start": int(tp.find(f"{E}start").text), "duration": int(tp.find(f"{E}duration").text),
                        "value": int(ir.find(f"{E}value").text),
                        "cost": None if cost is None else int(cost.text),
                        "q": [int(q.text) for q in ir.iter(f"{E}quality")]})
    return out


def test_month_export_passes_the_schema_and_links_resolve(priced, schema):
    data = xml_of(priced)
    schema.validate(io.BytesIO(data))
    root = ET.fromstring(data)
    assert root.tag == f"{A}feed"
    entries = root.findall(f"{A}entry")
    kinds = [next(iter(e.find(f"{A}content"))).tag.removeprefix(E) for e in entries]
    assert kinds[:5] == ["UsagePoint", "LocalTimeParameters", "MeterReading", "ReadingType", "IntervalBlock"]
    assert kinds.count("MeterReading") == 2 and kinds.count("ReadingType") == 2
    assert kinds.count("IntervalBlock") == 2 * 31  # a block per local day, per direction
    selfs = {e.find(f"{A}link[@rel='self']").get("href") for e in entries}
    assert len(selfs) == len(entries) and len({e.find(f"{A}id").text for e in entries}) == len(entries)
    for e in entries:
        s = e.find(f"{A}link[@rel='self']").get("href")
        assert s.rsplit("/", 1)[0] == e.find(f"{A}link[@rel='up']").get("href")
        for rel in e.findall(f"{A}link[@rel='related']"):
            href = rel.get("href")  # a resource in this feed, or the collection of this entry's children
            assert href in selfs or any(x.startswith(href + "/") for x in selfs), href
    rts = {e.find(f"{A}link[@rel='self']").get("href"): e.find(f"{A}content/{E}ReadingType") for e in entries
           if kinds[entries.index(e)] == "ReadingType"}
    for href, flow in (("ReadingType/1", "1"), ("ReadingType/2", "19")):
        rt = rts[href]
        assert [rt.find(f"{E}{k}").text for k in ("flowDirection", "uom", "powerOfTenMultiplier", "intervalLength",
                                                   "accumulationBehaviour", "kind", "commodity", "currency")] \
            == [flow, "72", "-3", "900", "4", "12", "1", "978"]


def test_schema_rejects_what_the_spec_does_not_allow(month, schema):
    """The reduced schema is a real check: breaking one thing the spec fixes makes it fail (on a day's export)."""
    with open_store(month.db, create=False) as st:
        day = green_button(st, "meter-1", START, START + 86400, prices=_prices_file(month.db.parent),
                           calendar=CALENDAR)
    good = xml_of(day).decode()
    assert schema.is_valid(io.BytesIO(good.encode()))
    broken = [
        good.replace("<flowDirection>19</flowDirection>", "<flowDirection>6</flowDirection>", 1),  # not a code
        good.replace("<uom>72</uom>", "<uom>999</uom>", 1),
        good.replace("<dstOffset>3600</dstOffset>", "<dstOffset>1h</dstOffset>", 1),
        good.replace("<dstEndRule>", "<dstEndRule>00", 1),  # 5 octets: not a 32-bit rule
        good.replace("<timePeriod>", "<timePeriod><start>0</start>", 1),  # start before duration
        good.replace("<kind>0</kind>", "<kind>0</kind><kind>1</kind>", 1),
        good.replace('rel="up"', 'rel="down"', 1),
    ]
    for text in broken:
        assert text != good
        assert not schema.is_valid(io.BytesIO(text.encode()))


@pytest.mark.parametrize("window", [(START, END), (START + 22 * 86400 + 607, START + 26 * 86400 - 1)])
def test_interval_sum_equals_the_register_difference(month, window):
    """Over the month, and over four days across the end of DST whose bounds are not on row ends."""
    a, b = window
    with open_store(month.db, create=False) as st:
        exp = green_button(st, "meter-1", a, b, calendar=CALENDAR)
    ends = sorted(e for e in month.rows if a <= e <= b)
    first, last = month.rows[ends[0]], month.rows[ends[-1]]
    root = ET.fromstring(xml_of(exp))
    for k, i in ((1, 0), (2, 1)):
        rs = readings_of(root, k)
        assert sum(r["value"] for r in rs) == last[i] - first[i] > 0
        assert rs[0]["start"] == ends[0] and rs[-1]["start"] + rs[-1]["duration"] == ends[-1]
        assert all(x["start"] + x["duration"] == y["start"] for x, y in zip(rs, rs[1:], strict=False))
        assert all(r["cost"] is None for r in rs)


def test_daily_blocks_follow_local_time_across_the_dst_change(priced):
    root = ET.fromstring(xml_of(priced))
    entries = [e for e in root.findall(f"{A}entry")
               if e.find(f"{A}link[@rel='up']").get("href").endswith("/MeterReading/1/IntervalBlock")]
    blocks = [e.find(f"{A}content/{E}IntervalBlock") for e in entries]
    day = datetime(2026, 10, 1)
    for entry, blk in zip(entries, blocks, strict=True):
        assert entry.find(f"{A}title").text == day.date().isoformat()
        start = int(blk.find(f"{E}interval/{E}start").text)
        duration = int(blk.find(f"{E}interval/{E}duration").text)
        midnight = int(day.replace(tzinfo=BERLIN).timestamp())
        next_midnight = int((day + timedelta(days=1)).replace(tzinfo=BERLIN).timestamp())
        assert (start, duration) == (midnight, next_midnight - midnight)
        rs = blk.findall(f"{E}IntervalReading")
        gap = 1 if day.day == 10 else 0  # one reading spans the four missing rows
        assert len(rs) == duration // Q - 4 * gap
        assert int(rs[0].find(f"{E}timePeriod/{E}start").text) == start
        day += timedelta(days=1)
    assert [int(b.find(f"{E}interval/{E}duration").text) for b in blocks[23:26]] == [86400, 90000, 86400]


def test_local_time_parameters_of_berlin(priced):
    lt = ET.fromstring(xml_of(priced)).find(f".//{E}LocalTimeParameters")
    values = {c.tag.removeprefix(E): c.text for c in lt}
    assert values == {"dstEndRule": "AE0E3000", "dstOffset": "3600", "dstStartRule": "3E0E2000", "tzOffset": "3600"}


def decode_rule(bits: int, year: int) -> datetime:
    """The local wall-clock instant an ESPI DstRuleType names in `year`, from the bit layout in espi.xsd."""
    seconds, hours = bits & 0xFFF, (bits >> 12) & 0x1F
    weekday, day, op, month = (bits >> 17) & 0x7, (bits >> 20) & 0x1F, (bits >> 25) & 0x7, bits >> 28
    if op == 0:
        d = datetime(year, month, day)
    elif op == 1:
        d = datetime(year, month, day)
        while d.isoweekday() != weekday:
            d += timedelta(days=1)
    else:
        days = [datetime(year, month, 1) + timedelta(days=i) for i in range(31)]
        days = [d for d in days if d.month == month and d.isoweekday() == weekday]
        d = days[-1] if op == 7 else days[op - 2]
    return d + timedelta(hours=hours, seconds=seconds)


def zone_transitions(zone: ZoneInfo, year: int) -> list[tuple[int, int]]:
    """(UTC instant, UTC offset after it) of every offset change in `year`, found hour by hour with zoneinfo."""
    out = []
    t = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp())
    off = datetime.fromtimestamp(t, zone).utcoffset()
    for h in range(1, 366 * 24):
        u = t + h * 3600
        o = datetime.fromtimestamp(u, zone).utcoffset()
        if o != off:
            lo = u - 3600
            while u - lo > 1:  # the exact second
                mid = (lo + u) // 2
                lo, u = (mid, u) if datetime.fromtimestamp(mid, zone).utcoffset() == off else (lo, mid)
            out.append((u, int(o.total_seconds())))
            off = o
    return out


@pytest.mark.parametrize("posix, zone", [
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin"),
    ("PST8PDT,M3.2.0,M11.1.0", "America/Los_Angeles"),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),  # summer across New Year: written inverted
    ("GMT0BST,M3.5.0/1,M10.5.0", "Europe/London"),
])
def test_dst_rules_reproduce_the_zone(posix, zone):
    """Decoded from the spec's bit layout alone, the rules give the zone's transitions (zoneinfo) for 2024-2030."""
    lt = local_time_parameters(posix)
    z = ZoneInfo(zone)
    for year in range(2024, 2031):
        # the start rule is read in the zone's standard time, the end rule in its DST time (tzOffset + dstOffset)
        start = decode_rule(lt.dst_start_rule, year).replace(tzinfo=timezone.utc).timestamp() - lt.tz_offset
        end = (decode_rule(lt.dst_end_rule, year).replace(tzinfo=timezone.utc).timestamp()
               - lt.tz_offset - lt.dst_offset)
        expected = {(int(start), lt.tz_offset + lt.dst_offset), (int(end), lt.tz_offset)}
        assert set(zone_transitions(z, year)) == expected, (year, posix)


def test_dst_rules_as_in_the_green_button_samples():
    us = local_time_parameters("EST5EDT,M3.2.0,M11.1.0")
    assert (f"{us.dst_start_rule:08X}", f"{us.dst_end_rule:08X}", us.tz_offset, us.dst_offset) == \
        ("360E2000", "B40E2000", -18000, 3600)
    fixed = local_time_parameters("<+0530>-5:30")
    assert (fixed.dst_start_rule, fixed.dst_end_rule, fixed.tz_offset, fixed.dst_offset) == \
        (0xFFFFFFFF, 0xFFFFFFFF, 19800, 0)
    j = local_time_parameters("XST-2XDT,J60/1:30,J300")  # March 1 01:30 .. October 27 02:00, every year
    assert decode_rule(j.dst_start_rule, 2028) == datetime(2028, 3, 1, 1, 30)
    assert decode_rule(j.dst_end_rule, 2028) == datetime(2028, 10, 27, 2, 0)


# --- costs -----------------------------------------------------------------------------------------------------


def test_costs_equal_the_bill_from_the_same_profile(month, priced):
    with open_store(month.db, create=False) as st:
        bill = B.bill(st, "meter-1", "2026-10", PRICES, CALENDAR, source="profile")
    root = ET.fromstring(xml_of(priced))
    imp, exp = readings_of(root, 1), readings_of(root, 2)
    bill_import = sum((ln.amount for ln in bill.lines if ln.register.startswith("1.8.")), Decimal(0))
    bill_credit = sum((ln.amount for ln in bill.lines if ln.register.startswith("2.8.")), Decimal(0))
    assert bill_import > 0 > bill_credit
    assert sum(r["cost"] for r in imp) == int(round_money(bill_import, 5).scaleb(5))
    assert sum(r["cost"] for r in exp) == int(round_money(bill_credit, 5).scaleb(5))
    # each cost is within one unit (1e-5 EUR) of its own exact amount, tariffs from zoneinfo
    price = {"import": {1: Decimal("0.3420"), 2: Decimal("0.2580")}, "export": {1: Decimal("0.0786"), 2: 0}}
    straddling = 0
    for rs, what, sign in ((imp, "import", 1), (exp, "export", -1)):
        for r in rs:
            t0 = datetime.fromtimestamp(r["start"], BERLIN)
            t1 = datetime.fromtimestamp(r["start"] + r["duration"] - 1, BERLIN)
            tariffs = {2 if t.hour * 60 + t.minute < 370 or t.hour >= 22 else 1 for t in (t0, t1)}
            if len(tariffs) > 1:
                straddling += 1
                continue
            exact = EXACT.multiply(Decimal(r["value"]), price[what][tariffs.pop()]) / 10  # mWh x EUR/kWh in 1e-5
            assert abs(r["cost"] - sign * exact) <= 1, r
    assert straddling >= 2 * 31  # the 06:00-06:15 interval of every day, and the gap's span


def test_price_errors(month, tmp_path):
    two_rates = _prices_file(tmp_path)
    one_rate = tmp_path / "one.json"
    one_rate.write_text(json.dumps({"currency": "XTS", "tariffs": {"1": {"import": "0.1"}}}))
    with open_store(month.db, create=False) as st:
        with pytest.raises(GreenButtonError, match="needs the meter's TOU calendar"):
            green_button(st, "meter-1", START, START + 86400, prices=two_rates)
        with pytest.raises(GreenButtonError, match="currency 'XTS'"):
            green_button(st, "meter-1", START, START + 86400, prices=one_rate)
        with pytest.raises(GreenButtonError, match="cannot read"):
            green_button(st, "meter-1", START, START + 86400, prices=tmp_path / "none.json")
        one_rate.write_text(json.dumps({"currency": "USD", "tariffs": {"1": {"import": "0.1", "export": "0.05"}}}))
        exp = green_button(st, "meter-1", START, START + 86400, prices=one_rate, tz="PST8PDT,M3.2.0,M11.1.0")
    imp = readings_of(ET.fromstring(xml_of(exp)), 1)
    assert sum(r["cost"] for r in imp) == sum(r["value"] for r in imp) // 100 + (
        1 if sum(r["value"] for r in imp) % 100 >= 50 else 0)  # 0.1 USD/kWh = 1e-5 USD per 100 mWh


# --- gaps and irregular rows ---------------------------------------------------------------------------------


def test_gaps_and_irregular_rows_are_marked_not_invented(priced):
    root = ET.fromstring(xml_of(priced))
    for k in (1, 2):
        marked = {r["start"] + r["duration"]: (r["duration"], r["q"]) for r in readings_of(root, k) if r["q"]}
        assert marked == {GAP_END: (5 * Q, [11]), POWER_FAIL_END: (Q, [16]), CLOCK_SET_END: (Q, [10])}
    text = priced.summary()
    assert "1 interval spans missing rows (quality 11, derived)" in text
    assert "4 capture periods without a row" in text
    assert "1 interval had the clock set (quality 10, questionable)" in text
    assert "1 interval was not metered throughout (quality 16, other)" in text


def _meter(st, name="m"):
    from cryptography.hazmat.primitives.asymmetric import ec
    return st.register_meter(None, ec.generate_private_key(ec.SECP256R1()).public_key(), name, 3600).device_id


def test_spring_forward_on_both_stores(store, schema):
    """California, hourly rows through the store API on SQLite and PostgreSQL: the 23-hour day of 2026-03-08."""
    la = ZoneInfo("America/Los_Angeles")
    dev = _meter(store)
    t0 = int(datetime(2026, 3, 7, tzinfo=la).timestamp())
    hours = 24 + 23 + 24  # Saturday, the day DST starts, Monday
    rows = [IntervalRow(dev, t0 + h * 3600, 1000 + h * 1234, h * 17, 0, 3600, h) for h in range(hours + 1)]
    store.add_interval_rows(rows)
    store.commit()
    exp = green_button(store, dev, t0, rows[-1].end, tz="PST8PDT,M3.2.0,M11.1.0")
    data = xml_of(exp)
    schema.validate(io.BytesIO(data))
    root = ET.fromstring(data)
    durations = [int(b.text) for b in root.iterfind(f".//{E}IntervalBlock/{E}interval/{E}duration")]
    assert durations == [86400, 82800, 86400] * 2
    assert sum(r["value"] for r in readings_of(root, 1)) == rows[-1].import_mwh - rows[0].import_mwh
    assert sum(r["value"] for r in readings_of(root, 2)) == hours * 17


def test_a_register_that_goes_back_is_not_exported(store):
    dev = _meter(store)
    t0 = 1_790_000_000 // Q * Q
    regs = [100, 200, 300, 50, 80, 90]  # the meter was reset after the third row
    store.add_interval_rows([IntervalRow(dev, t0 + i * Q, r, 0, 0, Q, i) for i, r in enumerate(regs)])
    store.commit()
    exp = green_button(store, dev, t0, t0 + 5 * Q)
    assert [r.value for r in exp.feed.meter_readings[0].readings] == [100, 100, 30, 10]
    assert "NOT EXPORTED: " in exp.summary() and "a register went back" in exp.summary()


# --- bad input -----------------------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly(month):
    with open_store(month.db, create=False) as st:
        cases = [
            (dict(meter="meter-9"), "no meter 'meter-9'"),
            (dict(start=END + 86400, end=END + 2 * 86400), "no load-profile rows stored in this period"),
            (dict(start=START + 100, end=START + Q + 100), "only 1 usable load-profile row"),
            (dict(start=END, end=START), "ends .* before it starts"),
            (dict(tz="EST5EDT,60,300"), "zero-based day of the year"),
            (dict(tz="EST5EDT,M3.2.0/25,M11.1.0"), "outside one day"),
            (dict(tz="Europe/Berlin"), "bad TZ"),
            (dict(tz="UTC0", calendar=CALENDAR), "give the time zone once"),
            (dict(calendar={"tz": "UTC0"}), "calendar"),
        ]
        for kw, message in cases:
            args = {"meter": "meter-1", "start": START, "end": START + 86400, **kw}
            with pytest.raises(GreenButtonError, match=message):
                green_button(st, args.pop("meter"), args.pop("start"), args.pop("end"), **args)


def test_cli(month, tmp_path, capsys, schema):
    out = tmp_path / "gb.xml"
    prices = _prices_file(tmp_path)
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(CALENDAR))
    base = ["export", "--db", str(month.db), "--green-button", "--meter", "meter-1"]
    assert cli_main([*base, "--from", "2026-10-24T00:00Z", "--to", "2026-10-27T00:00Z", "--prices", str(prices),
                     "--calendar", str(cal), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Green Button XML written to" in err and "EUR" in err and "intervals from 2026-10-24T00:00:00Z" in err
    schema.validate(str(out))
    # bad input: a clear message, exit status, and no file
    for argv, code, message in [
        ([*base, "--to", "2026-10-27T00:00Z"], 2, "--green-button needs --from"),
        ([*base, "--from", "2026-10-24T00:00Z", "--to", "2026-10-27T00:00Z", "--table", "events"], 2, "--table"),
        (["export", "--db", str(month.db), "--green-button", "--meter", "nobody", "--from", "2026-10-24T00:00Z",
          "--to", "2026-10-27T00:00Z"], 1, "no meter 'nobody'"),
        ([*base, "--from", "2027-01-01", "--to", "2027-02-01"], 1, "no load-profile rows"),
    ]:
        bad = tmp_path / "bad.xml"
        assert cli_main([*argv, "-o", str(bad)]) == code
        assert message in capsys.readouterr().err
        assert not bad.exists()
